//! One delivery of one job: read it ([`read_job`]), sign and POST it (saying
//! it is in progress while the POST runs), decide ([`decide`], a pure
//! function), and settle: ack, term, NAK with a delay, or dead-letter then
//! ack. A dead letter that cannot be stored keeps the job (NAK'd with the
//! backoff), so no job is lost to a missing dead-letter stream.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::http::{Answer, Poster};
use super::{CALLBACK_URL, Counters, SUBJECT_PREFIX, Settings, WEBHOOK_ID, header_safe, sign};
use crate::event::{Headers, Message, header};
use crate::pipeline::{headers as h, rfc3339};

/// `Weir-Error-Kind` of a job that failed every attempt.
pub const EXHAUSTED: &str = "retry-exhausted";

/// `Weir-Error-Kind` of a job that cannot be delivered at all.
pub const BAD_JOB: &str = "bad-input";

/// On a webhook's dead letter: the last HTTP status, when there was an answer.
pub const WEBHOOK_STATUS: &str = "Weir-Webhook-Status";

/// Longest `Weir-Error` value.
const MAX_ERROR: usize = 1024;

/// The longest a job waits before its dead letter is tried again.
const UNSTORED_RETRY: Duration = Duration::from_secs(60);

/// Longest accepted webhook id.
const MAX_ID: usize = 256;

/// What every delivery of a deliverer shares.
pub struct Shared {
    pub js: jetstream::Context,
    pub settings: Settings,
    pub poster: Poster,
    pub counters: Arc<Counters>,
    /// How often a running POST says +WPI: a third of the ack wait.
    pub progress_every: Duration,
}

/// A job, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub plugin: String,
    pub url: reqwest::Url,
    pub webhook_id: String,
    pub content_type: String,
}

impl Job {
    /// The receiver as logs name it: host and port, never the path or query
    /// (they may hold a token).
    pub fn host(&self) -> String {
        host_of(&self.url)
    }
}

fn host_of(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "?".into(),
    }
}

/// The plugin a job is for: the rest of its subject after `weir.webhooks.`.
fn plugin_of(subject: &str) -> String {
    subject
        .strip_prefix(SUBJECT_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or_default()
        .to_owned()
}

/// Read a job from its subject and headers; the reason it cannot be
/// delivered otherwise (never quoting the URL).
pub fn read_job(subject: &str, headers: &Headers) -> Result<Job, String> {
    let plugin = plugin_of(subject);
    let webhook_id = header(headers, WEBHOOK_ID)
        .or_else(|| header(headers, h::MSG_ID))
        .ok_or_else(|| format!("the job has no {WEBHOOK_ID} header"))?;
    if webhook_id.is_empty()
        || webhook_id.len() > MAX_ID
        || webhook_id
            .chars()
            .any(|c| c == '.' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "the job's {WEBHOOK_ID} is not 1 to {MAX_ID} bytes without '.', spaces or control characters"
        ));
    }
    let raw = header(headers, CALLBACK_URL)
        .ok_or_else(|| format!("the job has no {CALLBACK_URL} header"))?;
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| format!("the job's {CALLBACK_URL} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the job's {CALLBACK_URL} has scheme {:?}, not http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("the job's {CALLBACK_URL} names no host"));
    }
    let content_type = header(headers, "Content-Type")
        .unwrap_or("application/json")
        .to_owned();
    if HeaderValue::from_str(&content_type).is_err() {
        return Err("the job's Content-Type is not a valid HTTP header value".into());
    }
    Ok(Job {
        plugin,
        url,
        webhook_id: webhook_id.to_owned(),
        content_type,
    })
}

/// What to do with a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: ack.
    Ack,
    /// 410 Gone: term, no retry, no dead letter.
    Term,
    /// NAK: the server delivers it again after the delay.
    Retry(Duration),
    /// Attempts exhausted: dead-letter, then ack.
    DeadLetter,
}

/// The policy, without I/O: `attempt` is 1-based.
pub fn decide(answer: &Answer, attempt: u32, settings: &Settings) -> Decision {
    match answer {
        Answer::Delivered(_) => Decision::Ack,
        Answer::Gone => Decision::Term,
        Answer::Failed(_) if attempt >= settings.max_attempts.max(1) => Decision::DeadLetter,
        Answer::Failed(failed) => {
            let backoff = settings.delay_after(attempt);
            Decision::Retry(backoff.max(failed.retry_after.unwrap_or_default()))
        }
    }
}

/// Why a job is dead-lettered.
pub struct Reason<'a> {
    pub kind: &'static str,
    pub error: &'a str,
    pub status: Option<u16>,
}

/// The dead letter of a job: its body and headers (its URL among them, so
/// `weir dlq show` tells where it was going), plus the `Weir-*` headers the
/// DLQ tools read. Its `Nats-Msg-Id` is the job's id and stream sequence: a
/// job dead-lettered again after a lost ack is stored once.
pub fn letter(
    settings: &Settings,
    message: &jetstream::Message,
    headers: &Headers,
    reason: &Reason<'_>,
) -> Message {
    let (attempts, sequence, first_seen) = match message.info() {
        Ok(info) => (
            info.delivered.max(1),
            info.stream_sequence,
            SystemTime::from(info.published),
        ),
        Err(_) => (1, 0, SystemTime::now()),
    };
    let subject = message.subject.to_string();
    let id = header(headers, WEBHOOK_ID).unwrap_or_default().to_owned();
    let plugin = plugin_of(&subject);
    let mut out: Headers = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(h::MSG_ID))
        .cloned()
        .collect();
    out.push((h::MSG_ID.into(), format!("webhook:{id}:{sequence}")));
    out.push((h::PLUGIN.into(), plugin));
    out.push((h::ORIGINAL_SUBJECT.into(), subject));
    out.push((h::EVENT_ID.into(), id));
    out.push((h::ATTEMPTS.into(), attempts.to_string()));
    out.push((h::ERROR_KIND.into(), reason.kind.into()));
    out.push((h::ERROR.into(), header_safe(reason.error, MAX_ERROR)));
    if let Some(status) = reason.status {
        out.push((WEBHOOK_STATUS.into(), status.to_string()));
    }
    out.push((h::FIRST_SEEN.into(), rfc3339(first_seen)));
    out.push((h::LAST_SEEN.into(), rfc3339(SystemTime::now())));
    Message {
        subject: settings.dead_letter_subject.clone(),
        payload: message.payload.clone(),
        headers: out,
    }
}

/// Deliver one job once, and settle it.
pub async fn deliver(shared: &Shared, message: jetstream::Message) {
    let attempt = message
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX).max(1))
        .unwrap_or(1);
    let headers = message
        .headers
        .as_ref()
        .map(crate::transport::from_header_map)
        .unwrap_or_default();
    let job = match read_job(&message.subject, &headers) {
        Ok(job) => job,
        Err(error) => {
            tracing::error!(subject = %message.subject, attempt, %error, "webhook job cannot be delivered; dead-lettering it");
            let reason = Reason {
                kind: BAD_JOB,
                error: &error,
                status: None,
            };
            return dead_letter(shared, &message, &headers, &reason, attempt).await;
        }
    };
    let answer = post(shared, &message, &job).await;
    let host = job.host();
    let id = job.webhook_id.as_str();
    let (status, error) = match &answer {
        Answer::Delivered(status) => (Some(*status), ""),
        Answer::Gone => (Some(410), "410 Gone"),
        Answer::Failed(failed) => (failed.status, failed.reason.as_str()),
    };
    match decide(&answer, attempt, &shared.settings) {
        Decision::Ack => {
            Counters::bump(&shared.counters.delivered);
            tracing::info!(plugin = %job.plugin, webhook_id = id, %host, status, attempt, "webhook delivered");
            settle(&message, AckKind::Ack).await;
        }
        Decision::Term => {
            Counters::bump(&shared.counters.gone);
            tracing::warn!(plugin = %job.plugin, webhook_id = id, %host, status, attempt, "webhook receiver answered 410 Gone; not retrying");
            settle(&message, AckKind::Term).await;
        }
        Decision::Retry(delay) => {
            Counters::bump(&shared.counters.retried);
            let delay = jitter(delay);
            tracing::warn!(
                plugin = %job.plugin, webhook_id = id, %host, status, attempt, error,
                retry_in_ms = delay.as_millis() as u64, "webhook attempt failed; retrying"
            );
            settle(&message, AckKind::Nak(Some(delay))).await;
        }
        Decision::DeadLetter => {
            tracing::error!(
                plugin = %job.plugin, webhook_id = id, %host, status, attempt, error,
                "webhook attempts exhausted; dead-lettering it"
            );
            let error = format!("POST to {host}: {error}");
            let reason = Reason {
                kind: EXHAUSTED,
                error: &error,
                status,
            };
            dead_letter(shared, &message, &headers, &reason, attempt).await;
        }
    }
}

/// Sign and POST, saying the job is in progress while it runs.
async fn post(shared: &Shared, message: &jetstream::Message, job: &Job) -> Answer {
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let signature = sign(
        &shared.settings.secret,
        &job.webhook_id,
        timestamp,
        &message.payload,
    );
    let headers = match request_headers(job, timestamp, &signature) {
        Ok(headers) => headers,
        Err(e) => {
            return Answer::Failed(super::http::Failed {
                status: None,
                reason: format!("{e:#}"),
                retry_after: None,
            });
        }
    };
    let send = shared
        .poster
        .post(job.url.clone(), headers, message.payload.clone());
    tokio::pin!(send);
    let every = shared.progress_every;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            answer = &mut send => return answer,
            _ = ticker.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(webhook_id = %job.webhook_id, error = %e, "cannot say a webhook is in progress");
                }
            }
        }
    }
}

fn request_headers(job: &Job, timestamp: i64, signature: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| -> anyhow::Result<()> {
        let value = HeaderValue::from_str(value)
            .with_context(|| format!("the job's {name} is not a valid HTTP header value"))?;
        headers.insert(HeaderName::from_static(name), value);
        Ok(())
    };
    put("webhook-id", &job.webhook_id)?;
    put("webhook-timestamp", &timestamp.to_string())?;
    put("webhook-signature", signature)?;
    put("content-type", &job.content_type)?;
    Ok(headers)
}

/// Store the dead letter, then ack the job; if it cannot be stored, keep the
/// job for another try after the backoff (at most a minute).
async fn dead_letter(
    shared: &Shared,
    message: &jetstream::Message,
    headers: &Headers,
    reason: &Reason<'_>,
    attempt: u32,
) {
    let letter = letter(&shared.settings, message, headers, reason);
    let subject = letter.subject.clone();
    match publish(&shared.js, letter).await {
        Ok(()) => {
            Counters::bump(&shared.counters.dead_lettered);
            settle(message, AckKind::Ack).await;
        }
        Err(e) => {
            Counters::bump(&shared.counters.dead_letters_unstored);
            let delay = shared.settings.delay_after(attempt).min(UNSTORED_RETRY);
            tracing::error!(
                dead_letter_subject = %subject, error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64,
                "cannot store a webhook's dead letter; keeping the job"
            );
            settle(message, AckKind::Nak(Some(delay))).await;
        }
    }
}

async fn publish(js: &jetstream::Context, msg: Message) -> anyhow::Result<()> {
    let headers = crate::transport::to_header_map(&msg.headers)?;
    js.publish_with_headers(msg.subject.clone(), headers, msg.payload)
        .await
        .with_context(|| format!("cannot publish the dead letter to {:?}", msg.subject))?
        .await
        .with_context(|| format!("no stream stored the dead letter on {:?}", msg.subject))?;
    Ok(())
}

async fn settle(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(subject = %message.subject, error = %e, "cannot settle a webhook job; the server delivers it again after the ack wait");
    }
}

/// Up to a tenth more, at random, so jobs failing together do not come back
/// together.
fn jitter(delay: Duration) -> Duration {
    delay + delay.mul_f64(rand::random::<f64>() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::super::http::Failed;
    use super::*;

    fn headers(url: &str, id: &str) -> Headers {
        vec![
            (CALLBACK_URL.into(), url.into()),
            (WEBHOOK_ID.into(), id.into()),
        ]
    }

    #[test]
    fn reads_a_job() {
        let job = read_job(
            "weir.webhooks.enrich",
            &headers("https://h.example:8443/cb?t=1", "wh_1"),
        )
        .unwrap();
        assert_eq!(job.plugin, "enrich");
        assert_eq!(job.webhook_id, "wh_1");
        assert_eq!(job.host(), "h.example:8443");
        assert_eq!(job.content_type, "application/json");
    }

    #[test]
    fn refuses_jobs_it_cannot_deliver_without_quoting_the_url() {
        let s = "weir.webhooks.p";
        for (h, want) in [
            (
                vec![(WEBHOOK_ID.to_owned(), "a".to_owned())],
                "no Weir-Callback-Url",
            ),
            (headers("not a url?token=SECRET", "a"), "is not a URL"),
            (headers("ftp://h/x?token=SECRET", "a"), "scheme \"ftp\""),
            (headers("https://h/x?token=SECRET", "a.b"), "without '.'"),
            (headers("https://h/x?token=SECRET", ""), "without '.'"),
            (
                vec![(CALLBACK_URL.to_owned(), "https://h/".to_owned())],
                "no Webhook-Id",
            ),
            (
                [
                    headers("https://h/x?token=SECRET", "a"),
                    vec![("Content-Type".into(), "text\u{7f}".into())],
                ]
                .concat(),
                "Content-Type",
            ),
        ] {
            let e = read_job(s, &h).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    fn failed(retry_after: Option<u64>) -> Answer {
        Answer::Failed(Failed {
            status: Some(503),
            reason: "HTTP 503".into(),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    #[test]
    fn decides_by_answer_and_attempt() {
        let (secret, _) = super::super::Secret::generate();
        let mut s = Settings::new(secret);
        s.max_attempts = 3;
        s.backoff = vec![Duration::from_secs(1), Duration::from_secs(5)];
        assert_eq!(decide(&Answer::Delivered(204), 1, &s), Decision::Ack);
        assert_eq!(decide(&Answer::Delivered(200), 3, &s), Decision::Ack);
        assert_eq!(decide(&Answer::Gone, 1, &s), Decision::Term);
        assert_eq!(
            decide(&failed(None), 1, &s),
            Decision::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            decide(&failed(None), 2, &s),
            Decision::Retry(Duration::from_secs(5))
        );
        assert_eq!(
            decide(&failed(Some(60)), 2, &s),
            Decision::Retry(Duration::from_secs(60)),
            "a longer Retry-After wins"
        );
        assert_eq!(decide(&failed(None), 3, &s), Decision::DeadLetter);
        assert_eq!(decide(&failed(None), 9, &s), Decision::DeadLetter);
        s.max_attempts = 0;
        assert_eq!(decide(&failed(None), 1, &s), Decision::DeadLetter);
    }

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        let d = Duration::from_secs(10);
        for _ in 0..100 {
            let j = jitter(d);
            assert!(j >= d && j <= d + Duration::from_secs(1), "{j:?}");
        }
    }
}
