//! Issue 13, review: what a swap reports is true. Once a host runs the new
//! version (its roster, which `weir ps` reads), no event runs on the old one:
//! every output stored after that comes from the new version, whether the
//! swap kept the pipeline (in place) or wired a new one beside it. A new
//! durable consumer (a subject changed, no `durable` named) starts where the
//! old one stopped instead of replaying the stream. The relay's `busy_ms`
//! keeps events queued and running on the old version while it is swapped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use weir_host::host::Host;

use crate::deploy::{json, weir};
use crate::support::*;
use crate::swap::*;

/// `bundle`'s events take `ms` each.
fn busy(bundle: PathBuf, ms: u64) -> PathBuf {
    let path = bundle.join("plugin.toml");
    let text = std::fs::read_to_string(&path).expect("manifest");
    // [config] is the manifest's last table (see `relay`).
    std::fs::write(&path, format!("{text}busy_ms = \"{ms}\"\n")).expect("manifest");
    bundle
}

fn deploy(url: &str, bundle: &Path) {
    json(&weir(url, &["deploy", s(bundle), "--json"]));
}

/// The last sequence of the OUT stream: every output stored so far.
async fn out_last(client: &async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("OUT").await.expect("OUT");
    stream.info().await.expect("OUT info").state.last_sequence
}

/// The outputs stored in OUT after sequence `cut`: (event index, tag).
async fn stored_after(client: &async_nats::Client, cut: u64) -> Vec<(usize, String)> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("OUT").await.expect("OUT");
    let last = out_last(client).await;
    let mut out = Vec::new();
    for seq in cut + 1..=last {
        let m = stream.get_raw_message(seq).await.expect("stored output");
        let i = (m.subject.strip_prefix("out.").and_then(|i| i.parse().ok()))
            .expect("an output subject out.<index>");
        let tag = m.headers.get("Relay-Tag").map(|v| v.as_str().to_owned());
        out.push((i, tag.unwrap_or_default()));
    }
    out
}

/// Swap under a backlog: `v2` deployed while `v1` works through `events`
/// stored events; every output stored after the host runs v2 is v2's, and
/// every event is handled once.
async fn swap_under_backlog(v1: &Path, v2: &Path, events: usize) {
    let server = NatsServer::start();
    let url = server.url();
    let client = server.client().await;
    deploy(&url, v1);
    let host = Host::start(&following(&server)).await.expect("host");
    until_all_run(&[&host], "relay", Some("0.1.0")).await;
    let mut out = client.subscribe("out.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let next = Arc::new(AtomicUsize::new(0));
    produce(client.clone(), 0..events, Duration::ZERO, true, next).await;
    // v1 is busy (10 events a second): events queued and running on it.
    until_succeeded(&[&host], 4).await;
    deploy(&url, v2);
    until_all_run(&[&host], "relay", Some("0.2.0")).await;
    let cut = out_last(&client).await;
    let outputs = gather(&mut out, events).await;
    until_succeeded(&[&host], events as u64).await;
    exactly_once(&[&host], &outputs, events);
    let late = stored_after(&client, cut).await;
    assert!(
        !late.is_empty(),
        "the swap finished after the backlog: {cut} outputs stored when the host reported v2, {} at the end",
        out_last(&client).await
    );
    let stale: Vec<_> = late.iter().filter(|(_, tag)| tag != "v2").collect();
    assert!(
        stale.is_empty(),
        "stored after the host reported v2, from v1: {stale:?}"
    );
    host.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewire_reports_the_new_version_once_the_old_one_is_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = "[limits]\nmax_in_flight = 2\n";
    let v1 = busy(
        relay(dir.path(), "v1", "0.1.0", "v1", "jetstream", limits),
        100,
    );
    // Other limits: a pipeline of its own beside v1's.
    let v2 = relay(
        dir.path(),
        "v2",
        "0.2.0",
        "v2",
        "jetstream",
        "[limits]\nmax_in_flight = 8\n",
    );
    // Slow enough that the backlog outlasts the swap.
    let v2 = busy(v2, 20);
    swap_under_backlog(&v1, &v2, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_swap_reports_the_new_version_once_the_old_one_is_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = "[limits]\nmax_in_flight = 2\n";
    // The same wiring: one pipeline, its version replaced.
    let v1 = busy(
        relay(dir.path(), "v1", "0.1.0", "v1", "jetstream", limits),
        100,
    );
    let v2 = busy(
        relay(dir.path(), "v2", "0.2.0", "v2", "jetstream", limits),
        20,
    );
    swap_under_backlog(&v1, &v2, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_swap_under_continuous_load_handles_each_event_once() {
    const EVENTS: usize = 400;
    let server = NatsServer::start();
    let url = server.url();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Only the wasm's config differs: swapped in place. Events take 10 ms,
    // so some run on v1 as it is swapped.
    let v1 = busy(relay(dir.path(), "v1", "0.1.0", "v1", "jetstream", ""), 10);
    let v2 = busy(relay(dir.path(), "v2", "0.2.0", "v2", "jetstream", ""), 10);
    deploy(&url, &v1);
    let host = Host::start(&following(&server)).await.expect("host");
    until_all_run(&[&host], "relay", Some("0.1.0")).await;
    let mut out = client.subscribe("out.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let (next, producer) = load_under_way(&client, EVENTS).await;
    deploy(&url, &v2);
    until_all_run(&[&host], "relay", Some("0.2.0")).await;
    let cut = out_last(&client).await;
    let swapped_at = after(&next);
    assert!(swapped_at < EVENTS, "the swap finished after the load");
    producer.await.expect("producer");
    let outputs = gather(&mut out, EVENTS).await;
    until_succeeded(&[&host], EVENTS as u64).await;
    exactly_once(&[&host], &outputs, EVENTS);
    all_tagged_from(&outputs, swapped_at, "v2");
    let stale: Vec<_> = (stored_after(&client, cut).await.into_iter())
        .filter(|(_, tag)| tag != "v2")
        .collect();
    assert!(
        stale.is_empty(),
        "stored after the host reported v2, from v1: {stale:?}"
    );
    host.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subject_starts_where_the_old_consumer_stopped() {
    const BEFORE: usize = 50;
    const AFTER: usize = 30;
    let server = NatsServer::start();
    let url = server.url();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = relay(dir.path(), "v1", "0.1.0", "v1", "jetstream", "");
    // `in.*` instead of `in.>`: another durable consumer, none named.
    let v2 = relay(dir.path(), "v2", "0.2.0", "v2", "jetstream", "");
    let manifest = v2.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        text.replace("subject = \"in.>\"", "subject = \"in.*\""),
    )
    .expect("manifest");
    deploy(&url, &v1);
    let host = Host::start(&following(&server)).await.expect("host");
    until_all_run(&[&host], "relay", Some("0.1.0")).await;
    let mut out = client.subscribe("out.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    let next = Arc::new(AtomicUsize::new(0));
    produce(
        client.clone(),
        0..BEFORE,
        Duration::ZERO,
        true,
        next.clone(),
    )
    .await;
    let first = gather(&mut out, BEFORE).await;
    until_succeeded(&[&host], BEFORE as u64).await;

    let before = relay_consumers(&client).await;
    deploy(&url, &v2);
    until_all_run(&[&host], "relay", Some("0.2.0")).await;
    produce(
        client.clone(),
        BEFORE..BEFORE + AFTER,
        Duration::ZERO,
        true,
        next,
    )
    .await;
    let second = gather(&mut out, AFTER).await;
    all_tagged_from(&second, BEFORE, "v2");
    let mut now = relay_consumers(&client).await;
    now.retain(|n| !before.contains(n));
    assert_eq!(
        now.len(),
        1,
        "v2's own consumer beside v1's {before:?}: {now:?}"
    );
    // Whatever v2's consumer was to deliver, it has: a replay would show in
    // the counts.
    until_idle(&client, &now[0]).await;
    let outputs: Vec<_> = first.into_iter().chain(second).collect();
    exactly_once(&[&host], &outputs, BEFORE + AFTER);
    host.stop().await.expect("stop");
}

/// The relay's durable consumers on IN.
async fn relay_consumers(client: &async_nats::Client) -> Vec<String> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("IN").await.expect("IN");
    let mut names: Vec<String> = futures::StreamExt::collect::<Vec<_>>(stream.consumer_names())
        .await
        .into_iter()
        .map(|n| n.expect("consumer name"))
        .collect();
    names.retain(|n| n.starts_with("weir-relay-"));
    names
}

/// Wait until the consumer `name` on IN has nothing pending or unacknowledged.
async fn until_idle(client: &async_nats::Client, name: &str) {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("IN").await.expect("IN");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut consumer = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(name)
            .await
            .expect("consumer");
        let info = consumer.info().await.expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer {name} never went idle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
