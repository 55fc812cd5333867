//! The circuit breaker (issue 10, item 4). A plugin whose dependency is down
//! (plugins/outage: a retryable failure until a time in its config) gets 1,000
//! JetStream events during the outage, on two hosts sharing its consumer.
//! With `[circuit]` the consumer is paused on the server, no event is
//! dead-lettered and after the outage every event is handled exactly once
//! (weir's own counts: successful runs and raw output publishes). Without it,
//! the retry storm dead-letters what would have succeeded a few seconds later.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use futures::StreamExt as _;
use weir_host::host::Host;
use weir_host::pipeline::circuit::State;
use weir_host::plugin::Stats;

use crate::support::*;

const EVENTS: usize = 1_000;
/// Long enough that publishing the events ends well inside it, and that the
/// default retry policy (3 attempts, 100 ms then 1 s) runs out inside it.
const OUTAGE: Duration = Duration::from_secs(8);

const CIRCUIT: &str = "
[circuit]
failure_ratio = 0.5
min_events = 20
window_ms = 10000
open_ms = 1000
max_open_ms = 4000
probes = 3
";

fn outage_bundle(dir: &Path, down_until: SystemTime, circuit: bool) -> PathBuf {
    let until_ms = down_until
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    bundle_copy("outage", dir, move |m| {
        let m = m.replace(
            "down_until_ms = \"0\"",
            &format!("down_until_ms = \"{until_ms}\""),
        );
        if circuit { m + CIRCUIT } else { m }
    })
}

async fn publish_events(client: &async_nats::Client) {
    let js = jetstream::new(client.clone());
    let mut acks = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        acks.push(
            js.publish(format!("dep.in.{i}"), format!("event {i}").into())
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

fn sum(hosts: &[&Host], counter: impl Fn(&Stats) -> &std::sync::atomic::AtomicU64) -> u64 {
    hosts
        .iter()
        .flat_map(|h| h.plugins())
        .map(|p| counter(&p.stats).load(Ordering::Relaxed))
        .sum()
}

/// Distinct `Nats-Msg-Id`s among the messages stored in `stream`.
async fn distinct_ids(client: &async_nats::Client, stream: &str) -> usize {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(stream).await.expect("stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let total = stream_count(client, "DEP_OUT").await as usize;
    let mut messages = consumer.messages().await.expect("messages");
    let mut ids = std::collections::HashSet::new();
    for _ in 0..total {
        let msg = tokio::time::timeout(PATIENCE, messages.next())
            .await
            .expect("stored message in time")
            .expect("a message")
            .expect("no error");
        ids.insert(header(&msg, "Nats-Msg-Id").expect("every output has an id"));
    }
    ids.len()
}

async fn setup(server: &NatsServer) -> async_nats::Client {
    let client = server.client().await;
    create_stream(&client, "DEP_IN", &["dep.in.>"]).await;
    create_stream(&client, "DEP_OUT", &["dep.out.>"]).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_circuit_pauses_the_fleet_and_loses_no_event() {
    let server = NatsServer::start();
    let client = setup(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let down_until = SystemTime::now() + OUTAGE;
    let bundle = outage_bundle(dir.path(), down_until, true);
    let config = host_config(&server, &[bundle]);
    let a = Host::start(&config).await.expect("host a");
    let b = Host::start(&config).await.expect("host b");
    let mut raw = RawCount::start(&client, "dep.out.>").await;

    publish_events(&client).await;
    assert!(
        SystemTime::now() < down_until,
        "publishing outlasted the outage: the test shows nothing"
    );

    // While the dependency is down the consumer is paused on the server (for
    // both hosts); after it, every event comes out.
    let mut seen_paused = false;
    let deadline = tokio::time::Instant::now() + OUTAGE + PATIENCE;
    loop {
        seen_paused |= consumer_info(&client, "DEP_IN").await.paused;
        if stream_count(&client, "DEP_OUT").await >= EVENTS as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {EVENTS} outputs stored",
            stream_count(&client, "DEP_OUT").await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_consumer_idle(&client, "DEP_IN").await;
    let hosts = [&a, &b];
    let (succeeded, failed, held, dead, opened) = (
        sum(&hosts, |s| &s.succeeded),
        sum(&hosts, |s| &s.failed_attempts),
        sum(&hosts, |s| &s.held),
        sum(&hosts, |s| &s.dead_lettered),
        sum(&hosts, |s| &s.circuit_opened),
    );
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
    let published = raw.count().await;
    println!(
        "circuit: {EVENTS} events, {failed} failed attempts ({held} held while open), \
         opened {opened} times, {dead} dead letters, {succeeded} successes, {published} raw output publishes"
    );
    assert!(seen_paused, "the consumer was never paused on the server");
    assert!(opened >= 1, "the circuit never opened");
    assert!(failed > 0 && held > 0, "the outage hit no attempt");
    assert_eq!(dead, 0, "an event that would succeed was dead-lettered");
    assert_eq!(succeeded, EVENTS as u64, "handler successes");
    assert_eq!(published, EVENTS as u64, "raw output publishes");
    assert_eq!(stream_count(&client, "DEP_OUT").await, EVENTS as u64);
    assert_eq!(distinct_ids(&client, "DEP_OUT").await, EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_circuit_the_outage_floods_the_dead_letter_queue() {
    let server = NatsServer::start();
    let client = setup(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let down_until = SystemTime::now() + OUTAGE;
    let bundle = outage_bundle(dir.path(), down_until, false);
    let config = host_config(&server, &[bundle]);
    let a = Host::start(&config).await.expect("host a");
    let b = Host::start(&config).await.expect("host b");
    publish_events(&client).await;
    let hosts = [&a, &b];
    let deadline = tokio::time::Instant::now() + OUTAGE + PATIENCE;
    while sum(&hosts, |s| &s.dead_lettered) + sum(&hosts, |s| &s.succeeded) < EVENTS as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (dead, failed) = (
        sum(&hosts, |s| &s.dead_lettered),
        sum(&hosts, |s| &s.failed_attempts),
    );
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
    println!("no circuit: {EVENTS} events, {failed} failed attempts, {dead} dead letters");
    // Each of them would have succeeded once the outage was over.
    assert!(
        dead > 0,
        "the outage dead-lettered nothing: the test shows nothing"
    );
}

fn weir(args: &[&str]) -> std::process::Output {
    std::process::Command::new(WEIR)
        .args(args)
        .env_remove("WEIR_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run weir")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `weir pause` / `weir resume` / `weir status` through the binary, against a
/// running `weir up`: a paused JetStream plugin's consumer is paused on the
/// server and its events wait in the stream; a paused core plugin answers a
/// request with a 503 `circuit-open` error; resume lets both flow again.
#[test]
fn operators_pause_and_resume_a_plugin_by_hand() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The dependency is up: every event relays.
    let outage = outage_bundle(dir.path(), SystemTime::UNIX_EPOCH, false);
    let echo = bundle("echo");
    // A broken bundle beside them (its wasm is missing): `weir up` refuses
    // it, and it must not keep an operator from pausing the others.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(
        broken.join("plugin.toml"),
        "name = \"broken\"\nversion = \"0.1.0\"\nwasm = \"missing.wasm\"\n[[subscribe]]\nsubject = \"broken.>\"\n",
    )
    .expect("write manifest");
    let config = dir.path().join("weir.toml");
    let config_text = format!(
        "[nats]\nurl = \"{}\"\n[plugins]\ndirs = []\nbundles = [\"{}\", \"{}\", \"{}\"]\n[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
        server.url(),
        outage.display(),
        echo.display(),
        broken.display(),
        env!("CARGO_TARGET_TMPDIR")
    );
    std::fs::write(&config, config_text).expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(setup(&server));
    let mut host = WeirProcess::start(&["up", "--config", config], &[]);
    host.wait_for_output("weir is up");

    let paused = weir(&["pause", "outage", "--for", "1h", "--config", config]);
    assert!(paused.status.success(), "{paused:?}");
    assert!(
        stdout(&paused).contains("paused outage until"),
        "{}",
        stdout(&paused)
    );
    assert!(
        stdout(&paused).contains("consumers on the server: 1"),
        "{}",
        stdout(&paused)
    );
    let info = rt.block_on(consumer_info(&client, "DEP_IN"));
    assert!(info.paused, "the consumer is paused on the server");
    let echo_paused = weir(&["pause", "echo", "--config", config]);
    assert!(echo_paused.status.success(), "{echo_paused:?}");

    // Every host says so (wait: the control message reaches the host after
    // the CLI has exited).
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let status = weir(&["status", "--json", "--config", config]);
        assert!(status.status.success(), "{status:?}");
        let hosts: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
        let state = |name: &str| {
            hosts[0]["plugins"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .map(|p| p["circuit"].as_str().unwrap_or_default().to_owned())
        };
        if state("outage").as_deref() == Some("open") && state("echo").as_deref() == Some("open") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed both open: {hosts}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Rounded up to the second: `open 1h` or, a second later, `open 59m 59s`.
    let table = stdout(&weir(&["status", "--config", config]));
    assert!(
        table.contains("outage") && (table.contains("open 1h") || table.contains("open 59m")),
        "{table}"
    );

    // A host started while the plugin is paused keeps the pause on the
    // server (binding its consumer does not resume it) and joins in.
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
    let mut host = WeirProcess::start(&["up", "--config", config], &[]);
    host.wait_for_output("weir is up");
    let info = rt.block_on(consumer_info(&client, "DEP_IN"));
    assert!(info.paused, "a restarted host resumed the consumer");
    let status = weir(&["status", "--json", "--plugin", "outage", "--config", config]);
    let hosts: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(hosts[0]["plugins"][0]["circuit"], "open", "{hosts}");
    assert_eq!(
        hosts[0]["plugins"][0]["circuit_cause"], "elsewhere",
        "{hosts}"
    );
    // A core plugin's pause lives in the running hosts only (the server keeps
    // nothing of it): the new host must be told again.
    assert!(
        weir(&["pause", "echo", "--config", config])
            .status
            .success()
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let status = weir(&["status", "--json", "--plugin", "echo", "--config", config]);
        let hosts: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
        if hosts[0]["plugins"][0]["circuit"] == "open" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "echo never paused: {hosts}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    rt.block_on(async {
        let js = jetstream::new(client.clone());
        for i in 0..5 {
            js.publish(format!("dep.in.{i}"), "x".into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
    });
    let info = rt.block_on(consumer_info(&client, "DEP_IN"));
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (5, 0),
        "the events wait in their stream"
    );
    let refused = weir(&[
        "pub",
        "--request",
        "--timeout-ms",
        "2000",
        "--config",
        config,
        "demo.echo.x",
        "hi",
    ]);
    assert!(
        !refused.status.success(),
        "a paused core plugin answered: {refused:?}"
    );
    let said = format!(
        "{}{}",
        stdout(&refused),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        said.contains("circuit-open") && said.contains("503"),
        "{said}"
    );

    for plugin in ["outage", "echo"] {
        let resumed = weir(&["resume", plugin, "--config", config]);
        assert!(resumed.status.success(), "{resumed:?}");
    }
    rt.block_on(wait_stream_count(&client, "DEP_OUT", 5));
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let answer = weir(&[
            "pub",
            "--request",
            "--timeout-ms",
            "2000",
            "--config",
            config,
            "demo.echo.x",
            "hi",
        ]);
        if answer.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "echo never answered after resume: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
}

/// A pause made from outside weir (`nats consumer pause`, here async-nats'
/// own call) reaches the running host through the consumer's pause advisory:
/// its circuit opens; the outside resume makes it half-open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_made_on_the_server_by_another_client_opens_the_circuit() {
    let server = NatsServer::start();
    let client = setup(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let outage = outage_bundle(dir.path(), SystemTime::UNIX_EPOCH, true);
    let host = Host::start(&host_config(&server, &[outage]))
        .await
        .expect("host starts");
    let plugin = host.plugins()[0].clone();
    let durable = consumer_info(&client, "DEP_IN").await.name;
    let stream = jetstream::new(client.clone())
        .get_stream("DEP_IN")
        .await
        .expect("DEP_IN");
    let now = || tokio::time::Instant::now();
    let until = SystemTime::now() + Duration::from_secs(3600);
    stream
        .pause_consumer(&durable, async_nats::datetime::DateTime::from(until))
        .await
        .expect("paused from outside");
    let deadline = now() + PATIENCE;
    while !matches!(plugin.circuit.state(now()), State::Open { .. }) {
        assert!(now() < deadline, "the host never heard of the pause");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let State::Open { remaining, .. } = plugin.circuit.state(now()) else {
        unreachable!()
    };
    assert!(remaining > Duration::from_secs(3000), "{remaining:?}");

    stream
        .resume_consumer(&durable)
        .await
        .expect("resumed from outside");
    let deadline = now() + PATIENCE;
    while !matches!(plugin.circuit.state(now()), State::HalfOpen { .. }) {
        assert!(
            now() < deadline,
            "the host never heard of the resume: {:?}",
            plugin.circuit.state(now())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.stop().await.expect("clean stop");
}
