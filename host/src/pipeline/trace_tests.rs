//! An event's spans and the trace context written on what it leads to,
//! through a real SDK provider whose spans are collected in memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

use super::*;
use crate::event::LogLevel;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("lock").extend(batch);
        Ok(())
    }
}

fn traced(spans: &Collect) -> (SdkTracerProvider, PluginTracing) {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let tracing = PluginTracing(Some(Box::new(On {
        tracer: provider.tracer("test"),
        plugin: shared("relay"),
        attempt_name: "attempt relay".into(),
        subscriptions: vec![Traced {
            pattern: "in.>".into(),
            template: shared("in.>"),
            span_name: "process in.>".into(),
            group: Some(shared("workers")),
        }],
    })));
    (provider, tracing)
}

fn event(headers: &[(&str, &str)]) -> Event {
    Event {
        id: "IN:7".into(),
        subject: "in.a".into(),
        payload: bytes::Bytes::from_static(b"hello"),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        reply_to: None,
        attempt: 1,
        principal: None,
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key)
        .map(|v| v.as_str().into_owned())
        .unwrap_or_else(|| panic!("{}: no attribute {key}", span.name))
}

#[test]
fn off_passes_the_incoming_context_on_unchanged() {
    let off = PluginTracing::off();
    let e = event(&[("TraceParent", PARENT), ("tracestate", "a=1")]);
    let trace = EventTrace::begin(&off, &e);
    let mut echoed = vec![("traceparent".to_owned(), "00-junk".to_owned())];
    trace.stamp(&e, &mut echoed);
    assert_eq!(
        echoed,
        vec![
            ("traceparent".into(), PARENT.into()),
            ("tracestate".into(), "a=1".into())
        ]
    );

    // None came: a handler's own headers are left alone.
    let bare = event(&[]);
    let trace = EventTrace::begin(&off, &bare);
    let mut own = vec![("tracestate".to_owned(), "mine=1".to_owned())];
    trace.stamp(&bare, &mut own);
    assert_eq!(own, vec![("tracestate".to_owned(), "mine=1".to_owned())]);

    // A traceparent without tracestate takes a handler's stale one away.
    let e = event(&[("traceparent", PARENT)]);
    let mut stale = vec![("tracestate".to_owned(), "old=1".to_owned())];
    EventTrace::begin(&off, &e).stamp(&e, &mut stale);
    assert_eq!(stale, vec![("traceparent".to_owned(), PARENT.to_owned())]);
}

#[test]
fn process_span_continues_the_incoming_trace_and_parents_the_outputs() {
    let spans = Collect::default();
    let (_provider, tracing) = traced(&spans);
    let e = event(&[("traceparent", PARENT), ("tracestate", "vendor=x")]);
    let mut trace = EventTrace::begin(&tracing, &e);
    let span = trace.attempt(1);
    let logs = [LogLine {
        level: LogLevel::Info,
        text: "relayed".into(),
    }];
    trace.attempt_ended(span, &Outcome::Done(vec![]), &logs, false);
    let mut out = vec![Message {
        subject: "out.a".into(),
        payload: Default::default(),
        headers: vec![("traceparent".into(), PARENT.into())],
    }];
    trace.stamp_all(&e, &mut out);
    trace.end(&e, Finish::Settled(Settle::Done));

    let spans = spans.0.lock().expect("lock").clone();
    let process = spans
        .iter()
        .find(|s| s.name == "process in.>")
        .expect("process span");
    let attempt = spans
        .iter()
        .find(|s| s.name == "attempt relay")
        .expect("attempt span");
    let incoming = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
    assert_eq!(process.span_context.trace_id(), incoming);
    assert_eq!(
        process.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").expect("hex")
    );
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(attempt.parent_span_id, process.span_context.span_id());
    assert_eq!(attempt.span_context.trace_id(), incoming);
    assert_eq!(text(process, "messaging.system"), "nats");
    assert_eq!(text(process, "messaging.destination.name"), "in.a");
    assert_eq!(text(process, "messaging.destination.template"), "in.>");
    assert_eq!(text(process, "messaging.consumer.group.name"), "workers");
    assert_eq!(text(process, "messaging.message.id"), "IN:7");
    assert_eq!(text(process, "messaging.operation.type"), "process");
    assert_eq!(text(process, "weir.plugin"), "relay");
    assert_eq!(text(process, "weir.outcome"), "done");
    assert!(attribute(process, "error.type").is_none());
    assert_eq!(text(attempt, "weir.decision"), "ok");
    assert_eq!(attempt.events.events.len(), 1);
    assert_eq!(attempt.events.events[0].name, "relayed");

    // The output's traceparent now names the process span, one value only.
    let parents: Vec<_> = out[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "traceparent")
        .collect();
    assert_eq!(parents.len(), 1, "{:?}", out[0].headers);
    let expected = format!(
        "00-{}-{}-01",
        process.span_context.trace_id(),
        process.span_context.span_id()
    );
    assert_eq!(parents[0].1, expected);
    assert_eq!(header(&out[0].headers, "tracestate"), Some("vendor=x"));
}

#[test]
fn retries_are_attempt_spans_and_a_dead_letter_names_the_kind() {
    let spans = Collect::default();
    let (_provider, tracing) = traced(&spans);
    let mut e = event(&[]);
    let mut trace = EventTrace::begin(&tracing, &e);
    let failure = Failure::new(FailureKind::Retry, "later");
    let span = trace.attempt(1);
    let retry = Outcome::Retry {
        delay: Duration::from_millis(1),
        failure: failure.clone(),
    };
    trace.attempt_ended(span, &retry, &[], false);
    e.attempt = 2;
    let span = trace.attempt(2);
    trace.attempt_ended(span, &Outcome::DeadLetter(failure.clone()), &[], false);
    let mut letter = vec![];
    trace.stamp(&e, &mut letter);
    trace.end(
        &e,
        Finish::DeadLettered {
            failure: &failure,
            stored: true,
        },
    );

    let spans = spans.0.lock().expect("lock").clone();
    let process = spans
        .iter()
        .find(|s| s.name == "process in.>")
        .expect("process");
    // No incoming context: a new root.
    assert_eq!(process.parent_span_id, SpanId::INVALID);
    assert_eq!(text(process, "error.type"), "retry-exhausted");
    assert_eq!(text(process, "weir.outcome"), "dead-lettered");
    assert_eq!(
        attribute(process, "weir.attempts"),
        Some(&opentelemetry::Value::I64(2))
    );
    assert!(matches!(process.status, Status::Error { .. }));
    let mut attempts: Vec<_> = spans.iter().filter(|s| s.name == "attempt relay").collect();
    attempts.sort_by_key(|s| s.start_time);
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .all(|a| a.parent_span_id == process.span_context.span_id())
    );
    assert_eq!(text(attempts[0], "weir.decision"), "retry");
    assert_eq!(text(attempts[1], "weir.decision"), "dead-letter");
    assert_eq!(text(attempts[1], "error.type"), "retry");
    let parent = header(&letter, "traceparent").expect("the dead letter's traceparent");
    assert!(
        parent.contains(&process.span_context.span_id().to_string()),
        "{parent}"
    );
    assert_eq!(
        header(&letter, "tracestate"),
        None,
        "empty tracestate left out"
    );
}

#[test]
fn an_unsampled_parent_is_kept_unsampled_and_still_propagated() {
    let spans = Collect::default();
    let (_provider, tracing) = traced(&spans);
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let e = event(&[("traceparent", unsampled)]);
    let trace = EventTrace::begin(&tracing, &e);
    let mut out = vec![];
    trace.stamp(&e, &mut out);
    trace.end(&e, Finish::Settled(Settle::Done));
    assert!(spans.0.lock().expect("lock").is_empty(), "nothing exported");
    let parent = header(&out, "traceparent").expect("propagated");
    assert!(
        parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{parent}"
    );
    assert!(
        parent.ends_with("-00") && !parent.contains("00f067aa0ba902b7"),
        "{parent}"
    );
}

#[test]
fn set_header_keeps_one_value_in_place() {
    let mut h: Headers = vec![
        ("a".into(), "1".into()),
        ("TRACEPARENT".into(), "x".into()),
        ("b".into(), "2".into()),
        ("traceparent".into(), "y".into()),
    ];
    set_header(&mut h, "traceparent", Some("z"));
    assert_eq!(
        h,
        vec![
            ("a".to_owned(), "1".to_owned()),
            ("TRACEPARENT".to_owned(), "z".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ]
    );
    set_header(&mut h, "traceparent", None);
    assert_eq!(h.len(), 2);
}
