//! Order per key (issue 18), on one host: with `order_by`, events that share
//! a key run one at a time and in stream order, while other keys run in
//! parallel; a retrying event holds its key (it retries in-process), and no
//! later event of the key overtakes it. Shown from the outputs of
//! `plugins/ordered`, which stamps each run's key, per-key sequence and its
//! handler's start and end times (one machine, one clock), and by weir's own
//! counts. The same run without `order_by` breaks the order, so the checks
//! can fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use async_nats::jetstream;
use weir_host::host::Host;
use weir_host::plugin::Stats;

use crate::support::*;

const KEYS: usize = 40;
const PER_KEY: usize = 25;

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Whether event `seq` of key `key` asks for a retry on its first attempt:
/// about 5% of them.
fn retries(key: usize, seq: usize) -> bool {
    (key * 31 + seq * 17).is_multiple_of(20)
}

/// Publish `PER_KEY` events for each of `KEYS` keys, interleaved (seq 0 of
/// every key, then seq 1, ...), each stored before the next round. `keyless`
/// more events carry no `Order-Key`.
async fn publish_keyed(client: &async_nats::Client, keyless: usize) {
    let js = jetstream::new(client.clone());
    for seq in 0..PER_KEY {
        let mut acks = Vec::with_capacity(KEYS);
        for key in 0..KEYS {
            let mut headers = HeaderMap::new();
            headers.insert("Order-Key", format!("k{key}").as_str());
            headers.insert("Order-Seq", seq.to_string().as_str());
            let payload = if retries(key, seq) { "retry" } else { "ok" };
            let ack = js
                .publish_with_headers(format!("ordered.in.k{key}"), headers, payload.into())
                .await
                .expect("publish");
            acks.push(ack);
        }
        for ack in acks {
            ack.await.expect("stored");
        }
    }
    for i in 0..keyless {
        js.publish(format!("ordered.in.none{i}"), "ok".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

/// One run's output, as the plugin stamped it.
struct Run {
    seq: usize,
    start: u128,
    end: u128,
}

fn number<T: std::str::FromStr>(msg: &async_nats::Message, name: &str) -> T {
    header(msg, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("output without a numeric {name}"))
}

/// Per key, its runs in the order their outputs arrived.
fn by_key(outputs: &[async_nats::Message]) -> HashMap<String, Vec<Run>> {
    let mut keys: HashMap<String, Vec<Run>> = HashMap::new();
    for msg in outputs {
        let key = header(msg, "Order-Key").expect("Order-Key");
        keys.entry(key).or_default().push(Run {
            seq: number(msg, "Order-Seq"),
            start: number(msg, "Start-Ns"),
            end: number(msg, "End-Ns"),
        });
    }
    keys
}

/// Order violations: per key, an output whose sequence is not the previous
/// one's plus one, or a run that started before the previous one ended.
fn violations(keys: &HashMap<String, Vec<Run>>) -> Vec<String> {
    let mut found = out_of_sequence(keys);
    found.extend(overlaps(keys));
    found
}

fn out_of_sequence(keys: &HashMap<String, Vec<Run>>) -> Vec<String> {
    let mut found = Vec::new();
    for (key, runs) in keys {
        for pair in runs.windows(2) {
            if pair[1].seq != pair[0].seq + 1 {
                found.push(format!("{key}: seq {} after {}", pair[1].seq, pair[0].seq));
            }
        }
    }
    found
}

/// Per key, two runs at once (by start time, whatever their sequence).
fn overlaps(keys: &HashMap<String, Vec<Run>>) -> Vec<String> {
    let mut found = Vec::new();
    for (key, runs) in keys {
        let mut by_start: Vec<&Run> = runs.iter().collect();
        by_start.sort_by_key(|r| r.start);
        for pair in by_start.windows(2) {
            if pair[1].start < pair[0].end {
                found.push(format!(
                    "{key}: seq {} ran during seq {}",
                    pair[1].seq, pair[0].seq
                ));
            }
        }
    }
    found
}

/// The most runs of different keys that overlapped at one moment.
fn widest_overlap(keys: &HashMap<String, Vec<Run>>) -> usize {
    let mut edges: Vec<(u128, i32)> = keys
        .values()
        .flatten()
        .flat_map(|r| [(r.start, 1), (r.end, -1)])
        .collect();
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// Run the plugin (edited by `edit`) over the keyed events and `keyless`
/// more; return the outputs, the dead letters and the plugin's counters.
async fn run(
    edit: impl FnOnce(String) -> String,
    keyless: usize,
) -> (
    Vec<async_nats::Message>,
    Vec<async_nats::Message>,
    std::sync::Arc<weir_host::plugin::Stats>,
) {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ORDERED", &["ordered.in.>"]).await;
    let mut outputs = client.subscribe("ordered.out").await.expect("subscribe");
    let mut letters = client.subscribe("weir.dlq.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = bundle_copy("ordered", dir.path(), edit);
    let host = Host::start(&host_config(&server, &[bundle]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let stats = host.plugins()[0].stats.clone();
    publish_keyed(&client, keyless).await;
    let outputs = collect(&mut outputs, KEYS * PER_KEY).await;
    let letters = collect(&mut letters, keyless).await;
    wait_consumer_idle(&client, "ORDERED").await;
    host.stop().await.expect("host stops");
    (outputs, letters, stats)
}

/// 40 keys × 25 events, 5% retried once, 16 at once: per key every event
/// has one output, in sequence, and no two runs of a key overlap, while
/// runs of different keys do; events waited behind their keys; the retries
/// ran here (no redelivery); an event without a key is dead-lettered as
/// `bad-input` naming the order key, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_key_run_one_at_a_time_in_order_and_keys_run_in_parallel() {
    let (outputs, letters, stats) = run(|m| m, 1).await;
    let keys = by_key(&outputs);
    assert_eq!(keys.len(), KEYS);
    for (key, runs) in &keys {
        assert_eq!(runs.len(), PER_KEY, "{key}: one output per event");
    }
    let broken = violations(&keys);
    assert!(broken.is_empty(), "{broken:#?}");
    let widest = widest_overlap(&keys);
    assert!(widest > 1, "keys ran one at a time: {widest}");

    assert_eq!(letters.len(), 1);
    assert_eq!(
        header(&letters[0], "Weir-Error-Kind").as_deref(),
        Some("bad-input")
    );
    let error = header(&letters[0], "Weir-Error").unwrap_or_default();
    assert!(error.contains("header:Order-Key"), "{error}");

    let retried = (0..KEYS)
        .flat_map(|k| (0..PER_KEY).map(move |s| (k, s)))
        .filter(|&(k, s)| retries(k, s))
        .count() as u64;
    assert!(retried > 0);
    assert_eq!(get(&stats.retried), retried);
    assert_eq!(get(&stats.succeeded), (KEYS * PER_KEY) as u64);
    assert_eq!(get(&stats.dead_lettered), 1);
    assert_eq!(get(&stats.redelivered), 0, "retries ran in-process");
    assert!(
        get(&stats.order_waits) > 0,
        "no event waited behind its key"
    );
    assert_eq!(Stats::level(&stats.order_waiting), 0);
}

/// Without `order_by`, the same run breaks the order a key needs: a retried
/// event (backoff 1 s) is overtaken by its key's later events (so the
/// checks above are not vacuous).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_order_by_the_same_events_run_out_of_order() {
    let unordered = |m: String| {
        m.replace("order_by = \"header:Order-Key\"\n", "")
            .replace("backoff_ms = [30]", "backoff_ms = [1000]")
    };
    let (outputs, _, stats) = run(unordered, 0).await;
    assert_eq!(outputs.len(), KEYS * PER_KEY);
    assert_eq!(get(&stats.order_waits), 0);
    let broken = violations(&by_key(&outputs));
    assert!(!broken.is_empty(), "unordered runs kept every key's order");
}

/// Two hosts on one ordered subscription: the consumer is pinned to one of
/// them (priority group `pinned_client`), so only that one runs events and
/// no key runs on two hosts at once. When it stops (at about 30%), the
/// other takes over once the pin lapses (its ack_wait, 10 s here): every
/// event still has exactly one output and no two runs of a key overlap.
/// (The events the stopping host handed back may reach the other out of
/// their keys' order: not asserted, see README "Ordering".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_stands_by_and_takes_over_in_order() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ORDERED", &["ordered.in.>"]).await;
    let mut outputs = client.subscribe("ordered.out").await.expect("subscribe");
    client.flush().await.expect("flush");
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = bundle_copy("ordered", dir.path(), |m| m);
    let config = host_config(&server, &[bundle]);
    let first = Host::start(&config).await.expect("host starts");
    let second = Host::start(&config).await.expect("host starts");
    let stats = [
        first.plugins()[0].stats.clone(),
        second.plugins()[0].stats.clone(),
    ];
    publish_keyed(&client, 0).await;
    let total = (KEYS * PER_KEY) as u64;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let active = loop {
        let done = [get(&stats[0].succeeded), get(&stats[1].succeeded)];
        if let Some(active) = (0..2).find(|&i| done[i] >= total * 3 / 10) {
            assert_eq!(done[1 - active], 0, "both hosts ran events: {done:?}");
            break active;
        }
        assert!(tokio::time::Instant::now() < deadline, "{done:?} done");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let [stopping, standing_by] = if active == 0 {
        [first, second]
    } else {
        [second, first]
    };
    stopping.stop().await.expect("host stops");
    let before = get(&stats[active].succeeded);
    assert!(before < total, "the first host finished everything");
    let outputs = collect(&mut outputs, KEYS * PER_KEY).await;
    wait_consumer_idle(&client, "ORDERED").await;
    standing_by.stop().await.expect("host stops");

    let keys = by_key(&outputs);
    for (key, runs) in &keys {
        assert_eq!(runs.len(), PER_KEY, "{key}: one output per event");
        let mut seqs: Vec<usize> = runs.iter().map(|r| r.seq).collect();
        seqs.sort_unstable();
        assert!(seqs.iter().copied().eq(0..PER_KEY), "{key}: {seqs:?}");
    }
    let overlapping = overlaps(&keys);
    assert!(overlapping.is_empty(), "{overlapping:#?}");
    assert_eq!(get(&stats[1 - active].succeeded), total - before);
    assert_eq!(
        get(&stats[active].dead_lettered) + get(&stats[1 - active].dead_lettered),
        0
    );
}
