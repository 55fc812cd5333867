//! Footprint and start-up (issue 12, item 5), against one nats-server
//! started here:
//!
//! - `weir up` to ready: the real binary with a `weir.toml` loading 10
//!   plugins (the examples: `echo`, `enrich-order` and their C, Python and
//!   JavaScript twins, `relay`, `trivial`; the `enrich-order`s on JetStream),
//!   timed from spawn to the "weir is up" log line (`/readyz` then checked
//!   200), with a warm compile cache: one run fills it first, untimed. Then
//!   `WEIR_BENCH_RUNS` runs (default 5); median with min–max.
//! - Host RSS idle: that process's VmRSS (and its anonymous / file / shared
//!   parts) from /proc, 2 s after ready, in each run; the largest mappings of
//!   the last run, from smaps.
//! - Memory per warm instance of the Rust, Python and JavaScript echo
//!   plugins, in this process: `WEIR_BENCH_INSTANCES` (default 20) more warm
//!   instances of one compiled component, the growth of resident memory per
//!   instance (see footprint/warm.rs).
//!
//! `cargo bench -p weir-host --bench footprint` (plugins built first:
//! scripts/build-plugins.sh). The last line is `SUMMARY {json}`.

mod common;
#[path = "footprint/up.rs"]
mod up;
#[path = "footprint/warm.rs"]
mod warm;

use std::time::Duration;

use common::{env, spread};
use weir_host::config::HostConfig;
use weir_host::sandbox::Runtime;

/// The 10 plugins `weir up` loads.
const PLUGINS: [&str; 10] = [
    "echo",
    "echo-c",
    "echo-python",
    "echo-js",
    "enrich-order",
    "enrich-order-c",
    "enrich-order-python",
    "enrich-order-js",
    "relay",
    "trivial",
];

/// The plugins whose warm instances are measured.
const WARM: [(&str, &str); 3] = [
    ("Rust", "echo"),
    ("Python", "echo-python"),
    ("JavaScript", "echo-js"),
];

const GOAL_RSS_MB: f64 = 50.0;
const GOAL_READY_MS: f64 = 300.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let runs = env("WEIR_BENCH_RUNS", 5).max(1);
    let instances = env("WEIR_BENCH_INSTANCES", 20).max(1);
    let server = common::start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = common::repo().join("target/weir-bench-cache");
    let bundles: Vec<_> = PLUGINS
        .iter()
        .map(|p| common::repo().join("plugins").join(p))
        .collect();
    for b in &bundles {
        assert!(
            b.join("plugin.toml").exists(),
            "{} (scripts/build-plugins.sh)",
            b.display()
        );
    }
    let config = up::write_config(dir.path(), &server.url, &bundles, &cache);

    // Fill the compile cache; not timed.
    up::run(&config);
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    let mut last = None;
    for run in 1..=runs {
        let started = up::run(&config);
        println!(
            "  run {run}/{runs}: ready in {:.0} ms, idle VmRSS {:.1} MB (anon {:.1}, file {:.1}, shmem {:.1})",
            ms(started.ready),
            started.rss.total_kib as f64 / 1024.0,
            started.rss.anon_kib as f64 / 1024.0,
            started.rss.file_kib as f64 / 1024.0,
            started.rss.shmem_kib as f64 / 1024.0,
        );
        ready.push(ms(started.ready));
        rss.push(started.rss);
        last = Some(started);
    }
    let last = last.expect("at least one run");
    println!();
    println!("start-up of the last run (ms from spawn, log lines as they arrived):");
    for (at, message) in &last.steps {
        println!("  {:>8.1}  {message}", ms(*at));
    }
    println!("largest mappings of the last run, resident:");
    for (kib, name) in &last.top {
        println!("  {:>8.1} MB  {name}", *kib as f64 / 1024.0);
    }

    // Warm instances, in this process.
    let mut host = HostConfig::default();
    host.sandbox.cache_dir = Some(cache.clone());
    let runtime = Runtime::new(&host.sandbox).expect("sandbox");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let per_instance: Vec<_> = WARM
        .iter()
        .map(|(_, dir)| warm::measure(&rt, &runtime, &host, dir, instances))
        .collect();

    let pick =
        |f: fn(&up::Rss) -> u64| -> Vec<f64> { rss.iter().map(|r| f(r) as f64 / 1024.0).collect() };
    let (rss_mb, rss_min, rss_max) = spread(&pick(|r| r.total_kib));
    let (anon_mb, _, _) = spread(&pick(|r| r.anon_kib));
    let (file_mb, _, _) = spread(&pick(|r| r.file_kib));
    let (shmem_mb, _, _) = spread(&pick(|r| r.shmem_kib));
    let (ready_ms, ready_min, ready_max) = spread(&ready);

    println!();
    println!(
        "Footprint and start-up: weir up with {} plugins, nats-server on the same machine, {runs} runs; medians (min-max)",
        PLUGINS.len()
    );
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "{:<44} {:>24}  goal <= {GOAL_READY_MS} ms: {}",
        "weir up to ready, warm cache (ms)",
        format!("{ready_ms:.0} ({ready_min:.0}-{ready_max:.0})"),
        verdict(ready_ms <= GOAL_READY_MS)
    );
    println!(
        "{:<44} {:>24}  goal <= {GOAL_RSS_MB} MB: {}",
        "host VmRSS idle, 10 plugins (MB)",
        format!("{rss_mb:.1} ({rss_min:.1}-{rss_max:.1})"),
        verdict(rss_mb <= GOAL_RSS_MB)
    );
    println!(
        "{:<44} {:>24}",
        "  of which anonymous / file / shared (MB)",
        format!("{anon_mb:.1} / {file_mb:.1} / {shmem_mb:.1}")
    );
    println!(
        "{:<44} {:>12} {:>12} {:>16}",
        "memory per warm instance (KiB)", "resident", "anonymous", "linear memory"
    );
    let mut summary = serde_json::Map::new();
    summary.insert("runs".into(), runs.into());
    summary.insert("plugins".into(), PLUGINS.len().into());
    summary.insert("ready_ms".into(), ready_ms.round().into());
    summary.insert("ready_ms_min".into(), ready_min.round().into());
    summary.insert("ready_ms_max".into(), ready_max.round().into());
    let tenth = |v: f64| ((v * 10.0).round() / 10.0).into();
    summary.insert("idle_rss_mb".into(), tenth(rss_mb));
    summary.insert("idle_rss_mb_min".into(), tenth(rss_min));
    summary.insert("idle_rss_mb_max".into(), tenth(rss_max));
    summary.insert("idle_rss_anon_mb".into(), tenth(anon_mb));
    summary.insert("idle_rss_file_mb".into(), tenth(file_mb));
    summary.insert("idle_rss_shmem_mb".into(), tenth(shmem_mb));
    summary.insert("warm_instances".into(), instances.into());
    for ((language, dir), m) in WARM.iter().zip(&per_instance) {
        println!(
            "{:<44} {:>12.0} {:>12.0} {:>16.0}",
            format!("  {language} ({dir}), {} instances", m.instances),
            m.rss_kib,
            m.anon_kib,
            m.linear_kib
        );
        let key = language.to_lowercase();
        summary.insert(format!("{key}_instance_kib"), m.rss_kib.round().into());
        summary.insert(
            format!("{key}_instance_anon_kib"),
            m.anon_kib.round().into(),
        );
        summary.insert(
            format!("{key}_instance_linear_kib"),
            m.linear_kib.round().into(),
        );
    }
    println!("SUMMARY {}", serde_json::Value::Object(summary));
}
