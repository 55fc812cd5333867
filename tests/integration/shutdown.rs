//! Stopping a host: SIGTERM hands back every JetStream delivery it has not
//! started (nothing is left for `ack_wait` to recover), and a host whose
//! guests spin still exits.

use crate::jetstream::{publish_js, write_config};
use crate::support::*;

/// A deep backlog, a small max_in_flight, SIGTERM mid-stream: the host hands
/// back what it pulled and did not start (before, messages already pulled
/// into the client were dropped and sat until ack_wait), and a second host
/// then handles every event exactly once: the two hosts' own counts of
/// handled events add up to the number published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_every_delivery_not_started() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let manifest = echo.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        text.replace("timeout_ms = 1000", "timeout_ms = 20000\nmax_in_flight = 4"),
    )
    .expect("manifest");
    let config = write_config(&server, dir.path(), &echo);
    let config = config.to_str().expect("utf-8 path");
    const N: u64 = 20_000;
    publish_js(&client, N as usize, |i| format!("demo.echo.{i}")).await;

    let first = WeirProcess::start(
        &["up", "--config", config],
        &[("WEIR_LOG", "info,weir_host=debug")],
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stream_count(&client, "ECHOED").await < N / 10 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, log) = first.stop();
    assert!(status.success(), "graceful exit: {status:?}\n{log}");
    let info = consumer_info(&client, "ECHO_IN").await;
    let (pending, ack_pending) = (info.num_pending, info.num_ack_pending);
    assert!(pending > 0, "the stop caught no unfinished work");
    let first_handled = total(&log, "echo", "succeeded");
    assert!(
        total(&log, "echo", "handed_back") > 0,
        "nothing was pulled and not started: the test proved nothing\n{log}"
    );

    // ack_wait is 60 s (3 x timeout_ms), longer than PATIENCE: had the stop
    // stranded a delivery (pulled, never settled), the second host could not
    // finish within the waits below. Handed-back deliveries still count as
    // ack-pending on the server until they are delivered again.
    let second = WeirProcess::start(&["up", "--config", config], &[("WEIR_LOG", "info")]);
    wait_stream_count(&client, "ECHOED", N).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    let (status, log) = second.stop();
    assert!(status.success(), "graceful exit: {status:?}\n{log}");
    assert_eq!(
        first_handled + total(&log, "echo", "succeeded"),
        N,
        "every event handled exactly once across the two hosts"
    );
    // The handed-back ones come again as redeliveries (delivered > 1): not
    // new events, but deliveries all the same.
    assert_eq!(
        total(&log, "echo", "received") + total(&log, "echo", "redelivered"),
        N - first_handled,
        "the second host got each unfinished event once ({ack_pending} were handed back)"
    );
}

/// SIGTERM while guests spin: the host gives up on them after its grace and
/// exits (before, the epoch ticker stopped with the host and the guests,
/// never interrupted, kept the process alive for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_spinning_guests_exits() {
    let server = NatsServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spin = bundle_copy("hostile-loop", dir.path(), |m| {
        m.replace("timeout_ms = 200", "timeout_ms = 60000\nmax_in_flight = 8")
    });
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[plugins]\ndirs = []\nbundles = [\"{}\", \"{}\"]\n[shutdown]\ngrace_ms = 500\n[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            server.url(),
            spin.display(),
            bundle("echo").display(),
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write config");
    let mut host = WeirProcess::start(
        &["up", "--config", config.to_str().expect("utf-8 path")],
        &[("WEIR_LOG", "info")],
    );
    host.wait_for_output("weir is up");
    for i in 0..8 {
        client
            .publish("hostile.loop", format!("{i}").into())
            .await
            .expect("publish");
    }
    // Published after the loops on the same connection: once echo answers,
    // the host has received the loops too.
    request_until_answered(&client, "demo.echo.probe", "probe").await;
    let (status, log) = host.stop();
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{log}");
    assert!(
        log.contains("ran out with events still in flight"),
        "the guests were not spinning at SIGTERM:\n{log}"
    );
}
