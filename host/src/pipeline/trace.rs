//! An event's trace, W3C trace context in and out.
//!
//! With export on ([`Traces`] built from `[telemetry] otlp_endpoint`), each
//! event the pipeline takes gets a span `process <subscription pattern>`
//! (kind consumer, OpenTelemetry messaging conventions) whose parent is the
//! `traceparent`/`tracestate` on the event's headers, or a new trace (sampled
//! by `sample_ratio`) when there is none; a child span per attempt carries the
//! attempt number, the failure kind, the decision that followed and the
//! guest's log lines (as span events). Every output, reply and dead letter
//! gets a `traceparent` naming the `process` span, so the next consumer
//! continues the trace.
//!
//! On JetStream each delivery is its own `process` span (a retry is a nak and
//! a redelivery); they are siblings under the producer's span. On core NATS,
//! in-process retries are attempt spans under the one `process` span.
//!
//! With export off no span is made: an incoming `traceparent`/`tracestate`
//! is copied onto the outputs, reply and dead letter as it came, so a
//! downstream tracer still links to the upstream one; nothing is added when
//! there was none.
//!
//! Propagation is the SDK's [`TraceContextPropagator`] over weir's header
//! vectors ([`HeadersIn`], [`HeadersOut`]); no traceparent is parsed here.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};

use super::Outcome;
use super::serve::Settle;
use crate::event::{Event, Failure, FailureKind, Headers, LogLine, Message, header};
use crate::telemetry::traces::Traces;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Longest span status description; a handler's failure message is cut.
const MAX_STATUS: usize = 1024;

/// One plugin's tracing: off, or the tracer and its span names, computed
/// once per plugin.
#[derive(Default)]
pub struct PluginTracing(Option<Box<On>>);

struct On {
    tracer: SdkTracer,
    /// The plugin's name, as an attribute value (cloning it is an `Arc` clone).
    plugin: Value,
    /// `attempt <plugin>`.
    attempt_name: String,
    subscriptions: Vec<Traced>,
}

/// What the spans of one subscription's events say.
struct Traced {
    pattern: String,
    /// `pattern` as an attribute value.
    template: Value,
    /// `process <pattern>`.
    span_name: String,
    /// The queue group (core) or durable consumer (JetStream), if any.
    group: Option<Value>,
}

impl PluginTracing {
    /// Off: no spans, incoming trace context passed through.
    pub fn off() -> Self {
        Self(None)
    }

    /// Spans through `traces` (off when it is off), for a plugin's
    /// subscriptions given as (subject pattern, consumer group).
    pub fn new(
        traces: &Traces,
        plugin: &str,
        subscriptions: impl IntoIterator<Item = (String, Option<String>)>,
    ) -> Self {
        let Some(tracer) = traces.tracer() else {
            return Self::off();
        };
        Self(Some(Box::new(On {
            tracer: tracer.clone(),
            plugin: shared(plugin),
            attempt_name: format!("attempt {plugin}"),
            subscriptions: subscriptions
                .into_iter()
                .map(|(pattern, group)| Traced {
                    span_name: format!("process {pattern}"),
                    template: shared(&pattern),
                    pattern,
                    group: group.as_deref().map(shared),
                })
                .collect(),
        })))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }
}

impl On {
    /// The subscription an event came through: the first whose pattern
    /// matches its subject (the transport does not say which).
    fn subscription(&self, subject: &str) -> Option<&Traced> {
        self.subscriptions
            .iter()
            .find(|s| crate::event::subject_matches(&s.pattern, subject))
    }
}

/// How an event's run here ended, for its `process` span.
#[derive(Debug, Clone, Copy)]
pub enum Finish<'f> {
    Settled(Settle),
    /// Held while the circuit is open; it runs again later (another span).
    Held,
    /// A final failure; `stored`: whether its dead letter was.
    DeadLettered {
        failure: &'f Failure,
        stored: bool,
    },
}

/// The trace of one event's run: its `process` span, when tracing is on.
pub struct EventTrace<'p> {
    on: Option<Active<'p>>,
}

struct Active<'p> {
    tracing: &'p On,
    /// Holds the `process` span: the parent of the attempts and of what is
    /// published.
    cx: Context,
    /// The kind of the newest failed attempt, for the `process` span's
    /// `error.type` when the run ends in a retry.
    last_failure: Option<FailureKind>,
    /// Core NATS: outputs that could not be published (the event is done).
    unpublished: bool,
}

/// One attempt's span, when it is recorded. Boxed: it is held across the
/// attempt, and an unboxed span would grow every event's future by the size
/// of a span's data, traced or not.
pub struct AttemptTrace(Option<Box<SdkSpan>>);

impl<'p> EventTrace<'p> {
    /// Start the `process` span of `event` (nothing when tracing is off).
    pub fn begin(tracing: &'p PluginTracing, event: &Event) -> Self {
        let Some(on) = tracing.0.as_deref() else {
            return Self { on: None };
        };
        let parent = TraceContextPropagator::new().extract(&HeadersIn(&event.headers));
        let sub = on.subscription(&event.subject);
        let name = sub.map_or_else(|| "process".to_owned(), |s| s.span_name.clone());
        let mut span = on
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Consumer)
            .start_with_context(&on.tracer, &parent);
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", event.subject.clone()),
                KeyValue::new("messaging.message.id", event.id.clone()),
                KeyValue::new(
                    "messaging.message.body.size",
                    i64::try_from(event.payload.len()).unwrap_or(i64::MAX),
                ),
                KeyValue::new("weir.plugin", on.plugin.clone()),
            ]);
            if let Some(sub) = sub {
                span.set_attribute(KeyValue::new(
                    "messaging.destination.template",
                    sub.template.clone(),
                ));
                if let Some(group) = &sub.group {
                    span.set_attribute(KeyValue::new(
                        "messaging.consumer.group.name",
                        group.clone(),
                    ));
                }
            }
        }
        Self {
            on: Some(Active {
                tracing: on,
                cx: parent.with_span(span),
                last_failure: None,
                unpublished: false,
            }),
        }
    }

    /// Start the span of attempt number `attempt`. None under a `process`
    /// span that is not recorded: the sampler is parent-based, so its
    /// children would not be either.
    pub fn attempt(&self, attempt: u32) -> AttemptTrace {
        let Some(active) = self.on.as_ref().filter(|a| a.cx.span().is_recording()) else {
            return AttemptTrace(None);
        };
        let on = active.tracing;
        let mut span = on
            .tracer
            .span_builder(on.attempt_name.clone())
            .with_kind(SpanKind::Internal)
            .start_with_context(&on.tracer, &active.cx);
        span.set_attribute(KeyValue::new("weir.attempt", i64::from(attempt)));
        AttemptTrace(Some(Box::new(span)))
    }

    /// End an attempt's span with what it decided (`held`: the circuit
    /// holds the event instead) and the guest's log lines as events.
    pub fn attempt_ended(
        &mut self,
        span: AttemptTrace,
        outcome: &Outcome,
        logs: &[LogLine],
        held: bool,
    ) {
        let Some(mut span) = span.0 else { return };
        let (decision, failure) = match outcome {
            Outcome::Done(_) => ("ok", None),
            Outcome::Retry { failure, .. } => ("retry", Some(failure)),
            Outcome::DeadLetter(failure) => ("dead-letter", Some(failure)),
        };
        if let Some(active) = &mut self.on {
            active.last_failure = failure.map(|f| f.kind);
        }
        if span.is_recording() {
            for line in logs {
                span.add_event(
                    line.text.clone(),
                    vec![KeyValue::new("level", line.level.as_str())],
                );
            }
            span.set_attribute(KeyValue::new(
                "weir.decision",
                if held { "held" } else { decision },
            ));
            if let Some(failure) = failure {
                span.set_attribute(KeyValue::new("error.type", failure.kind.as_str()));
                span.set_status(Status::error(cut(&failure.message)));
            }
        }
        span.end();
    }

    /// Core NATS: the outputs could not be published (the event is done).
    pub fn outputs_unpublished(&mut self) {
        if let Some(active) = &mut self.on {
            active.unpublished = true;
        }
    }

    /// Write the trace context on a message `event` led to: the `process`
    /// span's, or (tracing off) the event's own, as it came.
    pub fn stamp(&self, event: &Event, headers: &mut Headers) {
        match &self.on {
            Some(active) if active.cx.span().span_context().is_valid() => {
                TraceContextPropagator::new().inject_context(&active.cx, &mut HeadersOut(headers))
            }
            _ => pass_through(&event.headers, headers),
        }
    }

    /// [`stamp`](Self::stamp) every output (and the reply among them).
    pub fn stamp_all(&self, event: &Event, outputs: &mut [Message]) {
        for msg in outputs {
            self.stamp(event, &mut msg.headers);
        }
    }

    /// Whether [`stamp`](Self::stamp) may change a message carrying the
    /// event's own headers (a dead letter): only when tracing is on.
    pub fn rewrites(&self) -> bool {
        self.on.is_some()
    }

    /// End the `process` span with how the run ended.
    pub fn end(self, event: &Event, finish: Finish<'_>) {
        let Some(active) = self.on else { return };
        let span = active.cx.span();
        if span.is_recording() {
            let retried = active.last_failure.map_or("retry", FailureKind::as_str);
            let (outcome, error): (&str, Option<(&str, Option<&str>)>) = match finish {
                Finish::Settled(Settle::Done) if active.unpublished => {
                    ("outputs-unpublished", Some(("outputs-unpublished", None)))
                }
                Finish::Settled(Settle::Done) => ("done", None),
                Finish::Settled(Settle::Retry(_)) => ("retry", Some((retried, None))),
                Finish::Settled(Settle::Unfinished(_)) => {
                    ("outputs-unconfirmed", Some(("outputs-unconfirmed", None)))
                }
                Finish::Settled(Settle::HandBack) => ("handed-back", None),
                Finish::Settled(Settle::DeadLettered) => ("dead-lettered", None),
                Finish::Held => ("held", Some((retried, None))),
                Finish::DeadLettered { failure, stored } => (
                    if stored {
                        "dead-lettered"
                    } else {
                        "dead-letter-unstored"
                    },
                    Some((
                        failure.kind.dead_letter_kind(),
                        Some(failure.message.as_str()),
                    )),
                ),
            };
            span.set_attribute(KeyValue::new("weir.outcome", outcome));
            span.set_attribute(KeyValue::new("weir.attempts", i64::from(event.attempt)));
            if let Some((kind, message)) = error {
                span.set_attribute(KeyValue::new("error.type", kind));
                span.set_status(Status::error(cut(message.unwrap_or(kind))));
            }
        }
        span.end();
    }
}

/// Tracing off: the event's `traceparent` (and its `tracestate`, or none)
/// onto `out`, unchanged; `out` untouched when the event had none.
fn pass_through(event: &[(String, String)], out: &mut Headers) {
    let Some(parent) = header(event, TRACEPARENT) else {
        return;
    };
    let state = header(event, TRACESTATE).filter(|s| !s.is_empty());
    // A handler that copied the event's headers left them as they should be.
    if header(out, TRACEPARENT) == Some(parent) && header(out, TRACESTATE) == state {
        return;
    }
    set_header(out, TRACEPARENT, Some(parent));
    set_header(out, TRACESTATE, state);
}

/// Give `name` one value (or none): the first occurrence keeps its place,
/// others (any case) are removed.
fn set_header(headers: &mut Headers, name: &str, value: Option<&str>) {
    let mut kept = false;
    headers.retain_mut(|(k, v)| {
        if !k.eq_ignore_ascii_case(name) {
            return true;
        }
        match value {
            Some(value) if !kept => {
                kept = true;
                value.clone_into(v);
                true
            }
            _ => false,
        }
    });
    if !kept && let Some(value) = value {
        headers.push((name.to_owned(), value.to_owned()));
    }
}

/// An attribute value made once and shared by every span.
fn shared(text: &str) -> Value {
    Value::String(StringValue::from(std::sync::Arc::<str>::from(text)))
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_STATUS {
        return text.to_owned();
    }
    let mut end = MAX_STATUS;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [cut]", &text[..end])
}

/// An event's headers as the propagator reads them (names in any case).
pub struct HeadersIn<'a>(pub &'a [(String, String)]);

impl Extractor for HeadersIn<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        header(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// A message's headers as the propagator writes them: one value per name,
/// an empty `tracestate` left out.
pub struct HeadersOut<'a>(pub &'a mut Headers);

impl Injector for HeadersOut<'_> {
    fn set(&mut self, key: &str, value: String) {
        set_header(self.0, key, Some(value.as_str()).filter(|v| !v.is_empty()));
    }
}

#[cfg(test)]
#[path = "trace_tests.rs"]
mod tests;
