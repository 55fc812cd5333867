//! weir's own event and message types: what flows between transport, pipeline
//! and sandbox. Nothing here knows NATS or wasmtime.

use std::fmt;

/// An ordered list of header (name, value) pairs; a name may repeat, as in NATS.
pub type Headers = Vec<(String, String)>;

/// One event as the pipeline and the sandbox see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique per event and stable across redeliveries: the JetStream stream
    /// sequence, the producer's `Nats-Msg-Id`, or one the host made up.
    pub id: String,
    pub subject: String,
    pub payload: bytes::Bytes,
    pub headers: Headers,
    pub reply_to: Option<String>,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub principal: Option<Principal>,
}

impl Event {
    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The first value of `name` in `headers`, compared case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A verified producer identity (see the auth module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub issuer: String,
    /// All claims, as a JSON object.
    pub claims: String,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub payload: bytes::Bytes,
    pub headers: Headers,
}

impl Message {
    /// Payload plus header bytes, the figure output caps are measured in.
    pub fn size(&self) -> usize {
        self.subject.len()
            + self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
    }
}

/// Why one attempt at an event failed, as the `Weir-Error-Kind` header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The handler said the event can never succeed.
    Reject,
    /// The handler asked for a retry (named `retry-exhausted` once no attempt is left).
    Retry,
    /// The handler ran past `timeout_ms`.
    Timeout,
    /// The guest trapped: a panic, stack overflow, unreachable, ...
    Trap,
    /// The guest hit `memory_mb`.
    Memory,
    /// The event carried no valid producer token.
    Unauthorized,
    /// The handler published to a subject it may not publish to.
    ForbiddenPublish,
    /// The handler's outputs broke a cap (count, size) or were malformed.
    BadOutput,
    /// The message itself cannot be read as an event (a malformed NATS header
    /// block): dead-lettered at once, never run.
    BadInput,
}

impl FailureKind {
    /// Every kind, in the order of [`index`](Self::index).
    pub const ALL: [Self; 9] = [
        Self::Reject,
        Self::Retry,
        Self::Timeout,
        Self::Trap,
        Self::Memory,
        Self::Unauthorized,
        Self::ForbiddenPublish,
        Self::BadOutput,
        Self::BadInput,
    ];

    /// This kind's place in [`ALL`](Self::ALL): counters per kind are arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether an attempt failing this way may succeed on a later attempt.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Retry | Self::Timeout | Self::Trap | Self::Memory
        )
    }

    /// The `Weir-Error-Kind` value for an event dead-lettered after this failure.
    pub fn dead_letter_kind(self) -> &'static str {
        match self {
            Self::Retry => "retry-exhausted",
            other => other.as_str(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Retry => "retry",
            Self::Timeout => "timeout",
            Self::Trap => "trap",
            Self::Memory => "memory",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenPublish => "forbidden-publish",
            Self::BadOutput => "bad-output",
            Self::BadInput => "bad-input",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed attempt: its kind and a human reason.
///
/// Deliberately a plain struct, not an `anyhow::Error`: failures are on the
/// per-event path, and a captured backtrace costs microseconds each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// For [`FailureKind::BadInput`]: the header block exactly as received,
    /// so the dead letter can show what could not be read
    /// (`Weir-Raw-Headers`). `None` for every other failure.
    pub raw_headers: Option<bytes::Bytes>,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            raw_headers: None,
        }
    }

    /// A message whose header block did not parse: `raw` is the whole block.
    pub fn bad_headers(message: impl Into<String>, raw: bytes::Bytes) -> Self {
        Self {
            kind: FailureKind::BadInput,
            message: message.into(),
            raw_headers: Some(raw),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// A log line written by a plugin through `host.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Whether `subject` is a valid subject to publish to: non-empty tokens
/// separated by dots, no whitespace, no wildcards.
pub fn is_publish_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 1024
        && subject.split('.').all(|t| {
            !t.is_empty()
                && t != "*"
                && t != ">"
                && !t
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        })
}

/// Whether `subject` is a valid subscription subject: like a publish subject,
/// but `*` may stand for any one token and `>` for the rest, as its last token.
pub fn is_subscribe_subject(subject: &str) -> bool {
    if subject.is_empty() || subject.len() > 1024 {
        return false;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        if t.is_empty()
            || t.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return false;
        }
        match *t {
            "*" => true,
            ">" => i == tokens.len() - 1,
            other => !other.contains('*') && !other.contains('>'),
        }
    })
}

/// Whether `subject` matches the subscription `pattern` (NATS wildcards).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut sub = subject.split('.');
    loop {
        match (pat.next(), sub.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether a header name is acceptable to NATS: printable ASCII without ':' or spaces.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Whether a header value is acceptable to NATS: no CR or LF.
pub fn is_header_value(value: &str) -> bool {
    !value.bytes().any(|b| b == b'\r' || b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching_follows_nats() {
        assert!(subject_matches("demo.echo.>", "demo.echo.a"));
        assert!(subject_matches("demo.echo.>", "demo.echo.a.b"));
        assert!(!subject_matches("demo.echo.>", "demo.echo"));
        assert!(subject_matches("demo.*.x", "demo.y.x"));
        assert!(!subject_matches("demo.*.x", "demo.y.z.x"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }

    #[test]
    fn subject_validation() {
        assert!(is_subscribe_subject("orders.created.>"));
        assert!(is_subscribe_subject("orders.*.x"));
        assert!(!is_subscribe_subject("orders.>.x"));
        assert!(!is_subscribe_subject("orders..x"));
        assert!(!is_subscribe_subject("orders x"));
        assert!(!is_subscribe_subject("ord*ers"));
        assert!(is_publish_subject("orders.enriched.1"));
        assert!(!is_publish_subject("orders.*"));
        assert!(!is_publish_subject(""));
        assert!(!is_publish_subject("a.\r\n"));
    }

    #[test]
    fn exhausted_retries_are_named_apart() {
        assert_eq!(FailureKind::Retry.dead_letter_kind(), "retry-exhausted");
        assert_eq!(FailureKind::Timeout.dead_letter_kind(), "timeout");
        assert!(!FailureKind::Reject.is_retryable());
        assert!(FailureKind::Memory.is_retryable());
    }

    #[test]
    fn bad_input_is_final_and_named() {
        assert_eq!(FailureKind::BadInput.dead_letter_kind(), "bad-input");
        assert!(!FailureKind::BadInput.is_retryable());
    }
}
