//! `weir status`: every running host answers a request on [`SUBJECT`] with
//! its plugins' circuits and counters ([`HostStatus`]); the CLI publishes one
//! request and gathers every answer that comes within a moment (a NATS
//! scatter-gather: each host replies, not just the first).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::pipeline::circuit::{Cause, State};
use crate::plugin::{Plugin, Stats};

/// Where every host listens for status requests.
pub const SUBJECT: &str = "weir.status";

/// One host's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    pub plugins: Vec<PluginStatus>,
}

/// One plugin on one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub circuit: CircuitState,
    /// Open: how long until probes go out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_remaining_ms: Option<u64>,
    /// Open: `failures` (this host's attempts) or `elsewhere` (another host,
    /// an operator, a consumer pause on the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_cause: Option<OpenCause>,
    /// Whether `[circuit]` lets it trip by itself.
    pub circuit_configured: bool,
    pub received: u64,
    pub succeeded: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub shed: u64,
    pub shed_circuit_open: u64,
    pub held: u64,
    pub circuit_opened: u64,
}

/// A circuit as `weir status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

/// Why a circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpenCause {
    /// This host's attempts tripped it.
    Failures,
    /// Another host, an operator, or a consumer pause on the server.
    Elsewhere,
}

/// What this host says about `plugins` now.
pub fn report(host: &str, plugins: &[Arc<Plugin>]) -> HostStatus {
    let now = tokio::time::Instant::now();
    let plugins = plugins
        .iter()
        .map(|p| {
            let (circuit, remaining, cause) = match p.circuit.state(now) {
                State::Closed { .. } => (CircuitState::Closed, None, None),
                State::HalfOpen { .. } => (CircuitState::HalfOpen, None, None),
                State::Open { remaining, cause } => (
                    CircuitState::Open,
                    Some(remaining.as_millis() as u64),
                    Some(match cause {
                        Cause::Failures => OpenCause::Failures,
                        Cause::Elsewhere => OpenCause::Elsewhere,
                    }),
                ),
            };
            let s = &p.stats;
            PluginStatus {
                name: p.name().to_owned(),
                version: p.manifest.version.clone(),
                circuit,
                circuit_remaining_ms: remaining,
                circuit_cause: cause,
                circuit_configured: p.manifest.circuit.is_some(),
                received: Stats::get(&s.received),
                succeeded: Stats::get(&s.succeeded),
                failed_attempts: Stats::get(&s.failed_attempts),
                dead_lettered: Stats::get(&s.dead_lettered),
                shed: Stats::get(&s.shed),
                shed_circuit_open: Stats::get(&s.shed_circuit_open),
                held: Stats::get(&s.held),
                circuit_opened: Stats::get(&s.circuit_opened),
            }
        })
        .collect();
    HostStatus {
        host: host.to_owned(),
        plugins,
    }
}

/// Answer status requests on `requests` (a subscription to [`SUBJECT`])
/// until `stop`.
pub async fn answer(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    host: String,
    roster: Arc<crate::roster::Roster>,
    stop: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            request = requests.next() => match request {
                Some(request) => request,
                None => return,
            },
        };
        let Some(reply) = request.reply else { continue };
        if crate::policy::is_unsafe_reply(&reply) {
            continue;
        }
        let Ok(body) = serde_json::to_vec(&report(&host, &roster.plugins())) else {
            continue;
        };
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::debug!(error = %e, "cannot answer a status request");
        }
    }
}

/// Ask every host and gather the answers that come within `wait`.
pub async fn gather(
    client: &async_nats::Client,
    wait: Duration,
) -> anyhow::Result<Vec<HostStatus>> {
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .context("cannot subscribe to the answers")?;
    client
        .publish_with_reply(SUBJECT, inbox, bytes::Bytes::new())
        .await
        .context("cannot ask the hosts")?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut hosts = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
        match serde_json::from_slice::<HostStatus>(&msg.payload) {
            Ok(status) => hosts.push(status),
            Err(e) => tracing::warn!(error = %e, "ignoring a status answer that does not parse"),
        }
    }
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(hosts)
}
