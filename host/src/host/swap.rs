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
//!   The new wiring has a circuit of its own: closed, unless the server
//!   holds its consumers paused (an open circuit elsewhere, `weir pause`),
//!   which it joins as any starting host does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;

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

/// The plugins wired on this host, and how to change them.
pub struct Swapper {
    pub(super) client: async_nats::Client,
    pub(super) sink: Arc<NatsSink>,
    pub(super) ctx: Running,
    pub(super) roster: Arc<Roster>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Swapper {
    pub(super) fn new(
        client: async_nats::Client,
        sink: Arc<NatsSink>,
        ctx: Running,
        roster: Arc<Roster>,
    ) -> Self {
        Self {
            client,
            sink,
            ctx,
            roster,
            slots: Mutex::default(),
        }
    }

    /// Where the plugin `name` runs from, if it runs.
    pub async fn origin(&self, name: &str) -> Option<Origin> {
        self.slots.lock().await.get(name).map(|s| s.origin.clone())
    }

    /// Run `plugin`, from `origin`: wire it when its name is new here, else
    /// swap it for the running version. An error (the name taken by another
    /// source, a subscription that cannot be made, the host stopping) leaves
    /// what ran running; the caller records the refusal.
    pub async fn install(&self, mut plugin: Plugin, origin: Origin) -> Result<(), String> {
        let mut slots = self.slots.lock().await;
        if self.ctx.stop.is_cancelled() {
            return Err("the host is stopping".into());
        }
        let name = plugin.name().to_owned();
        let Some(slot) = slots.get_mut(&name) else {
            let plugin = Arc::new(plugin);
            let wired = self.wire(&plugin).await?;
            tracing::info!(plugin = %name, version = %plugin.manifest.version, from = %origin, "plugin running");
            slots.insert(name, Slot { wired, origin });
            self.roster.set(plugin);
            return Ok(());
        };
        if std::mem::discriminant(&slot.origin) != std::mem::discriminant(&origin) {
            return Err(format!(
                "{} already runs a plugin named {name:?}",
                slot.origin
            ));
        }
        let old = slot.wired.current.borrow().clone();
        plugin.stats = old.stats.clone();
        let in_place = same_wiring(&old.manifest, &plugin.manifest);
        if in_place {
            plugin.circuit = old.circuit.clone();
        }
        let plugin = Arc::new(plugin);
        if in_place {
            slot.wired.current.send_replace(plugin.clone());
        } else if !overlap_safe(&old.manifest, &plugin.manifest) {
            // Two plain subscriptions to a subject would each get every
            // event: the old ones are drained before the new ones are made.
            slot.wired.stop.cancel();
            slot.wired.core_readers.wait().await;
            match self.wire(&plugin).await {
                Ok(wired) => slot.wired = wired,
                Err(reason) => {
                    match self.wire(&old).await {
                        Ok(wired) => slot.wired = wired,
                        Err(again) => {
                            tracing::error!(plugin = %name, "cannot subscribe the running version again either: {again}");
                            slots.remove(&name);
                            self.roster.remove(&name);
                        }
                    }
                    return Err(reason);
                }
            }
        } else {
            let wired = self.wire(&plugin).await?;
            let old_wiring = std::mem::replace(&mut slot.wired, wired);
            old_wiring.stop.cancel();
            // Once the old core subscriptions are gone, every new core
            // event reaches the new version.
            old_wiring.core_readers.wait().await;
        }
        tracing::info!(
            plugin = %name,
            from_version = %old.manifest.version,
            from_sha256 = %old.sha256,
            version = %plugin.manifest.version,
            sha256 = %plugin.sha256,
            how = if in_place { "in place" } else { "subscribed again" },
            "plugin swapped: new events run the new version"
        );
        slot.origin = origin;
        self.roster.set(plugin);
        Ok(())
    }

    /// Stop running `name` if it came from a source like `origin`'s: its
    /// readers stop (JetStream deliveries handed back, durable consumers
    /// kept on the server), the events already started finish.
    pub async fn remove(&self, name: &str, origin: &Origin) -> bool {
        let mut slots = self.slots.lock().await;
        match slots.get(name) {
            Some(slot)
                if std::mem::discriminant(&slot.origin) == std::mem::discriminant(origin) => {}
            _ => return false,
        }
        let Some(slot) = slots.remove(name) else {
            return false;
        };
        slot.wired.stop.cancel();
        self.roster.remove(name);
        tracing::info!(plugin = %name, from = %slot.origin, "plugin stopped: its events wait on the server");
        true
    }

    async fn wire(&self, plugin: &Arc<Plugin>) -> Result<Wired, String> {
        subscribe_plugin(&self.client, &self.sink, plugin, &self.ctx)
            .await
            .map_err(|e| format!("{e:#}"))
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
