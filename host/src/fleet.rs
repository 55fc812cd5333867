//! The fleet view: every running host is an instance of the NATS
//! micro-service `weir` (async-nats' service API), so `$SRV.PING|INFO|STATS`
//! and `nats micro ls weir` see it like any other service. The STATS answer's
//! `data`, on its `ps` endpoint, is the host's [`Ps`] report: what `weir ps`
//! gathers from every host. The endpoint (`weir.ps.<host id>`, the id's
//! characters other than letters, digits, `-` and `_` made `_`) answers the
//! same report to a direct request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_nats::service::{self, ServiceExt as _};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::plugin::Stats;
use crate::status::CircuitState;

/// The service's name: every weir host is one of its instances.
pub const SERVICE: &str = "weir";

/// One host, as `weir ps` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ps {
    pub host: String,
    pub hostname: String,
    pub pid: u32,
    pub weir_version: String,
    /// RFC 3339.
    pub started: String,
    pub uptime_ms: u64,
    /// The NATS server the host is connected to (`server_name`).
    pub nats_server: String,
    /// Where its `/metrics` is served, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    pub plugins: Vec<PsPlugin>,
}

/// One plugin on one host: running (its circuit's state), or refused. A
/// plugin whose new version was refused shows twice: the version still
/// running, and the refused one with its reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PsPlugin {
    /// The plugin's name; for a bundle refused before its manifest was read, its path.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `running`, `paused` (circuit open), `half-open` or `refused`.
    pub state: String,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub received: u64,
    #[serde(default)]
    pub succeeded: u64,
    #[serde(default)]
    pub failed_attempts: u64,
    #[serde(default)]
    pub dead_lettered: u64,
    #[serde(default)]
    pub shed: u64,
}

/// What the report is made of.
#[derive(Clone)]
pub struct Source {
    pub host: String,
    /// Read at each request: what runs now, what was refused.
    pub roster: Arc<crate::roster::Roster>,
    pub started: SystemTime,
    pub nats_server: String,
    pub metrics: Option<std::net::SocketAddr>,
    /// Read once, at start-up.
    pub hostname: String,
}

impl Source {
    pub fn report(&self) -> Ps {
        let running = self.roster.plugins();
        let status = crate::status::report(&self.host, &running);
        let mut plugins: Vec<PsPlugin> = running
            .iter()
            .zip(status.plugins)
            .map(|(p, s)| {
                let state = match s.circuit {
                    CircuitState::Closed => "running",
                    CircuitState::Open => "paused",
                    CircuitState::HalfOpen => "half-open",
                };
                PsPlugin {
                    name: p.name().to_owned(),
                    version: Some(p.manifest.version.to_string()),
                    sha256: Some(p.sha256.clone()),
                    state: state.into(),
                    reason: None,
                    received: s.received,
                    succeeded: s.succeeded,
                    failed_attempts: s.failed_attempts,
                    dead_lettered: s.dead_lettered,
                    shed: Stats::get(&p.stats.shed) + Stats::get(&p.stats.shed_circuit_open),
                }
            })
            .collect();
        plugins.extend(self.roster.refused().into_iter().map(|r| PsPlugin {
            name: r.name.unwrap_or_else(|| r.path.display().to_string()),
            version: r.version,
            sha256: r.sha256,
            state: "refused".into(),
            reason: Some(r.reason),
            received: 0,
            succeeded: 0,
            failed_attempts: 0,
            dead_lettered: 0,
            shed: 0,
        }));
        Ps {
            host: self.host.clone(),
            hostname: self.hostname.clone(),
            pid: std::process::id(),
            weir_version: env!("CARGO_PKG_VERSION").into(),
            started: crate::pipeline::rfc3339(self.started),
            uptime_ms: SystemTime::now()
                .duration_since(self.started)
                .unwrap_or_default()
                .as_millis() as u64,
            nats_server: self.nats_server.clone(),
            metrics: self.metrics.map(|a| a.to_string()),
            plugins,
        }
    }
}

/// This machine's name (`/etc/hostname`), empty when unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Register this host as an instance of [`SERVICE`] and answer on its `ps`
/// endpoint until `stop`; the returned service is stopped by dropping it
/// after `stop` (or with [`service::Service::stop`]).
pub async fn register(
    client: &async_nats::Client,
    source: Source,
    stop: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> anyhow::Result<service::Service> {
    let for_stats = source.clone();
    let metadata = HashMap::from([
        ("host".to_owned(), source.host.clone()),
        ("hostname".to_owned(), source.hostname.clone()),
        ("pid".to_owned(), std::process::id().to_string()),
    ]);
    let service = client
        .service_builder()
        .description("weir: a host for WebAssembly event handlers")
        .metadata(metadata)
        .stats_handler(move |endpoint, _| match endpoint.as_str() {
            "ps" => serde_json::to_value(for_stats.report()).unwrap_or_default(),
            _ => serde_json::Value::Null,
        })
        .start(SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot register the {SERVICE} NATS service: {e}"))?;
    let mut endpoint = service
        .endpoint_builder()
        .name("ps")
        .add(format!("weir.ps.{}", subject_token(&source.host)))
        .await
        .map_err(|e| anyhow::anyhow!("cannot add the ps endpoint: {e}"))?;
    tasks.spawn(async move {
        loop {
            let request = tokio::select! {
                _ = stop.cancelled() => return,
                request = endpoint.next() => match request {
                    Some(request) => request,
                    None => return,
                },
            };
            let body = serde_json::to_vec(&source.report()).unwrap_or_default();
            if let Err(e) = request.respond(Ok(body.into())).await {
                tracing::debug!(error = %e, "cannot answer a ps request");
            }
        }
    });
    Ok(service)
}

/// `host` as one subject token (`nats.name` may hold spaces or dots).
fn subject_token(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every host's report: one `$SRV.STATS.weir` request, the answers that come
/// within `wait`, sorted by host.
pub async fn gather(client: &async_nats::Client, wait: Duration) -> anyhow::Result<Vec<Ps>> {
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .context("cannot subscribe to the answers")?;
    client
        .publish_with_reply(format!("$SRV.STATS.{SERVICE}"), inbox, bytes::Bytes::new())
        .await
        .context("cannot ask the hosts")?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut hosts = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
        let stats = match serde_json::from_slice::<service::Stats>(&msg.payload) {
            Ok(stats) => stats,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a STATS answer that does not parse");
                continue;
            }
        };
        let report = stats
            .endpoints
            .into_iter()
            .find(|e| e.name == "ps")
            .and_then(|e| e.data)
            .and_then(|data| serde_json::from_value::<Ps>(data).ok());
        match report {
            Some(report) => hosts.push(report),
            None => tracing::warn!(id = %stats.id, "a weir service instance without a ps report"),
        }
    }
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(hosts)
}
