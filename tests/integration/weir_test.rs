//! `weir test` on the retry path, through the binary: exit status with and
//! without `--expect`, `--follow` with the plugin's own backoff, `--set` and
//! a fixture's `config`, verdicts, kinds and attempts in `--expect`, and
//! fixtures or expectations that are wrong named by file and field.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

/// `weir test ARGS`, caching compiled components in the build's temp folder.
fn weir_test(args: &[&str]) -> Output {
    Command::new(WEIR)
        .arg("test")
        .args(args)
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run weir test")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn write(dir: &Path, name: &str, json: serde_json::Value) -> std::path::PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, json.to_string()).expect("write fixture");
    file
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}):\n{}\n{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Issue 9: without `--expect`, outputs, a retry and a reject the handler
/// chose are results (exit 0, printed); a crash is not (exit 1).
#[test]
fn without_expect_a_chosen_failure_exits_0_and_a_crash_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = write(
        dir.path(),
        "orders.json",
        serde_json::json!([
            {"subject": "orders.created.eu", "payload_json": {"id": "o-1", "items": [{"sku": "A", "qty": 1, "unit_price": 2.0}]}},
            {"subject": "orders.created.eu", "payload": "not JSON"},
            {"subject": "orders.created.eu", "payload_json": {"id": "o-4", "items": [{"sku": "A", "qty": 1, "unit_price": 1}], "simulate": "transient"}},
        ]),
    );
    let out = weir_test(&[path(&bundle("enrich-order")), "-e", path(&events)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("next: dead-letter (reject)"), "{text}");
    assert!(
        text.contains("next: retry after 100 ms (attempt 2 of 3)"),
        "{text}"
    );
    assert!(text.contains("enrich-order: 3 passed, 0 failed"), "{text}");
    assert!(!text.contains("mismatch"), "{text}");

    let spin = write(
        dir.path(),
        "spin.json",
        serde_json::json!({"subject": "hostile.loop", "payload": "x"}),
    );
    let out = weir_test(&[path(&bundle("hostile-loop")), "-e", path(&spin)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("mismatch: attempt 1: timeout: timed out after 200 ms"),
        "{text}"
    );
    // Expected, the same crash passes.
    let expect = write(
        dir.path(),
        "spin-expected.json",
        serde_json::json!({"failure": {"kind": "timeout"}, "verdict": "retry", "delay_ms": 10}),
    );
    let out = weir_test(&[
        path(&bundle("hostile-loop")),
        "-e",
        path(&spin),
        "--expect",
        path(&expect),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// Issue 9: `--follow` runs attempt after attempt with the plugin's own
/// `[retry]` (max_attempts, backoff_ms with its last value repeating), not
/// waiting, until done or dead-lettered.
#[test]
fn follow_runs_every_attempt_with_the_plugins_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flaky = bundle_copy("flaky", dir.path(), |m| {
        m.replace("max_attempts = 3", "max_attempts = 5")
            .replace("backoff_ms = [10, 20]", "backoff_ms = [100, 1000, 60000]")
    });
    let events = write(
        dir.path(),
        "flaky.json",
        serde_json::json!([
            {"subject": "test.flaky.1", "payload": "p", "headers": {"fail-times": "2"}},
            {"subject": "test.flaky.2", "payload": "p", "headers": {"fail-times": "9"}},
            {"subject": "test.flaky.3", "payload": "p", "headers": {"fail-times": "9"}, "attempt": 4},
        ]),
    );
    let out = weir_test(&[path(&flaky), "-e", path(&events), "--follow", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report = report(&out);
    let delays = |e: &serde_json::Value| -> Vec<serde_json::Value> {
        e["retried"]
            .as_array()
            .expect("retried")
            .iter()
            .map(|a| a["delay_ms"].clone())
            .collect()
    };
    let done = &report["events"][0];
    assert_eq!(done["verdict"], "done");
    assert_eq!(done["attempt"], 3);
    assert_eq!(delays(done), [100, 1000]);
    assert_eq!(
        done["outputs"][0]["headers"][0],
        serde_json::json!(["attempt", "3"])
    );

    let exhausted = &report["events"][1];
    assert_eq!(exhausted["verdict"], "dead-letter");
    assert_eq!(exhausted["dead_letter_kind"], "retry-exhausted");
    assert_eq!(exhausted["attempt"], 5);
    assert_eq!(delays(exhausted), [100, 1000, 60000, 60000]);
    assert_eq!(
        exhausted["retried"][3]["next"],
        "retry after 60000 ms (attempt 5 of 5)"
    );
    // From attempt 4 on: one retry left.
    let late = &report["events"][2];
    assert_eq!(delays(late), [60000]);
    assert_eq!(late["attempt"], 5);

    // The text report shows each attempt and that no backoff was waited.
    let out = weir_test(&[path(&flaky), "-e", path(&events), "--follow"]);
    let text = stdout(&out);
    assert!(
        text.contains("(subject test.flaky.1, attempts 1 to 3)"),
        "{text}"
    );
    assert!(
        text.contains("    next: retry after 1000 ms (attempt 3 of 5), not waited\n  attempt 3:\n"),
        "{text}"
    );
    assert!(
        text.contains("next: dead-letter (retry-exhausted)"),
        "{text}"
    );
}

/// Issue 9: `--expect` asserts the verdict, the failure kind (with
/// `retry-exhausted` for a retry that ran out) and the attempt; every
/// difference is named, and an output's headers are compared exactly.
#[test]
fn expect_asserts_verdict_kind_attempts_and_exact_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let enrich = bundle("enrich-order");
    let events = write(
        dir.path(),
        "events.json",
        serde_json::json!([
            {"subject": "orders.created.eu", "payload_json": {"id": "o-4", "items": [{"sku": "A", "qty": 1, "unit_price": 1}], "simulate": "transient"}},
            {"subject": "orders.created.eu", "payload": "not JSON"},
            {"subject": "orders.created.eu", "payload_json": {"id": "o-1", "items": [{"sku": "A", "qty": 1, "unit_price": 2.0}]}},
        ]),
    );
    let right = write(
        dir.path(),
        "right.json",
        serde_json::json!([
            {"verdict": "dead-letter", "failure": {"kind": "retry-exhausted", "message_contains": "transient"}, "attempts": 3},
            {"verdict": "dead-letter", "failure": {"kind": "reject"}, "attempts": 1},
            {"verdict": "done", "attempts": 1, "outputs": [{"subject": "orders.enriched.eu", "headers": {"content-type": "application/json"}}]},
        ]),
    );
    let args = |expect: &Path| {
        vec![
            path(&enrich).to_owned(),
            "-e".into(),
            path(&events).to_owned(),
            "--follow".into(),
            "--expect".into(),
            path(expect).to_owned(),
        ]
    };
    let run = |expect: &Path| {
        let args = args(expect);
        weir_test(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run(&right);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("enrich-order: 3 passed, 0 failed"));

    let wrong = write(
        dir.path(),
        "wrong.json",
        serde_json::json!([
            {"verdict": "retry", "attempts": 2},
            {"verdict": "done"},
            {"outputs": [{"subject": "orders.enriched.eu", "headers": {}}]},
        ]),
    );
    let out = run(&wrong);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needle in [
        "mismatch: verdict: expected retry, got dead-letter (retry-exhausted)",
        "mismatch: attempts: expected the verdict at attempt 2, got it at attempt 3",
        "mismatch: expected success, got failure reject:",
        "mismatch: output to \"orders.enriched.eu\": headers differ (exactly these were expected): expected [], got [(\"content-type\", \"application/json\")]",
        "enrich-order: 0 passed, 3 failed",
    ] {
        assert!(text.contains(needle), "{needle}\n{text}");
    }
    // Without --follow the first attempt's verdict is a retry.
    let once = write(
        dir.path(),
        "once.json",
        serde_json::json!([
            {"verdict": "retry", "delay_ms": 100, "failure": {"kind": "retry"}, "attempts": 1},
            {"failure": {"kind": "reject"}},
            {},
        ]),
    );
    let out = weir_test(&[path(&enrich), "-e", path(&events), "--expect", path(&once)]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// Issue 9: `--set KEY=VALUE` overrides plugin.toml's `[config]` for the
/// run, a fixture's own `config` overrides both, for that event only.
#[test]
fn set_and_a_fixtures_config_override_plugin_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let order =
        serde_json::json!({"id": "o-1", "items": [{"sku": "A", "qty": 1, "unit_price": 2.0}]});
    let events = write(
        dir.path(),
        "events.json",
        serde_json::json!([
            {"subject": "orders.created.eu", "payload_json": order},
            {"subject": "orders.created.eu", "payload_json": order, "config": {"currency": "CHF"}},
            {"subject": "orders.created.eu", "payload_json": order},
        ]),
    );
    let currencies = |out: &Output| -> Vec<String> {
        assert_eq!(out.status.code(), Some(0), "{}", stdout(out));
        report(out)["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                let payload = e["outputs"][0]["payload"].as_str().expect("a text payload");
                let order: serde_json::Value = serde_json::from_str(payload).expect("JSON output");
                order["currency"].as_str().expect("currency").to_owned()
            })
            .collect()
    };
    let enrich = bundle("enrich-order");
    let plain = weir_test(&[path(&enrich), "-e", path(&events), "--json"]);
    assert_eq!(currencies(&plain), ["EUR", "CHF", "EUR"]);
    let set = weir_test(&[
        path(&enrich),
        "-e",
        path(&events),
        "--set",
        "currency=USD",
        "--json",
    ]);
    assert_eq!(currencies(&set), ["USD", "CHF", "USD"]);
    // A key plugin.toml lacks is set anyway, with a warning naming it.
    let typo = weir_test(&[
        path(&enrich),
        "-e",
        path(&events),
        "--set",
        "curency=USD",
        "--json",
    ]);
    assert_eq!(currencies(&typo), ["EUR", "CHF", "EUR"]);
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(
        stderr.contains("--set: \"curency\" is not in")
            && stderr.contains("plugin.toml's [config]"),
        "{stderr}"
    );
}

/// Issue 9: a fixture or an expectation that is wrong stops the run (exit
/// 2) with an error naming the file, the entry and the field.
#[test]
fn wrong_fixtures_and_expectations_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flaky = bundle("flaky");
    let events = write(
        dir.path(),
        "events.json",
        serde_json::json!([
            {"subject": "test.flaky.1", "payload": "p"},
            {"subject": "test.flaky.2", "payload": "p", "attempt": 0},
        ]),
    );
    let fails = |args: &[&str], needle: &str| {
        let out = weir_test(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {needle}\n{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
    };
    fails(
        &[path(&flaky), "-e", path(&events)],
        &format!(
            "error: {}#1: attempt: 0 is not an attempt: attempts count from 1",
            events.display()
        ),
    );
    let late = write(
        dir.path(),
        "late.json",
        serde_json::json!({"subject": "test.flaky.1", "attempt": 4}),
    );
    fails(
        &[path(&flaky), "-e", path(&late)],
        &format!(
            "{}#0: attempt: 4 is past the last attempt ([retry] max_attempts = 3 in {}): the host never runs it",
            late.display(),
            flaky.join("plugin.toml").display()
        ),
    );
    let config = write(
        dir.path(),
        "config.json",
        serde_json::json!({"subject": "test.flaky.1", "config": {"fail-times": 2}}),
    );
    fails(
        &[path(&flaky), "-e", path(&config)],
        &format!(
            "{}#0: config.fail-times: [config] values are strings: write \"2\"",
            config.display()
        ),
    );
    let one = write(
        dir.path(),
        "one.json",
        serde_json::json!({"subject": "test.flaky.1"}),
    );
    let verdict = write(
        dir.path(),
        "verdict.json",
        serde_json::json!([{"verdict": "dead_letter"}]),
    );
    fails(
        &[path(&flaky), "-e", path(&one), "--expect", path(&verdict)],
        &format!(
            "{}#0: unknown variant `dead_letter`, expected one of `done`, `retry`, `dead-letter`",
            verdict.display()
        ),
    );
    let contradiction = write(
        dir.path(),
        "contradiction.json",
        serde_json::json!({"verdict": "done", "failure": {"kind": "reject"}}),
    );
    fails(
        &[
            path(&flaky),
            "-e",
            path(&one),
            "--expect",
            path(&contradiction),
        ],
        &format!(
            "{}#0: verdict \"done\" with a failure",
            contradiction.display()
        ),
    );
    fails(
        &[path(&flaky), "-e", path(&one), "--set", "fail-times"],
        "invalid value 'fail-times' for '--set <KEY=VALUE>'",
    );
}
