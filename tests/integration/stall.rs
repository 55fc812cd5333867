//! Issue 16: a JetStream relay stopped for `expires` + 5 s mid-stream, with no
//! pull request on the server. async-nats 0.51's pull stream counted a pull
//! only after publishing it, and the server's answer could be read first (see
//! docs/upstream/async-nats.md). The vendored fix counts a pull before it is
//! sent; its test hook delays the task where 0.51 reported the pull, so the
//! answer always wins the old race.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::test_hooks::set_pull_report_delay;
use weir_host::host::Host;

use crate::jetstream::publish_js;
use crate::support::*;

/// Turns the (process-wide) delay off again when the test ends, pass or fail.
struct ReportDelay;

impl ReportDelay {
    fn set(delay: Duration) -> Self {
        set_pull_report_delay(delay);
        Self
    }
}

impl Drop for ReportDelay {
    fn drop(&mut self) {
        set_pull_report_delay(Duration::ZERO);
    }
}

/// With every pull's answer arriving before the task is scheduled again, the
/// relay still gets every event through, and the watchdog never has to renew
/// a pull. On 0.51's order the first batch already stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_pull_answered_before_it_is_reported_does_not_stall() {
    let _delay = ReportDelay::set(Duration::from_millis(20));
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    const N: usize = 3000;
    publish_js(&client, N, |i| format!("demo.echo.{i}")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "max_in_flight = 64\n");
    let host = Host::start(&host_config(&server, &[echo]))
        .await
        .expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let plugin = host.plugins()[0].clone();
    let stalls = || plugin.stats.stalls.load(Ordering::Relaxed);

    // Fail at the first renewal rather than wait for the slow finish it allows.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let outputs = stream_count(&client, "ECHOED").await;
        assert_eq!(
            stalls(),
            0,
            "the watchdog renewed a stalled pull ({outputs} of {N} outputs so far)"
        );
        if outputs >= N as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{outputs} of {N} outputs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_consumer_idle(&client, "ECHO_IN").await;
    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "ECHOED", N as u64).await;
    wait_stream_count(&client, "WEIR_DLQ", 0).await;
    assert_eq!(stalls(), 0, "no pull stalled");
}

/// The server's users: `weir` (the host), barred from asking for messages
/// while `pulls` is false, and `test` (the test's own client).
fn users(pulls: bool) -> String {
    let deny = if pulls {
        String::new()
    } else {
        "permissions: { publish: { deny: [\"$JS.API.CONSUMER.MSG.NEXT.>\"] } }".into()
    };
    format!(
        "authorization {{\n  users = [\n    {{ user: weir, password: weir-pw, {deny} }}\n    {{ user: test, password: test-pw }}\n  ]\n}}\n"
    )
}

/// The watchdog, on a pull that never reaches the server: the host may not
/// publish pull requests, so each one is refused (the server answers only
/// with an -ERR, and async-nats' stream counts it as outstanding). The
/// watchdog finds the server holding messages and no pull request, and
/// renews the pull; once pulls are allowed again (a config reload), a renewed
/// pull brings every event through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_renews_a_pull_the_server_never_got() {
    let server = NatsServer::start_with_config(&users(false));
    let client = async_nats::ConnectOptions::new()
        .user_and_password("test".into(), "test-pw".into())
        .connect(server.url())
        .await
        .expect("test client connects");
    create_stream(&client, "ECHO_IN", &["demo.echo.>"]).await;
    create_stream(&client, "ECHOED", &["demo.echoed.>"]).await;
    const N: usize = 500;
    publish_js(&client, N, |i| format!("demo.echo.{i}")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = jetstream_bundle("echo", dir.path(), "ECHO_IN", "max_in_flight = 64\n");
    let password = dir.path().join("nats-password");
    std::fs::write(&password, "weir-pw\n").expect("write password");
    let mut config = host_config(&server, &[echo]);
    config.nats.user = Some("weir".into());
    config.nats.password_file = Some(password);
    let host = Host::start(&config).await.expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    let plugin = host.plugins()[0].clone();
    let stalls = || plugin.stats.stalls.load(Ordering::Relaxed);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stalls() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watchdog never found the stalled pull"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stream_count(&client, "ECHOED").await,
        0,
        "nothing was pulled"
    );
    server.reload_config(&users(true));
    wait_stream_count(&client, "ECHOED", N as u64).await;
    wait_consumer_idle(&client, "ECHO_IN").await;
    host.stop().await.expect("clean stop");
    wait_stream_count(&client, "ECHOED", N as u64).await;
    assert!(stalls() >= 1);
}
