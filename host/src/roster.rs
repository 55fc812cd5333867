//! What a host runs now: each plugin's current version — the one its new
//! events start on — and the bundles or versions it refused, with why.
//! `weir status`, `weir ps` and `/metrics` read it at every request; the host
//! writes it when it loads, swaps or removes a plugin. Counters and circuits
//! are carried from a version to the next, so what is read here is the
//! plugin's whole life on this host.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::plugin::Plugin;

/// A bundle or a version that was not loaded, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The bundle's folder or archive; for a deployment, `deploy:NAME`.
    pub path: PathBuf,
    pub reason: String,
    /// The plugin's name, version and wasm SHA-256, when they could be read.
    pub name: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
}

impl Refused {
    /// A bundle refused before its manifest was known.
    pub fn at(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
            name: None,
            version: None,
            sha256: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    running: BTreeMap<String, Arc<Plugin>>,
    /// At most one per name (the latest), else one per path.
    refused: Vec<Refused>,
}

/// The plugins running on this host, by name.
#[derive(Default)]
pub struct Roster {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.read(|i| i.running.keys().cloned().collect());
        f.debug_struct("Roster").field("running", &names).finish()
    }
}

impl Roster {
    /// The current version of every running plugin, by name.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.read(|i| i.running.values().cloned().collect())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.read(|i| i.running.get(name).cloned())
    }

    /// What was refused and is not running since.
    pub fn refused(&self) -> Vec<Refused> {
        self.read(|i| i.refused.clone())
    }

    /// `plugin` is now what runs under its name; an earlier refusal of that
    /// name is forgotten.
    pub fn set(&self, plugin: Arc<Plugin>) {
        self.write(|i| {
            let name = plugin.name().to_owned();
            i.refused
                .retain(|r| r.name.as_deref() != Some(name.as_str()));
            i.running.insert(name, plugin);
        })
    }

    /// `name` no longer runs here (undeployed).
    pub fn remove(&self, name: &str) -> Option<Arc<Plugin>> {
        self.write(|i| {
            i.refused.retain(|r| r.name.as_deref() != Some(name));
            i.running.remove(name)
        })
    }

    /// Forget the refusal of a deployment of `name` (rolled back to what
    /// runs, or undeployed).
    pub fn forget_refusal(&self, name: &str) {
        self.forget_refusal_at(std::path::Path::new(&format!("deploy:{name}")))
    }

    /// Forget any refusal of the bundle at `path`, named or not (one that
    /// did not parse, loaded since).
    pub fn forget_refusal_at(&self, path: &std::path::Path) {
        self.write(|i| i.refused.retain(|r| r.path != path))
    }

    /// Record a refusal, replacing an earlier one of the same name or path.
    pub fn refuse(&self, refused: Refused) {
        self.write(|i| {
            i.refused.retain(|r| match (&r.name, &refused.name) {
                (Some(a), Some(b)) => a != b,
                _ => r.path != refused.path,
            });
            i.refused.push(refused);
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        // A panic while the lock was held left plain data behind: still readable.
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}
