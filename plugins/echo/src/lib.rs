//! `echo`: every event on `demo.echo.<rest>` comes back on `demo.echoed.<rest>`
//! with the same payload and headers; a request also gets the same as its reply.

use weir_sdk::{Event, Failure, Message};

fn echo(event: Event) -> weir_sdk::Result {
    let Some(rest) = event.subject().strip_prefix("demo.echo.") else {
        return Err(Failure::reject(format!(
            "echo: unexpected subject {}",
            event.subject()
        )));
    };
    let subject = format!("demo.echoed.{rest}");
    let reply_to = event.reply_to().map(str::to_owned);
    let echoed = event.into_message(subject);
    Ok(match reply_to {
        Some(reply_to) => {
            let reply = Message {
                subject: reply_to,
                ..echoed.clone()
            };
            vec![echoed, reply]
        }
        None => vec![echoed],
    })
}

weir_sdk::handler!(echo);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_payload_and_headers_in_order() {
        let event = Event::new("demo.echo.a.b", "hi")
            .with_header("b", "2")
            .with_header("a", "1")
            .with_header("b", "3");
        let out = echo(event).expect("ok");
        let headers = vec![("b", "2"), ("a", "1"), ("b", "3")];
        assert_eq!(
            out,
            vec![Message::new("demo.echoed.a.b", "hi").headers(headers)]
        );
    }

    #[test]
    fn replies_when_asked() {
        let event = Event::new("demo.echo.x", "hi")
            .with_header("h", "v")
            .with_reply_to("_INBOX.9");
        let out = echo(event).expect("ok");
        assert_eq!(
            out,
            vec![
                Message::new("demo.echoed.x", "hi").header("h", "v"),
                Message::new("_INBOX.9", "hi").header("h", "v"),
            ]
        );
    }

    #[test]
    fn rejects_other_subjects() {
        let failure = echo(Event::new("demo.other", "hi")).expect_err("rejected");
        assert!(failure.is_reject());
    }
}
