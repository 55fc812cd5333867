//! The Prometheus registry of a running host. Plugins count in their
//! [`Stats`] (one relaxed atomic add per fact, no lock on the event path);
//! [`HostCollector`] reads those atomics at scrape time and encodes them
//! through prometheus-client, so nothing is counted twice. It also shows the
//! NATS connection ([`Connection`], implemented by the transport) and
//! `weir_build_info` / `weir_plugin_info`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::plugin::{Plugin, Stats};

/// What the metrics and `/readyz` read of the NATS connection.
pub trait Connection: Send + Sync + std::fmt::Debug + 'static {
    /// Whether the client is connected right now.
    fn connected(&self) -> bool;
    /// Connections made after the first one.
    fn reconnects(&self) -> u64;
}

/// One plugin as the metrics show it.
#[derive(Debug, Clone)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub stats: Arc<Stats>,
}

impl PluginView {
    pub fn of(plugin: &Plugin) -> Self {
        Self {
            name: plugin.name().to_owned(),
            version: plugin.manifest.version.to_string(),
            sha256: plugin.sha256.clone(),
            stats: plugin.stats.clone(),
        }
    }
}

/// Reads every plugin's counters and the connection at each scrape.
#[derive(Debug)]
pub struct HostCollector {
    pub plugins: Vec<PluginView>,
    pub connection: Arc<dyn Connection>,
}

/// Counters per plugin: (name without `_total`, help, which atomic).
type Pick = fn(&Stats) -> &AtomicU64;
const COUNTERS: &[(&str, &str, Pick)] = &[
    ("weir_events_received", "New events taken from NATS.", |s| {
        &s.received
    }),
    (
        "weir_events_redelivered",
        "JetStream deliveries of an event delivered before.",
        |s| &s.redelivered,
    ),
    (
        "weir_events_succeeded",
        "Events finished with their outputs published.",
        |s| &s.succeeded,
    ),
    (
        "weir_attempts_failed",
        "Handler attempts that failed (retried or not).",
        |s| &s.failed_attempts,
    ),
    (
        "weir_events_retried",
        "Failed attempts to be tried again after the backoff.",
        |s| &s.retried,
    ),
    ("weir_events_dead_lettered", "Dead letters stored.", |s| {
        &s.dead_lettered
    }),
    (
        "weir_dead_letters_unstored",
        "Dead letters that could not be stored.",
        |s| &s.dead_letters_unstored,
    ),
    (
        "weir_outputs_unconfirmed",
        "Events whose outputs could not be published or confirmed.",
        |s| &s.outputs_unconfirmed,
    ),
    (
        "weir_events_handed_back",
        "JetStream deliveries handed back unstarted (shutdown).",
        |s| &s.handed_back,
    ),
    (
        "weir_pull_stalls",
        "JetStream pulls found stalled and renewed.",
        |s| &s.stalls,
    ),
    (
        "weir_circuit_opened",
        "Times this host's attempts opened the circuit.",
        |s| &s.circuit_opened,
    ),
    (
        "weir_events_held",
        "JetStream attempts that failed while the circuit was open (held).",
        |s| &s.held,
    ),
];

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, pick) in COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &self.plugins {
                let labels = [("plugin", p.name.as_str())];
                ConstCounter::new(Stats::get(pick(&p.stats)))
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut shed = encoder.encode_descriptor(
            "weir_events_shed",
            "Core events dropped unstarted, by reason.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.plugins {
            for (reason, n) in [
                ("queue-full", Stats::get(&p.stats.shed)),
                ("circuit-open", Stats::get(&p.stats.shed_circuit_open)),
            ] {
                let labels = [("plugin", p.name.as_str()), ("reason", reason)];
                ConstCounter::new(n).encode(shed.encode_family(&labels)?)?;
            }
        }
        let mut info = encoder.encode_descriptor(
            "weir_plugin",
            "A loaded plugin: its version and wasm SHA-256.",
            None,
            MetricType::Info,
        )?;
        for p in &self.plugins {
            let labels = [
                ("plugin", p.name.as_str()),
                ("version", p.version.as_str()),
                ("sha256", p.sha256.as_str()),
            ];
            info.encode_info(&labels)?;
        }
        let connected = ConstGauge::new(i64::from(self.connection.connected()));
        connected.encode(encoder.encode_descriptor(
            "weir_nats_connected",
            "1 while the host is connected to NATS, else 0.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(self.connection.reconnects()).encode(encoder.encode_descriptor(
            "weir_nats_reconnects",
            "Connections to NATS made after the first.",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

/// The host's registry: `weir_build_info` and the [`HostCollector`].
pub fn registry(collector: HostCollector) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "weir_build",
        "The weir build serving these metrics.",
        prometheus_client::metrics::info::Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(collector));
    registry
}
