//! `order_by` on a `[[subscribe]]`: what names an event's key, for
//! subscriptions whose events of one key are handled one at a time and in
//! stream order. Parsing lives here; the lanes that keep the order are
//! `pipeline::order`.

use serde::Deserialize;

use crate::event::{Event, is_header_name};

/// Where an event's ordering key is: `"subject:3"` (the 3rd token of its
/// subject, counted from 1) or `"header:Order-Id"` (the first value of that
/// header, matched ASCII case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum OrderBy {
    /// The 1-based token of the subject.
    SubjectToken(usize),
    Header(String),
}

impl TryFrom<String> for OrderBy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not an order key: use \"subject:N\" (a subject token, from 1) or \"header:NAME\""
            )
        };
        match text.split_once(':') {
            Some(("subject", n)) => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::SubjectToken(n)),
                _ => Err(bad()),
            },
            Some(("header", name)) if is_header_name(name) => Ok(Self::Header(name.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl OrderBy {
    /// The event's key; `None` when it has none (a shorter subject, no such
    /// header, or an empty value).
    pub fn key_of<'e>(&self, event: &'e Event) -> Option<&'e str> {
        let key = match self {
            Self::SubjectToken(n) => event.subject.split('.').nth(n - 1),
            Self::Header(name) => event
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
        };
        key.filter(|k| !k.is_empty())
    }
}

impl std::fmt::Display for OrderBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SubjectToken(n) => write!(f, "subject:{n}"),
            Self::Header(name) => write!(f, "header:{name}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(subject: &str, headers: &[(&str, &str)]) -> Event {
        Event {
            id: "s:1".into(),
            subject: subject.into(),
            payload: bytes::Bytes::new(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            reply_to: None,
            attempt: 1,
            principal: None,
        }
    }

    #[test]
    fn keys_come_from_a_subject_token_or_a_header() {
        let by_token = OrderBy::try_from("subject:3".to_owned()).unwrap();
        assert_eq!(
            by_token.key_of(&event("orders.eu.o-7.created", &[])),
            Some("o-7")
        );
        assert_eq!(by_token.key_of(&event("orders.eu", &[])), None);
        let by_header = OrderBy::try_from("header:Order-Id".to_owned()).unwrap();
        let e = event("x", &[("order-id", "o-1"), ("Order-Id", "o-2")]);
        assert_eq!(by_header.key_of(&e), Some("o-1"));
        assert_eq!(by_header.key_of(&event("x", &[("Order-Id", "")])), None);
        assert_eq!(by_header.to_string(), "header:Order-Id");
    }

    #[test]
    fn bad_specs_are_refused_with_the_forms() {
        for bad in [
            "subject:0",
            "subject:x",
            "header:",
            "header:a b",
            "token:1",
            "Order-Id",
        ] {
            let err = OrderBy::try_from(bad.to_owned()).unwrap_err();
            assert!(err.contains("subject:N"), "{bad}: {err}");
        }
    }
}
