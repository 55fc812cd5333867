//! `weir up`: load the plugins, connect, subscribe, dispatch, and stop
//! gracefully.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bundle::{self, Bundle};
use crate::config::{DeliveryMode, HostConfig};
use crate::event::Event;
use crate::pipeline::{self, Plugin};
use crate::sandbox::Runtime;
use crate::transport::{self, IdSource, NatsSink};

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
/// reason and the others load.
pub fn load_plugins(runtime: &Runtime, config: &HostConfig) -> Loaded {
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
        match load_one(runtime, config, &folder) {
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

fn load_one(runtime: &Runtime, config: &HostConfig, folder: &Path) -> Result<Plugin, String> {
    let bundle = Bundle::load(folder, config.sandbox.max_memory_mb).map_err(|e| e.to_string())?;
    let plugin = Plugin::load(runtime, &bundle, config, false)
        .map_err(|e| format!("{}: {e}", bundle.wasm_path.display()))?;
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
    // Kept alive for the executors' engine and its epoch ticker.
    _runtime: Arc<Runtime>,
}

impl Host {
    /// Load plugins, connect and subscribe. When this returns, every
    /// subscription is registered with the server.
    pub async fn start(config: &HostConfig) -> anyhow::Result<Self> {
        let runtime = Arc::new(Runtime::new(&config.sandbox)?);
        let Loaded { plugins, refused } = {
            let runtime = runtime.clone();
            let config = config.clone();
            tokio::task::spawn_blocking(move || load_plugins(&runtime, &config))
                .await
                .context("plugin loading panicked")?
        };
        if plugins.is_empty() {
            tracing::warn!("no plugin loaded: the host will idle");
        }

        let client = transport::connect(&config.nats).await?;
        let sink = Arc::new(NatsSink::new(client.clone(), &config.dead_letter).await);
        let stop = CancellationToken::new();
        let feeders = TaskTracker::new();
        let events = TaskTracker::new();
        let ids = Arc::new(IdSource::default());

        for plugin in &plugins {
            let limits = &plugin.manifest.limits;
            let (tx, rx) = mpsc::channel::<Event>(limits.queue as usize);
            for sub in &plugin.manifest.subscribe {
                match sub.mode {
                    DeliveryMode::Core => {
                        let subscriber = transport::subscribe_core(&client, plugin, sub).await?;
                        feeders.spawn(transport::read_core(
                            subscriber,
                            plugin.clone(),
                            tx.clone(),
                            ids.clone(),
                            stop.clone(),
                        ));
                    }
                    DeliveryMode::Jetstream => {
                        tracing::error!(
                            plugin = plugin.name(), subject = %sub.subject,
                            "jetstream subscriptions are not supported by this build; skipped"
                        );
                    }
                }
            }
            drop(tx);
            feeders.spawn(dispatch(
                plugin.clone(),
                sink.clone(),
                rx,
                events.clone(),
                stop.clone(),
            ));
        }
        transport::sync_with_server(&client)
            .await
            .context("cannot confirm the subscriptions with the server")?;
        feeders.close();

        Ok(Self {
            plugins,
            refused,
            sink,
            stop,
            feeders,
            events,
            grace: Duration::from_millis(config.shutdown.grace_ms),
            _runtime: runtime,
        })
    }

    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    pub fn refused(&self) -> &[Refused] {
        &self.refused
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
        transport::sync_with_server(self.sink.client())
            .await
            .context("cannot flush the last messages to NATS")?;
        for plugin in &self.plugins {
            let s = &plugin.stats;
            let get =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                plugin = plugin.name(),
                received = get(&s.received),
                succeeded = get(&s.succeeded),
                dead_lettered = get(&s.dead_lettered),
                shed = get(&s.shed),
                "plugin totals"
            );
        }
        Ok(())
    }
}

/// Start one task per queued event, at most `max_in_flight` at once.
async fn dispatch(
    plugin: Arc<Plugin>,
    sink: Arc<NatsSink>,
    mut queue: mpsc::Receiver<Event>,
    events: TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(
        plugin.manifest.limits.max_in_flight as usize,
    ));
    while let Some(event) = queue.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let work = pipeline::run_core(plugin.clone(), sink.clone(), event, stop.clone());
        events.spawn(async move {
            work.await;
            // The slot frees when the event is done, outputs or dead letter.
            drop(permit);
        });
    }
}

/// Run a host until `shutdown` resolves.
pub async fn run(config: &HostConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let host = Host::start(config).await?;
    tracing::info!(
        plugins = host.plugins().len(),
        refused = host.refused().len(),
        "weir is up"
    );
    shutdown.await;
    host.stop().await
}
