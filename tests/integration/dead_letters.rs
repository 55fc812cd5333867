//! A dead letter never vanishes. When it cannot be stored — the dead-letter
//! stream refuses it, another stream owns its subjects, there is no
//! JetStream — that is an error line and a count (`dead_letters_unstored`),
//! never a success; a JetStream event then stays in its stream, redelivered
//! with the retry backoff, until its letter is stored. A letter over the
//! server's max_payload is stored cut, pointing at its original.
//!
//! The tests that read the host's log lines run on a `current_thread`
//! runtime: every host task then logs on the test's own thread, where
//! [`capture_logs`] collects them.

use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, stream};
use futures::{FutureExt as _, StreamExt as _};
use weir_host::host::Host;
use weir_host::plugin::Stats;

use crate::support::*;

/// Wait until `counter` reaches at least `at`.
async fn wait_count(counter: &std::sync::atomic::AtomicU64, at: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while counter.load(Ordering::Relaxed) < at {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} of {at}",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `n` events on `subject`, each stored.
async fn publish_stored(client: &async_nats::Client, subject: &str, n: usize) {
    let js = jetstream::new(client.clone());
    for i in 0..n {
        js.publish(subject.to_owned(), format!("event {i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

/// The only consumer of `stream`: (num_pending, num_ack_pending).
async fn consumer_state(client: &async_nats::Client, stream: &str) -> (u64, usize) {
    let info = consumer_info(client, stream).await;
    (info.num_pending, info.num_ack_pending)
}

/// A copy of the `reject` plugin named `name`, on `subject` in JetStream mode
/// (stream `stream`), or core mode when `stream` is `None`.
fn reject_bundle(dir: &std::path::Path, name: &str, stream: Option<&str>) -> std::path::PathBuf {
    let (name, stream) = (name.to_owned(), stream.map(str::to_owned));
    bundle_copy("reject", dir, move |m| {
        let m = m
            .replace("name = \"reject\"", &format!("name = \"{name}\""))
            .replace(
                "subject = \"test.reject\"",
                &format!("subject = \"test.{name}\""),
            );
        match stream {
            Some(stream) => m.replace(
                &format!("subject = \"test.{name}\""),
                &format!("subject = \"test.{name}\"\nmode = \"jetstream\"\nstream = \"{stream}\""),
            ),
            None => m,
        }
    })
}

/// The dead-letter stream refuses (full, discard new): five rejected
/// JetStream events stay in their stream, counted and logged, with no
/// MAX_DELIVERIES advisory; once it accepts, all five are stored as the
/// `reject`s they were, each run once, and the consumer ends idle.
#[tokio::test]
async fn a_refusing_dlq_keeps_events_in_their_stream_until_it_accepts() {
    let (logs, _guard) = capture_logs();
    let server = NatsServer::start();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    let mut dlq_config = stream::Config {
        name: "WEIR_DLQ".into(),
        subjects: vec!["weir.dlq.>".into()],
        max_messages: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.create_stream(dlq_config.clone())
        .await
        .expect("WEIR_DLQ");
    js.publish("weir.dlq.filler", "filler".into())
        .await
        .expect("publish")
        .await
        .expect("the one slot filled");
    create_stream(&client, "REJECT_IN", &["test.reject-js"]).await;
    let mut advisories = client
        .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>")
        .await
        .expect("subscribe");
    weir_host::transport::sync_with_server(&client)
        .await
        .expect("round trip");

    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = reject_bundle(dir.path(), "reject-js", Some("REJECT_IN"));
    let host = Host::start(&host_config(&server, &[bundle]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let plugin = host.plugins()[0].clone();
    let stats: &Stats = &plugin.stats;

    const N: usize = 5;
    publish_stored(&client, "test.reject-js", N).await;
    wait_count(
        &stats.dead_letters_unstored,
        N as u64,
        "unstored dead letters",
    )
    .await;
    logs.wait_for(&[
        "ERROR",
        "cannot store the dead letter",
        "the event stays in its stream",
        "reject-js",
    ])
    .await;
    assert_eq!(Stats::get(&stats.dead_lettered), 0);
    let (pending, ack_pending) = consumer_state(&client, "REJECT_IN").await;
    assert_eq!(
        pending + ack_pending as u64,
        N as u64,
        "every event unfinished, none lost"
    );
    assert_eq!(stream_count(&client, "REJECT_IN").await, N as u64);
    assert_eq!(
        stream_count(&client, "WEIR_DLQ").await,
        1,
        "only the filler"
    );

    dlq_config.max_messages = 100;
    js.update_stream(&dlq_config)
        .await
        .expect("raise the limit");
    wait_stream_count(&client, "WEIR_DLQ", 1 + N as u64).await;
    wait_consumer_idle(&client, "REJECT_IN").await;
    let dlq = js.get_stream("WEIR_DLQ").await.expect("dlq");
    let mut ids = Vec::new();
    for seq in 2..=(1 + N as u64) {
        let letter = dlq.get_raw_message(seq).await.expect("dead letter");
        let get = |k: &str| letter.headers.get(k).map(|v| v.as_str().to_owned());
        assert_eq!(get("Weir-Error-Kind").as_deref(), Some("reject"), "{seq}");
        assert_eq!(get("Weir-Plugin").as_deref(), Some("reject-js"));
        let id = get("Weir-Event-Id").expect("event id");
        let event: usize = id
            .strip_prefix("REJECT_IN:")
            .and_then(|s| s.parse().ok())
            .expect("REJECT_IN:<seq>");
        assert_eq!(
            get("Weir-Error"),
            Some(format!("rejected: event {}", event - 1)),
            "the handler's own reason"
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "each event once: {ids:?}");
    // Each ran once: a redelivery only stored the letter it already had.
    assert_eq!(Stats::get(&stats.failed_attempts), N as u64);
    assert_eq!(Stats::get(&stats.dead_lettered), N as u64);
    assert_eq!(consumer_state(&client, "REJECT_IN").await, (0, 0));

    // No event ever reached a server-side delivery limit.
    weir_host::transport::sync_with_server(&client)
        .await
        .expect("round trip");
    assert!(
        advisories.next().now_or_never().is_none(),
        "a MAX_DELIVERIES advisory was sent"
    );
    host.stop().await.expect("clean stop");
}

/// Another stream owns `weir.dlq.>`, so WEIR_DLQ cannot be made: start-up
/// says so, a jetstream plugin still starts and its events stay in their
/// stream; a core plugin's dead letters are counted unstored, never stored.
#[tokio::test]
async fn a_stream_owning_the_dlq_subjects_leaves_letters_unstored() {
    let (logs, _guard) = capture_logs();
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "OWNER", &["weir.dlq.>"]).await;
    create_stream(&client, "REJECT_IN", &["test.reject-js"]).await;
    let (js_dir, core_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let bundles = [
        reject_bundle(js_dir.path(), "reject-js", Some("REJECT_IN")),
        reject_bundle(core_dir.path(), "reject-core", None),
    ];
    let host = Host::start(&host_config(&server, &bundles))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    logs.wait_for(&["ERROR", "no dead-letter stream yet", "WEIR_DLQ", "overlap"])
        .await;
    assert!(!logs.text().contains("no JetStream"), "{}", logs.text());
    let stats = |name: &str| {
        host.plugins()
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.stats.clone())
            .unwrap_or_else(|| panic!("plugin {name} runs"))
    };
    let (js_stats, core_stats) = (stats("reject-js"), stats("reject-core"));

    publish_stored(&client, "test.reject-js", 3).await;
    for i in 0..2 {
        client
            .publish("test.reject-core", format!("core {i}").into())
            .await
            .expect("publish");
    }
    wait_count(&core_stats.dead_letters_unstored, 2, "core unstored").await;
    wait_count(&js_stats.dead_letters_unstored, 3, "jetstream unstored").await;
    logs.wait_for(&[
        "ERROR",
        "cannot store the dead letter",
        "the core event is lost",
        "reject-core",
    ])
    .await;
    logs.wait_for(&[
        "ERROR",
        "cannot store the dead letter",
        "reject-js",
        "overlap",
    ])
    .await;
    let (pending, ack_pending) = consumer_state(&client, "REJECT_IN").await;
    assert_eq!(pending + ack_pending as u64, 3, "every event unfinished");
    assert_eq!(stream_count(&client, "REJECT_IN").await, 3);
    assert_eq!(
        stream_count(&client, "OWNER").await,
        0,
        "nothing went astray"
    );
    host.stop().await.expect("clean stop");
    assert_eq!(Stats::get(&core_stats.dead_letters_unstored), 2);
    assert_eq!(Stats::get(&core_stats.dead_lettered), 0);
    assert_eq!(Stats::get(&js_stats.dead_lettered), 0);
}

/// A dead letter over the server's max_payload (8 KiB here) is stored with
/// its payload cut and marked, pointing at the original, which is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_over_max_payload_is_stored_cut() {
    let server = NatsServer::start_with_config("max_payload: 8192\n");
    let client = server.client().await;
    assert_eq!(client.server_info().max_payload, 8192);
    create_stream(&client, "REJECT_IN", &["test.reject-js"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = reject_bundle(dir.path(), "reject-js", Some("REJECT_IN"));
    let host = Host::start(&host_config(&server, &[bundle]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let plugin = host.plugins()[0].clone();

    let original: Vec<u8> = (0..8_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let js = jetstream::new(client.clone());
    js.publish("test.reject-js", original.clone().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    wait_stream_count(&client, "WEIR_DLQ", 1).await;
    wait_consumer_idle(&client, "REJECT_IN").await;

    let dlq = js.get_stream("WEIR_DLQ").await.expect("dlq");
    let letter = dlq.get_raw_message(1).await.expect("dead letter");
    let get = |k: &str| letter.headers.get(k).map(|v| v.as_str().to_owned());
    assert_eq!(get("Weir-Error-Kind").as_deref(), Some("reject"));
    assert_eq!(get("Weir-Payload-Truncated").as_deref(), Some("8000"));
    assert!(
        !letter.payload.is_empty() && letter.payload.len() < original.len(),
        "{} bytes kept",
        letter.payload.len()
    );
    assert_eq!(letter.payload[..], original[..letter.payload.len()]);
    assert_eq!(get("Weir-Original-Stream").as_deref(), Some("REJECT_IN"));
    let sequence: u64 = get("Weir-Original-Sequence")
        .and_then(|s| s.parse().ok())
        .expect("a sequence");
    let input = js.get_stream("REJECT_IN").await.expect("stream");
    let whole = input.get_raw_message(sequence).await.expect("original");
    assert_eq!(whole.payload[..], original[..], "the original, whole");
    host.stop().await.expect("clean stop");
    assert_eq!(Stats::get(&plugin.stats.dead_lettered), 1);
    assert_eq!(Stats::get(&plugin.stats.dead_letters_unstored), 0);
}

/// No JetStream at all: a rejected core event's dead letter is counted
/// unstored and logged at error; the host keeps serving.
#[tokio::test]
async fn without_jetstream_a_core_dead_letter_is_unstored_and_the_host_runs_on() {
    let (logs, _guard) = capture_logs();
    let server = NatsServer::start_without_jetstream();
    let client = server.client().await;
    let host = Host::start(&host_config(&server, &[bundle("reject"), bundle("echo")]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let reject = host
        .plugins()
        .iter()
        .find(|p| p.name() == "reject")
        .expect("reject runs")
        .clone();
    client
        .publish("test.reject", "doomed".into())
        .await
        .expect("publish");
    wait_count(&reject.stats.dead_letters_unstored, 1, "unstored").await;
    logs.wait_for(&[
        "ERROR",
        "cannot store the dead letter",
        "no JetStream",
        "the core event is lost",
    ])
    .await;
    let reply = tokio::time::timeout(PATIENCE, client.request("demo.echo.ping", "hello".into()))
        .await
        .expect("a reply within PATIENCE")
        .expect("the echo plugin still answers");
    assert_eq!(reply.payload, "hello".as_bytes());
    host.stop().await.expect("clean stop");
    assert_eq!(Stats::get(&reject.stats.dead_letters_unstored), 1);
    assert_eq!(Stats::get(&reject.stats.dead_lettered), 0);
}
