//! `batch`: a batch handler (`handle-batch`) whose every event's outcome is
//! chosen by its payload, `<kind>:<n>`:
//!
//! - `ok`: one output on `batched.ok`, the event's payload, header
//!   `Batch-Attempt` = its attempt;
//! - `retry`: `retry` on the first attempt, then as `ok`;
//! - `reject`: rejected;
//! - `trap`: the guest panics: the whole call traps;
//! - `short`: the call returns one result fewer than it got events;
//! - `busy`: as `ok`, but a batch holding one logs "busy batch of N" and
//!   then spins for 1.5 s (a batch running when the host stops).
//!
//! The tests of batches (issue 17) drive it.

use weir_sdk::{Event, Failure, Message};

fn kind(event: &Event) -> &str {
    let text = core::str::from_utf8(event.payload()).unwrap_or("");
    text.split(':').next().unwrap_or("")
}

fn one(event: Event) -> weir_sdk::Result {
    match kind(&event) {
        "ok" | "busy" => {}
        "retry" if event.attempt() == 1 => return Err(Failure::retry("retry once")),
        "retry" => {}
        "reject" => return Err(Failure::reject("rejected by payload")),
        other => return Err(Failure::reject(format!("unknown kind {other:?}"))),
    }
    let attempt = event.attempt().to_string();
    Ok(vec![
        Message::new("batched.ok", event.into_payload()).header("Batch-Attempt", attempt),
    ])
}

fn handle_all(events: Vec<Event>) -> Vec<weir_sdk::Result> {
    if events.iter().any(|e| kind(e) == "trap") {
        panic!("trap requested by payload");
    }
    if events.iter().any(|e| kind(e) == "busy") {
        weir_sdk::info!("busy batch of {}", events.len());
        let until = std::time::Instant::now() + std::time::Duration::from_millis(1_500);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    let short = events.iter().any(|e| kind(e) == "short");
    let mut results: Vec<_> = events
        .into_iter()
        .map(|e| match kind(&e) {
            "short" => Ok(Vec::new()),
            _ => one(e),
        })
        .collect();
    if short {
        results.pop();
    }
    results
}

weir_sdk::batch_handler!(handle_all);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::run_batch;

    #[test]
    fn each_event_gets_its_own_outcome() {
        let out = run_batch(
            handle_all,
            vec![
                Event::new("batch.rust.1", "ok:1"),
                Event::new("batch.rust.2", "retry:2"),
                Event::new("batch.rust.3", "retry:3").with_attempt(2),
                Event::new("batch.rust.4", "reject:4"),
            ],
        );
        assert_eq!(
            out[0],
            Ok(vec![
                Message::new("batched.ok", "ok:1").header("Batch-Attempt", "1")
            ])
        );
        assert!(out[1].as_ref().is_err_and(|f| f.is_retry()));
        assert!(out[2].is_ok());
        assert!(out[3].as_ref().is_err_and(|f| f.is_reject()));
    }

    #[test]
    fn publish_is_refused_in_a_batch() {
        let out = run_batch(
            |events| {
                events
                    .into_iter()
                    .map(|e| {
                        weir_sdk::publish(e.into_message("x")).map_err(Failure::reject)?;
                        Ok(vec![])
                    })
                    .collect()
            },
            vec![Event::new("a", "ok:1")],
        );
        assert!(
            out[0]
                .as_ref()
                .is_err_and(|f| f.message().contains("handle-batch"))
        );
    }
}
