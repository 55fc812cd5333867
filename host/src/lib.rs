//! weir: a host for WebAssembly event handlers on NATS.
//!
//! # Layout
//!
//! Data flows one way:
//!
//! - [`config`]: `weir.toml` and `plugin.toml`, parsed strictly.
//! - [`bundle`]: a plugin folder read from disk, its component checked and hashed.
//! - [`auth`]: grants bound to the wasm hash (checked at load), producer
//!   tokens (checked per event), trusted keys, NATS credentials.
//! - [`plugin`]: a loaded plugin — manifest, executor, token verifier, counters.
//! - [`transport`]: NATS — connection, the core and JetStream readers that feed
//!   each plugin's pipeline, the `Delivery` that settles what they read, the
//!   publishing sink.
//! - [`pipeline`]: an event's whole life in one loop (`serve`): admit, limit,
//!   attempt, decide (done / retry / dead-letter), publish, settle. Knows
//!   nothing of NATS.
//! - [`sandbox`]: wasmtime — engine, pooling, epochs, limits, fresh or warm
//!   instances, the bounded compile cache (`weir cache`). Knows nothing of
//!   retries.
//! - [`policy`]: what a plugin may publish.
//! - [`host`]: `weir up` — loads, subscribes, wires readers to pipelines,
//!   swaps in what is deployed or rebuilt, and stops gracefully; [`roster`]
//!   is what it runs now, for status, `weir ps` and `/metrics`.
//! - [`gateway`]: the HTTP gateway (`[http]`) — a request becomes a JetStream
//!   event (202 + status URL); [`tracking`] is the status document the
//!   pipeline keeps for such events; [`webhook`] delivers their final status
//!   from the `WEIR_WEBHOOKS` work queue, signed the Standard Webhooks way,
//!   retried with backoff, dead-lettered after its attempts.
//! - [`dlq`]: `weir dlq` — list, show, replay and purge dead letters.
//! - [`schedule`]: delayed and periodic messages on NATS message schedules —
//!   `[[schedule]]` definitions written at load, the forwarder of fired
//!   messages, `Weir-Deliver-In/At` outputs, `weir schedule`.
//! - [`harness`]: `weir test` — runs a plugin on fixture events without NATS.
//! - [`cli`]: argument parsing only; [`dev`] and [`telemetry`] (logs, metrics,
//!   traces) are the edges.

pub mod auth;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod dev;
pub mod dlq;
pub mod event;
pub mod fleet;
pub mod gateway;
pub mod harness;
pub mod host;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod roster;
pub mod sandbox;
pub mod scaffold;
pub mod schedule;
pub mod stats;
pub mod status;
pub mod telemetry;
pub mod tracking;
pub mod transport;
pub mod webhook;
