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
