//! Memory per warm instance, in this process: a plugin loaded N + 1 times
//! from one compiled component (`isolation = "reuse"`), each copy's
//! executor left holding one warm instance after one event. The first copy
//! pays what is paid once (code pages, the pool's first touch); the growth
//! of this process's resident memory over the next N, divided by N, is what
//! one more warm instance costs.

use weir_host::bundle::Bundle;
use weir_host::config::{HostConfig, Isolation};
use weir_host::event::Event;
use weir_host::plugin::Plugin;
use weir_host::sandbox::Runtime;

use super::common::{event, repo};
use super::up::Rss;

/// One plugin's figures.
pub struct PerInstance {
    pub instances: usize,
    /// Resident memory growth per warm instance (KiB), in all and anonymous.
    pub rss_kib: f64,
    pub anon_kib: f64,
    /// The guest's linear memory, as the store's limiter saw it (KiB).
    pub linear_kib: f64,
}

pub fn measure(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    config: &HostConfig,
    dir: &str,
    instances: usize,
) -> PerInstance {
    let path = repo().join("plugins").join(dir);
    let mut bundle = Bundle::load(&path, config.sandbox.max_memory_mb)
        .unwrap_or_else(|e| panic!("{e}\nbuild the plugins first: scripts/build-plugins.sh"));
    bundle.manifest.limits.isolation = Isolation::Reuse;
    let copies = vec![bundle.manifest.config.clone(); instances + 1];
    let plugins = Plugin::load_with_configs(runtime, &bundle, config, &copies)
        .unwrap_or_else(|e| panic!("{dir} does not load: {e:#}"));
    drop(bundle);
    let event = event("demo.echo.bench");
    let pid = std::process::id();
    rt.block_on(async {
        warm_one(&plugins[0], &event, dir).await;
        let before = Rss::of(pid);
        let mut linear = 0;
        for plugin in &plugins[1..] {
            linear += warm_one(plugin, &event, dir).await;
        }
        let after = Rss::of(pid);
        let n = instances as f64;
        PerInstance {
            instances,
            rss_kib: after.total_kib.saturating_sub(before.total_kib) as f64 / n,
            anon_kib: after.anon_kib.saturating_sub(before.anon_kib) as f64 / n,
            linear_kib: linear as f64 / 1024.0 / n,
        }
    })
}

/// Run one event in `plugin`; its executor then holds one warm instance.
/// Returns the instance's linear memory (bytes).
async fn warm_one(plugin: &Plugin, event: &Event, dir: &str) -> usize {
    let out = plugin.executor.run(event).await;
    assert!(out.result.is_ok(), "{dir}: {:?}", out.result);
    assert_eq!(plugin.executor.warm_instances(), 1, "{dir}: kept warm");
    out.memory_peak
}
