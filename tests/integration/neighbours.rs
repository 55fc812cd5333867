//! A plugin cannot starve the others: spinning guests yield at every epoch
//! tick, and outputs cost no JetStream API request each.

use std::time::Duration;

use futures::StreamExt as _;

use weir_host::host::Host;
use weir_host::plugin::Stats;

use crate::jetstream::publish_js;
use crate::support::*;

/// Many more looping events in flight than tokio has worker threads, and a
/// healthy plugin in the same host answers every request meanwhile.
/// Before guests yielded, 8 looping events left it 0 answers of 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guests_do_not_starve_a_healthy_plugin() {
    let server = NatsServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Long enough that the flood outlasts the requests below.
    let spin = bundle_copy("hostile-loop", dir.path(), |m| {
        m.replace("timeout_ms = 200", "timeout_ms = 8000\nmax_in_flight = 16")
            .replace("max_attempts = 2", "max_attempts = 1")
    });
    let host = Host::start(&host_config(&server, &[bundle("echo"), spin]))
        .await
        .expect("host starts");
    assert_eq!(host.plugins().len(), 2, "refused: {:?}", host.refused());
    let looping = host
        .plugins()
        .iter()
        .find(|p| p.name() == "hostile-loop")
        .expect("hostile-loop loaded")
        .stats
        .clone();

    const LOOPS: u64 = 16;
    for i in 0..LOOPS {
        client
            .publish("hostile.loop", format!("{i}").into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while Stats::get(&looping.received) < LOOPS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loops never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    const REQUESTS: usize = 50;
    let mut answered = 0;
    for i in 0..REQUESTS {
        let request = client.request(format!("demo.echo.r{i}"), "ping".into());
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(5), request).await
            && reply.payload.as_ref() == b"ping"
        {
            answered += 1;
        }
    }
    // The fault was live the whole time: no looping event had ended yet.
    assert_eq!(
        Stats::get(&looping.failed_attempts),
        0,
        "the loops ended before the requests did: the test proved nothing"
    );
    assert_eq!(answered, REQUESTS, "requests answered during the flood");
    host.stop().await.expect("clean stop");
    assert_eq!(Stats::get(&looping.dead_lettered), LOOPS);
}

/// 10,000 events with 10,000 distinct output subjects, stored in a stream:
/// which stream captures them is asked once, not once per subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_output_subjects_cost_no_api_request_each() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let host = Host::start(&host_config(&server, &[echo]))
        .await
        .expect("host starts");
    // Every stream API request from now on (the host's, not the start-up's).
    let watcher = server.client().await;
    let mut api = watcher
        .subscribe("$JS.API.STREAM.>")
        .await
        .expect("subscribe");
    let mut outputs = watcher.subscribe("demo.echoed.>").await.expect("subscribe");
    weir_host::transport::sync_with_server(&watcher)
        .await
        .expect("round trip");

    const N: usize = 10_000;
    publish_js(&client, N, |i| format!("demo.echo.{i}")).await;
    let got = collect(&mut outputs, N).await;
    let mut subjects: Vec<_> = got.iter().map(|m| m.subject.to_string()).collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), N, "distinct output subjects");
    let mut requests = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), api.next()).await {
        requests.push(msg.subject.to_string());
    }
    assert!(
        requests.len() <= 3,
        "{} stream API requests for {N} outputs: {:?}",
        requests.len(),
        &requests[..requests.len().min(10)]
    );
    wait_consumer_idle(&client, "ECHO_IN").await;
    wait_stream_count(&client, "ECHOED", N as u64).await;
    host.stop().await.expect("clean stop");
}
