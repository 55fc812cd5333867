//! The life of an event: [`serve`] takes a plugin's [`Inbound`] events, runs
//! at most `max_in_flight` at once, and takes each through admit → attempts →
//! outputs or dead letter → [`Settle`], which the event's [`Delivery`] maps
//! onto the transport's acknowledgements.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Sink;
use super::circuit::Verdict;
use super::decide::{Attempt, Outcome, admit, attempt_in_pipeline, stamp_outputs};
use super::held::{Held, log_change};
use super::letters::dead_letter;
use super::trace::{EventTrace, Finish};
use super::tracked::{self, Tracked};
use super::unstored::Unstored;
use crate::event::{Event, Failure, FailureKind, Message};
use crate::plugin::{Plugin, Stats};

/// One event as the transport hands it over.
pub struct Inbound<D> {
    pub event: Event,
    /// When the event was first seen (stored, for JetStream): `Weir-First-Seen`.
    pub first_seen: SystemTime,
    /// The stream and sequence that hold the event, when one does: recorded on
    /// its dead letter, so a cut payload can be fetched whole.
    pub origin: Option<(String, u64)>,
    /// A fault the transport found in the message itself (a malformed header
    /// block): the event is dead-lettered at once with it, never run.
    pub refused: Option<Failure>,
    pub delivery: D,
}

/// How an event ends here, for the transport to acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Finished: outputs published (confirmed, when the transport redelivers).
    Done,
    /// Deliver again after this delay: the retry backoff.
    Retry(Duration),
    /// Not started here: deliver again at once, to whoever can take it.
    HandBack,
    /// Dead-lettered and the letter stored: never deliver again.
    DeadLettered,
    /// Could not be finished (outputs or dead letter not confirmed): deliver
    /// again after this delay; weir counts the attempts, so nothing is lost.
    Unfinished(Duration),
}

/// The transport's handle on one event.
pub trait Delivery: Send + Sync + 'static {
    /// Whether the transport delivers an event again by itself (JetStream):
    /// then each delivery is one attempt and a retry is a delayed redelivery;
    /// otherwise (core NATS) retries run here, in-process.
    fn redelivers(&self) -> bool;
    /// Whether a retry runs here, in-process, after its backoff (the event
    /// kept, and in progress), rather than by a delayed redelivery: always
    /// without redelivery, and for events that hold a key (`order_by`), so
    /// no later event of the key overtakes them.
    fn retries_here(&self) -> bool {
        !self.redelivers()
    }
    /// How often to say the event is still being worked on; `None`: never.
    fn progress_every(&self) -> Option<Duration>;
    fn progress(&self) -> impl Future<Output = ()> + Send;
    fn settle(self, settle: Settle) -> impl Future<Output = ()> + Send;
}

/// Serve one plugin until `inbound` closes (its readers stopped). Every event
/// runs as a task in `events`. Once `stop` fires, an event that can be handed
/// back (its transport redelivers) is handed back instead of started; others
/// still run, and a failure then is dead-lettered, not retried. With a
/// circuit breaker, events start only when it lets them ([`Held`]).
pub async fn serve<D: Delivery, S: Sink>(
    plugin: Arc<Plugin>,
    sink: Arc<S>,
    inbound: mpsc::Receiver<Inbound<D>>,
    events: TaskTracker,
    stop: CancellationToken,
) {
    let (_only, versions) = watch::channel(plugin);
    serve_versions(versions, sink, inbound, events, stop).await
}

/// [`serve`], each event on the version `versions` holds when it starts: a
/// new version takes every event not started yet, while those running finish
/// on theirs. Versions share the plugin's counters and circuit, and keep the
/// first one's `max_in_flight` (a version with other limits or subscriptions
/// gets a pipeline of its own).
pub async fn serve_versions<D: Delivery, S: Sink>(
    versions: watch::Receiver<Arc<Plugin>>,
    sink: Arc<S>,
    mut inbound: mpsc::Receiver<Inbound<D>>,
    events: TaskTracker,
    stop: CancellationToken,
) {
    // With batches, a slot is an event: `max_in_flight` batches of events.
    let max_in_flight = versions.borrow().manifest.events_in_flight();
    let slots = Arc::new(Semaphore::new(max_in_flight as usize));
    let unstored = Arc::new(Unstored::default());
    let mut held = Held::new(versions.clone());
    while let Some((item, probe)) = held.next(sink.as_ref(), &mut inbound, &stop).await {
        let redelivers = item.delivery.redelivers();
        let wait_for_slot = async {
            if redelivers {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => None,
                    permit = slots.clone().acquire_owned() => permit.ok(),
                }
            } else {
                slots.clone().acquire_owned().await.ok()
            }
        };
        let permit = held.keep_alive_while(wait_for_slot).await;
        // Counted on its version while the version is read: a swap that
        // replaced it then waits for this event too.
        let (plugin, run) = {
            let current = versions.borrow();
            (current.clone(), current.runs.token())
        };
        let Some(permit) = permit else {
            Stats::bump(&plugin.stats.handed_back);
            if probe {
                (plugin.circuit).record(tokio::time::Instant::now(), Verdict::Neutral, true);
            }
            item.delivery.settle(Settle::HandBack).await;
            continue;
        };
        let sink = sink.clone();
        let stop = stop.clone();
        let unstored = unstored.clone();
        let back = held.returner();
        events.spawn(async move {
            let _run = run;
            let _running = Stats::up(&plugin.stats.in_flight);
            let run = Run {
                plugin: &plugin,
                sink: sink.as_ref(),
                stop: &stop,
                probe,
            };
            run.handle(item, &unstored, &back).await;
            // The slot frees when the event is settled.
            drop(permit);
        });
    }
    held.hand_back_all().await;
}

/// One event's run: what it needs from the serve loop.
struct Run<'a, S> {
    plugin: &'a Plugin,
    sink: &'a S,
    stop: &'a CancellationToken,
    /// Let through by a half-open circuit: its first attempt reports as a probe.
    probe: bool,
}

impl<S: Sink> Run<'_, S> {
    /// Take one event to its end and settle it (or hand it to `back`, to be
    /// held while the circuit is open).
    async fn handle<D: Delivery>(
        &self,
        item: Inbound<D>,
        unstored: &Unstored,
        back: &mpsc::UnboundedSender<Inbound<D>>,
    ) {
        let plugin = self.plugin;
        let Inbound {
            mut event,
            first_seen,
            origin,
            refused,
            delivery,
        } = item;
        let redelivers = delivery.redelivers();
        let retries_here = delivery.retries_here();
        tracing::trace!(
            plugin = plugin.name(), event = %event.id, subject = %event.subject,
            attempt = event.attempt, "received"
        );
        let refused = match refused {
            Some(failure) => Some(failure),
            None if redelivers => unstored.take(&event.id),
            None => None,
        };
        let mut trace = EventTrace::begin(&plugin.tracing, &event);
        let tracked = Tracked::of(&event);
        let work = self.run(
            &mut event,
            refused,
            (redelivers, retries_here),
            &mut trace,
            tracked.as_ref(),
        );
        let ending = match delivery.progress_every() {
            Some(every) => with_progress(&delivery, every, work).await,
            None => work.await,
        };
        let settle = match ending {
            Ending::Settled(settle) => {
                trace.end(&event, Finish::Settled(settle));
                settle
            }
            Ending::Hold => {
                trace.end(&event, Finish::Held);
                Stats::bump(&plugin.stats.held);
                let item = Inbound {
                    event,
                    first_seen,
                    origin,
                    refused: None,
                    delivery,
                };
                match back.send(item) {
                    Ok(()) => return,
                    // The serve loop is gone (shutdown).
                    Err(mpsc::error::SendError(item)) => {
                        Stats::bump(&plugin.stats.handed_back);
                        item.delivery.settle(Settle::HandBack).await;
                        return;
                    }
                }
            }
            Ending::Failed(failure) => {
                let origin = origin.as_ref().map(|(s, q)| (s.as_str(), *q));
                let stored = dead_letter(
                    plugin, self.sink, &event, &failure, first_seen, origin, &trace,
                )
                .await;
                trace.end(
                    &event,
                    Finish::DeadLettered {
                        failure: &failure,
                        stored,
                    },
                );
                if stored {
                    let told = match &tracked {
                        Some(tracked) => {
                            tracked
                                .finished(plugin, self.sink, &event, Err(&failure))
                                .await
                        }
                        None => true,
                    };
                    if !told && tracked::again(plugin, &event, redelivers) {
                        // Delivered again, it is dead-lettered again (past its
                        // attempts): a second letter rather than a lost callback.
                        Settle::Unfinished(plugin.manifest.retry.delay_after(event.attempt))
                    } else {
                        Settle::DeadLettered
                    }
                } else {
                    if redelivers {
                        unstored.keep(&event.id, failure);
                    }
                    Settle::Unfinished(plugin.manifest.retry.delay_after(event.attempt))
                }
            }
        };
        delivery.settle(settle).await;
    }

    /// Admit, then attempt (retrying in-process when the delivery
    /// `retries_here`), then publish the outputs.
    async fn run(
        &self,
        event: &mut Event,
        refused: Option<Failure>,
        (redelivers, retries_here): (bool, bool),
        trace: &mut EventTrace<'_>,
        tracked: Option<&Tracked>,
    ) -> Ending {
        let (plugin, stop) = (self.plugin, self.stop);
        let policy = &plugin.manifest.retry;
        if let Some(failure) = refused {
            self.release_probe();
            return Ending::Failed(failure);
        }
        // Delivered again after it finished here (its webhook job or ack
        // lost): only the webhook again, no second run or dead letter.
        let mut running_written = false;
        let resumed = match tracked {
            Some(tracked) if redelivers && event.attempt > 1 => {
                running_written = true;
                tracked.resume(plugin, self.sink, event, redelivers).await
            }
            _ => None,
        };
        if let Some(settle) = resumed {
            self.release_probe();
            return Ending::Settled(settle);
        }
        if redelivers && event.attempt > policy.max_attempts {
            self.release_probe();
            // Delivered again after the last attempt: a host died mid-attempt, or
            // the dead letter could not be stored before.
            return Ending::Failed(Failure::new(
                FailureKind::Retry,
                format!(
                    "delivered {} times without a result (max_attempts is {})",
                    event.attempt, policy.max_attempts
                ),
            ));
        }
        // An event held by the circuit was admitted before (its token is
        // gone from its headers, its principal set): not again.
        if event.principal.is_none()
            && let Err(failure) = admit(plugin, event)
        {
            self.release_probe();
            return Ending::Failed(failure);
        }
        let mut probe = self.probe;
        loop {
            if let Some(tracked) = tracked
                && !std::mem::take(&mut running_written)
            {
                tracked.running(plugin, self.sink, event).await;
            }
            let span = trace.attempt(event.attempt);
            let Some(Attempt { outcome, logs }) =
                attempt_in_pipeline(plugin, event, redelivers, stop).await
            else {
                // Waited for its batch while the host stopped: not started.
                self.release_probe();
                Stats::bump(&plugin.stats.handed_back);
                return Ending::Settled(Settle::HandBack);
            };
            let held = self.held_by_circuit(&outcome, std::mem::take(&mut probe), redelivers);
            trace.attempt_ended(span, &outcome, &logs, held);
            if held {
                if let Outcome::Retry { failure, .. } | Outcome::DeadLetter(failure) = &outcome {
                    plugin.stats.attempt_failed(failure.kind);
                }
                return Ending::Hold;
            }
            match outcome {
                Outcome::Done(outputs) => {
                    let mut listed = tracked.map(|_| Vec::new());
                    let ending = publish(
                        plugin,
                        self.sink,
                        event,
                        outputs,
                        (redelivers, stop),
                        trace,
                        listed.as_mut(),
                    )
                    .await;
                    if let (Some(tracked), Some(listed), Ending::Settled(Settle::Done)) =
                        (tracked, listed, &ending)
                        && !tracked.finished(plugin, self.sink, event, Ok(listed)).await
                        && tracked::again(plugin, event, redelivers)
                    {
                        // Run again so the caller still hears how it ended
                        // (its outputs are dropped as copies within the
                        // streams' duplicate windows).
                        return Ending::Settled(Settle::Unfinished(
                            policy.delay_after(event.attempt),
                        ));
                    }
                    return ending;
                }
                Outcome::Retry { delay, failure } => {
                    note_retry(plugin, event, delay, &failure);
                    if let Some(tracked) = tracked {
                        tracked.retrying(plugin, self.sink, event, &failure).await;
                    }
                    if !retries_here {
                        return Ending::Settled(Settle::Retry(delay));
                    }
                    let slept = tokio::select! {
                        _ = tokio::time::sleep(delay) => true,
                        _ = stop.cancelled() => false,
                    };
                    if !slept && redelivers {
                        // Delivered again after this host: its attempt count
                        // goes on from the server's.
                        Stats::bump(&plugin.stats.handed_back);
                        return Ending::Settled(Settle::HandBack);
                    }
                    if !slept {
                        return Ending::Failed(Failure::new(
                            failure.kind,
                            format!(
                                "{} (not retried: the host is shutting down)",
                                failure.message
                            ),
                        ));
                    }
                    event.attempt += 1;
                }
                Outcome::DeadLetter(failure) => {
                    plugin.stats.attempt_failed(failure.kind);
                    return Ending::Failed(failure);
                }
            }
        }
    }

    /// A probe that ends before any attempt frees its place among the
    /// probes, deciding nothing.
    fn release_probe(&self) {
        if self.probe {
            (self.plugin.circuit).record(tokio::time::Instant::now(), Verdict::Neutral, true);
        }
    }

    /// Tell the circuit how the attempt went; whether the event is to be held
    /// instead: a retryable failure of a redelivered (JetStream) event while
    /// the circuit is open does not count against the event.
    fn held_by_circuit(&self, outcome: &Outcome, probe: bool, redelivers: bool) -> bool {
        let circuit = &self.plugin.circuit;
        let verdict = match outcome {
            Outcome::Done(_) => Verdict::Success,
            Outcome::Retry { .. } => Verdict::Failure,
            Outcome::DeadLetter(f) if f.kind.is_retryable() => Verdict::Failure,
            Outcome::DeadLetter(_) => Verdict::Neutral,
        };
        let change = circuit.record(tokio::time::Instant::now(), verdict, probe);
        log_change(self.plugin, change);
        verdict == Verdict::Failure
            && redelivers
            && !circuit.is_closed()
            && !self.stop.is_cancelled()
    }
}

enum Ending {
    Settled(Settle),
    /// To be dead-lettered.
    Failed(Failure),
    /// To be held until the circuit lets it run again.
    Hold,
}

async fn publish<S: Sink>(
    plugin: &Plugin,
    sink: &S,
    event: &Event,
    mut outputs: Vec<Message>,
    (confirm, stop): (bool, &CancellationToken),
    trace: &mut EventTrace<'_>,
    listed: Option<&mut Vec<crate::tracking::Output>>,
) -> Ending {
    stamp_outputs(event, &mut outputs);
    trace.stamp_all(event, &mut outputs);
    if let Some(listed) = listed {
        *listed = tracked::outputs(&outputs);
    }
    let count = outputs.len();
    let started = std::time::Instant::now();
    match super::republish::publish_until_taken(plugin, sink, outputs, confirm, stop).await {
        Ok(()) => {
            if count > 0 {
                plugin.stats.confirm_seconds.observe(started.elapsed());
            }
            Stats::add(&plugin.stats.outputs_published, count as u64);
            Stats::bump(&plugin.stats.succeeded);
            tracing::debug!(
                plugin = plugin.name(), event = %event.id, subject = %event.subject,
                attempt = event.attempt, outputs = count, "done"
            );
            Ending::Settled(Settle::Done)
        }
        Err(e) => {
            Stats::bump(&plugin.stats.outputs_unconfirmed);
            if confirm {
                tracing::warn!(
                    plugin = plugin.name(), event = %event.id, subject = %event.subject,
                    error = %format!("{e:#}"), "outputs not confirmed; the event will be delivered again"
                );
                Ending::Settled(Settle::Unfinished(
                    plugin.manifest.retry.delay_after(event.attempt),
                ))
            } else {
                trace.outputs_unpublished();
                tracing::error!(
                    plugin = plugin.name(), event = %event.id, subject = %event.subject,
                    error = %format!("{e:#}"), "cannot publish outputs"
                );
                Ending::Settled(Settle::Done)
            }
        }
    }
}

/// Count and log an attempt that will be retried after `delay`: one line at
/// info, naming the plugin, the event, the attempt, the kind and what follows.
fn note_retry(plugin: &Plugin, event: &Event, delay: Duration, failure: &Failure) {
    plugin.stats.attempt_failed(failure.kind);
    Stats::bump(&plugin.stats.retried);
    tracing::info!(
        plugin = plugin.name(), event = %event.id, subject = %event.subject,
        attempt = event.attempt, kind = failure.kind.as_str(), error = ?failure.message,
        "attempt failed; retry in {}", humantime::format_duration(delay)
    );
}

/// Run `work` while telling the transport every `every` that the event is
/// still in progress, so a long handler is not redelivered under it.
async fn with_progress<D: Delivery, T>(
    delivery: &D,
    every: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => delivery.progress().await,
        }
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
