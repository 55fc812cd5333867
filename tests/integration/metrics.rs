//! Issue 11: the telemetry endpoint. A known workload, then `/metrics`
//! scraped with a real HTTP client and parsed by an independent parser
//! (prometheus-parse); JetStream consumer lag; `/readyz` while the NATS
//! server is down and back, and while a plugin's stream is missing.

use std::time::Duration;

use weir_host::host::Host;

use crate::support::*;

async fn get(url: &str) -> (u16, String) {
    let response = http_client()
        .get(url)
        .send()
        .await
        .expect("the endpoint answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Every sample of a scrape, parsed (a malformed line fails the test).
pub(crate) async fn scrape(base: &str) -> prometheus_parse::Scrape {
    let (status, body) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("the exposition does not parse: {e}\n{body}"))
}

pub(crate) fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: not a scalar: {other:?}"),
    }
}

/// Poll `check` until it holds (every wait bounded).
async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// N succeeded, M rejected, K retried once then succeeded, one timing out
/// on both its attempts: the scrape's counters per plugin and kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_per_plugin() {
    let server = NatsServer::start();
    let client = server.client().await;
    let bundles = ["echo", "reject", "flaky", "hostile-loop"].map(bundle);
    let mut config = host_config(&server, &bundles);
    config.telemetry.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let host = Host::start(&config).await.expect("host starts");
    let base = format!("http://{}", host.metrics_addr().expect("listening"));

    let mut echoed = client.subscribe("demo.echoed.>").await.expect("subscribe");
    let mut flaky_done = client
        .subscribe("test.flaky-done")
        .await
        .expect("subscribe");
    let mut dlq = client.subscribe("weir.dlq.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    const N: usize = 7;
    const M: usize = 3;
    const K: usize = 2;
    for i in 0..N {
        client
            .publish(format!("demo.echo.{i}"), "x".into())
            .await
            .expect("publish");
    }
    for _ in 0..M {
        client
            .publish("test.reject", "no".into())
            .await
            .expect("publish");
    }
    for i in 0..K {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("fail-times", "1");
        client
            .publish_with_headers(format!("test.flaky.{i}"), headers, "f".into())
            .await
            .expect("publish");
    }
    client
        .publish("hostile.loop", "spin".into())
        .await
        .expect("publish");
    collect(&mut echoed, N).await;
    collect(&mut flaky_done, K).await;
    collect(&mut dlq, M + 1).await;
    // The counters are bumped before the messages leave, the in-flight gauge
    // drops after the settle: wait for the last of them.
    wait_until("the events settled", async || {
        let s = scrape(&base).await;
        let gone = ["echo", "reject", "flaky", "hostile-loop"]
            .iter()
            .all(|p| value(&s, "weir_events_in_flight", &[("plugin", p)]) == 0.0);
        gone && value(
            &s,
            "weir_events_dead_lettered_total",
            &[("plugin", "hostile-loop"), ("kind", "timeout")],
        ) == 1.0
    })
    .await;

    let s = scrape(&base).await;
    let v = |name: &str, plugin: &str| value(&s, name, &[("plugin", plugin)]);
    let kind = |name: &str, plugin: &str, kind: &str| {
        value(&s, name, &[("plugin", plugin), ("kind", kind)])
    };
    let failed = "weir_attempts_failed_total";
    let dead = "weir_events_dead_lettered_total";
    assert_eq!(v("weir_events_received_total", "echo"), N as f64);
    assert_eq!(v("weir_events_succeeded_total", "echo"), N as f64);
    assert_eq!(v("weir_outputs_published_total", "echo"), N as f64);
    assert_eq!(v("weir_attempt_duration_seconds_count", "echo"), N as f64);
    assert_eq!(v("weir_output_confirm_seconds_count", "echo"), N as f64);
    for k in ["reject", "retry", "timeout", "trap", "memory"] {
        assert_eq!(kind(failed, "echo", k), 0.0, "echo {k}");
    }
    assert_eq!(v("weir_events_received_total", "reject"), M as f64);
    assert_eq!(v("weir_events_succeeded_total", "reject"), 0.0);
    assert_eq!(kind(failed, "reject", "reject"), M as f64);
    assert_eq!(kind(dead, "reject", "reject"), M as f64);
    assert_eq!(v("weir_events_retried_total", "reject"), 0.0);
    assert_eq!(v("weir_events_received_total", "flaky"), K as f64);
    assert_eq!(v("weir_events_succeeded_total", "flaky"), K as f64);
    assert_eq!(kind(failed, "flaky", "retry"), K as f64);
    assert_eq!(v("weir_events_retried_total", "flaky"), K as f64);
    assert_eq!(kind(dead, "flaky", "retry-exhausted"), 0.0);
    assert_eq!(
        v("weir_attempt_duration_seconds_count", "flaky"),
        2.0 * K as f64
    );
    // hostile-loop: max_attempts = 2, both time out, then the dead letter.
    assert_eq!(kind(failed, "hostile-loop", "timeout"), 2.0);
    assert_eq!(v("weir_events_retried_total", "hostile-loop"), 1.0);
    assert_eq!(kind(dead, "hostile-loop", "timeout"), 1.0);
    assert_eq!(v("weir_events_succeeded_total", "hostile-loop"), 0.0);
    for p in ["echo", "reject", "flaky", "hostile-loop"] {
        assert_eq!(v("weir_events_queued", p), 0.0, "{p}");
        assert_eq!(v("weir_instance_pool_exhausted_total", p), 0.0, "{p}");
    }
    assert_eq!(value(&s, "weir_sandbox_instance_slots", &[]), 200.0);
    assert_eq!(
        value(
            &s,
            "weir_events_shed_total",
            &[("plugin", "echo"), ("reason", "queue-full")]
        ),
        0.0
    );
    assert_eq!(value(&s, "weir_nats_connected", &[]), 1.0);
    assert_eq!(value(&s, "weir_nats_reconnects_total", &[]), 0.0);
    let info = s
        .samples
        .iter()
        .find(|x| x.metric == "weir_plugin_info" && x.labels.get("plugin") == Some("echo"))
        .expect("weir_plugin_info for echo");
    assert_eq!(
        info.labels.get("sha256").map(str::len),
        Some(64),
        "{info:?}"
    );
    assert!(s.samples.iter().any(|x| x.metric == "weir_build_info"));
    // No raw event subject in any label.
    assert!(
        s.samples
            .iter()
            .all(|x| x.labels.values().all(|v| !v.starts_with("demo.echo.")))
    );

    // Every metric the Grafana dashboard queries is one weir serves.
    let dashboard = std::fs::read_to_string(repo_root().join("deploy/grafana/weir-dashboard.json"))
        .expect("deploy/grafana/weir-dashboard.json");
    let served: std::collections::HashSet<&str> = s.docs.keys().map(String::as_str).collect();
    let mut queried = 0;
    for at in dashboard.match_indices("weir_").map(|(i, _)| i) {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if name == "weir_" || name.starts_with("weir_overview") {
            continue;
        }
        let family = ["_bucket", "_total", "_info"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            served.contains(family) || served.contains(name.as_str()),
            "the dashboard queries {name}, which weir does not serve"
        );
        queried += 1;
    }
    assert!(queried > 10, "the dashboard's queries were not found");

    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    host.stop().await.expect("clean stop");
}

/// A JetStream plugin's consumer lag is polled onto the scrape; a stream
/// that vanishes makes `/readyz` 503 naming the plugin, and 200 once the
/// stream is back and the plugin bound again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_scraped_and_a_missing_consumer_is_not_ready() {
    let server = NatsServer::start();
    let client = server.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = || async_nats::jetstream::stream::Config {
        name: "IN".into(),
        subjects: vec!["in.>".into()],
        ..Default::default()
    };
    js.create_stream(spec()).await.expect("stream IN");
    let relay = jetstream_bundle("relay", dir.path(), "IN", "");
    let mut config = host_config(&server, &[relay]);
    config.telemetry.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.telemetry.lag_poll_ms = 100;
    let host = Host::start(&config).await.expect("host starts");
    let base = format!("http://{}", host.metrics_addr().expect("listening"));
    let readyz = format!("{base}/readyz");
    wait_until("lag polled", async || {
        let s = scrape(&base).await;
        s.samples.iter().any(|x| {
            x.metric == "weir_consumer_pending"
                && x.labels.get("plugin") == Some("relay")
                && x.labels.get("stream") == Some("IN")
                && x.labels
                    .get("consumer")
                    .is_some_and(|c| c.starts_with("weir-relay-"))
        })
    })
    .await;
    assert_eq!(get(&readyz).await.0, 200);

    js.delete_stream("IN").await.expect("delete IN");
    wait_until("readyz 503", async || get(&readyz).await.0 == 503).await;
    let (_, body) = get(&readyz).await;
    assert!(body.contains("plugin relay"), "{body}");
    assert!(body.contains("IN"), "{body}");

    js.create_stream(spec()).await.expect("stream IN again");
    wait_until("readyz 200", async || get(&readyz).await.0 == 200).await;
    // Events published now are relayed: the plugin is bound again.
    let mut out = client.subscribe("out.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    js.publish("in.1", "x".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    collect(&mut out, 1).await;
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_nats_is_down_and_200_once_back() {
    let mut server = NatsServer::start();
    let mut config = host_config(&server, &[bundle("echo")]);
    config.telemetry.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let host = Host::start(&config).await.expect("host starts");
    let base = format!("http://{}", host.metrics_addr().expect("listening"));
    let readyz = format!("{base}/readyz");
    let (status, body) = get(&readyz).await;
    assert_eq!(status, 200, "{body}");

    server.kill();
    wait_until("readyz 503", async || get(&readyz).await.0 == 503).await;
    let (_, body) = get(&readyz).await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(json["ready"], false);
    assert!(body.contains("NATS disconnected"), "{body}");
    assert_eq!(
        get(&format!("{base}/healthz")).await.0,
        200,
        "alive while not ready"
    );

    server.restart();
    wait_until("readyz 200", async || get(&readyz).await.0 == 200).await;
    let s = scrape(&base).await;
    assert!(value(&s, "weir_nats_reconnects_total", &[]) >= 1.0);
    host.stop().await.expect("clean stop");
}
