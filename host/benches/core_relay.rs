//! Core NATS end to end (issue 12, item 3): a publisher on `in.bench`, a relay
//! (`in.<rest>` → `out.<rest>`), and a counting subscriber on `out.>`, all
//! against one nats-server started here, in one run:
//!
//! - native: an async-nats relay, one client, no flush per message;
//! - raw wasmtime: async-nats + the `plugins/relay` component called straight
//!   through wasmtime (no weir code), a fresh instance per event or one warm;
//! - weir: an in-process `Host` with the relay bundle, `isolation = "event"`
//!   and `"reuse"` (`max_in_flight = 64`, a queue that holds a whole run), and
//!   `"event"` with `batch = { max_events = 64, max_wait_ms = 5 }` (2 calls at
//!   once: a fresh instance per batch of 64).
//!
//! Throughput: N events of 128 B published flat out; the timer starts at the
//! first publish and stops at the last event counted (or, after a 2 s quiet,
//! at the last one that came). Latency: the same relay again, the publisher
//! paced at half that relay's median throughput, every payload stamped with
//! its send time. Each relay is started before and stopped after each run and
//! has relayed a probe before the timer starts. `WEIR_BENCH_RUNS` rounds
//! (default 3, in alternating order) of each; medians with min–max.
//! Lost = published − counted; for weir, shed (its `Stats`) is counted apart
//! and silently lost = lost − shed must be 0.
//!
//! `cargo bench -p weir-host --bench core_relay` (plugins built first:
//! scripts/build-plugins.sh). `WEIR_BENCH_EVENTS` sets N (default 100000).
//! `WEIR_BENCH_ONLY=weir_reuse` (comma-separated keys) runs only those
//! relays, e.g. under a profiler; `WEIR_BENCH_LATENCY_RATE` paces every
//! latency run at that many events/s instead. The last line is `SUMMARY {json}`.

/// The allocator the `weir` binary runs with (host/src/main.rs).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod common;
#[path = "core_relay/load.rs"]
mod load;
#[path = "core_relay/raw.rs"]
mod raw;
#[path = "core_relay/relays.rs"]
mod relays;

use std::collections::BTreeMap;

use common::{env, spread};
use load::Driver;
use relays::{Relay, Setup};

/// How long each latency run publishes for, at most (N events caps it).
const LATENCY_SECS: f64 = 1.5;

/// What one relay gave over all its runs.
#[derive(Default)]
struct Figures {
    rates: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Over all runs: published − counted; weir's shed; silently lost.
    lost: u64,
    shed: u64,
    silently_lost: u64,
    failed_attempts: u64,
}

impl Figures {
    fn account(&mut self, relay: Relay, counted: &load::Counted, shed: u64, failed: u64) {
        let lost = counted.published.saturating_sub(counted.received);
        self.lost += lost;
        self.shed += shed;
        self.failed_attempts += failed;
        if relay.is_weir() {
            self.silently_lost += lost.saturating_sub(shed);
        }
    }
}

/// Round `round`'s order: forward, then backward, and so on; only the
/// relays `WEIR_BENCH_ONLY` names (comma-separated keys), when set.
fn order(round: u64) -> Vec<Relay> {
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_default();
    let mut relays: Vec<Relay> = Relay::ALL
        .into_iter()
        .filter(|r| only.is_empty() || only.split(',').any(|k| k.trim() == r.key()))
        .collect();
    if round % 2 == 1 {
        relays.reverse();
    }
    relays
}

fn main() {
    if let Ok(filter) = std::env::var("WEIR_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    let n = env("WEIR_BENCH_EVENTS", 100_000).max(1);
    let rounds = env("WEIR_BENCH_RUNS", 3).max(1);
    let server = common::start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let setup = Setup::new(server.url.clone(), &common::repo(), dir.path());
        let driver = Driver::connect(&server.url).await;
        let mut figures: BTreeMap<&str, Figures> = Relay::ALL
            .iter()
            .map(|r| (r.key(), Figures::default()))
            .collect();

        for round in 0..rounds {
            for relay in order(round) {
                let running = setup.start(relay).await;
                driver.until_relaying().await;
                let counted = driver.run(n, None).await;
                let (shed, failed) = running.stop().await;
                let f = figures.get_mut(relay.key()).expect("every relay");
                f.account(relay, &counted, shed, failed);
                f.rates.push(counted.rate());
                println!(
                    "  throughput round {}/{rounds}, {:<11} {:>9.0} events/s, {} of {} counted, {shed} shed",
                    round + 1,
                    relay.key(),
                    counted.rate(),
                    counted.received,
                    counted.published
                );
            }
        }
        let fixed_rate = std::env::var("WEIR_BENCH_LATENCY_RATE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|r| *r > 0.0);
        for round in 0..rounds {
            for relay in order(round + 1) {
                let f = figures.get_mut(relay.key()).expect("every relay");
                // Half this relay's median throughput, or one rate for all.
                let rate = fixed_rate.unwrap_or(spread(&f.rates).0 / 2.0);
                let events = ((rate * LATENCY_SECS) as u64).clamp(1_000, n);
                let running = setup.start(relay).await;
                driver.until_relaying().await;
                let mut counted = driver.run(events, Some(rate)).await;
                let (shed, failed) = running.stop().await;
                f.account(relay, &counted, shed, failed);
                let (p50, p99) = (counted.latency_us(0.5), counted.latency_us(0.99));
                f.p50.push(p50);
                f.p99.push(p99);
                println!(
                    "  latency round {}/{rounds}, {:<11} at {rate:>7.0}/s: p50 {p50:.0} µs, p99 {p99:.0} µs, {} of {} counted",
                    round + 1,
                    relay.key(),
                    counted.received,
                    counted.published
                );
            }
        }
        report(n, rounds, &figures);
    });
}

fn report(n: u64, rounds: u64, figures: &BTreeMap<&str, Figures>) {
    println!();
    println!(
        "Core NATS end to end: {n} events of {} B, relay in.<rest> -> out.<rest>, {rounds} rounds interleaved; medians (min-max)",
        load::PAYLOAD
    );
    println!(
        "{:<40} {:>26} {:>22} {:>22} {:>6} {:>6} {:>7}",
        "relay", "events/s", "p50 µs @ half rate", "p99 µs @ half rate", "lost", "shed", "silent"
    );
    let mut summary = serde_json::Map::new();
    summary.insert("events".into(), n.into());
    summary.insert("rounds".into(), rounds.into());
    let mut median = BTreeMap::new();
    for relay in Relay::ALL {
        let f = &figures[relay.key()];
        let (rate, rmin, rmax) = spread(&f.rates);
        let (p50, p50min, p50max) = spread(&f.p50);
        let (p99, p99min, p99max) = spread(&f.p99);
        median.insert(relay.key(), rate);
        let silent = if relay.is_weir() {
            f.silently_lost.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:<40} {:>26} {:>22} {:>22} {:>6} {:>6} {:>7}",
            relay.label(),
            format!("{rate:.0} ({rmin:.0}-{rmax:.0})"),
            format!("{p50:.0} ({p50min:.0}-{p50max:.0})"),
            format!("{p99:.0} ({p99min:.0}-{p99max:.0})"),
            f.lost,
            f.shed,
            silent
        );
        let key = relay.key();
        let mut put = |name: String, value: serde_json::Value| {
            summary.insert(name, value);
        };
        put(format!("{key}_events_per_s"), rate.round().into());
        put(format!("{key}_events_per_s_min"), rmin.round().into());
        put(format!("{key}_events_per_s_max"), rmax.round().into());
        put(format!("{key}_p50_us"), p50.round().into());
        put(format!("{key}_p99_us"), p99.round().into());
        put(format!("{key}_lost"), f.lost.into());
        if relay.is_weir() {
            put(format!("{key}_shed"), f.shed.into());
            put(format!("{key}_silently_lost"), f.silently_lost.into());
            put(format!("{key}_failed_attempts"), f.failed_attempts.into());
        }
    }
    println!();
    let ratios = [
        ("weir_reuse_over_native", "weir_reuse", "native"),
        ("weir_reuse_over_raw_warm", "weir_reuse", "raw_warm"),
        ("weir_event_over_raw_fresh", "weir_event", "raw_fresh"),
        ("raw_warm_over_native", "raw_warm", "native"),
        ("weir_event_over_native", "weir_event", "native"),
        ("weir_event_b64_over_native", "weir_event_b64", "native"),
        (
            "weir_event_b64_over_raw_fresh",
            "weir_event_b64",
            "raw_fresh",
        ),
    ];
    for (name, a, b) in ratios {
        let ratio = median[a] / median[b];
        println!("{name:<28} {ratio:>6.2}");
        summary.insert(name.into(), ((ratio * 1000.0).round() / 1000.0).into());
    }
    println!("SUMMARY {}", serde_json::Value::Object(summary));
}
