use std::collections::BTreeMap;

use weir_host::host::Host;

use crate::support::*;

/// Each hostile plugin fails only its own event, which lands in the DLQ with
/// the right kind and attempt count, while a healthy plugin in the same host
/// keeps handling events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_only_their_own_events() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let names = [
        "echo",
        "hostile-loop",
        "hostile-memory",
        "hostile-recursion",
        "hostile-panic",
        "hostile-output",
        "reject",
    ];
    let bundles: Vec<_> = names.iter().map(|n| bundle(n)).collect();
    let host = Host::start(&host_config(&server, &bundles))
        .await
        .expect("host starts");
    assert_eq!(
        host.plugins().len(),
        names.len(),
        "refused: {:?}",
        host.refused()
    );
    let mut dlq = client.subscribe("weir.dlq.>").await.expect("subscribe");
    let mut echoed = client.subscribe("demo.echoed.>").await.expect("subscribe");
    client.flush().await.expect("flush");

    const HEALTHY: usize = 100;
    for (subject, payload) in [
        ("hostile.loop", "spin"),
        ("hostile.memory", "eat"),
        ("hostile.recursion", "dive"),
        ("hostile.panic", "boom"),
        ("hostile.output", "flood"),
        ("test.reject", "no thanks"),
    ] {
        client
            .publish(subject, payload.into())
            .await
            .expect("publish");
    }
    for i in 0..HEALTHY {
        client
            .publish(format!("demo.echo.{i}"), "ok".into())
            .await
            .expect("publish");
    }

    let healthy = collect(&mut echoed, HEALTHY).await;
    assert_eq!(healthy.len(), HEALTHY);

    let dead = collect(&mut dlq, 6).await;
    let by_plugin: BTreeMap<String, &async_nats::Message> = dead
        .iter()
        .map(|m| (header(m, "Weir-Plugin").expect("Weir-Plugin"), m))
        .collect();
    let expect = [
        ("hostile-loop", "timeout", "2", "spin"),
        ("hostile-memory", "memory", "2", "eat"),
        ("hostile-recursion", "trap", "2", "dive"),
        ("hostile-panic", "trap", "2", "boom"),
        ("hostile-output", "bad-output", "1", "flood"),
        ("reject", "reject", "1", "no thanks"),
    ];
    for (plugin, kind, attempts, payload) in expect {
        let msg = by_plugin
            .get(plugin)
            .unwrap_or_else(|| panic!("no dead letter from {plugin}: {:?}", by_plugin.keys()));
        assert_eq!(msg.subject.as_str(), format!("weir.dlq.{plugin}"));
        assert_eq!(
            header(msg, "Weir-Error-Kind").as_deref(),
            Some(kind),
            "{plugin}: {:?}",
            header(msg, "Weir-Error")
        );
        assert_eq!(
            header(msg, "Weir-Attempts").as_deref(),
            Some(attempts),
            "{plugin}"
        );
        assert_eq!(
            msg.payload,
            payload.as_bytes(),
            "{plugin}: original payload kept"
        );
        assert!(!header(msg, "Weir-Error").unwrap_or_default().is_empty());
    }
    let panic_reason = header(by_plugin["hostile-panic"], "Weir-Error").unwrap_or_default();
    assert!(
        panic_reason.contains("boom"),
        "a panic's message reaches the dead letter: {panic_reason}"
    );

    host.stop().await.expect("clean stop");
    // Exact counts: every event is in the outputs or in the DLQ, none twice.
    wait_stream_count(&client, "ECHOED", HEALTHY as u64).await;
    wait_stream_count(&client, "WEIR_DLQ", 6).await;
}

/// A request whose event is dead-lettered gets an error reply at once
/// (NATS services convention) instead of waiting for its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_get_an_error_reply() {
    let server = NatsServer::start();
    let client = server.client().await;
    let host = Host::start(&host_config(&server, &[bundle("reject")]))
        .await
        .expect("host starts");
    let reply = client
        .request("test.reject", "nope".into())
        .await
        .expect("an error reply arrives");
    assert_eq!(
        header(&reply, "Nats-Service-Error-Code").as_deref(),
        Some("400")
    );
    assert!(
        header(&reply, "Nats-Service-Error")
            .unwrap_or_default()
            .starts_with("reject: rejected: nope")
    );
    host.stop().await.expect("clean stop");
}

/// WASI is deny-by-default: no files, no environment or arguments, no
/// sockets (not even to the NATS server on loopback); clocks and random work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_denies_files_env_and_sockets() {
    let server = NatsServer::start();
    let client = server.client().await;
    let host = Host::start(&host_config(&server, &[bundle("sandbox-probe")]))
        .await
        .expect("host starts");
    let target = server.url().trim_start_matches("nats://").to_owned();
    let reply = client
        .request("test.sandbox", target.into())
        .await
        .expect("the probe answers");
    let report: serde_json::Value = serde_json::from_slice(&reply.payload).expect("JSON report");
    for denied in ["read_file", "list_root", "list_cwd", "connect"] {
        let outcome = report[denied].as_str().unwrap_or_default();
        assert!(outcome.starts_with("denied"), "{denied}: {outcome}");
    }
    assert_eq!(report["env_vars"], 0, "{report}");
    assert_eq!(report["args"], 0, "{report}");
    assert!(
        report["wall_clock_secs"].as_u64().unwrap_or(0) > 1_700_000_000,
        "{report}"
    );
    assert_eq!(report["random_nonzero"], true, "{report}");
    host.stop().await.expect("clean stop");
}

/// No plugin publishes to the server's APIs or weir's dead-letter queue,
/// grant or not: whoami (which publishes where its event asks) is refused
/// each reserved subject as `forbidden-publish`, the dead letter naming that
/// subject, and nothing reaches it; an ordinary subject still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_subjects_are_forbidden_publishes() {
    let server = NatsServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let whoami = bundle_copy("whoami", dir.path(), |m| {
        m.replace("[auth]\nissuers = [\"producers\"]\n", "")
    });
    let host = Host::start(&host_config(&server, &[whoami]))
        .await
        .expect("host starts");
    assert_eq!(host.plugins().len(), 1, "refused: {:?}", host.refused());
    const RESERVED: [&str; 4] = ["$KV.x.y", "$O.x.y", "weir.dlq.x", "$JS.API.x"];
    let mut reached = Vec::new();
    for target in RESERVED {
        reached.push(RawCount::start(&client, target).await);
    }
    let mut dlq = client.subscribe("weir.dlq.whoami").await.expect("sub");
    let mut seen = client.subscribe("auth.seen.>").await.expect("sub");
    client.flush().await.expect("flush");
    for target in RESERVED {
        let payload = serde_json::json!({ "publish": target }).to_string();
        client
            .publish("auth.whoami.reserved", payload.into())
            .await
            .expect("publish");
    }
    client
        .publish("auth.whoami.fine", "{}".into())
        .await
        .expect("publish");

    let fine = collect(&mut seen, 1).await;
    assert_eq!(fine[0].subject.as_str(), "auth.seen.fine");
    let dead = collect(&mut dlq, RESERVED.len()).await;
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    for m in &dead {
        assert_eq!(
            header(m, "Weir-Error-Kind").as_deref(),
            Some("forbidden-publish"),
            "{:?}",
            header(m, "Weir-Error")
        );
        assert_eq!(header(m, "Weir-Attempts").as_deref(), Some("1"));
        let asked: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON payload");
        let target = asked["publish"].as_str().expect("target").to_owned();
        refused.insert(target, header(m, "Weir-Error").expect("Weir-Error"));
    }
    assert_eq!(
        refused.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut all = RESERVED.to_vec();
            all.sort();
            all
        },
        "one dead letter per reserved subject"
    );
    for (target, error) in &refused {
        assert!(
            error.contains(&format!("may not publish to {target:?}")),
            "{target}: {error}"
        );
    }
    host.stop().await.expect("clean stop");
    for (target, mut count) in RESERVED.into_iter().zip(reached) {
        assert_eq!(count.count().await, 0, "a message reached {target}");
    }
}
