//! Issue 9: `--config`, `--nats`, `--json` and `-v` are accepted before or
//! after any subcommand; `RUST_LOG` (and `WEIR_LOG`, which wins) replace the
//! default log filter.

use super::*;

/// Where the README says every dlq command takes `--config`, it does: before
/// the command, between `dlq` and `list`, after `list`; `--nats` and
/// `--json` likewise, and for `weir pub`, `weir test`.
#[test]
fn global_flags_go_before_or_after_the_command() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    rt.block_on(create_stream(&client, "WEIR_DLQ", &["weir.dlq.>"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &server, &[]);
    let config = path(&config);
    // Run elsewhere, so only the flag can name the config.
    let cwd = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| weir_in(cwd.path(), args, &[]);

    for args in [
        &["dlq", "list", "--config", config][..],
        &["--config", config, "dlq", "list"],
        &["dlq", "--config", config, "list"],
        &["dlq", "list", "-c", config],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", shown(&out));
        assert!(
            stdout(&out).contains("0 dead letters"),
            "{args:?}: {}",
            shown(&out)
        );
    }
    let url = server.url();
    for args in [
        &["dlq", "list", "--config", config, "--json"][..],
        &["--json", "dlq", "list", "--nats", &url],
        &["dlq", "list", "--nats", &url, "--json"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", shown(&out));
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", shown(&out)));
        assert_eq!(list, serde_json::json!([]), "{args:?}");
    }

    // A config named after the command is read, and named when it is wrong.
    let out = run(&["dlq", "list", "--config", "/nonexistent/weir.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        stderr(&out).contains("/nonexistent/weir.toml"),
        "{}",
        shown(&out)
    );

    // weir pub: --nats after the subject and payload.
    rt.block_on(async {
        let mut sub = client.subscribe("flags.pub").await.expect("subscribe");
        weir_host::transport::sync_with_server(&client)
            .await
            .expect("round trip");
        let out = run(&["pub", "flags.pub", "after", "--nats", &url]);
        assert!(out.status.success(), "{}", shown(&out));
        let got = collect(&mut sub, 1).await;
        assert_eq!(got[0].payload, "after".as_bytes());
    });

    // weir test: --json and --config on either side.
    let enrich = bundle("enrich-order");
    let events = enrich.join("fixtures/events.json");
    let expected = enrich.join("fixtures/expected.json");
    let (enrich, events, expected) = (path(&enrich), path(&events), path(&expected));
    for args in [
        &["--json", "test", enrich, "-e", events, "--expect", expected][..],
        &[
            "test", enrich, "-e", events, "--expect", expected, "--json", "--config", config,
        ],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", shown(&out));
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", shown(&out)));
        assert_eq!(report["failed"], 0, "{args:?}");
        assert_eq!(report["passed"], 5, "{args:?}");
    }

    // Commands that print data print it as JSON under --json.
    let keys = cwd.path().join("keys");
    let out = run(&["--json", "keys", "gen", "--out", path(&keys), "--kid", "k1"]);
    assert!(out.status.success(), "{}", shown(&out));
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(generated["kid"], "k1", "{generated}");
    let key = keys.join("k1.key.pem");
    let out = run(&[
        "token",
        "issue",
        "--key",
        path(&key),
        "--sub",
        "s",
        "--aud",
        "a",
        "--json",
    ]);
    assert!(out.status.success(), "{}", shown(&out));
    let token: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        token["token"].as_str().map(|t| t.split('.').count()),
        Some(3),
        "{token}"
    );
    let out = run(&["new", "greeter", "--lang", "python", "--json"]);
    assert!(out.status.success(), "{}", shown(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(created["plugin"], "greeter", "{created}");
    let files = created["files"].as_array().expect("files");
    assert!(files.iter().any(|f| f == "plugin.toml"), "{created}");
    assert!(cwd.path().join("greeter/plugin.toml").is_file());

    // grant verify: --key and the global --config still exclude each other.
    let out = run(&[
        "grant", "verify", enrich, "--key", "k.pem", "--config", config,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        shown(&out)
    );
}

/// `RUST_LOG` replaces weir up's default filter; `WEIR_LOG` wins over it; a
/// filter that does not parse is reported and the default used.
#[test]
fn rust_log_and_weir_log_set_the_filter() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &server, &[bundle("echo")]);
    let up = |env: &[(&str, &str)]| WeirProcess::start(&["up", "--config", path(&config)], env);

    // RUST_LOG=error: not even the start-up lines at info.
    let host = up(&[("RUST_LOG", "error")]);
    rt.block_on(request_until_answered(&client, "demo.echo.quiet", "x"));
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("weir is up"),
        "RUST_LOG=error logged info:\n{log}"
    );
    assert!(!log.contains("plugin totals"), "{log}");

    // WEIR_LOG wins over RUST_LOG.
    let mut host = up(&[("RUST_LOG", "error"), ("WEIR_LOG", "info")]);
    host.wait_for_output("weir is up");
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("plugin totals"), "{log}");

    // A RUST_LOG that is no filter: said so, and the default level holds.
    let mut host = up(&[("RUST_LOG", "weir=loud")]);
    let log = host.wait_for_output("weir is up");
    assert!(
        log.contains("warning: RUST_LOG=\"weir=loud\" is not a log filter"),
        "{log}"
    );
    let (status, _) = host.stop();
    assert!(status.success());
}

/// Issue 9: `weir pub --help` showed its placeholder as a line break (clap
/// renders `{n}` so). It is `{seq}` now; `{n}` still works.
#[test]
fn pub_help_shows_the_placeholder_and_both_spellings_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = weir_in(dir.path(), &["pub", "--help"], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    let help = stdout(&out);
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("[PAYLOAD]"))
        .unwrap_or_else(|| panic!("no [PAYLOAD] line:\n{help}"));
    assert!(
        line.contains("`{seq}` in it becomes the message's number"),
        "{help}"
    );

    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    rt.block_on(async {
        let mut sub = client.subscribe("flags.seq").await.expect("subscribe");
        weir_host::transport::sync_with_server(&client)
            .await
            .expect("round trip");
        let url = server.url();
        for template in ["m{seq}", "m{n}"] {
            let out = weir_in(
                dir.path(),
                &["pub", "flags.seq", template, "--count", "3", "--nats", &url],
                &[],
            );
            assert!(out.status.success(), "{}", shown(&out));
        }
        let got: Vec<String> = collect(&mut sub, 6)
            .await
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        assert_eq!(got, ["m1", "m2", "m3", "m1", "m2", "m3"]);
    });
}
