//! `relay`: every event on `in.<rest>` goes on to `out.<rest>` with the same
//! payload. The workload of scripts/stall-check.sh (issue 16). An optional
//! `[config] tag` goes on each output as a `Relay-Tag` header, so a test can
//! tell which host produced it (issue 10). An optional `[config] busy_ms`
//! makes each event take that long (the guest spins on the clock), so a test
//! can have events queued and running when it swaps the plugin (issue 13).

use weir_sdk::{Event, Failure, Message};

fn relay(event: Event) -> weir_sdk::Result {
    let Some(rest) = event.subject().strip_prefix("in.") else {
        return Err(Failure::reject(format!(
            "relay: unexpected subject {}",
            event.subject()
        )));
    };
    if let Some(ms) = weir_sdk::config("busy_ms").and_then(|v| v.parse::<u64>().ok()) {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    let subject = format!("out.{rest}");
    let output = Message::new(subject, event.into_payload());
    Ok(vec![match weir_sdk::config("tag") {
        Some(tag) => output.header("Relay-Tag", tag),
        None => output,
    }])
}

weir_sdk::handler!(relay);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_the_rest_of_the_subject() {
        let out = relay(Event::new("in.a.b", "hi")).expect("ok");
        assert_eq!(out, vec![Message::new("out.a.b", "hi")]);
    }

    #[test]
    fn tags_its_outputs_when_configured() {
        weir_sdk::testing::set_config("tag", "h1");
        let out = relay(Event::new("in.a", "hi")).expect("ok");
        assert_eq!(
            out,
            vec![Message::new("out.a", "hi").header("Relay-Tag", "h1")]
        );
    }
}
