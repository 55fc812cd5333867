//! What `weir test` reports: per event, each attempt run (outputs, failure,
//! logs, what the host would do next), the differences from `--expect`; as
//! JSON (`--json`) or as text.

use base64::Engine as _;
use serde::Serialize;

use super::{Ran, Verdict};
use crate::event::{Headers, Message};

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub plugin: String,
    pub events: Vec<EventReport>,
    pub passed: usize,
    pub failed: usize,
}

/// One fixture event: its last attempt (flattened) and the attempts before it.
#[derive(Debug, Serialize)]
pub struct EventReport {
    pub fixture: String,
    pub subject: String,
    #[serde(flatten)]
    pub last: AttemptReport,
    /// With `--follow`: the attempts before the last, each retried.
    pub retried: Vec<AttemptReport>,
    /// Differences from the expectation (or, without one, why the run
    /// failed: the handler crashed or broke a limit); empty when it passed.
    pub mismatches: Vec<String>,
    pub passed: bool,
}

/// One attempt.
#[derive(Debug, Serialize)]
pub struct AttemptReport {
    pub attempt: u32,
    pub outputs: Vec<OutputReport>,
    pub failure: Option<FailureReport>,
    /// What the host would do next.
    pub verdict: Verdict,
    /// The backoff before the next attempt, when the verdict is `retry`.
    pub delay_ms: Option<u64>,
    /// The dead letter's `Weir-Error-Kind`, when the verdict is `dead-letter`.
    pub dead_letter_kind: Option<&'static str>,
    /// The verdict in words: `done`, `retry after N ms (attempt A of M)`,
    /// `dead-letter (kind)`.
    pub next: String,
    pub logs: Vec<LogReport>,
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

impl AttemptReport {
    pub(super) fn new(ran: Ran) -> Self {
        let (outputs, failure, dead_letter_kind) = match &ran.result {
            Ok(messages) => (messages.iter().map(output_report).collect(), None, None),
            Err(f) => (
                Vec::new(),
                Some(FailureReport {
                    kind: f.kind.as_str().to_owned(),
                    message: f.message.clone(),
                }),
                (ran.verdict == Verdict::DeadLetter).then(|| f.kind.dead_letter_kind()),
            ),
        };
        Self {
            attempt: ran.attempt,
            outputs,
            failure,
            verdict: ran.verdict,
            delay_ms: ran
                .delay
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            dead_letter_kind,
            next: ran.next,
            logs: ran
                .logs
                .into_iter()
                .map(|l| LogReport {
                    level: l.level.as_str(),
                    text: l.text,
                })
                .collect(),
        }
    }
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

/// Human output.
pub fn print_human(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for e in &report.events {
        let verdict = if e.passed { "PASS" } else { "FAIL" };
        match e.retried.first() {
            None => {
                writeln!(
                    out,
                    "{verdict} {} (subject {}, attempt {})",
                    e.fixture, e.subject, e.last.attempt
                )?;
                print_attempt(&e.last, "  ", false, out)?;
            }
            Some(first) => {
                writeln!(
                    out,
                    "{verdict} {} (subject {}, attempts {} to {})",
                    e.fixture, e.subject, first.attempt, e.last.attempt
                )?;
                for a in &e.retried {
                    writeln!(out, "  attempt {}:", a.attempt)?;
                    print_attempt(a, "    ", true, out)?;
                }
                writeln!(out, "  attempt {}:", e.last.attempt)?;
                print_attempt(&e.last, "    ", false, out)?;
            }
        }
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

/// One attempt's lines, each after `pad`; `followed`: the next attempt was
/// run at once, its backoff not waited.
fn print_attempt(
    a: &AttemptReport,
    pad: &str,
    followed: bool,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    for log in &a.logs {
        writeln!(out, "{pad}log {}: {}", log.level, log.text)?;
    }
    for o in &a.outputs {
        writeln!(out, "{pad}output -> {}", o.subject)?;
        for (k, v) in &o.headers {
            writeln!(out, "{pad}  {k}: {v}")?;
        }
        match (&o.payload, &o.payload_b64) {
            (Some(text), _) => writeln!(out, "{pad}  {}", preview(text))?,
            (None, Some(b64)) => writeln!(out, "{pad}  (binary, base64) {}", preview(b64))?,
            _ => {}
        }
    }
    if let Some(f) = &a.failure {
        writeln!(out, "{pad}failure {}: {}", f.kind, f.message)?;
    }
    let waited = if followed { ", not waited" } else { "" };
    writeln!(out, "{pad}next: {}{waited}", a.next)
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
