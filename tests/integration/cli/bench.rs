//! `weir bench`: both isolation modes timed on fixture events, through the
//! binary, with figures that hold together.

use super::{path, weir_in};
use crate::support::*;

#[test]
fn weir_bench_times_both_isolation_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = dir.path().join("hello.json");
    std::fs::write(
        &fixture,
        r#"[{"subject": "demo.echo.a", "payload": "hi"}, {"subject": "demo.echo.b", "payload": "there"}]"#,
    )
    .expect("fixture");
    let echo = repo_root().join("plugins/echo");
    let out = weir_in(
        dir.path(),
        &[
            "bench",
            path(&echo),
            "--event",
            path(&fixture),
            "--n",
            "40",
            "--isolation",
            "reuse",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["plugin"], "echo");
    assert_eq!(report["fixtures"], 2);
    let modes = report["modes"].as_array().expect("modes");
    assert_eq!(modes.len(), 2);
    assert_eq!(modes[0]["isolation"], "reuse", "the mode asked for first");
    assert_eq!(modes[1]["isolation"], "event");
    for m in modes {
        assert_eq!(m["events"], 40, "{m}");
        assert_eq!(m["failed"], 0, "{m}");
        let p50 = m["p50_us"].as_f64().expect("p50");
        let p99 = m["p99_us"].as_f64().expect("p99");
        assert!(p50 > 0.0 && p99 >= p50, "{m}");
        assert!(
            m["memory_peak_bytes"]
                .as_u64()
                .is_some_and(|b| b >= 64 * 1024),
            "{m}"
        );
    }

    // A rejecting plugin is measured all the same, its failures counted.
    let reject_fixture = dir.path().join("reject.json");
    std::fs::write(
        &reject_fixture,
        r#"{"subject": "test.reject", "payload": "no"}"#,
    )
    .expect("fixture");
    let out = weir_in(
        dir.path(),
        &[
            "bench",
            path(&repo_root().join("plugins/reject")),
            "-e",
            path(&reject_fixture),
            "--n",
            "10",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("events/s/core") && text.contains("event") && text.contains("reuse"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.trim_end().ends_with(" 10"))
            .count()
            == 2,
        "{text}"
    );
}
