//! JetStream delivery: acks after confirmed outputs, retries by nak with
//! delay, dead letters then term, scale-out, and faults (server and host
//! killed mid-stream, SIGTERM) with exact counts.

use std::path::{Path, PathBuf};
use std::process::Command;

use weir_host::host::Host;
use weir_host::plugin::Stats;

use crate::support::*;

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
    let plugin = host.plugins()[0].clone();
    let mut raw = RawCount::start(&client, "demo.echoed.>").await;
    const N: u64 = 1000;
    publish_js(&client, N as usize, |i| format!("demo.echo.{i}")).await;
    wait_stream_count(&client, "ECHOED", N).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "ECHOED", N).await;
    wait_stream_count(&client, "WEIR_DLQ", 0).await;
    // Not only the stream's dedupe: with no fault, weir itself received,
    // ran and published each event exactly once.
    let s = &plugin.stats;
    let get = Stats::get;
    assert_eq!(raw.count().await, N, "raw publishes on demo.echoed.>");
    assert_eq!(get(&s.received), N, "deliveries");
    assert_eq!(get(&s.succeeded), N, "handler runs that published");
    assert_eq!(get(&s.failed_attempts), 0);
    assert_eq!(get(&s.outputs_unconfirmed), 0);
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
    let input = js.get_stream("FLAKY_IN").await.expect("stream");
    let stored = |m: &async_nats::jetstream::message::StreamMessage| m.time;
    let mut attempts = Vec::new();
    let mut b_done = None;
    for seq in 1..=2 {
        let m = done.get_raw_message(seq).await.expect("output");
        if m.payload == "b".as_bytes() {
            b_done = Some(stored(&m));
        }
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
    // The delays were the configured ones, by the server's clock alone: from
    // the event's stored time to its output (b) or its dead letter (c), both
    // stored after two delayed naks: at least 200 + 400 ms, and less than one
    // ack_wait (10 s). A host that let the deliveries time out instead of
    // naking with a delay would take two ack_waits (20 s and more).
    let ack_wait_ms = 10_000;
    for (name, seq, end) in [
        ("b", 2, b_done.expect("b's output")),
        ("c", 3, stored(&dead)),
    ] {
        let event = input.get_raw_message(seq).await.expect("event");
        assert_eq!(event.payload, name.as_bytes());
        let span = (end - stored(&event)).whole_milliseconds();
        assert!(
            (600..ack_wait_ms).contains(&span),
            "{name}: {span} ms from stored to its end, not 600 ms to one ack_wait"
        );
    }

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
    let (pa, pb) = (a.plugins()[0].clone(), b.plugins()[0].clone());
    let mut raw = RawCount::start(&client, "demo.echoed.>").await;
    const N: u64 = 2000;
    publish_js(&client, N as usize, |i| format!("demo.echo.{i}")).await;
    wait_stream_count(&client, "ECHOED", N).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
    let get = |p: &weir_host::plugin::Plugin, c: fn(&Stats) -> &std::sync::atomic::AtomicU64| {
        Stats::get(c(&p.stats))
    };
    let (ha, hb) = (get(&pa, |s| &s.succeeded), get(&pb, |s| &s.succeeded));
    assert_eq!(
        get(&pa, |s| &s.received) + get(&pb, |s| &s.received),
        N,
        "each event delivered to one host, once"
    );
    assert_eq!(ha + hb, N, "nothing handled twice while both hosts were up");
    assert_eq!(
        raw.count().await,
        N,
        "raw publishes: no duplicate for the output stream's dedupe to hide"
    );
    assert!(ha > 0 && hb > 0, "both hosts took work: {ha} and {hb}");
}

/// 10k events; the NATS server is killed (SIGKILL) mid-stream and restarted
/// on the same store, with the default max_attempts: every event is handled,
/// every output stored once, and the host ran each event at most once per
/// delivery it got (its duplicates come only from redeliveries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_stream_loses_nothing() {
    let mut server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    const N: u64 = 10_000;
    publish_js(&client, N as usize, |i| format!("demo.echo.{i}")).await;
    let host = Host::start(&host_config(&server, &[echo]))
        .await
        .expect("host starts");
    let plugin = host.plugins()[0].clone();
    // Let it get going, then pull the plug.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stream_count(&client, "ECHOED").await < N / 5 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let left = unfinished(&client, "ECHO_IN").await;
    server.kill();
    assert!(left > 0, "the kill caught no unfinished work");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.restart();
    let client = server.client().await;
    wait_stream_count(&client, "ECHOED", N).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "ECHOED", N).await;
    wait_stream_count(&client, "WEIR_DLQ", 0).await;
    // A core subscriber misses what is published while the server is down,
    // so the host's own counts stand for raw publishes here: one output per
    // successful run, and a run whose outputs went unconfirmed may have
    // published too. Each delivery runs at most once, so every output beyond
    // N (deduped by the stream) came from one of the deliveries - N
    // redeliveries. (A new event counts as received, a redelivery apart;
    // the server's restart may roll a consumer's delivery counts back, so a
    // few events can be "new" twice.)
    let s = &plugin.stats;
    let get = Stats::get;
    let received = get(&s.received) + get(&s.redelivered);
    let succeeded = get(&s.succeeded);
    assert!(
        get(&s.received) >= N,
        "every event came at least once as new"
    );
    let unconfirmed = get(&s.outputs_unconfirmed);
    assert!(succeeded >= N, "{succeeded} runs published for {N} events");
    assert!(
        succeeded + unconfirmed <= received,
        "runs that published ({succeeded} + {unconfirmed} unconfirmed) exceed deliveries ({received})"
    );
    assert_eq!(get(&s.dead_lettered), 0, "none exhausted its attempts");
    eprintln!(
        "server kill: {} redeliveries, {} extra runs, {unconfirmed} unconfirmed",
        received - N,
        succeeded - N
    );
}

pub(crate) fn write_config(server: &NatsServer, dir: &Path, bundle: &Path) -> PathBuf {
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
/// finish or are handed back, and a restart finishes the rest. Beyond the
/// output stream's dedupe, the raw publishes and the hosts' own totals show
/// that only redelivered events were run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_killed_or_stopped_mid_stream_loses_nothing() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let config = write_config(&server, dir.path(), &echo);
    let config = config.to_str().expect("utf-8 path");
    const N: u64 = 10_000;
    publish_js(&client, N as usize, |i| format!("demo.echo.{i}")).await;
    let mut raw = RawCount::start(&client, "demo.echoed.>").await;
    let up = || WeirProcess::start(&["up", "--config", config], &[("WEIR_LOG", "info")]);
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

    // 1. SIGKILL with deliveries in hand.
    let first = up();
    progress(N / 5).await;
    let before = unfinished(&client, "ECHO_IN").await;
    let log = first.kill();
    assert!(before > 0, "the kill caught no unfinished work");
    let info = consumer_info(&client, "ECHO_IN").await;
    let (undelivered, unacked) = (info.num_pending, info.num_ack_pending as u64);
    assert!(
        unacked > 0,
        "the killed host held no unacknowledged delivery:\n{log}"
    );
    let raw_first = raw.count().await;
    let stored_first = stream_count(&client, "ECHOED").await;
    assert_eq!(
        raw_first, stored_first,
        "before any fault, each event published once"
    );

    // 2. SIGTERM mid-stream.
    let second = up();
    progress(N / 2).await;
    let before = unfinished(&client, "ECHO_IN").await;
    let (status, log2) = second.stop();
    assert!(
        status.success(),
        "graceful exit after SIGTERM: {status:?}\n{log2}"
    );
    assert!(before > 0, "the stop caught no unfinished work");
    let raw_second = raw.count().await - raw_first;

    // 3. The rest.
    let third = up();
    wait_stream_count(&client, "ECHOED", N).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    let (status, log3) = third.stop();
    assert!(status.success(), "graceful exit: {status:?}\n{log3}");
    wait_stream_count(&client, "WEIR_DLQ", 0).await;
    let raw_total = raw.count().await;
    let raw_third = raw_total - raw_first - raw_second;

    let t = |log: &str, name: &str| total(log, "echo", name);
    // Deliveries: new events plus redeliveries (counted apart).
    let delivered = |log: &str| t(log, "received") + t(log, "redelivered");
    for (log, raw) in [(&log2, raw_second), (&log3, raw_third)] {
        assert_eq!(
            delivered(log),
            t(log, "succeeded") + t(log, "handed_back"),
            "every delivery finished or handed back:\n{log}"
        );
        assert_eq!(t(log, "succeeded"), raw, "one publish per run:\n{log}");
        assert_eq!(t(log, "dead_lettered"), 0, "{log}");
    }
    // What the kill left (never delivered, or delivered and unacknowledged)
    // all reached the later hosts; those beyond the never-delivered ones are
    // redeliveries, and only they may publish a second time.
    let later = delivered(&log2) + delivered(&log3);
    assert!(
        later >= undelivered + unacked,
        "{later} deliveries after the kill, {undelivered} + {unacked} left"
    );
    let redeliveries = later - undelivered;
    assert!(raw_total >= N, "{raw_total} raw publishes for {N} events");
    assert!(
        raw_total - N <= redeliveries,
        "{} duplicate publishes, {redeliveries} redeliveries",
        raw_total - N
    );
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
    // written ("unlinkat ...: directory not empty") and yet remove the
    // consumer: ask again, and a "not found" then means it is gone.
    let mut deleted = false;
    for _ in 0..10 {
        match stream.delete_consumer(&durable).await {
            Ok(answer) => {
                deleted = answer.success;
                break;
            }
            Err(e) if e.to_string().contains("not found") => {
                deleted = true;
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
