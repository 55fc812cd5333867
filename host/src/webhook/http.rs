//! One webhook POST and what its answer means. The client follows no
//! redirect (a 3xx is a failed attempt: weir never goes where a receiver
//! points it), retries nothing by itself (every attempt is a JetStream
//! delivery), reads at most [`MAX_ANSWER`] bytes of an answer, and gives up
//! after the timeout. TLS is rustls with the ring provider (as for NATS),
//! certificates checked against the OS's trusted roots.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::header::HeaderMap;

/// How much of an answer is read: enough for a reason, never a flood.
pub const MAX_ANSWER: usize = 4096;

/// How much of an answer is quoted in an error (logs, dead letters).
const QUOTED: usize = 200;

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What came of one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: delivered.
    Delivered(u16),
    /// 410: the receiver wants no more.
    Gone,
    /// Anything else: may pass later.
    Failed(Failed),
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The answer's status, when there was an answer.
    pub status: Option<u16>,
    /// What went wrong, without the URL: `HTTP 503 Service Unavailable: <the
    /// first bytes of the answer>`, `connection refused`, `timed out`.
    pub reason: String,
    /// The answer's `Retry-After` in seconds (at most an hour), if any.
    pub retry_after: Option<Duration>,
}

/// An HTTP client for webhooks, shared by every delivery of a deliverer.
pub struct Poster {
    client: reqwest::Client,
    timeout: Duration,
}

impl Poster {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the webhook HTTP client")?;
        Ok(Self { client, timeout })
    }

    /// POST `body` to `url` with `headers`.
    pub async fn post(&self, url: reqwest::Url, headers: HeaderMap, body: bytes::Bytes) -> Answer {
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Answer::Failed(self.transport_failure(e)),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        // Read a little of the answer (a reason to quote, and so the
        // connection can be reused), never more.
        let mut kept = Vec::new();
        while kept.len() < MAX_ANSWER {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_ANSWER - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        if status.is_success() {
            return Answer::Delivered(status.as_u16());
        }
        if status == reqwest::StatusCode::GONE {
            return Answer::Gone;
        }
        let mut reason = format!("HTTP {status}");
        let quoted = quote(&kept);
        if !quoted.is_empty() {
            reason.push_str(": ");
            reason.push_str(&quoted);
        }
        Answer::Failed(Failed {
            status: Some(status.as_u16()),
            reason,
            retry_after,
        })
    }

    fn transport_failure(&self, e: reqwest::Error) -> Failed {
        let reason = if e.is_timeout() {
            format!("no answer within {} ms", self.timeout.as_millis())
        } else {
            // reqwest names the URL in its message: the URL may hold a
            // token, so it goes, and the causes (refused, reset, TLS) stay.
            let e = e.without_url();
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                reason.push_str(": ");
                reason.push_str(&cause.to_string());
                source = cause.source();
            }
            reason
        };
        Failed {
            status: None,
            reason,
            retry_after: None,
        }
    }
}

/// Make ring the process's rustls provider, once. reqwest is built without a
/// provider of its own (its default would be aws-lc, a C and cmake build), so
/// every `reqwest::Client` in the process needs this before it is built:
/// the deliverer calls it, and so must a test that builds a client. It is the
/// provider rustls itself would pick here (ring is the only one compiled in).
pub fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race: either way ring is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `Retry-After: <seconds>`, capped at [`MAX_RETRY_AFTER`]. The HTTP-date
/// form is not read (the backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The start of an answer as one short line of text.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED)]);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_caps_them() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn quotes_are_short_single_lines() {
        assert_eq!(
            quote(b"  down\r\nfor maintenance "),
            "down  for maintenance"
        );
        assert_eq!(quote(&[b'x'; 1000]).len(), QUOTED);
        assert_eq!(quote(b"\xff\xfe"), "\u{fffd}\u{fffd}");
    }
}
