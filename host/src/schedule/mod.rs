//! Delayed and periodic events, kept by the NATS server (message schedules,
//! ADR-51): weir runs no timer of its own.
//!
//! Everything lives in one stream, [`STREAM`]:
//!
//! - a *definition* is a message on `weir.schedule.…` carrying
//!   `Nats-Schedule` (`@every 30s`, a 6-field cron, `@at <time>`) and
//!   `Nats-Schedule-Target: weir.due.<subject>`. One definition per subject
//!   (published with `Nats-Rollup: sub`): `weir.schedule.plugin.<plugin>.<entry>`
//!   for a plugin's `[[schedule]]` entries ([`sync`]), `weir.schedule.named.<name>`
//!   for `weir schedule add`, `weir.schedule.once.<id>` for a one-shot
//!   (`weir pub --in`, a handler's `Weir-Deliver-In` output, [`delay`]).
//! - when it fires, the server stores its payload and headers on
//!   `weir.due.<subject>` in the same stream (a target must be in the
//!   definition's stream: so no stream of the user's has to allow schedules);
//! - every host runs a [`forward`]er on the one shared durable consumer of
//!   `weir.due.>`: it publishes each fired message on `<subject>` as an
//!   output is published (stored and confirmed when a stream captures the
//!   subject, with a `Nats-Msg-Id` so a redelivery is stored once), then acks
//!   and deletes it. A plugin subscribed to `<subject>` in JetStream mode
//!   gets each tick with every guarantee of weir's (ack, retries, DLQ).
//!
//! - this file: the stream, the subjects, a [`Definition`] as a message and back;
//! - [`sync`]: a plugin's entries written at load, stale ones removed;
//! - [`forward`]: fired messages on to their subjects;
//! - [`delay`]: `Weir-Deliver-In`/`-At` on a message, made a one-shot definition.

pub mod delay;
pub mod forward;
pub mod sync;

use anyhow::{Context as _, bail};
use async_nats::jetstream as js;
use chrono::{DateTime, Utc};

use crate::config::Spec;
use crate::event::{Headers, Message, header};

/// The stream holding every definition and every fired message not yet
/// forwarded.
pub const STREAM: &str = "WEIR_SCHEDULES";

/// Definitions live under this prefix.
pub const DEFINITIONS: &str = "weir.schedule";

/// Fired messages land on `weir.due.<subject>`.
pub const DUE: &str = "weir.due";

/// On a definition: the plugin whose `[[schedule]]` entry it is.
pub const OWNER: &str = "Weir-Schedule-Owner";

/// On a forwarded tick: the definition it came from.
pub const FROM: &str = "Weir-Schedule";

/// On a forwarded tick: when the server fired it (its stored time in the
/// schedules stream, RFC 3339 with nanoseconds).
pub const FIRED_AT: &str = "Weir-Fired-At";

/// On a definition: the `Nats-Msg-Id` the message had when it was
/// scheduled; the forwarder publishes it under that id again.
pub const MSG_ID: &str = "Weir-Msg-Id";

const SCHEDULE: &str = "Nats-Schedule";
const TARGET: &str = "Nats-Schedule-Target";
const TIME_ZONE: &str = "Nats-Schedule-Time-Zone";
const ROLLUP: &str = "Nats-Rollup";

/// Headers the server or weir puts on a definition or a fired message, never
/// passed on to the subject.
const MACHINERY: &[&str] = &[
    SCHEDULE,
    TARGET,
    TIME_ZONE,
    ROLLUP,
    OWNER,
    MSG_ID,
    "Nats-Scheduler",
    "Nats-Schedule-Next",
    "Nats-Schedule-TTL",
    "Nats-Schedule-Rollup",
    "Nats-Schedule-Source",
    "Nats-Msg-Id",
    "Nats-TTL",
    FROM,
    FIRED_AT,
];

/// The definition subject of a plugin's entry.
pub fn plugin_subject(plugin: &str, key: &str) -> String {
    format!("{DEFINITIONS}.plugin.{plugin}.{key}")
}

/// The definition subject of a schedule made by `weir schedule add`.
pub fn named_subject(name: &str) -> String {
    format!("{DEFINITIONS}.named.{name}")
}

/// The definition subject of a one-shot.
pub fn once_subject(id: &str) -> String {
    format!("{DEFINITIONS}.once.{id}")
}

/// The stream's config: definitions and fired messages, on file.
pub fn stream_config() -> js::stream::Config {
    js::stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{DEFINITIONS}.>"), format!("{DUE}.>")],
        storage: js::stream::StorageType::File,
        allow_message_schedules: true,
        allow_rollup: true,
        allow_direct: true,
        description: Some(
            "weir schedules: definitions and fired messages not yet forwarded".into(),
        ),
        ..Default::default()
    }
}

/// Make sure [`STREAM`] exists and allows schedules.
pub async fn ensure_stream(js: &js::Context) -> anyhow::Result<js::stream::Stream> {
    let mut stream = js
        .get_or_create_stream(stream_config())
        .await
        .with_context(|| format!("cannot create the schedules stream {STREAM:?}"))?;
    let info = stream
        .info()
        .await
        .with_context(|| format!("no answer about the schedules stream {STREAM:?}"))?;
    if !info.config.allow_message_schedules {
        bail!(
            "the stream {STREAM:?} exists but does not allow message schedules (allow_msg_schedules)"
        );
    }
    Ok(stream)
}

/// One schedule as weir writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Its subject, under [`DEFINITIONS`].
    pub subject: String,
    pub spec: Spec,
    /// Where its ticks are published (without the `weir.due.` prefix).
    pub target: String,
    pub payload: bytes::Bytes,
    /// The ticks' own headers.
    pub headers: Headers,
    /// The plugin whose entry it is.
    pub owner: Option<String>,
    /// The `Nats-Msg-Id` its message had (a one-shot): its forwarded copy
    /// is published under it.
    pub msg_id: Option<String>,
}

impl Definition {
    /// The message to publish into [`STREAM`].
    pub fn to_message(&self) -> Message {
        let mut headers = self.headers.clone();
        headers.push((SCHEDULE.into(), self.spec.header()));
        headers.push((TARGET.into(), format!("{DUE}.{}", self.target)));
        if let Some(tz) = self.spec.time_zone() {
            headers.push((TIME_ZONE.into(), tz.into()));
        }
        headers.push((ROLLUP.into(), "sub".into()));
        if let Some(owner) = &self.owner {
            headers.push((OWNER.into(), owner.clone()));
        }
        if let Some(id) = &self.msg_id {
            headers.push((MSG_ID.into(), id.clone()));
        }
        Message {
            subject: self.subject.clone(),
            payload: self.payload.clone(),
            headers,
        }
    }

    /// A definition read back from the stream.
    pub fn from_stored(
        subject: &str,
        headers: &Headers,
        payload: bytes::Bytes,
    ) -> Result<Self, String> {
        let spec = header(headers, SCHEDULE).ok_or("no Nats-Schedule header")?;
        let spec = Spec::from_header(spec, header(headers, TIME_ZONE))?;
        let target = header(headers, TARGET).ok_or("no Nats-Schedule-Target header")?;
        let target = target
            .strip_prefix(DUE)
            .and_then(|t| t.strip_prefix('.'))
            .unwrap_or(target)
            .to_owned();
        let mut own = headers.clone();
        own.retain(|(k, _)| !is_machinery(k));
        Ok(Self {
            subject: subject.to_owned(),
            spec,
            target,
            payload,
            headers: own,
            owner: header(headers, OWNER).map(str::to_owned),
            msg_id: header(headers, MSG_ID).map(str::to_owned),
        })
    }

    /// The next time it fires after `now`; `stored` is when its message was stored.
    pub fn next_after(&self, now: DateTime<Utc>, stored: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.spec.next_after(now, stored)
    }
}

/// Whether `name` is a header of the schedule machinery (never passed on).
pub fn is_machinery(name: &str) -> bool {
    MACHINERY.iter().any(|m| m.eq_ignore_ascii_case(name))
}

/// A time from the stream (`unix_timestamp_nanos()` of async-nats' time)
/// as chrono's.
pub fn stored_time(nanos: i128) -> DateTime<Utc> {
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    DateTime::from_timestamp(secs, sub).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_reads_back_as_written() {
        let def = Definition {
            subject: plugin_subject("reports", "daily"),
            spec: Spec::Cron {
                expr: "0 0 9 * * *".into(),
                time_zone: Some("Europe/Berlin".into()),
            },
            target: "reports.tick".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            headers: vec![("Kind".into(), "daily".into())],
            owner: Some("reports".into()),
            msg_id: None,
        };
        let msg = def.to_message();
        assert_eq!(
            header(&msg.headers, "Nats-Schedule-Target"),
            Some("weir.due.reports.tick")
        );
        assert_eq!(header(&msg.headers, "Nats-Rollup"), Some("sub"));
        let back = Definition::from_stored(&msg.subject, &msg.headers, msg.payload.clone())
            .expect("reads back");
        assert_eq!(back, def);
    }

    #[test]
    fn machinery_headers_are_known() {
        assert!(is_machinery("nats-scheduler"));
        assert!(is_machinery("Nats-Schedule-Next"));
        assert!(!is_machinery("Kind"));
    }
}
