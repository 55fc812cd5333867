//! weir's integration tests: one binary, a module per area. Every test starts
//! its own nats-server (JetStream unless it tests a server without, temp
//! store, ephemeral port) and runs real plugins built from plugins/ by
//! scripts/build-plugins.sh.

mod support;

/// Per-plugin auth: producer tokens, grants, NATS TLS and credentials.
mod auth;
/// A host given an event whose header block does not parse: `bad-input`.
mod bad_input;
/// Batches: handle-batch, each event settled on its own, bisection.
mod batches;
/// The `weir` binary: `weir test`, `weir up` and its graceful shutdown.
mod binary;
/// Bundle archives: pack, inspect, and archives wherever folders go (issue 13).
mod bundles;
/// The compile cache: bounded, least recently used first; `weir cache`.
mod cache;
/// The circuit breaker: an outage pauses the fleet, nothing is dead-lettered (issue 10).
mod circuit;
/// The `weir` binary as a user types it: global flags, logs, pub, dlq.
mod cli;
/// Issue 10: a 3-node JetStream cluster loses its stream leader under two hosts.
mod cluster;
/// Every language's twin of the example plugins passes the same fixtures.
mod conformance;
/// Events flow through core NATS: outputs, replies, retries, dead letters.
mod core_dispatch;
/// Every way the host authenticates to NATS, right and wrong, through `weir up`.
mod credentials;
/// A dead letter never vanishes: a DLQ that refuses, a stream that steals
/// its subjects, max_payload, no JetStream at all.
mod dead_letters;
/// The fleet's desired state in NATS: deploy, list, rollback, undeploy (issue 13).
mod deploy;
/// The fleet view: every host a NATS micro-service instance; weir ps (issue 13).
mod fleet;
/// The HTTP gateway: accept with 202, poll the status (issue 14).
mod gateway;
/// The gateway through the binary: a host killed mid-retry, a receiver down (issue 14).
mod gateway_webhooks;
/// A guest that does not build says which file and line, in a few lines.
mod guest_builds;
/// Hostile plugins fail only their own events.
mod hostile;
/// At-least-once delivery on JetStream, faults included.
mod jetstream;
/// Python and JavaScript plugins under a live host, hostile ones included.
mod languages;
/// Bad bundles and config files are refused with errors that name them.
mod loading;
/// A message with a malformed header block is delivered, not a disconnect.
mod malformed;
/// Issue 11: /metrics after a known workload, /healthz, /readyz across a NATS outage.
mod metrics;
/// A plugin cannot starve the others; outputs cost no API request each.
mod neighbours;
/// Order per key with order_by: one event of a key at a time, in stream order (issue 18).
mod ordering;
/// Issue 19: periodic and delayed events on NATS message schedules.
mod schedules;
/// Server URLs: lists, a cluster with a node down, credentials kept out of logs.
mod servers;
/// SIGTERM hands every delivery back and exits, spinning guests or not.
mod shutdown;
/// Issue 16: a JetStream pull stream that stopped mid-stream, and the watchdog.
mod stall;
/// Hosts that follow deployments and `weir up --watch`: swaps under load (issue 13).
mod swap;
/// What a swap reports is true: no event on the old version after it; a new
/// durable consumer starts where the old one stopped (issue 13).
mod swap_report;
/// Issue 11: W3C trace context across NATS hops; spans at an OTLP/HTTP receiver.
mod traces;
/// `weir up --watch`: a wasm outside its bundle, refusals cleared, a prompt stop (issue 13).
mod watch;
/// Issue 14: signed webhooks, retried from a work queue, checked by the spec's library.
mod webhooks;
/// `weir test` on the retry path: exit status, --follow, --set, verdicts.
mod weir_test;
