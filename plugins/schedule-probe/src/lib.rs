//! `schedule-probe`: the test plugin of schedules (issue 19). Every event is
//! handled with no output (ticks are counted by the host's own counters),
//! except one on `sched.ask.<rest>`: it is answered by a follow-up on
//! `sched.followup.<rest>`, delayed by the duration in its payload (`2s`)
//! through the `Weir-Deliver-In` header.

use weir_sdk::{Event, Message};

fn probe(event: Event) -> weir_sdk::Result {
    let Some(rest) = event.subject().strip_prefix("sched.ask.") else {
        return Ok(vec![]);
    };
    let delay = event.text()?.trim().to_owned();
    let follow_up = Message::new(format!("sched.followup.{rest}"), "follow-up")
        .header("Weir-Deliver-In", delay);
    Ok(vec![follow_up])
}

weir_sdk::handler!(probe);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ask_is_followed_up_later() {
        let out = probe(Event::new("sched.ask.a", "2s")).expect("ok");
        assert_eq!(
            out,
            vec![Message::new("sched.followup.a", "follow-up").header("Weir-Deliver-In", "2s")]
        );
        assert!(
            probe(Event::new("sched.tick.a", ""))
                .expect("ok")
                .is_empty()
        );
    }
}
