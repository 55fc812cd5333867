//! Issue 19: delayed and periodic events on NATS message schedules. A
//! `[[schedule]]` loaded by two hosts is one definition whose ticks are each
//! handled once; removing the entry stops them; `weir pub --in` and a
//! handler's `Weir-Deliver-In` output arrive once, no earlier than asked (by
//! the server's own timestamps); a bad cron is refused naming its field.

use std::path::{Path, PathBuf};

use futures::TryStreamExt as _;
use weir_host::config::Spec;
use weir_host::host::Host;
use weir_host::plugin::Stats;
use weir_host::schedule::{self, Definition};

use crate::support::*;

/// The probe plugin, its manifest extended with `extra`, in `dir`.
fn probe(dir: &Path, extra: &str) -> PathBuf {
    let extra = extra.to_owned();
    bundle_copy("schedule-probe", dir, move |m| {
        let m = m.replace(
            "subject = \"sched.>\"\n",
            "subject = \"sched.>\"\nmode = \"jetstream\"\nstream = \"SCHED\"\n",
        );
        m + &extra
    })
}

fn js(client: &async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(client.clone())
}

/// The subjects of `filter` in the schedules stream, with their counts.
async fn subjects(client: &async_nats::Client, filter: &str) -> Vec<(String, usize)> {
    let stream = js(client)
        .get_stream(schedule::STREAM)
        .await
        .expect("the schedules stream");
    let mut found: Vec<(String, usize)> = stream
        .info_with_subjects(filter)
        .await
        .expect("stream info")
        .try_collect()
        .await
        .expect("subjects");
    found.sort();
    found
}

/// Wait (at most PATIENCE) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Message `seq` of `stream`.
async fn stored(
    client: &async_nats::Client,
    stream: &str,
    seq: u64,
) -> async_nats::jetstream::message::StreamMessage {
    let stream = js(client).get_stream(stream).await.expect("stream");
    stream.get_raw_message(seq).await.expect("stored message")
}

fn header_of(msg: &async_nats::jetstream::message::StreamMessage, name: &str) -> Option<String> {
    msg.headers.get(name).map(|v| v.as_str().to_owned())
}

fn nanos(t: chrono::DateTime<chrono::Utc>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

/// How far past its whole second a tick was fired, in ms (the server fires
/// on the second): the fire-time error.
fn fire_error_ms(msg: &async_nats::jetstream::message::StreamMessage) -> i64 {
    let fired = header_of(msg, schedule::FIRED_AT).expect("a forwarded tick says when it fired");
    let fired = chrono::DateTime::parse_from_rfc3339(&fired).expect("RFC 3339");
    i64::from(fired.timestamp_subsec_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_schedule_on_two_hosts_is_one_definition_each_tick_handled_once() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "SCHED", &["sched.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = "\n[[schedule]]\nname = \"tick\"\nevery = \"1s\"\nsubject = \"sched.tick.a\"\npayload = \"tick\"\n";
    let with = probe(dir.path(), entry);
    let config = host_config(&server, std::slice::from_ref(&with));
    let a = Host::start(&config).await.expect("host a starts");
    let b = Host::start(&config).await.expect("host b starts");
    assert!(
        a.refused().is_empty() && b.refused().is_empty(),
        "{:?}",
        a.refused()
    );
    let definition = "weir.schedule.plugin.schedule-probe.tick".to_owned();
    assert_eq!(
        subjects(&client, "weir.schedule.>").await,
        vec![(definition.clone(), 1)]
    );
    until("three ticks", || async {
        stream_count(&client, "SCHED").await >= 3
    })
    .await;

    // One host restarts: still one definition, and the ticks go on.
    let b_stats = b.plugins()[0].stats.clone();
    b.stop().await.expect("b stops");
    let b2 = Host::start(&config).await.expect("b starts again");
    assert_eq!(
        subjects(&client, "weir.schedule.>").await,
        vec![(definition, 1)]
    );
    let before = stream_count(&client, "SCHED").await;
    until("two more ticks", || async {
        stream_count(&client, "SCHED").await >= before + 2
    })
    .await;

    // The entry removed, the plugin loaded again: the definition is gone.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let without = probe(dir2.path(), "");
    let c = Host::start(&host_config(&server, &[without]))
        .await
        .expect("host c starts");
    assert!(subjects(&client, "weir.schedule.>").await.is_empty());
    // What fired before the removal has been forwarded...
    until("nothing left to forward", || async {
        subjects(&client, "weir.due.>").await.is_empty()
    })
    .await;
    let after_removal = stream_count(&client, "SCHED").await;
    // ...and while the server's scheduler fires another schedule twice, no tick comes.
    let mut probe_ticks = client.subscribe("probe.tick").await.expect("subscribe");
    let other = Definition {
        subject: schedule::named_subject("probe"),
        spec: Spec::Every(std::time::Duration::from_secs(1)),
        target: "probe.tick".into(),
        payload: "p".into(),
        headers: vec![],
        owner: None,
        msg_id: None,
    };
    schedule::sync::publish(&js(&client), &other)
        .await
        .expect("another schedule");
    collect(&mut probe_ticks, 2).await;
    assert_eq!(
        stream_count(&client, "SCHED").await,
        after_removal,
        "a tick after the reload"
    );

    // Each tick handled exactly once, by weir's own counts.
    wait_consumer_idle(&client, "SCHED").await;
    let hosts = [&a, &b2, &c];
    let mut handled = Stats::get(&b_stats.succeeded);
    for host in hosts {
        handled += Stats::get(&host.plugins()[0].stats.succeeded);
    }
    assert_eq!(handled, after_removal, "ticks handled across the hosts");
    let mut errors = Vec::new();
    for seq in 1..=after_removal {
        let tick = stored(&client, "SCHED", seq).await;
        assert_eq!(&tick.payload[..], b"tick");
        errors.push(fire_error_ms(&tick));
    }
    eprintln!("@every 1s: {after_removal} ticks, fired this many ms past their second: {errors:?}");
    for host in [a, b2, c] {
        host.stop().await.expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_with_seconds_fires_as_written() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "SCHED", &["sched.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = "\n[[schedule]]\ncron = \"*/2 * * * * *\"\ntime_zone = \"Europe/Berlin\"\nsubject = \"sched.tick.cron\"\n";
    let mut config = host_config(&server, &[probe(dir.path(), entry)]);
    config.telemetry.listen = Some("127.0.0.1:0".parse().expect("address"));
    let host = Host::start(&config).await.expect("host starts");
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    until("three ticks", || async {
        stream_count(&client, "SCHED").await >= 3
    })
    .await;
    // The forwarder's count of the schedule, on /metrics.
    let base = format!("http://{}", host.metrics_addr().expect("metrics listen"));
    let count = |outcome: &'static str| {
        let base = base.clone();
        async move {
            let s = crate::metrics::scrape(&base).await;
            let labels = [
                ("schedule", "weir.schedule.plugin.schedule-probe.0"),
                ("outcome", outcome),
            ];
            crate::metrics::value(&s, "weir_schedule_ticks_total", &labels)
        }
    };
    until("three forwarded on /metrics", || async {
        count("forwarded").await >= 3.0
    })
    .await;
    assert_eq!(count("retried").await, 0.0);
    let mut errors = Vec::new();
    for seq in 1..=3 {
        let tick = stored(&client, "SCHED", seq).await;
        let fired = header_of(&tick, schedule::FIRED_AT).expect("fired at");
        let fired = chrono::DateTime::parse_from_rfc3339(&fired).expect("RFC 3339");
        assert_eq!(fired.timestamp() % 2, 0, "*/2 seconds: fired at {fired}");
        errors.push(fire_error_ms(&tick));
    }
    eprintln!("cron */2 s: fired this many ms past their second: {errors:?}");
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_pub_in_is_stored_as_a_schedule_and_delivered_once_after_its_delay() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "LATER", &["later.>"]).await;
    // A host with no plugin: it forwards what fires.
    let host = Host::start(&host_config(&server, &[]))
        .await
        .expect("host starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url();
    let out = crate::cli::weir_in(
        dir.path(),
        &[
            "--json", "pub", "later.x", "hello", "--in", "2s", "--nats", &url,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON line");
    let subject = line["schedule"]
        .as_str()
        .expect("the schedule's subject")
        .to_owned();
    let at = line["at"].as_str().expect("when").to_owned();
    let stream = js(&client)
        .get_stream(schedule::STREAM)
        .await
        .expect("schedules stream");
    let definition = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .expect("stored as a schedule");
    assert_eq!(
        header_of(&definition, "Nats-Schedule"),
        Some(format!("@at {at}"))
    );
    assert_eq!(
        header_of(&definition, "Nats-Schedule-Target").as_deref(),
        Some("weir.due.later.x")
    );

    wait_stream_count(&client, "LATER", 1).await;
    let delivered = stored(&client, "LATER", 1).await;
    assert_eq!(&delivered.payload[..], b"hello");
    assert_eq!(header_of(&delivered, "Nats-Schedule"), None);
    assert_eq!(header_of(&delivered, schedule::FROM), Some(subject));
    let published = definition.time.unix_timestamp_nanos();
    let arrived = delivered.time.unix_timestamp_nanos();
    assert!(
        arrived - published >= 2_000_000_000,
        "delivered {} ms after it was stored, not 2 s",
        (arrived - published) / 1_000_000
    );
    let due = chrono::DateTime::parse_from_rfc3339(&at)
        .expect("at")
        .to_utc();
    eprintln!(
        "--in 2s: stored to delivered {} ms; delivered {} ms after its due second",
        (arrived - published) / 1_000_000,
        (arrived - nanos(due)) / 1_000_000
    );
    // Once: the one-shot is gone and nothing is left to forward.
    until("the one-shot done", || async {
        subjects(&client, "weir.>").await.is_empty()
    })
    .await;
    assert_eq!(stream_count(&client, "LATER").await, 1);
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_from_a_handler_arrives_later_and_is_handled_once() {
    let server = NatsServer::start();
    let client = server.client().await;
    create_stream(&client, "SCHED", &["sched.>"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::start(&host_config(&server, &[probe(dir.path(), "")]))
        .await
        .expect("host starts");
    let plugin = host.plugins()[0].clone();
    js(&client)
        .publish("sched.ask.1", "2s".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    until("the ask handled", || async {
        Stats::get(&plugin.stats.succeeded) >= 1
    })
    .await;
    wait_stream_count(&client, "SCHED", 2).await;
    wait_consumer_idle(&client, "SCHED").await;
    let ask = stored(&client, "SCHED", 1).await;
    let follow_up = stored(&client, "SCHED", 2).await;
    assert_eq!(follow_up.subject.as_str(), "sched.followup.1");
    assert_eq!(header_of(&follow_up, "Weir-Deliver-In"), None);
    let from = header_of(&follow_up, schedule::FROM).expect("came through a schedule");
    assert!(from.starts_with("weir.schedule.once."), "{from}");
    let gap = follow_up.time.unix_timestamp_nanos() - ask.time.unix_timestamp_nanos();
    assert!(
        gap >= 2_000_000_000,
        "follow-up {} ms after the ask",
        gap / 1_000_000
    );
    eprintln!("follow-up: {} ms after its ask", gap / 1_000_000);
    host.stop().await.expect("clean stop");
    assert_eq!(
        Stats::get(&plugin.stats.succeeded),
        2,
        "the ask and its follow-up, once each"
    );
    assert_eq!(stream_count(&client, "SCHED").await, 2);
    assert_eq!(stream_count(&client, "WEIR_DLQ").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cron_is_refused_naming_the_field_and_the_others_run() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = probe(
        dir.path(),
        "\n[[schedule]]\ncron = \"61 * * * * *\"\nsubject = \"sched.tick.x\"\n",
    );
    let echo = bundle("echo");
    let host = Host::start(&host_config(&server, &[bad, echo]))
        .await
        .expect("host starts");
    let refused = host.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].reason.contains("schedule[0].cron"),
        "{}",
        refused[0].reason
    );
    assert_eq!(host.plugins().len(), 1);
    assert_eq!(host.plugins()[0].name(), "echo");
    host.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_schedule_add_list_rm() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = server.url();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--nats", &url]);
        crate::cli::weir_in(dir.path(), &all, &[])
    };
    let out = run(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 0 3 * * *",
        "--time-zone",
        "Europe/Berlin",
        "--subject",
        "reports.nightly",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--json", "schedule", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(row["subject"], "weir.schedule.named.nightly");
    assert_eq!(row["spec"], "0 0 3 * * *");
    assert_eq!(row["time_zone"], "Europe/Berlin");
    assert_eq!(row["target"], "reports.nightly");
    let next = row["next"].as_str().expect("a next fire time");
    let next = chrono::DateTime::parse_from_rfc3339(next).expect("RFC 3339");
    assert_eq!(
        next.with_timezone(&chrono_tz::Europe::Berlin)
            .format("%H:%M:%S")
            .to_string(),
        "03:00:00"
    );
    let out = run(&[
        "schedule",
        "add",
        "bad",
        "--cron",
        "* * *",
        "--subject",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cron"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["schedule", "rm", "nightly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--json", "schedule", "list"]);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&["schedule", "rm", "nightly"]);
    assert_eq!(out.status.code(), Some(1));
}
