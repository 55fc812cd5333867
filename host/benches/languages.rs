//! Per-language dispatch cost: one event through the executor, the retry
//! decision and output stamping, for the `echo` plugin and its Python,
//! JavaScript and C twins, with a fresh instance per event (`isolation =
//! "event"`) and with a warm one (`"reuse"`).
//!
//! Then batches (issue 17): calls of B = 1, 16 and 64 events, one instance per
//! call, in both isolation modes, as µs per event: the echo plugins (which
//! export only `handle`: the host calls it per event inside the one
//! instance) and `plugins/batch-python` (the Python SDK's `handle_batch`: one
//! call for all B).
//!
//! `cargo bench -p weir-host --bench languages` (plugins built first:
//! scripts/build-plugins.sh). Prints µs/event (the median of 5 timed runs) and
//! the ratio to the Rust plugin in the same mode, or to the same plugin alone
//! with a fresh instance, measured in this run. The last line is `SUMMARY {json}`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use weir_host::bundle::Bundle;
use weir_host::config::{HostConfig, Isolation};
use weir_host::event::Event;
use weir_host::plugin::Plugin;
use weir_host::sandbox::Runtime;

const LANGUAGES: [(&str, &str); 4] = [
    ("Rust", "echo"),
    ("C", "echo-c"),
    ("Python", "echo-python"),
    ("JavaScript", "echo-js"),
];

/// The plugins of the batch table: label, folder, subject of its events,
/// payload.
const BATCHED: [(&str, &str, &str, &str); 4] = [
    ("Rust echo", "echo", "demo.echo.bench", "x"),
    ("Python echo", "echo-python", "demo.echo.bench", "x"),
    ("JavaScript echo", "echo-js", "demo.echo.bench", "x"),
    (
        "Python handle_batch",
        "batch-python",
        "batch.python.1",
        "ok:1",
    ),
];
const BATCH_SIZES: [usize; 3] = [1, 16, 64];

mod common;
use common::{dispatch, event, repo};

fn load(runtime: &Runtime, config: &HostConfig, dir: &str, isolation: Isolation) -> Plugin {
    let path = repo().join("plugins").join(dir);
    let mut bundle = Bundle::load(&path, config.sandbox.max_memory_mb)
        .unwrap_or_else(|e| panic!("{e}\nbuild the plugins first: scripts/build-plugins.sh"));
    bundle.manifest.limits.isolation = isolation;
    Plugin::load(runtime, &bundle, config, false)
        .unwrap_or_else(|e| panic!("{dir} does not load: {e:#}"))
}

/// µs per event: the median of 5 runs, each of at least `min_events` events
/// and about 1 s (after a warm-up of the same length).
fn measure(rt: &tokio::runtime::Runtime, plugin: &Plugin, event: &Event) -> f64 {
    rt.block_on(async {
        // Calibrate: how many events fit in ~200 ms (this also warms up).
        let start = Instant::now();
        let mut n: u32 = 0;
        while start.elapsed() < Duration::from_millis(200) || n < 10 {
            black_box(dispatch(plugin, event).await);
            n += 1;
        }
        let per_run = (n * 5).max(50);
        let mut runs = Vec::with_capacity(5);
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..per_run {
                black_box(dispatch(plugin, event).await);
            }
            runs.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(per_run));
        }
        runs.sort_by(f64::total_cmp);
        runs[2]
    })
}

/// µs per event in calls of `size` events: the median of 5 runs of at least
/// ~0.5 s each (after a warm-up run); a failed event fails the bench.
fn measure_batch(rt: &tokio::runtime::Runtime, plugin: &Plugin, event: &Event, size: usize) -> f64 {
    let batch = vec![event.clone(); size];
    rt.block_on(async {
        let call = async || {
            let run = black_box(plugin.executor.run_batch(&batch).await);
            match run.result {
                weir_host::sandbox::BatchResult::Each(each) if each.iter().all(|r| r.is_ok()) => {}
                other => panic!("a batch of {size} failed: {other:?}"),
            }
        };
        let start = Instant::now();
        let mut calls: u32 = 0;
        while start.elapsed() < Duration::from_millis(300) || calls < 3 {
            call().await;
            calls += 1;
        }
        let per_run = calls.max(3);
        let mut runs = Vec::with_capacity(5);
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..per_run {
                call().await;
            }
            runs.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(per_run) / size as f64);
        }
        runs.sort_by(f64::total_cmp);
        runs[2]
    })
}

/// The batch table: µs per event by batch size and isolation.
fn batches(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    config: &HostConfig,
    summary: &mut serde_json::Map<String, serde_json::Value>,
) {
    println!();
    print!("{:<20} {:>8}", "batches", "isolation");
    for size in BATCH_SIZES {
        print!(" {:>12}", format!("B={size} µs/ev"));
    }
    println!(" {:>14}", "B=64 × B=1");
    for (label, dir, subject, payload) in BATCHED {
        let mut event = event(subject);
        event.payload = bytes::Bytes::from_static(payload.as_bytes());
        for isolation in [Isolation::Event, Isolation::Reuse] {
            let plugin = load(runtime, config, dir, isolation);
            let name = if isolation == Isolation::Event {
                "event"
            } else {
                "reuse"
            };
            print!("{label:<20} {name:>8}");
            let mut figures = serde_json::Map::new();
            let mut alone = 0.0;
            let mut last = 0.0;
            for size in BATCH_SIZES {
                let us = measure_batch(rt, &plugin, &event, size);
                if size == 1 {
                    alone = us;
                }
                last = us;
                print!(" {us:>12.2}");
                figures.insert(format!("b{size}_us"), us.into());
            }
            println!(" {:>14.3}", last / alone);
            figures.insert("b64_x_b1".into(), (last / alone).into());
            summary.insert(format!("{label} {name}"), figures.into());
        }
    }
}

fn main() {
    let mut config = HostConfig::default();
    config.sandbox.cache_dir = Some(repo().join("target/weir-bench-cache"));
    let runtime = Runtime::new(&config.sandbox).expect("sandbox");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let event = event("demo.echo.bench");

    println!(
        "RUST_BACKTRACE={}",
        std::env::var("RUST_BACKTRACE").unwrap_or_else(|_| "unset".into())
    );
    println!(
        "{:<12} {:>22} {:>9} {:>22} {:>9} {:>14}",
        "echo plugin",
        "fresh µs/event (event)",
        "× Rust",
        "warm µs/event (reuse)",
        "× Rust",
        "fresh / warm"
    );
    let mut rust: Option<(f64, f64)> = None;
    let mut summary = serde_json::Map::new();
    for (language, dir) in LANGUAGES {
        let fresh = measure(&rt, &load(&runtime, &config, dir, Isolation::Event), &event);
        let warm = measure(&rt, &load(&runtime, &config, dir, Isolation::Reuse), &event);
        let (rust_fresh, rust_warm) = *rust.get_or_insert((fresh, warm));
        println!(
            "{language:<12} {fresh:>22.2} {:>9.1} {warm:>22.2} {:>9.1} {:>14.1}",
            fresh / rust_fresh,
            warm / rust_warm,
            fresh / warm
        );
        summary.insert(
            language.to_string(),
            serde_json::json!({
                "fresh_us": fresh, "warm_us": warm,
                "fresh_x_rust": fresh / rust_fresh, "warm_x_rust": warm / rust_warm,
            }),
        );
    }
    batches(&rt, &runtime, &config, &mut summary);
    println!("SUMMARY {}", serde_json::Value::Object(summary));
}
