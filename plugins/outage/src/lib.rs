//! `outage`: relays `dep.in.<rest>` to `dep.out.<rest>` once its (imagined)
//! dependency is up. Until the Unix time in config `down_until_ms` the
//! dependency is down: every attempt fails with a retryable failure, as a
//! handler whose database or HTTP backend is unreachable does. The workload
//! of the circuit breaker's test (issue 10).

use std::time::{SystemTime, UNIX_EPOCH};

use weir_sdk::{Event, Failure, Message};

fn outage(event: Event) -> weir_sdk::Result {
    let down_until: u128 = weir_sdk::config("down_until_ms")
        .unwrap_or_default()
        .parse()
        .map_err(|e| Failure::reject(format!("config down_until_ms: {e}")))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    relay(event, now, down_until)
}

fn relay(event: Event, now_ms: u128, down_until_ms: u128) -> weir_sdk::Result {
    if now_ms < down_until_ms {
        return Err(Failure::retry(format!(
            "dependency down for another {} ms",
            down_until_ms - now_ms
        )));
    }
    let Some(rest) = event.subject().strip_prefix("dep.in.") else {
        return Err(Failure::reject(format!(
            "outage: unexpected subject {}",
            event.subject()
        )));
    };
    Ok(vec![Message::new(
        format!("dep.out.{rest}"),
        event.into_payload(),
    )])
}

weir_sdk::handler!(outage);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_while_the_dependency_is_down_then_relays() {
        let down = relay(Event::new("dep.in.7", "x"), 1_000, 1_500).expect_err("down");
        assert!(down.is_retry());
        assert_eq!(down.message(), "dependency down for another 500 ms");
        let out = relay(Event::new("dep.in.7", "x"), 1_500, 1_500).expect("up");
        assert_eq!(out, vec![Message::new("dep.out.7", "x")]);
    }
}
