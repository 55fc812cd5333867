//! The pipeline: what happens to one event between the transport and the
//! sandbox. It decides an [`Outcome`] for each attempt (done, retry after a
//! delay, dead-letter), builds dead letters and error replies, and runs the
//! in-process retry loop of core NATS delivery. It knows nothing of NATS: the
//! transport hands it [`Event`]s and a [`Sink`] to publish through.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::bundle::Bundle;
use crate::config::{HostConfig, Manifest, RetryPolicy};
use crate::event::{Event, Failure, FailureKind, Message};
use crate::policy::OutputPolicy;
use crate::sandbox::Executor;
use crate::sandbox::{LoadError, PluginShared, Runtime};

mod letters;
pub use letters::{DeadLetter, error_reply, headers, rfc3339};

/// A loaded plugin as the pipeline sees it.
pub struct Plugin {
    pub manifest: Manifest,
    pub executor: Executor,
    /// `weir.dlq.<name>`.
    pub dead_letter_subject: String,
    pub stats: Stats,
    /// Verifies producer tokens when plugin.toml has `[auth]` (see [`admit`]).
    pub auth: Option<Arc<crate::auth::TokenVerifier>>,
}

impl Plugin {
    /// Compile a bundle's component and make it ready to run events.
    /// `capture_logs` keeps log lines in each [`RunOutput`](crate::sandbox::RunOutput) (`weir test`).
    pub fn load(
        runtime: &Runtime,
        bundle: &Bundle,
        host: &HostConfig,
        capture_logs: bool,
    ) -> Result<Self, LoadError> {
        let manifest = bundle.manifest.clone();
        // Grants are checked before compiling: a refused bundle costs nothing.
        let auth =
            crate::auth::PluginAuthState::load(bundle, &host.auth).map_err(LoadError::Refused)?;
        let prepared = runtime.prepare(&bundle.wasm, &bundle.sha256)?;
        let limits = &manifest.limits;
        let shared = PluginShared {
            name: manifest.name.clone(),
            config: manifest.config.clone(),
            policy: OutputPolicy {
                max_outputs: limits.max_outputs,
                max_output_bytes: limits.max_output_bytes,
                dead_letter_prefix: host.dead_letter.subject_prefix.clone(),
                granted: auth.granted_publish(),
            },
            memory_bytes: limits.memory_mb as usize * 1024 * 1024,
            capture_logs,
        };
        let executor = Executor::new(runtime, prepared, shared, limits);
        Ok(Self {
            dead_letter_subject: format!("{}.{}", host.dead_letter.subject_prefix, manifest.name),
            manifest,
            executor,
            stats: Stats::default(),
            auth: auth.verifier,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// Counters per plugin (a future metrics endpoint reads the same).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Core events dropped because the plugin's queue was full.
    pub shed: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

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

/// Where the pipeline's results go: implemented by the transport.
pub trait Sink: Send + Sync + 'static {
    /// Publish a handler's outputs (in order). With `confirm`, return only once
    /// the server has them (stored, for subjects a stream captures).
    fn publish(
        &self,
        outputs: Vec<Message>,
        confirm: bool,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Store a dead letter durably.
    fn dead_letter(&self, message: Message) -> impl Future<Output = anyhow::Result<()>> + Send;
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

/// Count and log an attempt that will be retried after `delay`.
fn note_retry(plugin: &Plugin, event: &Event, delay: Duration, failure: &Failure) {
    Stats::bump(&plugin.stats.failed_attempts);
    tracing::debug!(
        plugin = plugin.name(), event = %event.id, subject = %event.subject,
        attempt = event.attempt, delay_ms = delay.as_millis() as u64,
        "attempt failed, will retry: {failure}"
    );
}

/// Handle one core-NATS event to the end: attempts with in-process backoff,
/// then outputs or a dead letter. Once `stopping` is cancelled no new retry is
/// scheduled: a failing event is dead-lettered at once.
pub async fn run_core<S: Sink>(
    plugin: Arc<Plugin>,
    sink: Arc<S>,
    mut event: Event,
    stopping: CancellationToken,
) {
    let first_seen = SystemTime::now();
    if let Err(failure) = admit(&plugin, &mut event) {
        dead_letter(&plugin, sink.as_ref(), &event, &failure, first_seen).await;
        return;
    }
    let policy = &plugin.manifest.retry;
    loop {
        let run = plugin.executor.run(&event).await;
        let outcome = decide(policy, event.attempt, run.result);
        let failure = match outcome {
            Outcome::Done(mut outputs) => {
                stamp_outputs(&event, &mut outputs);
                match sink.publish(outputs, false).await {
                    Ok(()) => Stats::bump(&plugin.stats.succeeded),
                    Err(e) => tracing::error!(
                        plugin = plugin.name(), event = %event.id, subject = %event.subject,
                        error = %format!("{e:#}"), "cannot publish outputs"
                    ),
                }
                return;
            }
            Outcome::Retry { delay, failure } => {
                note_retry(plugin.as_ref(), &event, delay, &failure);
                let slept = tokio::select! {
                    _ = tokio::time::sleep(delay) => true,
                    _ = stopping.cancelled() => false,
                };
                if slept {
                    event.attempt += 1;
                    continue;
                }
                Failure::new(
                    failure.kind,
                    format!(
                        "{} (not retried: the host is shutting down)",
                        failure.message
                    ),
                )
            }
            Outcome::DeadLetter(failure) => {
                Stats::bump(&plugin.stats.failed_attempts);
                failure
            }
        };
        dead_letter(&plugin, sink.as_ref(), &event, &failure, first_seen).await;
        return;
    }
}

/// How to settle a JetStream message after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done: outputs confirmed by the server.
    Ack,
    /// Redeliver after this delay (the retry backoff).
    Nak(Duration),
    /// Redeliver at once (another host may take it: shutdown).
    NakNow,
    /// Dead-lettered: never redeliver.
    Term,
    /// Leave unacknowledged: the server redelivers after ack_wait (the outputs
    /// or the dead letter could not be confirmed).
    Leave,
}

/// One attempt at a JetStream event: the retry backoff is the server's (a
/// delayed nak), so nothing waits in-process. The attempt number is the
/// server's delivery count, so it survives host restarts.
pub async fn run_jetstream<S: Sink>(
    plugin: &Plugin,
    sink: &S,
    mut event: Event,
    first_seen: SystemTime,
) -> Settle {
    let policy = &plugin.manifest.retry;
    let failure = if event.attempt > policy.max_attempts {
        // Delivered again after the last attempt: a host died mid-attempt.
        Failure::new(
            FailureKind::Retry,
            format!(
                "delivered {} times without a result (max_attempts is {})",
                event.attempt, policy.max_attempts
            ),
        )
    } else if let Err(failure) = admit(plugin, &mut event) {
        failure
    } else {
        let run = plugin.executor.run(&event).await;
        match decide(policy, event.attempt, run.result) {
            Outcome::Done(mut outputs) => {
                stamp_outputs(&event, &mut outputs);
                return match sink.publish(outputs, true).await {
                    Ok(()) => {
                        Stats::bump(&plugin.stats.succeeded);
                        Settle::Ack
                    }
                    Err(e) => {
                        tracing::warn!(
                            plugin = plugin.name(), event = %event.id, subject = %event.subject,
                            error = %format!("{e:#}"), "outputs not confirmed; the event will be redelivered"
                        );
                        Settle::Leave
                    }
                };
            }
            Outcome::Retry { delay, failure } => {
                note_retry(plugin, &event, delay, &failure);
                return Settle::Nak(delay);
            }
            Outcome::DeadLetter(failure) => {
                Stats::bump(&plugin.stats.failed_attempts);
                failure
            }
        }
    };
    if dead_letter(plugin, sink, &event, &failure, first_seen).await {
        Settle::Term
    } else {
        Settle::Leave
    }
}

/// Dead-letter `event` after `failure`, and answer its requester if it has one.
/// Returns whether the dead letter was stored.
pub async fn dead_letter<S: Sink>(
    plugin: &Plugin,
    sink: &S,
    event: &Event,
    failure: &Failure,
    first_seen: SystemTime,
) -> bool {
    tracing::warn!(
        plugin = plugin.name(), event = %event.id, subject = %event.subject,
        attempts = event.attempt, kind = failure.kind.dead_letter_kind(),
        "dead-lettered: {}", failure.message
    );
    // Whatever path led here (admit strips it too), a producer token never
    // reaches the dead-letter queue.
    let stripped;
    let event = match &plugin.auth {
        Some(_) if event.header(crate::auth::token::AUTHORIZATION).is_some() => {
            let mut copy = event.clone();
            crate::auth::token::take_authorization(&mut copy.headers);
            stripped = copy;
            &stripped
        }
        _ => event,
    };
    let letter = DeadLetter {
        plugin: plugin.name(),
        subject: &plugin.dead_letter_subject,
        event,
        failure,
        attempts: event.attempt,
        first_seen,
        last_seen: SystemTime::now(),
    };
    let stored = match sink.dead_letter(letter.to_message()).await {
        Ok(()) => {
            Stats::bump(&plugin.stats.dead_lettered);
            true
        }
        Err(e) => {
            tracing::error!(
                plugin = plugin.name(), event = %event.id, subject = %event.subject,
                error = %format!("{e:#}"), "cannot store the dead letter"
            );
            false
        }
    };
    if let Some(reply) = error_reply(event, failure)
        && let Err(e) = sink.publish(vec![reply], false).await
    {
        tracing::warn!(plugin = plugin.name(), event = %event.id, error = %format!("{e:#}"), "cannot send the error reply");
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: "e1".into(),
            subject: "orders.created.1".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            headers: vec![
                ("trace".into(), "abc".into()),
                ("Weir-Error".into(), "old".into()),
            ],
            reply_to: Some("_INBOX.x".into()),
            attempt: 3,
            principal: None,
        }
    }

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
        let e = event();
        let mut out = vec![
            Message {
                subject: "a".into(),
                payload: Default::default(),
                headers: vec![],
            },
            Message {
                subject: "_INBOX.x".into(),
                payload: Default::default(),
                headers: vec![],
            },
        ];
        stamp_outputs(&e, &mut out);
        assert_eq!(
            crate::event::header(&out[0].headers, "Nats-Msg-Id"),
            Some("e1:0")
        );
        assert_eq!(crate::event::header(&out[1].headers, "Nats-Msg-Id"), None);
    }
}
