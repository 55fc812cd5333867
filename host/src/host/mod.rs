//! `weir up`: load the plugins, connect, subscribe, dispatch, and stop
//! gracefully.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bundle::{self, Bundle};
use crate::config::HostConfig;
use crate::pipeline;
use crate::plugin::{Plugin, Stats};
use crate::sandbox::Runtime;
use crate::telemetry;
use crate::telemetry::traces::Traces;
use crate::transport::{self, IdSource, NatsSink, jetstream};

mod wiring;
use wiring::{Running, dev_stream_specs, subscribe_plugin, watched_consumers};

/// A bundle that was not loaded, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    pub path: PathBuf,
    pub reason: String,
}

/// What `load_plugins` found.
pub struct Loaded {
    pub plugins: Vec<Arc<Plugin>>,
    pub refused: Vec<Refused>,
}

/// Load every bundle the config names. A bad bundle is refused with its
/// reason and the others load. Their events are traced through `traces`.
pub fn load_plugins(runtime: &Runtime, config: &HostConfig, traces: &Traces) -> Loaded {
    let mut folders: Vec<PathBuf> = Vec::new();
    let mut refused = Vec::new();
    for dir in &config.plugins.dirs {
        match bundle::discover(dir) {
            Ok(found) => folders.extend(found),
            Err(e) => refused.push(Refused {
                path: dir.clone(),
                reason: e.to_string(),
            }),
        }
    }
    folders.extend(config.plugins.bundles.iter().cloned());

    let mut names = HashSet::new();
    let mut plugins = Vec::new();
    for folder in folders {
        match load_one(runtime, config, &folder, traces) {
            Ok(plugin) if !names.insert(plugin.name().to_owned()) => refused.push(Refused {
                reason: format!(
                    "{}: name: another bundle already uses the name {:?}",
                    folder.join(bundle::MANIFEST).display(),
                    plugin.name()
                ),
                path: folder,
            }),
            Ok(plugin) => plugins.push(Arc::new(plugin)),
            Err(reason) => refused.push(Refused {
                path: folder,
                reason,
            }),
        }
    }
    for r in &refused {
        tracing::error!("refusing plugin {}: {}", r.path.display(), r.reason);
    }
    Loaded { plugins, refused }
}

fn load_one(
    runtime: &Runtime,
    config: &HostConfig,
    folder: &Path,
    traces: &Traces,
) -> Result<Plugin, String> {
    let bundle = Bundle::load(folder, config.sandbox.max_memory_mb).map_err(|e| e.to_string())?;
    // Traced, the guest's log lines are kept too: they become span events.
    let mut plugin = Plugin::load(runtime, &bundle, config, traces.is_on())
        .map_err(|e| format!("{}: {e}", bundle.wasm_path.display()))?;
    let name = plugin.name();
    let subscriptions = (plugin.manifest.subscribe.iter())
        .map(|s| (s.subject.clone(), transport::consumer_group(name, s)));
    plugin.tracing = pipeline::PluginTracing::new(traces, name, subscriptions);
    tracing::info!(
        plugin = plugin.name(),
        version = %plugin.manifest.version,
        sha256 = %bundle.sha256_hex(),
        isolation = ?plugin.manifest.limits.isolation,
        "plugin loaded"
    );
    Ok(plugin)
}

/// A running host.
pub struct Host {
    plugins: Vec<Arc<Plugin>>,
    refused: Vec<Refused>,
    sink: Arc<NatsSink>,
    /// Fired to stop taking events.
    stop: CancellationToken,
    /// Readers and dispatchers.
    feeders: TaskTracker,
    /// One task per event in flight.
    events: TaskTracker,
    grace: Duration,
    /// Stops the telemetry endpoint, last of all.
    telemetry_stop: CancellationToken,
    /// Where the telemetry endpoint listens, when it does.
    metrics_addr: Option<std::net::SocketAddr>,
    /// This host as an instance of the `weir` NATS micro-service.
    service: async_nats::service::Service,
    /// Span export; flushed once the events are finished.
    traces: Traces,
    // Kept alive for the executors' engine and its epoch ticker.
    _runtime: Arc<Runtime>,
}

impl Host {
    /// Load plugins, connect and subscribe. When this returns, every
    /// subscription is registered with the server.
    pub async fn start(config: &HostConfig) -> anyhow::Result<Self> {
        Self::start_with(config, false).await
    }

    /// Like [`start`](Self::start); with `dev_streams`, also create the
    /// streams that the plugins' jetstream subscriptions name (`weir up --dev`).
    pub async fn start_with(config: &HostConfig, dev_streams: bool) -> anyhow::Result<Self> {
        let telemetry_stop = CancellationToken::new();
        // A start-up that fails stops the endpoint too.
        let stop_on_failure = telemetry_stop.clone().drop_guard();
        let served = Arc::new(telemetry::http::Served::default());
        let metrics_addr = match config.telemetry.listen {
            Some(addr) => {
                Some(telemetry::http::start(addr, served.clone(), telemetry_stop.clone()).await?)
            }
            None => None,
        };
        let runtime = Arc::new(Runtime::new(&config.sandbox)?);
        let traces = Traces::start(&config.telemetry)?;
        let Loaded { plugins, refused } = {
            let runtime = runtime.clone();
            let config = config.clone();
            let traces = traces.clone();
            tokio::task::spawn_blocking(move || load_plugins(&runtime, &config, &traces))
                .await
                .context("plugin loading panicked")?
        };
        if plugins.is_empty() {
            tracing::warn!("no plugin loaded: the host will idle");
        }
        let wanted: u64 = plugins
            .iter()
            .map(|p| u64::from(p.manifest.limits.max_in_flight))
            .sum();
        if wanted > u64::from(config.sandbox.max_instances) {
            tracing::warn!(
                "the plugins' max_in_flight add up to {wanted}, more than sandbox.max_instances ({}): \
                 under full load some events will fail to get an instance and be retried",
                config.sandbox.max_instances
            );
        }

        let client = transport::connect(&config.nats).await?;
        let link: Arc<dyn telemetry::metrics::Connection> =
            Arc::new(transport::Link(client.clone()));
        let _ = served.connection.set(link.clone());
        let sink = Arc::new(NatsSink::new(client.clone(), &config.dead_letter).await);
        let ctx = Running {
            ids: Arc::new(IdSource::default()),
            feeders: TaskTracker::new(),
            events: TaskTracker::new(),
            stop: CancellationToken::new(),
            grace: Duration::from_millis(config.shutdown.grace_ms),
            features: transport::features(&client)?,
            host_id: format!("{}-{:08x}", config.nats.name, rand::random::<u32>()),
        };

        let mut streams = config.streams.clone();
        if dev_streams {
            streams.extend(dev_stream_specs(&plugins, &streams));
        }
        if !streams.is_empty() {
            let js = sink
                .jetstream()
                .context("weir.toml declares [[streams]] but the NATS server has no JetStream")?;
            jetstream::ensure_streams(js, &streams).await?;
        }

        let mut refused = refused;
        let mut running = Vec::new();
        for plugin in plugins {
            match subscribe_plugin(&client, &sink, &plugin, &ctx).await {
                Ok(()) => running.push(plugin),
                Err(e) => {
                    // A subscription that cannot be made refuses the plugin;
                    // the others keep running.
                    let reason = format!("{e:#}");
                    tracing::error!(plugin = plugin.name(), "refusing plugin: {reason}");
                    refused.push(Refused {
                        path: PathBuf::from(plugin.name()),
                        reason,
                    });
                }
            }
        }
        let plugins = running;
        let requests = client
            .subscribe(crate::status::SUBJECT)
            .await
            .context("cannot subscribe to status requests")?;
        ctx.feeders.spawn(crate::status::answer(
            client.clone(),
            requests,
            ctx.host_id.clone(),
            plugins.clone(),
            ctx.stop.clone(),
        ));
        let service = crate::fleet::register(
            &client,
            crate::fleet::Source {
                host: ctx.host_id.clone(),
                plugins: plugins.clone(),
                refused: refused.clone(),
                started: std::time::SystemTime::now(),
                nats_server: client.server_info().server_name,
                metrics: metrics_addr,
                hostname: crate::fleet::hostname(),
            },
            ctx.stop.clone(),
            &ctx.feeders,
        )
        .await?;
        transport::sync_with_server(&client)
            .await
            .context("cannot confirm the subscriptions with the server")?;
        let lag = Arc::new(telemetry::lag::LagBoard::default());
        if metrics_addr.is_some()
            && let Some(js) = sink.jetstream()
        {
            let watched = watched_consumers(&plugins);
            if !watched.is_empty() {
                let every = Duration::from_millis(config.telemetry.lag_poll_ms);
                ctx.feeders.spawn(transport::lag::poll(
                    js.clone(),
                    watched,
                    every,
                    lag.clone(),
                    ctx.stop.clone(),
                ));
                let _ = served.lag.set(lag.clone());
            }
        }
        ctx.feeders.close();
        let collector = telemetry::metrics::HostCollector {
            plugins: plugins
                .iter()
                .map(telemetry::metrics::PluginView::of)
                .collect(),
            connection: link,
            sandbox: Some(telemetry::metrics::SandboxView {
                engine: runtime.engine().clone(),
                slots: config.sandbox.max_instances,
            }),
            lag,
        };
        let _ = served.registry.set(telemetry::metrics::registry(collector));
        served
            .started
            .store(true, std::sync::atomic::Ordering::Release);
        stop_on_failure.disarm();

        Ok(Self {
            service,
            telemetry_stop,
            metrics_addr,
            traces,
            plugins,
            refused,
            sink,
            stop: ctx.stop,
            feeders: ctx.feeders,
            events: ctx.events,
            grace: ctx.grace,
            _runtime: runtime,
        })
    }

    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    pub fn refused(&self) -> &[Refused] {
        &self.refused
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, when they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Stop taking events, let in-flight and already received events finish
    /// (failures are dead-lettered, not retried), then flush.
    pub async fn stop(self) -> anyhow::Result<()> {
        tracing::info!("shutting down: no new events; finishing those in flight");
        self.stop.cancel();
        let drained = tokio::time::timeout(self.grace, async {
            self.feeders.wait().await;
            self.events.close();
            self.events.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::error!(
                in_flight = self.events.len(),
                "shutdown grace ({} ms) ran out with events still in flight",
                self.grace.as_millis()
            );
        }
        let flushed = transport::sync_with_server(self.sink.client())
            .await
            .context("cannot flush the last messages to NATS");
        for plugin in &self.plugins {
            let s = &plugin.stats;
            let get = Stats::get;
            tracing::info!(
                plugin = plugin.name(),
                received = get(&s.received),
                redelivered = get(&s.redelivered),
                succeeded = get(&s.succeeded),
                failed_attempts = get(&s.failed_attempts),
                retried = get(&s.retried),
                dead_lettered = get(&s.dead_lettered),
                dead_letters_unstored = get(&s.dead_letters_unstored),
                outputs_unconfirmed = get(&s.outputs_unconfirmed),
                outputs_retried = get(&s.outputs_retried),
                shed = get(&s.shed),
                handed_back = get(&s.handed_back),
                stalls = get(&s.stalls),
                circuit_opened = get(&s.circuit_opened),
                held = get(&s.held),
                shed_circuit_open = get(&s.shed_circuit_open),
                "plugin totals"
            );
        }
        if let Err(e) = self.service.stop().await {
            tracing::debug!(error = %e, "cannot stop the weir NATS service");
        }
        // After the events: their spans are all ended.
        self.traces.shutdown().await;
        self.telemetry_stop.cancel();
        flushed
    }
}

/// Run a host until `shutdown` resolves. `dev_streams`: see [`Host::start_with`].
pub async fn run(
    config: &HostConfig,
    dev_streams: bool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    // A signal while starting (e.g. still waiting for the NATS server) stops
    // the start-up too.
    let host = tokio::select! {
        host = Host::start_with(config, dev_streams) => host?,
        _ = &mut shutdown => {
            tracing::info!("stopped before start-up finished");
            return Ok(());
        }
    };
    tracing::info!(
        plugins = host.plugins().len(),
        refused = host.refused().len(),
        "weir is up"
    );
    shutdown.await;
    host.stop().await
}
