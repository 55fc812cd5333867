//! The serve loop's side of the circuit breaker: which event starts next, and
//! what waits while the circuit is open. A JetStream event that may not start
//! is held here — kept alive on the server with progress acks, so the wait
//! costs it no delivery and no attempt — and starts (first, oldest first) once
//! the circuit lets it; so is one whose attempt failed while the circuit was
//! open. A core event is shed (reason `circuit-open`; a request gets a 503
//! error reply): core NATS keeps nothing to come back to.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::circuit::{Change, Gate, Transition};
use super::letters::headers;
use super::{Delivery, Inbound, Settle, Sink};
use crate::event::Message;
use crate::plugin::{Plugin, Stats};

/// Events waiting for the circuit, and the way back in for events whose
/// attempt failed while it was open.
pub(super) struct Held<D> {
    /// The plugin's current version (versions share counters and circuit).
    versions: watch::Receiver<Arc<Plugin>>,
    queue: VecDeque<Inbound<D>>,
    back_tx: mpsc::UnboundedSender<Inbound<D>>,
    back_rx: mpsc::UnboundedReceiver<Inbound<D>>,
    /// The readers are gone (shutdown): nothing new will come.
    closed: bool,
    last_progress: Instant,
    last_shed_warning: Option<Instant>,
    /// Any change of the circuit (a `weir resume`, another host's probes
    /// closing it) ends a wait at once.
    changes: watch::Receiver<Option<Transition>>,
}

impl<D: Delivery> Held<D> {
    pub(super) fn new(versions: watch::Receiver<Arc<Plugin>>) -> Self {
        let (back_tx, back_rx) = mpsc::unbounded_channel();
        let changes = versions.borrow().circuit.transitions();
        Self {
            versions,
            queue: VecDeque::new(),
            back_tx,
            back_rx,
            closed: false,
            last_progress: Instant::now(),
            last_shed_warning: None,
            changes,
        }
    }

    fn plugin(&self) -> Arc<Plugin> {
        self.versions.borrow().clone()
    }

    /// Run `work` (the wait for a free slot) while keeping the held events
    /// alive on the server.
    pub(super) async fn keep_alive_while<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            let every = self
                .queue
                .front()
                .and_then(|item| item.delivery.progress_every());
            let Some(every) = every else {
                return work.await;
            };
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep_until(self.last_progress + every) => self.progress_all().await,
            }
        }
    }

    async fn progress_all(&mut self) {
        for item in &self.queue {
            item.delivery.progress().await;
        }
        self.last_progress = Instant::now();
    }

    /// Where a running event goes back to when it is to be held.
    pub(super) fn returner(&self) -> mpsc::UnboundedSender<Inbound<D>> {
        self.back_tx.clone()
    }

    /// The next event to start and whether it goes as a probe; `None` once
    /// the readers are gone and nothing is held. Waits while the circuit is
    /// open, holding (or shedding) what arrives meanwhile.
    pub(super) async fn next<S: Sink>(
        &mut self,
        sink: &S,
        inbound: &mut mpsc::Receiver<Inbound<D>>,
        stop: &CancellationToken,
    ) -> Option<(Inbound<D>, bool)> {
        loop {
            let item = match self.queue.pop_front() {
                Some(item) => item,
                None if self.closed => return None,
                None => tokio::select! {
                    biased;
                    Some(item) = self.back_rx.recv() => item,
                    item = inbound.recv() => match item {
                        Some(item) => {
                            Stats::drop_gauge(&self.plugin().stats.queued);
                            item
                        }
                        None => {
                            self.closed = true;
                            continue;
                        }
                    },
                },
            };
            let circuit = self.plugin().circuit.clone();
            self.changes.borrow_and_update();
            if stop.is_cancelled() {
                // The serve loop hands it back (or, for core, runs it).
                return Some((item, false));
            }
            let (gate, change) = circuit.gate(Instant::now());
            log_change(&self.plugin(), change);
            match gate {
                Gate::Pass => return Some((item, false)),
                Gate::Probe => return Some((item, true)),
                Gate::Wait(until) => {
                    if !item.delivery.redelivers() {
                        self.shed(sink, item).await;
                        continue;
                    }
                    self.queue.push_front(item);
                    self.wait(sink, until, inbound, stop).await;
                }
            }
        }
    }

    /// Until `until`: hold what arrives, keep the held alive, and hand them
    /// all back if the host stops.
    async fn wait<S: Sink>(
        &mut self,
        sink: &S,
        until: Instant,
        inbound: &mut mpsc::Receiver<Inbound<D>>,
        stop: &CancellationToken,
    ) {
        let every = self
            .queue
            .front()
            .and_then(|item| item.delivery.progress_every());
        while Instant::now() < until {
            let tick = every.map(|every| self.last_progress + every);
            let wake = tick.map_or(until, |tick| tick.min(until));
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.hand_back_all().await;
                    return;
                }
                Ok(()) = self.changes.changed() => return,
                _ = tokio::time::sleep_until(wake) => {
                    if tick.is_some_and(|tick| Instant::now() >= tick) {
                        self.progress_all().await;
                    }
                }
                Some(item) = self.back_rx.recv() => self.hold_or_shed(sink, item).await,
                item = inbound.recv(), if !self.closed => match item {
                    Some(item) => {
                        Stats::drop_gauge(&self.plugin().stats.queued);
                        self.hold_or_shed(sink, item).await
                    }
                    None => {
                        self.closed = true;
                        self.hand_back_all().await;
                        return;
                    }
                },
            }
        }
    }

    async fn hold_or_shed<S: Sink>(&mut self, sink: &S, item: Inbound<D>) {
        if item.delivery.redelivers() {
            self.queue.push_back(item);
        } else {
            self.shed(sink, item).await;
        }
    }

    /// Hand every held event back to the server (shutdown).
    pub(super) async fn hand_back_all(&mut self) {
        while let Ok(item) = self.back_rx.try_recv() {
            self.queue.push_back(item);
        }
        let plugin = self.plugin();
        for item in self.queue.drain(..) {
            Stats::bump(&plugin.stats.handed_back);
            item.delivery.settle(Settle::HandBack).await;
        }
    }

    async fn shed<S: Sink>(&mut self, sink: &S, item: Inbound<D>) {
        let plugin = self.plugin();
        Stats::bump(&plugin.stats.shed_circuit_open);
        let quiet = self
            .last_shed_warning
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        if !quiet {
            self.last_shed_warning = Some(Instant::now());
            tracing::warn!(
                plugin = plugin.name(), subject = %item.event.subject, reason = "circuit-open",
                shed_total = Stats::get(&plugin.stats.shed_circuit_open),
                "circuit open: shedding core events until it closes"
            );
        }
        if let Some(reply_to) = &item.event.reply_to
            && !crate::policy::is_unsafe_reply(reply_to)
        {
            let reply = Message {
                subject: reply_to.clone(),
                payload: bytes::Bytes::new(),
                headers: vec![
                    (
                        headers::SERVICE_ERROR.into(),
                        format!("circuit-open: plugin {} is paused", plugin.name()),
                    ),
                    (headers::SERVICE_ERROR_CODE.into(), "503".into()),
                ],
            };
            if let Err(e) = sink.publish(vec![reply], false).await {
                tracing::debug!(plugin = plugin.name(), error = %format!("{e:#}"), "cannot send the circuit-open reply");
            }
        }
        item.delivery.settle(Settle::Done).await;
    }
}

/// Log a change the pipeline decided, and count openings.
pub(super) fn log_change(plugin: &Plugin, change: Option<Change>) {
    let Some(change) = change else { return };
    match change {
        Change::Opened { cooldown, .. } => {
            Stats::bump(&plugin.stats.circuit_opened);
            tracing::warn!(
                plugin = plugin.name(),
                cooldown_ms = cooldown.as_millis() as u64,
                "circuit open: too many retryable failures; no event starts for {} ms \
                 (events wait in their stream; core events are shed)",
                cooldown.as_millis()
            );
        }
        Change::HalfOpened => tracing::info!(
            plugin = plugin.name(),
            probes = plugin.circuit.config().probes,
            "circuit half-open: probing"
        ),
        Change::Closed => {
            tracing::info!(plugin = plugin.name(), "circuit closed: events flow again")
        }
    }
}
