//! In-process dispatch: one event through the executor, the retry decision and
//! output stamping — for the `trivial` plugin in both isolation modes, and for
//! a native Rust handler doing the same work through the same code (the limit).
//! Each also with the pipeline's trace hooks (issue 11): tracing off (the
//! default: an incoming `traceparent` passed on, no span) and tracing on
//! (every event sampled, two spans each, exported over OTLP/HTTP by the batch
//! processor to a real local receiver that decodes them).
//!
//! `cargo bench -p weir-host --bench dispatch` (plugins built first:
//! scripts/build-plugins.sh). Criterion's statistics come first, then a
//! summary table of µs/event and ratios against native and against the same
//! handler without trace hooks, measured in this run.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use weir_host::bundle::Bundle;
use weir_host::config::{HostConfig, Isolation, TelemetryConfig};
use weir_host::event::{Event, Message};
use weir_host::pipeline::PluginTracing;
use weir_host::plugin::Plugin;
use weir_host::policy::OutputPolicy;
use weir_host::sandbox::{Executor, PluginShared, Runtime};
use weir_host::telemetry::traces::Traces;

mod common;
#[path = "core_relay/raw.rs"]
mod raw;
use common::{dispatch, dispatch_traced, event, repo};

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

/// How one row of the table dispatches.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// As before issue 11: no trace hooks.
    Current,
    /// The trace hooks with tracing off.
    Off,
    /// The trace hooks, every event sampled and exported.
    On,
    /// The trace hooks with export on, the event's upstream trace not
    /// sampled (what most events cost at a low `sample_ratio`).
    Unsampled,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Self::Current => "",
            Self::Off => ", tracing off",
            Self::On => ", tracing on",
            Self::Unsampled => ", tracing on, unsampled",
        }
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1: decodes every request and counts
/// the spans. Runs on `rt` (not the benchmark's thread).
fn receiver(rt: &tokio::runtime::Runtime) -> (String, Arc<AtomicU64>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let spans = Arc::new(AtomicU64::new(0));
    let counted = spans.clone();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("address");
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counted = counted.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let n: usize = request
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                counted.fetch_add(n as u64, Ordering::Relaxed);
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (format!("http://{addr}/v1/traces"), spans)
}

async fn run(path: Path, plugin: &Plugin, event: &Event) -> usize {
    match path {
        Path::Current => dispatch(plugin, event).await,
        Path::Off | Path::On | Path::Unsampled => dispatch_traced(plugin, event).await,
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
    // The receiver and the exporter's HTTP requests run beside the
    // benchmark's thread, as a host's would on its other workers.
    let otel_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let (endpoint, received) = receiver(&otel_rt);
    let traces = {
        let _on = otel_rt.enter();
        Traces::start(&TelemetryConfig {
            otlp_endpoint: Some(endpoint),
            service_name: "weir-bench".into(),
            sample_ratio: 1.0,
            ..TelemetryConfig::default()
        })
        .expect("trace export")
    };
    let untraced = plugins(&runtime, &config);
    let mut traced = plugins(&runtime, &config);
    for (_, plugin) in &mut traced {
        plugin.tracing =
            PluginTracing::new(&traces, plugin.name(), [("bench.trivial".to_owned(), None)]);
    }
    let mut ordered: Vec<(&str, Path, &Plugin)> = Vec::new();
    for ((name, current), (_, on)) in untraced.iter().zip(&traced) {
        ordered.push((name, Path::Current, current));
        ordered.push((name, Path::Off, current));
        ordered.push((name, Path::On, on));
        ordered.push((name, Path::Unsampled, on));
    }
    // An upstream tracer's context, as a traced producer would send it.
    let mut event = event("bench.trivial");
    event.headers.push((
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    ));
    let mut unsampled = event.clone();
    unsampled.headers[1].1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into();
    let event_for = |path: Path| {
        if path == Path::Unsampled {
            &unsampled
        } else {
            &event
        }
    };
    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut group = criterion.benchmark_group("dispatch");
    for (name, path, plugin) in &ordered {
        group.bench_function(format!("{name}{}", path.label()), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(run(*path, plugin, event_for(*path)).await);
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
        "{:<58} {:>10} {:>9} {:>11}",
        "in-process dispatch", "µs/event", "× native", "× untraced"
    );
    let mut native_us = None;
    let mut current_us = 0.0;
    let mut traced_events = 0u64;
    let mut summary = serde_json::Map::new();
    for (name, path, plugin) in &ordered {
        let mut runs: Vec<f64> = (0..5)
            .map(|_| {
                rt.block_on(async {
                    const N: u32 = 20_000;
                    let start = Instant::now();
                    for _ in 0..N {
                        black_box(run(*path, plugin, event_for(*path)).await);
                    }
                    start.elapsed().as_secs_f64() * 1e6 / f64::from(N)
                })
            })
            .collect();
        if *path == Path::On {
            traced_events += 5 * 20_000;
        }
        runs.sort_by(f64::total_cmp);
        let us = runs[2];
        let base = *native_us.get_or_insert(us);
        if *path == Path::Current {
            current_us = us;
        }
        println!(
            "{:<58} {us:>10.2} {:>9.1} {:>11.3}",
            format!("{name}{}", path.label()),
            us / base,
            us / current_us
        );
        summary.insert(
            format!("{name}{}", path.label()),
            serde_json::json!({
                "us_per_event": us, "x_native": us / base, "x_untraced": us / current_us,
            }),
        );
    }
    // The metrics' share: what the pipeline records per event (counters, the
    // queued and in-flight gauges, the attempt and confirm histograms and the
    // clock reads they need), timed alone, against each handler's dispatch.
    let stats = weir_host::plugin::Stats::default();
    let metrics_us = {
        let mut runs: Vec<f64> = (0..5).map(|_| metrics_per_event_us(&stats)).collect();
        runs.sort_by(f64::total_cmp);
        runs[2]
    };
    let untraced_us: Vec<(String, f64)> = summary
        .iter()
        .filter(|(k, _)| !k.contains(", tracing"))
        .filter_map(|(k, v)| Some((k.clone(), v["us_per_event"].as_f64()?)))
        .collect();
    // The raw wasmtime baseline: the same component through wasmtime alone
    // (no weir code), with the fastest pool settings measured here.
    let raw = raw::Raw::load(&repo().join("plugins/trivial/trivial.wasm"));
    let wit_event = raw::WitEvent {
        id: event.id.clone(),
        subject: event.subject.clone(),
        payload: event.payload.to_vec(),
        headers: event.headers.clone(),
        reply_to: None,
        attempt: 1,
        principal: None,
    };
    let weir_us = |needle: &str| {
        summary
            .iter()
            .find(|(k, _)| k.contains(needle) && !k.contains(", tracing"))
            .and_then(|(_, v)| v["us_per_event"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let (weir_fresh, weir_warm) = (weir_us("fresh"), weir_us("warm"));
    for (fresh, label, weir) in [
        (true, "raw wasmtime, fresh instance", weir_fresh),
        (false, "raw wasmtime, warm instance", weir_warm),
    ] {
        let mut runs: Vec<f64> = (0..5)
            .map(|_| {
                rt.block_on(async {
                    const N: u32 = 20_000;
                    let mut warm = None;
                    let start = Instant::now();
                    for _ in 0..N {
                        black_box(raw.handle(&mut warm, fresh, &wit_event).await.len());
                    }
                    start.elapsed().as_secs_f64() * 1e6 / f64::from(N)
                })
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        let us = runs[2];
        println!("{label:<58} {us:>10.2}   weir's is {:.2}× it", weir / us);
        summary.insert(
            label.into(),
            serde_json::json!({ "us_per_event": us, "weir_over_raw": weir / us }),
        );
    }
    println!("metrics, per event: {metrics_us:.3} µs, that is");
    for (name, us) in &untraced_us {
        println!("  {:<56} {:>9.3}× its dispatch", name, metrics_us / us);
    }
    summary.insert("metrics_us_per_event".into(), serde_json::json!(metrics_us));
    otel_rt.block_on(traces.shutdown());
    println!(
        "tracing on: {} spans made in the summary runs (2 per event, criterion's not counted), \
         {} received by the OTLP receiver over the whole run; the batch queue (2048) drops the \
         rest instead of slowing the events",
        traced_events * 2,
        received.load(Ordering::Relaxed)
    );
    println!("SUMMARY {}", serde_json::Value::Object(summary));
}

/// The per-event metric work of the pipeline (see `serve`, `attempt`,
/// `publish` and the readers), µs per event over 200,000 events.
fn metrics_per_event_us(stats: &weir_host::plugin::Stats) -> f64 {
    use weir_host::plugin::Stats;
    const N: u32 = 200_000;
    let start = Instant::now();
    for _ in 0..N {
        Stats::bump(&stats.received);
        Stats::bump_gauge(&stats.queued);
        Stats::drop_gauge(&stats.queued);
        let running = Stats::up(&stats.in_flight);
        let attempt = Instant::now();
        stats.attempt_seconds.observe(black_box(attempt.elapsed()));
        let confirm = Instant::now();
        stats.confirm_seconds.observe(black_box(confirm.elapsed()));
        Stats::add(&stats.outputs_published, 1);
        Stats::bump(&stats.succeeded);
        drop(running);
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(N)
}
