//! The forwarder: every host's reader of the one shared durable consumer
//! [`DURABLE`] on `weir.due.>` in [`STREAM`]. Each fired message is
//! published on its subject through the host's sink (stored and confirmed
//! when a stream captures the subject), under a `Nats-Msg-Id` that is the
//! same on a redelivery, then acked and deleted. A publish the server cannot
//! take yet is NAK'd with a delay and tried again: a fired message is never
//! dropped.
//!
//! Pulls are short single requests (as the webhook deliverer's), so stop
//! waits at most [`PULL_EXPIRES`]; messages are forwarded one at a time, in
//! order: schedules fire seconds apart, not thousands a second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DUE, FIRED_AT, FROM, MSG_ID, STREAM, is_machinery, stored_time};
use crate::event::{Message, header};
use crate::pipeline::{Sink, is_unavailable};
use crate::transport::{NatsSink, durable, from_header_map};

/// The consumer every host's forwarder shares.
pub const DURABLE: &str = "weir-schedules";

/// How long one pull waits on the server.
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Fired messages one pull asks for.
const BATCH: usize = 64;

/// How long a fired message whose host died waits before another takes it.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Before a fired message the server could not take is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// What this host's forwarder did, per schedule: its definition's subject,
/// or `once` for every one-shot together (their subjects are one each).
#[derive(Debug, Default)]
pub struct Counters {
    by_schedule: Mutex<BTreeMap<String, Outcomes>>,
}

/// One schedule's fired messages on this host.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes {
    /// Published on their subject (and acked).
    pub forwarded: u64,
    /// Not taken by the server yet, or refused: NAK'd, tried again.
    pub retried: u64,
}

impl Counters {
    fn count(&self, scheduler: &str, forwarded: bool) {
        let key = if scheduler.starts_with(&super::once_subject("")) {
            "once"
        } else {
            scheduler
        };
        let mut map = self.by_schedule.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(key.to_owned()).or_default();
        if forwarded {
            entry.forwarded += 1;
        } else {
            entry.retried += 1;
        }
    }

    /// Every schedule seen so far and its outcomes.
    pub fn snapshot(&self) -> Vec<(String, Outcomes)> {
        let map = self.by_schedule.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Bind the shared consumer (on a stream [`super::ensure_stream`] made) and
/// spawn the forwarder on `tasks`, until `stop`. The counters are live.
pub async fn spawn(
    js: jetstream::Context,
    sink: Arc<NatsSink>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Arc<Counters>> {
    let consumer = durable::bind(&js, STREAM, &consumer_config(), "schedules").await?;
    tracing::info!(
        stream = STREAM,
        consumer = DURABLE,
        "schedule forwarder started"
    );
    let counters = Arc::new(Counters::default());
    tasks.spawn(run(js, consumer, sink, counters.clone(), stop));
    Ok(counters)
}

fn consumer_config() -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(DURABLE.into()),
        description: Some("weir: fired schedules on to their subjects".into()),
        filter_subject: format!("{DUE}.>"),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        ..Default::default()
    }
}

async fn run(
    js: jetstream::Context,
    mut consumer: PullConsumer,
    sink: Arc<NatsSink>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    'pull: while !stop.is_cancelled() {
        let pulled = consumer
            .batch()
            .max_messages(BATCH)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match pulled {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(consumer = DURABLE, error = %e, "schedules: cannot pull; binding the consumer again in 1 s");
                let config = consumer_config();
                match durable::bind_again(&js, STREAM, &config, "schedules", &stop).await {
                    Some(bound) => {
                        consumer = bound;
                        continue 'pull;
                    }
                    None => break 'pull,
                }
            }
        };
        while let Some(next) = batch.next().await {
            let message = match next {
                Ok(message) => message,
                Err(e) => {
                    tracing::debug!(error = %e, "schedules: pull ended early");
                    break;
                }
            };
            if stop.is_cancelled() {
                // Another host, or the next start, forwards it.
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            }
            forward(&js, &sink, &counters, message).await;
        }
    }
    tracing::info!(consumer = DURABLE, "schedule forwarder stopped");
}

/// The message to publish for a fired one: its subject without `weir.due.`,
/// its own headers (not the schedule machinery's), a `Nats-Msg-Id` that is
/// the same on every delivery of it, `Weir-Schedule` naming the definition
/// and `Weir-Fired-At` when the server fired it (`fired`, its stored time).
/// `None` for a subject outside `weir.due.`.
pub fn onward(
    subject: &str,
    headers: &[(String, String)],
    payload: bytes::Bytes,
    (seq, fired): (u64, &str),
) -> Option<Message> {
    let target = subject.strip_prefix(DUE)?.strip_prefix('.')?;
    let scheduler = header(headers, "Nats-Scheduler")
        .unwrap_or("unknown")
        .to_owned();
    let id = match header(headers, MSG_ID) {
        Some(id) => id.to_owned(),
        None => format!("{scheduler}:{seq}"),
    };
    let mut out: Vec<(String, String)> = (headers.iter())
        .filter(|(k, _)| !is_machinery(k))
        .cloned()
        .collect();
    out.push((FROM.into(), scheduler));
    out.push((FIRED_AT.into(), fired.to_owned()));
    out.push(("Nats-Msg-Id".into(), id));
    Some(Message {
        subject: target.to_owned(),
        payload,
        headers: out,
    })
}

/// Forward one fired message, then ack and delete it; NAK it for later when
/// the publish did not go through.
async fn forward(
    js: &jetstream::Context,
    sink: &NatsSink,
    counters: &Counters,
    message: jetstream::Message,
) {
    let (seq, fired) = match message.info() {
        Ok(info) => (
            info.stream_sequence,
            stored_time(info.published.unix_timestamp_nanos())
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "schedules: a fired message without its metadata; delivered again later");
            let _ = message.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await;
            return;
        }
    };
    let headers = message
        .headers
        .as_ref()
        .map(from_header_map)
        .unwrap_or_default();
    let Some(out) = onward(
        message.subject.as_str(),
        &headers,
        message.payload.clone(),
        (seq, &fired),
    ) else {
        tracing::error!(subject = %message.subject, "schedules: not a fired message; terminated");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    let subject = out.subject.clone();
    let scheduler = header(&out.headers, FROM).unwrap_or_default().to_owned();
    if let Err(e) = sink.publish(vec![out], true).await {
        counters.count(&scheduler, false);
        let why = if is_unavailable(&e) {
            "not taken yet"
        } else {
            "refused"
        };
        tracing::warn!(
            subject = %subject, seq, error = %format!("{e:#}"),
            "schedules: fired message {why}; tried again in {} s", RETRY_AFTER.as_secs()
        );
        let _ = message.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await;
        return;
    }
    counters.count(&scheduler, true);
    if let Err(e) = message.double_ack().await {
        // Published (and stored under its id): a redelivery is stored once.
        tracing::debug!(subject = %subject, seq, error = %e, "schedules: ack not confirmed");
        return;
    }
    tracing::debug!(subject = %subject, seq, "fired message forwarded");
    match js.get_stream(STREAM).await {
        Ok(stream) => {
            if let Err(e) = stream.delete_message(seq).await {
                tracing::debug!(seq, error = %e, "schedules: cannot delete a forwarded message");
            }
        }
        Err(e) => tracing::debug!(error = %e, "schedules: no stream to delete from"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shots_are_counted_together() {
        let c = Counters::default();
        c.count("weir.schedule.plugin.r.0", true);
        c.count("weir.schedule.plugin.r.0", false);
        c.count("weir.schedule.once.ab12", true);
        c.count("weir.schedule.once.cd34", true);
        let got = c.snapshot();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            (
                "once".into(),
                Outcomes {
                    forwarded: 2,
                    retried: 0
                }
            )
        );
        assert_eq!(
            got[1].1,
            Outcomes {
                forwarded: 1,
                retried: 1
            }
        );
    }

    #[test]
    fn a_fired_message_goes_on_without_the_machinery() {
        let headers = vec![
            ("Kind".to_owned(), "daily".to_owned()),
            (
                "Nats-Scheduler".to_owned(),
                "weir.schedule.plugin.r.0".to_owned(),
            ),
            (
                "Nats-Schedule-Next".to_owned(),
                "2026-12-08T01:07:54Z".to_owned(),
            ),
            ("Weir-Schedule-Owner".to_owned(), "r".to_owned()),
        ];
        let fired = "2026-12-08T01:07:53.001Z";
        let out = onward("weir.due.reports.tick", &headers, "x".into(), (7, fired)).expect("fired");
        assert_eq!(out.subject, "reports.tick");
        assert_eq!(
            out.headers,
            vec![
                ("Kind".to_owned(), "daily".to_owned()),
                (
                    "Weir-Schedule".to_owned(),
                    "weir.schedule.plugin.r.0".to_owned()
                ),
                ("Weir-Fired-At".to_owned(), fired.to_owned()),
                (
                    "Nats-Msg-Id".to_owned(),
                    "weir.schedule.plugin.r.0:7".to_owned()
                ),
            ]
        );
        let mut once = headers.clone();
        once.push(("Weir-Msg-Id".into(), "ev-1:0".into()));
        let out = onward("weir.due.a", &once, "x".into(), (8, fired)).expect("fired");
        assert_eq!(header(&out.headers, "Nats-Msg-Id"), Some("ev-1:0"));
        assert!(onward("weir.schedule.x", &headers, "x".into(), (1, fired)).is_none());
    }
}
