//! Issue 9: requests. `weir pub --request` exits 1 on an error reply and says
//! so; a request to a subject a stream captures is answered by the stream,
//! which `weir pub` points out; a handler that answers a request on a
//! JetStream subscription is warned, once, under `weir test`.

use super::*;

#[test]
fn pub_request_exits_1_on_an_error_reply() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &server, &[bundle("echo"), bundle("reject")]);
    let mut host = WeirProcess::start(&["up", "--config", path(&config)], &[]);
    host.wait_for_output("weir is up");
    rt.block_on(request_until_answered(&client, "demo.echo.ready", "x"));
    let url = server.url();
    let run = |args: &[&str]| weir_in(dir.path(), args, &[]);

    let out = run(&["pub", "--request", "demo.echo.x", "hello", "--nats", &url]);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(stdout(&out), "hello\n");

    // reject dead-letters every event; its requester gets an error reply.
    let out = run(&["pub", "--request", "test.reject", "nope", "--nats", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_eq!(stdout(&out), "", "an error reply is not printed as a reply");
    assert!(
        stderr(&out).contains("error reply to request 1 (400): reject: "),
        "{}",
        shown(&out)
    );

    // --json: every reply as a JSON line, the error reply's headers included.
    let out = run(&[
        "pub",
        "--request",
        "test.reject",
        "nope",
        "--nats",
        &url,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON line");
    let headers = reply["headers"].as_array().expect("headers");
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "Nats-Service-Error-Code" && h[1] == "400"),
        "{reply}"
    );
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
}

/// No host at all: the stream answers the request with its publish ack.
#[test]
fn pub_request_to_a_stream_subject_says_the_reply_is_the_streams_ack() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    rt.block_on(create_stream(&client, "ORDERS", &["orders.>"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = weir_in(
        dir.path(),
        &[
            "pub",
            "--request",
            "orders.created.1",
            "{}",
            "--nats",
            &server.url(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", shown(&out));
    assert!(
        stdout(&out).contains(r#""stream":"ORDERS""#),
        "{}",
        shown(&out)
    );
    assert!(
        stderr(&out).contains(r#"note: this reply is stream "ORDERS"'s ack, not a handler's"#),
        "{}",
        shown(&out)
    );
    rt.block_on(wait_stream_count(&client, "ORDERS", 1));
}

/// A fixture with `reply_to`, run by a plugin that takes its subject from
/// JetStream: the reply is shown (it is what the handler returned) with a
/// warning, once for the plugin, that live it would go nowhere. The same
/// plugin on core NATS is not warned.
#[test]
fn weir_test_warns_once_when_a_jetstream_handler_replies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("requests.json");
    std::fs::write(
        &events,
        r#"[{"subject": "demo.echo.a", "payload": "1", "reply_to": "_INBOX.a"},
           {"subject": "demo.echo.b", "payload": "2", "reply_to": "_INBOX.b"}]"#,
    )
    .expect("write fixture");
    let warning = "the handler replied to a request on a JetStream subscription";
    let jetstream = jetstream_bundle("echo", dir.path(), "ECHO_IN", "");
    let out = weir_in(
        dir.path(),
        &["test", path(&jetstream), "-e", path(&events), "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", shown(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(
        report["events"][0]["outputs"][1]["subject"], "_INBOX.a",
        "{report}"
    );
    assert_eq!(stderr(&out).matches(warning).count(), 1, "{}", shown(&out));
    assert!(stderr(&out).contains("plugin=\"echo\""), "{}", shown(&out));

    let out = weir_in(
        dir.path(),
        &["test", path(&bundle("echo")), "-e", path(&events)],
        &[],
    );
    assert!(out.status.success(), "{}", shown(&out));
    assert!(!stderr(&out).contains(warning), "{}", shown(&out));
}
