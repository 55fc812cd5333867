//! Status tracking of the events that came through the HTTP gateway (they
//! carry `Weir-Status-Id`): the pipeline says when an attempt runs, fails or
//! the event ends, and, once it is final, hands its webhook over for
//! delivery. Events without the header cost nothing here.

use std::time::{Duration, SystemTime};

use super::Sink;
use super::letters::rfc3339;
use crate::event::{Event, Failure, Message, header};
use crate::plugin::{Plugin, Stats};
use crate::tracking::{self, ErrorDoc, Handler, Output, State};

/// How often a status write or a webhook job is tried before it is given up
/// (counted and logged), and the pauses between.
const TRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
];

/// A tracked event's status id and callback.
#[derive(Debug, Clone)]
pub(super) struct Tracked {
    id: String,
    /// From the request's `Weir-Callback` (checked by the gateway), else the
    /// plugin's `[webhook] url`.
    callback: Option<String>,
}

impl Tracked {
    /// Whether `event` is tracked: it carries a well-formed status id.
    pub fn of(plugin: &Plugin, event: &Event) -> Option<Self> {
        let id = header(&event.headers, tracking::STATUS_ID)?;
        if !tracking::is_status_id(id) {
            return None;
        }
        let callback = header(&event.headers, tracking::CALLBACK)
            .map(str::to_owned)
            .or_else(|| plugin.manifest.webhook.as_ref().map(|w| w.url.clone()));
        Some(Self {
            id: id.to_owned(),
            callback,
        })
    }

    /// An attempt starts.
    pub async fn running<S: Sink>(&self, plugin: &Plugin, sink: &S, event: &Event) {
        self.record(plugin, sink, event, State::Running, Vec::new(), None)
            .await;
    }

    /// An attempt failed and another follows.
    pub async fn retrying<S: Sink>(
        &self,
        plugin: &Plugin,
        sink: &S,
        event: &Event,
        failure: &Failure,
    ) {
        let error = Some(error_doc(failure, false));
        self.record(plugin, sink, event, State::Retrying, Vec::new(), error)
            .await;
    }

    /// The event ended: `outputs` published, or dead-lettered after
    /// `failure`. Returns whether its status and webhook job are stored.
    pub async fn finished<S: Sink>(
        &self,
        plugin: &Plugin,
        sink: &S,
        event: &Event,
        outcome: Result<Vec<Output>, &Failure>,
    ) -> bool {
        let (state, outputs, error) = match outcome {
            Ok(outputs) => (State::Succeeded, outputs, None),
            Err(failure) => (
                State::DeadLettered,
                Vec::new(),
                Some(error_doc(failure, true)),
            ),
        };
        let Some(doc) = self
            .record(plugin, sink, event, state, outputs, error)
            .await
        else {
            return false;
        };
        let Some(url) = &self.callback else {
            return true;
        };
        let body = match serde_json::to_vec(&doc) {
            Ok(body) => bytes::Bytes::from(body),
            Err(e) => {
                tracing::error!(plugin = plugin.name(), status_id = %self.id, error = %e, "cannot encode the webhook body");
                return false;
            }
        };
        // The same id for the same final status: a host that dies after
        // queueing it and before the ack queues no second one.
        let webhook_id = format!("{}.{}.{}", self.id, plugin.name(), state.as_str());
        let job = crate::webhook::job(plugin.name(), url, &webhook_id, body);
        let queued = with_tries(|| sink.enqueue_webhook(job.clone())).await;
        match queued {
            Ok(()) => {
                Stats::bump(&plugin.stats.webhooks_queued);
                true
            }
            Err(e) => {
                Stats::bump(&plugin.stats.webhooks_unqueued);
                tracing::error!(
                    plugin = plugin.name(), event = %event.id, status_id = %self.id,
                    error = %format!("{e:#}"), "cannot queue the webhook"
                );
                false
            }
        }
    }

    async fn record<S: Sink>(
        &self,
        plugin: &Plugin,
        sink: &S,
        event: &Event,
        status: State,
        outputs: Vec<Output>,
        error: Option<ErrorDoc>,
    ) -> Option<tracking::StatusDoc> {
        let handler = Handler {
            plugin: plugin.name().to_owned(),
            status,
            attempts: event.attempt,
            outputs,
            error,
            updated_at: rfc3339(SystemTime::now()),
        };
        let stored = with_tries(|| sink.track(&self.id, &event.subject, handler.clone())).await;
        match stored {
            Ok(doc) => Some(doc),
            Err(e) => {
                Stats::bump(&plugin.stats.status_unrecorded);
                tracing::warn!(
                    plugin = plugin.name(), event = %event.id, status_id = %self.id,
                    status = status.as_str(), error = %format!("{e:#}"),
                    "cannot record the event's status"
                );
                None
            }
        }
    }
}

/// What a status document says of a failure; `last`: the one that
/// dead-lettered the event (kind as the dead letter names it).
fn error_doc(failure: &Failure, last: bool) -> ErrorDoc {
    ErrorDoc {
        kind: if last {
            failure.kind.dead_letter_kind().to_owned()
        } else {
            failure.kind.as_str().to_owned()
        },
        message: failure.message.clone(),
    }
}

/// The outputs as a status document lists them (after their ids are stamped).
pub(super) fn outputs(messages: &[Message]) -> Vec<Output> {
    messages
        .iter()
        .map(|m| Output {
            subject: m.subject.clone(),
            msg_id: header(&m.headers, super::headers::MSG_ID).map(str::to_owned),
        })
        .collect()
}

async fn with_tries<T, F, Fut>(mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut last = None;
    for pause in std::iter::once(Duration::ZERO).chain(TRIES) {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("not tried")))
}

#[cfg(test)]
#[path = "tracked_tests.rs"]
mod tests;
