//! `whoami`: answers each event on `auth.whoami.<rest>` with a JSON report on
//! `auth.seen.<rest>` (and to the reply subject): the verified principal and
//! the headers the handler saw. The test plugin of producer tokens: it proves
//! the principal arrives and the token does not.
//!
//! A payload `{"publish": "<subject>"}` sends the report there instead, to
//! test what a grant lets a plugin publish.

use weir_sdk::serde_json::{self, Value, json};
use weir_sdk::{Event, Failure, Message};

fn whoami(event: Event) -> weir_sdk::Result {
    let Some(rest) = event.subject().strip_prefix("auth.whoami.") else {
        return Err(Failure::reject(format!(
            "whoami: unexpected subject {}",
            event.subject()
        )));
    };
    let principal = match event.principal() {
        Some(p) => json!({
            "subject": p.subject(),
            "issuer": p.issuer(),
            "claims": p.claims_json::<Value>()?,
        }),
        None => Value::Null,
    };
    let report = json!({
        "principal": principal,
        "headers": event.headers(),
    });
    let target = serde_json::from_slice::<Value>(event.payload())
        .ok()
        .and_then(|v| v.get("publish").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| format!("auth.seen.{rest}"));
    let mut out = vec![Message::json(target, &report)?];
    if let Some(reply) = event.reply_to() {
        out.push(Message::json(reply, &report)?);
    }
    Ok(out)
}

weir_sdk::handler!(whoami);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::Principal;

    #[test]
    fn reports_the_principal_and_headers() {
        let event = Event::new("auth.whoami.a", "{}")
            .with_header("trace", "t1")
            .with_principal(Principal::new("svc", "producers", r#"{"scope":"x"}"#));
        let out = whoami(event).expect("ok");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].subject, "auth.seen.a");
        let v: Value = serde_json::from_slice(&out[0].payload).expect("json");
        assert_eq!(v["principal"]["subject"], "svc");
        assert_eq!(v["principal"]["claims"]["scope"], "x");
        assert_eq!(v["headers"][0][0], "trace");
    }

    #[test]
    fn publishes_where_asked() {
        let out = whoami(Event::new("auth.whoami.b", r#"{"publish":"other.x"}"#)).expect("ok");
        assert_eq!(out[0].subject, "other.x");
    }
}
