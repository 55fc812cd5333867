//! NATS: the connection ([`connection`]), the readers that feed each plugin's pipeline (core
//! subscriptions in [`core`], JetStream pull consumers in [`jetstream`]), the
//! [`Delivery`] that settles what they read, and the [`NatsSink`] that
//! publishes outputs and dead letters. async-nats types stay in this module.

pub mod circuit;
mod connection;
pub mod core;
pub mod durable;
pub mod jetstream;
pub mod lag;
pub mod server;
mod sink;
mod status_kv;
mod streams;
mod watchdog;

pub use connection::{Link, connect};
pub use sink::NatsSink;
pub use status_kv::{Change, StatusBucket};
pub use streams::StreamIndex;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::{Client, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;

use crate::event::{Event, Failure, Headers};
use crate::pipeline::{Delivery, Inbound, Settle};
use crate::plugin::Stats;

/// What the server this client is connected to offers (see [`server`]).
pub fn features(client: &Client) -> anyhow::Result<server::Features> {
    server::Features::of(&client.server_info().version)
}

/// Wait until the server has processed everything sent so far on `client`
/// (subscriptions included). `Client::flush` only empties the socket buffer;
/// a request and its answer — even "no responders" — is a real round trip.
pub async fn sync_with_server(client: &Client) -> anyhow::Result<()> {
    match client.request("$JS.API.INFO", bytes::Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(e).context("no answer from the NATS server"),
    }
}

/// Turn a NATS message into an event. Its id is the producer's `Nats-Msg-Id`
/// when it set one, else one made up by `ids`. The failure, when there is
/// one, is a fault of the message itself (a malformed header block, see
/// [`refusal`]): the event is dead-lettered with it.
pub fn to_event(msg: async_nats::Message, ids: &IdSource) -> (Event, Option<Failure>) {
    let refused = refusal(&msg);
    let headers = msg
        .headers
        .as_ref()
        .map(from_header_map)
        .unwrap_or_default();
    let id = crate::event::header(&headers, "Nats-Msg-Id")
        .map(str::to_owned)
        .unwrap_or_else(|| ids.next());
    let event = Event {
        id,
        subject: msg.subject.to_string(),
        payload: msg.payload,
        headers,
        reply_to: msg.reply.map(|r| r.to_string()),
        attempt: 1,
        principal: None,
    };
    (event, refused)
}

/// The failure for a message whose header block async-nats could not parse
/// whole (it then delivers the lines that parsed in `headers` and the raw
/// block in `malformed_headers`): `bad-input`, naming the first fault found,
/// with the raw block for the dead letter's `Weir-Raw-Headers`.
pub fn refusal(msg: &async_nats::Message) -> Option<Failure> {
    let raw = msg.malformed_headers.as_ref()?;
    Some(Failure::bad_headers(
        format!(
            "malformed NATS header block ({} bytes): {}",
            raw.len(),
            header_fault(raw)
        ),
        raw.clone(),
    ))
}

/// What is wrong with a header block, as far as a quick look can tell: the
/// first line (counting the `NATS/1.0` line as line 1) that does not parse.
fn header_fault(raw: &[u8]) -> String {
    let block = raw.strip_suffix(b"\r\n\r\n").unwrap_or(raw);
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    match lines.next() {
        Some(first) if first.starts_with(b"NATS/1.0") => {
            let status = first[b"NATS/1.0".len()..].trim_ascii_start();
            let code = status.split(|&b| b == b' ').next().unwrap_or_default();
            let three_digits = code.len() == 3 && code.iter().all(u8::is_ascii_digit);
            if !code.is_empty() && !three_digits {
                return "line 1 has a status that is not a 3-digit code".into();
            }
        }
        _ => return "line 1 is not a NATS/1.0 version line".into(),
    }
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        // A continuation line belongs to the header before it.
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        if std::str::from_utf8(line).is_err() {
            return format!("line {n} is not UTF-8");
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return format!("line {n} has no colon");
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
            return format!("line {n} has an invalid header name");
        }
        if line[colon..].contains(&b'\r') {
            return format!("line {n} has a carriage return in its value");
        }
    }
    "a header line does not parse".into()
}

/// Who shares a subscription's events: its queue group (core) or its
/// durable consumer (JetStream); `None` for a plain core subscription.
pub fn consumer_group(plugin: &str, sub: &crate::config::Subscription) -> Option<String> {
    match sub.mode {
        crate::config::DeliveryMode::Core => sub.queue.clone(),
        crate::config::DeliveryMode::Jetstream => Some(jetstream::durable_name(plugin, sub)),
    }
}

pub fn from_header_map(map: &HeaderMap) -> Headers {
    let mut out = Vec::new();
    for (name, values) in map.iter() {
        let name: &str = name.as_ref();
        for value in values {
            out.push((name.to_owned(), value.as_str().to_owned()));
        }
    }
    // NATS header maps do not keep the order between names; sort for a
    // stable order.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn to_header_map(headers: &[(String, String)]) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name: HeaderName = name
            .parse()
            .with_context(|| format!("header name {name:?} is not valid"))?;
        let value: HeaderValue = value
            .parse()
            .with_context(|| format!("header {name} has an invalid value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Event ids for core messages that carry none: a random prefix per host
/// process and a counter.
pub struct IdSource {
    prefix: String,
    next: AtomicU64,
}

impl Default for IdSource {
    fn default() -> Self {
        Self {
            prefix: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            next: AtomicU64::new(1),
        }
    }
}

impl IdSource {
    pub fn next(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// What a reader needs of its plugin: the name for its logs, the counters,
/// and the plugin's pipeline to feed. Readers hold no plugin and no sandbox.
#[derive(Clone)]
pub struct Feed {
    pub plugin: Arc<str>,
    pub stats: Arc<Stats>,
    pub queue: mpsc::Sender<Inbound<NatsDelivery>>,
}

impl Feed {
    /// Queue an event for the pipeline now, or give it back when the queue
    /// is full. Queued events are counted (`queued`) until the pipeline takes
    /// them. The item comes back by value in the error, as tokio's
    /// `try_send` gives it (boxing would allocate per event).
    #[allow(clippy::result_large_err)]
    pub fn try_queue(
        &self,
        item: Inbound<NatsDelivery>,
    ) -> Result<(), mpsc::error::TrySendError<Inbound<NatsDelivery>>> {
        Stats::bump_gauge(&self.stats.queued);
        let sent = self.queue.try_send(item);
        if sent.is_err() {
            Stats::drop_gauge(&self.stats.queued);
        }
        sent
    }

    /// Queue an event for the pipeline, waiting for room.
    #[allow(clippy::result_large_err)]
    pub async fn queue(
        &self,
        item: Inbound<NatsDelivery>,
    ) -> Result<(), mpsc::error::SendError<Inbound<NatsDelivery>>> {
        Stats::bump_gauge(&self.stats.queued);
        let sent = self.queue.send(item).await;
        if sent.is_err() {
            Stats::drop_gauge(&self.stats.queued);
        }
        sent
    }
}

/// How an event read from NATS is settled.
pub enum NatsDelivery {
    /// Core NATS: at most once, nothing to acknowledge.
    Core,
    JetStream(Box<jetstream::JsDelivery>),
}

impl Delivery for NatsDelivery {
    fn redelivers(&self) -> bool {
        matches!(self, Self::JetStream(_))
    }

    fn progress_every(&self) -> Option<Duration> {
        match self {
            Self::Core => None,
            Self::JetStream(d) => Some(d.progress_every),
        }
    }

    async fn progress(&self) {
        if let Self::JetStream(d) = self {
            d.progress().await;
        }
    }

    async fn settle(self, settle: Settle) {
        if let Self::JetStream(d) = self {
            d.settle(settle).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::header_fault;

    #[test]
    fn header_faults_name_the_line() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"NATS/1.0\r\nbad line no colon\r\n\r\n",
                "line 2 has no colon",
            ),
            (
                b"NATS/1.0\r\nBad Name: x\r\nGood: 1\r\n\r\n",
                "line 2 has an invalid header name",
            ),
            (
                b"NATS/1.0\r\nGood: 1\r\nBad: \xFF\xFE\r\n\r\n",
                "line 3 is not UTF-8",
            ),
            (
                b"NATS/1.0\r\nBad: a\rb\r\n\r\n",
                "line 2 has a carriage return in its value",
            ),
            (
                b"NATS/1.0\r\n: v\r\n\r\n",
                "line 2 has an invalid header name",
            ),
            (
                b"HTTP/1.1\r\nA: b\r\n\r\n",
                "line 1 is not a NATS/1.0 version line",
            ),
            (
                b"NATS/1.0 abc\r\n\r\n",
                "line 1 has a status that is not a 3-digit code",
            ),
            (b"NATS/1.0\r\nA: b\r\n\r\n", "a header line does not parse"),
        ];
        for (raw, want) in cases {
            assert_eq!(header_fault(raw), *want, "{}", String::from_utf8_lossy(raw));
        }
    }
}
