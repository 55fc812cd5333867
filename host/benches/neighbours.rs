//! A noisy neighbour: the `echo` plugin's request throughput while another
//! plugin in the same host has 8 guests spinning (4× tokio's 2 worker
//! threads), over its throughput alone, in one run. Guests yield to the
//! scheduler at every epoch tick, so the ratio should stay near 1.
//!
//! `cargo bench -p weir-host --bench neighbours` (plugins built first:
//! scripts/build-plugins.sh). `WEIR_BENCH_REQUESTS` sets the request count
//! per phase (default 4000).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use weir_host::config::HostConfig;
use weir_host::host::Host;
use weir_host::plugin::Stats;

const SPINNING: u64 = 8;
const CONCURRENT: usize = 32;

/// A copy of hostile-loop that spins for a minute, 8 at a time.
fn spinner(into: &std::path::Path) -> PathBuf {
    let src = common::repo().join("plugins/hostile-loop");
    let dst = into.join("hostile-loop");
    std::fs::create_dir_all(&dst).expect("bundle dir");
    for entry in std::fs::read_dir(&src).expect("list bundle") {
        let entry = entry.expect("entry");
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy");
        }
    }
    let manifest = std::fs::read_to_string(dst.join("plugin.toml")).expect("manifest");
    let manifest = manifest
        .replace("timeout_ms = 200", "timeout_ms = 60000\nmax_in_flight = 8")
        .replace("max_attempts = 2", "max_attempts = 1");
    std::fs::write(dst.join("plugin.toml"), manifest).expect("write manifest");
    dst
}

/// Requests per second answered by echo, `CONCURRENT` at a time.
async fn requests_per_second(client: &async_nats::Client, n: usize) -> f64 {
    let start = Instant::now();
    let answered = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move {
                client
                    .request(format!("demo.echo.{i}"), "ping".into())
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(CONCURRENT)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(answered, n, "every request answered");
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("WEIR_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let server = common::start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let mut config = HostConfig::default();
        config.nats.url = server.url.parse().expect("the bench server URL parses");
        config.plugins.dirs = Vec::new();
        config.plugins.bundles = vec![common::repo().join("plugins/echo"), spinner(dir.path())];
        config.sandbox.cache_dir = Some(common::repo().join("target/weir-bench-cache"));
        config.shutdown.grace_ms = 100;
        if let Some(tick) = std::env::var("WEIR_BENCH_TICK_MS").ok().and_then(|v| v.parse().ok()) {
            config.sandbox.epoch_tick_ms = tick;
        }
        let host = Host::start(&config).await.expect("host starts");
        assert!(host.refused().is_empty(), "{:?}", host.refused());
        let client = async_nats::connect(&server.url).await.expect("connect");

        // Warm up, then alone.
        requests_per_second(&client, n / 10).await;
        let solo = requests_per_second(&client, n).await;

        let spinning = host
            .plugins()
            .iter()
            .find(|p| p.name() == "hostile-loop")
            .expect("hostile-loop loaded")
            .stats
            .clone();
        for i in 0..SPINNING {
            client
                .publish("hostile.loop", format!("{i}").into())
                .await
                .expect("publish");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Stats::get(&spinning.received) < SPINNING {
            assert!(Instant::now() < deadline, "the spinning events never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let flood = requests_per_second(&client, n).await;
        assert_eq!(
            Stats::get(&spinning.failed_attempts),
            0,
            "the spinning guests ended before the measurement did"
        );

        println!();
        println!(
            "Noisy neighbour: echo requests ({CONCURRENT} at a time, {n} per phase), 2 tokio workers"
        );
        println!("{:<44} {:>12} {:>10}", "", "requests/s", "× solo");
        println!("{:<44} {solo:>12.0} {:>10.2}", "echo alone", 1.0);
        println!(
            "{:<44} {flood:>12.0} {:>10.2}",
            format!("echo with {SPINNING} guests spinning beside it"),
            flood / solo
        );
        println!(
            "SUMMARY {}",
            serde_json::json!({ "solo_requests_per_s": solo, "with_spinning_requests_per_s": flood, "ratio": flood / solo })
        );
        host.stop().await.expect("stop");
    });
}
