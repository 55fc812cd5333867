//! Issue 14: the HTTP gateway. A real HTTP client POSTs events, a real host
//! runs the plugins on JetStream, and the status is polled over HTTP: a
//! relay succeeds with its outputs listed, a rejecting plugin ends
//! dead-lettered with its reason, a retried `Idempotency-Key` is one event
//! (one handler run, by weir's own counts), and every refusal is a 4xx with
//! a JSON error naming what is wrong. A second host answers for events the
//! first accepted, and an event accepted by a host that stopped before
//! handling it is handled and its status written by the next one.

use std::path::PathBuf;

use serde_json::Value;
use weir_host::config::{HostConfig, HttpConfig};
use weir_host::host::Host;
use weir_host::plugin::Stats;

use crate::support::*;

/// `[http]` on an ephemeral port, callbacks allowed to loopback.
pub(crate) fn http_config() -> HttpConfig {
    let text = "listen = \"127.0.0.1:0\"\nmax_body_bytes = 4096\ncallback_allow = [\"http://127.0.0.1:*/*\"]\n";
    toml::from_str(text).expect("an [http] table")
}

/// A host config for `server` with the gateway on and `bundles` loaded.
pub(crate) fn gateway_host(server: &NatsServer, bundles: &[PathBuf]) -> HostConfig {
    let mut config = host_config(server, bundles);
    config.http = Some(http_config());
    config
}

/// The relay plugin on JetStream: `in.<rest>` (stream IN) to `out.<rest>`
/// (stored by stream OUT).
pub(crate) async fn relay_setup(server: &NatsServer, dir: &std::path::Path) -> PathBuf {
    let client = server.client().await;
    create_stream(&client, "IN", &["in.>"]).await;
    create_stream(&client, "OUT", &["out.>"]).await;
    jetstream_bundle("relay", dir, "IN", "")
}

/// POST `body` to `/v1/events/{subject}` with `headers`.
pub(crate) async fn post(
    base: &str,
    subject: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let mut request = http_client()
        .post(format!("{base}/v1/events/{subject}"))
        .body(body.to_vec());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().expect("text").to_owned());
    let text = response.text().await.expect("a body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, location, json)
}

/// GET a status URL: (HTTP status, Retry-After, document).
pub(crate) async fn get(url: impl AsRef<str>) -> (u16, Option<String>, Value) {
    let response = http_client()
        .get(url.as_ref())
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("text").to_owned());
    let text = response.text().await.expect("a body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, retry, json)
}

/// Long-poll `id` on `base` until its status is final.
pub(crate) async fn poll_final(base: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, retry, doc) = get(&format!("{base}/v1/events/{id}?wait=5s")).await;
        assert_eq!(status, 200, "{doc}");
        let state = doc["status"].as_str().expect("a status").to_owned();
        if state == "succeeded" || state == "dead-lettered" {
            assert_eq!(retry, None, "a final status has no Retry-After");
            return doc;
        }
        assert_eq!(retry.as_deref(), Some("1"), "{doc}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {state} after {PATIENCE:?}: {doc}"
        );
    }
}

fn base(host: &Host) -> String {
    format!("http://{}", host.http_addr().expect("the gateway listens"))
}

/// A server, and a host with the gateway running the relay on it: the
/// server, the bundle's folder, the host and the gateway's base URL.
async fn relay_gateway() -> (NatsServer, tempfile::TempDir, Host, String) {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = relay_setup(&server, dir.path()).await;
    let host = Host::start(&gateway_host(&server, &[relay]))
        .await
        .expect("host starts");
    let base = base(&host);
    (server, dir, host, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_accepted_polled_and_succeeds_with_its_outputs() {
    let (server, _dir, host, base) = relay_gateway().await;

    let (status, location, body) = post(
        &base,
        "in.order-1",
        br#"{"n": 1}"#,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    assert_eq!(id.len(), 32, "a 128-bit hex id: {id}");
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/events/{id}").as_str())
    );
    let status_url = body["status_url"].as_str().expect("a status URL");
    assert_eq!(
        status_url,
        format!("/v1/events/{id}"),
        "no [http] public_url"
    );

    let doc = poll_final(&base, &id).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["plugin"], "relay");
    assert_eq!(doc["attempts"], 1);
    assert_eq!(doc["subject"], "in.order-1");
    let outputs = doc["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 1, "{doc}");
    assert_eq!(outputs[0]["subject"], "out.order-1");
    assert!(outputs[0]["msg_id"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(doc["error"].is_null());

    // The output is in its stream, and the event ran once.
    let client = server.client().await;
    wait_stream_count(&client, "OUT", 1).await;
    let relay = &host.plugins()[0];
    assert_eq!(Stats::get(&relay.stats.succeeded), 1);
    assert_eq!(Stats::get(&relay.stats.received), 1);
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_ends_dead_lettered_with_its_reason() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = server.client().await;
    create_stream(&client, "REJECTS", &["test.reject"]).await;
    let reject = jetstream_bundle("reject", dir.path(), "REJECTS", "");
    let host = Host::start(&gateway_host(&server, &[reject]))
        .await
        .expect("host starts");
    let base = base(&host);
    let (status, _, body) = post(&base, "test.reject", b"no", &[]).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id");
    let doc = poll_final(&base, id).await;
    assert_eq!(doc["status"], "dead-lettered", "{doc}");
    assert_eq!(doc["error"]["kind"], "reject", "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{doc}"
    );
    wait_stream_count(&client, "WEIR_DLQ", 1).await;
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_twice_is_one_event() {
    let (server, _dir, host, base) = relay_gateway().await;
    let key = [("idempotency-key", "order-77")];
    let (s1, _, first) = post(&base, "in.77", b"x", &key).await;
    let (s2, _, second) = post(&base, "in.77", b"x", &key).await;
    assert_eq!((s1, s2), (202, 202), "{first} {second}");
    assert_eq!(first["id"], second["id"], "a retried POST gets the same id");
    let (s3, _, other) = post(&base, "in.78", b"x", &key).await;
    assert_eq!(s3, 409, "the key was used for another subject: {other}");
    assert_eq!(other["header"], "Idempotency-Key");
    let (s4, _, fresh) = post(&base, "in.78", b"x", &[("idempotency-key", "order-78")]).await;
    assert_eq!(s4, 202);
    assert_ne!(first["id"], fresh["id"]);

    let id = first["id"].as_str().expect("an id");
    assert_eq!(poll_final(&base, id).await["status"], "succeeded");
    let client = server.client().await;
    assert_eq!(
        stream_count(&client, "IN").await,
        2,
        "one event per key and subject"
    );
    wait_stream_count(&client, "OUT", 2).await;
    let relay = &host.plugins()[0];
    assert_eq!(Stats::get(&relay.stats.received), 2, "handler runs");
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_error_naming_what_is_wrong() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = relay_setup(&server, dir.path()).await;
    let mut config = gateway_host(&server, &[relay]);
    if let Some(http) = &mut config.http {
        http.subjects = Some(vec!["in.>".into(), "nowhere.>".into()]);
    }
    let host = Host::start(&config).await.expect("host starts");
    let base = base(&host);

    let (status, _, body) = post(&base, "in.big", &[b'x'; 5000], &[]).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("4096")),
        "{body}"
    );
    for (subject, needle) in [
        ("in..x", "not a subject"),
        ("in.*", "not a subject"),
        ("$JS.API.STREAM.DELETE.IN", "reserved"),
        ("_INBOX.x", "reserved"),
        ("weir.dlq.relay", "reserved"),
        ("other.x", "[http] subjects"),
    ] {
        let (status, _, body) = post(&base, subject, b"x", &[]).await;
        assert_eq!(status, 400, "{subject}: {body}");
        assert_eq!(body["subject"], subject, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{subject}: {body}"
        );
    }
    let (status, _, body) = post(&base, "nowhere.x", b"x", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["subject"], "nowhere.x");
    let (status, _, body) = post(
        &base,
        "in.x",
        b"x",
        &[("weir-callback", "http://169.254.169.254/latest/meta-data")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["header"], "Weir-Callback");
    let long_key = "k".repeat(300);
    let (status, _, body) = post(&base, "in.x", b"x", &[("idempotency-key", &long_key)]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["header"], "Idempotency-Key");

    let huge = "x".repeat(9000);
    let (status, _, body) = post(&base, "in.x", b"x", &[("tracestate", &huge)]).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(body["header"], "tracestate");
    let key = [("idempotency-key", "k-1")];
    let (status, _, _) = post(&base, "in.same", b"first", &key).await;
    assert_eq!(status, 202);
    let (status, _, body) = post(&base, "in.same", b"other body", &key).await;
    assert_eq!(status, 409, "a key reused for another body: {body}");
    assert!(
        !body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("in.same"),
        "the other request is not described: {body}"
    );
    let response = http_client()
        .delete(format!("{base}/v1/events/in.x"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 405);
    let text = response.text().await.expect("a body");
    assert!(serde_json::from_str::<Value>(&text).is_ok(), "JSON: {text}");
    let (status, _, body) = get(format!("{base}/v2/nothing")).await;
    assert_eq!(status, 404, "{body}");

    let unknown = "0123456789abcdef0123456789abcdef";
    let (status, _, body) = get(&format!("{base}/v1/events/{unknown}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = get(&format!("{base}/v1/events/not-an-id")).await;
    assert_eq!(status, 404);
    let (status, _, accepted) = post(&base, "in.ok", b"x", &[]).await;
    assert_eq!(status, 202);
    let id = accepted["id"].as_str().expect("an id");
    let (status, _, body) = get(&format!("{base}/v1/events/{id}?wait=soon")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["parameter"], "wait");

    // Nothing refused reached a stream: in.ok and in.same's first.
    let client = server.client().await;
    assert_eq!(stream_count(&client, "IN").await, 2);
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_gone_is_503_with_retry_after() {
    let (mut server, _dir, host, base) = relay_gateway().await;
    let (status, _, _) = post(&base, "in.before", b"x", &[]).await;
    assert_eq!(status, 202);
    server.kill();
    let response = http_client()
        .post(format!("{base}/v1/events/in.after"))
        .body("x")
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value =
        serde_json::from_str(&response.text().await.expect("a body")).expect("a JSON error");
    assert!(body["error"].as_str().is_some(), "{body}");
    drop(host);
}

/// Accepted by a host that stops before any plugin runs it; a second host
/// with the plugin handles it, and the first host's gateway (started again)
/// and the second's both answer for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_host_answers_and_a_stopped_host_loses_nothing() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = relay_setup(&server, dir.path()).await;
    let gateway_only = Host::start(&gateway_host(&server, &[]))
        .await
        .expect("a gateway without plugins starts");
    let (status, _, body) = post(&base(&gateway_only), "in.later", b"x", &[]).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    let (_, retry, doc) = get(&format!("{}/v1/events/{id}", base(&gateway_only))).await;
    assert_eq!(doc["status"], "accepted", "{doc}");
    assert_eq!(retry.as_deref(), Some("1"));
    // A long poll held while no host runs the plugin answers when one does.
    let long_poll = tokio::spawn(get(format!(
        "{}/v1/events/{id}?wait=60s",
        base(&gateway_only)
    )));
    let worker = Host::start(&gateway_host(&server, &[relay]))
        .await
        .expect("the worker starts");
    let (status, _, changed) = long_poll.await.expect("the poll ends");
    assert_eq!(status, 200);
    assert_ne!(
        changed["status"], "accepted",
        "the wait ends on a change: {changed}"
    );
    gateway_only.stop().await.expect("clean stop");
    let doc = poll_final(&base(&worker), &id).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let other = Host::start(&gateway_host(&server, &[]))
        .await
        .expect("another gateway starts");
    let (status, _, again) = get(&format!("{}/v1/events/{id}", base(&other))).await;
    assert_eq!(status, 200);
    assert_eq!(again, doc, "every gateway reads the same document");
    other.stop().await.expect("clean stop");
    worker.stop().await.expect("clean stop");
}
