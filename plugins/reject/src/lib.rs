//! `reject`: refuses every event, permanently (the host dead-letters it at once).

use weir_sdk::{Event, Failure};

fn reject(event: Event) -> weir_sdk::Result {
    Err(Failure::reject(format!(
        "rejected: {}",
        String::from_utf8_lossy(event.payload())
    )))
}

weir_sdk::handler!(reject);
