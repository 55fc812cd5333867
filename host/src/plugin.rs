//! A loaded plugin: its manifest, the executor that runs its events, its
//! producer-token verifier, its circuit breaker and its counters. Loading checks the grant before
//! anything is compiled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::bundle::Bundle;
use crate::config::{HostConfig, Manifest};
use crate::pipeline::Circuit;
use crate::policy::OutputPolicy;
use crate::sandbox::{Executor, LoadError, PluginShared, Prepared, Runtime};
pub use crate::stats::Stats;

/// A plugin ready to run events.
pub struct Plugin {
    pub manifest: Manifest,
    pub executor: Arc<Executor>,
    /// Gathers the attempts of subscriptions with `batch` into calls.
    pub batches: crate::pipeline::Batches,
    /// `weir.dlq.<name>`.
    pub dead_letter_subject: String,
    /// Shared with the plugin's readers, which count what they receive and shed.
    pub stats: Arc<Stats>,
    /// Verifies producer tokens when plugin.toml has `[auth]`.
    pub auth: Option<Arc<crate::auth::TokenVerifier>>,
    /// The circuit breaker: trips by itself when plugin.toml has
    /// `[circuit]`; `weir pause` and `weir resume` work on every plugin.
    pub circuit: Arc<Circuit>,
    /// Whether the handler was already warned about answering a request on a
    /// JetStream subscription (a reply that goes nowhere live): once per plugin.
    pub(crate) warned_jetstream_reply: AtomicBool,
    /// The wasm's SHA-256 (hex), for `weir_plugin_info`; empty for a native handler.
    pub sha256: String,
    /// Spans of this plugin's events: off unless the host exports traces
    /// (`[telemetry] otlp_endpoint`), which sets it after loading.
    pub tracing: crate::pipeline::PluginTracing,
    /// The events started on this version and not settled yet: a swap waits
    /// for them before it reports the next version as the one running.
    pub runs: tokio_util::task::TaskTracker,
}

impl Plugin {
    /// Compile a bundle's component and make it ready to run events.
    /// `capture_logs` keeps log lines in each [`RunOutput`](crate::sandbox::RunOutput) (`weir test`).
    pub fn load(
        runtime: &Runtime,
        bundle: &Bundle,
        host: &HostConfig,
        capture_logs: bool,
    ) -> Result<Self, LoadError> {
        let (auth, prepared) = Self::check_and_prepare(runtime, bundle, host)?;
        let mut plugin = Self::assemble(
            runtime,
            bundle.manifest.clone(),
            prepared,
            &auth,
            host,
            capture_logs,
        );
        plugin.sha256 = bundle.sha256_hex();
        Ok(plugin)
    }

    /// The bundle's plugin once per `[config]` table in `configs`, compiled
    /// once: `weir test` with `--set` or a fixture's own `config`. Logs are
    /// captured.
    pub fn load_with_configs(
        runtime: &Runtime,
        bundle: &Bundle,
        host: &HostConfig,
        configs: &[BTreeMap<String, String>],
    ) -> Result<Vec<Self>, LoadError> {
        let (auth, prepared) = Self::check_and_prepare(runtime, bundle, host)?;
        Ok(configs
            .iter()
            .map(|config| {
                let mut manifest = bundle.manifest.clone();
                manifest.config = config.clone();
                Self::assemble(runtime, manifest, prepared.clone(), &auth, host, true)
            })
            .collect())
    }

    /// Grants are checked before compiling: a refused bundle costs nothing.
    fn check_and_prepare(
        runtime: &Runtime,
        bundle: &Bundle,
        host: &HostConfig,
    ) -> Result<(crate::auth::PluginAuthState, Prepared), LoadError> {
        let auth =
            crate::auth::PluginAuthState::load(bundle, &host.auth).map_err(LoadError::Refused)?;
        let prepared = runtime.prepare(&bundle.wasm, &bundle.sha256)?;
        Ok((auth, prepared))
    }

    fn assemble(
        runtime: &Runtime,
        manifest: Manifest,
        prepared: Prepared,
        auth: &crate::auth::PluginAuthState,
        host: &HostConfig,
        capture_logs: bool,
    ) -> Self {
        let limits = &manifest.limits;
        let shared = PluginShared {
            name: manifest.name.clone(),
            config: manifest.config.clone(),
            policy: OutputPolicy {
                max_outputs: limits.max_outputs,
                max_output_bytes: limits.max_output_bytes,
                dead_letter_prefix: host.dead_letter.subject_prefix.clone(),
                granted: auth.granted_publish(),
            },
            memory_bytes: limits.memory_mb as usize * 1024 * 1024,
            capture_logs,
        };
        let executor = Executor::new(runtime, prepared, shared, limits);
        Self::new(manifest, executor, host, auth.verifier.clone())
    }

    /// A plugin around any executor (the native baseline of the benchmarks,
    /// and the pipeline's own tests).
    pub fn new(
        manifest: Manifest,
        executor: Executor,
        host: &HostConfig,
        auth: Option<Arc<crate::auth::TokenVerifier>>,
    ) -> Self {
        let manifest_circuit = Arc::new(Circuit::new(manifest.circuit.clone()));
        let executor = Arc::new(executor);
        let stats = Arc::<Stats>::default();
        let batches = crate::pipeline::Batches::new(&manifest, executor.clone(), stats.clone());
        Self {
            dead_letter_subject: format!("{}.{}", host.dead_letter.subject_prefix, manifest.name),
            manifest,
            executor,
            batches,
            stats,
            auth,
            circuit: manifest_circuit,
            warned_jetstream_reply: AtomicBool::new(false),
            sha256: String::new(),
            tracing: crate::pipeline::PluginTracing::off(),
            runs: tokio_util::task::TaskTracker::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}
