//! `ordered`: the test plugin of `order_by` (issue 18). Each event carries
//! headers `Order-Key` (its key) and `Order-Seq` (its place in the key), and a
//! payload that is `retry` to ask for a retry on its first attempt. It works
//! for about a millisecond and outputs, on `ordered.out`, the key, the
//! sequence, the attempt and its start and end times (Unix nanoseconds), from
//! which a test checks that no two events of one key ran at once and that
//! they finished in order.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weir_sdk::{Event, Failure, Message};

fn now_ns() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn handle(event: Event) -> weir_sdk::Result {
    let start = now_ns();
    let key = event.header("Order-Key").unwrap_or_default().to_owned();
    let seq = event.header("Order-Seq").unwrap_or_default().to_owned();
    if event.payload() == b"retry" && event.attempt() == 1 {
        return Err(Failure::retry("retry requested by payload"));
    }
    // Long enough that two runs of one key at once would overlap.
    let until = Instant::now() + Duration::from_millis(1);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    Ok(vec![
        Message::new("ordered.out", event.payload().to_vec())
            .header("Order-Key", key)
            .header("Order-Seq", seq)
            .header("Attempt", event.attempt().to_string())
            .header("Start-Ns", start)
            .header("End-Ns", now_ns()),
    ])
}

weir_sdk::handler!(handle);
