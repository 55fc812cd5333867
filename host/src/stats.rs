//! A plugin's counters, gauges and histograms: one relaxed atomic add (or one
//! uncontended histogram lock) per fact on the event path. The shutdown
//! totals, `weir status` and the metrics endpoint all read these; nothing is
//! counted twice.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use crate::event::FailureKind;

/// Counters per plugin.
#[derive(Debug, Default)]
pub struct Stats {
    /// New events the readers took from NATS: a JetStream delivery counts
    /// only the first time (delivered = 1); later ones are `redelivered`.
    pub received: AtomicU64,
    /// JetStream deliveries of an event delivered before: a retry after its
    /// backoff, or one a stopped or dead host left unfinished.
    pub redelivered: AtomicU64,
    /// Events finished with their outputs published (confirmed, on JetStream).
    pub succeeded: AtomicU64,
    /// Attempts that failed (retried or not); by kind in `failed_by_kind`.
    pub failed_attempts: AtomicU64,
    pub failed_by_kind: ByKind,
    /// Failed attempts to be tried again (after the backoff): in-process on
    /// core NATS, by a delayed redelivery on JetStream.
    pub retried: AtomicU64,
    /// Dead letters stored; by the kind of their last failure in
    /// `dead_lettered_by_kind`.
    pub dead_lettered: AtomicU64,
    pub dead_lettered_by_kind: ByKind,
    /// Dead letters that could not be stored (the event stays in its stream
    /// when it came from one; a core event's is lost, loudly).
    pub dead_letters_unstored: AtomicU64,
    /// Messages published for finished events (outputs, not replies to
    /// failed requests).
    pub outputs_published: AtomicU64,
    /// Events whose outputs could not be published (or confirmed).
    pub outputs_unconfirmed: AtomicU64,
    /// Outputs published again in place because the server could not take
    /// them yet (a cluster electing a stream leader): one per publish again.
    pub outputs_retried: AtomicU64,
    /// Status writes of tracked (HTTP gateway) events that could not be
    /// stored in the `weir_status` bucket.
    pub status_unrecorded: AtomicU64,
    /// Webhook jobs of tracked events stored in `WEIR_WEBHOOKS`, and those
    /// that could not be.
    pub webhooks_queued: AtomicU64,
    pub webhooks_unqueued: AtomicU64,
    /// Core events dropped because the plugin's queue was full.
    pub shed: AtomicU64,
    /// JetStream deliveries handed back to the server, not started (shutdown).
    pub handed_back: AtomicU64,
    /// Times a JetStream pull was found stalled and renewed (the watchdog).
    pub stalls: AtomicU64,
    /// Core events dropped because the circuit was open (reason `circuit-open`).
    pub shed_circuit_open: AtomicU64,
    /// Times this host's attempts opened the circuit.
    pub circuit_opened: AtomicU64,
    /// JetStream attempts that failed while the circuit was open: the event
    /// was held, not retried, and that attempt did not count against it.
    pub held: AtomicU64,
    /// Events in the plugin's queue, taken from NATS and not yet picked up by
    /// its pipeline (a gauge).
    pub queued: AtomicI64,
    /// Events running: from taking a `max_in_flight` slot to being settled
    /// (a gauge).
    pub in_flight: AtomicI64,
    /// Attempts that found no free instance slot in the sandbox's pool
    /// (`sandbox.max_instances` reached): failed as a trap and retried.
    pub pool_exhausted: AtomicU64,
    /// Calls of `handle-batch` (or of a batch's `handle`s in one instance),
    /// and the events they carried.
    pub batches: AtomicU64,
    pub batched_events: AtomicU64,
    /// Batches that failed as a whole and were split in halves to find the
    /// event that fails them.
    pub batch_splits: AtomicU64,
    /// Events of an `order_by` subscription that waited behind an earlier
    /// event of their key, and how many wait now (a gauge).
    pub order_waits: AtomicU64,
    pub order_waiting: AtomicI64,
    /// How long each handler attempt took, instantiation included.
    pub attempt_seconds: Seconds,
    /// How long publishing an event's outputs took until the server had them
    /// (stored, for subjects a stream captures).
    pub confirm_seconds: Seconds,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One failed attempt of `kind`.
    pub fn attempt_failed(&self, kind: FailureKind) {
        Self::bump(&self.failed_attempts);
        self.failed_by_kind.bump(kind);
    }

    /// One dead letter stored after a failure of `kind`.
    pub fn dead_lettered(&self, kind: FailureKind) {
        Self::bump(&self.dead_lettered);
        self.dead_lettered_by_kind.bump(kind);
    }

    pub fn bump_gauge(gauge: &AtomicI64) {
        gauge.fetch_add(1, Ordering::Relaxed);
    }

    pub fn drop_gauge(gauge: &AtomicI64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn add_gauge(gauge: &AtomicI64, n: i64) {
        gauge.fetch_add(n, Ordering::Relaxed);
    }

    /// A gauge up by one until the returned guard drops.
    pub fn up(gauge: &AtomicI64) -> Up<'_> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Up(gauge)
    }

    /// A gauge's value (never below zero as read).
    pub fn level(gauge: &AtomicI64) -> u64 {
        gauge.load(Ordering::Relaxed).max(0) as u64
    }
}

/// Keeps a gauge up by one while alive.
#[must_use]
pub struct Up<'a>(&'a AtomicI64);

impl Drop for Up<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A counter per [`FailureKind`].
#[derive(Debug, Default)]
pub struct ByKind([AtomicU64; FailureKind::ALL.len()]);

impl ByKind {
    pub fn bump(&self, kind: FailureKind) {
        Stats::bump(&self.0[kind.index()]);
    }

    pub fn get(&self, kind: FailureKind) -> u64 {
        Stats::get(&self.0[kind.index()])
    }
}

/// A latency histogram in seconds, 100 µs to 30 s.
#[derive(Debug)]
pub struct Seconds(pub Histogram);

/// Bucket bounds (seconds): a Wasm attempt takes tens of µs to seconds; a
/// publish confirm sub-ms to a cluster's election.
const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

impl Default for Seconds {
    fn default() -> Self {
        Self(Histogram::new(BUCKETS))
    }
}

impl Seconds {
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_counter() {
        for (i, kind) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind}");
        }
        let stats = Stats::default();
        stats.attempt_failed(FailureKind::Timeout);
        stats.attempt_failed(FailureKind::Timeout);
        stats.dead_lettered(FailureKind::Retry);
        assert_eq!(stats.failed_by_kind.get(FailureKind::Timeout), 2);
        assert_eq!(stats.failed_by_kind.get(FailureKind::Trap), 0);
        assert_eq!(Stats::get(&stats.failed_attempts), 2);
        assert_eq!(stats.dead_lettered_by_kind.get(FailureKind::Retry), 1);
    }

    #[test]
    fn a_gauge_goes_down_when_its_guard_drops() {
        let stats = Stats::default();
        let one = Stats::up(&stats.in_flight);
        let two = Stats::up(&stats.in_flight);
        assert_eq!(Stats::level(&stats.in_flight), 2);
        drop(one);
        drop(two);
        assert_eq!(Stats::level(&stats.in_flight), 0);
    }
}
