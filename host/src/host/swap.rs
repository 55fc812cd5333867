//! Changing what runs while the host runs: a plugin's next version swapped
//! in, a new plugin wired, a removed one stopped — one change at a time.
//!
//! The next version comes here loaded (grant checked, compiled): nothing that
//! runs is touched before. It inherits the running version's counters. Then:
//!
//! - Same subscriptions, limits, retry policy and circuit: the pipeline is
//!   kept and its current version replaced. Every event not started yet runs
//!   on the new version; those running finish on the old one, which is
//!   dropped with the last of them. No subscription changes hands, so none
//!   is lost or delivered twice; the circuit is kept as it is.
//! - Anything else: the new version is wired beside the old one (core
//!   subscriptions in the same queue group, the same durable consumers, updated
//!   to the new manifest), then the old wiring's readers stop: JetStream
//!   deliveries they hold unstarted are handed back at once, core events they
//!   queued finish on the old version. A wiring that cannot be made (a stream
//!   missing) refuses the new version and leaves the old one running.
//!   A core subscription outside a queue group cannot overlap its successor
//!   (both would get every event): it is drained first, and core events
//!   published in the round trip before the new one is made do not reach
//!   this host (nothing it received is lost). Give it `queue` for none.
//!   A new durable consumer (a subject changed, no `durable` named) that
//!   replaces one of the old version's on its stream is made only once the
//!   old one is drained, and starts where it stopped ([`resume`]).
//!   The new wiring has a circuit of its own: closed, unless the server
//!   holds its consumers paused (an open circuit elsewhere, `weir pause`),
//!   which it joins as any starting host does.
//!
//! Either way the swap reports the new version (the roster, so `weir ps`)
//! only once no event runs on the old one: the old pipeline has started or
//! handed back everything its readers queued, and those started have
//! settled. When [`Swapper::install`] returns, every event starts on the new
//! version and every output comes from it. The map of what runs is never
//! locked across those waits; changes of one plugin take turns.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::resume;
use super::wiring::{Running, Wired, subscribe_plugin};
use crate::config::{DeliveryMode, Manifest};
use crate::plugin::Plugin;
use crate::roster::Roster;
use crate::transport::NatsSink;

/// Where a running plugin came from; a name belongs to one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A bundle folder or archive of `weir.toml` (`plugins.dirs`, `plugins.bundles`).
    Local(PathBuf),
    /// A record of the deployments bucket, and the archive it names.
    Deployed {
        revision: u64,
        archive_sha256: String,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "the local bundle {}", path.display()),
            Self::Deployed { revision, .. } => write!(f, "deployment revision {revision}"),
        }
    }
}

struct Slot {
    wired: Wired,
    origin: Origin,
}

/// What a swap waits on of a wiring it stopped: cloned out of the slot, so
/// no lock is held while waiting.
#[derive(Clone)]
struct Stopped {
    stop: CancellationToken,
    core_readers: TaskTracker,
    pipeline: TaskTracker,
}

impl Stopped {
    fn of(wired: &Wired) -> Self {
        Self {
            stop: wired.stop.clone(),
            core_readers: wired.core_readers.clone(),
            pipeline: wired.pipeline.clone(),
        }
    }
}

/// The plugins wired on this host, and how to change them.
pub struct Swapper {
    pub(super) client: async_nats::Client,
    pub(super) sink: Arc<NatsSink>,
    pub(super) ctx: Running,
    pub(super) roster: Arc<Roster>,
    /// `sandbox.max_instances`: what the plugins' `max_in_flight` are
    /// measured against.
    max_instances: u32,
    /// Whether the last measure was over: warned once per crossing.
    over_capacity: AtomicBool,
    /// What runs, by name. Locked only for moments, never across an await.
    slots: Mutex<HashMap<String, Slot>>,
    /// One change of a plugin at a time: its turn is held from the first
    /// look at its slot to the report.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Swapper {
    pub(super) fn new(
        client: async_nats::Client,
        sink: Arc<NatsSink>,
        ctx: Running,
        roster: Arc<Roster>,
        max_instances: u32,
    ) -> Self {
        Self {
            client,
            sink,
            ctx,
            roster,
            max_instances,
            over_capacity: AtomicBool::new(false),
            slots: Mutex::default(),
            turns: Mutex::default(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // Plain data: a panic while it was held left it readable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn turn(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(name.to_owned()).or_default().clone()
    }

    /// Where the plugin `name` runs from, if it runs.
    pub async fn origin(&self, name: &str) -> Option<Origin> {
        self.slots().get(name).map(|s| s.origin.clone())
    }

    /// Run `plugin`, from `origin`: wire it when its name is new here, else
    /// swap it for the running version. An error (the name taken by another
    /// source, a subscription that cannot be made, the host stopping) leaves
    /// what ran running; the caller records the refusal. On `Ok`, no event
    /// starts or runs on the version it replaced.
    pub async fn install(&self, mut plugin: Plugin, origin: Origin) -> Result<(), String> {
        let name = plugin.name().to_owned();
        let turn = self.turn(&name);
        let _turn = turn.lock().await;
        if self.ctx.stop.is_cancelled() {
            return Err("the host is stopping".into());
        }
        // Its `[[schedule]]` entries written, stale ones removed (issue 19).
        crate::schedule::sync::sync_plugin(
            self.sink.jetstream(),
            self.ctx.features,
            &plugin.manifest,
        )
        .await?;
        let running =
            (self.slots().get(&name)).map(|s| (s.origin.clone(), s.wired.current.borrow().clone()));
        let Some((was, old)) = running else {
            let plugin = Arc::new(plugin);
            let wired = self.wire(&plugin, &HashMap::new()).await?;
            tracing::info!(plugin = %name, version = %plugin.manifest.version, from = %origin, "plugin running");
            self.slots().insert(name, Slot { wired, origin });
            self.roster.set(plugin);
            self.check_capacity(None);
            return Ok(());
        };
        if std::mem::discriminant(&was) != std::mem::discriminant(&origin) {
            return Err(format!("{was} already runs a plugin named {name:?}"));
        }
        plugin.stats = old.stats.clone();
        let in_place = same_wiring(&old.manifest, &plugin.manifest);
        if in_place {
            plugin.circuit = old.circuit.clone();
        }
        let plugin = Arc::new(plugin);
        let successors = resume::successors(&old.manifest, &plugin.manifest);
        let js = self.sink.jetstream();
        // Refused before anything is touched when where to start is unknown.
        resume::start_points(js, &name, &successors).await?;
        let retired = if in_place {
            let slots = self.slots();
            let Some(slot) = slots.get(&name) else {
                return Err(format!("plugin {name:?} was stopped meanwhile"));
            };
            slot.wired.current.send_replace(plugin.clone());
            None
        } else if overlap_safe(&old.manifest, &plugin.manifest) && successors.is_empty() {
            let wired = self.wire(&plugin, &HashMap::new()).await?;
            let old_wiring = self.put(&name, wired)?;
            old_wiring.stop.cancel();
            self.check_capacity(Some(&old.manifest));
            Some(old_wiring)
        } else {
            // Two plain subscriptions to a subject would each get every
            // event: the old ones are drained before the new ones are made.
            // So are consumers that new ones continue: where they stopped
            // is known once every event they delivered is settled.
            let Some(old_wiring) = self.slots().get(&name).map(|s| Stopped::of(&s.wired)) else {
                return Err(format!("plugin {name:?} was stopped meanwhile"));
            };
            old_wiring.stop.cancel();
            old_wiring.core_readers.wait().await;
            let mut starts = HashMap::new();
            if !successors.is_empty() {
                self.until_done(Some(old_wiring.clone()), &old).await?;
                starts = match resume::start_points(js, &name, &successors).await {
                    Ok(starts) => starts,
                    Err(reason) => {
                        self.wire_again(&name, &old).await;
                        return Err(reason);
                    }
                };
            }
            match self.wire(&plugin, &starts).await {
                Ok(wired) => {
                    self.put(&name, wired)?;
                }
                Err(reason) => {
                    self.wire_again(&name, &old).await;
                    return Err(reason);
                }
            }
            Some(old_wiring)
        };
        self.until_done(retired, &old).await?;
        tracing::info!(
            plugin = %name,
            from_version = %old.manifest.version,
            from_sha256 = %old.sha256,
            version = %plugin.manifest.version,
            sha256 = %plugin.sha256,
            how = if in_place { "in place" } else { "subscribed again" },
            "plugin swapped: every event runs the new version"
        );
        if let Some(slot) = self.slots().get_mut(&name) {
            slot.origin = origin;
        }
        self.roster.set(plugin);
        self.check_capacity(None);
        Ok(())
    }

    /// Put `wired` in `name`'s slot; the wiring it replaces, to be stopped.
    fn put(&self, name: &str, wired: Wired) -> Result<Stopped, String> {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(name) else {
            wired.stop.cancel();
            return Err(format!("plugin {name:?} was stopped meanwhile"));
        };
        let old = std::mem::replace(&mut slot.wired, wired);
        Ok(Stopped::of(&old))
    }

    /// After a failed rewire: subscribe the running version `old` again, or
    /// stop running `name` when even that fails.
    async fn wire_again(&self, name: &str, old: &Arc<Plugin>) {
        match self.wire(old, &HashMap::new()).await {
            Ok(wired) => {
                let _ = self.put(name, wired);
            }
            Err(again) => {
                tracing::error!(plugin = %name, "cannot subscribe the running version again either: {again}");
                self.slots().remove(name);
                self.roster.remove(name);
            }
        }
    }

    /// Wait until no event starts or runs on `old`: its stopped wiring's
    /// pipeline has started or handed back all it had, then every event
    /// started on it has settled. Ends early when the host stops.
    async fn until_done(&self, retired: Option<Stopped>, old: &Plugin) -> Result<(), String> {
        let done = async {
            if let Some(retired) = retired {
                retired.core_readers.wait().await;
                retired.pipeline.wait().await;
            }
            old.runs.close();
            old.runs.wait().await;
        };
        tokio::select! {
            _ = done => Ok(()),
            _ = self.ctx.stop.cancelled() => Err("the host is stopping".into()),
        }
    }

    /// Stop running `name` if it came from a source like `origin`'s: its
    /// readers stop (JetStream deliveries handed back, durable consumers
    /// kept on the server), the events already started finish.
    pub async fn remove(&self, name: &str, origin: &Origin) -> bool {
        let turn = self.turn(name);
        let _turn = turn.lock().await;
        let slot = {
            let mut slots = self.slots();
            match slots.get(name) {
                Some(slot)
                    if std::mem::discriminant(&slot.origin) == std::mem::discriminant(origin) => {}
                _ => return false,
            }
            slots.remove(name)
        };
        let Some(slot) = slot else { return false };
        slot.wired.stop.cancel();
        self.roster.remove(name);
        tracing::info!(plugin = %name, from = %slot.origin, "plugin stopped: its events wait on the server");
        self.check_capacity(None);
        true
    }

    async fn wire(
        &self,
        plugin: &Arc<Plugin>,
        starts: &HashMap<String, u64>,
    ) -> Result<Wired, String> {
        subscribe_plugin(&self.client, &self.sink, plugin, &self.ctx, starts)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// Warn when the plugins' `max_in_flight` add up to more than
    /// `sandbox.max_instances` (once, until they fit again): under full load
    /// some events would get no instance. `also`: a version still finishing
    /// beside its successor, whose pipeline counts too meanwhile.
    fn check_capacity(&self, also: Option<&Manifest>) {
        let running: u64 = (self.slots().values())
            .map(|s| u64::from(s.wired.current.borrow().manifest.limits.max_in_flight))
            .sum();
        let extra = also.map_or(0, |m| u64::from(m.limits.max_in_flight));
        let wanted = running + extra;
        let over = wanted > u64::from(self.max_instances);
        if over && !self.over_capacity.swap(true, Ordering::Relaxed) {
            let during = match also {
                Some(m) => format!(
                    " (with {} {} finishing beside its next version)",
                    m.name, m.version
                ),
                None => String::new(),
            };
            tracing::warn!(
                "the plugins' max_in_flight add up to {wanted}{during}, more than sandbox.max_instances ({}): \
                 under full load some events will fail to get an instance and be retried",
                self.max_instances
            );
        } else if !over {
            self.over_capacity.store(false, Ordering::Relaxed);
        }
    }
}

/// Whether the new wiring's core subscriptions may run beside the old ones
/// without an event reaching both: every core subject of either version is
/// subscribed in one and the same queue group by both.
fn overlap_safe(old: &Manifest, new: &Manifest) -> bool {
    let core = |m: &Manifest| -> Vec<(String, Option<String>)> {
        (m.subscribe.iter())
            .filter(|s| s.mode == DeliveryMode::Core)
            .map(|s| (s.subject.clone(), s.queue.clone()))
            .collect()
    };
    let (a, b) = (core(old), core(new));
    a.iter().chain(&b).all(|(subject, queue)| {
        queue.is_some()
            && a.iter().all(|(s, q)| s != subject || q == queue)
            && b.iter().all(|(s, q)| s != subject || q == queue)
    })
}

/// Whether a version can take over another's pipeline as it is: the same
/// subscriptions (and so consumers), the same limits the readers and the
/// pipeline were made with, the same retry policy and circuit.
fn same_wiring(a: &Manifest, b: &Manifest) -> bool {
    a.subscribe == b.subscribe
        && a.limits == b.limits
        && a.retry == b.retry
        && a.circuit == b.circuit
}
