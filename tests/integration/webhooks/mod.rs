//! Issue 14: signed webhooks from the `WEIR_WEBHOOKS` work queue. A real
//! receiver ([`receiver`]) checks every signature with the Standard Webhooks
//! project's own Rust library and answers as each test scripts it: 2xx, 503,
//! 410, 500, slowly, or never. The deliverers run on a real nats-server; a
//! crashed host is a deliverer on its own runtime, dropped mid-POST.

pub(crate) mod receiver;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_host::webhook::{self, Counters, Secret, Settings};

use crate::support::*;
use receiver::{Receiver, Reply, wait_until};

const DLQ_SUBJECT: &str = "weir.dlq.webhooks";

async fn wait_count(counter: &AtomicU64, at: u64, what: &str) {
    wait_until(what, || Counters::get(counter) >= at).await;
}

/// Short backoffs, so tests take seconds.
fn settings(secret: Secret) -> Settings {
    Settings {
        secret,
        max_attempts: 5,
        backoff: vec![Duration::from_millis(100), Duration::from_millis(300)],
        timeout: Duration::from_secs(2),
        dead_letter_subject: DLQ_SUBJECT.into(),
    }
}

/// A server with the webhook stream and a dead-letter stream.
async fn setup() -> (NatsServer, async_nats::Client, jetstream::Context) {
    let server = NatsServer::start();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    webhook::ensure_stream(&js, 1)
        .await
        .expect("the webhook stream");
    create_stream(&client, "WEIR_DLQ", &["weir.dlq.>"]).await;
    (server, client, js)
}

/// Publish a job; whether the stream took it as a duplicate.
async fn enqueue(js: &jetstream::Context, plugin: &str, url: &str, id: &str, body: &str) -> bool {
    let job = webhook::job(plugin, url, id, bytes::Bytes::from(body.to_owned()));
    let headers = weir_host::transport::to_header_map(&job.headers).expect("headers");
    js.publish_with_headers(job.subject, headers, job.payload)
        .await
        .expect("publish the job")
        .await
        .expect("the job is stored")
        .duplicate
}

/// Wait until every job is settled: none left in the work queue.
async fn wait_queue_empty(client: &async_nats::Client) {
    wait_stream_count(client, webhook::STREAM, 0).await;
}

/// The dead letters: (subject, headers, payload).
async fn dead_letters(
    js: &jetstream::Context,
) -> Vec<(String, async_nats::HeaderMap, bytes::Bytes)> {
    let mut stream = js.get_stream("WEIR_DLQ").await.expect("the DLQ");
    let state = stream.info().await.expect("DLQ info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let msg = stream.get_raw_message(seq).await.expect("a dead letter");
        out.push((msg.subject.to_string(), msg.headers, msg.payload));
    }
    out
}

fn nats_header(headers: &async_nats::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

#[tokio::test]
async fn a_webhook_is_delivered_signed_as_the_spec_says() {
    let (_server, client, js) = setup().await;
    let (secret, text) = Secret::generate();
    let receiver = Receiver::start(&text, &[], Reply::Status(204)).await;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let counters = webhook::spawn(js.clone(), settings(secret), stop.clone(), &tasks)
        .await
        .expect("deliverer");

    let body = r#"{"id":"ev1","status":"succeeded","outputs":[]}"#;
    assert!(!enqueue(&js, "enrich", &receiver.url("a"), "wh_ev1_succeeded", body).await);
    let hits = receiver.wait_hits(1, "the webhook arrives").await;
    let hit = &hits[0];
    assert_eq!(
        hit.verified,
        Ok(()),
        "the spec library verifies the signature"
    );
    let (_, other) = Secret::generate();
    let stranger = standardwebhooks::Webhook::new(&other).expect("another secret");
    assert!(
        stranger.verify(&hit.body, &hit.headers).is_err(),
        "another secret does not verify it"
    );
    assert_eq!(hit.body, body.as_bytes());
    let h = |n: &str| {
        hit.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(h("webhook-id"), "wh_ev1_succeeded");
    assert!(
        h("webhook-signature").starts_with("v1,"),
        "{}",
        h("webhook-signature")
    );
    assert!(h("webhook-timestamp").parse::<i64>().is_ok());
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(
        h("user-agent"),
        format!("weir/{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(hit.headers.get("weir-callback-url").is_none());

    wait_count(&counters.delivered, 1, "counted as delivered").await;
    wait_queue_empty(&client).await;
    assert_eq!(receiver.hits().len(), 1);

    stop.cancel();
    tasks.close();
    tokio::time::timeout(PATIENCE, tasks.wait())
        .await
        .expect("the deliverer stops");
}

/// A receiver down (503) for its first attempts gets the webhook later,
/// once; the same final status enqueued twice is one job.
#[tokio::test]
async fn a_receiver_down_for_a_while_gets_each_webhook_once() {
    let (_server, client, js) = setup().await;
    let (secret, text) = Secret::generate();
    let down = [Reply::Status(503), Reply::Status(503)];
    let receiver = Receiver::start(&text, &down, Reply::Status(200)).await;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let counters = webhook::spawn(js.clone(), settings(secret), stop.clone(), &tasks)
        .await
        .expect("deliverer");

    let url = receiver.url("b");
    assert!(!enqueue(&js, "enrich", &url, "wh_ev2_succeeded", "{\"n\":2}").await);
    assert!(
        enqueue(&js, "enrich", &url, "wh_ev2_succeeded", "{\"n\":2}").await,
        "a duplicate"
    );
    wait_count(&counters.delivered, 1, "delivered after the outage").await;
    wait_queue_empty(&client).await;

    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "two 503s, then one 200: {hits:#?}");
    assert_eq!(receiver.delivered().len(), 1);
    assert!(
        hits.iter().all(|h| h.verified.is_ok()),
        "every attempt is signed: {hits:#?}"
    );
    assert!(
        hits.iter()
            .all(|h| h.headers["webhook-id"] == "wh_ev2_succeeded"),
        "one id across attempts"
    );
    assert_eq!(Counters::get(&counters.retried), 2);
    assert!(dead_letters(&js).await.is_empty());
    // Delivered and gone from the work queue, the id is still remembered
    // for the duplicate window: a redelivered event reaching the same final
    // status again enqueues nothing.
    assert!(enqueue(&js, "enrich", &url, "wh_ev2_succeeded", "{\"n\":2}").await);
    stop.cancel();
}

/// Connections refused (nothing listens) for the first attempts, then the
/// receiver comes back on the same port.
#[tokio::test]
async fn refused_connections_are_retried_until_the_receiver_is_back() {
    let (_server, client, js) = setup().await;
    let (secret, text) = Secret::generate();
    // A port that was free a moment ago; nothing listens there until the
    // receiver starts on it below.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let mut s = settings(secret);
    s.max_attempts = 50;
    let counters = webhook::spawn(js.clone(), s, stop.clone(), &tasks)
        .await
        .expect("deliverer");
    let url = format!("http://{addr}/hooks/c");
    enqueue(&js, "enrich", &url, "wh_ev3", "{}").await;
    wait_count(&counters.retried, 2, "attempts refused").await;
    assert_eq!(Counters::get(&counters.delivered), 0);

    let receiver = Receiver::start_on(addr, &text, Reply::Status(200)).await;
    wait_count(&counters.delivered, 1, "delivered once back").await;
    wait_queue_empty(&client).await;
    assert_eq!(receiver.delivered().len(), 1);
    assert_eq!(receiver.hits()[0].verified, Ok(()));
    stop.cancel();
}

/// 410 Gone: no retry, no dead letter.
#[tokio::test]
async fn gone_stops_at_once() {
    let (_server, client, js) = setup().await;
    let (secret, text) = Secret::generate();
    let receiver = Receiver::start(&text, &[], Reply::Status(410)).await;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let counters = webhook::spawn(js.clone(), settings(secret), stop.clone(), &tasks)
        .await
        .expect("deliverer");
    enqueue(&js, "enrich", &receiver.url("d"), "wh_ev4", "{}").await;
    wait_count(&counters.gone, 1, "the 410 is seen").await;
    wait_queue_empty(&client).await;
    assert_eq!(receiver.hits().len(), 1, "never tried again");
    assert_eq!(Counters::get(&counters.retried), 0);
    assert!(
        dead_letters(&js).await.is_empty(),
        "410 is not a dead letter"
    );
    stop.cancel();
}

/// Every attempt fails: one dead letter on weir.dlq.webhooks naming the
/// reason, the attempts and the URL, and neither the secret nor (in logs)
/// the URL's path and query.
#[tokio::test(flavor = "current_thread")]
async fn exhausted_attempts_leave_one_dead_letter_without_the_secret() {
    let (logs, _guard) = capture_logs();
    let (_server, client, js) = setup().await;
    let (secret, text) = Secret::generate();
    let receiver = Receiver::start(&text, &[], Reply::Status(500)).await;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let mut s = settings(secret);
    s.max_attempts = 3;
    let counters = webhook::spawn(js.clone(), s, stop.clone(), &tasks)
        .await
        .expect("deliverer");
    let url = receiver.url("e");
    let body = r#"{"id":"ev5","status":"dead-lettered"}"#;
    enqueue(&js, "billing", &url, "wh_ev5", body).await;
    wait_count(&counters.dead_lettered, 1, "dead-lettered").await;
    wait_queue_empty(&client).await;
    wait_stream_count(&client, "WEIR_DLQ", 1).await;

    assert_eq!(receiver.hits().len(), 3, "max_attempts POSTs");
    let letters = dead_letters(&js).await;
    let (subject, headers, payload) = &letters[0];
    assert_eq!(subject, DLQ_SUBJECT);
    assert_eq!(payload, body.as_bytes());
    let h = |n: &str| nats_header(headers, n).unwrap_or_default();
    assert_eq!(h("Weir-Error-Kind"), "retry-exhausted");
    assert_eq!(h("Weir-Attempts"), "3");
    assert_eq!(h("Weir-Webhook-Status"), "500");
    assert_eq!(h("Weir-Plugin"), "billing");
    assert_eq!(h("Weir-Original-Subject"), "weir.webhooks.billing");
    assert_eq!(h("Weir-Callback-Url"), url);
    assert_eq!(h("Webhook-Id"), "wh_ev5");
    assert!(h("Weir-Error").contains("HTTP 500"), "{}", h("Weir-Error"));
    assert!(
        h("Weir-Error").contains(&receiver.addr.to_string()),
        "{}",
        h("Weir-Error")
    );

    let key = text.trim_start_matches("whsec_");
    let everything = format!("{headers:?} {}", String::from_utf8_lossy(payload));
    assert!(
        !everything.contains(key),
        "the secret is in the dead letter: {everything}"
    );
    let log = logs.text();
    assert!(log.contains("wh_ev5"), "logs name the webhook id:\n{log}");
    assert!(!log.contains(key), "the secret is in the logs:\n{log}");
    assert!(
        !log.contains("URLTOKEN"),
        "the URL's query is in the logs:\n{log}"
    );
    stop.cancel();
}

/// A job with no usable URL is dead-lettered at once, unattempted.
#[tokio::test]
async fn a_job_without_a_usable_url_is_dead_lettered_at_once() {
    let (_server, client, js) = setup().await;
    let (secret, _) = Secret::generate();
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let counters = webhook::spawn(js.clone(), settings(secret), stop.clone(), &tasks)
        .await
        .expect("deliverer");
    enqueue(&js, "enrich", "file:///etc/passwd", "wh_ev6", "{}").await;
    // No Weir-Callback-Url at all.
    js.publish("weir.webhooks.enrich", "{}".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    wait_count(&counters.dead_lettered, 2, "both dead-lettered").await;
    wait_queue_empty(&client).await;
    let letters = dead_letters(&js).await;
    assert_eq!(letters.len(), 2);
    for (_, headers, _) in &letters {
        assert_eq!(
            nats_header(headers, "Weir-Error-Kind").as_deref(),
            Some("bad-input")
        );
        assert_eq!(nats_header(headers, "Weir-Attempts").as_deref(), Some("1"));
    }
    let errors: Vec<String> = letters
        .iter()
        .filter_map(|(_, h, _)| nats_header(h, "Weir-Error"))
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("scheme \"file\"")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("no Webhook-Id")),
        "{errors:?}"
    );
    stop.cancel();
}

/// A deliverer stopped while a job waits out its backoff: the next
/// deliverer (another host, or this one restarted) delivers it.
#[tokio::test]
async fn a_stopped_deliverer_leaves_its_jobs_to_the_next() {
    let (_server, client, js) = setup().await;
    let (secret, text) = Secret::generate();
    let receiver = Receiver::start(&text, &[], Reply::Status(503)).await;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let mut s = settings(secret.clone());
    s.max_attempts = 50;
    let first = webhook::spawn(js.clone(), s.clone(), stop.clone(), &tasks)
        .await
        .expect("first deliverer");
    enqueue(&js, "enrich", &receiver.url("f"), "wh_ev7", "{}").await;
    wait_count(&first.retried, 1, "a failed attempt").await;
    stop.cancel();
    tasks.close();
    tokio::time::timeout(PATIENCE, tasks.wait())
        .await
        .expect("the first deliverer stops");
    assert_eq!(
        stream_count(&client, webhook::STREAM).await,
        1,
        "the job waits"
    );

    receiver.set_then(Reply::Status(200));
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let second = webhook::spawn(js.clone(), s, stop.clone(), &tasks)
        .await
        .expect("second deliverer");
    wait_count(&second.delivered, 1, "the second deliverer delivers").await;
    wait_queue_empty(&client).await;
    assert_eq!(receiver.delivered().len(), 1);
    stop.cancel();
}

/// A host that dies mid-POST (its runtime dropped: no ack, no NAK): the job
/// comes back after the ack wait to another deliverer, which delivers it.
#[tokio::test]
async fn a_job_left_by_a_crashed_host_is_delivered_by_another() {
    let (server, client, js) = setup().await;
    let (secret, text) = Secret::generate();
    let receiver = Receiver::start(&text, &[Reply::Hang], Reply::Status(200)).await;
    let s = settings(secret);

    // The doomed host: its own runtime on its own thread, with its own
    // connection, dropped whole when told.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let url = server.url();
    let doomed_settings = s.clone();
    let doomed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = async_nats::connect(url).await.expect("connect");
            let js = jetstream::new(client);
            let tasks = TaskTracker::new();
            webhook::spawn(js, doomed_settings, CancellationToken::new(), &tasks)
                .await
                .expect("doomed deliverer");
            ready_tx.send(()).expect("ready");
            let _ = kill_rx.await;
        });
        drop(rt);
    });
    ready_rx.await.expect("the doomed host starts");
    enqueue(&js, "enrich", &receiver.url("g"), "wh_ev8", "{}").await;
    receiver.wait_hits(1, "the doomed host's POST").await;
    kill_tx.send(()).expect("kill");
    doomed.join().expect("the doomed host's thread ends");

    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let survivor = webhook::spawn(js.clone(), s, stop.clone(), &tasks)
        .await
        .expect("survivor");
    wait_count(&survivor.delivered, 1, "the survivor delivers").await;
    wait_queue_empty(&client).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2, "{hits:#?}");
    assert_eq!(receiver.delivered().len(), 1);
    assert!(hits.iter().all(|h| h.verified.is_ok()));
    stop.cancel();
}

/// Stop while a POST is under way: the POST finishes and its job is
/// settled (acked) before the deliverer's tasks are done.
#[tokio::test]
async fn a_post_under_way_at_stop_finishes_and_settles() {
    let (_server, client, js) = setup().await;
    let (secret, text) = Secret::generate();
    let receiver = Receiver::start(&text, &[Reply::SlowOk(500)], Reply::Status(500)).await;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let counters = webhook::spawn(js.clone(), settings(secret), stop.clone(), &tasks)
        .await
        .expect("deliverer");
    enqueue(&js, "enrich", &receiver.url("h"), "wh_ev9", "{}").await;
    receiver.wait_hits(1, "the POST starts").await;
    stop.cancel();
    tasks.close();
    tokio::time::timeout(PATIENCE, tasks.wait())
        .await
        .expect("the deliverer stops");
    assert_eq!(Counters::get(&counters.delivered), 1);
    wait_queue_empty(&client).await;
    assert_eq!(receiver.hits().len(), 1);
}

/// The NATS server restarts under a running deliverer: jobs published after
/// it is back are delivered, by the same deliverer.
#[tokio::test]
async fn the_deliverer_rides_out_a_nats_restart() {
    let (mut server, _client, js) = setup().await;
    let (secret, text) = Secret::generate();
    let receiver = Receiver::start(&text, &[], Reply::Status(200)).await;
    let deliverer_client = server.client().await;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let counters = webhook::spawn(
        jetstream::new(deliverer_client),
        settings(secret),
        stop.clone(),
        &tasks,
    )
    .await
    .expect("deliverer");
    enqueue(&js, "enrich", &receiver.url("i"), "wh_before", "{}").await;
    wait_count(&counters.delivered, 1, "delivered before the restart").await;

    server.kill();
    server.restart();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    enqueue(&js, "enrich", &receiver.url("i"), "wh_after", "{}").await;
    wait_count(&counters.delivered, 2, "delivered after the restart").await;
    wait_queue_empty(&client).await;
    assert_eq!(receiver.delivered().len(), 2);
    stop.cancel();
}

/// No stream captures the dead-letter subject: the job is kept (never acked
/// without its letter), and its letter is stored once a stream is there.
#[tokio::test]
async fn a_dead_letter_that_cannot_be_stored_keeps_the_job() {
    let server = NatsServer::start();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    webhook::ensure_stream(&js, 1)
        .await
        .expect("the webhook stream");
    let (secret, text) = Secret::generate();
    let receiver = Receiver::start(&text, &[], Reply::Status(500)).await;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let mut s = settings(secret);
    s.max_attempts = 1;
    let counters = webhook::spawn(js.clone(), s, stop.clone(), &tasks)
        .await
        .expect("deliverer");
    enqueue(&js, "enrich", &receiver.url("j"), "wh_ev10", "{}").await;
    wait_count(&counters.dead_letters_unstored, 2, "letters refused").await;
    assert_eq!(Counters::get(&counters.dead_lettered), 0);
    assert_eq!(
        stream_count(&client, webhook::STREAM).await,
        1,
        "the job is kept"
    );

    create_stream(&client, "WEIR_DLQ", &["weir.dlq.>"]).await;
    wait_count(&counters.dead_lettered, 1, "the letter is stored").await;
    wait_queue_empty(&client).await;
    wait_stream_count(&client, "WEIR_DLQ", 1).await;
    stop.cancel();
}

/// HTTPS is verified: a receiver whose certificate no trusted root signed
/// gets nothing, and the dead letter says why.
#[tokio::test]
async fn a_receiver_with_an_untrusted_certificate_is_refused() {
    let (_server, client, js) = setup().await;
    let addr = receiver::untrusted_tls();
    let (secret, _) = Secret::generate();
    let mut s = settings(secret);
    s.max_attempts = 1;
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let counters = webhook::spawn(js.clone(), s, stop.clone(), &tasks)
        .await
        .expect("deliverer");
    let url = format!("https://{addr}/hooks/k");
    enqueue(&js, "enrich", &url, "wh_ev11", "{}").await;
    wait_count(&counters.dead_lettered, 1, "dead-lettered").await;
    wait_queue_empty(&client).await;
    assert_eq!(Counters::get(&counters.delivered), 0);
    let letters = dead_letters(&js).await;
    let error = nats_header(&letters[0].1, "Weir-Error").unwrap_or_default();
    assert!(error.contains("certificate"), "{error}");
    stop.cancel();
}
