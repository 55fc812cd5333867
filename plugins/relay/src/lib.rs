//! `relay`: every event on `in.<rest>` goes on to `out.<rest>` with the same
//! payload. The workload of scripts/stall-check.sh (issue 16).

use weir_sdk::{Event, Failure, Message};

fn relay(event: Event) -> weir_sdk::Result {
    let Some(rest) = event.subject().strip_prefix("in.") else {
        return Err(Failure::reject(format!(
            "relay: unexpected subject {}",
            event.subject()
        )));
    };
    let subject = format!("out.{rest}");
    Ok(vec![Message::new(subject, event.into_payload())])
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
}
