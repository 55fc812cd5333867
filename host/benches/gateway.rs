//! The HTTP gateway (issue 14) against NATS itself, in one run on one
//! nats-server started here, with an in-process host running the Rust relay
//! (`in.<rest>` → `out.<rest>`, JetStream, `isolation = "reuse"`):
//!
//! - **Accept throughput**: `POST /v1/events/in.<i>` → 202 from 32 concurrent
//!   keep-alive HTTP/1.1 clients, against the best direct path: an async-nats
//!   client publishing to the same stream with 32 acks in flight.
//! - **Latency to the end**: at a paced rate, POST → the signed webhook of
//!   the final status at a receiver here, against a direct JetStream publish
//!   → the relay's output at a core subscriber; p50/p99.
//!
//! Each figure is the median of `WEIR_BENCH_RUNS` runs (default 3), min and
//! max beside it; the ratios are gateway / direct. `cargo bench -p weir-host
//! --bench gateway` (plugins built first: scripts/build-plugins.sh).
//! `WEIR_BENCH_EVENTS` sets the events per throughput run (default 5000).

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt as _;
use weir_host::config::{HostConfig, HttpConfig};
use weir_host::host::Host;

const CONCURRENCY: usize = 32;
const LATENCY_EVENTS: usize = 400;
const LATENCY_RATE_PER_S: u64 = 200;
const SECRET_ENV: &str = "WEIR_BENCH_WEBHOOK_SECRET";

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// When each webhook arrived, by the status id in its body.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A webhook receiver on 127.0.0.1: answers 204, notes each arrival.
async fn receiver() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let now = Instant::now();
                if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body)
                    && let Some(id) = doc["id"].as_str()
                    && let Ok(mut seen) = seen.lock()
                {
                    seen.entry(id.to_owned()).or_insert(now);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, arrivals)
}

fn config(url: &str, dir: &std::path::Path) -> HostConfig {
    let bundle = dir.join("relay");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    let src = common::repo().join("plugins/relay");
    std::fs::copy(src.join("relay.wasm"), bundle.join("relay.wasm")).expect("relay.wasm");
    std::fs::write(
        bundle.join("plugin.toml"),
        "name = \"relay\"\nversion = \"0.1.0\"\nwasm = \"relay.wasm\"\n\
         [[subscribe]]\nsubject = \"in.>\"\nmode = \"jetstream\"\nstream = \"IN\"\n\
         [limits]\nisolation = \"reuse\"\nmax_in_flight = 64\n",
    )
    .expect("plugin.toml");
    let mut config = HostConfig::default();
    config.nats.url = url.parse().expect("url");
    config.plugins.dirs = Vec::new();
    config.plugins.bundles = vec![bundle];
    config.sandbox.cache_dir = Some(dir.join("cache"));
    let http = format!(
        "listen = \"127.0.0.1:0\"\ncallback_allow = [\"http://127.0.0.1:*/*\"]\n\
         webhook_secret_env = \"{SECRET_ENV}\"\nwebhook_backoff_ms = [100]\n"
    );
    config.http = Some(toml::from_str::<HttpConfig>(&http).expect("[http]"));
    config
}

/// `n` POSTs from `CONCURRENCY` clients; events/s.
async fn post_throughput(base: &str, n: usize, round: usize) -> f64 {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, next, base) = (client.clone(), next.clone(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let response = client
                    .post(format!("{base}/v1/events/in.t{round}.{i}"))
                    .body(vec![b'x'; 128])
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(response.status().as_u16(), 202);
                let _ = response.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `n` JetStream publishes with `CONCURRENCY` acks in flight; events/s.
async fn direct_throughput(js: &jetstream::Context, n: usize, round: usize) -> f64 {
    let started = Instant::now();
    let mut acks = futures::stream::iter(0..n)
        .map(|i| async move {
            js.publish(format!("in.d{round}.{i}"), vec![b'x'; 128].into())
                .await
                .expect("publish")
                .await
                .expect("stored")
        })
        .buffer_unordered(CONCURRENCY);
    while acks.next().await.is_some() {}
    n as f64 / started.elapsed().as_secs_f64()
}

/// POST → webhook, paced; (p50, p99) in ms.
async fn webhook_latency(base: &str, hook: &str, arrivals: &Arrivals) -> (f64, f64) {
    let client = reqwest::Client::new();
    let mut sent = HashMap::new();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE_PER_S));
    for i in 0..LATENCY_EVENTS {
        ticks.tick().await;
        let at = Instant::now();
        let response = client
            .post(format!("{base}/v1/events/in.w.{i}"))
            .header("weir-callback", hook)
            .body(vec![b'x'; 128])
            .send()
            .await
            .expect("POST");
        let text = response.text().await.expect("a body");
        let body: serde_json::Value = serde_json::from_str(&text).expect("json");
        sent.insert(body["id"].as_str().expect("id").to_owned(), at);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.lock().expect("lock").len() < sent.len() {
        assert!(Instant::now() < deadline, "webhooks missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat: Vec<f64> = {
        let seen = arrivals.lock().expect("lock");
        sent.iter()
            .map(|(id, at)| seen[id].duration_since(*at).as_secs_f64() * 1e3)
            .collect()
    };
    arrivals.lock().expect("lock").clear();
    lat.sort_by(f64::total_cmp);
    (pct(&lat, 0.5), pct(&lat, 0.99))
}

/// JetStream publish → the relay's output, paced; (p50, p99) in ms. The
/// outputs are timed as they arrive, by a task of their own.
async fn direct_latency(client: &async_nats::Client) -> (f64, f64) {
    let js = jetstream::new(client.clone());
    let mut outputs = client.subscribe("out.l.>").await.expect("subscribe");
    let arrivals = tokio::spawn(async move {
        let mut at = vec![None; LATENCY_EVENTS];
        for _ in 0..LATENCY_EVENTS {
            let msg = tokio::time::timeout(Duration::from_secs(60), outputs.next())
                .await
                .expect("outputs in time")
                .expect("subscription open");
            let i: usize = msg
                .subject
                .rsplit('.')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("index");
            at[i] = Some(Instant::now());
        }
        at
    });
    let mut sent = Vec::with_capacity(LATENCY_EVENTS);
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE_PER_S));
    for i in 0..LATENCY_EVENTS {
        ticks.tick().await;
        sent.push(Instant::now());
        js.publish(format!("in.l.{i}"), vec![b'x'; 128].into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let arrived = arrivals.await.expect("the receiving task");
    let mut lat: Vec<f64> = sent
        .iter()
        .zip(arrived)
        .map(|(s, a)| a.expect("every output").duration_since(*s).as_secs_f64() * 1e3)
        .collect();
    lat.sort_by(f64::total_cmp);
    (pct(&lat, 0.5), pct(&lat, 0.99))
}

fn main() {
    let runs: usize = common::env("WEIR_BENCH_RUNS", 3);
    let n: usize = common::env("WEIR_BENCH_EVENTS", 5000);
    // SAFETY: set before the runtime and any other thread start.
    unsafe {
        std::env::set_var(SECRET_ENV, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    }
    weir_host::webhook::install_tls_provider();
    let server = common::start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(&server.url).await.expect("connect");
        let js = jetstream::new(client.clone());
        for (name, subject) in [("IN", "in.>"), ("OUT", "out.>")] {
            js.create_stream(jetstream::stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                ..Default::default()
            })
            .await
            .expect("stream");
        }
        let host = Host::start(&config(&server.url, dir.path()))
            .await
            .expect("host");
        let base = format!("http://{}", host.http_addr().expect("gateway"));
        let (hook, arrivals) = receiver().await;
        // Warm both paths.
        post_throughput(&base, 200, 999).await;
        direct_throughput(&js, 200, 999).await;

        let (mut post, mut direct, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let (mut w50, mut w99, mut d50, mut d99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..runs {
            let p = post_throughput(&base, n, round).await;
            let d = direct_throughput(&js, n, round).await;
            post.push(p);
            direct.push(d);
            ratio.push(p / d);
            let (a, b) = webhook_latency(&base, &hook, &arrivals).await;
            w50.push(a);
            w99.push(b);
            let (a, b) = direct_latency(&client).await;
            d50.push(a);
            d99.push(b);
        }
        let row = |name: &str, unit: &str, xs: Vec<f64>| {
            let (m, lo, hi) = common::spread(&xs);
            println!("{name:<44} {m:>10.2} {unit}  (min {lo:.2}, max {hi:.2}, {runs} runs)");
        };
        row("accept_events_per_s.gateway_post_202", "/s", post);
        row("accept_events_per_s.direct_jetstream", "/s", direct);
        row("accept_ratio.gateway_over_direct", "x", ratio);
        row("end_to_end_ms.post_to_webhook.p50", "ms", w50);
        row("end_to_end_ms.post_to_webhook.p99", "ms", w99);
        row("end_to_end_ms.publish_to_output.p50", "ms", d50);
        row("end_to_end_ms.publish_to_output.p99", "ms", d99);
        host.stop().await.expect("stop");
    });
}
