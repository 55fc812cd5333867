//! `weir test`: run a plugin against fixture events, in-process and without
//! NATS, under the same limits and isolation as `weir up`; compare with
//! expected outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::config::HostConfig;
use crate::event::{Event, Failure, Headers, Message};
use crate::pipeline::{self, Outcome};
use crate::plugin::Plugin;
use crate::sandbox::Runtime;

/// A fixture event, as written in a JSON file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub subject: String,
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub payload_json: Option<serde_json::Value>,
    #[serde(default)]
    pub payload_b64: Option<String>,
    #[serde(default)]
    pub headers: HeaderSpec,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Which attempt to simulate (1 = first delivery).
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
}

/// A payload given as text, as JSON, or as base64: at most one of the three.
fn payload_bytes(
    what: &str,
    text: &Option<String>,
    json: &Option<serde_json::Value>,
    b64: &Option<String>,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (text, json, b64) {
        (None, None, None) => Ok(None),
        (Some(text), None, None) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(json), None) => Ok(Some(serde_json::to_vec(json)?)),
        (None, None, Some(b64)) => Ok(Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .with_context(|| format!("{what}: payload_b64 is not base64"))?,
        )),
        _ => bail!("{what}: give one of payload, payload_json, payload_b64"),
    }
}

/// Headers as an object (`{"k": "v"}`, or `{"k": ["v1", "v2"]}`) or as pairs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderSpec {
    Map(BTreeMap<String, OneOrMany>),
    Pairs(Vec<(String, String)>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for HeaderSpec {
    fn default() -> Self {
        Self::Pairs(Vec::new())
    }
}

impl HeaderSpec {
    fn to_headers(&self) -> Headers {
        match self {
            Self::Pairs(pairs) => pairs.clone(),
            Self::Map(map) => map
                .iter()
                .flat_map(|(k, v)| match v {
                    OneOrMany::One(v) => vec![(k.clone(), v.clone())],
                    OneOrMany::Many(vs) => vs.iter().map(|v| (k.clone(), v.clone())).collect(),
                })
                .collect(),
        }
    }
}

/// What one event is expected to produce.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    #[serde(default)]
    pub outputs: Option<Vec<ExpectedMessage>>,
    #[serde(default)]
    pub failure: Option<ExpectedFailure>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedMessage {
    pub subject: String,
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub payload_json: Option<serde_json::Value>,
    #[serde(default)]
    pub payload_b64: Option<String>,
    /// When given, the output's headers must be exactly these (in any order).
    #[serde(default)]
    pub headers: Option<HeaderSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    /// `reject`, `retry`, `timeout`, `trap`, `memory`, `bad-output`, ...
    pub kind: String,
    #[serde(default)]
    pub message_contains: Option<String>,
}

/// Read a JSON file holding one object or an array of them.
fn read_json_list<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value(item).with_context(|| format!("{}: entry {i}", path.display()))
        })
        .collect()
}

/// The result of one fixture event.
#[derive(Debug, Serialize)]
pub struct EventReport {
    pub fixture: String,
    pub subject: String,
    pub attempt: u32,
    pub outputs: Vec<OutputReport>,
    pub failure: Option<FailureReport>,
    /// What the host would do next: `done`, `retry after N ms`, `dead-letter`.
    pub next: String,
    pub logs: Vec<LogReport>,
    /// Differences from the expectation; empty when it matched (or none was given).
    pub mismatches: Vec<String>,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct OutputReport {
    pub subject: String,
    pub headers: Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FailureReport {
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct LogReport {
    pub level: &'static str,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub plugin: String,
    pub events: Vec<EventReport>,
    pub passed: usize,
    pub failed: usize,
}

/// Run `bundle_dir`'s plugin over every event in `event_files`, checking each
/// against the matching entry of `expect_file` when one is given.
pub async fn run(
    config: &HostConfig,
    bundle_dir: &Path,
    event_files: &[PathBuf],
    expect_file: Option<&Path>,
) -> anyhow::Result<Report> {
    let bundle = Bundle::load(bundle_dir, config.sandbox.max_memory_mb)?;
    let runtime = Runtime::new(&config.sandbox)?;
    let plugin = Plugin::load(&runtime, &bundle, config, true)
        .with_context(|| format!("{}", bundle.wasm_path.display()))?;

    let mut fixtures = Vec::new();
    for file in event_files {
        for (i, fixture) in read_json_list::<Fixture>(file)?.into_iter().enumerate() {
            fixtures.push((format!("{}#{i}", file.display()), fixture));
        }
    }
    let expectations: Option<Vec<Expectation>> = match expect_file {
        Some(path) => {
            let list = read_json_list(path)?;
            if list.len() != fixtures.len() {
                bail!(
                    "{}: {} expectations for {} events",
                    path.display(),
                    list.len(),
                    fixtures.len()
                );
            }
            Some(list)
        }
        None => None,
    };

    let mut events = Vec::new();
    for (i, (name, fixture)) in fixtures.into_iter().enumerate() {
        let payload = payload_bytes(
            &name,
            &fixture.payload,
            &fixture.payload_json,
            &fixture.payload_b64,
        )?
        .unwrap_or_default();
        let mut event = Event {
            id: fixture
                .id
                .clone()
                .unwrap_or_else(|| format!("test-{}", i + 1)),
            subject: fixture.subject.clone(),
            payload: payload.into(),
            headers: fixture.headers.to_headers(),
            reply_to: fixture.reply_to.clone(),
            attempt: fixture.attempt.unwrap_or(1).max(1),
            principal: None,
        };
        // Producer tokens are checked as under `weir up`.
        let attempt = match pipeline::admit(&plugin, &mut event) {
            Ok(()) => pipeline::attempt(&plugin, &event).await,
            Err(failure) => pipeline::Attempt {
                outcome: Outcome::DeadLetter(failure),
                logs: Vec::new(),
            },
        };
        let expectation = expectations.as_ref().map(|e| &e[i]);
        events.push(report(&plugin, &name, &event, attempt, expectation)?);
    }
    let passed = events.iter().filter(|e| e.passed).count();
    Ok(Report {
        plugin: plugin.name().to_owned(),
        failed: events.len() - passed,
        passed,
        events,
    })
}

fn report(
    plugin: &Plugin,
    name: &str,
    event: &Event,
    attempt: pipeline::Attempt,
    expectation: Option<&Expectation>,
) -> anyhow::Result<EventReport> {
    let pipeline::Attempt { outcome, logs } = attempt;
    let (result, next) = match outcome {
        Outcome::Done(outputs) => (Ok(outputs), "done".to_owned()),
        Outcome::Retry { delay, failure } => (
            Err(failure),
            format!(
                "retry after {} ms (attempt {} of {})",
                delay.as_millis(),
                event.attempt + 1,
                plugin.manifest.retry.max_attempts
            ),
        ),
        Outcome::DeadLetter(f) => {
            let next = format!("dead-letter ({})", f.kind.dead_letter_kind());
            (Err(f), next)
        }
    };
    let mismatches = match expectation {
        Some(expected) => compare(name, &result, expected)?,
        None => match &result {
            Ok(_) => Vec::new(),
            Err(f) => vec![format!(
                "the handler failed ({f}) and no failure was expected"
            )],
        },
    };
    let (outputs, failure) = match &result {
        Ok(messages) => (messages.iter().map(output_report).collect(), None),
        Err(f) => (
            Vec::new(),
            Some(FailureReport {
                kind: f.kind.as_str().to_owned(),
                message: f.message.clone(),
            }),
        ),
    };
    Ok(EventReport {
        fixture: name.to_owned(),
        subject: event.subject.clone(),
        attempt: event.attempt,
        outputs,
        failure,
        next,
        logs: logs
            .into_iter()
            .map(|l| LogReport {
                level: l.level.as_str(),
                text: l.text,
            })
            .collect(),
        passed: mismatches.is_empty(),
        mismatches,
    })
}

fn output_report(msg: &Message) -> OutputReport {
    let (payload, payload_b64) = match std::str::from_utf8(&msg.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&msg.payload)),
        ),
    };
    OutputReport {
        subject: msg.subject.clone(),
        headers: msg.headers.clone(),
        payload,
        payload_b64,
    }
}

fn compare(
    name: &str,
    result: &Result<Vec<Message>, Failure>,
    expected: &Expectation,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    match (result, &expected.failure) {
        (Err(actual), Some(want)) => {
            if actual.kind.as_str() != want.kind && actual.kind.dead_letter_kind() != want.kind {
                out.push(format!(
                    "failure kind: expected {}, got {} ({})",
                    want.kind, actual.kind, actual.message
                ));
            }
            if let Some(needle) = &want.message_contains
                && !actual.message.contains(needle.as_str())
            {
                out.push(format!(
                    "failure message {:?} does not contain {needle:?}",
                    actual.message
                ));
            }
        }
        (Err(actual), None) => out.push(format!("expected success, got failure {actual}")),
        (Ok(_), Some(want)) => out.push(format!("expected failure {}, got success", want.kind)),
        (Ok(messages), None) => {
            if let Some(want) = &expected.outputs {
                if want.len() != messages.len() {
                    out.push(format!(
                        "expected {} outputs, got {}",
                        want.len(),
                        messages.len()
                    ));
                }
                for (i, (w, got)) in want.iter().zip(messages).enumerate() {
                    compare_message(&format!("{name}: output {i}"), w, got, &mut out)?;
                }
            }
        }
    }
    Ok(out)
}

fn compare_message(
    what: &str,
    want: &ExpectedMessage,
    got: &Message,
    out: &mut Vec<String>,
) -> anyhow::Result<()> {
    if want.subject != got.subject {
        out.push(format!(
            "output subject: expected {:?}, got {:?}",
            want.subject, got.subject
        ));
    }
    if let Some(json) = &want.payload_json {
        match serde_json::from_slice::<serde_json::Value>(&got.payload) {
            Ok(actual) if json_equal(&actual, json) => {}
            Ok(actual) => out.push(format!(
                "output to {:?}: JSON payload differs: expected {json}, got {actual}",
                got.subject
            )),
            Err(_) => out.push(format!(
                "output to {:?}: payload is not JSON: {:?}",
                got.subject,
                String::from_utf8_lossy(&got.payload)
            )),
        }
    } else if let Some(bytes) = payload_bytes(what, &want.payload, &None, &want.payload_b64)?
        && bytes != got.payload.as_ref()
    {
        out.push(format!(
            "output to {:?}: payload differs: expected {:?}, got {:?}",
            got.subject,
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&got.payload)
        ));
    }
    if let Some(headers) = &want.headers {
        let mut want_h = headers.to_headers();
        let mut got_h = got.headers.clone();
        want_h.sort();
        got_h.sort();
        if want_h != got_h {
            out.push(format!(
                "output to {:?}: headers differ: expected {want_h:?}, got {got_h:?}",
                got.subject
            ));
        }
    }
    Ok(())
}

/// JSON equality with numbers compared by value: `1440` and `1440.0` are the
/// same amount, whichever language's encoder wrote it (serde_json's `Value`
/// alone tells integers from floats). Object keys match in any order.
fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Human output.
pub fn print_human(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for e in &report.events {
        let verdict = if e.passed { "PASS" } else { "FAIL" };
        writeln!(
            out,
            "{verdict} {} (subject {}, attempt {})",
            e.fixture, e.subject, e.attempt
        )?;
        for log in &e.logs {
            writeln!(out, "  log {}: {}", log.level, log.text)?;
        }
        for o in &e.outputs {
            writeln!(out, "  output -> {}", o.subject)?;
            for (k, v) in &o.headers {
                writeln!(out, "    {k}: {v}")?;
            }
            match (&o.payload, &o.payload_b64) {
                (Some(text), _) => writeln!(out, "    {}", preview(text))?,
                (None, Some(b64)) => writeln!(out, "    (binary, base64) {}", preview(b64))?,
                _ => {}
            }
        }
        if let Some(f) = &e.failure {
            writeln!(out, "  failure {}: {}", f.kind, f.message)?;
        }
        writeln!(out, "  next: {}", e.next)?;
        for m in &e.mismatches {
            writeln!(out, "  mismatch: {m}")?;
        }
    }
    writeln!(
        out,
        "{}: {} passed, {} failed",
        report.plugin, report.passed, report.failed
    )
}

fn preview(text: &str) -> String {
    const MAX: usize = 2048;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::json_equal;
    use serde_json::json;

    #[test]
    fn json_numbers_compare_by_value() {
        assert!(json_equal(&json!(1440), &json!(1440.0)));
        assert!(json_equal(
            &json!({"a": [1, 2.5], "b": {"c": 3}}),
            &json!({"b": {"c": 3.0}, "a": [1.0, 2.5]})
        ));
        assert!(!json_equal(&json!(1440), &json!(1440.5)));
        assert!(!json_equal(&json!(u64::MAX), &json!(u64::MAX - 1)));
        assert!(!json_equal(&json!(1), &json!("1")));
        assert!(!json_equal(&json!([1]), &json!([1, 1])));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 1})));
        assert!(!json_equal(&json!({"a": 1}), &json!({"b": 1})));
    }
}
