//! Issue 14, end to end through the `weir` binary: an event accepted over
//! HTTP whose plugin is failing (its dependency down, so it is `retrying`)
//! when the host is SIGKILLed; a second host takes the event over, it
//! succeeds, the status says so through any gateway, and the webhook of its
//! final status reaches a receiver that was itself down for the first
//! deliveries — exactly once, its signature checked by the Standard Webhooks
//! project's own library.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::gateway::{get, poll_final, post};
use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply, wait_until};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_ENV: &str = "WEIR_TEST_WEBHOOK_SECRET";

/// weir.toml for a host with the gateway and `bundle`.
fn write_config(server: &NatsServer, dir: &Path, bundle: &Path) -> String {
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "[nats]\nurl = \"{}\"\n[plugins]\ndirs = []\nbundles = [\"{}\"]\n\
             [sandbox]\ncache_dir = \"{}/weir-cache\"\n\
             [telemetry]\nlisten = \"127.0.0.1:0\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\ncallback_allow = [\"http://127.0.0.1:*/*\"]\n\
             webhook_secret_env = \"{SECRET_ENV}\"\nwebhook_backoff_ms = [200]\n",
            server.url(),
            bundle.display(),
            env!("CARGO_TARGET_TMPDIR"),
        ),
    )
    .expect("write weir.toml");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Start `weir up`; where its gateway and its /metrics listen, from its log.
fn start_host(config: &str) -> (WeirProcess, String, String) {
    let mut host = WeirProcess::start(
        &["up", "--config", config],
        &[(SECRET_ENV, SECRET), ("WEIR_LOG", "info")],
    );
    let log = host.wait_for_output("weir is up");
    let listen = |what: &str| {
        let line = log
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what} line:\n{log}"));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .unwrap_or_else(|| panic!("no listen= in {line:?}"));
        format!("http://{addr}")
    };
    let (gateway, metrics) = (listen("HTTP gateway"), listen("telemetry: /metrics"));
    (host, gateway, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_retry_loses_neither_the_status_nor_the_webhook() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "DEP_IN", &["dep.in.>"]).await;
    create_stream(&client, "DEP_OUT", &["dep.out.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The dependency is down for a few seconds more than it takes to see
    // the event retrying and kill the host.
    let down_until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        + 4_000;
    let outage = bundle_copy("outage", dir.path(), |m| {
        m.replace(
            "down_until_ms = \"0\"",
            &format!("down_until_ms = \"{down_until}\""),
        ) + "[retry]\nmax_attempts = 100\nbackoff_ms = [300]\n"
    });
    let config = write_config(&server, dir.path(), &outage);
    // The receiver is down (503) for the first two deliveries.
    let receiver = Receiver::start(
        SECRET,
        &[Reply::Status(503), Reply::Status(503)],
        Reply::Status(204),
    )
    .await;
    let callback = receiver.url("order");

    let (first, base, _) = start_host(&config);
    let (status, _, body) = post(
        &base,
        "dep.in.order-9",
        b"{}",
        &[("weir-callback", &callback)],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    // The fault must hit unfinished work: wait until the event is retrying.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        // No ?wait: a long poll answers with the next status, and this one
        // bounces between running and retrying.
        let (_, _, doc) = get(&format!("{base}/v1/events/{id}")).await;
        if doc["status"] == "retrying" {
            assert_eq!(doc["error"]["kind"], "retry", "{doc}");
            break;
        }
        assert_ne!(
            doc["status"], "succeeded",
            "finished before the kill: {doc}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "never retrying: {doc}"
        );
    }
    let log = first.kill();
    assert!(!log.contains("plugin totals"), "a SIGKILL, not a shutdown");

    let (second, base, metrics) = start_host(&config);
    let doc = poll_final(&base, &id).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert!(doc["attempts"].as_u64().is_some_and(|a| a > 1), "{doc}");
    assert_eq!(doc["outputs"][0]["subject"], "dep.out.order-9");
    wait_stream_count(&client, "DEP_OUT", 1).await;

    // The webhook: after two 503s, one verified delivery of the final status.
    wait_until("the webhook delivered", || !receiver.delivered().is_empty()).await;
    let hits = receiver.hits();
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "exactly one delivered: {hits:?}");
    let hit = &delivered[0];
    assert_eq!(
        hit.verified,
        Ok(()),
        "the spec's library verifies the signature"
    );
    let sent: serde_json::Value = serde_json::from_slice(&hit.body).expect("a JSON body");
    assert_eq!(sent["id"], id.as_str());
    assert_eq!(sent["status"], "succeeded");
    assert!(hits.len() >= 3, "the receiver was down first: {hits:?}");
    // No job is left to deliver (the queue is empty and its consumer idle),
    // so no second webhook can come for the same final status.
    wait_consumer_idle(&client, "WEIR_WEBHOOKS").await;
    assert_eq!(stream_count(&client, "WEIR_WEBHOOKS").await, 0);
    assert_eq!(
        receiver.delivered().len(),
        1,
        "one webhook per final status"
    );
    // The deliverer's own counts, on /metrics.
    let scrape = crate::metrics::scrape(&metrics).await;
    let count = |outcome| {
        crate::metrics::value(
            &scrape,
            "weir_webhook_deliveries_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(count("delivered"), 1.0);
    assert_eq!(count("retried"), 2.0, "the receiver's two 503s");
    assert_eq!(count("dead_lettered"), 0.0);
    let (status, log) = second.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains(SECRET), "the secret never reaches the log");
    assert!(
        !log.contains(&SECRET[6..]),
        "the secret never reaches the log"
    );
}
