//! Write weir event handlers in Rust: a plain function over an event.
//!
//! A weir plugin is a WebAssembly component that handles one event at a time and
//! returns the messages to publish, or a [`Failure`]. This crate hides the
//! component-model bindings behind a small surface:
//!
//! - [`Event`]: the event to handle (subject, payload, headers, reply-to, attempt,
//!   verified producer).
//! - [`Message`]: a message to publish, built with [`Message::new`] or [`Message::json`].
//! - [`Failure`]: [`Failure::retry`] for transient errors (the host retries by the
//!   plugin's policy), [`Failure::reject`] for permanent ones (dead-lettered at once).
//! - Host calls: [`publish`], [`config`], [`log`] and the [`trace!`], [`debug!`],
//!   [`info!`], [`warn!`], [`error!`] macros.
//! - [`handler!`]: exports your function as the component's `handle`.
//! - [`batch_handler!`]: exports a function over many events as
//!   `handle-batch` (see "Batches" below).
//!
//! Effects are transactional: messages returned by the handler *and* messages
//! given to [`publish`] leave the host only if the handler returns `Ok`.
//!
//! # Example
//!
//! A plugin crate is a `cdylib` that depends on `weir-sdk` only:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! # Not on crates.io: the sdk/ folder of a weir checkout, relative to this
//! # Cargo.toml or absolute (`weir new --lang rust` writes the absolute path).
//! weir-sdk = { path = "../weir/sdk" }
//! ```
//!
//! ```
//! use weir_sdk::serde::{Deserialize, Serialize};
//! use weir_sdk::{Event, Failure, Message};
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "weir_sdk::serde")]
//! struct Greeting {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! #[serde(crate = "weir_sdk::serde")]
//! struct Greeted {
//!     text: String,
//! }
//!
//! /// `greet.<lang>` with `{"name": "..."}` → `greeted.<lang>` with `{"text": "..."}`.
//! fn greet(event: Event) -> weir_sdk::Result {
//!     let Some(lang) = event.subject().strip_prefix("greet.") else {
//!         return Err(Failure::reject(format!("unexpected subject {}", event.subject())));
//!     };
//!     let greeting: Greeting = event.json()?;
//!     if greeting.name.is_empty() {
//!         return Err(Failure::reject("field `name` must not be empty"));
//!     }
//!     let salutation = weir_sdk::config("salutation").unwrap_or_else(|| "Hello".to_owned());
//!     weir_sdk::info!("greeting {} (attempt {})", greeting.name, event.attempt());
//!
//!     let greeted = Greeted { text: format!("{salutation}, {}!", greeting.name) };
//!     let mut out = vec![
//!         Message::json(format!("greeted.{lang}"), &greeted)?
//!             .header("content-type", "application/json"),
//!     ];
//!     // Answer a NATS request, if the producer asked for a reply.
//!     if let Some(reply) = event.reply(greeted.text.as_bytes()) {
//!         out.push(reply);
//!     }
//!     Ok(out)
//! }
//!
//! weir_sdk::handler!(greet);
//! # fn main() {
//! #     // Off wasm, host calls are served by `weir_sdk::testing`: handlers run natively.
//! #     weir_sdk::testing::set_config("salutation", "Hi");
//! #     let event = weir_sdk::Event::new("greet.en", r#"{"name": "Ada"}"#).with_reply_to("_INBOX.1");
//! #     let out = greet(event).unwrap();
//! #     assert_eq!(out[0].subject, "greeted.en");
//! #     assert_eq!(out[0].payload, br#"{"text":"Hi, Ada!"}"#);
//! #     assert_eq!(out[1].subject, "_INBOX.1");
//! #     assert_eq!(weir_sdk::testing::take_logs()[0].1, "greeting Ada (attempt 1)");
//! # }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the resulting
//! `.wasm` is a component that the weir host loads.
//!
//! # Batches
//!
//! A subscription with `batch = { max_events = 100 }` in plugin.toml hands the
//! plugin up to 100 events in one call, in one instance. Write a function from
//! the events to one [`Result`] per event, in the same order, and export it
//! with [`batch_handler!`]; each event is then settled on its own (its `Ok`
//! messages published and the event acknowledged, its `retry` retried alone,
//! its `reject` dead-lettered alone):
//!
//! ```
//! use weir_sdk::{Event, Failure, Message};
//!
//! fn handle_all(events: Vec<Event>) -> Vec<weir_sdk::Result> {
//!     events
//!         .into_iter()
//!         .map(|event| match event.text()? {
//!             "" => Err(Failure::reject("empty payload")),
//!             _ => Ok(vec![event.into_message("seen")]),
//!         })
//!         .collect()
//! }
//!
//! weir_sdk::batch_handler!(handle_all);
//! # fn main() {
//! #     let out = weir_sdk::testing::run_batch(handle_all, vec![Event::new("a", "x"), Event::new("a", "")]);
//! #     assert_eq!(out[0], Ok(vec![Message::new("seen", "x")]));
//! #     assert!(out[1].as_ref().is_err_and(|f| f.is_reject()));
//! # }
//! ```
//!
//! Inside a batch [`publish`] is refused (it returns an error): a message
//! belongs to the event whose result carries it. The same plugin also handles
//! events that come alone (subscriptions without `batch`): they arrive as a
//! batch of one.
//!
//! # Testing natively
//!
//! Off `wasm32`, the host calls are served in-process by the [`testing`] module
//! (configuration you set, logs and published messages you can take back), so a
//! handler is a plain function you can unit-test with `cargo test`.

#![warn(missing_docs)]

use core::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Re-export of `serde`, so plugins need no direct dependency on it: derive with
/// `#[derive(weir_sdk::serde::Deserialize)]` and `#[serde(crate = "weir_sdk::serde")]`.
pub use serde;
/// Re-export of `serde_json`, the JSON codec behind [`Event::json`] and [`Message::json`].
pub use serde_json;

/// The raw component bindings generated by wit-bindgen from `wit/weir.wit`
/// (world `weir:plugin/handler`). Not part of the public API: use [`handler!`].
#[doc(hidden)]
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "handler",
        // The `export!` macro is used from plugin crates, which depend on weir-sdk
        // only: make it `#[macro_export]` and resolve the bindings through this crate.
        pub_export_macro: true,
        default_bindings_module: "::weir_sdk::bindings",
    });
}

/// The bindings of world `weir:plugin/handler-and-batch`, over the types of
/// [`bindings`]. Not part of the public API: use [`batch_handler!`]. Which
/// world a plugin is built for is decided by the export macro it invokes.
#[doc(hidden)]
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod batch_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "handler-and-batch",
        pub_export_macro: true,
        export_macro_name: "export_batch",
        default_bindings_module: "::weir_sdk::batch_bindings",
        with: {
            "weir:plugin/types@0.1.0": crate::bindings::weir::plugin::types,
            "weir:plugin/host@0.1.0": crate::bindings::weir::plugin::host,
        },
    });
}

use bindings::weir::plugin::types as raw;

/// What a handler returns: by default, the messages to publish, or a [`Failure`].
pub type Result<T = Vec<Message>> = core::result::Result<T, Failure>;

/// One event delivered to the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    id: String,
    subject: String,
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    reply_to: Option<String>,
    attempt: u32,
    principal: Option<Principal>,
}

impl Event {
    /// A first-delivery event on `subject` with `payload`, no headers, no reply-to,
    /// no principal and the id `"test"`.
    ///
    /// The host builds the events a plugin receives; this constructor (and the
    /// `with_*` builders) is for tests.
    pub fn new(subject: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Event {
            id: "test".to_owned(),
            subject: subject.into(),
            payload: payload.into(),
            headers: Vec::new(),
            reply_to: None,
            attempt: 1,
            principal: None,
        }
    }

    /// Sets the event id (builder, for tests).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Appends a header (builder, for tests).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the reply subject (builder, for tests).
    #[must_use]
    pub fn with_reply_to(mut self, reply_to: impl Into<String>) -> Self {
        self.reply_to = Some(reply_to.into());
        self
    }

    /// Sets the delivery attempt, 1 for the first delivery (builder, for tests).
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Sets the verified producer (builder, for tests).
    #[must_use]
    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = Some(principal);
        self
    }

    /// Unique per event and stable across its redeliveries.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The subject the event was published on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The raw payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload as UTF-8 text; a payload that is not UTF-8 is a [`Failure::reject`].
    pub fn text(&self) -> Result<&str> {
        core::str::from_utf8(&self.payload)
            .map_err(|e| Failure::reject(format!("payload is not valid UTF-8: {e}")))
    }

    /// The payload decoded from JSON; invalid JSON, or JSON that does not fit `T`,
    /// is a [`Failure::reject`] naming serde's error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Failure::reject(format!("invalid JSON payload: {e}")))
    }

    /// All headers, in order; a name may repeat.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name`, compared case-insensitively (ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order, compared case-insensitively (ASCII).
    pub fn header_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The subject to answer on, when the producer sent a request.
    pub fn reply_to(&self) -> Option<&str> {
        self.reply_to.as_deref()
    }

    /// 1 on the first delivery, 2 on the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The verified producer, when the plugin requires producer tokens (`[auth]`).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// A message carrying `payload` addressed to the event's reply-to subject, or
    /// `None` when the producer did not ask for a reply. Always `None` for an
    /// event from a JetStream subscription: the stream answered the request
    /// (see "Requests" in weir's README).
    pub fn reply(&self, payload: impl Into<Vec<u8>>) -> Option<Message> {
        self.reply_to
            .as_ref()
            .map(|to| Message::new(to.clone(), payload))
    }

    /// Takes the payload out of the event, without copying it.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Turns the event into a message on `subject` with the event's payload and
    /// headers, without copying them: the cheap way to forward an event.
    pub fn into_message(self, subject: impl Into<String>) -> Message {
        Message {
            subject: subject.into(),
            payload: self.payload,
            headers: self.headers,
        }
    }

    fn from_raw(e: raw::Event) -> Self {
        Event {
            id: e.id,
            subject: e.subject,
            payload: e.payload,
            headers: e.headers,
            reply_to: e.reply_to,
            attempt: e.attempt,
            principal: e.principal.map(|p| Principal {
                subject: p.subject,
                issuer: p.issuer,
                claims: p.claims,
            }),
        }
    }
}

/// The verified producer of an event: the claims of its `Authorization: Bearer` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    subject: String,
    issuer: String,
    claims: String,
}

impl Principal {
    /// A principal (for tests): `claims` is the token's claims as a JSON object.
    pub fn new(
        subject: impl Into<String>,
        issuer: impl Into<String>,
        claims: impl Into<String>,
    ) -> Self {
        Principal {
            subject: subject.into(),
            issuer: issuer.into(),
            claims: claims.into(),
        }
    }

    /// The token's `sub` claim.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The token's `iss` claim.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Every claim of the token, as a JSON object (text).
    pub fn claims(&self) -> &str {
        &self.claims
    }

    /// The claims decoded into `T`; a mismatch is a [`Failure::reject`].
    pub fn claims_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.claims)
            .map_err(|e| Failure::reject(format!("invalid principal claims: {e}")))
    }
}

/// A message to publish: return it from the handler, or hand it to [`publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject to publish on.
    pub subject: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// NATS headers, in order; a name may repeat.
    pub headers: Vec<(String, String)>,
}

impl Message {
    /// A message on `subject` with `payload` and no headers.
    pub fn new(subject: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Message {
            subject: subject.into(),
            payload: payload.into(),
            headers: Vec::new(),
        }
    }

    /// A message on `subject` whose payload is `value` encoded as JSON; an encoding
    /// error is a [`Failure::reject`]. Adds no header: add `content-type` yourself if
    /// consumers need it.
    pub fn json<T: Serialize + ?Sized>(subject: impl Into<String>, value: &T) -> Result<Self> {
        Ok(Message::new(subject, serde_json::to_vec(value)?))
    }

    /// Appends a header (builder); a name may repeat.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Appends headers (builder), in order.
    #[must_use]
    pub fn headers<I, K, V>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.headers
            .extend(headers.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    fn into_raw(self) -> raw::Message {
        raw::Message {
            subject: self.subject,
            payload: self.payload,
            headers: self.headers,
        }
    }
}

/// Which kind of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Transient: the host retries the event by the plugin's retry policy.
    Retry,
    /// Permanent: the host dead-letters the event at once.
    Reject,
}

/// Why a handler did not succeed: [`Failure::retry`] (transient) or
/// [`Failure::reject`] (permanent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    kind: FailureKind,
    message: String,
}

impl Failure {
    /// A transient failure: the host retries the event by the plugin's retry
    /// policy, then dead-letters it.
    pub fn retry(message: impl fmt::Display) -> Self {
        Failure {
            kind: FailureKind::Retry,
            message: message.to_string(),
        }
    }

    /// A permanent failure: the host dead-letters the event at once.
    pub fn reject(message: impl fmt::Display) -> Self {
        Failure {
            kind: FailureKind::Reject,
            message: message.to_string(),
        }
    }

    /// Retry or reject.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// `true` for a [`Failure::retry`].
    pub fn is_retry(&self) -> bool {
        self.kind == FailureKind::Retry
    }

    /// `true` for a [`Failure::reject`].
    pub fn is_reject(&self) -> bool {
        self.kind == FailureKind::Reject
    }

    /// The message the host records (in `Weir-Error` when dead-lettered).
    pub fn message(&self) -> &str {
        &self.message
    }

    fn into_raw(self) -> raw::Failure {
        match self.kind {
            FailureKind::Retry => raw::Failure::Retry(self.message),
            FailureKind::Reject => raw::Failure::Reject(self.message),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FailureKind::Retry => "retry",
            FailureKind::Reject => "reject",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for Failure {}

/// Bad JSON is permanent: a [`Failure::reject`] naming serde's error.
impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::reject(format!("invalid JSON: {e}"))
    }
}

/// The level of a [`log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very verbose diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the handler coped with.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// Queues `msg` for publication. It leaves the host only if the handler returns
/// `Ok`; the error says why the host refused it (too many or too large outputs,
/// bad subject).
pub fn publish(msg: Message) -> core::result::Result<(), String> {
    // Refused in the batch form even when it runs as `handle` (a batch of
    // one), as the host refuses it inside `handle-batch`.
    if __private::IN_BATCH.load(core::sync::atomic::Ordering::Relaxed) {
        return Err(testing::PUBLISH_IN_BATCH.to_owned());
    }
    host::publish(msg)
}

/// A value from the `[config]` table of the plugin's `plugin.toml`.
pub fn config(key: &str) -> Option<String> {
    host::config(key)
}

/// Writes a line to the host's log, tagged with the plugin and the event.
/// The macros [`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`] format and call this.
pub fn log(level: Level, text: &str) {
    host::log(level, text)
}

/// Host calls on wasm: through the component imports.
#[cfg(target_arch = "wasm32")]
mod host {
    use super::{Level, Message};
    use crate::bindings::weir::plugin::host as raw;

    pub(crate) fn publish(msg: Message) -> Result<(), String> {
        raw::publish(&msg.into_raw())
    }

    pub(crate) fn config(key: &str) -> Option<String> {
        raw::config(key)
    }

    pub(crate) fn log(level: Level, text: &str) {
        let level = match level {
            Level::Trace => raw::Level::Trace,
            Level::Debug => raw::Level::Debug,
            Level::Info => raw::Level::Info,
            Level::Warn => raw::Level::Warn,
            Level::Error => raw::Level::Error,
        };
        raw::log(level, text)
    }
}

/// Host calls off wasm: served in-process, see [`testing`].
#[cfg(not(target_arch = "wasm32"))]
mod host {
    use super::{Level, Message, testing::STATE};

    pub(crate) fn publish(msg: Message) -> Result<(), String> {
        STATE.with_borrow_mut(|s| {
            if s.in_batch {
                return Err(super::testing::PUBLISH_IN_BATCH.to_owned());
            }
            s.published.push(msg);
            Ok(())
        })
    }

    pub(crate) fn config(key: &str) -> Option<String> {
        STATE.with_borrow(|s| s.config.get(key).cloned())
    }

    pub(crate) fn log(level: Level, text: &str) {
        eprintln!("[{level}] {text}");
        STATE.with_borrow_mut(|s| s.logs.push((level, text.to_owned())));
    }
}

/// Native stand-ins for the host calls, to unit-test handlers with `cargo test`.
///
/// Off `wasm32`, [`config`] reads values set with [`set_config`](testing::set_config), [`publish`]
/// collects messages for [`take_published`](testing::take_published), and [`log`] prints to stderr and
/// collects lines for [`take_logs`](testing::take_logs). The state is per thread, so parallel tests
/// do not see each other's. On `wasm32` the host serves those calls: this module
/// still compiles (so `cargo clippy --all-targets --target wasm32-wasip2` works on
/// a plugin's tests) but has no effect on them.
///
/// ```
/// use weir_sdk::{Event, Message, testing};
///
/// fn handle(event: Event) -> weir_sdk::Result {
///     let target = weir_sdk::config("target").unwrap_or_default();
///     weir_sdk::publish(Message::new("audit", event.payload())).map_err(weir_sdk::Failure::retry)?;
///     weir_sdk::warn!("forwarding to {target}");
///     Ok(vec![event.into_message(target)])
/// }
///
/// testing::reset();
/// testing::set_config("target", "out");
/// let out = handle(Event::new("in", "x")).unwrap();
/// assert_eq!(out, vec![Message::new("out", "x")]);
/// assert_eq!(testing::take_published(), vec![Message::new("audit", "x")]);
/// assert_eq!(testing::take_logs(), vec![(weir_sdk::Level::Warn, "forwarding to out".to_owned())]);
/// ```
pub mod testing {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::{Level, Message};

    #[derive(Default)]
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) struct State {
        pub(crate) config: HashMap<String, String>,
        pub(crate) published: Vec<Message>,
        pub(crate) logs: Vec<(Level, String)>,
        pub(crate) in_batch: bool,
    }

    /// What [`publish`](crate::publish) answers inside a batch, as the host does.
    pub const PUBLISH_IN_BATCH: &str = "host.publish is not available inside handle-batch: \
        return each event's messages in its result, so they leave with that event's ok";

    /// Runs a batch handler over `events` as the host would: [`publish`](crate::publish)
    /// is refused meanwhile, and a result list of another length than the
    /// events' panics, naming both (the host would split the batch).
    pub fn run_batch(
        handler: impl FnOnce(Vec<crate::Event>) -> Vec<crate::Result>,
        events: Vec<crate::Event>,
    ) -> Vec<crate::Result> {
        let count = events.len();
        STATE.with_borrow_mut(|s| s.in_batch = true);
        let results = handler(events);
        STATE.with_borrow_mut(|s| s.in_batch = false);
        assert_eq!(
            results.len(),
            count,
            "the batch handler returned {} results for {count} events",
            results.len()
        );
        results
    }

    thread_local! {
        pub(crate) static STATE: RefCell<State> = RefCell::new(State::default());
    }

    /// Sets the value [`config`](crate::config) returns for `key` on this thread.
    pub fn set_config(key: impl Into<String>, value: impl Into<String>) {
        STATE.with_borrow_mut(|s| s.config.insert(key.into(), value.into()));
    }

    /// Removes `key` from this thread's configuration.
    pub fn remove_config(key: &str) {
        STATE.with_borrow_mut(|s| s.config.remove(key));
    }

    /// The messages handed to [`publish`](crate::publish) on this thread since the
    /// last call, in order.
    pub fn take_published() -> Vec<Message> {
        STATE.with_borrow_mut(|s| std::mem::take(&mut s.published))
    }

    /// The lines logged on this thread since the last call, in order.
    pub fn take_logs() -> Vec<(Level, String)> {
        STATE.with_borrow_mut(|s| std::mem::take(&mut s.logs))
    }

    /// Clears this thread's configuration, published messages and logs.
    pub fn reset() {
        STATE.with_borrow_mut(|s| *s = State::default());
    }
}

/// Logs at [`Level::Trace`], with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log($crate::Level::Trace, &::std::format!($($arg)+)) };
}

/// Logs at [`Level::Debug`], with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)+)) };
}

/// Logs at [`Level::Info`], with `format!` arguments: `weir_sdk::info!("order {id} done")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log($crate::Level::Info, &::std::format!($($arg)+)) };
}

/// Logs at [`Level::Warn`], with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)+)) };
}

/// Logs at [`Level::Error`], with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log($crate::Level::Error, &::std::format!($($arg)+)) };
}

/// Exports a function as the plugin's handler: `weir_sdk::handler!(my_fn);`
///
/// The function (or closure) takes an [`Event`] and returns a
/// [`weir_sdk::Result`](crate::Result), that is `Result<Vec<Message>, Failure>`.
/// Invoke it once per plugin crate, at item level (typically in `lib.rs`).
///
/// ```
/// fn handle(event: weir_sdk::Event) -> weir_sdk::Result {
///     Ok(vec![event.into_message("out")])
/// }
/// weir_sdk::handler!(handle);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! handler {
    ($handler:expr $(,)?) => {
        const _: () = {
            struct __WeirHandler;

            impl $crate::bindings::Guest for __WeirHandler {
                #[inline]
                fn handle(event: $crate::bindings::Event) -> $crate::__private::RawResult {
                    $crate::__private::dispatch(event, $handler)
                }
            }

    $crate::bindings::export!(__WeirHandler with_types_in $crate::bindings);
        };
    };
}

/// Exports a function over many events as the plugin's `handle-batch`:
/// `weir_sdk::batch_handler!(my_fn);`
///
/// The function (or closure) takes a `Vec<`[`Event`]`>` and returns one
/// [`weir_sdk::Result`](crate::Result) per event, in the same order. The
/// plugin's `handle` (for events that come alone) calls it with one event.
/// Invoke it once per plugin crate, instead of [`handler!`].
///
/// ```
/// fn handle_all(events: Vec<weir_sdk::Event>) -> Vec<weir_sdk::Result> {
///     events.into_iter().map(|e| Ok(vec![e.into_message("out")])).collect()
/// }
/// weir_sdk::batch_handler!(handle_all);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! batch_handler {
    ($handler:expr $(,)?) => {
        const _: () = {
            struct __WeirBatchHandler;

            impl $crate::batch_bindings::Guest for __WeirBatchHandler {
                #[inline]
                fn handle(event: $crate::bindings::Event) -> $crate::__private::RawResult {
                    $crate::__private::dispatch_one(event, $handler)
                }

                #[inline]
                fn handle_batch(
                    events: ::std::vec::Vec<$crate::bindings::Event>,
                ) -> ::std::vec::Vec<$crate::__private::RawResult> {
                    $crate::__private::dispatch_batch(events, $handler)
                }
            }

    $crate::batch_bindings::export_batch!(__WeirBatchHandler with_types_in $crate::batch_bindings);
        };
    };
}

/// Support for [`handler!`] and [`batch_handler!`]; not public API.
#[doc(hidden)]
pub mod __private {
    use super::{Event, Message, Result, bindings};

    /// A panic aborts the guest: before it does, tell the host why, at error
    /// level, so the dead letter's `Weir-Error` carries the panic message.
    #[inline]
    fn install_panic_hook() {
        #[cfg(target_arch = "wasm32")]
        {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                std::panic::set_hook(Box::new(|info| {
                    crate::log(crate::Level::Error, &info.to_string());
                }));
            });
        }
    }

    /// What the generated `handle` export returns.
    pub type RawResult = core::result::Result<Vec<bindings::Message>, bindings::Failure>;

    /// One move of the event into [`Event`], one move of the outputs back.
    #[inline]
    pub fn dispatch(event: bindings::Event, handler: impl FnOnce(Event) -> Result) -> RawResult {
        install_panic_hook();
        into_raw(handler(Event::from_raw(event)))
    }

    #[inline]
    fn into_raw(result: Result) -> RawResult {
        match result {
            Ok(messages) => Ok(messages.into_iter().map(Message::into_raw).collect()),
            Err(failure) => Err(failure.into_raw()),
        }
    }

    /// Set while a batch handler runs: [`publish`](crate::publish) refuses.
    pub static IN_BATCH: core::sync::atomic::AtomicBool =
        core::sync::atomic::AtomicBool::new(false);

    /// A batch handler's results, moved back one by one.
    #[inline]
    pub fn dispatch_batch(
        events: Vec<bindings::Event>,
        handler: impl FnOnce(Vec<Event>) -> Vec<Result>,
    ) -> Vec<RawResult> {
        install_panic_hook();
        let events = events.into_iter().map(Event::from_raw).collect();
        IN_BATCH.store(true, core::sync::atomic::Ordering::Relaxed);
        let results = handler(events);
        IN_BATCH.store(false, core::sync::atomic::Ordering::Relaxed);
        results.into_iter().map(into_raw).collect()
    }

    /// One event through a batch handler (a batch of one).
    #[inline]
    pub fn dispatch_one(
        event: bindings::Event,
        handler: impl FnOnce(Vec<Event>) -> Vec<Result>,
    ) -> RawResult {
        let mut results = dispatch_batch(vec![event], handler);
        match (results.pop(), results.is_empty()) {
            (Some(result), true) => result,
            (_, _) => Err(crate::Failure::reject(
                "the batch handler did not return one result for one event",
            )
            .into_raw()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_case_insensitive_and_ordered() {
        let e = Event::new("a", "x")
            .with_header("Fail-Times", "2")
            .with_header("fail-times", "3")
            .with_header("other", "o");
        assert_eq!(e.header("FAIL-TIMES"), Some("2"));
        assert_eq!(e.header_all("fail-times").collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(e.header("missing"), None);
    }

    #[test]
    fn text_and_json_reject_bad_payloads() {
        let bad = Event::new("a", vec![0xff, 0xfe]);
        assert!(bad.text().is_err_and(|f| f.is_reject()));
        let f = Event::new("a", "{")
            .json::<serde_json::Value>()
            .unwrap_err();
        assert!(f.is_reject());
        assert!(f.message().contains("EOF"), "{f}");
        assert_eq!(Event::new("a", "[1]").json::<Vec<u32>>(), Ok(vec![1]));
    }

    #[test]
    fn reply_goes_to_reply_to() {
        assert_eq!(Event::new("a", "x").reply("y"), None);
        let m = Event::new("a", "x").with_reply_to("_INBOX.1").reply("y");
        assert_eq!(m, Some(Message::new("_INBOX.1", "y")));
    }

    #[test]
    fn dispatch_moves_both_ways() {
        let raw_event = raw::Event {
            id: "id".into(),
            subject: "s".into(),
            payload: b"p".to_vec(),
            headers: vec![("h".into(), "v".into())],
            reply_to: Some("r".into()),
            attempt: 2,
            principal: Some(raw::Principal {
                subject: "alice".into(),
                issuer: "billing".into(),
                claims: r#"{"sub":"alice"}"#.into(),
            }),
        };
        let out = __private::dispatch(raw_event, |e| {
            assert_eq!(e.id(), "id");
            assert_eq!(e.reply_to(), Some("r"));
            assert_eq!(e.attempt(), 2);
            let p = e.principal().expect("principal");
            assert_eq!((p.subject(), p.issuer()), ("alice", "billing"));
            let claims: serde_json::Value = p.claims_json()?;
            assert_eq!(claims["sub"], "alice");
            Ok(vec![e.into_message("out").header("x", "y")])
        })
        .expect("ok");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].subject, "out");
        assert_eq!(out[0].payload, b"p");
        assert_eq!(out[0].headers.len(), 2);

        let err = __private::dispatch(raw_event_min(), |_| Err(Failure::retry("later")));
        assert!(matches!(err, Err(raw::Failure::Retry(m)) if m == "later"));
        let err = __private::dispatch(raw_event_min(), |_| Err(Failure::reject("no")));
        assert!(matches!(err, Err(raw::Failure::Reject(m)) if m == "no"));
    }

    fn raw_event_min() -> raw::Event {
        raw::Event {
            id: String::new(),
            subject: String::new(),
            payload: Vec::new(),
            headers: Vec::new(),
            reply_to: None,
            attempt: 1,
            principal: None,
        }
    }

    #[test]
    fn failure_display_and_from_json() {
        assert_eq!(Failure::retry("x").to_string(), "retry: x");
        let e = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(Failure::from(e).is_reject());
    }
}
