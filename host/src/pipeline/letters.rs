//! What a dead letter looks like: the original event plus `Weir-*` headers,
//! and the error reply a waiting requester gets.

use std::time::SystemTime;

use crate::event::{Event, Failure, FailureKind, Headers, Message};

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
    /// The stream and sequence holding the original event (JetStream).
    pub const ORIGINAL_STREAM: &str = "Weir-Original-Stream";
    pub const ORIGINAL_SEQUENCE: &str = "Weir-Original-Sequence";
    /// Set when the payload was cut to fit the server's max_payload: the
    /// original payload's size in bytes.
    pub const PAYLOAD_TRUNCATED: &str = "Weir-Payload-Truncated";
    /// On a `bad-input` dead letter: the malformed header block as received,
    /// base64 (standard alphabet, padded), at most its first
    /// [`MAX_RAW_HEADERS`](super::MAX_RAW_HEADERS) bytes.
    pub const RAW_HEADERS: &str = "Weir-Raw-Headers";
    /// Set on outputs so JetStream drops the copies a redelivery would make.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The NATS services convention for an error reply.
    pub const SERVICE_ERROR: &str = "Nats-Service-Error";
    pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
}

/// Longest `Weir-Error` value; the rest is cut.
const MAX_ERROR_HEADER: usize = 1024;

/// How much of a malformed header block `Weir-Raw-Headers` keeps: its first
/// 4 KiB (5,464 characters of base64). `Weir-Error` gives the whole size.
pub const MAX_RAW_HEADERS: usize = 4096;

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
    /// The stream and sequence that hold the event, when one does.
    pub origin: Option<(&'a str, u64)>,
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
        if let Some(raw) = &self.failure.raw_headers {
            use base64::Engine as _;
            let kept = &raw[..raw.len().min(MAX_RAW_HEADERS)];
            h.push((
                headers::RAW_HEADERS.into(),
                base64::engine::general_purpose::STANDARD.encode(kept),
            ));
        }
        h.push((headers::FIRST_SEEN.into(), rfc3339(self.first_seen)));
        h.push((headers::LAST_SEEN.into(), rfc3339(self.last_seen)));
        if let Some((stream, sequence)) = self.origin {
            h.push((headers::ORIGINAL_STREAM.into(), stream.into()));
            h.push((headers::ORIGINAL_SEQUENCE.into(), sequence.to_string()));
        }
        Message {
            subject: self.subject.into(),
            payload: self.event.payload.clone(),
            headers: h,
        }
    }

    /// [`to_message`](Self::to_message), with the payload cut (and marked
    /// `Weir-Payload-Truncated: <original size>`) when headers and payload
    /// together would pass `max_payload`: an event near the server's limit
    /// plus weir's headers must still leave a dead letter.
    pub fn to_message_within(&self, max_payload: usize) -> Message {
        let mut msg = self.to_message();
        let size = wire_size(&msg);
        if size <= max_payload {
            return msg;
        }
        let original = msg.payload.len();
        msg.headers
            .push((headers::PAYLOAD_TRUNCATED.into(), original.to_string()));
        let room = max_payload.saturating_sub(wire_size(&Message {
            payload: bytes::Bytes::new(),
            ..msg.clone()
        }));
        msg.payload = msg.payload.slice(..room.min(original));
        msg
    }
}

/// What a message weighs against the server's max_payload: the header block
/// as NATS writes it (`NATS/1.0\r\n`, `name: value\r\n` lines, a blank line)
/// and the payload.
fn wire_size(msg: &Message) -> usize {
    let header_block: usize = msg
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum::<usize>()
        + 12;
    header_block + msg.payload.len()
}

fn is_weir_header(name: &str) -> bool {
    name.len() > 5 && name[..5].eq_ignore_ascii_case("weir-")
}

/// A requester waiting on a dead-lettered event hears why at once, in the
/// NATS services convention (`Nats-Service-Error` headers), instead of timing out.
pub fn error_reply(event: &Event, failure: &Failure) -> Option<Message> {
    let reply_to = event.reply_to.as_ref()?;
    // The producer chose the reply subject: never one of the server's APIs.
    if crate::policy::is_unsafe_reply(reply_to) {
        return None;
    }
    let code = match failure.kind {
        FailureKind::Reject | FailureKind::BadOutput | FailureKind::BadInput => "400",
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

/// A header value: one line (control characters become spaces), at most
/// `max` bytes, cut on a character boundary.
pub fn header_safe(text: &str, max: usize) -> String {
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

/// Dead-letter `event` after `failure`, and answer its requester if it has one.
/// Returns whether the dead letter was stored; one that was not is an error
/// line and a count, never a success. Both carry the event's trace context.
pub(crate) async fn dead_letter<S: super::Sink>(
    plugin: &crate::plugin::Plugin,
    sink: &S,
    event: &Event,
    failure: &Failure,
    first_seen: SystemTime,
    origin: Option<(&str, u64)>,
    trace: &super::trace::EventTrace<'_>,
) -> bool {
    // Whatever path led here (admit strips it too), a producer token never
    // reaches the dead-letter queue.
    let token = plugin.auth.is_some() && event.header(crate::auth::token::AUTHORIZATION).is_some();
    let copied;
    let event = if token || trace.rewrites() {
        let mut copy = event.clone();
        if token {
            crate::auth::token::take_authorization(&mut copy.headers);
        }
        // Before the letter is measured against max_payload.
        trace.stamp(event, &mut copy.headers);
        copied = copy;
        &copied
    } else {
        event
    };
    let letter = DeadLetter {
        plugin: plugin.name(),
        subject: &plugin.dead_letter_subject,
        event,
        failure,
        attempts: event.attempt,
        first_seen,
        last_seen: SystemTime::now(),
        origin,
    };
    let stored = match sink
        .dead_letter(letter.to_message_within(sink.max_payload()))
        .await
    {
        Ok(()) => {
            plugin.stats.dead_lettered(failure.kind);
            tracing::warn!(
                plugin = plugin.name(), event = %event.id, subject = %event.subject,
                attempt = event.attempt, kind = failure.kind.dead_letter_kind(),
                error = ?failure.message, "dead-lettered to {}", plugin.dead_letter_subject
            );
            true
        }
        Err(e) => {
            crate::plugin::Stats::bump(&plugin.stats.dead_letters_unstored);
            tracing::error!(
                plugin = plugin.name(), event = %event.id, subject = %event.subject,
                attempt = event.attempt, kind = failure.kind.dead_letter_kind(),
                error = %format!("{e:#}"),
                "cannot store the dead letter ({}); {}",
                failure.message,
                if origin.is_some() { "the event stays in its stream" } else { "the core event is lost" }
            );
            false
        }
    };
    if let Some(mut reply) = error_reply(event, failure) {
        trace.stamp(event, &mut reply.headers);
        if let Err(e) = sink.publish(vec![reply], false).await {
            tracing::warn!(plugin = plugin.name(), event = %event.id, error = %format!("{e:#}"), "cannot send the error reply");
        }
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
            origin: None,
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
    fn a_dead_letter_over_max_payload_is_cut_and_marked() {
        let mut e = event();
        e.payload = bytes::Bytes::from(vec![b'x'; 10_000]);
        let failure = Failure::new(FailureKind::Reject, "too big");
        let now = SystemTime::now();
        let letter = DeadLetter {
            plugin: "p",
            subject: "weir.dlq.p",
            event: &e,
            failure: &failure,
            attempts: 1,
            first_seen: now,
            last_seen: now,
            origin: Some(("ORDERS", 42)),
        };
        let whole = letter.to_message_within(1 << 20);
        assert_eq!(whole.payload.len(), 10_000);
        assert_eq!(
            crate::event::header(&whole.headers, "Weir-Payload-Truncated"),
            None
        );
        let cut = letter.to_message_within(4_000);
        assert!(wire_size(&cut) <= 4_000, "{} bytes", wire_size(&cut));
        assert!(!cut.payload.is_empty() && cut.payload.len() < 4_000);
        let get = |k: &str| crate::event::header(&cut.headers, k);
        assert_eq!(get("Weir-Payload-Truncated"), Some("10000"));
        assert_eq!(get("Weir-Original-Stream"), Some("ORDERS"));
        assert_eq!(get("Weir-Original-Sequence"), Some("42"));
    }

    #[test]
    fn a_bad_input_letter_carries_the_raw_header_block_capped() {
        use base64::Engine as _;
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64")
        };
        let e = event();
        let now = SystemTime::now();
        let letter = |failure: &Failure| {
            DeadLetter {
                plugin: "p",
                subject: "weir.dlq.p",
                event: &e,
                failure,
                attempts: 1,
                first_seen: now,
                last_seen: now,
                origin: None,
            }
            .to_message()
        };
        let raw = bytes::Bytes::from_static(b"NATS/1.0\r\nbad line\r\n\r\n");
        let msg = letter(&Failure::bad_headers("line 2 has no colon", raw.clone()));
        let get = |k: &str| crate::event::header(&msg.headers, k).map(str::to_owned);
        assert_eq!(get("Weir-Error-Kind").as_deref(), Some("bad-input"));
        assert_eq!(b64(&get("Weir-Raw-Headers").expect("raw headers")), raw);
        assert_eq!(get("trace").as_deref(), Some("abc"), "parsed headers kept");

        let big = bytes::Bytes::from(vec![b'x'; MAX_RAW_HEADERS + 100]);
        let msg = letter(&Failure::bad_headers("too long", big.clone()));
        let kept = b64(crate::event::header(&msg.headers, "Weir-Raw-Headers").expect("raw"));
        assert_eq!(kept, big[..MAX_RAW_HEADERS]);

        let msg = letter(&Failure::new(FailureKind::Reject, "no"));
        assert_eq!(crate::event::header(&msg.headers, "Weir-Raw-Headers"), None);
        let reply = error_reply(&e, &Failure::bad_headers("x", raw)).expect("reply");
        assert_eq!(
            crate::event::header(&reply.headers, "Nats-Service-Error-Code"),
            Some("400")
        );
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
