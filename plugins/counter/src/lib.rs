//! `counter`: shows what an instance remembers. Each event on `test.counter`
//! is answered (reply subject) with the number of events this instance has
//! handled, this one included: always 1 with `isolation = "event"`, counting
//! up with `"reuse"` until the host recycles the instance. An event with the
//! header `crash: yes` panics instead (the host must then discard the instance).

use std::sync::atomic::{AtomicU64, Ordering};

static SEEN: AtomicU64 = AtomicU64::new(0);

fn count(event: weir_sdk::Event) -> weir_sdk::Result {
    let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
    if event.header("crash") == Some("yes") {
        panic!("counter: crashing as asked after {seen} events");
    }
    Ok(event.reply(seen.to_string()).into_iter().collect())
}

weir_sdk::handler!(count);
