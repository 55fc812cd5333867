//! The status document of an event that came through the HTTP gateway: what
//! `GET /v1/events/{id}` answers and a webhook carries. One document per
//! event, in the `weir_status` KV bucket under the event's status id; each
//! plugin that handles the event keeps its own entry in `handlers`, and the
//! top-level fields sum them up. Pure data and rules: the transport stores it,
//! the pipeline says what happened, the gateway reads it.

use serde::{Deserialize, Serialize};

/// The header that marks an event as tracked, carrying its status id.
pub const STATUS_ID: &str = "Weir-Status-Id";
/// The header naming a callback URL for the event's final status.
pub const CALLBACK: &str = "Weir-Callback";

/// The KV bucket holding the status documents.
pub const BUCKET: &str = "weir_status";

/// Where an event (or one plugin's handling of it) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Stored in its stream; no handler has started it yet.
    Accepted,
    /// An attempt is running.
    Running,
    /// An attempt failed; another follows after the backoff.
    Retrying,
    /// Handled, its outputs published.
    Succeeded,
    /// Failed for good; the event is in the dead-letter queue.
    DeadLettered,
}

impl State {
    /// Whether nothing follows: the state a webhook reports.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::DeadLettered)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::DeadLettered => "dead-lettered",
        }
    }
}

/// One output an event led to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub subject: String,
    /// Its `Nats-Msg-Id`, the key to find it in the stream that holds it.
    pub msg_id: Option<String>,
}

/// Why the last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDoc {
    /// As the dead letter's `Weir-Error-Kind` names it.
    pub kind: String,
    pub message: String,
}

/// One plugin's handling of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handler {
    pub plugin: String,
    pub status: State,
    pub attempts: u32,
    #[serde(default)]
    pub outputs: Vec<Output>,
    #[serde(default)]
    pub error: Option<ErrorDoc>,
    pub updated_at: String,
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub id: String,
    pub subject: String,
    /// The sum of the handlers: `accepted` until one starts; while any is
    /// not final, the first such one's; then `dead-lettered` if any was,
    /// else `succeeded`. A plugin that has not seen the event yet is not
    /// counted, so with several plugins on one subject the sum can go from
    /// final back to running.
    pub status: State,
    /// The handler the top-level fields come from.
    pub plugin: Option<String>,
    pub attempts: u32,
    pub outputs: Vec<Output>,
    pub error: Option<ErrorDoc>,
    pub accepted_at: String,
    pub updated_at: String,
    pub handlers: Vec<Handler>,
    /// Stored, never shown ([`public`](Self::public) drops it): the callback
    /// the gateway checked against `callback_allow`. Only this one, or the
    /// plugin's `[webhook] url`, is ever called: a header a NATS producer
    /// sets is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Stored, never shown: the stream acknowledged the event.
    #[serde(default)]
    pub published: bool,
}

impl StatusDoc {
    /// The document the gateway writes as it accepts the event.
    pub fn accepted(id: &str, subject: &str, now: &str) -> Self {
        Self {
            id: id.to_owned(),
            subject: subject.to_owned(),
            status: State::Accepted,
            plugin: None,
            attempts: 0,
            outputs: Vec::new(),
            error: None,
            accepted_at: now.to_owned(),
            updated_at: now.to_owned(),
            handlers: Vec::new(),
            callback: None,
            published: false,
        }
    }

    /// The document as callers see it (GET and webhooks): without the
    /// stored-only fields.
    pub fn public(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("callback");
            object.remove("published");
        }
        value
    }

    /// The document with its top-level fields taken from `plugin`'s entry:
    /// the body of that plugin's webhook.
    pub fn for_handler(&self, plugin: &str) -> Self {
        let mut view = self.clone();
        if let Some(h) = self.handler(plugin).cloned() {
            view.status = h.status;
            view.plugin = Some(h.plugin);
            view.attempts = h.attempts;
            view.outputs = h.outputs;
            view.error = h.error;
            view.updated_at = h.updated_at;
        }
        view
    }

    /// Record what one plugin says and sum the handlers up again; whether
    /// it was taken. Nothing goes backwards: a late write from an earlier
    /// attempt (another host's) does not undo a later one, and a final entry
    /// stays as it is (a redelivery after a lost ack runs again but changes
    /// nothing, and queues no second webhook).
    pub fn apply(&mut self, update: Handler) -> bool {
        match self.handlers.iter_mut().find(|h| h.plugin == update.plugin) {
            Some(h) if update.attempts < h.attempts => return false,
            Some(h) if h.status.is_final() => return false,
            Some(h) => *h = update,
            None => self.handlers.push(update),
        }
        self.sum_up();
        true
    }

    fn sum_up(&mut self) {
        let lead = self
            .handlers
            .iter()
            .find(|h| !h.status.is_final())
            .or_else(|| {
                self.handlers
                    .iter()
                    .find(|h| h.status == State::DeadLettered)
            })
            .or_else(|| self.handlers.first())
            .cloned();
        let Some(lead) = lead else {
            return;
        };
        self.status = lead.status;
        self.plugin = Some(lead.plugin);
        self.attempts = lead.attempts;
        self.outputs = lead.outputs;
        self.error = lead.error;
        if let Some(latest) = self.handlers.iter().map(|h| &h.updated_at).max() {
            self.updated_at = latest.clone();
        }
    }

    /// The handler entry of `plugin`, if it has seen the event.
    pub fn handler(&self, plugin: &str) -> Option<&Handler> {
        self.handlers.iter().find(|h| h.plugin == plugin)
    }
}

/// Whether `id` has the form of a status id: 32 lowercase hex digits (128
/// random bits). Anything else is never looked up.
pub fn is_status_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new status id: 128 bits from a CSPRNG seeded by the OS (`rand`'s thread
/// generator), in hex.
pub fn new_status_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(plugin: &str, status: State, attempts: u32, at: &str) -> Handler {
        Handler {
            plugin: plugin.into(),
            status,
            attempts,
            outputs: Vec::new(),
            error: None,
            updated_at: at.into(),
        }
    }

    #[test]
    fn one_handler_sets_the_top_level() {
        let mut doc = StatusDoc::accepted("a", "orders.x", "t0");
        assert_eq!(doc.status, State::Accepted);
        doc.apply(handler("p", State::Running, 1, "t1"));
        assert_eq!((doc.status, doc.attempts), (State::Running, 1));
        doc.apply(handler("p", State::Succeeded, 1, "t2"));
        assert_eq!(doc.status, State::Succeeded);
        assert_eq!(doc.plugin.as_deref(), Some("p"));
        assert_eq!(doc.updated_at, "t2");
        let json = serde_json::to_value(&doc).expect("json");
        assert_eq!(json["status"], "succeeded");
    }

    #[test]
    fn the_sum_waits_for_every_handler_and_attempts_never_go_back() {
        let mut doc = StatusDoc::accepted("a", "s", "t0");
        doc.apply(handler("p", State::Succeeded, 1, "t1"));
        doc.apply(handler("q", State::Retrying, 2, "t2"));
        assert_eq!(doc.status, State::Retrying);
        assert_eq!(doc.plugin.as_deref(), Some("q"));
        assert!(!doc.apply(handler("q", State::Running, 1, "t3")));
        assert_eq!(doc.handler("q").map(|h| h.attempts), Some(2));
        assert!(doc.apply(handler("q", State::DeadLettered, 3, "t4")));
        assert_eq!(doc.status, State::DeadLettered);
        assert!(
            !doc.apply(handler("q", State::Running, 4, "t5")),
            "final stays final"
        );
        assert_eq!(doc.for_handler("p").status, State::Succeeded);
        doc.callback = Some("http://secret.example/x".into());
        let public = doc.public();
        assert!(public.get("callback").is_none() && public.get("published").is_none());
        assert_eq!(
            serde_json::to_value(doc.status).expect("json"),
            "dead-lettered"
        );
    }

    #[test]
    fn status_ids_are_128_random_bits() {
        let (a, b) = (new_status_id(), new_status_id());
        assert!(is_status_id(&a) && is_status_id(&b) && a != b);
        assert!(!is_status_id("12"));
        assert!(!is_status_id(&a.to_uppercase()));
    }
}
