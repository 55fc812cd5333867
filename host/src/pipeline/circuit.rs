//! The circuit breaker of one plugin on one host, as a state machine with no
//! I/O: closed (events flow; attempts are counted over a sliding window) →
//! open (no event starts until the cool-down ends) → half-open (a few probes
//! run; their successes close it, a retryable failure opens it again with a
//! doubled cool-down). The pipeline asks [`Circuit::gate`] before an event
//! starts and tells [`Circuit::record`] how each attempt went; the transport
//! turns the [`Change`]s into consumer pauses on the server, so every host
//! stops together (`host.rs` wires them up).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::CircuitConfig;

/// What an event may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: start it.
    Pass,
    /// Half-open: start it as a probe; report it with `probe = true`.
    Probe,
    /// Open, or half-open with every probe out: ask again then, or on any
    /// change of state ([`Circuit::transitions`]).
    Wait(Instant),
}

/// How one attempt went, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// A retryable failure: the plugin or what it depends on is unwell.
    Failure,
    /// A final failure that is the event's own fault (a reject, bad input):
    /// says nothing about the plugin.
    Neutral,
}

/// A change of state, for the logs and for the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Opened (or reopened) until then; `cooldown` is how long that is.
    Opened {
        until: Instant,
        cooldown: Duration,
    },
    /// Probes go out.
    HalfOpened,
    Closed,
}

/// Why the circuit is open, for `weir status` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// This host's attempts tripped it.
    Failures,
    /// Another host opened it, or an operator paused the plugin: seen
    /// through the server's consumer pause or a control message.
    Elsewhere,
}

/// Local changes queued for the transport before it falls behind.
const LOCAL_CHANGES: usize = 64;

/// How soon a waiter looks again while every probe is out.
const PROBES_OUT_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Closed,
    Open {
        until: Instant,
        cooldown: Duration,
        cause: Cause,
    },
    HalfOpen {
        cooldown: Duration,
        out: u32,
        succeeded: u32,
    },
}

/// A snapshot of the state, for status output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    Closed { failures: u32, attempts: u32 },
    Open { remaining: Duration, cause: Cause },
    HalfOpen { probes_out: u32 },
}

struct Inner {
    mode: Mode,
    /// Attempts in the window: (when, failed), oldest first, in buckets of a
    /// tenth of the window so a busy plugin does not keep one entry per event.
    buckets: VecDeque<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    attempts: u32,
    failures: u32,
}

/// The latest change, as the transport's watcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub change: Change,
    /// Decided here (by this host's attempts), not taken over from another
    /// host or an operator: only these are passed on (pause the consumers,
    /// tell the other hosts), so hosts do not echo each other.
    pub local: bool,
}

pub struct Circuit {
    config: CircuitConfig,
    /// `[circuit]` is set: attempts are counted and can open it. Without it
    /// only an operator (or a consumer pause) opens it.
    trips: bool,
    inner: Mutex<Inner>,
    transitions: watch::Sender<Option<Transition>>,
    /// Every change this host decided, in order, for the transport (a
    /// watch would let a later change hide an opening).
    local_tx: mpsc::Sender<Change>,
    local_rx: Mutex<Option<mpsc::Receiver<Change>>>,
}

impl Circuit {
    /// The breaker of `[circuit]`; with `None`, one that never trips by
    /// itself (and probes with the defaults after a pause).
    pub fn new(config: Option<CircuitConfig>) -> Self {
        let (local_tx, local_rx) = mpsc::channel(LOCAL_CHANGES);
        Self {
            trips: config.is_some(),
            config: config.unwrap_or_default(),
            inner: Mutex::new(Inner {
                mode: Mode::Closed,
                buckets: VecDeque::new(),
            }),
            transitions: watch::channel(None).0,
            local_tx,
            local_rx: Mutex::new(Some(local_rx)),
        }
    }

    /// The changes this host decides, in order; once (the transport's
    /// follower takes them).
    pub fn take_local_changes(&self) -> Option<mpsc::Receiver<Change>> {
        self.local_rx.lock().ok()?.take()
    }

    /// Every change from now on (the latest one when several come at once).
    pub fn transitions(&self) -> watch::Receiver<Option<Transition>> {
        self.transitions.subscribe()
    }

    fn emit(&self, change: Option<Change>, local: bool) -> Option<Change> {
        if let Some(change) = change {
            self.transitions
                .send_replace(Some(Transition { change, local }));
            if local {
                // Full only when nobody follows (tests): nothing to tell then.
                let _ = self.local_tx.try_send(change);
            }
        }
        change
    }

    pub fn is_closed(&self) -> bool {
        self.lock().mode == Mode::Closed
    }

    pub fn config(&self) -> &CircuitConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain counters behind:
        // still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May an event start now? Moves an open circuit whose cool-down is over
    /// to half-open (returned as a change with the gate).
    pub fn gate(&self, now: Instant) -> (Gate, Option<Change>) {
        let mut inner = self.lock();
        let mut change = None;
        if let Mode::Open {
            until, cooldown, ..
        } = inner.mode
            && now >= until
        {
            inner.mode = Mode::HalfOpen {
                cooldown,
                out: 0,
                succeeded: 0,
            };
            change = Some(Change::HalfOpened);
        }
        let gate = match &mut inner.mode {
            Mode::Closed => Gate::Pass,
            Mode::Open { until, .. } => Gate::Wait(*until),
            Mode::HalfOpen { out, .. } if *out < self.config.probes => {
                *out += 1;
                Gate::Probe
            }
            // Every probe is out: look again soon.
            Mode::HalfOpen { .. } => Gate::Wait(now + PROBES_OUT_POLL),
        };
        drop(inner);
        (gate, self.emit(change, true))
    }

    /// Count one attempt (`probe`: it was let through as one).
    pub fn record(&self, now: Instant, verdict: Verdict, probe: bool) -> Option<Change> {
        // Without `[circuit]` only a probe's report can change anything (after
        // a pause by hand): the per-event path takes no lock.
        if !self.trips && !probe {
            return None;
        }
        let change = self.decide(now, verdict, probe);
        self.emit(change, true)
    }

    fn decide(&self, now: Instant, verdict: Verdict, probe: bool) -> Option<Change> {
        let mut inner = self.lock();
        match inner.mode {
            Mode::HalfOpen {
                cooldown,
                out,
                succeeded,
            } if probe => {
                let out = out.saturating_sub(1);
                match verdict {
                    Verdict::Failure => {
                        let cooldown = (cooldown * 2).min(self.config.max_open());
                        return Some(self.open(&mut inner, now, cooldown, Cause::Failures));
                    }
                    Verdict::Success if succeeded + 1 >= self.config.probes => {
                        inner.mode = Mode::Closed;
                        inner.buckets.clear();
                        return Some(Change::Closed);
                    }
                    Verdict::Success => {
                        inner.mode = Mode::HalfOpen {
                            cooldown,
                            out,
                            succeeded: succeeded + 1,
                        }
                    }
                    Verdict::Neutral => {
                        inner.mode = Mode::HalfOpen {
                            cooldown,
                            out,
                            succeeded,
                        }
                    }
                }
                None
            }
            Mode::Closed => {
                if verdict == Verdict::Neutral || !self.trips {
                    return None;
                }
                self.count(&mut inner, now, verdict == Verdict::Failure);
                let (attempts, failures) = totals(&inner);
                let tripped = attempts >= self.config.min_events
                    && f64::from(failures) >= self.config.failure_ratio * f64::from(attempts);
                tripped.then(|| self.open(&mut inner, now, self.config.open(), Cause::Failures))
            }
            // An attempt that started before the circuit opened, or a
            // non-probe while half-open: the decision is made already.
            _ => None,
        }
    }

    /// Open at once until `until`, as another host or an operator said
    /// (`Cause::Elsewhere`): probes follow as after any opening. Ignored
    /// when already open until then or later.
    pub fn open_until(&self, now: Instant, until: Instant) -> Option<Change> {
        let mut inner = self.lock();
        if let Mode::Open { until: current, .. } = inner.mode
            && current >= until
        {
            return None;
        }
        if until <= now {
            return None;
        }
        let change = Self::force_open(&mut inner, &self.config, now, until);
        drop(inner);
        self.emit(Some(change), false)
    }

    fn force_open(
        inner: &mut Inner,
        config: &CircuitConfig,
        now: Instant,
        until: Instant,
    ) -> Change {
        let cooldown = match inner.mode {
            Mode::Open { cooldown, .. } | Mode::HalfOpen { cooldown, .. } => cooldown,
            Mode::Closed => config.open(),
        };
        inner.mode = Mode::Open {
            until,
            cooldown,
            cause: Cause::Elsewhere,
        };
        Change::Opened {
            until,
            cooldown: until - now,
        }
    }

    /// An open circuit that this host did not open goes half-open now (its
    /// consumers were resumed on the server by hand): probes decide.
    pub fn resumed_elsewhere(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match &mut inner.mode {
            Mode::Open {
                until,
                cause: Cause::Elsewhere,
                ..
            } if *until > now => {
                *until = now;
                drop(inner);
                self.emit(Some(Change::HalfOpened), false);
                true
            }
            _ => false,
        }
    }

    /// Close at once (another host's probes succeeded, or an operator's
    /// `weir resume`).
    pub fn close(&self) -> Option<Change> {
        let mut inner = self.lock();
        if inner.mode == Mode::Closed {
            return None;
        }
        inner.mode = Mode::Closed;
        inner.buckets.clear();
        drop(inner);
        self.emit(Some(Change::Closed), false)
    }

    pub fn state(&self, now: Instant) -> State {
        let inner = self.lock();
        match inner.mode {
            Mode::Closed => {
                let (attempts, failures) = totals(&inner);
                State::Closed { failures, attempts }
            }
            // Past its cool-down, an open circuit lets the next event through
            // as a probe: half-open, whether or not an event came yet.
            Mode::Open { until, .. } if until <= now => State::HalfOpen { probes_out: 0 },
            Mode::Open { until, cause, .. } => State::Open {
                remaining: until - now,
                cause,
            },
            Mode::HalfOpen { out, .. } => State::HalfOpen { probes_out: out },
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant, cooldown: Duration, cause: Cause) -> Change {
        let until = now + cooldown;
        inner.mode = Mode::Open {
            until,
            cooldown,
            cause,
        };
        inner.buckets.clear();
        Change::Opened { until, cooldown }
    }

    fn count(&self, inner: &mut Inner, now: Instant, failed: bool) {
        let window = self.config.window();
        let width = (window / 10).max(Duration::from_millis(1));
        while inner
            .buckets
            .front()
            .is_some_and(|b| now.saturating_duration_since(b.start) >= window)
        {
            inner.buckets.pop_front();
        }
        let fresh = inner
            .buckets
            .back()
            .is_none_or(|b| now.saturating_duration_since(b.start) >= width);
        if fresh {
            inner.buckets.push_back(Bucket {
                start: now,
                attempts: 0,
                failures: 0,
            });
        }
        if let Some(bucket) = inner.buckets.back_mut() {
            bucket.attempts += 1;
            bucket.failures += u32::from(failed);
        }
    }
}

fn totals(inner: &Inner) -> (u32, u32) {
    inner
        .buckets
        .iter()
        .fold((0, 0), |(a, f), b| (a + b.attempts, f + b.failures))
}

#[cfg(test)]
#[path = "circuit_tests.rs"]
mod tests;
