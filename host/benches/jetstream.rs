//! End-to-end JetStream throughput: N events stored in a stream, handled with
//! explicit acks, one output each stored (with `Nats-Msg-Id`) in an output
//! stream. Three runs against one nats-server started here:
//!
//! - native: an async-nats pull consumer, 64 messages at once, publishing the
//!   output and awaiting its ack, then acking — the limit;
//! - weir with the `trivial` plugin, `isolation = "event"` and `"reuse"`,
//!   `max_in_flight = 64`;
//! - the same with `batch = { max_events = B, max_wait_ms = 5 }` for B = 1,
//!   16 and 64 (`event-b16`, ...): `max_in_flight = max(64 / B, 2)` calls, so
//!   about as many events are in flight as in the other runs. The `trivial`
//!   plugin exports only `handle`: a batch is one instance calling `handle`
//!   once per event.
//!
//! Each is run `WEIR_BENCH_RUNS` times (default 5), the three interleaved, and
//! printed as the median with the min and max beside it, so an outlier (a
//! stalled pull, issue 16) shows instead of hiding in one figure.
//!
//! `cargo bench -p weir-host --bench jetstream` (plugins built first:
//! scripts/build-plugins.sh). `WEIR_BENCH_EVENTS` sets N (default 20000);
//! `WEIR_BENCH_ONLY=event` (comma-separated: native, event, reuse,
//! event-b16, ...) runs only those, e.g. under a profiler.

/// The allocator the `weir` binary runs with (host/src/main.rs).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod common;

use std::path::{Path, PathBuf};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt as _;
use weir_host::config::HostConfig;
use weir_host::host::Host;

const IN_STREAM: &str = "BENCH_IN";
const OUT_STREAM: &str = "BENCH_OUT";
const IN_SUBJECT: &str = "bench.trivial";
const OUT_SUBJECT: &str = "bench.out";
const IN_FLIGHT: usize = 64;

async fn reset_streams(js: &jetstream::Context) {
    for (name, subject) in [(IN_STREAM, IN_SUBJECT), (OUT_STREAM, OUT_SUBJECT)] {
        let _ = js.delete_stream(name).await;
        js.create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .expect("create stream");
    }
}

/// The native limit: the same ack + publish discipline, no sandbox.
async fn native(js: &jetstream::Context, n: usize) -> f64 {
    let stream = js.get_stream(IN_STREAM).await.expect("in stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("native".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: (IN_FLIGHT * 4) as i64,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let messages = consumer
        .stream()
        .max_messages_per_batch(IN_FLIGHT)
        .messages()
        .await
        .expect("messages");
    let work = messages.take(n).for_each_concurrent(IN_FLIGHT, |message| {
        let js = js.clone();
        async move {
            let Ok(message) = message else { return };
            let id = message
                .info()
                .map(|i| format!("{}:{}:0", i.stream, i.stream_sequence))
                .unwrap_or_default();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            if let Ok(ack) = js
                .publish_with_headers(OUT_SUBJECT, headers, message.payload.clone())
                .await
                && ack.await.is_ok()
            {
                let _ = message.ack_with(AckKind::Ack).await;
            }
        }
    });
    let (_, rate) = tokio::join!(work, common::stored_per_second(js, OUT_STREAM, n));
    rate
}

/// The trivial plugin for run `mode`: `event`, `reuse`, or either with
/// `-b<max_events>`.
fn trivial_bundle(dir: &Path, mode: &str) -> PathBuf {
    let (isolation, batch) = match mode.split_once("-b") {
        Some((isolation, b)) => (isolation, b.parse::<usize>().ok()),
        None => (mode, None),
    };
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/trivial");
    let dst = dir.join(format!("trivial-{mode}"));
    std::fs::create_dir_all(&dst).expect("bundle dir");
    let manifest = std::fs::read_to_string(src.join("plugin.toml")).expect("trivial plugin.toml");
    let wasm_name = manifest
        .lines()
        .find_map(|l| l.strip_prefix("wasm = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("wasm field");
    std::fs::copy(src.join(&wasm_name), dst.join(&wasm_name))
        .expect("plugins/trivial is built (scripts/build-plugins.sh)");
    let mut out = String::new();
    for line in manifest.lines() {
        if line.starts_with("[limits]") {
            continue; // replaced below
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("subject = ") {
            out.push_str(&format!("mode = \"jetstream\"\nstream = \"{IN_STREAM}\"\n"));
            if let Some(b) = batch {
                out.push_str(&format!(
                    "batch = {{ max_events = {b}, max_wait_ms = 5 }}\n"
                ));
            }
        }
    }
    let calls = batch.map_or(IN_FLIGHT, |b| (IN_FLIGHT / b).max(2));
    out.push_str(&format!(
        "\n[limits]\nisolation = \"{isolation}\"\nmax_in_flight = {calls}\n"
    ));
    std::fs::write(dst.join("plugin.toml"), out).expect("write manifest");
    dst
}

async fn weir(url: &str, js: &jetstream::Context, bundle: PathBuf, n: usize) -> f64 {
    let mut config = HostConfig::default();
    config.nats.url = url.parse().expect("the bench server URL parses");
    config.plugins.dirs = Vec::new();
    config.plugins.bundles = vec![bundle];
    config.sandbox.cache_dir =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/weir-bench-cache"));
    let host = Host::start(&config).await.expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let rate = common::stored_per_second(js, OUT_STREAM, n).await;
    let stats = &host.plugins()[0].stats;
    let failed = stats
        .failed_attempts
        .load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        println!("  ({failed} failed attempts were retried)");
    }
    host.stop().await.expect("stop");
    rate
}

fn main() {
    if let Ok(filter) = std::env::var("WEIR_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    let n: usize = common::env("WEIR_BENCH_EVENTS", 20_000);
    let runs: usize = common::env("WEIR_BENCH_RUNS", 5).max(1);
    // Comma-separated modes to run alone, e.g. under a profiler.
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_default();
    let server = common::start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let client = async_nats::connect(&server.url).await.expect("connect");
        let js = jetstream::new(client);
        const MODES: [&str; 8] = [
            "native", "event", "reuse", "event-b1", "event-b16", "event-b64", "reuse-b16",
            "reuse-b64",
        ];
        let mut rates: [Vec<f64>; 8] = Default::default();
        for round in 1..=runs {
            for (mode, run) in MODES.iter().enumerate() {
                if !only.is_empty() && !only.split(',').any(|k| k.trim() == *run) {
                    continue;
                }
                reset_streams(&js).await;
                let payload = bytes::Bytes::from_static(
                    b"{\"n\":1,\"payload\":\"0123456789abcdef0123456789abcdef\"}",
                );
                common::fill(&js, n, |_| IN_SUBJECT.to_owned(), payload).await;
                let rate = match *run {
                    "native" => native(&js, n).await,
                    mode => weir(&server.url, &js, trivial_bundle(dir.path(), mode), n).await,
                };
                println!("  round {round}/{runs}, {run}: {rate:.0} events/s");
                rates[mode].push(rate);
            }
        }
        println!();
        println!(
            "JetStream end to end: {n} events, {IN_FLIGHT} in flight, ack after stored output, {runs} runs each"
        );
        println!(
            "{:<44} {:>10} {:>10} {:>10} {:>10}",
            "events/s", "median", "min", "max", "× native"
        );
        let spread: Vec<(f64, f64, f64)> = rates
            .iter_mut()
            .map(|r| {
                r.sort_by(f64::total_cmp);
                match r.len() {
                    0 => (f64::NAN, f64::NAN, f64::NAN),
                    len => (r[len / 2], r[0], r[len - 1]),
                }
            })
            .collect();
        let native = spread[0].0;
        let mut summary = serde_json::Map::new();
        summary.insert("events".into(), serde_json::json!(n));
        summary.insert("runs".into(), serde_json::json!(runs));
        for (run, (median, min, max)) in MODES.iter().zip(spread) {
            summary.insert(
                (*run).into(),
                serde_json::json!({
                    "events_per_s": median, "min": min, "max": max, "x_native": median / native,
                }),
            );
            let label = match *run {
                "native" => "native async-nats consumer".to_owned(),
                mode => match mode.split_once("-b") {
                    Some((iso, b)) => format!("weir, trivial, {iso}, batches of {b}"),
                    None => format!("weir, trivial plugin, isolation = {mode}"),
                },
            };
            println!(
                "{label:<44} {median:>10.0} {min:>10.0} {max:>10.0} {:>10.2}",
                median / native
            );
        }
        println!("SUMMARY {}", serde_json::Value::Object(summary));
    });
}
