//! `--expect` files: what each event should come to (its verdict, failure,
//! attempts, outputs), and the comparison that lists every difference.

use serde::Deserialize;

use super::Ran;
use super::Verdict;
use super::fixture::{HeaderSpec, payload_bytes};
use crate::event::{FailureKind, Message};

/// What one event is expected to come to. With neither `failure` nor
/// `verdict` (nor `delay_ms`), it is expected to succeed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The outputs, in order (implies the verdict `done`).
    #[serde(default)]
    pub outputs: Option<Vec<ExpectedMessage>>,
    /// The failure of the last attempt run (implies a verdict other than `done`).
    #[serde(default)]
    pub failure: Option<ExpectedFailure>,
    /// What the host does after the last attempt run.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// The number of the attempt the verdict came at (the dead letter's
    /// `Weir-Attempts`): with `--follow` from attempt 1, the attempts run.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The backoff before the next attempt (implies the verdict `retry`).
    #[serde(default)]
    pub delay_ms: Option<u64>,
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
    /// When given, the output's headers must be exactly these: every name
    /// (case-sensitive) and value, repeats included, in any order. Those
    /// the host adds when it publishes (`Nats-Msg-Id`) are not among them.
    #[serde(default)]
    pub headers: Option<HeaderSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    pub kind: ExpectedKind,
    #[serde(default)]
    pub message_contains: Option<String>,
}

/// A failure kind as an expectation names it: a [`FailureKind`], or
/// `retry-exhausted` (a retry dead-lettered for want of attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedKind {
    Reject,
    /// Any retry failure, retried or dead-lettered.
    Retry,
    RetryExhausted,
    Timeout,
    Trap,
    Memory,
    Unauthorized,
    ForbiddenPublish,
    BadOutput,
    BadInput,
}

impl ExpectedKind {
    fn matches(self, kind: FailureKind, verdict: Verdict) -> bool {
        match self {
            Self::Reject => kind == FailureKind::Reject,
            Self::Retry => kind == FailureKind::Retry,
            Self::RetryExhausted => kind == FailureKind::Retry && verdict == Verdict::DeadLetter,
            Self::Timeout => kind == FailureKind::Timeout,
            Self::Trap => kind == FailureKind::Trap,
            Self::Memory => kind == FailureKind::Memory,
            Self::Unauthorized => kind == FailureKind::Unauthorized,
            Self::ForbiddenPublish => kind == FailureKind::ForbiddenPublish,
            Self::BadOutput => kind == FailureKind::BadOutput,
            Self::BadInput => kind == FailureKind::BadInput,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::RetryExhausted => "retry-exhausted",
            Self::Reject => "reject",
            Self::Retry => "retry",
            Self::Timeout => "timeout",
            Self::Trap => "trap",
            Self::Memory => "memory",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenPublish => "forbidden-publish",
            Self::BadOutput => "bad-output",
            Self::BadInput => "bad-input",
        }
    }
}

impl Expectation {
    /// Refuse expectations that contradict themselves; `name` is `<file>#<index>`.
    pub fn check(&self, name: &str) -> anyhow::Result<()> {
        let contradiction = |what: &str| anyhow::bail!("{name}: {what}");
        if self.attempts == Some(0) {
            return contradiction("attempts: attempts count from 1 (the first delivery)");
        }
        match self.verdict {
            Some(Verdict::Done) if self.failure.is_some() => {
                contradiction("verdict \"done\" with a failure: a failed attempt is not done")
            }
            Some(Verdict::Done) | Some(Verdict::DeadLetter) if self.delay_ms.is_some() => {
                contradiction(
                    "delay_ms is the backoff before a retry: give it with verdict \"retry\"",
                )
            }
            Some(Verdict::Retry) | Some(Verdict::DeadLetter) if self.outputs.is_some() => {
                contradiction("outputs are published only when the verdict is \"done\"")
            }
            None if self.outputs.is_some()
                && (self.failure.is_some() || self.delay_ms.is_some()) =>
            {
                contradiction("outputs with a failure: outputs are published only on success")
            }
            _ => Ok(()),
        }
    }

    /// The verdict expected: given, or implied by the other fields (`None`:
    /// any but `done`).
    fn verdict(&self) -> Option<Verdict> {
        match self.verdict {
            Some(v) => Some(v),
            None if self.delay_ms.is_some() => Some(Verdict::Retry),
            None if self.failure.is_some() => None,
            None => Some(Verdict::Done),
        }
    }
}

/// Every difference between the last attempt run and the expectation.
pub(crate) fn compare(
    name: &str,
    last: &Ran,
    expected: &Expectation,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    match (expected.verdict(), &last.result) {
        (Some(Verdict::Done), Err(actual)) => {
            out.push(format!("expected success, got failure {actual}"));
        }
        (Some(want), _) if want != last.verdict => out.push(format!(
            "verdict: expected {}, got {}",
            want.as_str(),
            last.next
        )),
        _ => {}
    }
    match (&last.result, &expected.failure) {
        (Err(actual), Some(want)) => {
            if !want.kind.matches(actual.kind, last.verdict) {
                out.push(format!(
                    "failure kind: expected {}, got {} ({})",
                    want.kind.as_str(),
                    match last.verdict {
                        Verdict::DeadLetter => actual.kind.dead_letter_kind(),
                        _ => actual.kind.as_str(),
                    },
                    actual.message
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
        (Ok(_), Some(want)) => {
            out.push(format!(
                "expected failure {}, got success",
                want.kind.as_str()
            ));
        }
        _ => {}
    }
    if let (Ok(messages), Some(want)) = (&last.result, &expected.outputs) {
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
    if let Some(want) = expected.attempts
        && want != last.attempt
    {
        out.push(format!(
            "attempts: expected the verdict at attempt {want}, got it at attempt {}",
            last.attempt
        ));
    }
    if let Some(want) = expected.delay_ms
        && let Some(delay) = last.delay
        && u128::from(want) != delay.as_millis()
    {
        out.push(format!(
            "retry delay: expected {want} ms, got {} ms",
            delay.as_millis()
        ));
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
                "output to {:?}: headers differ (exactly these were expected): expected {want_h:?}, got {got_h:?}",
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::Failure;
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

    fn expectation(value: serde_json::Value) -> Expectation {
        let e: Expectation = serde_json::from_value(value).expect("an expectation");
        e.check("x.json#0").expect("consistent");
        e
    }

    fn ran(attempt: u32, verdict: Verdict, kind: Option<FailureKind>) -> Ran {
        Ran {
            attempt,
            result: match kind {
                Some(kind) => Err(Failure::new(kind, "nope")),
                None => Ok(vec![]),
            },
            verdict,
            delay: (verdict == Verdict::Retry).then_some(Duration::from_millis(100)),
            next: verdict.as_str().to_owned(),
            logs: vec![],
        }
    }

    #[test]
    fn verdict_kind_attempts_and_delay_are_compared() {
        let exhausted = ran(3, Verdict::DeadLetter, Some(FailureKind::Retry));
        let want = expectation(json!({"verdict": "dead-letter", "attempts": 3,
                                      "failure": {"kind": "retry-exhausted"}}));
        assert_eq!(
            compare("n", &exhausted, &want).expect("compares"),
            Vec::<String>::new()
        );
        // "retry" names the kind whatever follows; "retry-exhausted" only a dead letter.
        let want = expectation(json!({"failure": {"kind": "retry"}}));
        assert!(
            compare("n", &exhausted, &want)
                .expect("compares")
                .is_empty()
        );
        let retried = ran(1, Verdict::Retry, Some(FailureKind::Retry));
        let want = expectation(json!({"failure": {"kind": "retry-exhausted"}, "attempts": 2}));
        let diffs = compare("n", &retried, &want).expect("compares");
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(diffs[0].starts_with("failure kind: expected retry-exhausted, got retry"));
        assert!(diffs[1].starts_with("attempts: expected the verdict at attempt 2"));

        let want = expectation(json!({"verdict": "retry", "delay_ms": 1000}));
        let diffs = compare("n", &retried, &want).expect("compares");
        assert_eq!(diffs, vec!["retry delay: expected 1000 ms, got 100 ms"]);
        let want = expectation(json!({"delay_ms": 100}));
        assert!(compare("n", &retried, &want).expect("compares").is_empty());

        let want = expectation(json!({"verdict": "dead-letter"}));
        let diffs = compare("n", &retried, &want).expect("compares");
        assert_eq!(diffs, vec!["verdict: expected dead-letter, got retry"]);
        // An empty expectation is success.
        let diffs = compare("n", &retried, &expectation(json!({}))).expect("compares");
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert!(diffs[0].starts_with("expected success, got failure"));
        let done = ran(1, Verdict::Done, None);
        assert!(
            compare("n", &done, &expectation(json!({})))
                .expect("compares")
                .is_empty()
        );
    }

    #[test]
    fn contradictions_and_unknown_names_are_refused() {
        for bad in [
            json!({"verdict": "done", "failure": {"kind": "reject"}}),
            json!({"verdict": "dead-letter", "outputs": []}),
            json!({"verdict": "done", "delay_ms": 5}),
            json!({"attempts": 0}),
        ] {
            let e: Expectation = serde_json::from_value(bad.clone()).expect("parses");
            let err = e.check("x.json#4").expect_err("refused");
            assert!(err.to_string().starts_with("x.json#4: "), "{bad}: {err}");
        }
        let err = serde_json::from_value::<Expectation>(json!({"verdict": "dead_letter"}))
            .expect_err("unknown verdict");
        assert!(err.to_string().contains("`dead-letter`"), "{err}");
        let err = serde_json::from_value::<Expectation>(json!({"failure": {"kind": "crash"}}))
            .expect_err("unknown kind");
        assert!(err.to_string().contains("`retry-exhausted`"), "{err}");
    }
}
