//! What a plugin may publish: output caps, reserved subjects and (with a grant)
//! the subjects it was granted. Checked for every `host.publish` and every
//! returned message before anything leaves the host.

use crate::event::{
    Failure, FailureKind, Message, is_header_name, is_header_value, is_publish_subject,
    subject_matches,
};

/// Subject prefixes no plugin may publish to, grant or not: the server's own
/// APIs, other clients' inboxes and weir's dead-letter queue.
/// Whether the host must not answer to `reply_to`: a producer chooses the
/// reply subject, and one of the server's APIs (`$JS.API...`, `$SYS...`) or
/// weir's own control subjects is no place for an answer sent with the
/// host's credentials. Inboxes (`_INBOX.`) are where replies belong.
pub fn is_unsafe_reply(reply_to: &str) -> bool {
    reply_to.starts_with('$') || reply_to.starts_with("weir.")
}

const RESERVED_PREFIXES: &[&str] = &[
    "$SYS.",
    "$JS.",
    "$KV.",
    "$O.",
    "_INBOX.",
    // weir's own control subjects: a plugin must not open another's circuit.
    "weir.circuit.",
    "weir.status",
    // Schedule definitions and fired messages: a plugin delays an output
    // with Weir-Deliver-In/At, its subject checked as any other's.
    "weir.schedule.",
    "weir.due.",
];

#[derive(Debug, Clone)]
pub struct OutputPolicy {
    /// Messages one event may publish.
    pub max_outputs: u32,
    /// Bytes one event may publish in all.
    pub max_output_bytes: u64,
    /// The dead-letter prefix (`weir.dlq`): never publishable by a plugin.
    pub dead_letter_prefix: String,
    /// Subjects granted to the plugin (NATS wildcards); `None` when the plugin
    /// runs without a grant.
    pub granted: Option<Vec<String>>,
}

impl OutputPolicy {
    /// Check one more message, given what the event already published.
    /// `reply_to` is the event's own reply subject: always allowed.
    pub fn check(
        &self,
        msg: &Message,
        reply_to: Option<&str>,
        count_before: usize,
        bytes_before: u64,
    ) -> Result<(), Failure> {
        let bad = |m: String| Err(Failure::new(FailureKind::BadOutput, m));
        if count_before as u64 >= u64::from(self.max_outputs) {
            return bad(format!(
                "more than {} output messages (limits.max_outputs)",
                self.max_outputs
            ));
        }
        let size = msg.size() as u64;
        if bytes_before + size > self.max_output_bytes {
            return bad(format!(
                "outputs exceed {} bytes (limits.max_output_bytes): message to {:?} is {size} bytes",
                self.max_output_bytes,
                truncate(&msg.subject, 128)
            ));
        }
        if !is_publish_subject(&msg.subject) {
            return bad(format!(
                "{:?} is not a subject to publish to",
                truncate(&msg.subject, 128)
            ));
        }
        for (name, value) in &msg.headers {
            if !is_header_name(name) {
                return bad(format!(
                    "header name {:?} is not valid in NATS",
                    truncate(name, 64)
                ));
            }
            if !is_header_value(value) {
                return bad(format!("header {name:?} has a line break in its value"));
            }
        }
        // A delayed output (issue 19): a bad delivery header fails the event.
        let delayed = crate::schedule::delay::is_delayed(&msg.headers);
        if delayed && let Err(e) = crate::schedule::delay::due(&msg.headers, chrono::Utc::now()) {
            return bad(e);
        }
        if reply_to == Some(msg.subject.as_str()) {
            if delayed {
                return bad("a reply cannot be delayed".into());
            }
            return Ok(());
        }
        let forbidden = |why: &str| {
            Err(Failure::new(
                FailureKind::ForbiddenPublish,
                format!(
                    "may not publish to {:?}: {why}",
                    truncate(&msg.subject, 128)
                ),
            ))
        };
        if let Some(prefix) = RESERVED_PREFIXES
            .iter()
            .find(|p| msg.subject.starts_with(**p))
        {
            return forbidden(&format!("{prefix}* is reserved"));
        }
        if msg.subject == self.dead_letter_prefix
            || msg
                .subject
                .strip_prefix(self.dead_letter_prefix.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
        {
            return forbidden("the dead-letter queue is the host's");
        }
        if let Some(granted) = &self.granted
            && !granted.iter().any(|p| subject_matches(p, &msg.subject))
        {
            return forbidden("outside the plugin's grant");
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutputPolicy {
        OutputPolicy {
            max_outputs: 2,
            max_output_bytes: 100,
            dead_letter_prefix: "weir.dlq".into(),
            granted: None,
        }
    }

    fn msg(subject: &str, payload: &str) -> Message {
        Message {
            subject: subject.into(),
            payload: payload.as_bytes().to_vec().into(),
            headers: vec![],
        }
    }

    fn kind(r: Result<(), Failure>) -> Option<FailureKind> {
        r.err().map(|f| f.kind)
    }

    #[test]
    fn caps_and_reserved_subjects() {
        let p = policy();
        assert_eq!(kind(p.check(&msg("a.b", "x"), None, 0, 0)), None);
        assert_eq!(
            kind(p.check(&msg("a.b", "x"), None, 2, 0)),
            Some(FailureKind::BadOutput)
        );
        assert_eq!(
            kind(p.check(&msg("a.b", &"x".repeat(200)), None, 0, 0)),
            Some(FailureKind::BadOutput)
        );
        assert_eq!(
            kind(p.check(&msg("a.*", "x"), None, 0, 0)),
            Some(FailureKind::BadOutput)
        );
        for s in [
            "$JS.API.STREAM.DELETE.X",
            "_INBOX.abc",
            "weir.dlq.other",
            "$SYS.x",
        ] {
            assert_eq!(
                kind(p.check(&msg(s, "x"), None, 0, 0)),
                Some(FailureKind::ForbiddenPublish),
                "{s}"
            );
        }
        assert_eq!(kind(p.check(&msg("weir.dlqx", "x"), None, 0, 0)), None);
        assert_eq!(
            kind(p.check(&msg("_INBOX.abc", "x"), Some("_INBOX.abc"), 0, 0)),
            None
        );
    }

    #[test]
    fn delayed_outputs_are_checked_like_any_other() {
        let p = OutputPolicy {
            granted: Some(vec!["orders.>".into()]),
            ..policy()
        };
        let later = |subject: &str, value: &str| Message {
            headers: vec![("Weir-Deliver-In".into(), value.into())],
            ..msg(subject, "x")
        };
        assert_eq!(kind(p.check(&later("orders.x", "1h"), None, 0, 0)), None);
        assert_eq!(
            kind(p.check(&later("billing.x", "1h"), None, 0, 0)),
            Some(FailureKind::ForbiddenPublish)
        );
        assert_eq!(
            kind(p.check(&later("orders.x", "soon"), None, 0, 0)),
            Some(FailureKind::BadOutput)
        );
        assert_eq!(
            kind(p.check(&later("_INBOX.1", "1h"), Some("_INBOX.1"), 0, 0)),
            Some(FailureKind::BadOutput)
        );
        assert_eq!(
            kind(p.check(&msg("weir.schedule.once.x", "x"), None, 0, 0)),
            Some(FailureKind::ForbiddenPublish)
        );
    }

    #[test]
    fn grants_restrict_subjects() {
        let p = OutputPolicy {
            granted: Some(vec!["orders.>".into()]),
            ..policy()
        };
        assert_eq!(kind(p.check(&msg("orders.x", "x"), None, 0, 0)), None);
        assert_eq!(
            kind(p.check(&msg("billing.x", "x"), None, 0, 0)),
            Some(FailureKind::ForbiddenPublish)
        );
    }
}
