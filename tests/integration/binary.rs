use std::path::Path;
use std::process::Command;

use crate::support::*;

/// `weir ARGS` to its end. Without a weir.toml the binary caches compiled
/// components under `$XDG_CACHE_HOME/weir` (else `~/.cache/weir`): point that
/// at the build's temp folder, so no test writes to `$HOME`.
fn weir(args: &[&str]) -> std::process::Output {
    Command::new(WEIR)
        .args(args)
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run weir")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn weir_test_passes_and_fails_as_it_should() {
    let enrich = bundle("enrich-order");
    let fixtures = enrich.join("fixtures");
    let events = fixtures.join("events.json");
    let expected = fixtures.join("expected.json");
    let out = weir(&[
        "test",
        path(&enrich),
        "--event",
        path(&events),
        "--expect",
        path(&expected),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 failed"), "{stdout}");

    // The same events against a wrong expectation: exit 1, the mismatch named.
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.json");
    let text = std::fs::read_to_string(&expected).expect("read expected");
    std::fs::write(&wrong, text.replace("orders.enriched.", "orders.wrong.")).expect("write");
    let out = weir(&[
        "test",
        path(&enrich),
        "--event",
        path(&events),
        "--expect",
        path(&wrong),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("mismatch: output subject"), "{stdout}");

    // --json for machines; a hostile plugin's timeout is reported, not fatal.
    let event = dir.path().join("spin.json");
    std::fs::write(&event, r#"{"subject": "hostile.loop", "payload": "x"}"#).expect("write");
    let out = weir(&[
        "test",
        path(&bundle("hostile-loop")),
        "--event",
        path(&event),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["events"][0]["failure"]["kind"], "timeout");
    assert_eq!(
        report["events"][0]["next"],
        "retry after 10 ms (attempt 2 of 2)"
    );
    assert_eq!(report["failed"], 1);
}

#[test]
fn weir_test_prints_logs_and_reports_reject() {
    let enrich = bundle("enrich-order");
    let dir = tempfile::tempdir().expect("tempdir");
    let event = dir.path().join("e.json");
    std::fs::write(
        &event,
        r#"[{"subject": "orders.created.x", "payload_json": {"id": "o-7", "items": [{"sku": "A", "qty": 1, "unit_price": 2.0}]}},
           {"subject": "orders.created.x", "payload": "{\"id\": 1}"}]"#,
    )
    .expect("write");
    let expect = dir.path().join("x.json");
    std::fs::write(&expect, r#"[{}, {"failure": {"kind": "reject"}}]"#).expect("write");
    let out = weir(&[
        "test",
        path(&enrich),
        "-e",
        path(&event),
        "--expect",
        path(&expect),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let logs = report["events"][0]["logs"].as_array().expect("logs");
    assert!(
        logs.iter()
            .any(|l| l["text"].as_str().unwrap_or("").contains("o-7")),
        "{logs:?}"
    );
    assert_eq!(report["events"][1]["failure"]["kind"], "reject");
    assert_eq!(report["events"][1]["next"], "dead-letter (reject)");
}

#[test]
fn bad_config_is_named_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[nats]\nurl = \"nats://127.0.0.1:1\"\nsubscription_capasity = 5\n",
    )
    .expect("write");
    let out = weir(&["up", "--config", path(&config)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("weir.toml: nats.subscription_capasity: unknown field"),
        "{stderr}"
    );
}

/// SIGTERM: stop taking events, finish the ones received, exit 0. None is
/// lost, and a failure during shutdown is dead-lettered, not retried: half
/// the events have failed once and wait for a retry (backoff 60 s) when
/// SIGTERM arrives; each is dead-lettered at once after its one attempt,
/// saying why, and the host's totals add up.
#[test]
fn sigterm_finishes_received_events() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let flaky = bundle_copy("flaky", dir.path(), |m| m.replace("[10, 20]", "[60000]"));
    let echo = bundle("echo");
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[plugins]\ndirs = []\nbundles = [\"{}\", \"{}\"]\n[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            server.url(),
            path(&flaky),
            path(&echo),
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    rt.block_on(create_stream(&client, "DONE", &["test.flaky-done"]));
    let mut host = WeirProcess::start(&["up", "--config", path(&config)], &[]);
    host.wait_for_output("weir is up");
    const N: u64 = 50;
    rt.block_on(async {
        for i in 0..N {
            let mut h = async_nats::HeaderMap::new();
            h.insert("fail-times", if i % 2 == 0 { "0" } else { "1" });
            client
                .publish_with_headers(format!("test.flaky.{i}"), h, format!("{i}").into())
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
    });
    // SIGTERM only once every failing event has failed its first attempt and
    // waits for its retry: they are in flight.
    let retrying = |log: &str| {
        log.lines()
            .filter(|l| l.contains("attempt failed; retry in") && l.contains("plugin=\"flaky\""))
            .count() as u64
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while retrying(&host.output()) < N / 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every failing event is waiting for its retry:\n{}",
            host.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, log) = host.stop();
    assert!(status.success(), "weir up exited {status:?}:\n{log}");
    assert_eq!(
        retrying(&log),
        N / 2,
        "each failing event failed once:\n{log}"
    );

    let t = |name: &str| total(&log, "flaky", name);
    assert_eq!(t("received"), N, "{log}");
    assert_eq!(t("succeeded"), N / 2, "the first-try successes finished");
    assert_eq!(t("failed_attempts"), N / 2, "no retry ran after SIGTERM");
    assert_eq!(
        t("retried"),
        N / 2,
        "each failing event was set for a retry once"
    );
    assert_eq!(t("dead_lettered"), N / 2, "the failures were dead-lettered");
    assert_eq!(t("dead_letters_unstored"), 0);
    rt.block_on(async {
        wait_stream_count(&client, "DONE", N / 2).await;
        wait_stream_count(&client, "WEIR_DLQ", N / 2).await;
        let js = async_nats::jetstream::new(client.clone());
        let dlq = js.get_stream("WEIR_DLQ").await.expect("dlq");
        let mut payloads = Vec::new();
        for seq in 1..=N / 2 {
            let letter = dlq.get_raw_message(seq).await.expect("dead letter");
            let get = |k: &str| letter.headers.get(k).map(|v| v.as_str().to_owned());
            let error = get("Weir-Error").unwrap_or_default();
            assert!(
                error.contains("not retried: the host is shutting down"),
                "{error}"
            );
            let attempts: u32 = get("Weir-Attempts")
                .and_then(|a| a.parse().ok())
                .expect("Weir-Attempts");
            assert!(attempts < 3, "attempts {attempts} < max_attempts 3");
            assert_eq!(get("Weir-Plugin").as_deref(), Some("flaky"));
            payloads.push(
                String::from_utf8_lossy(&letter.payload)
                    .parse::<u64>()
                    .expect("n"),
            );
        }
        payloads.sort();
        let odd: Vec<u64> = (0..N).filter(|i| i % 2 == 1).collect();
        assert_eq!(payloads, odd, "the dead letters are the failing events");
    });
}

/// `weir up --dev` starts a local nats-server when none answers, runs the
/// plugins against it, and stops it on SIGTERM.
#[test]
fn weir_up_dev_starts_and_stops_its_own_server() {
    // `--dev` starts its server on the port of `--nats`, so the test must
    // name one: found free here and released. Should another process take
    // it meanwhile, `weir up --dev` would use that server instead and the
    // store check below fails loudly; there is no port the binary could
    // report instead.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    bundle_copy("echo", &plugins, |m| m);
    let data = dir.path().join("data");
    let host = WeirProcess::start(
        &[
            "up",
            "--dev",
            "--nats",
            &url,
            "--plugins",
            path(&plugins),
            "--data-dir",
            path(&data),
        ],
        &[("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let client = loop {
            if let Ok(client) = async_nats::connect(&url).await {
                break client;
            }
            assert!(tokio::time::Instant::now() < deadline, "no server on {url}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        loop {
            let probe = client.request("demo.echo.dev", "hi".into());
            if let Ok(Ok(reply)) =
                tokio::time::timeout(std::time::Duration::from_millis(500), probe).await
            {
                assert_eq!(reply.payload, "hi".as_bytes());
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the host never answered"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            dir.path().join("data/nats/jetstream").is_dir(),
            "the dev server keeps its store in --data-dir"
        );
    });
    let (status, log) = host.stop();
    assert!(status.success(), "{status:?}:\n{log}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the dev server stopped with the host"
    );
}

/// Issue 8: `--plugins DIR` and `--bundle FOLDER` replace weir.toml's whole
/// plugin set, its bundles included, and `weir up` says which config file
/// and which plugins it uses.
#[test]
fn plugin_flags_replace_the_configs_dirs_and_bundles() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let echo = bundle_copy("echo", &other, |m| m);
    let trivial = bundle("trivial");
    let trivial_dir = dir.path().join("trivial-dir");
    std::fs::create_dir_all(&trivial_dir).expect("mkdir");
    bundle_copy("trivial", &trivial_dir, |m| m);
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[plugins]\ndirs = [\"{}\"]\nbundles = [\"{}\"]\n[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            server.url(),
            path(&trivial_dir),
            path(&trivial),
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    for flags in [["--plugins", path(&other)], ["--bundle", path(&echo)]] {
        let mut weir =
            WeirProcess::start(&["up", "--config", path(&config), flags[0], flags[1]], &[]);
        let output = weir.wait_for_output("weir is up");
        let line = |needle: &str| {
            output
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} line in:\n{output}"))
                .to_owned()
        };
        assert!(
            line("weir up: config file").contains(path(&config)),
            "{output}"
        );
        let plugins = line("weir up: plugins");
        assert!(plugins.contains(flags[1]), "{plugins}");
        assert!(plugins.contains("from=\"--plugins/--bundle\""), "{plugins}");
        assert!(!plugins.contains("trivial"), "{plugins}");
        assert!(line("weir is up").contains("plugins=1"), "{output}");
        assert!(output.contains("plugin=\"echo\""), "{output}");
        assert!(!output.contains("plugin=\"trivial\""), "{output}");
        rt.block_on(async {
            let reply = request_until_answered(&client, "demo.echo.flags", "mine").await;
            assert_eq!(reply.payload, "mine".as_bytes());
            // Nobody subscribes to the config's bundle's subject.
            let e = client
                .request("bench.trivial", "x".into())
                .await
                .expect_err("no responders");
            assert_eq!(e.kind(), async_nats::RequestErrorKind::NoResponders, "{e}");
        });
        let (status, output) = weir.stop();
        assert!(status.success(), "weir up exited {status:?}:\n{output}");
    }
}
