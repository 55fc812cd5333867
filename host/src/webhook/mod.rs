//! Signed webhooks: the callbacks weir POSTs when an event tracked by the HTTP
//! gateway is final. A callback is a job in the JetStream work queue
//! [`STREAM`], on `weir.webhooks.<plugin>`, so a host that crashes or a
//! receiver that is down for hours loses none. Every host runs one deliverer
//! ([`spawn`]) on the one shared durable consumer, so each job is delivered
//! by one host.
//!
//! - this file: the job format ([`job`]), the stream ([`ensure_stream`]), the
//!   [`Settings`] and the [`Counters`];
//! - [`sign`]: the Standard Webhooks signature and its [`Secret`];
//! - `http`: one POST, answered or not, and what the answer means;
//! - `attempt`: one delivery of one job: read, POST, decide, settle,
//!   dead-letter;
//! - `deliver`: the consumer, the pull loop, the bound on work in flight, stop.
//!
//! A job's life: 2xx → acked (gone from the stream). 410 Gone → terminated:
//! the receiver asked for no more, so no retry and no dead letter (logged and
//! counted). Anything else (another status, a refused connection, a timeout)
//! → retried after `backoff[attempt - 1]` (the last value repeats; a longer
//! `Retry-After` is honoured, up to an hour) by a NAK with that delay, until
//! `max_attempts`; then the job is dead-lettered on `dead_letter_subject` and
//! acked. A job that cannot be delivered at all (no or a bad URL) is
//! dead-lettered at once. Attempts are the server's delivery count, so they
//! survive a restart and are shared by every host.

mod attempt;
mod deliver;
mod http;
pub mod sign;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;

pub use deliver::spawn;
pub use http::install_tls_provider;
pub use sign::{Secret, sign};

use crate::event::Message;

/// The work-queue stream that holds the jobs until delivered.
pub const STREAM: &str = "WEIR_WEBHOOKS";

/// Jobs are published on `weir.webhooks.<plugin>`.
pub const SUBJECT_PREFIX: &str = "weir.webhooks";

/// The durable consumer every host's deliverer shares.
pub const DURABLE: &str = "weir-webhooks";

/// How long the stream remembers a job's `Nats-Msg-Id` (its webhook id): the
/// same final status enqueued again within it is one job.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The job header holding the URL to POST to.
pub const CALLBACK_URL: &str = "Weir-Callback-Url";

/// The job header holding the webhook id: the receiver's idempotency key, the
/// same on every attempt.
pub const WEBHOOK_ID: &str = "Webhook-Id";

/// The most jobs one deliverer POSTs at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// A delivery job: one final status document to POST to `url`.
///
/// `webhook_id` is the receiver's idempotency key and the job's `Nats-Msg-Id`,
/// so the same final status enqueued twice within [`DUPLICATE_WINDOW`] is
/// delivered once. It is signed as `<id>.<timestamp>.<body>`, so it must not
/// contain a `.` (the spec's rule), whitespace or control characters, and be at
/// most 256 bytes: a job breaking that is dead-lettered at once.
pub fn job(plugin: &str, url: &str, webhook_id: &str, body: bytes::Bytes) -> Message {
    Message {
        subject: format!("{SUBJECT_PREFIX}.{plugin}"),
        payload: body,
        headers: vec![
            (CALLBACK_URL.into(), url.into()),
            (WEBHOOK_ID.into(), webhook_id.into()),
            ("Nats-Msg-Id".into(), webhook_id.into()),
            ("Content-Type".into(), "application/json".into()),
        ],
    }
}

/// Make sure [`STREAM`] exists: work-queue retention (a job is gone once
/// acked), file storage, capturing `weir.webhooks.>`, a duplicate window of
/// [`DUPLICATE_WINDOW`]. An existing stream is left as it is.
pub async fn ensure_stream(js: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    let config = jetstream::stream::Config {
        name: STREAM.into(),
        description: Some("weir webhooks to deliver".into()),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.with_context(|| {
        format!("cannot create the webhook stream {STREAM:?} on \"{SUBJECT_PREFIX}.>\"")
    })?;
    Ok(())
}

/// How a deliverer delivers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Signs every attempt.
    pub secret: Secret,
    /// Attempts before a job is dead-lettered (0 counts as 1).
    pub max_attempts: u32,
    /// The delay after the n-th failed attempt is `backoff[n - 1]`; the last
    /// value repeats. Empty means 1 s.
    pub backoff: Vec<Duration>,
    /// The longest one POST may take, connecting and reading the answer
    /// included. The consumer's ack wait is twice this and a second.
    pub timeout: Duration,
    /// Where exhausted and undeliverable jobs go (a JetStream stream must
    /// capture it: `WEIR_DLQ` captures `weir.dlq.>`).
    pub dead_letter_subject: String,
}

impl Settings {
    /// The defaults: 15 attempts; 1 s, 5 s, 30 s, 2 min, 5 min, 15 min, 30 min,
    /// then every hour — about 8 hours in all, so a receiver down for minutes
    /// gets its callbacks within seconds of coming back, and one down for a
    /// night still gets them; a 15 s timeout (the spec's advice: 15 to 30 s);
    /// dead letters on `weir.dlq.webhooks`.
    pub fn new(secret: Secret) -> Self {
        let s = Duration::from_secs;
        Self {
            secret,
            max_attempts: 15,
            backoff: vec![s(1), s(5), s(30), s(120), s(300), s(900), s(1800), s(3600)],
            timeout: s(15),
            dead_letter_subject: "weir.dlq.webhooks".into(),
        }
    }

    /// The delay before the attempt after failed attempt `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) - 1) as usize;
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// What the deliverer did, for logs, tests and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Jobs a receiver answered 2xx.
    pub delivered: AtomicU64,
    /// Failed attempts that will be tried again.
    pub retried: AtomicU64,
    /// Jobs a receiver answered 410 Gone: stopped.
    pub gone: AtomicU64,
    /// Jobs dead-lettered (attempts exhausted or undeliverable).
    pub dead_lettered: AtomicU64,
    /// Dead letters that could not be stored (no stream captures the
    /// subject, JetStream down): the job is kept and tried again.
    pub dead_letters_unstored: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub(crate) use crate::pipeline::header_safe;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_carries_the_url_the_id_and_dedupes_on_the_id() {
        let msg = job(
            "enrich",
            "https://hooks.example.com/a",
            "wh_1",
            bytes::Bytes::from_static(b"{}"),
        );
        assert_eq!(msg.subject, "weir.webhooks.enrich");
        let h = |n| crate::event::header(&msg.headers, n);
        assert_eq!(h("weir-callback-url"), Some("https://hooks.example.com/a"));
        assert_eq!(h("webhook-id"), Some("wh_1"));
        assert_eq!(h("nats-msg-id"), Some("wh_1"));
        assert_eq!(h("content-type"), Some("application/json"));
    }

    #[test]
    fn backoff_repeats_its_last_value() {
        let (secret, _) = Secret::generate();
        let mut s = Settings::new(secret);
        assert_eq!(s.delay_after(1), Duration::from_secs(1));
        assert_eq!(s.delay_after(3), Duration::from_secs(30));
        assert_eq!(s.delay_after(8), Duration::from_secs(3600));
        assert_eq!(s.delay_after(14), Duration::from_secs(3600));
        s.backoff.clear();
        assert_eq!(s.delay_after(2), Duration::from_secs(1));
    }

    #[test]
    fn the_default_schedule_spans_hours() {
        let (secret, _) = Secret::generate();
        let s = Settings::new(secret);
        let total: Duration = (1..s.max_attempts).map(|a| s.delay_after(a)).sum();
        assert!(total > Duration::from_secs(6 * 3600), "{total:?}");
        assert!(total < Duration::from_secs(12 * 3600), "{total:?}");
    }

    #[test]
    fn header_values_are_one_bounded_line() {
        assert_eq!(header_safe("a\r\nb", 10), "a  b");
        assert_eq!(header_safe("ééé", 3), "é");
    }
}
