use std::collections::BTreeSet;

use weir_host::host::Host;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_publishes_one_output_per_event_and_answers_requests() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let host = Host::start(&host_config(&server, &[bundle("echo")]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());

    let mut outputs = client.subscribe("demo.echoed.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    const N: usize = 200;
    for i in 0..N {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("trace-id", format!("t-{i}").as_str());
        client
            .publish_with_headers(
                format!("demo.echo.{i}"),
                headers,
                format!("payload {i}").into(),
            )
            .await
            .expect("publish");
    }
    let got = collect(&mut outputs, N).await;
    let mut seen = BTreeSet::new();
    for msg in &got {
        let i: usize = msg.subject.as_str()["demo.echoed.".len()..]
            .parse()
            .expect("numbered subject");
        assert_eq!(msg.payload, format!("payload {i}").as_bytes());
        assert_eq!(header(msg, "trace-id"), Some(format!("t-{i}")));
        seen.insert(i);
    }
    assert_eq!(seen.len(), N, "every event exactly once");

    let reply = client
        .request("demo.echo.ping", "hello".into())
        .await
        .expect("the echo plugin answers a request");
    assert_eq!(reply.payload, "hello".as_bytes());

    host.stop().await.expect("clean stop");
    // The request also produced one output: N + 1 in the stream, none twice.
    wait_stream_count(&client, "ECHOED", N as u64 + 1).await;
    wait_stream_count(&client, "WEIR_DLQ", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_order_enriches_publishes_and_rejects() {
    let server = NatsServer::start();
    let client = server.client().await;
    // The example reads its orders from a JetStream stream.
    create_stream(&client, "ORDERS", &["orders.created.>"]).await;
    let host = Host::start(&host_config(&server, &[bundle("enrich-order")]))
        .await
        .expect("host starts");
    let mut enriched = client
        .subscribe("orders.enriched.>")
        .await
        .expect("subscribe");
    let mut large = client.subscribe("orders.large").await.expect("subscribe");
    let mut dlq = client.subscribe("weir.dlq.>").await.expect("subscribe");
    client.flush().await.expect("flush");

    let order = serde_json::json!({
        "id": "o-1", "customer": "c-9",
        "items": [{"sku": "A", "qty": 2, "unit_price": 12.5}, {"sku": "B", "qty": 1, "unit_price": 1000.0}]
    });
    client
        .publish(
            "orders.created.eu",
            serde_json::to_vec(&order).expect("json").into(),
        )
        .await
        .expect("publish");
    client
        .publish("orders.created.eu", "not json".into())
        .await
        .expect("publish");

    let out = collect(&mut enriched, 1).await;
    assert_eq!(out[0].subject.as_str(), "orders.enriched.eu");
    let body: serde_json::Value = serde_json::from_slice(&out[0].payload).expect("JSON output");
    assert_eq!(body["id"], "o-1");
    assert_eq!(body["item_count"], 3);
    assert!(body["total"].as_f64().expect("total") > body["subtotal"].as_f64().expect("subtotal"));
    assert!(body["currency"].is_string());
    let big = collect(&mut large, 1).await;
    let big: serde_json::Value = serde_json::from_slice(&big[0].payload).expect("JSON");
    assert_eq!(big["id"], "o-1");

    let dead = collect(&mut dlq, 1).await;
    assert_eq!(dead[0].subject.as_str(), "weir.dlq.enrich-order");
    assert_eq!(
        header(&dead[0], "Weir-Error-Kind").as_deref(),
        Some("reject")
    );
    assert_eq!(header(&dead[0], "Weir-Attempts").as_deref(), Some("1"));
    assert_eq!(
        header(&dead[0], "Weir-Original-Subject").as_deref(),
        Some("orders.created.eu")
    );
    assert_eq!(dead[0].payload, "not json".as_bytes());
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_policy_then_dead_letter() {
    let server = NatsServer::start();
    let client = server.client().await;
    let host = Host::start(&host_config(&server, &[bundle("flaky")]))
        .await
        .expect("host starts");
    let mut done = client
        .subscribe("test.flaky-done")
        .await
        .expect("subscribe");
    let mut dlq = client.subscribe("weir.dlq.flaky").await.expect("subscribe");
    client.flush().await.expect("flush");

    // flaky allows 3 attempts: 2 planned failures succeed on attempt 3,
    // 5 planned failures exhaust the retries.
    for (n, fail_times) in [("a", "0"), ("b", "2"), ("c", "5")] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("fail-times", fail_times);
        client
            .publish_with_headers(format!("test.flaky.{n}"), h, n.into())
            .await
            .expect("publish");
    }
    let mut ok = collect(&mut done, 2).await;
    ok.sort_by(|a, b| a.payload.cmp(&b.payload));
    assert_eq!(ok[0].payload, "a".as_bytes());
    assert_eq!(header(&ok[0], "attempt").as_deref(), Some("1"));
    assert_eq!(ok[1].payload, "b".as_bytes());
    assert_eq!(header(&ok[1], "attempt").as_deref(), Some("3"));

    let dead = collect(&mut dlq, 1).await;
    assert_eq!(dead[0].payload, "c".as_bytes());
    assert_eq!(
        header(&dead[0], "Weir-Error-Kind").as_deref(),
        Some("retry-exhausted")
    );
    assert_eq!(header(&dead[0], "Weir-Attempts").as_deref(), Some("3"));
    assert_eq!(
        header(&dead[0], "fail-times").as_deref(),
        Some("5"),
        "original headers kept"
    );
    assert!(header(&dead[0], "Weir-First-Seen").is_some());
    assert!(header(&dead[0], "Weir-Last-Seen").is_some());
    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "WEIR_DLQ", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_isolation_and_queue_groups_share_work() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let reuse = bundle_copy("echo", dir.path(), |m| {
        m.replace(
            "subject = \"demo.echo.>\"",
            "subject = \"demo.echo.>\"\nqueue = \"echoers\"",
        )
        .replace(
            "[limits]",
            "[limits]\nisolation = \"reuse\"\nmax_events_per_instance = 7",
        )
    });
    // Two hosts in one queue group: each event is handled by one of them.
    let a = Host::start(&host_config(&server, std::slice::from_ref(&reuse)))
        .await
        .expect("host a");
    let b = Host::start(&host_config(&server, &[reuse]))
        .await
        .expect("host b");
    assert!(
        a.refused().is_empty() && b.refused().is_empty(),
        "{:?}",
        a.refused()
    );
    let mut outputs = client.subscribe("demo.echoed.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    const N: usize = 300;
    for i in 0..N {
        client
            .publish(format!("demo.echo.{i}"), format!("{i}").into())
            .await
            .expect("publish");
    }
    let got = collect(&mut outputs, N).await;
    let distinct: BTreeSet<_> = got.iter().map(|m| m.subject.to_string()).collect();
    assert_eq!(distinct.len(), N);
    let handled = |h: &Host| {
        h.plugins()[0]
            .stats
            .succeeded
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (ha, hb) = (handled(&a), handled(&b));
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
    assert_eq!(ha + hb, N as u64, "each event handled by exactly one host");
    assert!(ha > 0 && hb > 0, "both hosts took work: {ha} and {hb}");
    wait_stream_count(&client, "ECHOED", N as u64).await;
}

/// `isolation = "event"` gives every event a fresh instance; `"reuse"` keeps
/// one warm for `max_events_per_instance` events and throws it away after a
/// trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_modes_fresh_warm_and_recycled() {
    let server = NatsServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = bundle("counter");
    let reuse = bundle_copy("counter", dir.path(), |m| {
        m.replace("name = \"counter\"", "name = \"counter-reuse\"")
            .replace(
                "subject = \"test.counter\"",
                "subject = \"test.counter-reuse\"",
            )
            .replace(
                "isolation = \"event\"",
                "isolation = \"reuse\"\nmax_events_per_instance = 3",
            )
    });
    let host = Host::start(&host_config(&server, &[fresh, reuse]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let ask = |subject: &'static str, crash: bool| {
        let client = client.clone();
        async move {
            let mut h = async_nats::HeaderMap::new();
            h.insert("crash", if crash { "yes" } else { "no" });
            client
                .request_with_headers(subject, h, "".into())
                .await
                .expect("reply")
        }
    };
    let count = |reply: async_nats::Message| String::from_utf8_lossy(&reply.payload).to_string();
    let mut fresh_counts = Vec::new();
    for _ in 0..4 {
        fresh_counts.push(count(ask("test.counter", false).await));
    }
    assert_eq!(
        fresh_counts,
        ["1", "1", "1", "1"],
        "no state survives an event"
    );

    let mut warm_counts = Vec::new();
    for _ in 0..5 {
        warm_counts.push(count(ask("test.counter-reuse", false).await));
    }
    assert_eq!(
        warm_counts,
        ["1", "2", "3", "1", "2"],
        "recycled after 3 events"
    );
    // A trap discards the warm instance: the next event starts from 1.
    // The crash answers with an error reply (NATS services convention).
    let crashed = ask("test.counter-reuse", true).await;
    assert_eq!(
        header(&crashed, "Nats-Service-Error-Code").as_deref(),
        Some("500"),
        "{:?}",
        crashed.headers
    );
    let error = header(&crashed, "Nats-Service-Error").unwrap_or_default();
    assert!(
        error.starts_with("trap: ") && error.contains("crashing as asked"),
        "{error}"
    );
    assert_eq!(count(ask("test.counter-reuse", false).await), "1");
    host.stop().await.expect("clean stop");
}

/// Core NATS under overload: with one event in flight and a queue of two,
/// a burst is partly shed — and every event is accounted for: handled, or
/// counted as shed (and logged), never dropped without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_counted_events_only() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "DONE", &["test.flaky-done"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = bundle_copy("flaky", dir.path(), |m| {
        m.replace("backoff_ms = [10, 20]", "backoff_ms = [50]")
            + "\n[limits]\nmax_in_flight = 1\nqueue = 2\n"
    });
    let host = Host::start(&host_config(&server, &[slow]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    const N: u64 = 30;
    for i in 0..N {
        // Each event fails once and waits 50 ms for its retry, holding the
        // only slot.
        let mut h = async_nats::HeaderMap::new();
        h.insert("fail-times", "1");
        client
            .publish_with_headers(format!("test.flaky.{i}"), h, "x".into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let plugin = host.plugins()[0].clone();
    let stats = &plugin.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while get(&stats.received) < N {
        assert!(tokio::time::Instant::now() < deadline, "not all received");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let shed = get(&stats.shed);
    assert!(shed > 0, "a burst of {N} into 1 slot + 2 queued sheds some");
    wait_stream_count(&client, "DONE", N - shed).await;
    let succeeded = get(&stats.succeeded);
    host.stop().await.expect("clean stop");
    assert_eq!(
        succeeded + shed,
        N,
        "every event handled or counted as shed"
    );
    assert_eq!(get(&stats.dead_lettered), 0);
}
