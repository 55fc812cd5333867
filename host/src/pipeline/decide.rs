//! One attempt and what follows it, as pure policy: run the handler, decide
//! (done / retry after a delay / dead-letter), and the outputs' message ids.
//! `weir up`, `weir test` and the benchmarks all go through [`attempt`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::{DeliveryMode, RetryPolicy};
use crate::event::{Event, Failure, LogLine, Message};
use crate::plugin::{Plugin, Stats};

use super::headers;

/// What to do with an event after one attempt.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Publish these messages; the event is done.
    Done(Vec<Message>),
    /// Try again after `delay`.
    Retry { delay: Duration, failure: Failure },
    /// Give up: dead-letter the event.
    DeadLetter(Failure),
}

/// Decide what follows attempt number `attempt` (1-based).
pub fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    result: Result<Vec<Message>, Failure>,
) -> Outcome {
    match result {
        Ok(outputs) => Outcome::Done(outputs),
        Err(failure) if failure.kind.is_retryable() && attempt < policy.max_attempts => {
            Outcome::Retry {
                delay: policy.delay_after(attempt),
                failure,
            }
        }
        Err(failure) => Outcome::DeadLetter(failure),
    }
}

/// Give every output a `Nats-Msg-Id` of `<event id>:<index>` (unless the handler
/// chose one), so a stream capturing the subject keeps one copy per event even
/// when the event is handled twice. Replies are left alone.
pub fn stamp_outputs(event: &Event, outputs: &mut [Message]) {
    for (i, msg) in outputs.iter_mut().enumerate() {
        // An output is an event of its own: it never inherits the HTTP
        // gateway's tracking of this one (a handler that copies headers).
        msg.headers.retain(|(k, _)| {
            !k.eq_ignore_ascii_case(crate::tracking::STATUS_ID)
                && !k.eq_ignore_ascii_case(crate::tracking::CALLBACK)
        });
        if event.reply_to.as_deref() == Some(msg.subject.as_str()) {
            continue;
        }
        if !msg
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(headers::MSG_ID))
        {
            msg.headers
                .push((headers::MSG_ID.into(), format!("{}:{i}", event.id)));
        }
    }
}

/// Check an event before any attempt: producer tokens (the auth module). A
/// failure here is final (`unauthorized`): the event is dead-lettered without
/// retries. May rewrite the event (strip the token, set the principal).
pub fn admit(plugin: &Plugin, event: &mut Event) -> Result<(), Failure> {
    match &plugin.auth {
        Some(verifier) => verifier.admit(event),
        None => Ok(()),
    }
}

/// One attempt's outcome and the log lines it captured.
#[derive(Debug)]
pub struct Attempt {
    pub outcome: Outcome,
    pub logs: Vec<LogLine>,
}

/// Run one attempt of an admitted `event` and decide what follows (outputs
/// get their message ids when they are published: [`stamp_outputs`]).
pub async fn attempt(plugin: &Plugin, event: &Event) -> Attempt {
    let started = std::time::Instant::now();
    let run = plugin.executor.run(event).await;
    attempted(plugin, event, started, run)
}

/// [`attempt`] as the pipeline runs it: in a batch when the event's
/// subscription has `batch`. `None`: not started, because the host stopped
/// while it waited for its batch (and `redelivers`: the transport delivers it
/// again).
pub async fn attempt_in_pipeline(
    plugin: &Plugin,
    event: &Event,
    redelivers: bool,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<Attempt> {
    let started = std::time::Instant::now();
    let run = plugin.batches.attempt(event, redelivers, stop).await?;
    Some(attempted(plugin, event, started, run))
}

/// The attempt a run of `event` (one of a batch's) amounts to.
pub fn attempt_of(plugin: &Plugin, event: &Event, run: crate::sandbox::RunOutput) -> Attempt {
    attempted(plugin, event, std::time::Instant::now(), run)
}

fn attempted(
    plugin: &Plugin,
    event: &Event,
    started: std::time::Instant,
    run: crate::sandbox::RunOutput,
) -> Attempt {
    plugin.stats.attempt_seconds.observe(started.elapsed());
    if run.no_slot {
        Stats::bump(&plugin.stats.pool_exhausted);
    }
    if let Ok(outputs) = &run.result {
        note_jetstream_reply(plugin, event, outputs);
    }
    Attempt {
        outcome: decide(&plugin.manifest.retry, event.attempt, run.result),
        logs: run.logs,
    }
}

/// Warn, once per plugin, when a handler answers a request that reached it
/// through a JetStream subscription. A request to a subject a stream captures
/// is answered by the stream (its publish ack), and the stored event keeps no
/// reply subject (NATS does not store it), so live such a reply goes nowhere:
/// `weir up` hands JetStream events no `reply_to`. A `weir test` fixture can
/// carry one whatever the mode, and that is where an author sees this.
fn note_jetstream_reply(plugin: &Plugin, event: &Event, outputs: &[Message]) {
    let Some(reply_to) = event.reply_to.as_deref() else {
        return;
    };
    if !outputs.iter().any(|m| m.subject == reply_to) {
        return;
    }
    let mut matching = plugin
        .manifest
        .subscribe
        .iter()
        .filter(|s| crate::event::subject_matches(&s.subject, &event.subject));
    let Some(first) = matching.next() else {
        return;
    };
    let from_jetstream = |s: &crate::config::Subscription| s.mode == DeliveryMode::Jetstream;
    if !from_jetstream(first) || !matching.all(from_jetstream) {
        return;
    }
    if plugin.warned_jetstream_reply.swap(true, Ordering::Relaxed) {
        return;
    }
    tracing::warn!(
        plugin = plugin.name(), subject = %event.subject, stream = first.stream.as_deref().unwrap_or(""),
        "the handler replied to a request on a JetStream subscription ({}): live, a request to a \
         subject a stream captures gets the stream's ack and this reply goes nowhere; \
         subscribe in core mode to answer requests (README \"Requests\")",
        first.subject
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FailureKind;

    #[test]
    fn decide_follows_the_policy() {
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff_ms: vec![10, 20],
        };
        let retry = || Err(Failure::new(FailureKind::Retry, "x"));
        assert!(matches!(
            decide(&policy, 1, retry()),
            Outcome::Retry { delay, .. } if delay == Duration::from_millis(10)
        ));
        assert!(matches!(
            decide(&policy, 2, retry()),
            Outcome::Retry { delay, .. } if delay == Duration::from_millis(20)
        ));
        assert!(matches!(
            decide(&policy, 3, retry()),
            Outcome::DeadLetter(_)
        ));
        let reject = Err(Failure::new(FailureKind::Reject, "no"));
        assert!(matches!(decide(&policy, 1, reject), Outcome::DeadLetter(_)));
        assert_eq!(decide(&policy, 1, Ok(vec![])), Outcome::Done(vec![]));
    }

    #[test]
    fn outputs_get_message_ids_but_replies_do_not() {
        let e = Event {
            id: "e1".into(),
            subject: "orders.created.1".into(),
            payload: Default::default(),
            headers: vec![],
            reply_to: Some("_INBOX.x".into()),
            attempt: 1,
            principal: None,
        };
        let msg = |subject: &str| Message {
            subject: subject.into(),
            payload: Default::default(),
            headers: vec![],
        };
        let mut out = vec![msg("a"), msg("_INBOX.x")];
        stamp_outputs(&e, &mut out);
        assert_eq!(
            crate::event::header(&out[0].headers, "Nats-Msg-Id"),
            Some("e1:0")
        );
        assert_eq!(crate::event::header(&out[1].headers, "Nats-Msg-Id"), None);
    }
}
