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
use crate::event::{Event, Failure, FailureKind, Headers, Message};
use crate::policy::OutputPolicy;
use crate::sandbox::Executor;
use crate::sandbox::{LoadError, PluginShared, Runtime};

/// Headers weir writes on dead letters; stripped from an event before it is
/// dead-lettered again, so a replayed event carries one set.
pub mod headers {
    pub const PLUGIN: &str = "Weir-Plugin";
    pub const ORIGINAL_SUBJECT: &str = "Weir-Original-Subject";
    pub const ORIGINAL_REPLY: &str = "Weir-Original-Reply";
    pub const EVENT_ID: &str = "Weir-Event-Id";
    pub const ATTEMPTS: &str = "Weir-Attempts";
    pub const ERROR_KIND: &str = "Weir-Error-Kind";
    pub const ERROR: &str = "Weir-Error";
    pub const FIRST_SEEN: &str = "Weir-First-Seen";
    pub const LAST_SEEN: &str = "Weir-Last-Seen";
    /// Set on outputs so JetStream drops the copies a redelivery would make.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The NATS services convention for an error reply.
    pub const SERVICE_ERROR: &str = "Nats-Service-Error";
    pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
}

/// Longest `Weir-Error` value; the rest is cut.
const MAX_ERROR_HEADER: usize = 1024;

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

/// The facts a dead letter records.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub plugin: &'a str,
    pub subject: &'a str,
    pub event: &'a Event,
    pub failure: &'a Failure,
    pub attempts: u32,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

impl DeadLetter<'_> {
    /// The message for the dead-letter queue: the original payload and
    /// headers, plus the `Weir-*` headers.
    pub fn to_message(&self) -> Message {
        let mut h: Headers = self
            .event
            .headers
            .iter()
            .filter(|(k, _)| !is_weir_header(k))
            .cloned()
            .collect();
        h.push((headers::PLUGIN.into(), self.plugin.into()));
        h.push((headers::ORIGINAL_SUBJECT.into(), self.event.subject.clone()));
        if let Some(reply) = &self.event.reply_to {
            h.push((headers::ORIGINAL_REPLY.into(), reply.clone()));
        }
        h.push((headers::EVENT_ID.into(), self.event.id.clone()));
        h.push((headers::ATTEMPTS.into(), self.attempts.to_string()));
        h.push((
            headers::ERROR_KIND.into(),
            self.failure.kind.dead_letter_kind().into(),
        ));
        h.push((
            headers::ERROR.into(),
            header_safe(&self.failure.message, MAX_ERROR_HEADER),
        ));
        h.push((headers::FIRST_SEEN.into(), rfc3339(self.first_seen)));
        h.push((headers::LAST_SEEN.into(), rfc3339(self.last_seen)));
        Message {
            subject: self.subject.into(),
            payload: self.event.payload.clone(),
            headers: h,
        }
    }
}

fn is_weir_header(name: &str) -> bool {
    name.len() > 5 && name[..5].eq_ignore_ascii_case("weir-")
}

/// A requester waiting on a dead-lettered event hears why at once, in the
/// NATS services convention (`Nats-Service-Error` headers), instead of timing out.
pub fn error_reply(event: &Event, failure: &Failure) -> Option<Message> {
    let reply_to = event.reply_to.as_ref()?;
    let code = match failure.kind {
        FailureKind::Reject | FailureKind::BadOutput => "400",
        FailureKind::Unauthorized => "401",
        FailureKind::ForbiddenPublish => "403",
        FailureKind::Timeout => "504",
        _ => "500",
    };
    Some(Message {
        subject: reply_to.clone(),
        payload: bytes::Bytes::new(),
        headers: vec![
            (
                headers::SERVICE_ERROR.into(),
                header_safe(
                    &format!("{}: {}", failure.kind.dead_letter_kind(), failure.message),
                    MAX_ERROR_HEADER,
                ),
            ),
            (headers::SERVICE_ERROR_CODE.into(), code.into()),
        ],
    })
}

/// A header value: one line, at most `max` bytes.
fn header_safe(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
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
                Stats::bump(&plugin.stats.failed_attempts);
                tracing::debug!(
                    plugin = plugin.name(), event = %event.id, subject = %event.subject,
                    attempt = event.attempt, delay_ms = delay.as_millis() as u64,
                    "attempt failed, will retry: {failure}"
                );
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
                Stats::bump(&plugin.stats.failed_attempts);
                tracing::debug!(
                    plugin = plugin.name(), event = %event.id, subject = %event.subject,
                    attempt = event.attempt, delay_ms = delay.as_millis() as u64,
                    "attempt failed, will retry: {failure}"
                );
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
    fn dead_letter_keeps_original_and_adds_weir_headers() {
        let e = event();
        let failure = Failure::new(FailureKind::Retry, "line one\nline two");
        let now = SystemTime::now();
        let msg = DeadLetter {
            plugin: "p",
            subject: "weir.dlq.p",
            event: &e,
            failure: &failure,
            attempts: 3,
            first_seen: now,
            last_seen: now,
        }
        .to_message();
        let get = |k: &str| crate::event::header(&msg.headers, k).map(str::to_owned);
        assert_eq!(msg.subject, "weir.dlq.p");
        assert_eq!(msg.payload, e.payload);
        assert_eq!(get("trace").as_deref(), Some("abc"));
        assert_eq!(get("Weir-Error-Kind").as_deref(), Some("retry-exhausted"));
        assert_eq!(get("Weir-Error").as_deref(), Some("line one line two"));
        assert_eq!(get("Weir-Attempts").as_deref(), Some("3"));
        assert_eq!(
            get("Weir-Original-Subject").as_deref(),
            Some("orders.created.1")
        );
        assert_eq!(
            msg.headers
                .iter()
                .filter(|(k, _)| k == "Weir-Error")
                .count(),
            1
        );
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

    #[test]
    fn error_reply_uses_the_services_convention() {
        let reply = error_reply(&event(), &Failure::new(FailureKind::Reject, "bad"))
            .expect("event has a reply subject");
        assert_eq!(reply.subject, "_INBOX.x");
        assert_eq!(
            crate::event::header(&reply.headers, "Nats-Service-Error-Code"),
            Some("400")
        );
    }
}
