//! Issue 11: the telemetry endpoint. A known workload, then `/metrics`
//! scraped with a real HTTP client and parsed by an independent parser
//! (prometheus-parse); `/readyz` while the NATS server is down and back.

use std::time::Duration;

use weir_host::host::Host;

use crate::support::*;

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("the endpoint answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Every sample of a scrape, parsed (a malformed line fails the test).
async fn scrape(base: &str) -> prometheus_parse::Scrape {
    let (status, body) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("the exposition does not parse: {e}\n{body}"))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_per_plugin() {
    let server = NatsServer::start();
    let client = server.client().await;
    let mut config = host_config(&server, &[bundle("echo"), bundle("reject")]);
    config.telemetry.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let host = Host::start(&config).await.expect("host starts");
    let base = format!("http://{}", host.metrics_addr().expect("listening"));

    let mut echoed = client.subscribe("demo.echoed.>").await.expect("subscribe");
    let mut dlq = client.subscribe("weir.dlq.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    const N: usize = 7;
    const M: usize = 3;
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
    collect(&mut echoed, N).await;
    collect(&mut dlq, M).await;
    // The counters are bumped before the messages leave: wait for the last.
    wait_until("the dead letters counted", async || {
        value(
            &scrape(&base).await,
            "weir_events_dead_lettered_total",
            &[("plugin", "reject")],
        ) == M as f64
    })
    .await;

    let s = scrape(&base).await;
    let echo = [("plugin", "echo")];
    let reject = [("plugin", "reject")];
    assert_eq!(value(&s, "weir_events_received_total", &echo), N as f64);
    assert_eq!(value(&s, "weir_events_succeeded_total", &echo), N as f64);
    assert_eq!(value(&s, "weir_attempts_failed_total", &echo), 0.0);
    assert_eq!(value(&s, "weir_events_dead_lettered_total", &echo), 0.0);
    assert_eq!(value(&s, "weir_events_received_total", &reject), M as f64);
    assert_eq!(value(&s, "weir_events_succeeded_total", &reject), 0.0);
    assert_eq!(value(&s, "weir_attempts_failed_total", &reject), M as f64);
    assert_eq!(value(&s, "weir_events_retried_total", &reject), 0.0);
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

    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
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
