//! In-process dispatch: one event through the executor, the retry decision and
//! output stamping — for the `trivial` plugin in both isolation modes, and for
//! a native Rust handler doing the same work through the same code (the limit).
//!
//! `cargo bench -p weir-host --bench dispatch` (plugins built first:
//! scripts/build-plugins.sh). Criterion's statistics come first, then a
//! summary table of µs/event and ratios against native, measured in this run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use weir_host::bundle::Bundle;
use weir_host::config::{HostConfig, Isolation};
use weir_host::event::{Event, Message};
use weir_host::plugin::Plugin;
use weir_host::policy::OutputPolicy;
use weir_host::sandbox::{Executor, PluginShared, Runtime};

mod common;
use common::{dispatch, event, repo};

fn plugins(runtime: &Runtime, config: &HostConfig) -> Vec<(&'static str, Plugin)> {
    let dir = repo().join("plugins/trivial");
    let bundle = Bundle::load(&dir, config.sandbox.max_memory_mb)
        .unwrap_or_else(|e| panic!("{e}\nbuild the plugins first: scripts/build-plugins.sh"));
    let load = |isolation| {
        let mut b = bundle.clone();
        b.manifest.limits.isolation = isolation;
        Plugin::load(runtime, &b, config, false).expect("trivial plugin loads")
    };
    let limits = &bundle.manifest.limits;
    let native = Plugin::new(
        bundle.manifest.clone(),
        Executor::native(
            PluginShared {
                name: "native".into(),
                config: Default::default(),
                policy: OutputPolicy {
                    max_outputs: limits.max_outputs,
                    max_output_bytes: limits.max_output_bytes,
                    dead_letter_prefix: "weir.dlq".into(),
                    granted: None,
                },
                memory_bytes: 0,
                capture_logs: false,
            },
            Arc::new(|event: &Event| {
                Ok(vec![Message {
                    subject: "bench.out".into(),
                    payload: event.payload.clone(),
                    headers: event.headers.clone(),
                }])
            }),
        ),
        config,
        None,
    );
    vec![
        ("native", native),
        (
            "wasm fresh instance (isolation = event)",
            load(Isolation::Event),
        ),
        (
            "wasm warm instance (isolation = reuse)",
            load(Isolation::Reuse),
        ),
    ]
}

fn main() {
    let mut config = HostConfig::default();
    config.sandbox.cache_dir = Some(repo().join("target/weir-bench-cache"));
    let runtime = Runtime::new(&config.sandbox).expect("sandbox");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let plugins = plugins(&runtime, &config);
    let event = event("bench.trivial");

    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut group = criterion.benchmark_group("dispatch");
    for (name, plugin) in &plugins {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(dispatch(plugin, &event).await);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();

    // Our own summary: the median of 5 runs of 20,000 events each.
    println!();
    println!(
        "RUST_BACKTRACE={}",
        std::env::var("RUST_BACKTRACE").unwrap_or_else(|_| "unset".into())
    );
    println!(
        "{:<44} {:>12} {:>10}",
        "in-process dispatch", "µs/event", "× native"
    );
    let mut native_us = None;
    for (name, plugin) in &plugins {
        let mut runs: Vec<f64> = (0..5)
            .map(|_| {
                rt.block_on(async {
                    const N: u32 = 20_000;
                    let start = Instant::now();
                    for _ in 0..N {
                        black_box(dispatch(plugin, &event).await);
                    }
                    start.elapsed().as_secs_f64() * 1e6 / f64::from(N)
                })
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        let us = runs[2];
        let base = *native_us.get_or_insert(us);
        println!("{name:<44} {us:>12.2} {:>10.1}", us / base);
    }
}
