//! `weir up`: load the plugins, connect, subscribe, dispatch, follow what
//! is deployed and what is rebuilt ([`follow`], [`reload`], both through
//! [`swap`]), and stop gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HostConfig;
use crate::plugin::{Plugin, Stats};
use crate::roster::Roster;
use crate::sandbox::Runtime;
use crate::telemetry;
use crate::telemetry::traces::Traces;
use crate::transport::{self, IdSource, NatsSink, jetstream};

mod follow;
mod load;
mod reload;
mod resume;
mod swap;
mod wiring;
pub use crate::roster::Refused;
use load::Loader;
use swap::{Origin, Swapper};
use wiring::{Running, dev_stream_specs};

/// A running host.
pub struct Host {
    /// What runs now: read by status, `weir ps` and `/metrics`.
    roster: Arc<Roster>,
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
    /// Where the HTTP gateway listens, when it does.
    http_addr: Option<std::net::SocketAddr>,
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
        let loader = Loader {
            runtime: runtime.clone(),
            config: config.clone(),
            traces: traces.clone(),
        };
        let (plugins, refused) = {
            let loader = loader.clone();
            tokio::task::spawn_blocking(move || loader.load_configured())
                .await
                .context("plugin loading panicked")?
        };
        if plugins.is_empty() && !config.deploy.watch {
            tracing::warn!("no plugin loaded: the host will idle");
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
            let manifests: Vec<_> = plugins.iter().map(|p| &p.plugin.manifest).collect();
            streams.extend(dev_stream_specs(&manifests, &streams));
        }
        if !streams.is_empty() {
            let js = sink
                .jetstream()
                .context("weir.toml declares [[streams]] but the NATS server has no JetStream")?;
            jetstream::ensure_streams(js, &streams).await?;
        }

        // Schedules (issue 19): every host forwards fired messages, so a
        // `weir pub --in` is delivered whichever hosts run.
        let mut schedule_counters = None;
        if let Some(js) = sink.jetstream()
            && ctx.features.schedules()
        {
            let forwarding = async {
                crate::schedule::ensure_stream(js).await?;
                crate::schedule::forward::spawn(
                    js.clone(),
                    sink.clone(),
                    ctx.stop.clone(),
                    &ctx.feeders,
                )
                .await
            };
            match forwarding.await {
                Ok(counters) => schedule_counters = Some(counters),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "no schedule forwarder on this host: delayed and periodic messages wait for another")
                }
            }
        }

        let mut webhook_counters = None;
        let http_addr = match &config.http {
            Some(http) => {
                let prefix = &config.dead_letter.subject_prefix;
                // Read before anything listens: a bad secret stops the start.
                let webhooks = crate::gateway::webhook_settings(http, prefix)?;
                let addr =
                    crate::gateway::start(http, prefix, sink.clone(), ctx.stop.clone()).await?;
                match (webhooks, sink.jetstream()) {
                    (Some(settings), Some(js)) => {
                        webhook_counters = Some(
                            crate::webhook::spawn(
                                js.clone(),
                                settings,
                                ctx.stop.clone(),
                                &ctx.feeders,
                            )
                            .await?,
                        );
                    }
                    _ => tracing::info!(
                        "[http] names no webhook secret: this host delivers no webhooks (others may)"
                    ),
                }
                Some(addr)
            }
            None => None,
        };

        let roster = Arc::new(Roster::default());
        for r in refused.iter().cloned() {
            roster.refuse(r);
        }
        let swapper = Arc::new(Swapper::new(
            client.clone(),
            sink.clone(),
            ctx.clone(),
            roster.clone(),
            config.sandbox.max_instances,
        ));
        let mut watched = Vec::new();
        for r in &refused {
            watched.push((r.path.clone(), None));
        }
        for loaded in plugins {
            let (name, version) = (
                loaded.plugin.name().to_owned(),
                loaded.plugin.manifest.version.clone(),
            );
            let sha256 = loaded.plugin.sha256.clone();
            let origin = Origin::Local(loaded.path.clone());
            match swapper.install(loaded.plugin, origin).await {
                Ok(()) => watched.push((loaded.path, Some(name))),
                Err(reason) => {
                    // A subscription that cannot be made refuses the plugin;
                    // the others keep running.
                    tracing::error!(plugin = %name, "refusing plugin: {reason}");
                    watched.push((loaded.path.clone(), None));
                    roster.refuse(Refused {
                        path: loaded.path,
                        reason,
                        name: Some(name),
                        version: Some(version),
                        sha256: Some(sha256),
                    });
                }
            }
        }
        if config.deploy.watch {
            let js = sink
                .jetstream()
                .context("deploy.watch: the NATS server has no JetStream for this account")?;
            let buckets = crate::deploy::Buckets::open(js, &config.deploy, true).await?;
            let follower = follow::Follower {
                buckets,
                loader: loader.clone(),
                swapper: swapper.clone(),
            };
            let from = follower.converge().await?;
            ctx.feeders.spawn(follower.follow(from, ctx.stop.clone()));
        }
        if config.plugins.watch {
            reload::spawn(
                watched,
                loader.clone(),
                swapper.clone(),
                ctx.stop.clone(),
                &ctx.feeders,
            )?;
        }
        let requests = client
            .subscribe(crate::status::SUBJECT)
            .await
            .context("cannot subscribe to status requests")?;
        ctx.feeders.spawn(crate::status::answer(
            client.clone(),
            requests,
            ctx.host_id.clone(),
            roster.clone(),
            ctx.stop.clone(),
        ));
        let service = crate::fleet::register(
            &client,
            crate::fleet::Source {
                host: ctx.host_id.clone(),
                roster: roster.clone(),
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
            let every = Duration::from_millis(config.telemetry.lag_poll_ms);
            ctx.feeders.spawn(transport::lag::poll(
                js.clone(),
                roster.clone(),
                every,
                lag.clone(),
                ctx.stop.clone(),
            ));
            let _ = served.lag.set(lag.clone());
        }
        let collector = telemetry::metrics::HostCollector {
            roster: roster.clone(),
            connection: link,
            sandbox: Some(telemetry::metrics::SandboxView {
                engine: runtime.engine().clone(),
                slots: config.sandbox.max_instances,
            }),
            lag,
            webhooks: webhook_counters,
            schedules: schedule_counters,
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
            http_addr,
            traces,
            roster,
            sink,
            stop: ctx.stop,
            feeders: ctx.feeders,
            events: ctx.events,
            grace: ctx.grace,
            _runtime: runtime,
        })
    }

    /// The current version of every running plugin, by name.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.roster.plugins()
    }

    /// What was refused (a bundle, a deployment, a rebuild) and is not running since.
    pub fn refused(&self) -> Vec<Refused> {
        self.roster.refused()
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, when they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Where the HTTP gateway listens, when it does (`[http] listen`).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// Stop taking events, let in-flight and already received events finish
    /// (failures are dead-lettered, not retried), then flush.
    pub async fn stop(self) -> anyhow::Result<()> {
        tracing::info!("shutting down: no new events; finishing those in flight");
        self.stop.cancel();
        let drained = tokio::time::timeout(self.grace, async {
            self.feeders.close();
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
        for plugin in self.roster.plugins() {
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
