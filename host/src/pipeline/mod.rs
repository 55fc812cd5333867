//! The pipeline: an event's whole life between the transport and the sandbox.
//!
//! [`serve`] is the one loop per plugin: it admits each [`Inbound`] event,
//! limits how many run at once, runs attempts in the sandbox, decides what
//! follows ([`decide`]), publishes the outputs or the dead letter through a
//! [`Sink`], and settles the event through its [`Delivery`]. Shutdown is
//! passed in as a token.
//!
//! It knows nothing of NATS: the transport implements [`Delivery`] (core and
//! JetStream) and [`Sink`], and maps a [`Settle`] onto its own
//! acknowledgements, so every path here is testable in memory.
//!
//! [`order`] goes before [`serve`] for subscriptions with `order_by`: one
//! event per key at a time, in stream order.
//!
//! [`trace`] gives each event its spans and writes W3C trace context on what
//! it leads to (outputs, replies, dead letters).

use std::future::Future;

use crate::event::Message;

mod batch;
pub mod circuit;
mod decide;
mod held;
mod letters;
pub mod order;
mod republish;
mod serve;
#[cfg(test)]
mod testing;
pub mod trace;
mod tracked;
mod unstored;

pub use batch::{Batches, run_together};
pub use circuit::Circuit;
pub use decide::{
    Attempt, Outcome, admit, attempt, attempt_in_pipeline, attempt_of, decide, stamp_outputs,
};
pub use letters::{DeadLetter, MAX_RAW_HEADERS, error_reply, header_safe, headers, rfc3339};
pub use serve::{Delivery, Inbound, Settle, serve, serve_versions};
pub use trace::{EventTrace, Finish, PluginTracing};

/// Where the pipeline's results go: implemented by the transport.
pub trait Sink: Send + Sync + 'static {
    /// Publish a handler's outputs (in order). With `confirm`, return only once
    /// the server has them (stored, for subjects a stream captures). An error
    /// carrying [`Unavailable`] (as its context) says the server could not take
    /// them *yet*: the same outputs may be published again; any other error is
    /// a refusal.
    fn publish(
        &self,
        outputs: Vec<Message>,
        confirm: bool,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Store a dead letter durably; an error when it was not stored.
    fn dead_letter(&self, message: Message) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// The largest message the server takes, headers and payload: a dead
    /// letter above it is stored with its payload cut.
    fn max_payload(&self) -> usize;
    /// Record one plugin's handling of a tracked event (one that came
    /// through the HTTP gateway) in its status document: the document as
    /// stored and whether this update was taken; `None` when the event has
    /// no document (then it is not tracked).
    fn track(
        &self,
        id: &str,
        handler: crate::tracking::Handler,
    ) -> impl Future<Output = anyhow::Result<Option<(crate::tracking::StatusDoc, bool)>>> + Send
    {
        let _ = (id, handler);
        async { anyhow::bail!("this sink keeps no event status") }
    }
    /// Store a webhook job (see [`crate::webhook::job`]) for delivery; an
    /// error when it was not stored.
    fn enqueue_webhook(&self, job: Message) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = job;
        async { anyhow::bail!("this sink delivers no webhooks") }
    }
}

/// The kind of a [`Sink::publish`] error that may pass if the same outputs are
/// published again: the server cannot take them yet (no leader for a stream
/// during an election, no answer in time, the connection down). The transport
/// attaches it with `anyhow::Context`; [`is_unavailable`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server cannot take the outputs yet")
    }
}

/// Whether a publish error is [`Unavailable`] (worth publishing again).
pub fn is_unavailable(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Unavailable>().is_some()
}
