//! What a deploy costs (issue 13): two hosts following the deployments
//! bucket of one nats-server started here.
//!
//! - **Deploy → all hosts serving**: from the record's put until both hosts
//!   run the new version, for the Rust `relay` and the Python `echo-python`;
//!   *cold* with an empty compile cache (each host compiles), *warm* for a new
//!   version with the same wasm (a cache hit).
//! - **Latency during a swap**: a core relay at a steady rate, each payload
//!   carrying its send time; p50/p99 from publish to the output's arrival,
//!   for a steady window, a window with an in-place swap (another `[config]`)
//!   and one with a swap that subscribes again (other `[limits]`).
//!
//! Each figure is the median of `WEIR_BENCH_RUNS` runs (default 5), min and
//! max beside it. `cargo bench -p weir-host --bench deploy` (plugins built
//! first: scripts/build-plugins.sh).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use weir_host::bundle::archive;
use weir_host::config::{DeployConfig, HostConfig};
use weir_host::deploy::Buckets;
use weir_host::host::Host;

const RATE_PER_S: u64 = 2000;
const WINDOW: Duration = Duration::from_millis(1500);

/// A copy of `plugins/<name>` in `dir/<label>` at `version`, its manifest's
/// end given `extra`.
fn variant(name: &str, dir: &Path, label: &str, version: &str, extra: &str) -> PathBuf {
    let src = common::repo().join("plugins").join(name);
    let dst = dir.join(label);
    std::fs::create_dir_all(&dst).expect("mkdir");
    for entry in std::fs::read_dir(&src).expect("list") {
        let entry = entry.expect("entry");
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy");
        }
    }
    let manifest = std::fs::read_to_string(dst.join("plugin.toml")).expect("manifest");
    let manifest = manifest.replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
    std::fs::write(dst.join("plugin.toml"), format!("{manifest}\n{extra}\n")).expect("write");
    dst
}

/// A host running only what `deploy`'s buckets name, and following them.
fn config(url: &str, cache: &Path, deploy: &DeployConfig) -> HostConfig {
    let mut config = HostConfig::default();
    config.nats.url = url.parse().expect("url");
    config.plugins.dirs = Vec::new();
    config.sandbox.cache_dir = Some(cache.to_path_buf());
    config.deploy = deploy.clone();
    config.deploy.watch = true;
    config
}

/// Buckets of their own for one run (nothing deployed before), opened.
async fn fresh_buckets(url: &str) -> (Buckets, DeployConfig, async_nats::Client) {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client.clone());
    let tag = rand::random::<u32>();
    let deploy = DeployConfig {
        bundles_bucket: format!("bundles_{tag:08x}"),
        deployments_bucket: format!("deployments_{tag:08x}"),
        ..DeployConfig::default()
    };
    let buckets = Buckets::open(&js, &deploy, true).await.expect("buckets");
    (buckets, deploy, client)
}

async fn deploy(buckets: &Buckets, bundle: &Path) {
    let (loaded, bytes) = archive::pack_bytes(bundle, 256).expect("pack");
    buckets.deploy(&loaded, &bytes, None).await.expect("deploy");
}

/// From now until every host runs `version` of `name`.
async fn until_serving(hosts: &[Host], name: &str, version: &str) -> Duration {
    let started = Instant::now();
    loop {
        let all = hosts.iter().all(|h| {
            h.plugins()
                .iter()
                .any(|p| p.name() == name && p.manifest.version == version)
        });
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{name} {version} never served"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One cold and one warm deploy of `name` to two fresh hosts; (cold, warm).
async fn deploy_times(url: &str, name: &str) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buckets, deploy_config, _client) = fresh_buckets(url).await;
    let cache = dir.path().join("cache");
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let config = config(url, &cache, &deploy_config);
        hosts.push(Host::start(&config).await.expect("host"));
    }
    let v1 = variant(name, dir.path(), "v1", "0.1.0", "");
    let v2 = variant(name, dir.path(), "v2", "0.2.0", "");
    deploy(&buckets, &v1).await;
    let cold = until_serving(&hosts, name, "0.1.0").await;
    deploy(&buckets, &v2).await;
    let warm = until_serving(&hosts, name, "0.2.0").await;
    for host in hosts {
        host.stop().await.expect("stop");
    }
    (cold, warm)
}

/// Publish to `in.<i>` at RATE_PER_S for WINDOW while `during` runs; the
/// latency of every event, in µs, sorted.
async fn latencies(
    client: &async_nats::Client,
    during: impl std::future::Future<Output = ()>,
) -> Vec<u64> {
    let mut out = client.subscribe("out.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let origin = Instant::now();
    let n = (RATE_PER_S * WINDOW.as_millis() as u64 / 1000) as usize;
    let publisher = {
        let client = client.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_S));
            for i in 0..n {
                ticks.tick().await;
                let sent = origin.elapsed().as_micros() as u64;
                client
                    .publish(format!("in.{i}"), sent.to_string().into())
                    .await
                    .expect("publish");
            }
        }
    };
    let receiver = async {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), out.next()).await {
                Ok(Some(msg)) => {
                    let sent: u64 = std::str::from_utf8(&msg.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("a send time");
                    got.push(origin.elapsed().as_micros() as u64 - sent);
                }
                _ => break,
            }
        }
        got
    };
    let (_, _, mut got) = tokio::join!(publisher, during, receiver);
    assert!(
        got.len() * 100 >= n * 99,
        "only {} of {n} outputs",
        got.len()
    );
    got.sort_unstable();
    got
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// (steady, in-place swap, swap subscribing again): (p50, p99) µs each.
async fn swap_latency(url: &str) -> [(u64, u64); 3] {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buckets, deploy_config, client) = fresh_buckets(url).await;
    let config = config(url, &dir.path().join("cache"), &deploy_config);
    let host = Host::start(&config).await.expect("host");
    let group = "[config]\ntag = \"a\"\n";
    let v1 = variant("relay", dir.path(), "v1", "0.1.0", group);
    let v2 = variant(
        "relay",
        dir.path(),
        "v2",
        "0.2.0",
        "[config]\ntag = \"b\"\n",
    );
    let v3 = variant(
        "relay",
        dir.path(),
        "v3",
        "0.3.0",
        "[limits]\nqueue = 2000\n",
    );
    for v in [&v1, &v2, &v3] {
        // Compiled once before: the windows time the swap, not the compile.
        deploy(&buckets, v).await;
    }
    deploy(&buckets, &v1).await;
    until_serving(std::slice::from_ref(&host), "relay", "0.1.0").await;
    let steady = latencies(&client, async {}).await;
    let mut out = [(pct(&steady, 0.5), pct(&steady, 0.99)), (0, 0), (0, 0)];
    for (k, (bundle, version)) in [(&v2, "0.2.0"), (&v3, "0.3.0")].into_iter().enumerate() {
        let during = async {
            tokio::time::sleep(WINDOW / 3).await;
            deploy(&buckets, bundle).await;
            until_serving(std::slice::from_ref(&host), "relay", version).await;
        };
        let got = latencies(&client, during).await;
        out[k + 1] = (pct(&got, 0.5), pct(&got, 0.99));
    }
    host.stop().await.expect("stop");
    out
}

fn main() {
    let runs: usize = common::env("WEIR_BENCH_RUNS", 5);
    let server = common::start_server();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut summary = serde_json::Map::new();
    let mut row = |name: &str, unit: &str, xs: Vec<f64>| {
        let (m, lo, hi) = common::spread(&xs);
        println!("{name:<42} {m:>10.1} {unit}  (min {lo:.1}, max {hi:.1}, {runs} runs)");
        summary.insert(name.into(), serde_json::json!(m));
    };
    for plugin in ["relay", "echo-python"] {
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (c, w) = rt.block_on(deploy_times(&server.url, plugin));
            cold.push(c.as_secs_f64() * 1e3);
            warm.push(w.as_secs_f64() * 1e3);
        }
        row(
            &format!("deploy_to_2_hosts_serving_ms.{plugin}.cold"),
            "ms",
            cold,
        );
        row(
            &format!("deploy_to_2_hosts_serving_ms.{plugin}.warm"),
            "ms",
            warm,
        );
    }
    let mut figures: [[Vec<f64>; 2]; 3] = Default::default();
    for _ in 0..runs {
        let got = rt.block_on(swap_latency(&server.url));
        for (k, (p50, p99)) in got.into_iter().enumerate() {
            figures[k][0].push(p50 as f64);
            figures[k][1].push(p99 as f64);
        }
    }
    for (k, label) in ["steady", "swap_in_place", "swap_subscribing_again"]
        .iter()
        .enumerate()
    {
        let [p50, p99] = std::mem::take(&mut figures[k]);
        row(&format!("core_relay_latency_us.{label}.p50"), "µs", p50);
        row(&format!("core_relay_latency_us.{label}.p99"), "µs", p99);
    }
    println!("SUMMARY {}", serde_json::Value::Object(summary));
}
