//! Delayed messages: a handler's output (or `weir pub --in/--at`) that
//! carries `Weir-Deliver-In: 1h` or `Weir-Deliver-At: <RFC 3339>` is not
//! published on its subject but as a one-shot definition
//! (`Nats-Schedule: @at …`) in the schedules stream; the forwarder publishes
//! it on its subject when it fires, without those headers.
//!
//! The policy checks the header like any other part of an output (a bad
//! value is a `bad-output` failure) and the subject against the grant, as
//! for an output published at once; it is published only with the event's
//! `ok`, as every output is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::Digest as _;

use super::{Definition, once_subject};
use crate::config::{Spec, ceil_second, parse_instant};
use crate::event::{Message, header};

/// Deliver the message this long after it is published (`90s`, `1h`, `2d`).
pub const DELIVER_IN: &str = "Weir-Deliver-In";

/// Deliver the message at this time (RFC 3339, any offset).
pub const DELIVER_AT: &str = "Weir-Deliver-At";

/// The longest a message may be delayed.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// Slack added to a relative delay before it is rounded up to the second the
/// server fires on: the message is due no earlier than `in` after the
/// definition is stored, publish latency included.
const SLACK: Duration = Duration::from_millis(100);

/// Whether `headers` ask for a delayed delivery (one scan, no clock read:
/// the check every output pays).
pub fn is_delayed(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(DELIVER_IN) || k.eq_ignore_ascii_case(DELIVER_AT))
}

/// When a message with these headers is to be delivered: `None` without a
/// delivery header; an error naming the header for a bad value.
pub fn due(
    headers: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, String> {
    let within = header(headers, DELIVER_IN);
    let at = header(headers, DELIVER_AT);
    let due = match (within, at) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(format!("give {DELIVER_IN} or {DELIVER_AT}, not both"));
        }
        (Some(text), None) => {
            let d = humantime::parse_duration(text.trim()).map_err(|e| {
                format!("{DELIVER_IN}: {text:?} is not a duration (such as 90s, 1h): {e}")
            })?;
            in_from(now, d).map_err(|e| format!("{DELIVER_IN}: {e}"))?
        }
        (None, Some(text)) => parse_instant(text).map_err(|e| format!("{DELIVER_AT}: {e}"))?,
    };
    let latest = now + chrono::Duration::from_std(MAX_DELAY).unwrap_or_default();
    if due > latest {
        return Err(format!(
            "a message may be delayed by at most {}",
            humantime::format_duration(MAX_DELAY)
        ));
    }
    Ok(Some(due))
}

/// `now + delay`, with [`SLACK`], rounded up to the second.
pub fn in_from(now: DateTime<Utc>, delay: Duration) -> Result<DateTime<Utc>, String> {
    if delay > MAX_DELAY {
        return Err(format!(
            "at most {} ahead",
            humantime::format_duration(MAX_DELAY)
        ));
    }
    let d = chrono::Duration::from_std(delay + SLACK).map_err(|e| e.to_string())?;
    Ok(ceil_second(now + d))
}

/// The one-shot definition that delivers `msg` at `at`: its headers without
/// the delivery headers; its `Nats-Msg-Id`, when it has one, names the
/// definition together with its subject (so the same output published twice
/// is one schedule, as a stream would keep it once) and is the id it is
/// delivered under. Without one, the definition gets a random id.
pub fn definition(msg: &Message, at: DateTime<Utc>) -> Definition {
    let msg_id = header(&msg.headers, "Nats-Msg-Id").map(str::to_owned);
    let id = match &msg_id {
        Some(id) => {
            let mut hash = sha2::Sha256::new();
            hash.update(msg.subject.as_bytes());
            hash.update([0]);
            hash.update(id.as_bytes());
            hex::encode(&hash.finalize()[..16])
        }
        None => hex::encode(rand::random::<[u8; 16]>()),
    };
    let headers = (msg.headers.iter())
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case(DELIVER_IN)
                && !k.eq_ignore_ascii_case(DELIVER_AT)
                && !super::is_machinery(k)
        })
        .cloned()
        .collect();
    Definition {
        subject: once_subject(&id),
        spec: Spec::At(at),
        target: msg.subject.clone(),
        payload: msg.payload.clone(),
        headers,
        owner: None,
        msg_id,
    }
}

/// Outputs to publish now, and the definitions of those to deliver later.
/// A bad delivery header is an error (the policy refuses it before: this
/// is the transport's own check).
pub fn split(
    outputs: Vec<Message>,
    now: impl FnOnce() -> DateTime<Utc>,
) -> anyhow::Result<(Vec<Message>, Vec<Definition>)> {
    if !outputs.iter().any(|m| is_delayed(&m.headers)) {
        return Ok((outputs, Vec::new()));
    }
    let now = now();
    let mut at_once = Vec::with_capacity(outputs.len());
    let mut later = Vec::new();
    for msg in outputs {
        match due(&msg.headers, now) {
            Ok(None) => at_once.push(msg),
            Ok(Some(at)) => later.push(definition(&msg, at)),
            Err(e) => anyhow::bail!("output to {:?}: {e}", msg.subject),
        }
    }
    Ok((at_once, later))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_000, 500_000_000).expect("time")
    }

    fn hs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn a_delay_is_due_no_earlier_than_asked_on_a_whole_second() {
        let due = due(&hs(&[("Weir-Deliver-In", "2s")]), now())
            .expect("ok")
            .expect("due");
        assert_eq!(due.timestamp(), 1_003);
        assert_eq!(due.timestamp_subsec_nanos(), 0);
        let at = due_at("2026-12-24T18:00:00Z");
        assert_eq!(at.to_rfc3339(), "2026-12-24T18:00:00+00:00");
        assert_eq!(super::due(&[], now()), Ok(None));
    }

    fn due_at(text: &str) -> DateTime<Utc> {
        let at = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        due(&hs(&[("Weir-Deliver-At", text)]), at)
            .expect("ok")
            .expect("due")
    }

    #[test]
    fn bad_delivery_headers_are_named() {
        let e = due(&hs(&[("Weir-Deliver-In", "soon")]), now()).expect_err("bad");
        assert!(e.starts_with("Weir-Deliver-In:"), "{e}");
        let e = due(&hs(&[("Weir-Deliver-At", "tomorrow")]), now()).expect_err("bad");
        assert!(e.starts_with("Weir-Deliver-At:"), "{e}");
        let both = hs(&[
            ("Weir-Deliver-In", "1s"),
            ("Weir-Deliver-At", "2026-12-24T18:00:00Z"),
        ]);
        assert!(due(&both, now()).is_err());
        assert!(due(&hs(&[("Weir-Deliver-In", "400d")]), now()).is_err());
    }

    #[test]
    fn the_definition_drops_the_delivery_header_and_keeps_the_id() {
        let msg = Message {
            subject: "orders.remind".into(),
            payload: "p".into(),
            headers: hs(&[
                ("Weir-Deliver-In", "1h"),
                ("Kind", "r"),
                ("Nats-Msg-Id", "ev:0"),
            ]),
        };
        let def = definition(&msg, now());
        assert_eq!(def.target, "orders.remind");
        assert_eq!(def.headers, hs(&[("Kind", "r")]));
        assert_eq!(def.msg_id.as_deref(), Some("ev:0"));
        assert_eq!(
            def.subject,
            definition(&msg, now()).subject,
            "the same id, the same schedule"
        );
        let elsewhere = Message {
            subject: "orders.other".into(),
            ..msg.clone()
        };
        assert_ne!(
            def.subject,
            definition(&elsewhere, now()).subject,
            "another subject, another schedule"
        );
        assert!(def.subject.starts_with("weir.schedule.once."));
    }
}
