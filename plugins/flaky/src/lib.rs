//! `flaky`: fails transiently for the first N attempts (header `fail-times: N`,
//! default 0), then succeeds with one message on `test.flaky-done`.

use weir_sdk::{Event, Failure};

fn flaky(event: Event) -> weir_sdk::Result {
    let planned: u32 = match event.header("fail-times") {
        None => 0,
        Some(n) => n
            .trim()
            .parse()
            .map_err(|e| Failure::reject(format!("header fail-times {n:?}: {e}")))?,
    };
    let attempt = event.attempt();
    if attempt <= planned {
        return Err(Failure::retry(format!(
            "attempt {attempt} of {planned} planned failures"
        )));
    }
    Ok(vec![
        weir_sdk::Message::new("test.flaky-done", event.into_payload())
            .header("attempt", attempt.to_string()),
    ])
}

weir_sdk::handler!(flaky);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::Message;

    #[test]
    fn fails_the_planned_attempts_then_succeeds() {
        let event = |attempt| {
            Event::new("test.flaky.1", "p")
                .with_header("Fail-Times", "2")
                .with_attempt(attempt)
        };
        assert!(flaky(event(1)).is_err_and(|f| f.is_retry()));
        let second = flaky(event(2)).expect_err("fails");
        assert_eq!(second.message(), "attempt 2 of 2 planned failures");
        assert_eq!(
            flaky(event(3)).expect("ok"),
            vec![Message::new("test.flaky-done", "p").header("attempt", "3")]
        );
    }

    #[test]
    fn no_header_means_no_failure() {
        let out = flaky(Event::new("test.flaky.x", "p")).expect("ok");
        assert_eq!(out[0].headers, vec![("attempt".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn bad_header_is_a_reject() {
        let event = Event::new("test.flaky.x", "p").with_header("fail-times", "many");
        assert!(flaky(event).is_err_and(|f| f.is_reject()));
    }
}
