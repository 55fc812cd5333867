//! The Prometheus registry of a running host. Plugins count in their
//! [`Stats`] (one relaxed atomic add per fact, no lock on the event path);
//! [`HostCollector`] reads those atomics at scrape time and encodes them
//! through prometheus-client, so nothing is counted twice. It also shows the
//! NATS connection ([`Connection`], implemented by the transport), the
//! sandbox's instance pool, JetStream consumer lag ([`LagBoard`], written by
//! the transport's poller) and `weir_build_info` / `weir_plugin_info`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::lag::LagBoard;
use crate::event::FailureKind;
use crate::plugin::{Plugin, Stats};

/// What the metrics and `/readyz` read of the NATS connection.
pub trait Connection: Send + Sync + std::fmt::Debug + 'static {
    /// Whether the client is connected right now.
    fn connected(&self) -> bool;
    /// Connections made after the first one.
    fn reconnects(&self) -> u64;
}

/// One plugin as the metrics show it.
#[derive(Clone)]
pub struct PluginView(pub Arc<Plugin>);

impl std::fmt::Debug for PluginView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PluginView").field(&self.name()).finish()
    }
}

impl PluginView {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn stats(&self) -> &Stats {
        &self.0.stats
    }
}

/// The sandbox's instance pool, host-wide.
#[derive(Clone)]
pub struct SandboxView {
    pub engine: wasmtime::Engine,
    /// `sandbox.max_instances`: component instances alive at once.
    pub slots: u32,
}

impl std::fmt::Debug for SandboxView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxView")
            .field("slots", &self.slots)
            .finish()
    }
}

/// Reads every plugin's counters, the connection, the pool and the consumer
/// lag at each scrape.
#[derive(Debug)]
pub struct HostCollector {
    /// Read at each scrape: a swapped plugin shows its new version.
    pub roster: Arc<crate::roster::Roster>,
    pub connection: Arc<dyn Connection>,
    pub sandbox: Option<SandboxView>,
    pub lag: Arc<LagBoard>,
    /// This host's webhook deliverer, when it runs one.
    pub webhooks: Option<Arc<crate::webhook::Counters>>,
    /// This host's schedule forwarder, when it runs one.
    pub schedules: Option<Arc<crate::schedule::forward::Counters>>,
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
        "weir_events_retried",
        "Failed attempts to be tried again after the backoff.",
        |s| &s.retried,
    ),
    (
        "weir_dead_letters_unstored",
        "Dead letters that could not be stored.",
        |s| &s.dead_letters_unstored,
    ),
    (
        "weir_outputs_published",
        "Messages published for finished events.",
        |s| &s.outputs_published,
    ),
    (
        "weir_outputs_retried",
        "Outputs published again because the server could not take them yet.",
        |s| &s.outputs_retried,
    ),
    (
        "weir_instance_pool_exhausted",
        "Attempts that found no free instance slot (sandbox.max_instances).",
        |s| &s.pool_exhausted,
    ),
    (
        "weir_batches",
        "Calls that carried a batch of events (subscriptions with batch).",
        |s| &s.batches,
    ),
    (
        "weir_batched_events",
        "Events handed to the plugin in batches.",
        |s| &s.batched_events,
    ),
    (
        "weir_batch_splits",
        "Batches that failed as a whole and were split in halves.",
        |s| &s.batch_splits,
    ),
    (
        "weir_order_waits",
        "Events that waited behind an earlier event of their key (order_by).",
        |s| &s.order_waits,
    ),
    (
        "weir_outputs_unconfirmed",
        "Events whose outputs could not be published or confirmed.",
        |s| &s.outputs_unconfirmed,
    ),
    (
        "weir_status_unrecorded",
        "Status writes of HTTP gateway events that could not be stored.",
        |s| &s.status_unrecorded,
    ),
    (
        "weir_webhooks_queued",
        "Webhooks of final statuses stored for delivery.",
        |s| &s.webhooks_queued,
    ),
    (
        "weir_webhooks_unqueued",
        "Webhooks of final statuses that could not be stored for delivery.",
        |s| &s.webhooks_unqueued,
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
            for p in &self.views() {
                let labels = [("plugin", p.name())];
                ConstCounter::new(Stats::get(pick(p.stats())))
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        self.encode_kinds(&mut encoder)?;
        self.encode_shed(&mut encoder)?;
        self.encode_gauges(&mut encoder)?;
        for (name, help, pick) in HISTOGRAMS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for p in &self.views() {
                let labels = [("plugin", p.name())];
                pick(p.stats()).0.encode(metric.encode_family(&labels)?)?;
            }
        }
        self.encode_lag(&mut encoder)?;
        self.encode_sandbox(&mut encoder)?;
        self.encode_webhooks(&mut encoder)?;
        self.encode_schedules(&mut encoder)?;
        let mut info = encoder.encode_descriptor(
            "weir_plugin",
            "A loaded plugin: its version and wasm SHA-256.",
            None,
            MetricType::Info,
        )?;
        for p in &self.views() {
            let labels = [
                ("plugin", p.name()),
                ("version", p.0.manifest.version.as_str()),
                ("sha256", p.0.sha256.as_str()),
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

/// Histograms per plugin: (name, help, which one).
type PickHistogram = fn(&Stats) -> &crate::stats::Seconds;
const HISTOGRAMS: &[(&str, &str, PickHistogram)] = &[
    (
        "weir_attempt_duration_seconds",
        "Handler attempts' duration, instantiation included.",
        |s| &s.attempt_seconds,
    ),
    (
        "weir_output_confirm_seconds",
        "Publishing a finished event's outputs until the server had them.",
        |s| &s.confirm_seconds,
    ),
];

impl HostCollector {
    fn views(&self) -> Vec<PluginView> {
        self.roster.plugins().into_iter().map(PluginView).collect()
    }

    /// Failed attempts by kind, and dead letters by the kind they carry
    /// (`Weir-Error-Kind`: `retry-exhausted` for a retry that ran out).
    fn encode_kinds(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut failed = encoder.encode_descriptor(
            "weir_attempts_failed",
            "Handler attempts that failed (retried or not), by failure kind.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.views() {
            for kind in FailureKind::ALL {
                let labels = [("plugin", p.name()), ("kind", kind.as_str())];
                ConstCounter::new(p.stats().failed_by_kind.get(kind))
                    .encode(failed.encode_family(&labels)?)?;
            }
        }
        let mut dead = encoder.encode_descriptor(
            "weir_events_dead_lettered",
            "Dead letters stored, by the kind of the event's last failure.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.views() {
            for kind in FailureKind::ALL {
                let labels = [("plugin", p.name()), ("kind", kind.dead_letter_kind())];
                ConstCounter::new(p.stats().dead_lettered_by_kind.get(kind))
                    .encode(dead.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn encode_shed(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut shed = encoder.encode_descriptor(
            "weir_events_shed",
            "Core events dropped unstarted, by reason.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.views() {
            for (reason, n) in [
                ("queue-full", Stats::get(&p.stats().shed)),
                ("circuit-open", Stats::get(&p.stats().shed_circuit_open)),
            ] {
                let labels = [("plugin", p.name()), ("reason", reason)];
                ConstCounter::new(n).encode(shed.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn encode_gauges(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Read = fn(&PluginView) -> u64;
        let gauges: [(&str, &str, Read); 4] = [
            (
                "weir_events_in_flight",
                "Events running: from taking a max_in_flight slot to being settled.",
                |p| Stats::level(&p.stats().in_flight),
            ),
            (
                "weir_events_queued",
                "Events taken from NATS waiting in the plugin's queue.",
                |p| Stats::level(&p.stats().queued),
            ),
            (
                "weir_events_waiting_for_key",
                "Events of order_by subscriptions waiting behind an earlier event of their key.",
                |p| Stats::level(&p.stats().order_waiting),
            ),
            (
                "weir_instances_warm",
                "Idle instances kept for the next events (isolation = \"reuse\").",
                |p| p.0.executor.warm_instances() as u64,
            ),
        ];
        for (name, help, read) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &self.views() {
                let labels = [("plugin", p.name())];
                ConstGauge::new(read(p) as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// JetStream consumer lag as last polled: the consumers the server
    /// answered for (a missing one has no series; `/readyz` names it).
    fn encode_lag(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.lag.samples();
        type Pick = fn((u64, u64)) -> u64;
        let figures: [(&str, &str, Pick); 2] = [
            (
                "weir_consumer_pending",
                "Messages of the stream not yet delivered to the consumer (num_pending).",
                |(pending, _)| pending,
            ),
            (
                "weir_consumer_ack_pending",
                "Messages delivered and not yet acknowledged (num_ack_pending).",
                |(_, ack_pending)| ack_pending,
            ),
        ];
        for (name, help, pick) in figures {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &samples {
                let Some(last) = s.last else { continue };
                let labels = [
                    ("plugin", s.plugin.as_str()),
                    ("stream", s.stream.as_str()),
                    ("consumer", s.consumer.as_str()),
                ];
                ConstGauge::new(pick(last) as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// What this host's schedule forwarder did, per schedule and outcome.
    fn encode_schedules(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(c) = &self.schedules else {
            return Ok(());
        };
        let mut metric = encoder.encode_descriptor(
            "weir_schedule_ticks",
            "Fired schedule messages this host forwarded to their subjects (forwarded) or NAK'd to try again (retried), per schedule (one-shots together as once).",
            None,
            MetricType::Counter,
        )?;
        for (schedule, o) in c.snapshot() {
            for (outcome, n) in [("forwarded", o.forwarded), ("retried", o.retried)] {
                let labels = [("schedule", schedule.as_str()), ("outcome", outcome)];
                ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// What this host's webhook deliverer did, by outcome.
    fn encode_webhooks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(c) = &self.webhooks else {
            return Ok(());
        };
        let get = crate::webhook::Counters::get;
        let mut metric = encoder.encode_descriptor(
            "weir_webhook_deliveries",
            "Webhook POSTs by outcome: delivered (2xx), retried, gone (410), dead_lettered, dead_letters_unstored.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [
            ("delivered", get(&c.delivered)),
            ("retried", get(&c.retried)),
            ("gone", get(&c.gone)),
            ("dead_lettered", get(&c.dead_lettered)),
            ("dead_letters_unstored", get(&c.dead_letters_unstored)),
        ] {
            ConstCounter::new(n).encode(metric.encode_family(&[("outcome", outcome)])?)?;
        }
        Ok(())
    }

    /// The pooling allocator's view: component instances alive of the slots.
    fn encode_sandbox(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sandbox) = &self.sandbox else {
            return Ok(());
        };
        let alive = sandbox
            .engine
            .pooling_allocator_metrics()
            .map_or(0, |m| m.component_instances());
        ConstGauge::new(alive as i64).encode(encoder.encode_descriptor(
            "weir_sandbox_instances",
            "Component instances alive in the pool, all plugins together.",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(i64::from(sandbox.slots)).encode(encoder.encode_descriptor(
            "weir_sandbox_instance_slots",
            "Instances the pool holds at most (sandbox.max_instances).",
            None,
            MetricType::Gauge,
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
