//! What the benchmarks share: the repository root, the event they send, the
//! work they time, a nats-server to time it against, their `WEIR_BENCH_*`
//! settings and how runs are summed up (median, min, max).

// Each benchmark uses some of these.
#![allow(dead_code)]

use std::path::PathBuf;

use weir_host::event::Event;
use weir_host::pipeline::{self, Outcome};
use weir_host::plugin::Plugin;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A small JSON event with one header.
pub fn event(subject: &str) -> Event {
    Event {
        id: "bench-1".into(),
        subject: subject.into(),
        payload: bytes::Bytes::from_static(
            b"{\"n\":1,\"payload\":\"0123456789abcdef0123456789abcdef\"}",
        ),
        headers: vec![("trace-id".into(), "abc".into())],
        reply_to: None,
        attempt: 1,
        principal: None,
    }
}

/// The work measured: one attempt, the decision, the output ids.
pub async fn dispatch(plugin: &Plugin, event: &Event) -> usize {
    match pipeline::attempt(plugin, event).await.outcome {
        Outcome::Done(mut outputs) => {
            pipeline::stamp_outputs(event, &mut outputs);
            outputs.len()
        }
        other => panic!("benchmark handler failed: {other:?}"),
    }
}

/// [`dispatch`] with the pipeline's trace hooks, in the order `serve` runs
/// them: the event's `process` span, the attempt's span, the trace context
/// written on the outputs, the end of the `process` span. With the plugin's
/// tracing off these only pass an incoming `traceparent` on.
pub async fn dispatch_traced(plugin: &Plugin, event: &Event) -> usize {
    let mut trace = pipeline::EventTrace::begin(&plugin.tracing, event);
    let span = trace.attempt(event.attempt);
    let pipeline::Attempt { outcome, logs } = pipeline::attempt(plugin, event).await;
    trace.attempt_ended(span, &outcome, &logs, false);
    match outcome {
        Outcome::Done(mut outputs) => {
            pipeline::stamp_outputs(event, &mut outputs);
            trace.stamp_all(event, &mut outputs);
            trace.end(event, pipeline::Finish::Settled(pipeline::Settle::Done));
            outputs.len()
        }
        other => panic!("benchmark handler failed: {other:?}"),
    }
}

/// The setting `name` from the environment, or `default` when it is unset
/// or does not parse.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median, min and max of `values`; NaN for none.
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// A nats-server with JetStream on a port it picks itself, killed on drop.
pub struct Server {
    child: std::process::Child,
    pub url: String,
    _store: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is killed and reaped by `Server`'s Drop.
#[allow(clippy::zombie_processes)]
pub fn start_server() -> Server {
    use std::time::{Duration, Instant};
    let store = tempfile::tempdir().expect("store");
    let child = std::process::Command::new(weir_host::dev::nats_server_binary())
        .args(["--jetstream", "--addr", "127.0.0.1", "--port", "-1"])
        .arg("--store_dir")
        .arg(store.path())
        .arg("--ports_file_dir")
        .arg(store.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server (scripts/setup.sh installs it)");
    let ports = store
        .path()
        .join(format!("nats-server_{}.ports", child.id()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(url) = std::fs::read_to_string(&ports)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["nats"][0].as_str().map(str::to_owned))
        {
            return Server {
                child,
                url,
                _store: store,
            };
        }
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Store `n` messages, the `i`th on `subject(i)`, pipelined in rounds of
/// 1,000 (async-nats keeps at most 5,000 acks pending).
pub async fn fill(
    js: &async_nats::jetstream::Context,
    n: usize,
    subject: impl Fn(usize) -> String,
    payload: bytes::Bytes,
) {
    let mut acks = Vec::with_capacity(1000);
    for i in 0..n {
        acks.push(
            js.publish(subject(i), payload.clone())
                .await
                .expect("publish"),
        );
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

async fn stored(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("the output stream");
    stream.info().await.expect("stream info").state.messages
}

/// Events/s from the first message stored in `stream` to the `n`th: what a
/// consumer sustains, its start-up (connect, compile, consumer creation)
/// left out. Counts are polled every 5 ms.
pub async fn stored_per_second(js: &async_nats::jetstream::Context, stream: &str, n: usize) -> f64 {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(600);
    let (first, since) = loop {
        let count = stored(js, stream).await;
        if count > 0 {
            break (count, Instant::now());
        }
        assert!(Instant::now() < deadline, "benchmark stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut count = first;
    while count < n as u64 {
        assert!(Instant::now() < deadline, "benchmark stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
        count = stored(js, stream).await;
    }
    let elapsed = since.elapsed().as_secs_f64().max(1e-6);
    (n as u64).saturating_sub(first).max(1) as f64 / elapsed
}
