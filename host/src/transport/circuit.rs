//! A plugin's circuit breaker across the fleet. When this host's attempts open
//! the circuit, its JetStream consumers are paused on the server (NATS 2.11+
//! consumer pause), so every host stops together and the events wait in their
//! stream, and the other hosts are told on `weir.circuit.<plugin>`. What other
//! hosts, operators (`weir pause` / `weir resume`) and the server's pause
//! advisories (an operator's `nats consumer pause`) say opens or closes the
//! circuit here. The state machine itself is [`crate::pipeline::circuit`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_nats::Client;
use async_nats::jetstream::Context;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::jetstream::ConsumerSpec;
use super::server::Features;
use crate::pipeline::circuit::{Change, Circuit};
use crate::pipeline::rfc3339;
use crate::plugin::Plugin;

/// The subject every host of a plugin listens on for circuit changes.
pub fn control_subject(plugin: &str) -> String {
    format!("weir.circuit.{plugin}")
}

/// One message on [`control_subject`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Control {
    pub state: ControlState,
    /// When an open circuit half-opens (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The host that sent it, or `operator`.
    pub by: String,
}

/// What a control message says of the circuit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ControlState {
    Open,
    Closed,
}

impl Control {
    pub fn open(until: SystemTime, by: &str) -> Self {
        Self {
            state: ControlState::Open,
            until: Some(rfc3339(until)),
            by: by.into(),
        }
    }

    pub fn closed(by: &str) -> Self {
        Self {
            state: ControlState::Closed,
            until: None,
            by: by.into(),
        }
    }
}

/// The JetStream consumers one plugin reads: what an open circuit pauses.
#[derive(Clone)]
pub struct Consumers {
    pub js: Option<Context>,
    pub specs: Vec<ConsumerSpec>,
}

/// Pause (until `until`) or, with `None`, resume every consumer on the
/// server. Errors name the consumer.
pub async fn set_paused(consumers: &Consumers, until: Option<SystemTime>) -> anyhow::Result<()> {
    let Some(js) = &consumers.js else {
        return Ok(());
    };
    for spec in &consumers.specs {
        let (stream, durable) = (spec.stream.as_str(), spec.durable());
        let doing = if until.is_some() { "pause" } else { "resume" };
        let named = || format!("cannot {doing} consumer {durable} of stream {stream}");
        let handle = js.get_stream_no_info(stream).await.with_context(named)?;
        match until {
            Some(until) => handle
                .pause_consumer(durable, async_nats::datetime::DateTime::from(until))
                .await
                .map(drop),
            None => handle.resume_consumer(durable).await.map(drop),
        }
        .with_context(named)?;
    }
    Ok(())
}

/// Carries one plugin's circuit changes to and from the fleet.
pub struct Follower {
    client: Client,
    name: String,
    circuit: Arc<Circuit>,
    consumers: Consumers,
    pause_on_server: bool,
    host_id: String,
    control: async_nats::Subscriber,
    /// The pause advisories of the plugin's own consumers (one subscription
    /// each, so N plugins do not each receive every advisory of the
    /// account); `None` for a plugin without JetStream consumers.
    advisories: Option<Advisories>,
}

impl Follower {
    /// Subscribe to what the fleet says about `plugin`'s circuit.
    pub async fn subscribe(
        client: &Client,
        plugin: &Plugin,
        consumers: Consumers,
        features: Features,
        host_id: &str,
    ) -> anyhow::Result<Self> {
        let circuit = plugin.circuit.clone();
        let name = plugin.name().to_owned();
        let control = client
            .subscribe(control_subject(&name))
            .await
            .context("cannot subscribe to the circuit's control subject")?;
        let has_consumers = !consumers.specs.is_empty();
        let mut subscribed = Vec::new();
        for spec in &consumers.specs {
            let subject = format!(
                "$JS.EVENT.ADVISORY.CONSUMER.PAUSE.{}.{}",
                spec.stream,
                spec.durable()
            );
            subscribed.push(client.subscribe(subject).await.with_context(|| {
                format!(
                    "cannot subscribe to the pause advisories of consumer {}",
                    spec.durable()
                )
            })?);
        }
        let advisories = has_consumers.then(|| futures::stream::select_all(subscribed));
        if !features.consumer_pause() && has_consumers && plugin.manifest.circuit.is_some() {
            tracing::warn!(
                plugin = %name, version = %features.version,
                "[circuit]: this nats-server has no consumer pause (2.11+): an open circuit stops this \
                 host's consumers only; other running hosts hear of it on {}",
                control_subject(&name)
            );
        }
        Ok(Self {
            client: client.clone(),
            name,
            circuit,
            consumers,
            pause_on_server: features.consumer_pause() && has_consumers,
            host_id: host_id.to_owned(),
            control,
            advisories,
        })
    }

    /// Until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let Self {
            client,
            name,
            circuit,
            consumers,
            pause_on_server,
            host_id,
            mut control,
            mut advisories,
        } = self;
        let Some(mut local) = circuit.take_local_changes() else {
            tracing::error!(plugin = %name, "the circuit is followed twice; this follower stops");
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                change = local.recv() => match change {
                    Some(change) => pass_on(&client, &name, &consumers, pause_on_server, &host_id, change).await,
                    None => return,
                },
                Some(msg) = control.next() => {
                    match serde_json::from_slice::<Control>(&msg.payload) {
                        Ok(c) if c.by == host_id => {}
                        Ok(c) => take_over(&circuit, &name, &c),
                        Err(e) => tracing::warn!(plugin = %name, error = %e, "ignoring a malformed message on {}", msg.subject),
                    }
                }
                Some(msg) = next_advisory(&mut advisories) => {
                    if let Ok(advisory) = serde_json::from_slice::<PauseAdvisory>(&msg.payload)
                        && consumers.specs.iter().any(|s| s.stream == advisory.stream && s.durable() == advisory.consumer)
                    {
                        match advisory.pause_until.as_deref().and_then(parse_time) {
                            Some(until) if advisory.paused => {
                                open_until(&circuit, &name, until, "a consumer pause on the server")
                            }
                            // Resumed by hand (`nats consumer resume`):
                            // probes decide. The end of our own pause is no
                            // news (the circuit is not open by then).
                            _ if !advisory.paused
                                && circuit.resumed_elsewhere(tokio::time::Instant::now()) =>
                            {
                                tracing::info!(plugin = %name, "consumer resumed on the server: circuit half-open");
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

/// Several subscriptions read as one.
type Advisories = futures::stream::SelectAll<async_nats::Subscriber>;

async fn next_advisory(advisories: &mut Option<Advisories>) -> Option<async_nats::Message> {
    match advisories {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// The server's `io.nats.jetstream.advisory.v1.consumer_pause`.
#[derive(Debug, Deserialize)]
struct PauseAdvisory {
    stream: String,
    consumer: String,
    paused: bool,
    #[serde(default)]
    pause_until: Option<String>,
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

/// This host decided: pause the consumers and tell the others.
async fn pass_on(
    client: &Client,
    name: &str,
    consumers: &Consumers,
    pause_on_server: bool,
    host_id: &str,
    change: Change,
) {
    let message = match change {
        Change::Opened { cooldown, .. } => {
            let until = SystemTime::now() + cooldown;
            if pause_on_server && let Err(e) = set_paused(consumers, Some(until)).await {
                tracing::warn!(plugin = name, error = %format!("{e:#}"), "circuit open, but its consumers could not be paused: only this host holds back");
            }
            Control::open(until, host_id)
        }
        Change::Closed => Control::closed(host_id),
        Change::HalfOpened => return,
    };
    let payload = match serde_json::to_vec(&message) {
        Ok(p) => p,
        Err(_) => return,
    };
    if let Err(e) = client.publish(control_subject(name), payload.into()).await {
        tracing::warn!(plugin = name, error = %e, "cannot tell the other hosts about the circuit");
    }
}

/// Another host or an operator decided.
fn take_over(circuit: &Circuit, name: &str, control: &Control) {
    match control.state {
        ControlState::Open => match control.until.as_deref().and_then(parse_time) {
            Some(until) => open_until(circuit, name, until, &format!("{} opened it", control.by)),
            None => {
                tracing::warn!(plugin = name, by = %control.by, "ignoring an open circuit message without a valid `until`")
            }
        },
        ControlState::Closed => {
            if circuit.close().is_some() {
                tracing::info!(plugin = name, by = %control.by, "circuit closed by {}: events flow again", control.by);
            }
        }
    }
}

fn open_until(circuit: &Circuit, name: &str, until: SystemTime, why: &str) {
    let Ok(left) = until.duration_since(SystemTime::now()) else {
        return;
    };
    let now = tokio::time::Instant::now();
    // Our own pause comes back as an advisory: the same deadline, give or
    // take the clock, is no news.
    if let crate::pipeline::circuit::State::Open { remaining, .. } = circuit.state(now)
        && remaining + Duration::from_secs(1) >= left
    {
        return;
    }
    if circuit.open_until(now, now + left).is_some() {
        tracing::warn!(
            plugin = name,
            remaining_ms = left.as_millis() as u64,
            "circuit open ({why}): no event starts for {} ms",
            left.as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip_and_times_parse() {
        let until = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let open = Control::open(until, "h1");
        let text = serde_json::to_string(&open).expect("json");
        assert_eq!(
            text,
            r#"{"state":"open","until":"2027-01-15T08:00:00.123Z","by":"h1"}"#
        );
        assert_eq!(serde_json::from_str::<Control>(&text).ok(), Some(open));
        assert_eq!(parse_time("2027-01-15T08:00:00.123Z"), Some(until));
        // The server writes nanoseconds.
        assert_eq!(parse_time("2027-01-15T08:00:00.123000000Z"), Some(until));
        assert_eq!(parse_time("yesterday"), None);
    }
}
