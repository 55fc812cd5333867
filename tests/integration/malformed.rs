//! A message whose header block does not parse (issue 8, item 9). nats-server
//! stores and forwards such a block as it got it; async-nats 0.51 took it for
//! a protocol error and dropped the connection on every delivery. With the
//! vendored fix (docs/upstream/async-nats.md) the message is delivered, the
//! lines that parsed in `headers` and the raw block in `malformed_headers`, and
//! the connection stays up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt as _;

use crate::support::*;

/// A header block a publisher can get past nats-server.
struct Malformed {
    header: &'static [u8],
    /// The `Name: value` lines of it that still parse.
    kept: &'static [(&'static str, &'static str)],
}

const MALFORMED: &[Malformed] = &[
    Malformed {
        header: b"NATS/1.0\r\nbad line no colon\r\n\r\n",
        kept: &[],
    },
    Malformed {
        header: b"NATS/1.0\r\nBad Name: x\r\nGood: 1\r\n\r\n",
        kept: &[("Good", "1")],
    },
    Malformed {
        header: b"NATS/1.0\r\nBad: \xFF\xFE\r\nGood: 2\r\n\r\n",
        kept: &[("Good", "2")],
    },
];

/// A client that counts its disconnects.
async fn counting_client(server: &NatsServer) -> (async_nats::Client, Arc<AtomicUsize>) {
    let disconnects = Arc::new(AtomicUsize::new(0));
    let counter = disconnects.clone();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let counter = counter.clone();
            async move {
                if matches!(event, async_nats::Event::Disconnected) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .connect(server.url())
        .await
        .expect("test client connects");
    (client, disconnects)
}

/// The client is still on its first connection: it never reconnected.
async fn assert_never_reconnected(client: &async_nats::Client, disconnects: &AtomicUsize) {
    tokio::time::timeout(PATIENCE, client.flush())
        .await
        .expect("flush within PATIENCE")
        .expect("flush");
    assert_eq!(client.statistics().connects.load(Ordering::SeqCst), 1);
    assert_eq!(disconnects.load(Ordering::SeqCst), 0);
}

fn assert_delivered(msg: &async_nats::Message, case: &Malformed, i: usize) {
    let Malformed { header, kept } = case;
    assert_eq!(msg.payload, format!("payload {i}"));
    assert_eq!(
        msg.malformed_headers.as_deref(),
        Some(*header),
        "raw header block of message {i}"
    );
    let headers = msg.headers.as_ref().expect("the lines that parsed");
    assert_eq!(
        headers.len(),
        kept.len(),
        "headers of message {i}: {headers:?}"
    );
    for (name, value) in kept.iter() {
        assert_eq!(header_value(headers, name).as_deref(), Some(*value));
    }
}

async fn next_message(
    messages: &mut pull::Stream,
    deadline: tokio::time::Instant,
) -> jetstream::Message {
    tokio::time::timeout_at(deadline, messages.next())
        .await
        .expect("message within PATIENCE")
        .expect("pull stream open")
        .expect("a message, not an error")
}

fn header_value(headers: &async_nats::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

#[tokio::test]
async fn core_subscriber_gets_malformed_headers_and_stays_connected() {
    let server = NatsServer::start();
    let (client, disconnects) = counting_client(&server).await;
    let mut sub = client.subscribe("malformed.core").await.expect("subscribe");
    // Another subscription on the same connection, to show requests still work.
    let mut service = client
        .subscribe("malformed.service")
        .await
        .expect("subscribe");
    // A round trip: the SUBs are registered before another connection publishes.
    weir_host::transport::sync_with_server(&client)
        .await
        .expect("round trip");

    let payloads: Vec<String> = (0..MALFORMED.len())
        .map(|i| format!("payload {i}"))
        .collect();
    let raw: Vec<(&str, &[u8], &[u8])> = MALFORMED
        .iter()
        .zip(&payloads)
        .map(|(case, payload)| ("malformed.core", case.header, payload.as_bytes()))
        .collect();
    publish_raw(&server, &raw).await;

    let mut after = async_nats::HeaderMap::new();
    after.insert("Good", "after");
    client
        .publish_with_headers("malformed.core", after, "after".into())
        .await
        .expect("publish");

    let got = collect(&mut sub, MALFORMED.len() + 1).await;
    for (i, case) in MALFORMED.iter().enumerate() {
        assert_delivered(&got[i], case, i);
    }
    let last = &got[MALFORMED.len()];
    assert_eq!(last.payload, "after");
    assert_eq!(last.malformed_headers, None);
    assert_eq!(header(last, "Good").as_deref(), Some("after"));

    // A request through another subscription of the same client still works.
    let responder = client.clone();
    tokio::spawn(async move {
        if let Some(request) = service.next().await {
            let reply = request.reply.expect("reply subject");
            responder
                .publish(reply, request.payload)
                .await
                .expect("reply");
        }
    });
    let response =
        tokio::time::timeout(PATIENCE, client.request("malformed.service", "ping".into()))
            .await
            .expect("request within PATIENCE")
            .expect("response");
    assert_eq!(response.payload, "ping");

    assert_never_reconnected(&client, &disconnects).await;
}

#[tokio::test]
async fn pull_consumer_gets_stored_malformed_headers_and_stays_connected() {
    let server = NatsServer::start();
    let (client, disconnects) = counting_client(&server).await;
    create_stream(&client, "MALFORMED", &["malformed.js.>"]).await;

    let payloads: Vec<String> = (0..MALFORMED.len())
        .map(|i| format!("payload {i}"))
        .collect();
    let raw: Vec<(&str, &[u8], &[u8])> = MALFORMED
        .iter()
        .zip(&payloads)
        .map(|(case, payload)| ("malformed.js.bad", case.header, payload.as_bytes()))
        .collect();
    publish_raw(&server, &raw).await;
    let js = jetstream::new(client.clone());
    js.publish("malformed.js.good", "after".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    wait_stream_count(&client, "MALFORMED", MALFORMED.len() as u64 + 1).await;

    let stream = js.get_stream("MALFORMED").await.expect("stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("malformed".into()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("pull stream");

    let deadline = tokio::time::Instant::now() + PATIENCE;
    for (i, case) in MALFORMED.iter().enumerate() {
        let msg = next_message(&mut messages, deadline).await;
        assert_eq!(msg.subject.as_str(), "malformed.js.bad");
        assert_delivered(&msg, case, i);
        // Its reply subject is intact, so it can be acked (or dead-lettered).
        msg.double_ack().await.expect("ack");
    }
    let last = next_message(&mut messages, deadline).await;
    assert_eq!(last.payload, "after");
    assert_eq!(last.malformed_headers, None);
    last.double_ack().await.expect("ack");

    let mut consumer = stream
        .get_consumer::<pull::Config>("malformed")
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("consumer info");
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.delivered.stream_sequence, MALFORMED.len() as u64 + 1);

    assert_never_reconnected(&client, &disconnects).await;
}
