//! Turning bundles into plugins ready to run: the local ones of `weir.toml`
//! at start-up, and any bundle the host is handed later (a deployment, a
//! rebuilt folder). Grants are checked and the component compiled (through
//! the cache) here, before anything that runs is touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bundle::{self, Bundle};
use crate::config::HostConfig;
use crate::pipeline;
use crate::plugin::Plugin;
use crate::roster::Refused;
use crate::sandbox::Runtime;
use crate::telemetry::traces::Traces;
use crate::transport;

/// What every load needs: the engine, the host's config and span export.
#[derive(Clone)]
pub struct Loader {
    pub(super) runtime: Arc<Runtime>,
    pub(super) config: HostConfig,
    pub(super) traces: Traces,
}

/// A bundle loaded: the plugin, and the folder or archive it came from.
pub struct LoadedBundle {
    pub plugin: Plugin,
    pub path: PathBuf,
}

impl Loader {
    /// Compile `bundle` and make its plugin, or say why not (a [`Refused`]
    /// naming the plugin, its version and wasm hash). Blocks: compiling
    /// takes long; call it off the async workers.
    pub fn load(&self, bundle: &Bundle) -> Result<Plugin, Refused> {
        let refused = |reason: String| Refused {
            path: bundle.dir.clone(),
            reason,
            name: Some(bundle.manifest.name.clone()),
            version: Some(bundle.manifest.version.clone()),
            sha256: Some(bundle.sha256_hex()),
        };
        // Traced, the guest's log lines are kept too: they become span events.
        let mut plugin = Plugin::load(&self.runtime, bundle, &self.config, self.traces.is_on())
            .map_err(|e| refused(format!("{}: {e}", bundle.wasm_path.display())))?;
        let name = plugin.name();
        let subscriptions = (plugin.manifest.subscribe.iter())
            .map(|s| (s.subject.clone(), transport::consumer_group(name, s)));
        plugin.tracing = pipeline::PluginTracing::new(&self.traces, name, subscriptions);
        tracing::info!(
            plugin = plugin.name(),
            version = %plugin.manifest.version,
            sha256 = %bundle.sha256_hex(),
            isolation = ?plugin.manifest.limits.isolation,
            "plugin loaded"
        );
        Ok(plugin)
    }

    /// [`load`](Self::load) on a blocking thread.
    pub async fn load_async(&self, bundle: Bundle) -> Result<Plugin, Refused> {
        let loader = self.clone();
        let dir = bundle.dir.clone();
        tokio::task::spawn_blocking(move || loader.load(&bundle))
            .await
            .unwrap_or_else(|e| Err(Refused::at(dir, format!("loading panicked: {e}"))))
    }

    /// Read and load the bundle at `path` (a folder or an archive).
    pub fn load_path(&self, path: &Path) -> Result<Plugin, Refused> {
        let bundle = Bundle::load(path, self.config.sandbox.max_memory_mb)
            .map_err(|e| Refused::at(path, e.to_string()))?;
        self.load(&bundle)
    }

    /// Every bundle the config names (`plugins.dirs`, `plugins.bundles`),
    /// loaded. A bad bundle is refused with its reason and the others load;
    /// so is a second bundle with a name already taken.
    pub fn load_configured(&self) -> (Vec<LoadedBundle>, Vec<Refused>) {
        let mut folders: Vec<PathBuf> = Vec::new();
        let mut refused = Vec::new();
        for dir in &self.config.plugins.dirs {
            match bundle::discover(dir) {
                Ok(found) => folders.extend(found),
                Err(e) => refused.push(Refused::at(dir.clone(), e.to_string())),
            }
        }
        folders.extend(self.config.plugins.bundles.iter().cloned());

        let mut names = HashSet::new();
        let mut plugins = Vec::new();
        for folder in folders {
            match self.load_path(&folder) {
                Ok(plugin) if !names.insert(plugin.name().to_owned()) => refused.push(Refused::at(
                    folder.clone(),
                    format!(
                        "{}: name: another bundle already uses the name {:?}",
                        folder.join(bundle::MANIFEST).display(),
                        plugin.name()
                    ),
                )),
                Ok(plugin) => plugins.push(LoadedBundle {
                    plugin,
                    path: folder,
                }),
                Err(r) => refused.push(r),
            }
        }
        for r in &refused {
            tracing::error!("refusing plugin {}: {}", r.path.display(), r.reason);
        }
        (plugins, refused)
    }
}
