//! Python and JavaScript plugins live: an in-process host on a real
//! nats-server, with a fresh instance per event and with warm instances.

use std::collections::BTreeMap;

use weir_host::host::Host;

use crate::support::*;

/// `plugin.toml` with `[limits] isolation` set to `mode`.
fn isolation(manifest: String, mode: &str) -> String {
    let kept: Vec<&str> = manifest
        .lines()
        .filter(|l| !l.trim_start().starts_with("isolation"))
        .collect();
    kept.join("\n")
        .replace("[limits]", &format!("[limits]\nisolation = \"{mode}\""))
}

/// The echo and enrich-order twins in Python and JavaScript, in one host:
/// every event is echoed by both echo twins with its payload and headers, a
/// request is answered, orders are enriched and announced by both enrich
/// twins (from the ORDERS stream), bad orders are dead-lettered as `reject`;
/// exact counts, none missing, none twice.
async fn twins_run_live(mode: &str) {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    create_stream(&client, "ORDERS", &["orders.created.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let names = [
        "echo-python",
        "echo-js",
        "enrich-order-python",
        "enrich-order-js",
    ];
    let bundles: Vec<_> = names
        .iter()
        .map(|n| bundle_copy(n, dir.path(), |m| isolation(m, mode)))
        .collect();
    let host = Host::start(&host_config(&server, &bundles))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "refused: {:?}", host.refused());
    assert_eq!(host.plugins().len(), names.len());

    let mut echoed = client.subscribe("demo.echoed.>").await.expect("subscribe");
    let mut enriched = client
        .subscribe("orders.enriched.>")
        .await
        .expect("subscribe");
    let mut large = client.subscribe("orders.large").await.expect("subscribe");
    let mut dlq = client.subscribe("weir.dlq.>").await.expect("subscribe");
    client.flush().await.expect("flush");

    const N: usize = 40;
    for i in 0..N {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("trace-id", format!("t-{i}").as_str());
        client
            .publish_with_headers(format!("demo.echo.{i}"), headers, format!("p{i}").into())
            .await
            .expect("publish");
    }
    // Two echo twins: every event comes back twice, intact.
    let got = collect(&mut echoed, 2 * N).await;
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for msg in &got {
        let i: usize = msg.subject.as_str()["demo.echoed.".len()..]
            .parse()
            .expect("numbered subject");
        assert_eq!(msg.payload, format!("p{i}").as_bytes(), "{mode}");
        assert_eq!(header(msg, "trace-id"), Some(format!("t-{i}")), "{mode}");
        *seen.entry(i).or_default() += 1;
    }
    assert_eq!(seen.len(), N);
    assert!(seen.values().all(|&n| n == 2), "{mode}: {seen:?}");

    let reply = client
        .request("demo.echo.ping", "hello".into())
        .await
        .expect("an echo twin answers a request");
    assert_eq!(reply.payload, "hello".as_bytes());
    let pings = collect(&mut echoed, 2).await;
    assert!(
        pings
            .iter()
            .all(|m| m.subject.as_str() == "demo.echoed.ping")
    );

    let order = serde_json::json!({
        "id": "o-1", "customer": "c-9",
        "items": [{"sku": "A", "qty": 2, "unit_price": 12.5}, {"sku": "B", "qty": 1, "unit_price": 1000.0}]
    });
    let js = async_nats::jetstream::new(client.clone());
    for payload in [
        serde_json::to_vec(&order).expect("json"),
        b"not json".to_vec(),
    ] {
        js.publish("orders.created.eu", payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored in ORDERS");
    }
    for msg in collect(&mut enriched, 2).await {
        assert_eq!(msg.subject.as_str(), "orders.enriched.eu");
        assert_eq!(
            header(&msg, "content-type").as_deref(),
            Some("application/json")
        );
        let body: serde_json::Value = serde_json::from_slice(&msg.payload).expect("JSON");
        assert_eq!(body["customer"], "c-9");
        assert_eq!(body["item_count"], 3);
        assert_eq!(body["subtotal"].as_f64(), Some(1025.0));
        assert_eq!(body["tax"].as_f64(), Some(205.0));
        assert_eq!(body["total"].as_f64(), Some(1230.0));
        assert_eq!(body["currency"], "EUR");
    }
    for msg in collect(&mut large, 2).await {
        let body: serde_json::Value = serde_json::from_slice(&msg.payload).expect("JSON");
        assert_eq!(body["id"], "o-1");
        assert_eq!(body["total"].as_f64(), Some(1230.0));
    }
    let dead = collect(&mut dlq, 2).await;
    let mut plugins: Vec<String> = dead
        .iter()
        .map(|m| {
            assert_eq!(header(m, "Weir-Error-Kind").as_deref(), Some("reject"));
            assert_eq!(header(m, "Weir-Attempts").as_deref(), Some("1"));
            assert!(
                header(m, "Weir-Error")
                    .unwrap_or_default()
                    .contains("invalid JSON payload"),
                "{:?}",
                header(m, "Weir-Error")
            );
            assert_eq!(m.payload, "not json".as_bytes());
            header(m, "Weir-Plugin").expect("Weir-Plugin")
        })
        .collect();
    plugins.sort();
    assert_eq!(plugins, ["enrich-order-js", "enrich-order-python"]);

    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "ECHOED", 2 * N as u64 + 2).await;
    wait_stream_count(&client, "WEIR_DLQ", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_twins_run_live_with_a_fresh_instance_per_event() {
    twins_run_live("event").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_twins_run_live_with_warm_instances() {
    twins_run_live("reuse").await;
}

/// A Python handler that never returns is stopped by the timeout, retried once,
/// then dead-lettered as `timeout`; one that raises is dead-lettered as `trap`
/// with the exception's message; a healthy Python plugin in the same host keeps
/// answering — with warm instances (a failed one is thrown away) and fresh ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_python_loop_is_contained_by_the_timeout() {
    for mode in ["reuse", "event"] {
        let server = NatsServer::start();
        let client = server.client().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let bundles = [
            bundle_copy("hostile-loop-python", dir.path(), |m| isolation(m, mode)),
            bundle_copy("echo-python", dir.path(), |m| isolation(m, mode)),
        ];
        let host = Host::start(&host_config(&server, &bundles))
            .await
            .expect("host starts");
        assert!(host.refused().is_empty(), "refused: {:?}", host.refused());
        let mut dlq = client.subscribe("weir.dlq.>").await.expect("subscribe");
        let mut echoed = client.subscribe("demo.echoed.>").await.expect("subscribe");
        client.flush().await.expect("flush");

        client
            .publish("hostile.loop.python", "spin".into())
            .await
            .expect("publish");
        const N: usize = 20;
        for i in 0..N {
            client
                .publish(format!("demo.echo.{i}"), "ok".into())
                .await
                .expect("publish");
        }
        assert_eq!(collect(&mut echoed, N).await.len(), N, "{mode}");

        let dead = collect(&mut dlq, 1).await;
        let msg = &dead[0];
        assert_eq!(msg.subject.as_str(), "weir.dlq.hostile-loop-python");
        assert_eq!(
            header(msg, "Weir-Error-Kind").as_deref(),
            Some("timeout"),
            "{mode}: {:?}",
            header(msg, "Weir-Error")
        );
        assert_eq!(header(msg, "Weir-Attempts").as_deref(), Some("2"), "{mode}");
        assert_eq!(msg.payload, "spin".as_bytes());

        // An uncaught exception traps like a panic; its message reaches the
        // dead letter.
        client
            .publish("hostile.loop.python", "raise".into())
            .await
            .expect("publish");
        let dead = collect(&mut dlq, 1).await;
        assert_eq!(header(&dead[0], "Weir-Error-Kind").as_deref(), Some("trap"));
        let reason = header(&dead[0], "Weir-Error").unwrap_or_default();
        assert!(
            reason.contains("RuntimeError: boom from Python"),
            "{mode}: {reason}"
        );

        // The host is still healthy after the spinning instance was killed.
        let reply = client
            .request("demo.echo.after", "still here".into())
            .await
            .expect("echo-python answers after the timeout");
        assert_eq!(reply.payload, "still here".as_bytes(), "{mode}");
        host.stop().await.expect("clean stop");
        wait_stream_count(&client, "WEIR_DLQ", 2).await;
    }
}

/// `weir new` in every language: the folder builds with its own build.sh and
/// passes `weir test` against its own fixtures at once.
#[test]
fn weir_new_plugins_build_and_pass_weir_test() {
    use std::process::Command;
    const WEIR: &str = env!("CARGO_BIN_EXE_weir");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write weir.toml");
    // Rust builds share the workspace's target folder, where scripts/test.sh
    // has already built weir-sdk and its dependencies for wasm32-wasip2.
    let cargo_target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let shapes = ["rust", "python", "js", "c"]
        .into_iter()
        .flat_map(|lang| [(lang, false), (lang, true)]);
    for (lang, batch) in shapes {
        let name = match batch {
            false => format!("greeter-{lang}"),
            true => format!("greeter-{lang}-batch"),
        };
        let plugin = dir.path().join(&name);
        let mut new = Command::new(WEIR);
        new.args(["new", &name, "--lang", lang, "--dir"])
            .arg(&plugin);
        if batch {
            new.arg("--batch");
        }
        let out = new.output().expect("run weir new");
        assert!(
            out.status.success(),
            "weir new --lang {lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let build = Command::new(plugin.join("build.sh"))
            .env("CARGO_TARGET_DIR", &cargo_target)
            .output()
            .expect("run build.sh");
        assert!(
            build.status.success(),
            "{lang}: build.sh failed\n{}\n{}",
            String::from_utf8_lossy(&build.stdout),
            String::from_utf8_lossy(&build.stderr)
        );
        if lang == "js" {
            // Its unit tests under plain node, before any build: `npm test`.
            let unit = Command::new("npm")
                .arg("test")
                .current_dir(&plugin)
                .output()
                .expect("run npm test");
            let report = String::from_utf8_lossy(&unit.stdout);
            assert!(unit.status.success(), "npm test failed\n{report}");
            assert!(report.contains("# pass 2\n# fail 0"), "{report}");
        }
        let test = Command::new(WEIR)
            .arg("test")
            .arg("--config")
            .arg(&config)
            .arg(&plugin)
            .arg("-e")
            .arg(plugin.join("fixtures/events.json"))
            .arg("--expect")
            .arg(plugin.join("fixtures/expected.json"))
            .output()
            .expect("run weir test");
        let stdout = String::from_utf8_lossy(&test.stdout);
        assert!(test.status.success(), "{lang}: weir test failed\n{stdout}");
        assert!(
            stdout.contains(&format!("{name}: 3 passed, 0 failed")),
            "{stdout}"
        );
        assert!(stdout.contains("Hello, Ada!"), "{name}: {stdout}");
        // A batch project runs its three events as one batch.
        assert_eq!(
            stdout.contains("greeting a batch of 3"),
            batch,
            "{name}: {stdout}"
        );
    }
    // A second `weir new` into the same folder is refused, and names it.
    let again = Command::new(WEIR)
        .args(["new", "greeter-c", "--lang", "c", "--dir"])
        .arg(dir.path().join("greeter-c"))
        .output()
        .expect("run weir new");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}

/// The Python SDK's own tests, on plain CPython: off WebAssembly its host
/// calls are served by `weir_sdk.testing`, so handlers unit-test natively.
#[test]
fn python_sdk_unit_tests_pass_natively() {
    let sdk = repo_root().join("sdk/python");
    let out = std::process::Command::new("python3")
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(sdk.join("tests"))
        .env("PYTHONPATH", &sdk)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("Ran 12 tests"), "{report}");
}

/// The JavaScript SDK's own tests and an example plugin's unit tests, under
/// plain node: weir.js serves the host calls in-process off WebAssembly, and
/// register.js resolves "weir" and "weir/testing" without node_modules.
#[test]
fn js_sdk_unit_tests_pass_under_node() {
    let root = repo_root();
    let out = std::process::Command::new("node")
        .arg("--import")
        .arg(root.join("sdk/js/register.js"))
        .arg("--test")
        .arg(root.join("sdk/js/tests"))
        .arg(root.join("plugins/enrich-order-js"))
        .arg(root.join("plugins/batch-js"))
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("# tests 25\n"), "{report}");
    assert!(report.contains("# fail 0\n"), "{report}");
}

/// The C SDK's native tests and `plugins/batch-c`'s, under the address and
/// undefined-behaviour sanitizers: off WebAssembly weir.c serves the host
/// calls in-process, and weir_test_run / weir_test_run_batch run handlers.
#[test]
fn c_sdk_native_tests_pass() {
    let root = repo_root();
    for script in ["sdk/c/tests/run.sh", "plugins/batch-c/tests/run.sh"] {
        let out = std::process::Command::new(root.join(script))
            .output()
            .expect("run the C tests");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{script}:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!report.trim().is_empty(), "{script} printed no verdict");
    }
}
