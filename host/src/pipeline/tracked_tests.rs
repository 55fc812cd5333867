//! Tracked events in memory: the status writes an event's life leads to,
//! the webhook job of a final status, and untracked events left alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::pipeline::Settle;
use crate::pipeline::testing::*;
use crate::tracking::{CALLBACK, STATUS_ID, State, StatusDoc};

const ID: &str = "0123456789abcdef0123456789abcdef";

fn tracked(payload: &str, attempt: u32) -> crate::event::Event {
    event(
        "e",
        payload,
        attempt,
        vec![(STATUS_ID.to_owned(), ID.to_owned())],
    )
}

/// A sink holding the document the gateway wrote for [`ID`].
fn sink_with_doc(callback: Option<&str>) -> Arc<MemSink> {
    let sink = Arc::new(MemSink::default());
    let mut doc = StatusDoc::accepted(ID, "in.x", "t0");
    doc.callback = callback.map(str::to_owned);
    sink.statuses.lock().expect("lock").push(doc);
    sink
}

fn states(sink: &MemSink) -> Vec<(State, u32)> {
    let writes = sink.status_writes.lock().expect("lock");
    writes.iter().map(|h| (h.status, h.attempts)).collect()
}

#[tokio::test]
async fn a_success_records_running_then_succeeded_with_its_outputs_and_queues_one_webhook() {
    let sink = sink_with_doc(Some("http://127.0.0.1:9/hook"));
    let events = vec![tracked("ok", 1)];
    let run = serve_events(plugin(3), sink.clone(), true, events, false).await;
    assert_eq!(run.settled, vec![("e".into(), Settle::Done)]);
    assert_eq!(
        states(&sink),
        vec![(State::Running, 1), (State::Succeeded, 1)]
    );
    let docs = sink.statuses.lock().expect("lock");
    assert_eq!(docs[0].outputs.len(), 1);
    assert_eq!(docs[0].outputs[0].subject, "out");
    assert_eq!(docs[0].outputs[0].msg_id.as_deref(), Some("e:0"));
    let hooks = sink.webhooks.lock().expect("lock");
    assert_eq!(hooks.len(), 1);
    let id = crate::event::header(&hooks[0].headers, "Nats-Msg-Id");
    assert_eq!(id, Some(format!("{ID}_mem_succeeded").as_str()));
    let body: serde_json::Value = serde_json::from_slice(&hooks[0].payload).expect("json");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["id"], ID);
}

#[tokio::test]
async fn retries_and_the_dead_letter_are_recorded_with_the_error() {
    let sink = sink_with_doc(None);
    // A JetStream retry (settled Retry), then the last attempt in a new delivery.
    let run = serve_events(
        plugin(2),
        sink.clone(),
        true,
        vec![tracked("retry", 1)],
        false,
    )
    .await;
    assert_eq!(run.settled[0].1, Settle::Retry(Duration::from_millis(1)));
    serve_events(
        plugin(2),
        sink.clone(),
        true,
        vec![tracked("retry", 2)],
        false,
    )
    .await;
    assert_eq!(
        states(&sink),
        vec![
            (State::Running, 1),
            (State::Retrying, 1),
            (State::Running, 2),
            (State::DeadLettered, 2),
        ]
    );
    let docs = sink.statuses.lock().expect("lock");
    let error = docs[0].error.as_ref().expect("an error");
    assert_eq!(error.kind, "retry-exhausted");
    assert!(
        sink.webhooks.lock().expect("lock").is_empty(),
        "no callback named"
    );
}

#[tokio::test]
async fn a_webhook_that_cannot_be_queued_leaves_the_event_unfinished() {
    let sink = sink_with_doc(Some("http://127.0.0.1:9/hook"));
    sink.refuse_webhooks.store(true, Ordering::Relaxed);
    let events = vec![tracked("ok", 1)];
    let plugin = plugin(3);
    let run = serve_events(plugin.clone(), sink.clone(), true, events, false).await;
    assert!(
        matches!(run.settled[0].1, Settle::Unfinished(_)),
        "{:?}",
        run.settled
    );
    assert_eq!(
        crate::plugin::Stats::get(&plugin.stats.webhooks_unqueued),
        1
    );
}

#[tokio::test]
async fn the_plugins_webhook_url_serves_when_the_request_named_none() {
    let sink = sink_with_doc(None);
    let plugin = plugin_with(3, "[webhook]\nurl = \"https://hooks.example.com/weir\"\n");
    serve_events(
        plugin,
        sink.clone(),
        true,
        vec![tracked("reject", 1)],
        false,
    )
    .await;
    let hooks = sink.webhooks.lock().expect("lock");
    assert_eq!(hooks.len(), 1);
    let url = crate::event::header(&hooks[0].headers, "Weir-Callback-Url");
    assert_eq!(url, Some("https://hooks.example.com/weir"));
    let body: serde_json::Value = serde_json::from_slice(&hooks[0].payload).expect("json");
    assert_eq!(body["status"], "dead-lettered");
}

#[tokio::test]
async fn untracked_events_write_nothing() {
    let sink = Arc::new(MemSink::default());
    let bad_id = event("e", "ok", 1, vec![(STATUS_ID.into(), "guess-me".into())]);
    serve_all(plugin(3), sink.clone(), true, &[("a", "ok", 1)], false).await;
    serve_events(plugin(3), sink.clone(), true, vec![bad_id], false).await;
    assert!(sink.status_writes.lock().expect("lock").is_empty());
    assert!(sink.webhooks.lock().expect("lock").is_empty());
}

/// A producer on NATS sets the headers itself: a status id no gateway gave
/// (no document) is not tracked, and a `Weir-Callback` header is never
/// called. Outputs do not carry the tracking on.
#[tokio::test]
async fn a_forged_callback_or_status_id_is_not_followed() {
    let forged = |id: &str| {
        event(
            "e",
            "ok",
            1,
            vec![
                (STATUS_ID.into(), id.into()),
                (CALLBACK.into(), "http://169.254.169.254/latest".into()),
            ],
        )
    };
    let sink = Arc::new(MemSink::default());
    serve_events(plugin(3), sink.clone(), true, vec![forged(ID)], false).await;
    assert!(
        sink.webhooks.lock().expect("lock").is_empty(),
        "no document: untracked"
    );
    let sink = sink_with_doc(None);
    serve_events(plugin(3), sink.clone(), true, vec![forged(ID)], false).await;
    assert_eq!(sink.status_writes.lock().expect("lock").len(), 2, "tracked");
    assert!(
        sink.webhooks.lock().expect("lock").is_empty(),
        "the header's callback is not the gateway's"
    );
}

/// A final status is recorded once: a redelivery after a lost ack runs
/// again but neither moves it back nor queues a second webhook.
#[tokio::test]
async fn a_final_status_stays_and_its_webhook_is_queued_once() {
    let sink = sink_with_doc(Some("http://127.0.0.1:9/hook"));
    serve_events(plugin(3), sink.clone(), true, vec![tracked("ok", 1)], false).await;
    serve_events(plugin(3), sink.clone(), true, vec![tracked("ok", 2)], false).await;
    let docs = sink.statuses.lock().expect("lock");
    assert_eq!((docs[0].status, docs[0].attempts), (State::Succeeded, 1));
    assert_eq!(
        sink.published.lock().expect("lock").len(),
        1,
        "not run again"
    );
    // Queued again (the first job may be what was lost), under the same
    // Nats-Msg-Id: WEIR_WEBHOOKS keeps one.
    let hooks = sink.webhooks.lock().expect("lock");
    let ids: Vec<_> = hooks
        .iter()
        .map(|j| crate::event::header(&j.headers, "Nats-Msg-Id"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
}

/// Finished on its last attempt, its webhook not stored: delivered again, it
/// is neither run again nor dead-lettered ("delivered past max_attempts");
/// only its webhook is queued, and it settles as it ended.
#[tokio::test]
async fn a_redelivery_after_it_finished_only_queues_the_webhook_again() {
    let sink = sink_with_doc(Some("http://127.0.0.1:9/hook"));
    sink.refuse_webhooks.store(true, Ordering::Relaxed);
    let run = serve_events(plugin(3), sink.clone(), true, vec![tracked("ok", 3)], false).await;
    assert!(
        matches!(run.settled[0].1, Settle::Unfinished(_)),
        "{:?}",
        run.settled
    );
    sink.refuse_webhooks.store(false, Ordering::Relaxed);
    let run = serve_events(plugin(3), sink.clone(), true, vec![tracked("ok", 4)], false).await;
    assert_eq!(run.settled, vec![("e".into(), Settle::Done)]);
    assert_eq!(sink.published.lock().expect("lock").len(), 1, "run once");
    assert!(
        sink.letters.lock().expect("lock").is_empty(),
        "no dead letter"
    );
    assert_eq!(sink.webhooks.lock().expect("lock").len(), 1);

    // The same for a dead-lettered event: one letter, not two.
    let sink = sink_with_doc(Some("http://127.0.0.1:9/hook"));
    sink.refuse_webhooks.store(true, Ordering::Relaxed);
    serve_events(
        plugin(3),
        sink.clone(),
        true,
        vec![tracked("reject", 1)],
        false,
    )
    .await;
    sink.refuse_webhooks.store(false, Ordering::Relaxed);
    let run = serve_events(
        plugin(3),
        sink.clone(),
        true,
        vec![tracked("reject", 2)],
        false,
    )
    .await;
    assert_eq!(run.settled, vec![("e".into(), Settle::DeadLettered)]);
    assert_eq!(sink.letters.lock().expect("lock").len(), 1);
    assert_eq!(sink.webhooks.lock().expect("lock").len(), 1);
}
