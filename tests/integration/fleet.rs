//! Issue 13, item 5: the fleet view. Each host is an instance of the NATS
//! micro-service `weir`, seen by a plain client through `$SRV.PING|INFO`;
//! `weir ps` lists every host with its plugins' versions, states (running,
//! paused, refused and why) and counters.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt as _;
use weir_host::host::Host;

use crate::support::*;

/// Every answer to `subject` within half a second.
async fn ask_all(client: &async_nats::Client, subject: &str) -> Vec<serde_json::Value> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(subject.to_owned(), inbox, bytes::Bytes::new())
        .await
        .expect("publish");
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut out = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
        out.push(serde_json::from_slice(&msg.payload).expect("JSON answer"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_is_a_nats_service_and_weir_ps_lists_them() {
    let server = NatsServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(
        broken.join("plugin.toml"),
        "name = \"broken\"\nversion = \"0.1.0\"\nwasm = \"missing.wasm\"\n[[subscribe]]\nsubject = \"x.>\"\n",
    )
    .expect("manifest");
    let one = Host::start(&host_config(&server, &[bundle("echo")]))
        .await
        .expect("host one");
    let two = Host::start(&host_config(&server, &[bundle("echo"), broken.clone()]))
        .await
        .expect("host two");

    // The standard protocol, from a plain client.
    let pings = ask_all(&client, "$SRV.PING.weir").await;
    assert_eq!(pings.len(), 2, "{pings:?}");
    for ping in &pings {
        assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
        assert_eq!(ping["name"], "weir");
        assert!(
            ping["metadata"]["host"]
                .as_str()
                .is_some_and(|h| !h.is_empty())
        );
    }
    let infos = ask_all(&client, "$SRV.INFO.weir").await;
    assert!(
        infos.iter().all(|i| i["endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["name"] == "ps"))),
        "{infos:?}"
    );

    // Some work, and one host's echo paused.
    for i in 0..3 {
        client
            .publish(format!("demo.echo.{i}"), "x".into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let now = tokio::time::Instant::now();
    two.plugins()[0]
        .circuit
        .open_until(now, now + Duration::from_secs(600));

    let url = server.url();
    let ps = |json: bool| {
        let mut cmd = Command::new(WEIR);
        cmd.args(["ps", "--nats", &url, "--wait", "500ms"]);
        if json {
            cmd.arg("--json");
        }
        cmd.env_remove("WEIR_LOG")
            .env_remove("RUST_LOG")
            .current_dir(std::env::temp_dir())
            .output()
            .expect("run weir ps")
    };
    // Wait for the counts (the events reach the hosts asynchronously).
    let deadline = std::time::Instant::now() + PATIENCE;
    let hosts = loop {
        let out = ps(true);
        assert!(out.status.success(), "{out:?}");
        let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let counted = hosts.as_array().is_some_and(|hs| {
            hs.len() == 2
                && hs.iter().all(|h| {
                    h["plugins"]
                        .as_array()
                        .and_then(|ps| ps.iter().find(|p| p["name"] == "echo"))
                        .is_some_and(|p| p["received"] == 3)
                })
        });
        if counted {
            break hosts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ps never counted: {hosts}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let by_host = |id: &str| {
        hosts
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["host"] == id))
            .unwrap_or_else(|| panic!("no host {id} in {hosts}"))
            .clone()
    };
    let ids: Vec<String> = pings
        .iter()
        .map(|p| {
            p["metadata"]["host"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let refused_host = ids
        .iter()
        .map(|id| by_host(id))
        .find(|h| h["plugins"].as_array().is_some_and(|ps| ps.len() == 2))
        .expect("the host with the broken bundle");
    let plugins = refused_host["plugins"].as_array().expect("plugins");
    assert_eq!(plugins[0]["name"], "echo");
    assert_eq!(plugins[0]["state"], "paused");
    assert_eq!(plugins[0]["version"], "0.1.0");
    assert_eq!(plugins[0]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(plugins[1]["state"], "refused");
    assert!(
        plugins[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("missing.wasm")),
        "{plugins:?}"
    );
    assert!(refused_host["uptime_ms"].as_u64().is_some());
    let other = ids
        .iter()
        .map(|id| by_host(id))
        .find(|h| h["host"] != refused_host["host"])
        .expect("the other host");
    assert_eq!(other["plugins"][0]["state"], "running");

    let table = String::from_utf8_lossy(&ps(false).stdout).into_owned();
    assert!(
        table.contains("refused") && table.contains("paused"),
        "{table}"
    );
    assert!(table.contains("missing.wasm"), "{table}");

    one.stop().await.expect("stop one");
    // A stopped host is gone from the service.
    let pings = ask_all(&client, "$SRV.PING.weir").await;
    assert_eq!(pings.len(), 1, "{pings:?}");
    two.stop().await.expect("stop two");
}
