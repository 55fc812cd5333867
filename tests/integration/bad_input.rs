//! A live host given an event whose header block does not parse: the event is
//! dead-lettered at once as `bad-input`, with the raw block in
//! `Weir-Raw-Headers` and the lines that parsed, never run; the host's
//! connection stays up and the next event is handled.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use futures::StreamExt as _;
use weir_host::host::Host;

use crate::support::*;

/// No colon on line 2; line 3 still parses and travels with the dead letter.
const RAW: &[u8] = b"NATS/1.0\r\nbad line no colon\r\nGood: 1\r\n\r\n";

/// The host names its connection so the server's monitoring can tell it apart.
const CLIENT_NAME: &str = "weir-bad-input";

/// The one dead letter in WEIR_DLQ, checked to be the bad event's.
async fn assert_bad_input_letter(
    client: &async_nats::Client,
    subject: &str,
) -> async_nats::HeaderMap {
    let js = async_nats::jetstream::new(client.clone());
    let dlq = js.get_stream("WEIR_DLQ").await.expect("dlq");
    let dead = dlq.get_raw_message(1).await.expect("dead letter");
    let get = |k: &str| dead.headers.get(k).map(|v| v.as_str().to_owned());
    assert_eq!(dead.subject.as_str(), "weir.dlq.echo");
    assert_eq!(dead.payload, "bad payload".as_bytes());
    assert_eq!(get("Weir-Error-Kind").as_deref(), Some("bad-input"));
    assert_eq!(
        get("Weir-Error").as_deref(),
        Some(
            format!(
                "malformed NATS header block ({} bytes): line 2 has no colon",
                RAW.len()
            )
            .as_str()
        )
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(get("Weir-Raw-Headers").expect("Weir-Raw-Headers"))
        .expect("base64");
    assert_eq!(raw, RAW, "the header block exactly as sent");
    assert_eq!(
        get("Good").as_deref(),
        Some("1"),
        "the line that parsed is kept"
    );
    assert_eq!(get("Weir-Original-Subject").as_deref(), Some(subject));
    assert_eq!(get("Weir-Attempts").as_deref(), Some("1"));
    dead.headers
}

/// (succeeded, dead-lettered, failed attempts) of a plugin.
fn stats(s: &weir_host::plugin::Stats) -> (u64, u64, u64) {
    (
        s.succeeded.load(Ordering::Relaxed),
        s.dead_lettered.load(Ordering::Relaxed),
        s.failed_attempts.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_core_event_is_dead_lettered_as_bad_input() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let mut config = host_config(&server, &[bundle("echo")]);
    config.nats.name = CLIENT_NAME.into();
    let host = Host::start(&config).await.expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let echo = host.plugins()[0].clone();
    let connections = server.connection_ids(CLIENT_NAME).await;
    assert_eq!(connections.len(), 1, "the host's one connection");

    publish_raw(&server, &[("demo.echo.bad", RAW, b"bad payload")]).await;
    wait_stream_count(&client, "WEIR_DLQ", 1).await;
    client
        .publish("demo.echo.good", "good".into())
        .await
        .expect("publish");
    wait_stream_count(&client, "ECHOED", 1).await;

    assert_bad_input_letter(&client, "demo.echo.bad").await;
    assert_eq!(
        server.connection_ids(CLIENT_NAME).await,
        connections,
        "the host never reconnected"
    );
    host.stop().await.expect("clean stop");
    // One handled, one dead-lettered without a run.
    assert_eq!(stats(&echo.stats), (1, 1, 0));
    wait_stream_count(&client, "ECHOED", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_jetstream_event_is_dead_lettered_and_terminated() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let mut config = host_config(&server, &[bundle]);
    config.nats.name = CLIENT_NAME.into();
    let mut terminated = client
        .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.ECHO_IN.>")
        .await
        .expect("subscribe");
    weir_host::transport::sync_with_server(&client)
        .await
        .expect("round trip");
    let host = Host::start(&config).await.expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let echo = host.plugins()[0].clone();
    let connections = server.connection_ids(CLIENT_NAME).await;
    assert_eq!(connections.len(), 1, "the host's one connection");

    publish_raw(&server, &[("demo.echo.bad", RAW, b"bad payload")]).await;
    let js = async_nats::jetstream::new(client.clone());
    js.publish("demo.echo.good", "good".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    wait_stream_count(&client, "WEIR_DLQ", 1).await;
    wait_stream_count(&client, "ECHOED", 1).await;
    wait_consumer_idle(&client, "ECHO_IN").await;

    let headers = assert_bad_input_letter(&client, "demo.echo.bad").await;
    let get = |k: &str| headers.get(k).map(|v| v.as_str().to_owned());
    assert_eq!(get("Weir-Original-Stream").as_deref(), Some("ECHO_IN"));
    assert_eq!(get("Weir-Original-Sequence").as_deref(), Some("1"));
    assert_eq!(get("Weir-Event-Id").as_deref(), Some("ECHO_IN:1"));
    // Terminated, not acked: the server says so for exactly that message.
    let advisory = tokio::time::timeout(PATIENCE, terminated.next())
        .await
        .expect("a MSG_TERMINATED advisory within PATIENCE")
        .expect("subscription open");
    let advisory: serde_json::Value =
        serde_json::from_slice(&advisory.payload).expect("advisory JSON");
    assert_eq!(advisory["stream_seq"], 1, "{advisory}");
    // The original stays in its stream, as it was stored. (Through the raw
    // API: async-nats' `get_raw_message` refuses the block it cannot parse.)
    let answer = client
        .request("$JS.API.STREAM.MSG.GET.ECHO_IN", r#"{"seq":1}"#.into())
        .await
        .expect("stream message");
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload).expect("JSON");
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(answer["message"][k].as_str().expect(k))
            .expect("base64")
    };
    assert_eq!(b64("hdrs"), RAW);
    assert_eq!(b64("data"), b"bad payload");
    assert_eq!(
        server.connection_ids(CLIENT_NAME).await,
        connections,
        "the host never reconnected"
    );
    host.stop().await.expect("clean stop");
    assert_eq!(stats(&echo.stats), (1, 1, 0));
    assert_eq!(
        echo.stats.received.load(Ordering::Relaxed),
        2,
        "each delivered once"
    );
}
