//! Batches: the attempts of a subscription with `batch` gathered into one
//! call of the plugin (one instance for many events), and each event's
//! result handed back to the task that owns the event, which settles it as
//! if it had come alone.
//!
//! A gatherer task per such subscription takes a call slot (`max_in_flight`
//! calls per plugin), then the first attempt waiting, then more until
//! `max_events` or until `max_wait_ms` after the first. A call that fails as
//! a whole (trap, timeout, memory limit, a result list of the wrong length)
//! is no event's fault yet: the batch is split in halves and each half runs
//! again, until the event that fails the call runs alone and gets the
//! failure. A batch of n finds one poison event in ⌈log2 n⌉ splits.
//!
//! Stopping: once the host stops, a batch still gathering or waiting for a
//! call slot runs only its core events; the JetStream ones are answered "not
//! started", and their tasks hand them back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{BatchSpec, DeliveryMode, Manifest};
use crate::event::{Event, subject_matches};
use crate::plugin::Stats;
use crate::sandbox::{BatchResult, Executor, RunOutput};

/// One plugin version's batching subscriptions.
pub struct Batches {
    lanes: Vec<Lane>,
    /// Calls of this plugin at once, across its lanes: `max_in_flight`.
    calls: Arc<Semaphore>,
    executor: Arc<Executor>,
    stats: Arc<Stats>,
    plugin: Arc<str>,
}

/// One `[[subscribe]]` entry with `batch`.
struct Lane {
    subject: String,
    jetstream: bool,
    spec: BatchSpec,
    /// The gatherer, started with the first attempt.
    gatherer: OnceLock<mpsc::UnboundedSender<Waiting>>,
}

/// An attempt waiting for its batch.
struct Waiting {
    event: Event,
    /// Whether the transport delivers it again by itself (JetStream): then
    /// it may be handed back instead of run once the host stops.
    redelivers: bool,
    answer: oneshot::Sender<Option<RunOutput>>,
}

impl Batches {
    pub fn new(manifest: &Manifest, executor: Arc<Executor>, stats: Arc<Stats>) -> Self {
        let lanes = manifest
            .subscribe
            .iter()
            .filter_map(|sub| {
                sub.batch.map(|spec| Lane {
                    subject: sub.subject.clone(),
                    jetstream: sub.mode == DeliveryMode::Jetstream,
                    spec,
                    gatherer: OnceLock::new(),
                })
            })
            .collect();
        Self {
            lanes,
            calls: Arc::new(Semaphore::new(manifest.limits.max_in_flight as usize)),
            executor,
            stats,
            plugin: manifest.name.as_str().into(),
        }
    }

    fn lane(&self, event: &Event, redelivers: bool) -> Option<&Lane> {
        self.lanes.iter().find(|lane| {
            lane.jetstream == redelivers && subject_matches(&lane.subject, &event.subject)
        })
    }

    /// Run one attempt of `event` in a batch of its subscription's: its
    /// result, or `None` when it was not started (the host stopped while it
    /// waited, and its transport redelivers it). An event of a subscription
    /// without `batch` runs alone.
    pub async fn attempt(
        &self,
        event: &Event,
        redelivers: bool,
        stop: &CancellationToken,
    ) -> Option<RunOutput> {
        let Some(lane) = self.lane(event, redelivers) else {
            return Some(self.executor.run(event).await);
        };
        let gatherer = lane.gatherer.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let gather = Gatherer {
                waiting: rx,
                spec: lane.spec,
                calls: self.calls.clone(),
                executor: self.executor.clone(),
                stats: self.stats.clone(),
                plugin: self.plugin.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(gather.run());
            tx
        });
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            event: event.clone(),
            redelivers,
            answer,
        };
        if gatherer.send(waiting).is_err() {
            // The gatherer is gone (it never ends while the plugin lives).
            return Some(self.executor.run(event).await);
        }
        answered.await.ok().flatten()
    }
}

/// Run `events` as one batch of `plugin`'s, now, splitting it as the
/// pipeline does after a failure of the whole call: one result per event, in
/// order (`weir test` with several events, `weir bench --batch`).
pub async fn run_together(plugin: &crate::plugin::Plugin, events: Vec<Event>) -> Vec<RunOutput> {
    let batches = &plugin.batches;
    let call = Call {
        executor: batches.executor.clone(),
        stats: batches.stats.clone(),
        plugin: batches.plugin.clone(),
    };
    let (answers, answered): (Vec<_>, Vec<_>) = events.iter().map(|_| oneshot::channel()).unzip();
    call.split(events, answers).await;
    let mut outputs = Vec::with_capacity(answered.len());
    for answer in answered {
        let output = answer.await.ok().flatten().unwrap_or_else(|| RunOutput {
            result: Err(crate::event::Failure::new(
                crate::event::FailureKind::Trap,
                "the batch ended without a result for this event",
            )),
            logs: Vec::new(),
            no_slot: false,
            memory_peak: 0,
        });
        outputs.push(output);
    }
    outputs
}

/// One lane's gatherer: forms batches and starts their calls.
struct Gatherer {
    waiting: mpsc::UnboundedReceiver<Waiting>,
    spec: BatchSpec,
    calls: Arc<Semaphore>,
    executor: Arc<Executor>,
    stats: Arc<Stats>,
    plugin: Arc<str>,
    stop: CancellationToken,
}

impl Gatherer {
    /// Until the plugin version is dropped (its senders with it).
    async fn run(mut self) {
        let max = self.spec.max_events as usize;
        let wait = Duration::from_millis(self.spec.max_wait_ms);
        loop {
            // A call slot first: while every slot is busy, attempts pile up
            // and the next batch leaves full.
            let permit = tokio::select! {
                biased;
                permit = self.calls.clone().acquire_owned() => permit.ok(),
                _ = self.stop.cancelled() => None,
            };
            let Some(first) = self.waiting.recv().await else {
                return;
            };
            let mut batch = vec![first];
            let until = Instant::now() + wait;
            while batch.len() < max {
                tokio::select! {
                    biased;
                    next = self.waiting.recv() => match next {
                        Some(next) => batch.push(next),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                    _ = self.stop.cancelled() => break,
                }
            }
            if self.stop.is_cancelled() {
                batch.retain_mut(|w| !w.redelivers);
                // The answers of those dropped say "not started".
            }
            if batch.is_empty() {
                continue;
            }
            let permit = match permit {
                Some(permit) => permit,
                // Stopping: core events still run, a slot at a time.
                None => match self.calls.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let call = Call {
                executor: self.executor.clone(),
                stats: self.stats.clone(),
                plugin: self.plugin.clone(),
            };
            tokio::spawn(call.run(batch, permit));
        }
    }
}

/// One batch's calls: the first, and the halves' after a failure of the
/// whole.
struct Call {
    executor: Arc<Executor>,
    stats: Arc<Stats>,
    plugin: Arc<str>,
}

impl Call {
    async fn run(self, batch: Vec<Waiting>, _slot: OwnedSemaphorePermit) {
        let (events, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.event, w.answer)).unzip();
        self.split(events, answers).await;
    }

    /// Run `events` in one call; a failure of the whole splits them. The
    /// halves run one after the other, within the batch's one call slot.
    fn split(
        &self,
        mut events: Vec<Event>,
        mut answers: Vec<oneshot::Sender<Option<RunOutput>>>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let run = self.executor.run_batch(&events).await;
            Stats::bump(&self.stats.batches);
            Stats::add(&self.stats.batched_events, events.len() as u64);
            let mut logs = Some(run.logs);
            let mut output = |result| RunOutput {
                result,
                // The call's lines go with its first event.
                logs: logs.take().unwrap_or_default(),
                no_slot: run.no_slot,
                memory_peak: run.memory_peak,
            };
            match run.result {
                BatchResult::Each(each) => {
                    for (answer, result) in answers.into_iter().zip(each) {
                        let _ = answer.send(Some(output(result)));
                    }
                }
                BatchResult::NotRun(failure) => {
                    for answer in answers {
                        let _ = answer.send(Some(output(Err(failure.clone()))));
                    }
                }
                BatchResult::Call(failure) if events.len() <= 1 => {
                    for answer in answers {
                        let _ = answer.send(Some(output(Err(failure.clone()))));
                    }
                }
                BatchResult::Call(failure) => {
                    Stats::bump(&self.stats.batch_splits);
                    tracing::warn!(
                        plugin = %self.plugin, events = events.len(),
                        first = events.first().map_or("", |e| e.id.as_str()),
                        kind = failure.kind.as_str(), error = ?failure.message,
                        "the batch failed as a whole; running its halves apart to find the event that fails it"
                    );
                    let half = events.len() / 2;
                    let right = events.split_off(half);
                    let right_answers = answers.split_off(half);
                    self.split(events, answers).await;
                    self.split(right, right_answers).await;
                }
            }
        })
    }
}
