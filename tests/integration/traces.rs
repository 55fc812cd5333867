//! Issue 11: W3C trace context across NATS hops, and spans over OTLP. A real
//! OTLP/HTTP receiver (axum on 127.0.0.1:0, `POST /v1/traces`, protobuf
//! decoded with the opentelemetry-proto types) takes the host's spans; a
//! plain async-nats client publishes with a known `traceparent` and reads it
//! back on the outputs, the reply and the dead letter.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status};
use prost::Message as _;
use weir_host::host::Host;

use crate::support::*;

/// One span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: Option<String>,
    span: Span,
}

/// An OTLP/HTTP traces receiver, stopped on drop.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("its address");
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(accept))
            .with_state(spans.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        });
        Self { addr, spans, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Wait until the spans received satisfy `done`; all of them.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let spans = self.spans.lock().expect("lock").clone();
            if done(&spans) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver never got {what}; it got:\n{:#?}",
                spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    State(spans): State<Arc<Mutex<Vec<Received>>>>,
    body: axum::body::Bytes,
) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = spans.lock().expect("lock");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| string(&r.attributes, "service.name"));
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    StatusCode::OK
}

fn value(attributes: &[KeyValue], key: &str) -> Option<any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s),
        other => panic!("{key}: not a string: {other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> String {
    string(&span.attributes, key).unwrap_or_else(|| panic!("{}: no {key}", span.name))
}

fn int(span: &Span, key: &str) -> i64 {
    match value(&span.attributes, key) {
        Some(any_value::Value::IntValue(n)) => n,
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

/// A `traceparent` with these ids, sampled.
fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

/// (trace id, parent span id) of a received message's `traceparent`.
fn parent_of(msg: &async_nats::Message) -> (String, String) {
    let value = header(msg, "traceparent")
        .unwrap_or_else(|| panic!("{}: no traceparent: {:?}", msg.subject, msg.headers));
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn headers(traceparent: &str, tracestate: Option<&str>) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("traceparent", traceparent);
    if let Some(state) = tracestate {
        h.insert("tracestate", state);
    }
    h
}

/// The spans of one trace, by id (hex).
fn of_trace<'a>(spans: &'a [Received], trace: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| hex::encode(&s.span.trace_id) == trace)
        .collect()
}

/// The one `process` span of a trace, and the attempt spans under it.
fn process_and_attempts<'a>(spans: &'a [Received], trace: &str) -> (&'a Span, Vec<&'a Span>) {
    let all = of_trace(spans, trace);
    let process: Vec<_> = all
        .iter()
        .filter(|s| s.span.kind == SpanKind::Consumer as i32)
        .collect();
    assert_eq!(
        process.len(),
        1,
        "one process span in trace {trace}: {all:#?}"
    );
    let process = &process[0].span;
    let attempts = all
        .iter()
        .map(|s| &s.span)
        .filter(|s| s.parent_span_id == process.span_id)
        .collect();
    (process, attempts)
}

const ECHO: (&str, &str) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
const REQUEST: (&str, &str) = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174");
const REJECT: (&str, &str) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
const ORDER: (&str, &str) = ("a3ce929d0e0e47364bf92f3577b34da6", "53995c3f42cd8ad8");

/// Export on: each event's `process` span is the child of the producer's
/// span, its attempts are its children, and what it published (output,
/// reply, dead letter) names it as parent, with the same trace id. Core and
/// JetStream subscriptions; the guest's log line is a span event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_producers_trace_onto_outputs_replies_and_dead_letters() {
    let receiver = Receiver::start().await;
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ORDERS", &["orders.created.>"]).await;
    let bundles = [bundle("echo"), bundle("reject"), bundle("enrich-order")];
    let mut config = host_config(&server, &bundles);
    config.telemetry.otlp_endpoint = Some(receiver.endpoint());
    config.telemetry.service_name = "weir-traces-test".into();
    let host = Host::start(&config).await.expect("host starts");

    let mut echoed = client.subscribe("demo.echoed.>").await.expect("subscribe");
    let mut enriched = client
        .subscribe("orders.enriched.>")
        .await
        .expect("subscribe");
    let mut dlq = client.subscribe("weir.dlq.>").await.expect("subscribe");
    client.flush().await.expect("flush");

    let publish = |subject: &'static str, ids: (&str, &str), state: Option<&str>, body: Vec<u8>| {
        let h = headers(&traceparent(ids.0, ids.1), state);
        let client = client.clone();
        async move {
            client
                .publish_with_headers(subject, h, body.into())
                .await
                .expect("publish");
        }
    };
    publish("demo.echo.t", ECHO, Some("vendor=1"), b"hi".to_vec()).await;
    publish("test.reject", REJECT, None, b"no".to_vec()).await;
    let order = serde_json::json!({"id": "o-1", "customer": "c-9",
        "items": [{"sku": "A", "qty": 2, "unit_price": 12.5}]});
    publish(
        "orders.created.eu",
        ORDER,
        None,
        serde_json::to_vec(&order).expect("json"),
    )
    .await;
    let reply = tokio::time::timeout(
        PATIENCE,
        client.request_with_headers(
            "demo.echo.r",
            headers(&traceparent(REQUEST.0, REQUEST.1), None),
            "ask".into(),
        ),
    )
    .await
    .expect("answered within PATIENCE")
    .expect("a reply");

    let outputs = collect(&mut echoed, 2).await;
    let output = outputs
        .iter()
        .find(|m| m.subject.as_str() == "demo.echoed.t")
        .expect("the echo");
    let dead = collect(&mut dlq, 1).await;
    let priced = collect(&mut enriched, 1).await;
    // Stopping flushes the spans still queued.
    host.stop().await.expect("clean stop");
    let spans = receiver
        .wait_for("the process spans of four events", |spans| {
            [ECHO, REQUEST, REJECT, ORDER].iter().all(|(trace, _)| {
                of_trace(spans, trace)
                    .iter()
                    .any(|s| s.span.kind == SpanKind::Consumer as i32)
            })
        })
        .await;
    assert!(
        spans
            .iter()
            .all(|s| s.service.as_deref() == Some("weir-traces-test")),
        "service.name from [telemetry]"
    );

    // Core, with the incoming tracestate: the echo copies the event's
    // headers, and weir replaces its traceparent with the process span's.
    let (process, attempts) = process_and_attempts(&spans, ECHO.0);
    assert_eq!(process.name, "process demo.echo.>");
    assert_eq!(hex::encode(&process.parent_span_id), ECHO.1);
    assert_eq!(
        parent_of(output),
        (ECHO.0.to_owned(), hex::encode(&process.span_id))
    );
    assert_eq!(header(output, "tracestate").as_deref(), Some("vendor=1"));
    assert_eq!(attr(process, "messaging.system"), "nats");
    assert_eq!(attr(process, "messaging.destination.name"), "demo.echo.t");
    assert_eq!(
        attr(process, "messaging.destination.template"),
        "demo.echo.>"
    );
    assert_eq!(attr(process, "messaging.operation.type"), "process");
    assert!(!attr(process, "messaging.message.id").is_empty());
    assert!(
        value(&process.attributes, "messaging.consumer.group.name").is_none(),
        "no queue group"
    );
    assert_eq!(attr(process, "weir.plugin"), "echo");
    assert_eq!(attr(process, "weir.outcome"), "done");
    assert_eq!(int(process, "weir.attempts"), 1);
    assert!(value(&process.attributes, "error.type").is_none());
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].name, "attempt echo");
    assert_eq!(int(attempts[0], "weir.attempt"), 1);
    assert_eq!(attr(attempts[0], "weir.decision"), "ok");

    // The reply to a request.
    let (process, _) = process_and_attempts(&spans, REQUEST.0);
    assert_eq!(hex::encode(&process.parent_span_id), REQUEST.1);
    assert_eq!(
        parent_of(&reply),
        (REQUEST.0.to_owned(), hex::encode(&process.span_id))
    );

    // A dead letter: the failure kind on both spans.
    let (process, attempts) = process_and_attempts(&spans, REJECT.0);
    assert_eq!(dead[0].subject.as_str(), "weir.dlq.reject");
    assert_eq!(hex::encode(&process.parent_span_id), REJECT.1);
    assert_eq!(
        parent_of(&dead[0]),
        (REJECT.0.to_owned(), hex::encode(&process.span_id))
    );
    assert_eq!(attr(process, "error.type"), "reject");
    assert_eq!(attr(process, "weir.outcome"), "dead-lettered");
    assert_eq!(
        process.status.as_ref().map(|s| s.code),
        Some(status::StatusCode::Error as i32)
    );
    assert_eq!(attempts.len(), 1);
    assert_eq!(attr(attempts[0], "error.type"), "reject");
    assert_eq!(attr(attempts[0], "weir.decision"), "dead-letter");

    // JetStream: the durable is the consumer group; the log line an event.
    let (process, attempts) = process_and_attempts(&spans, ORDER.0);
    assert_eq!(process.name, "process orders.created.>");
    assert_eq!(hex::encode(&process.parent_span_id), ORDER.1);
    assert_eq!(
        parent_of(&priced[0]),
        (ORDER.0.to_owned(), hex::encode(&process.span_id))
    );
    assert!(
        attr(process, "messaging.consumer.group.name").starts_with("weir-enrich-order-"),
        "{process:#?}"
    );
    assert_eq!(attempts.len(), 1);
    assert!(
        attempts[0]
            .events
            .iter()
            .any(|e| e.name.starts_with("order o-1:")),
        "the guest's log line as a span event: {:#?}",
        attempts[0].events
    );
}

/// Export off: no spans, and the incoming `traceparent`/`tracestate` reach
/// the output and the dead letter unchanged, even from a handler that builds
/// its output from scratch; an event without one gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_export_the_incoming_trace_context_passes_through() {
    let server = NatsServer::start();
    let client = server.client().await;
    let config = host_config(&server, &[bundle("relay"), bundle("reject")]);
    assert!(config.telemetry.otlp_endpoint.is_none());
    let host = Host::start(&config).await.expect("host starts");
    let mut out = client.subscribe("out.>").await.expect("subscribe");
    let mut dlq = client.subscribe("weir.dlq.>").await.expect("subscribe");
    client.flush().await.expect("flush");

    let traced = traceparent(ECHO.0, ECHO.1);
    client
        .publish_with_headers("in.a", headers(&traced, Some("vendor=1")), "x".into())
        .await
        .expect("publish");
    client.publish("in.b", "y".into()).await.expect("publish");
    let rejected = traceparent(REJECT.0, REJECT.1);
    client
        .publish_with_headers("test.reject", headers(&rejected, None), "no".into())
        .await
        .expect("publish");

    let relayed = collect(&mut out, 2).await;
    let a = relayed
        .iter()
        .find(|m| m.subject.as_str() == "out.a")
        .expect("out.a");
    let b = relayed
        .iter()
        .find(|m| m.subject.as_str() == "out.b")
        .expect("out.b");
    assert_eq!(header(a, "traceparent"), Some(traced));
    assert_eq!(header(a, "tracestate").as_deref(), Some("vendor=1"));
    assert_eq!(header(b, "traceparent"), None);
    assert_eq!(header(b, "tracestate"), None);
    let dead = collect(&mut dlq, 1).await;
    assert_eq!(header(&dead[0], "traceparent"), Some(rejected));
    host.stop().await.expect("clean stop");
}

/// `weir up` with a batch delay of an hour: the spans can only reach the
/// collector through the flush at SIGTERM, after the events finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_up_exports_its_last_spans_when_stopped() {
    let receiver = Receiver::start().await;
    let server = NatsServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::jetstream::write_config(&server, dir.path(), &bundle("echo"));
    let mut text = std::fs::read_to_string(&config).expect("read weir.toml");
    text.push_str(&format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"weir-up\"\n",
        receiver.endpoint()
    ));
    std::fs::write(&config, text).expect("write weir.toml");
    let mut weir = WeirProcess::start(
        &["up", "--config", config.to_str().expect("utf-8 path")],
        &[("OTEL_BSP_SCHEDULE_DELAY", "3600000")],
    );
    weir.wait_for_output("weir is up");
    let mut echoed = client.subscribe("demo.echoed.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    client
        .publish_with_headers(
            "demo.echo.x",
            headers(&traceparent(ECHO.0, ECHO.1), None),
            "x".into(),
        )
        .await
        .expect("publish");
    let output = collect(&mut echoed, 1).await;
    let (status, log) = weir.stop();
    assert!(status.success(), "graceful exit: {status:?}\n{log}");
    let spans = receiver
        .wait_for("the event's spans", |spans| {
            of_trace(spans, ECHO.0).len() >= 2
        })
        .await;
    let (process, attempts) = process_and_attempts(&spans, ECHO.0);
    assert_eq!(
        parent_of(&output[0]),
        (ECHO.0.to_owned(), hex::encode(&process.span_id))
    );
    assert_eq!(attempts.len(), 1);
    assert!(
        spans
            .iter()
            .all(|s| s.service.as_deref() == Some("weir-up"))
    );
}

/// A collector that is down: every event is handled and its output still
/// carries the trace context, the host stops cleanly, and the failed export
/// is one warning, not one per batch. (current_thread: the host's log lines
/// are captured.)
#[tokio::test]
async fn a_collector_that_is_down_fails_no_event() {
    let (logs, _guard) = capture_logs();
    // A port nobody listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let server = NatsServer::start();
    let client = server.client().await;
    let mut config = host_config(&server, &[bundle("echo")]);
    config.telemetry.otlp_endpoint = Some(format!("http://{closed}/v1/traces"));
    let host = Host::start(&config).await.expect("host starts");
    let mut echoed = client.subscribe("demo.echoed.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    const N: usize = 20;
    for i in 0..N {
        client
            .publish_with_headers(
                format!("demo.echo.{i}"),
                headers(&traceparent(ECHO.0, ECHO.1), None),
                "x".into(),
            )
            .await
            .expect("publish");
    }
    let outputs = collect(&mut echoed, N).await;
    assert!(outputs.iter().all(|m| parent_of(m).0 == ECHO.0));
    host.stop().await.expect("clean stop");
    logs.wait_for(&["traces: cannot export spans"]).await;
    let warned = logs
        .text()
        .lines()
        .filter(|l| l.contains("traces: cannot export spans"))
        .count();
    assert_eq!(warned, 1, "{}", logs.text());
}
