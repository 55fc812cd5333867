//! Issue 9: what `weir up` logs. At its default level a retried attempt and a
//! dead letter are one line each, naming the plugin, the event, the attempt,
//! the kind and what follows; `-v`/`-vv` raise weir's lines only; the
//! shutdown totals count retries, and JetStream redeliveries apart from new
//! events.

use super::*;

/// A log line's level and target: `<time> LEVEL target: ...` (text, no ANSI).
fn level_and_target(line: &str) -> Option<(&str, &str)> {
    let mut words = line.split_whitespace();
    let _time = words.next()?;
    let level = words.next()?;
    let target = words.next()?.strip_suffix(':')?;
    ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
        .contains(&level)
        .then_some((level, target))
}

/// weir's own lines (not its plugins') that mention `needle`.
fn host_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter(|l| level_and_target(l).is_some_and(|(_, t)| t.starts_with("weir_host")))
        .collect()
}

async fn publish(client: &async_nats::Client, subject: &str, headers: &[(&str, &str)]) {
    let mut h = async_nats::HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    client
        .publish_with_headers(subject.to_owned(), h, "x".into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
}

#[test]
fn a_retry_and_a_dead_letter_are_one_line_each() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &server, &[bundle("flaky"), bundle("reject")]);
    let mut host = WeirProcess::start(&["up", "--config", path(&config)], &[]);
    host.wait_for_output("weir is up");
    rt.block_on(async {
        let mut done = client
            .subscribe("test.flaky-done")
            .await
            .expect("subscribe");
        weir_host::transport::sync_with_server(&client)
            .await
            .expect("round trip");
        // The event ids are the messages' Nats-Msg-Id.
        publish(
            &client,
            "test.flaky.1",
            &[("fail-times", "1"), ("Nats-Msg-Id", "flaky-1")],
        )
        .await;
        publish(&client, "test.reject", &[("Nats-Msg-Id", "reject-1")]).await;
        collect(&mut done, 1).await;
    });
    host.wait_for_output("dead-lettered to");
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");

    let retry = host_lines(&log, "event=flaky-1");
    assert_eq!(
        retry.len(),
        1,
        "one host line for the retried event:\n{log}"
    );
    let line = retry[0];
    assert_eq!(
        level_and_target(line).map(|(l, _)| l),
        Some("INFO"),
        "{line}"
    );
    for part in [
        "attempt failed; retry in 10ms",
        "plugin=\"flaky\"",
        "attempt=1",
        "kind=\"retry\"",
        "attempt 1 of 1 planned failures",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }

    let dead = host_lines(&log, "event=reject-1");
    assert_eq!(dead.len(), 1, "one host line for the dead letter:\n{log}");
    let line = dead[0];
    assert_eq!(
        level_and_target(line).map(|(l, _)| l),
        Some("WARN"),
        "{line}"
    );
    for part in [
        "dead-lettered to weir.dlq.reject",
        "plugin=\"reject\"",
        "attempt=1",
        "kind=\"reject\"",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }

    let t = |plugin: &str, name: &str| total(&log, plugin, name);
    assert_eq!(t("flaky", "received"), 1, "{log}");
    assert_eq!(t("flaky", "retried"), 1, "{log}");
    assert_eq!(t("flaky", "succeeded"), 1, "{log}");
    assert_eq!(t("reject", "received"), 1, "{log}");
    assert_eq!(t("reject", "retried"), 0, "{log}");
    assert_eq!(t("reject", "dead_lettered"), 1, "{log}");
}

/// On JetStream a retry is a redelivery: the totals count each event once as
/// received, its second delivery as redelivered, its failed attempt as retried.
#[test]
fn jetstream_totals_count_a_retry_once_and_no_redelivery_as_new() {
    const N: u64 = 5;
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    rt.block_on(create_stream(&client, "FLAKY_IN", &["test.flaky.>"]));
    rt.block_on(create_stream(&client, "DONE", &["test.flaky-done"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let flaky = jetstream_bundle("flaky", dir.path(), "FLAKY_IN", "");
    let config = write_config(dir.path(), &server, &[flaky]);
    let mut host = WeirProcess::start(&["up", "--config", path(&config)], &[]);
    host.wait_for_output("weir is up");
    rt.block_on(async {
        let js = async_nats::jetstream::new(client.clone());
        for i in 0..N {
            let mut h = async_nats::HeaderMap::new();
            h.insert("fail-times", "1");
            js.publish_with_headers(format!("test.flaky.{i}"), h, "x".into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        wait_stream_count(&client, "DONE", N).await;
    });
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    let t = |name: &str| total(&log, "flaky", name);
    assert_eq!(t("received"), N, "redeliveries are not new events:\n{log}");
    assert_eq!(t("redelivered"), N, "{log}");
    assert_eq!(t("retried"), N, "{log}");
    assert_eq!(t("failed_attempts"), N, "{log}");
    assert_eq!(t("succeeded"), N, "{log}");
    assert_eq!(
        host_lines(&log, "attempt failed; retry in 10ms").len() as u64,
        N,
        "{log}"
    );
}

/// `-v`: weir's debug lines, nobody else's; `-vv`: weir's trace lines.
#[test]
fn verbose_raises_weirs_lines_only() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &server, &[bundle("echo")]);
    for (flag, level, message) in [("-v", "DEBUG", " done "), ("-vv", "TRACE", " received ")] {
        let host = WeirProcess::start(&["up", flag, "--config", path(&config)], &[]);
        rt.block_on(request_until_answered(&client, "demo.echo.v", "x"));
        let (status, log) = host.stop();
        assert!(status.success(), "{log}");
        assert!(
            log.lines().any(|l| l.contains(message)
                && l.contains("plugin=\"echo\"")
                && level_and_target(l) == Some((level, "weir_host::pipeline::serve"))),
            "{flag}: no {level} line{message}from the pipeline:\n{log}"
        );
        let noise: Vec<&str> = log
            .lines()
            .filter(|l| {
                level_and_target(l).is_some_and(|(level, target)| {
                    !target.starts_with("weir") && !matches!(level, "WARN" | "ERROR")
                })
            })
            .collect();
        assert!(
            noise.is_empty(),
            "{flag}: other crates below warn: {noise:#?}"
        );
    }
    // Without -v, no debug line at all.
    let host = WeirProcess::start(&["up", "--config", path(&config)], &[]);
    rt.block_on(request_until_answered(&client, "demo.echo.v", "x"));
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    assert!(
        !log.lines()
            .any(|l| level_and_target(l).is_some_and(|(level, _)| level == "DEBUG")),
        "{log}"
    );
}

/// `weir up --json`: one JSON object per log line.
#[test]
fn weir_up_json_logs_json_lines() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &server, &[bundle("echo")]);
    let mut host = WeirProcess::start(&["up", "--config", path(&config), "--json"], &[]);
    host.wait_for_output("weir is up");
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
    assert!(log.contains("plugin totals"), "{log}");
}
