//! Batches (issue 17): events of a subscription with `batch` reach the
//! plugin many to a call, and each is settled on its own: its outputs and ack
//! on `ok`, its own retry, its own dead letter. A call that fails as a whole
//! is split until the event that fails it runs alone. Fates are counted by
//! weir itself (calls, events handed to the plugin, settlements) and by raw
//! publishes seen on a core subscriber, not by a stream's dedupe.
//!
//! The plugin: `plugins/batch` (Rust), whose every event's outcome is its
//! payload's `<kind>:<n>`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use async_nats::jetstream;
use weir_host::host::Host;
use weir_host::plugin::Stats;

use crate::support::*;

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Wait until the plugin has settled `n` events (succeeded or dead-lettered).
async fn wait_settled(stats: &Stats, n: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 4;
    loop {
        let settled = get(&stats.succeeded) + get(&stats.dead_lettered);
        assert!(settled <= n, "{settled} events settled, more than {n}");
        if settled == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{settled} of {n} events settled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Publish `payloads` on `<prefix>.<i>`, pipelined, each stored.
async fn publish_all(client: &async_nats::Client, prefix: &str, payloads: &[String]) {
    let js = jetstream::new(client.clone());
    // In rounds: async-nats keeps at most 5,000 acks pending.
    for (round, chunk) in payloads.chunks(1_000).enumerate() {
        let mut acks = Vec::with_capacity(chunk.len());
        for (j, payload) in chunk.iter().enumerate() {
            let i = round * 1_000 + j;
            let ack = js
                .publish(format!("{prefix}.{i}"), payload.clone().into())
                .await
                .expect("publish");
            acks.push(ack);
        }
        for ack in acks {
            ack.await.expect("stored");
        }
    }
}

/// `n` payloads `ok:<i>`, but `<kind>:<at>` at index `at`.
fn ok_but(n: usize, at: usize, kind: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i == at {
                format!("{kind}:{i}")
            } else {
                format!("ok:{i}")
            }
        })
        .collect()
}

/// Every event's outputs by payload, from the messages on `batched.ok`.
fn by_payload(outputs: &[async_nats::Message]) -> HashMap<String, Vec<String>> {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for msg in outputs {
        let payload = String::from_utf8(msg.payload.to_vec()).expect("utf-8 payload");
        let attempt = header(msg, "Batch-Attempt").unwrap_or_default();
        seen.entry(payload).or_default().push(attempt);
    }
    seen
}

/// 10,000 JetStream events through a batch plugin: 1 in 10 rejects, 1 in 10
/// asks for a retry on its first attempt, the rest succeed. Every event's fate
/// is exact: 9,000 outputs (each once, the retried ones from their second
/// attempt), 1,000 dead letters of kind `reject`, the plugin handed 11,000
/// events in all (the retried ones twice) in far fewer calls, no call
/// split, nothing settled twice, the consumer idle.
async fn every_fate_exact(
    Lane {
        plugin,
        stream,
        prefix,
    }: Lane,
) {
    const N: usize = 10_000;
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, stream, &[&format!("{prefix}.>")]).await;
    let mut outputs = client.subscribe("batched.ok").await.expect("subscribe");
    let mut letters = client.subscribe("weir.dlq.>").await.expect("subscribe");
    let mut raw = RawCount::start(&client, "batched.ok").await;

    let payloads: Vec<String> = (0..N)
        .map(|i| match i % 10 {
            0 => format!("reject:{i}"),
            1 => format!("retry:{i}"),
            _ => format!("ok:{i}"),
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = bundle_copy(plugin, dir.path(), |m| m);
    let host = Host::start(&host_config(&server, &[bundle]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let stats = host.plugins()[0].stats.clone();
    publish_all(&client, prefix, &payloads).await;

    wait_settled(&stats, N as u64).await;
    let outputs = collect(&mut outputs, N - N / 10).await;
    let letters = collect(&mut letters, N / 10).await;
    wait_consumer_idle(&client, stream).await;
    host.stop().await.expect("host stops");

    assert_eq!(raw.count().await, (N - N / 10) as u64, "raw publishes");
    let seen = by_payload(&outputs);
    for payload in &payloads {
        let attempts = seen.get(payload).map(Vec::as_slice).unwrap_or_default();
        match payload.split(':').next() {
            Some("reject") => assert!(attempts.is_empty(), "{payload}: {attempts:?}"),
            Some("retry") => assert_eq!(attempts, ["2"], "{payload}"),
            _ => assert_eq!(attempts, ["1"], "{payload}"),
        }
    }
    let mut rejected: Vec<String> = letters
        .iter()
        .map(|m| {
            assert_eq!(header(m, "Weir-Error-Kind").as_deref(), Some("reject"));
            String::from_utf8(m.payload.to_vec()).expect("utf-8")
        })
        .collect();
    rejected.sort();
    let mut expected: Vec<String> = payloads
        .iter()
        .filter(|p| p.starts_with("reject:"))
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(
        rejected, expected,
        "the dead letters are the rejects, once each"
    );

    assert_eq!(get(&stats.succeeded), (N - N / 10) as u64);
    assert_eq!(get(&stats.dead_lettered), (N / 10) as u64);
    assert_eq!(get(&stats.retried), (N / 10) as u64);
    assert_eq!(
        get(&stats.batched_events),
        (N + N / 10) as u64,
        "handler invocations"
    );
    assert_eq!(get(&stats.batch_splits), 0);
    let calls = get(&stats.batches);
    assert!(
        calls * 4 <= (N + N / 10) as u64,
        "{calls} calls for {} events: not batched",
        N + N / 10
    );
    assert_eq!(
        get(&stats.redelivered),
        (N / 10) as u64,
        "only the retries came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_batches_settle_every_event_on_its_own() {
    every_fate_exact(RUST).await;
}

/// The same through the Python SDK's `handle_batch` (plugins/batch-python).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_batches_settle_every_event_on_its_own() {
    every_fate_exact(PYTHON).await;
}

/// A batch test plugin: its folder, stream and subject prefix.
#[derive(Clone, Copy)]
struct Lane {
    plugin: &'static str,
    stream: &'static str,
    prefix: &'static str,
}

const RUST: Lane = Lane {
    plugin: "batch",
    stream: "BATCHRS",
    prefix: "batch.rust",
};
const PYTHON: Lane = Lane {
    plugin: "batch-python",
    stream: "BATCHPY",
    prefix: "batch.python",
};
const JS: Lane = Lane {
    plugin: "batch-js",
    stream: "BATCHJS",
    prefix: "batch.js",
};
const C: Lane = Lane {
    plugin: "batch-c",
    stream: "BATCHC",
    prefix: "batch.c",
};

/// `publish` `events` events before the host starts, so they come in one
/// pull and one batch; run until all are settled (`failing` of them
/// dead-lettered); the outputs, the dead letters and
/// the plugin's counters.
async fn one_batch(
    lane: Lane,
    (events, failing): (usize, usize),
    edit: impl FnOnce(String) -> String,
    config: impl FnOnce(&mut weir_host::config::HostConfig),
    publish: impl AsyncFnOnce(&async_nats::Client),
) -> (
    Vec<async_nats::Message>,
    Vec<async_nats::Message>,
    std::sync::Arc<Stats>,
) {
    let server = NatsServer::start();
    let client = server.client().await;
    let subjects = format!("{}.>", lane.prefix);
    create_stream(&client, lane.stream, &[&subjects]).await;
    let mut outputs = client.subscribe("batched.ok").await.expect("subscribe");
    let mut letters = client.subscribe("weir.dlq.>").await.expect("subscribe");
    publish(&client).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = bundle_copy(lane.plugin, dir.path(), edit);
    let mut host_config = host_config(&server, &[bundle]);
    config(&mut host_config);
    let host = Host::start(&host_config).await.expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let stats = host.plugins()[0].stats.clone();
    wait_settled(&stats, events as u64).await;
    let outputs = collect(&mut outputs, events - failing).await;
    let letters = collect(&mut letters, failing).await;
    wait_consumer_idle(&client, lane.stream).await;
    host.stop().await.expect("host stops");
    (outputs, letters, stats)
}

/// 64 events, one of which traps the instance: the batch of 64 fails as a
/// whole, is split at most 6 times, and only the poison event is
/// dead-lettered, as a `trap` naming the panic; the 63 others succeed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_event_is_found_by_bisection_and_dead_lettered_alone() {
    trap_found_by_bisection(RUST).await;
}

/// The same with a Python `handle_batch` that raises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raising_python_event_is_found_by_bisection_and_dead_lettered_alone() {
    trap_found_by_bisection(PYTHON).await;
}

/// The same with a JavaScript `handleBatch` that throws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throwing_js_event_is_found_by_bisection_and_dead_lettered_alone() {
    trap_found_by_bisection(JS).await;
}

/// The same with a C `weir_handle_batch` that traps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_c_event_is_found_by_bisection_and_dead_lettered_alone() {
    trap_found_by_bisection(C).await;
}

async fn trap_found_by_bisection(lane: Lane) {
    let payloads = ok_but(64, 41, "trap");
    let (outputs, letters, stats) = one_batch(
        lane,
        (payloads.len(), 1),
        |m| m,
        |_| {},
        async |client| publish_all(client, lane.prefix, &payloads).await,
    )
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.payload.as_ref(), b"trap:41");
    assert_eq!(header(letter, "Weir-Error-Kind").as_deref(), Some("trap"));
    let error = header(letter, "Weir-Error").unwrap_or_default();
    assert!(error.contains("trap requested by payload"), "{error}");
    let seen = by_payload(&outputs);
    assert_eq!(seen.len(), 63);
    assert!(seen.values().all(|attempts| attempts == &["1"]), "{seen:?}");
    let splits = get(&stats.batch_splits);
    assert!((1..=6).contains(&splits), "{splits} splits");
    assert_eq!(get(&stats.succeeded), 63);
    assert_eq!(get(&stats.dead_lettered), 1);
    // Its attempts are its own, as if it had come alone: a trap is retried
    // by the policy (max_attempts = 3); the splits cost it none.
    assert_eq!(get(&stats.failed_attempts), 3);
}

/// A handler that returns one result fewer than it got events is caught: the
/// call fails as a whole, is split, and the event that shortens it is
/// dead-lettered as `bad-output` naming both counts; the others succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_results_are_caught_and_bisected() {
    let payloads = ok_but(16, 5, "short");
    let (outputs, letters, stats) = one_batch(
        RUST,
        (payloads.len(), 1),
        |m| m,
        |_| {},
        async |client| publish_all(client, "batch.rust", &payloads).await,
    )
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload.as_ref(), b"short:5");
    assert_eq!(
        header(&letters[0], "Weir-Error-Kind").as_deref(),
        Some("bad-output")
    );
    let error = header(&letters[0], "Weir-Error").unwrap_or_default();
    assert!(error.contains("returned 0 results for 1 events"), "{error}");
    assert_eq!(by_payload(&outputs).len(), 15);
    assert!(get(&stats.batch_splits) >= 1);
}

/// Producer tokens are checked per event: in a batch of 8, the one event
/// with a token from an untrusted key is dead-lettered as `unauthorized`
/// (without its token), and the 7 with valid tokens succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_producer_token_dead_letters_only_its_event() {
    use weir_host::auth::config::{KeyAlg, KeyConfig};
    use weir_host::auth::signing::{SigningKey, generate};
    use weir_host::auth::token::{TokenSpec, issue};

    let keys = tempfile::tempdir().expect("key dir");
    generate(KeyAlg::EdDsa, keys.path(), "prod-1").expect("key");
    generate(KeyAlg::EdDsa, keys.path(), "other-1").expect("key");
    let token = |kid: &str| {
        let key = SigningKey::load(&keys.path().join(format!("{kid}.key.pem")), None)
            .expect("signing key");
        issue(
            &key,
            &TokenSpec {
                issuer: "producers".into(),
                subject: "svc".into(),
                audience: "batch".into(),
                ttl: std::time::Duration::from_secs(600),
                claims: Default::default(),
            },
        )
        .expect("token")
    };
    let (good, bad) = (token("prod-1"), token("other-1"));
    let payloads: Vec<String> = (0..8).map(|i| format!("ok:{i}")).collect();
    let trusted = KeyConfig {
        issuer: "producers".into(),
        alg: KeyAlg::EdDsa,
        file: Some(keys.path().join("prod-1.pub.pem")),
        jwks: None,
        kid: None,
    };
    let (outputs, letters, stats) = one_batch(
        RUST,
        (payloads.len(), 1),
        |m| format!("{m}\n[auth]\nissuers = [\"producers\"]\n"),
        |config| config.auth.keys = vec![trusted],
        async |client| {
            let js = jetstream::new(client.clone());
            for (i, payload) in payloads.iter().enumerate() {
                let mut headers = async_nats::HeaderMap::new();
                let token = if i == 3 { &bad } else { &good };
                headers.insert("Authorization", format!("Bearer {token}").as_str());
                js.publish_with_headers(format!("batch.rust.{i}"), headers, payload.clone().into())
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
            }
        },
    )
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload.as_ref(), b"ok:3");
    assert_eq!(
        header(&letters[0], "Weir-Error-Kind").as_deref(),
        Some("unauthorized")
    );
    assert!(
        header(&letters[0], "Authorization").is_none(),
        "the token is kept out"
    );
    let seen = by_payload(&outputs);
    assert_eq!(seen.len(), 7);
    assert!(!seen.contains_key("ok:3"));
    assert_eq!(get(&stats.batched_events), 7, "the refused event never ran");
}

/// `weir test` runs a fixture of several events as one batch and prints each
/// event's verdict: the trapping one is found by splitting and fails alone,
/// the others pass with their own outcome.
#[test]
fn weir_test_runs_several_events_as_one_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = dir.path().join("events.json");
    std::fs::write(
        &fixture,
        r#"[{"subject": "batch.rust.1", "payload": "ok:1"},
            {"subject": "batch.rust.2", "payload": "trap:2"},
            {"subject": "batch.rust.3", "payload": "reject:3"}]"#,
    )
    .expect("write fixture");
    let out = std::process::Command::new(WEIR)
        .arg("test")
        .arg(bundle("batch"))
        .arg("--event")
        .arg(&fixture)
        .output()
        .expect("run weir test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a trap fails the run:\n{stdout}");
    let verdict = |i: usize| {
        let tag = format!("events.json#{i} ");
        stdout
            .lines()
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no verdict for #{i} in:\n{stdout}"))
            .to_owned()
    };
    assert!(verdict(0).starts_with("PASS"), "{stdout}");
    assert!(verdict(1).starts_with("FAIL"), "{stdout}");
    assert!(verdict(2).starts_with("PASS"), "{stdout}");
    assert!(stdout.contains("trap requested by payload"), "{stdout}");
    assert!(stdout.contains("rejected by payload"), "{stdout}");
    assert!(stdout.contains("ok:1"), "{stdout}");
}

/// SIGTERM's rule holds for every event of a batch: stopping while a batch
/// of 8 runs (one call slot, 64 events stored), the 8 finish and are settled
/// with their outputs, and the rest are handed back at once. A second host
/// then handles exactly those 56, well before `ack_wait` (60 s, longer than
/// the test's patience) could have recovered a stranded one.
#[tokio::test(flavor = "current_thread")]
async fn stopping_settles_the_running_batch_and_hands_back_the_rest() {
    let (logs, _guard) = capture_logs();
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "BATCHRS", &["batch.rust.>"]).await;
    let payloads: Vec<String> = (0..64).map(|i| format!("busy:{i}")).collect();
    publish_all(&client, "batch.rust", &payloads).await;
    let mut raw = RawCount::start(&client, "batched.ok").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = bundle_copy("batch", dir.path(), |m| {
        m.replace("max_events = 64", "max_events = 8")
            .replace("max_in_flight = 4", "max_in_flight = 1\ntimeout_ms = 20000")
    });
    let config = host_config(&server, &[bundle]);
    let host = Host::start(&config).await.expect("host starts");
    let stats = host.plugins()[0].stats.clone();
    logs.wait_for(&["busy batch of 8"]).await;
    assert_eq!(get(&stats.succeeded), 0, "the first batch is still running");
    host.stop().await.expect("host stops");
    assert_eq!(get(&stats.succeeded), 8, "the running batch finished");
    assert_eq!(
        get(&stats.batched_events),
        8,
        "nothing started after the stop"
    );
    assert!(get(&stats.handed_back) > 0, "nothing was handed back");
    assert_eq!(raw.count().await, 8);

    let second = Host::start(&config).await.expect("second host starts");
    let again = second.plugins()[0].stats.clone();
    wait_settled(&again, 56).await;
    wait_consumer_idle(&client, "BATCHRS").await;
    second.stop().await.expect("host stops");
    assert_eq!(get(&again.succeeded), 56, "each unfinished event once");
    assert_eq!(
        raw.count().await,
        64,
        "one output per event across both hosts"
    );
}
