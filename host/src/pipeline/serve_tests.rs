//! The pipeline without a server: every outcome → settle mapping, through an
//! in-memory [`Delivery`] and [`Sink`] around a native handler.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use super::*;
use crate::pipeline::testing::*;

#[tokio::test]
async fn redelivered_events_settle_by_outcome() {
    let run = serve_all(
        plugin(3),
        Arc::default(),
        true,
        &[
            ("a", "ok", 1),
            ("b", "retry", 1),
            ("c", "reject", 1),
            ("d", "retry", 3),
            ("e", "ok", 4),
        ],
        false,
    )
    .await;
    assert_eq!(
        run.settled,
        vec![
            ("a".into(), Settle::Done),
            ("b".into(), Settle::Retry(Duration::from_millis(1))),
            ("c".into(), Settle::DeadLettered),
            ("d".into(), Settle::DeadLettered),
            // Delivered past max_attempts (a host died mid-attempt): not run.
            ("e".into(), Settle::DeadLettered),
        ]
    );
    let published = run.sink.published.lock().expect("lock");
    assert_eq!(published.len(), 1);
    assert_eq!(
        crate::event::header(&published[0].headers, "Nats-Msg-Id"),
        Some("a:0")
    );
    let letters = run.sink.letters.lock().expect("lock");
    let kinds: Vec<_> = letters
        .iter()
        .map(|l| {
            crate::event::header(&l.headers, "Weir-Error-Kind")
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["reject", "retry-exhausted", "retry-exhausted"]);
    assert!(
        letters
            .iter()
            .all(|l| crate::event::header(&l.headers, "Weir-Original-Stream") == Some("IN"))
    );
}

#[tokio::test]
async fn an_unstored_dead_letter_leaves_the_event_unfinished_and_counted() {
    let sink = Arc::new(MemSink::default());
    sink.refuse_letters.store(true, Ordering::Relaxed);
    let plugin = plugin(3);
    let run = serve_all(
        plugin.clone(),
        sink,
        true,
        &[("a", "reject", 1), ("b", "retry", 3)],
        false,
    )
    .await;
    assert_eq!(
        run.settled,
        vec![
            ("a".into(), Settle::Unfinished(Duration::from_millis(1))),
            ("b".into(), Settle::Unfinished(Duration::from_millis(1))),
        ]
    );
    assert_eq!(Stats::get(&plugin.stats.dead_letters_unstored), 2);
    assert_eq!(Stats::get(&plugin.stats.dead_lettered), 0);
}

/// A rejected event whose dead letter could not be stored comes back past
/// max_attempts: it is dead-lettered as the `reject` it was, not run again,
/// and not taken for `retry-exhausted`.
#[tokio::test]
async fn an_event_back_after_an_unstored_letter_keeps_its_failure() {
    let sink = Arc::new(MemSink::default());
    sink.refuse_letters.store(true, Ordering::Relaxed);
    let plugin = plugin(3);
    let settled = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel(1);
    let item = |attempt: u32| Inbound {
        event: Event {
            id: "a".into(),
            subject: "in.x".into(),
            payload: bytes::Bytes::from_static(b"reject"),
            headers: vec![],
            reply_to: None,
            attempt,
            principal: None,
        },
        first_seen: SystemTime::now(),
        origin: Some(("IN".to_owned(), 7)),
        refused: None,
        delivery: MemDelivery {
            redelivers: true,
            settled: settled.clone(),
            id: format!("a{attempt}"),
        },
    };
    let tracker = TaskTracker::new();
    let serving = tokio::spawn(serve(
        plugin.clone(),
        sink.clone(),
        rx,
        tracker.clone(),
        CancellationToken::new(),
    ));
    tx.send(item(1)).await.expect("queue");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while settled.lock().expect("lock").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first delivery not settled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sink.refuse_letters.store(false, Ordering::Relaxed);
    tx.send(item(9)).await.expect("queue");
    drop(tx);
    serving.await.expect("serve");
    tracker.close();
    tracker.wait().await;
    assert_eq!(
        settled.lock().expect("lock").clone(),
        vec![
            ("a1".into(), Settle::Unfinished(Duration::from_millis(1))),
            ("a9".into(), Settle::DeadLettered),
        ]
    );
    // Run once: the second delivery stored the letter without running it.
    assert_eq!(Stats::get(&plugin.stats.failed_attempts), 1);
    let letters = sink.letters.lock().expect("lock");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        crate::event::header(&letters[0].headers, "Weir-Error-Kind"),
        Some("reject")
    );
    assert_eq!(
        crate::event::header(&letters[0].headers, "Weir-Error"),
        Some("never")
    );
}

/// Issue 10: outputs the server cannot take yet are published again in
/// place (counted), and the event ends done, not unfinished.
#[tokio::test]
async fn unavailable_outputs_are_published_again_in_place() {
    let sink = Arc::new(MemSink::default());
    sink.unavailable.store(3, Ordering::Relaxed);
    let plugin = plugin(3);
    let run = serve_all(plugin.clone(), sink.clone(), true, &[("a", "ok", 1)], false).await;
    assert_eq!(run.settled, vec![("a".into(), Settle::Done)]);
    assert_eq!(Stats::get(&plugin.stats.outputs_retried), 3);
    assert_eq!(Stats::get(&plugin.stats.outputs_unconfirmed), 0);
    assert_eq!(sink.published.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn unconfirmed_outputs_leave_the_event_unfinished() {
    let sink = Arc::new(MemSink::default());
    sink.refuse_outputs.store(true, Ordering::Relaxed);
    let plugin = plugin(3);
    let run = serve_all(plugin.clone(), sink, true, &[("a", "ok", 1)], false).await;
    assert_eq!(
        run.settled,
        vec![("a".into(), Settle::Unfinished(Duration::from_millis(1)))]
    );
    assert_eq!(Stats::get(&plugin.stats.succeeded), 0);
    assert_eq!(Stats::get(&plugin.stats.outputs_unconfirmed), 1);
}

#[tokio::test]
async fn core_events_retry_in_process() {
    let plugin = plugin(3);
    let run = serve_all(
        plugin.clone(),
        Arc::default(),
        false,
        &[("a", "retry", 1), ("b", "ok", 1)],
        false,
    )
    .await;
    assert_eq!(
        run.settled,
        vec![
            ("a".into(), Settle::DeadLettered),
            ("b".into(), Settle::Done)
        ]
    );
    // Three attempts for "a", all failed, then one dead letter.
    assert_eq!(Stats::get(&plugin.stats.failed_attempts), 3);
    let letters = run.sink.letters.lock().expect("lock");
    assert_eq!(
        crate::event::header(&letters[0].headers, "Weir-Attempts"),
        Some("3")
    );
}

#[tokio::test]
async fn after_stop_redeliverable_events_are_handed_back_and_core_ones_finish() {
    let plugin = plugin(3);
    let run = serve_all(
        plugin.clone(),
        Arc::default(),
        true,
        &[("a", "ok", 1), ("b", "ok", 1)],
        true,
    )
    .await;
    assert_eq!(
        run.settled,
        vec![
            ("a".into(), Settle::HandBack),
            ("b".into(), Settle::HandBack)
        ]
    );
    assert_eq!(Stats::get(&plugin.stats.handed_back), 2);
    assert!(run.sink.published.lock().expect("lock").is_empty());

    let plugin = super::tests::plugin(3);
    let run = serve_all(
        plugin.clone(),
        Arc::default(),
        false,
        &[("a", "ok", 1), ("b", "retry", 1)],
        true,
    )
    .await;
    // Core events cannot be handed back: they run; a failure is dead-lettered, not retried.
    assert_eq!(
        run.settled,
        vec![
            ("a".into(), Settle::Done),
            ("b".into(), Settle::DeadLettered)
        ]
    );
    let letters = run.sink.letters.lock().expect("lock");
    assert_eq!(Stats::get(&plugin.stats.failed_attempts), 1);
    assert!(
        crate::event::header(&letters[0].headers, "Weir-Error")
            .is_some_and(|e| e.contains("not retried: the host is shutting down"))
    );
}

/// A plugin like [`plugin`] with `[circuit]`, its circuit opened for a minute
/// (as another host or `weir pause` would).
fn open_circuit_plugin() -> Arc<Plugin> {
    let plugin = plugin_with(3, "[circuit]\n");
    let now = tokio::time::Instant::now();
    let circuit = &plugin.circuit;
    assert!(
        circuit
            .open_until(now, now + Duration::from_secs(60))
            .is_some()
    );
    plugin
}

#[tokio::test]
async fn an_open_circuit_sheds_core_events_and_holds_jetstream_ones() {
    let plugin = open_circuit_plugin();
    let core = serve_all(
        plugin.clone(),
        Arc::default(),
        false,
        &[("c1", "ok", 1), ("c2", "ok", 1)],
        false,
    )
    .await;
    assert_eq!(Stats::get(&plugin.stats.shed_circuit_open), 2);
    assert_eq!(Stats::get(&plugin.stats.succeeded), 0, "no core event ran");
    assert_eq!(
        core.settled,
        [("c1".into(), Settle::Done), ("c2".into(), Settle::Done)]
    );

    // JetStream events wait; when the readers go (shutdown) they are handed
    // back, never run, never dead-lettered.
    let js = serve_all(
        plugin.clone(),
        Arc::default(),
        true,
        &[("j1", "ok", 1), ("j2", "ok", 2)],
        false,
    )
    .await;
    assert_eq!(
        js.settled,
        [
            ("j1".into(), Settle::HandBack),
            ("j2".into(), Settle::HandBack)
        ]
    );
    assert_eq!(Stats::get(&plugin.stats.succeeded), 0);
    assert!(js.sink.letters.lock().expect("lock").is_empty());
}

/// Held JetStream events start as soon as the circuit closes (a `weir
/// resume`, another host's probes), not when the cool-down would have ended.
#[tokio::test]
async fn held_events_run_once_the_circuit_closes() {
    let plugin = open_circuit_plugin();
    let sink = Arc::new(MemSink::default());
    let settled = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel(4);
    let tracker = TaskTracker::new();
    let serving = tokio::spawn(serve(
        plugin.clone(),
        sink.clone(),
        rx,
        tracker.clone(),
        CancellationToken::new(),
    ));
    for id in ["h1", "h2"] {
        let item = Inbound {
            event: Event {
                id: id.into(),
                subject: "in.x".into(),
                payload: bytes::Bytes::from_static(b"ok"),
                headers: vec![],
                reply_to: None,
                attempt: 2,
                principal: None,
            },
            first_seen: SystemTime::now(),
            origin: Some(("IN".to_owned(), 1)),
            refused: None,
            delivery: MemDelivery {
                redelivers: true,
                settled: settled.clone(),
                id: id.into(),
            },
        };
        tx.send(item).await.expect("queue");
    }
    tokio::task::yield_now().await;
    assert!(
        settled.lock().expect("lock").is_empty(),
        "nothing runs while open"
    );
    assert_eq!(
        plugin.circuit.close(),
        Some(super::super::circuit::Change::Closed)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while settled.lock().expect("lock").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "held events never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tx);
    serving.await.expect("serve ends");
    let mut done = settled.lock().expect("lock").clone();
    done.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        done,
        [("h1".into(), Settle::Done), ("h2".into(), Settle::Done)]
    );
    assert_eq!(sink.published.lock().expect("lock").len(), 2);
}
