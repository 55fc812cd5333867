//! What `order_by` costs (issue 18): the `trivial` plugin on JetStream,
//! `max_in_flight = 32`, `isolation = "reuse"`, N events of 200 keys
//! (subject `bench.ord.<key>`, keys taking turns) handled with a stored
//! output each, in one run against one nats-server started here:
//!
//! - unordered: the subscription without `order_by`;
//! - ordered, 200 keys: `order_by = "subject:3"`;
//! - ordered, 1 key: every event on one key (serial, for the README).
//!
//! Events/s from the first stored output to the last (start-up left out),
//! `WEIR_BENCH_RUNS` rounds (default 5) interleaved, medians with min–max and
//! each ordered run's ratio to the unordered one. `cargo bench -p weir-host
//! --bench ordering` (plugins built first); `WEIR_BENCH_EVENTS` sets N
//! (default 20000). The last line is `SUMMARY {json}`.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod common;

use std::path::{Path, PathBuf};

use async_nats::jetstream;
use weir_host::config::HostConfig;
use weir_host::host::Host;

const IN_STREAM: &str = "BENCH_ORD";
const OUT_STREAM: &str = "BENCH_OUT";
const OUT_SUBJECT: &str = "bench.out";
const IN_FLIGHT: usize = 32;

/// The runs: name, label, keys, ordered.
const RUNS: [(&str, &str, usize, bool); 3] = [
    ("unordered", "200 keys, no order_by", 200, false),
    ("ordered", "200 keys, order_by", 200, true),
    ("one_key", "1 key, order_by (serial)", 1, true),
];

async fn reset_streams(js: &jetstream::Context) {
    for (name, subject) in [(IN_STREAM, "bench.ord.>"), (OUT_STREAM, OUT_SUBJECT)] {
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

/// `plugins/trivial` as a bundle subscribed to `bench.ord.>`.
fn bundle(dir: &Path, name: &str, ordered: bool) -> PathBuf {
    let src = common::repo().join("plugins/trivial");
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).expect("bundle dir");
    std::fs::copy(src.join("trivial.wasm"), dst.join("trivial.wasm"))
        .expect("plugins/trivial is built (scripts/build-plugins.sh)");
    let order = if ordered {
        "order_by = \"subject:3\"\n"
    } else {
        ""
    };
    let manifest = format!(
        "name = \"trivial\"\nversion = \"0.1.0\"\nwasm = \"trivial.wasm\"\n\n\
         [[subscribe]]\nsubject = \"bench.ord.>\"\nmode = \"jetstream\"\nstream = \"{IN_STREAM}\"\n{order}\n\
         [limits]\nisolation = \"reuse\"\nmax_in_flight = {IN_FLIGHT}\n"
    );
    std::fs::write(dst.join("plugin.toml"), manifest).expect("write manifest");
    dst
}

async fn weir(url: &str, js: &jetstream::Context, bundle: PathBuf, n: usize) -> (f64, u64) {
    let mut config = HostConfig::default();
    config.nats.url = url.parse().expect("the bench server URL parses");
    config.plugins.dirs = Vec::new();
    config.plugins.bundles = vec![bundle];
    config.sandbox.cache_dir = Some(common::repo().join("target/weir-bench-cache"));
    let host = Host::start(&config).await.expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let rate = common::stored_per_second(js, OUT_STREAM, n).await;
    let waits = (host.plugins()[0].stats.order_waits).load(std::sync::atomic::Ordering::Relaxed);
    host.stop().await.expect("stop");
    (rate, waits)
}

fn main() {
    let n: usize = common::env("WEIR_BENCH_EVENTS", 20_000);
    let rounds: usize = common::env("WEIR_BENCH_RUNS", 5).max(1);
    let server = common::start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let client = async_nats::connect(&server.url).await.expect("connect");
        let js = jetstream::new(client);
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); RUNS.len()];
        for round in 1..=rounds {
            let mut order: Vec<usize> = (0..RUNS.len()).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for i in order {
                let (name, _, keys, ordered) = RUNS[i];
                reset_streams(&js).await;
                let payload = bytes::Bytes::from_static(b"{\"n\":1}");
                common::fill(&js, n, |i| format!("bench.ord.k{}", i % keys), payload).await;
                let (rate, waits) = weir(&server.url, &js, bundle(dir.path(), name, ordered), n).await;
                println!("  round {round}/{rounds}, {name}: {rate:.0} events/s ({waits} waited for their key)");
                rates[i].push(rate);
            }
        }
        println!();
        println!(
            "order_by, JetStream end to end: {n} events, trivial plugin, reuse, max_in_flight {IN_FLIGHT}, {rounds} rounds; medians (min-max)"
        );
        let unordered = common::spread(&rates[0]).0;
        let mut summary = serde_json::Map::new();
        summary.insert("events".into(), n.into());
        summary.insert("rounds".into(), rounds.into());
        for (i, (name, label, _, _)) in RUNS.iter().enumerate() {
            let (median, min, max) = common::spread(&rates[i]);
            println!(
                "{label:<32} {:>22} {:>8.2} × unordered",
                format!("{median:.0} ({min:.0}-{max:.0})"),
                median / unordered
            );
            summary.insert(format!("{name}_events_per_s"), median.round().into());
            summary.insert(format!("{name}_x_unordered"), ((median / unordered * 1000.0).round() / 1000.0).into());
        }
        println!("SUMMARY {}", serde_json::Value::Object(summary));
    });
}
