//! Status tracking of the events that came through the HTTP gateway (they
//! carry `Weir-Status-Id`): the pipeline says when an attempt runs, fails or
//! the event ends, and, once it is final, hands its webhook over for
//! delivery. Events without the header cost nothing here.

use std::time::{Duration, SystemTime};

use super::letters::rfc3339;
use super::{Settle, Sink};
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

/// A tracked event's status id.
#[derive(Debug, Clone)]
pub(super) struct Tracked {
    id: String,
}

impl Tracked {
    /// Whether `event` may be tracked: it carries a well-formed status id
    /// (it is tracked when the id also has a document, which only the
    /// gateway writes).
    pub fn of(event: &Event) -> Option<Self> {
        let id = header(&event.headers, tracking::STATUS_ID)?;
        tracking::is_status_id(id).then(|| Self { id: id.to_owned() })
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
    /// `failure`. Returns whether its status and webhook job are stored (or
    /// need not be: untracked, or a later state already recorded).
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
        let Some(stored) = self
            .record(plugin, sink, event, state, outputs, error)
            .await
        else {
            return false;
        };
        let Some((doc, true)) = stored else {
            // Untracked, or this plugin's entry was already final: its
            // webhook was queued with it.
            return true;
        };
        self.queue_webhook(plugin, sink, event, &doc, state).await
    }

    /// On a redelivery, before anything runs: when this plugin's entry is
    /// final already (an earlier delivery finished the event, and its
    /// webhook job or its ack was lost), queue the webhook again and say how
    /// to settle, without running the handler or dead-lettering again.
    /// `None`: go on as usual (the `running` status is written).
    pub async fn resume<S: Sink>(
        &self,
        plugin: &Plugin,
        sink: &S,
        event: &Event,
        redelivers: bool,
    ) -> Option<Settle> {
        let stored = self
            .record(plugin, sink, event, State::Running, Vec::new(), None)
            .await;
        let Some(Some((doc, false))) = stored else {
            return None;
        };
        let state = doc.handler(plugin.name()).map(|h| h.status)?;
        if !state.is_final() {
            return None;
        }
        tracing::info!(
            plugin = plugin.name(), event = %event.id, status_id = %self.id,
            status = state.as_str(), "delivered again after it finished: only its webhook again"
        );
        if !self.queue_webhook(plugin, sink, event, &doc, state).await
            && again(plugin, event, redelivers)
        {
            return Some(Settle::Unfinished(
                plugin.manifest.retry.delay_after(event.attempt),
            ));
        }
        Some(match state {
            State::DeadLettered => Settle::DeadLettered,
            _ => Settle::Done,
        })
    }

    /// Queue the webhook of `plugin`'s final `state`, if the event has a
    /// callback; whether it is stored (or none is needed).
    async fn queue_webhook<S: Sink>(
        &self,
        plugin: &Plugin,
        sink: &S,
        event: &Event,
        doc: &tracking::StatusDoc,
        state: State,
    ) -> bool {
        // The gateway's checked callback, else the plugin's own; never a
        // URL a producer put in a header.
        let url = doc
            .callback
            .clone()
            .or_else(|| plugin.manifest.webhook.as_ref().map(|w| w.url.clone()));
        let Some(url) = url else {
            return true;
        };
        let body = match serde_json::to_vec(&doc.for_handler(plugin.name()).public()) {
            Ok(body) => bytes::Bytes::from(body),
            Err(e) => {
                tracing::error!(plugin = plugin.name(), status_id = %self.id, error = %e, "cannot encode the webhook body");
                return false;
            }
        };
        // The same id for the same final status: a host that dies after
        // queueing it and before the ack queues no second one (within the
        // stream's duplicate window). (Standard Webhooks ids take no dots.)
        let webhook_id = format!("{}_{}_{}", self.id, plugin.name(), state.as_str());
        let job = crate::webhook::job(plugin.name(), &url, &webhook_id, body);
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

    /// Write one status; `None` when it could not be written (counted and
    /// logged), else what [`Sink::track`] said.
    async fn record<S: Sink>(
        &self,
        plugin: &Plugin,
        sink: &S,
        event: &Event,
        status: State,
        outputs: Vec<Output>,
        error: Option<ErrorDoc>,
    ) -> Option<Option<(tracking::StatusDoc, bool)>> {
        let handler = Handler {
            plugin: plugin.name().to_owned(),
            status,
            attempts: event.attempt,
            outputs,
            error,
            updated_at: rfc3339(SystemTime::now()),
        };
        let stored = with_tries(|| sink.track(&self.id, handler.clone())).await;
        match stored {
            Ok(stored) => Some(stored),
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

/// Whether an event whose final status or webhook could not be stored is
/// delivered again for it: on JetStream, for a few deliveries past its
/// attempts, then it is given up (logged and counted already).
pub(super) fn again(plugin: &Plugin, event: &Event, redelivers: bool) -> bool {
    redelivers
        && event.attempt
            < plugin
                .manifest
                .retry
                .max_attempts
                .saturating_add(EXTRA_DELIVERIES)
}

/// Deliveries past `max_attempts` to store a final status or webhook.
const EXTRA_DELIVERIES: u32 = 3;

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
