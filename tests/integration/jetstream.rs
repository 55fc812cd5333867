//! JetStream delivery: acks after confirmed outputs, retries by nak with
//! delay, dead letters then term, scale-out, and faults (server and host
//! killed mid-stream, SIGTERM) with exact counts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use weir_host::host::Host;

use crate::support::*;

/// A copy of `name` whose every subscription is a JetStream one on `stream`.
pub(crate) fn jetstream_bundle(name: &str, dir: &Path, stream: &str, extra: &str) -> PathBuf {
    let stream = stream.to_owned();
    let extra = extra.to_owned();
    bundle_copy(name, dir, move |m| {
        let mut out = String::new();
        for line in m.lines() {
            out.push_str(line);
            out.push('\n');
            if line.starts_with("subject = ") {
                out.push_str(&format!("mode = \"jetstream\"\nstream = \"{stream}\"\n"));
            }
        }
        out + &extra
    })
}

pub(crate) async fn publish_js(
    client: &async_nats::Client,
    n: usize,
    subject: impl Fn(usize) -> String,
) {
    let js = async_nats::jetstream::new(client.clone());
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(
            js.publish(subject(i), format!("{i}").into())
                .await
                .expect("publish"),
        );
        if acks.len() >= 500 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

/// Wait until the consumer has nothing pending and nothing unacknowledged.
pub(crate) async fn wait_consumer_idle(client: &async_nats::Client, stream: &str) {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stream = js.get_stream(stream).await.expect("stream");
        let mut names = stream.consumer_names();
        let mut idle = true;
        use futures::StreamExt as _;
        while let Some(Ok(name)) = names.next().await {
            let mut consumer = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
                .await
                .expect("consumer");
            let info = consumer.info().await.expect("consumer info");
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                idle = false;
            }
        }
        if idle {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer never went idle"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_stored_once_and_events_acked() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let host = Host::start(&host_config(&server, &[echo]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    const N: usize = 1000;
    publish_js(&client, N, |i| format!("demo.echo.{i}")).await;
    wait_stream_count(&client, "ECHOED", N as u64).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "ECHOED", N as u64).await;
    wait_stream_count(&client, "WEIR_DLQ", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_nak_with_backoff_then_dead_letter_and_replay() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "FLAKY_IN", &["test.flaky.>"]).await;
    create_stream(&client, "DONE", &["test.flaky-done"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flaky = jetstream_bundle("flaky", dir.path(), "FLAKY_IN", "");
    std::fs::write(
        flaky.join("plugin.toml"),
        std::fs::read_to_string(flaky.join("plugin.toml"))
            .expect("read")
            .replace("backoff_ms = [10, 20]", "backoff_ms = [200, 400]"),
    )
    .expect("write");
    let host = Host::start(&host_config(&server, &[flaky]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let js = async_nats::jetstream::new(client.clone());
    for (n, fail_times) in [("a", "0"), ("b", "2"), ("c", "5")] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("fail-times", fail_times);
        js.publish_with_headers(format!("test.flaky.{n}"), h, n.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    wait_stream_count(&client, "DONE", 2).await;
    wait_stream_count(&client, "WEIR_DLQ", 1).await;
    wait_consumer_idle(&client, "FLAKY_IN").await;

    let done = js.get_stream("DONE").await.expect("stream");
    let mut attempts = Vec::new();
    for seq in 1..=2 {
        let m = done.get_raw_message(seq).await.expect("output");
        attempts.push((
            String::from_utf8_lossy(&m.payload).to_string(),
            m.headers.get("attempt").map(|v| v.as_str().to_owned()),
        ));
    }
    attempts.sort();
    assert_eq!(
        attempts,
        [
            ("a".into(), Some("1".into())),
            ("b".into(), Some("3".into()))
        ],
        "b succeeded on its third delivery, counted by the server"
    );

    let dlq = js.get_stream("WEIR_DLQ").await.expect("dlq");
    let dead = dlq.get_raw_message(1).await.expect("dead letter");
    let get = |k: &str| dead.headers.get(k).map(|v| v.as_str().to_owned());
    assert_eq!(dead.payload, "c".as_bytes());
    assert_eq!(get("Weir-Error-Kind").as_deref(), Some("retry-exhausted"));
    assert_eq!(get("Weir-Attempts").as_deref(), Some("3"));
    assert_eq!(
        get("Weir-Original-Subject").as_deref(),
        Some("test.flaky.c")
    );
    assert_eq!(get("Weir-Event-Id").as_deref(), Some("FLAKY_IN:3"));
    // The delays were the configured ones: 200 + 400 ms between the first
    // delivery (the stored time) and the last attempt.
    let seen = |k: &str| humantime::parse_rfc3339(&get(k).expect(k)).expect("rfc3339");
    let spread = seen("Weir-Last-Seen")
        .duration_since(seen("Weir-First-Seen"))
        .expect("ordered");
    assert!(
        spread >= std::time::Duration::from_millis(600),
        "backoff honoured: {spread:?}"
    );

    // Replay: back on the original subject with the original headers, the
    // entry gone from the DLQ; (still failing) it is dead-lettered anew.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "dlq",
            "replay",
            "--plugin",
            "flaky",
            "--json",
            "--nats",
            &server.url(),
        ])
        .output()
        .expect("weir dlq replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(replayed["replayed"], serde_json::json!([1]));
    wait_stream_count(&client, "FLAKY_IN", 4).await;
    let input = js.get_stream("FLAKY_IN").await.expect("stream");
    let again = input.get_raw_message(4).await.expect("replayed event");
    assert_eq!(again.subject.as_str(), "test.flaky.c");
    assert_eq!(
        again.headers.get("fail-times").map(|v| v.as_str()),
        Some("5")
    );
    assert!(again.headers.get("Weir-Error-Kind").is_none());
    // Dead-lettered again after three more deliveries: the old entry is gone.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut dlq = js.get_stream("WEIR_DLQ").await.expect("dlq");
        let state = dlq.info().await.expect("info").state.clone();
        if state.messages == 1 && state.first_sequence == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replayed event not dead-lettered again: {state:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // list and purge through the CLI.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["dlq", "list", "--json", "--nats", &server.url()])
        .output()
        .expect("weir dlq list");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["plugin"], "flaky");
    assert_eq!(listed[0]["kind"], "retry-exhausted");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["dlq", "purge", "--all", "--json", "--nats", &server.url()])
        .output()
        .expect("weir dlq purge");
    let purged: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(purged["purged"], 1);
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_one_durable() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let a = Host::start(&host_config(&server, std::slice::from_ref(&echo)))
        .await
        .expect("a");
    let b = Host::start(&host_config(&server, &[echo]))
        .await
        .expect("b");
    const N: usize = 2000;
    publish_js(&client, N, |i| format!("demo.echo.{i}")).await;
    wait_stream_count(&client, "ECHOED", N as u64).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    let handled = |h: &Host| {
        h.plugins()[0]
            .stats
            .succeeded
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (ha, hb) = (handled(&a), handled(&b));
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
    assert_eq!(
        ha + hb,
        N as u64,
        "nothing handled twice while both hosts were up"
    );
    assert!(ha > 0 && hb > 0, "both hosts took work: {ha} and {hb}");
}

/// 10k events; the NATS server is killed (SIGKILL) mid-stream and restarted
/// on the same store: every event is handled, every output stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_stream_loses_nothing() {
    let mut server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle(
        "echo",
        dir.path(),
        "ECHO_IN",
        "[retry]\nmax_attempts = 20\n",
    );
    const N: usize = 10_000;
    publish_js(&client, N, |i| format!("demo.echo.{i}")).await;
    let host = Host::start(&host_config(&server, &[echo]))
        .await
        .expect("host starts");
    // Let it get going, then pull the plug.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stream_count(&client, "ECHOED").await < (N / 5) as u64 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.restart();
    let client = server.client().await;
    wait_stream_count(&client, "ECHOED", N as u64).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "ECHOED", N as u64).await;
    wait_stream_count(&client, "WEIR_DLQ", 0).await;
}

fn weir_up(config: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["up", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weir up")
}

fn write_config(server: &NatsServer, dir: &Path, bundle: &Path) -> PathBuf {
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[plugins]\ndirs = []\nbundles = [\"{}\"]\n[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            server.url(),
            bundle.display(),
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write config");
    config
}

/// A host process is killed (SIGKILL) mid-stream and started again: nothing
/// is lost, no output doubled; then SIGTERM under load: in-flight events
/// finish or are handed back, and a restart finishes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_killed_or_stopped_mid_stream_loses_nothing() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let config = write_config(&server, dir.path(), &echo);
    const N: usize = 10_000;
    publish_js(&client, N, |i| format!("demo.echo.{i}")).await;

    let mut host = weir_up(&config);
    let progress = |at: u64| {
        let client = client.clone();
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while stream_count(&client, "ECHOED").await < at {
                assert!(tokio::time::Instant::now() < deadline, "no progress");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    progress(N as u64 / 5).await;
    host.kill().expect("SIGKILL the host");
    host.wait().expect("reaped");

    let mut host = weir_up(&config);
    progress(N as u64 / 2).await;
    let term = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let status = host.wait().expect("exit");
    assert!(status.success(), "graceful exit after SIGTERM: {status:?}");

    let mut host = weir_up(&config);
    wait_stream_count(&client, "ECHOED", N as u64).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    let _ = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status();
    let _ = host.wait();
    wait_stream_count(&client, "WEIR_DLQ", 0).await;
}

/// An operator deletes the durable consumer under a running host: the host
/// binds it again and carries on (events published before the deletion and
/// not yet handled start over with the new consumer; none is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_bound_again() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let host = Host::start(&host_config(&server, &[echo]))
        .await
        .expect("host starts");
    publish_js(&client, 100, |i| format!("demo.echo.a{i}")).await;
    wait_stream_count(&client, "ECHOED", 100).await;

    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("ECHO_IN").await.expect("stream");
    let durable = {
        use futures::StreamExt as _;
        let mut names = stream.consumer_names();
        names.next().await.expect("one consumer").expect("name")
    };
    // nats-server 2.9 can fail a delete while the consumer's store is being
    // written ("unlinkat ...: directory not empty"): ask again.
    let mut deleted = false;
    for _ in 0..10 {
        match stream.delete_consumer(&durable).await {
            Ok(answer) => {
                deleted = answer.success;
                break;
            }
            Err(e) => {
                eprintln!("delete failed, asking again: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    assert!(deleted, "consumer {durable} deleted");

    // The new consumer starts from the stream's first message again: the
    // first 100 are handled a second time, their outputs deduplicated by
    // Nats-Msg-Id; the next 100 are new.
    publish_js(&client, 100, |i| format!("demo.echo.b{i}")).await;
    wait_stream_count(&client, "ECHOED", 200).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "ECHOED", 200).await;
}
