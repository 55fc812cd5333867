//! One conformance suite for every language: each twin of a Rust example
//! plugin must pass the Rust plugin's own fixtures through `weir test` — same
//! outputs, same failures, same verdicts (`done`, `retry`, `dead-letter (kind)`)
//! — with a fresh instance per event and with warm instances.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// The languages, by the suffix of their twin's folder ("" is Rust).
const LANGUAGES: [&str; 4] = ["", "-python", "-js", "-c"];

/// `plugin.toml` with `[limits] isolation` set to `mode`.
fn with_isolation(manifest: String, mode: &str) -> String {
    let mut out = String::new();
    for line in manifest.lines() {
        if line.trim_start().starts_with("isolation") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[limits]" {
            out.push_str(&format!("isolation = \"{mode}\"\n"));
        }
    }
    assert!(out.contains("isolation ="), "plugin.toml has no [limits]");
    out
}

/// `weir test --json` of `bundle` on `events` against `expected`; the report,
/// checked to have passed.
fn weir_test(bundle: &Path, (events, expected): (&Path, &Path), dir: &Path) -> serde_json::Value {
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write weir.toml");
    let out = Command::new(WEIR)
        .arg("test")
        .arg("--config")
        .arg(&config)
        .arg(bundle)
        .arg("--event")
        .arg(events)
        .arg("--expect")
        .arg(expected)
        .arg("--json")
        .output()
        .expect("run weir test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: weir test failed\n{stdout}\n{}",
        bundle.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["failed"], 0, "{stdout}");
    report
}

/// What must be the same in every language: per event, the outputs' subjects
/// and headers, the failure kind and what the host does next.
fn verdicts(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let outputs: Vec<_> = e["outputs"]
                .as_array()
                .expect("outputs")
                .iter()
                .map(|o| serde_json::json!([o["subject"], o["headers"]]))
                .collect();
            serde_json::json!({
                "outputs": outputs,
                "failure": e["failure"]["kind"],
                "next": e["next"],
            })
        })
        .collect()
}

/// Every language's `name` twin, in both isolation modes, against the fixtures
/// of the Rust plugin `name`: `<prefix>events.json` and `<prefix>expected.json`
/// in its fixtures/ folder.
fn conforms(name: &str, prefix: &str, expected_events: usize) {
    let fixtures = repo_root().join("plugins").join(name).join("fixtures");
    let events = fixtures.join(format!("{prefix}events.json"));
    let expected = fixtures.join(format!("{prefix}expected.json"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reference = None;
    for suffix in LANGUAGES {
        let plugin = format!("{name}{suffix}");
        for mode in ["event", "reuse"] {
            let into = dir.path().join(mode);
            let bundle = bundle_copy(&plugin, &into, |m| with_isolation(m, mode));
            let report = weir_test(&bundle, (&events, &expected), dir.path());
            assert_eq!(report["plugin"], plugin.as_str());
            assert_eq!(report["passed"], expected_events, "{plugin} ({mode})");
            let verdicts = verdicts(&report);
            let reference = reference.get_or_insert_with(|| verdicts.clone());
            assert_eq!(
                &verdicts, reference,
                "{plugin} (isolation = {mode}) differs from the Rust plugin"
            );
        }
    }
}

#[test]
fn enrich_order_conforms_in_every_language() {
    conforms("enrich-order", "", 5);
}

/// Edge cases: JSON the languages' parsers disagree on by default (`2.0` as a
/// quantity, numbers out of range, repeated keys, escapes), every reject, and
/// a retry on the last attempt.
#[test]
fn enrich_order_edge_cases_conform_in_every_language() {
    conforms("enrich-order", "edge-", 18);
}

#[test]
fn echo_conforms_in_every_language() {
    conforms("echo", "", 6);
}

#[test]
fn isolation_is_set_in_the_limits_table() {
    let manifest = "name = \"x\"\n[limits]\nisolation = \"reuse\"\ntimeout_ms = 5\n".to_owned();
    let edited = with_isolation(manifest, "event");
    assert_eq!(
        edited,
        "name = \"x\"\n[limits]\nisolation = \"event\"\ntimeout_ms = 5\n"
    );
}
