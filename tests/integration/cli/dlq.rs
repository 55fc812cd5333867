//! Issue 9: `weir dlq list` keeps its columns with long values (`--json` has
//! them whole, attempts as a number); `weir dlq replay ID --payload FILE`
//! replays a dead letter with a mended payload.

use super::*;

const LONG_NAME: &str = "reject-every-event-it-is-ever-given";
const LONG_SUBJECT: &str =
    "test.reject.a.rather.long.subject.that.would.push.every.column.after.it";

/// Where each heading starts, and every row's cell there (a character other
/// than a space, after a space).
fn assert_aligned(table: &str) {
    let lines: Vec<Vec<char>> = table.lines().map(|l| l.chars().collect()).collect();
    let header: String = lines[0].iter().collect();
    for heading in ["PLUGIN", "KIND", "SUBJECT", "LAST SEEN", "ERROR"] {
        let col = header.find(heading).expect("heading");
        for row in &lines[1..] {
            let row_text: String = row.iter().collect();
            assert!(
                row.get(col).is_some_and(|c| *c != ' ') && row[col - 1] == ' ',
                "{heading} not aligned in:\n{table}\nrow: {row_text}"
            );
        }
    }
}

#[test]
fn dlq_list_elides_long_columns_and_json_keeps_them_whole() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    let dir = tempfile::tempdir().expect("tempdir");
    let reject = bundle_copy("reject", dir.path(), |m| {
        m.replace("name = \"reject\"", &format!("name = \"{LONG_NAME}\""))
            .replace("subject = \"test.reject\"", "subject = \"test.reject.>\"")
    });
    let config = write_config(dir.path(), &server, &[reject, bundle("reject")]);
    let config = path(&config);
    let mut host = WeirProcess::start(&["up", "--config", config], &[]);
    host.wait_for_output("weir is up");
    rt.block_on(async {
        client
            .publish(LONG_SUBJECT, "x".into())
            .await
            .expect("publish");
        client
            .publish("test.reject", "y".into())
            .await
            .expect("publish");
        client.flush().await.expect("flush");
        wait_stream_count(&client, "WEIR_DLQ", 2).await;
    });
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");

    let out = weir_in(dir.path(), &["dlq", "list", "--config", config], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    let text = stdout(&out);
    let (table, last) = text
        .trim_end()
        .rsplit_once('\n')
        .expect("a table and a count");
    assert_eq!(last, "2 dead letters", "{text}");
    assert_eq!(table.lines().count(), 3, "{text}");
    assert_aligned(table);
    assert!(table.contains(&format!("{}…", &LONG_NAME[..23])), "{text}");
    assert!(!table.contains(LONG_SUBJECT), "{text}");
    assert!(table.contains("test.reject.a.r"), "{text}");

    let out = weir_in(
        dir.path(),
        &["dlq", "list", "--config", config, "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", shown(&out));
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let long = entries
        .as_array()
        .and_then(|e| e.iter().find(|e| e["plugin"] == LONG_NAME))
        .unwrap_or_else(|| panic!("no {LONG_NAME} entry: {entries}"));
    assert_eq!(long["original_subject"], LONG_SUBJECT, "{long}");
    assert_eq!(long["attempts"], serde_json::json!(1), "a number: {long}");
    assert_eq!(long["kind"], "reject", "{long}");
}

/// A bad order is dead-lettered (reject: not JSON); the operator mends it
/// and replays it with `--payload`: the host handles it, the letter is gone.
#[test]
fn dlq_replay_payload_mends_a_dead_letter() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    let dir = tempfile::tempdir().expect("tempdir");
    let enrich = bundle_copy("enrich-order", dir.path(), |m| {
        m.replace("mode = \"jetstream\"", "")
            .replace("stream = \"ORDERS\"", "")
    });
    let config = write_config(dir.path(), &server, &[enrich]);
    let config = path(&config);
    let mut host = WeirProcess::start(&["up", "--config", config], &[]);
    host.wait_for_output("weir is up");
    let mut enriched = rt.block_on(async {
        let enriched = client
            .subscribe("orders.enriched.>")
            .await
            .expect("subscribe");
        client
            .publish("orders.created.eu", "this is not JSON".into())
            .await
            .expect("publish");
        client.flush().await.expect("flush");
        wait_stream_count(&client, "WEIR_DLQ", 1).await;
        enriched
    });
    let run = |args: &[&str]| weir_in(dir.path(), args, &[]);
    let out = run(&["dlq", "list", "--json", "--config", config]);
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = entries[0]["id"].as_u64().expect("an id").to_string();
    assert_eq!(entries[0]["kind"], "reject", "{entries}");

    // A file that is not there: said so, nothing replayed.
    let out = run(&[
        "dlq",
        "replay",
        &id,
        "--payload",
        "missing.json",
        "--config",
        config,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        stderr(&out).contains("--payload missing.json: cannot read"),
        "{}",
        shown(&out)
    );
    // --payload is for one letter.
    let out = run(&[
        "dlq",
        "replay",
        "--all",
        "--payload",
        "x.json",
        "--config",
        config,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    rt.block_on(wait_stream_count(&client, "WEIR_DLQ", 1));

    let fixed = dir.path().join("fixed.json");
    std::fs::write(
        &fixed,
        r#"{"id": "o-9", "customer": "c-9", "items": [{"sku": "A", "qty": 2, "unit_price": 5}]}"#,
    )
    .expect("write");
    let out = run(&[
        "dlq",
        "replay",
        &id,
        "--payload",
        path(&fixed),
        "--config",
        config,
    ]);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(
        stdout(&out),
        format!("replayed {id} to orders.created.eu\n"),
        "{}",
        shown(&out)
    );
    rt.block_on(async {
        let got = collect(&mut enriched, 1).await;
        assert_eq!(got[0].subject.as_str(), "orders.enriched.eu");
        let order: serde_json::Value = serde_json::from_slice(&got[0].payload).expect("JSON");
        assert_eq!(order["id"], "o-9", "{order}");
        wait_stream_count(&client, "WEIR_DLQ", 0).await;
    });
    let (status, log) = host.stop();
    assert!(status.success(), "{log}");
}

/// A letter stored with its payload cut (Weir-Payload-Truncated) is not
/// replayed as it is, which would send a broken event; with --payload it is.
#[test]
fn dlq_replay_refuses_a_cut_payload_unless_mended() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(server.client());
    rt.block_on(async {
        create_stream(&client, "WEIR_DLQ", &["weir.dlq.>"]).await;
        let js = async_nats::jetstream::new(client.clone());
        let mut h = async_nats::HeaderMap::new();
        h.insert("Weir-Plugin", "big");
        h.insert("Weir-Original-Subject", "test.big");
        h.insert("Weir-Payload-Truncated", "5000000");
        h.insert("Weir-Original-Stream", "BIG");
        h.insert("Weir-Original-Sequence", "42");
        js.publish_with_headers("weir.dlq.big", h, "cut".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url();
    let out = weir_in(dir.path(), &["dlq", "replay", "1", "--nats", &url], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        stderr(&out).contains("its payload was cut to fit the server's max_payload (3 of 5000000 bytes kept); the whole event is in stream \"BIG\" at sequence 42"),
        "{}",
        shown(&out)
    );
    rt.block_on(wait_stream_count(&client, "WEIR_DLQ", 1));
    let whole = dir.path().join("whole.bin");
    std::fs::write(&whole, "the whole payload").expect("write");
    rt.block_on(async {
        let mut replays = client.subscribe("test.big").await.expect("subscribe");
        weir_host::transport::sync_with_server(&client)
            .await
            .expect("round trip");
        let out = weir_in(
            dir.path(),
            &[
                "dlq",
                "replay",
                "1",
                "--payload",
                path(&whole),
                "--nats",
                &url,
            ],
            &[],
        );
        assert!(out.status.success(), "{}", shown(&out));
        let got = collect(&mut replays, 1).await;
        assert_eq!(got[0].payload, "the whole payload".as_bytes());
        wait_stream_count(&client, "WEIR_DLQ", 0).await;
    });
}
