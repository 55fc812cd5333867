//! Per-language dispatch cost: one event through the executor, the retry
//! decision and output stamping, for the `echo` plugin and its Python,
//! JavaScript and C twins, with a fresh instance per event (`isolation =
//! "event"`) and with a warm one (`"reuse"`).
//!
//! `cargo bench -p weir-host --bench languages` (plugins built first:
//! scripts/build-plugins.sh). Prints µs/event (the median of 5 timed runs) and
//! the ratio to the Rust plugin in the same mode, measured in this run.

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
    println!("SUMMARY {}", serde_json::Value::Object(summary));
}
