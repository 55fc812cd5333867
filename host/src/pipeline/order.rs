//! Order per key: for a subscription with `order_by`, the events that share
//! a key go into the pipeline one at a time, in stream-sequence order, while
//! the events of other keys flow past them up to `max_in_flight`.
//!
//! [`lanes`] sits between the transport and [`serve`](super::serve): the
//! first event of a key goes on at once and its key becomes busy; later
//! events of a busy key wait in the key's lane, in stream order, and the
//! server is told they are in progress (so it does not hand them to another
//! host). When an event is settled, its [`Ordered`] delivery frees the key and
//! the lane's next event goes on; an event that is to be delivered again (its
//! outputs or dead letter not confirmed) keeps the key reserved until it is
//! back. An ordered event retries in-process
//! ([`Delivery::retries_here`]) instead of by a delayed redelivery, so no
//! later event of its key overtakes it. An event without a key is
//! dead-lettered as `bad-input`.
//!
//! Memory: the events a lane holds are deliveries the consumer has not had
//! acknowledged, so all lanes together hold at most the consumer's
//! `max_ack_pending` (4 × `max_in_flight`): past that the server delivers
//! nothing more until a key moves on.
//!
//! Stopping: waiting events are handed back at once (they did not start); the
//! running one of each key finishes and is settled.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::serve::{Delivery, Inbound, Settle};
use crate::config::OrderBy;
use crate::event::{Failure, FailureKind, subject_matches};
use crate::plugin::{Plugin, Stats};

/// A delivery in an ordered subscription: settling it frees its key.
pub struct Ordered<D> {
    inner: D,
    /// Frees the key when dropped (after the settle, or if never settled).
    key: Option<Busy>,
}

/// The key an event holds while it is in the pipeline.
struct Busy {
    key: Key,
    /// The event's stream sequence.
    sequence: u64,
    /// Set when the event is to come again (its outputs or dead letter not
    /// confirmed: a delayed redelivery): the key stays reserved for it.
    again: bool,
    free: mpsc::UnboundedSender<Freed>,
}

/// A key let go: free, or still reserved for the event that comes again.
struct Freed {
    key: Key,
    again: Option<u64>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let freed = Freed {
            key: std::mem::take(&mut self.key),
            again: self.again.then_some(self.sequence),
        };
        let _ = self.free.send(freed);
    }
}

/// A lane: the subscription's index and the key.
type Key = (usize, String);

impl<D: Delivery> Delivery for Ordered<D> {
    fn redelivers(&self) -> bool {
        self.inner.redelivers()
    }

    fn retries_here(&self) -> bool {
        self.key.is_some() || self.inner.retries_here()
    }

    fn progress_every(&self) -> Option<Duration> {
        self.inner.progress_every()
    }

    async fn progress(&self) {
        self.inner.progress().await
    }

    async fn settle(self, settle: Settle) {
        let Self { inner, mut key } = self;
        if let (Some(busy), Settle::Unfinished(_) | Settle::Retry(_)) = (key.as_mut(), settle) {
            busy.again = true;
        }
        inner.settle(settle).await;
        drop(key);
    }
}

/// Whether any subscription of `plugin` keeps order per key.
pub fn any_ordered(plugin: &Plugin) -> bool {
    plugin
        .manifest
        .subscribe
        .iter()
        .any(|s| s.order_by.is_some())
}

/// Events waiting behind their key, in stream order.
struct Lane<D> {
    waiting: VecDeque<Inbound<D>>,
    /// The key is reserved for this event, delivered again later (none of
    /// the lane's events runs before it).
    again: Option<u64>,
}

impl<D> Lane<D> {
    /// Insert by stream sequence (usually at the back).
    fn push(&mut self, item: Inbound<D>) {
        let seq = sequence(&item);
        let at = self
            .waiting
            .iter()
            .rposition(|w| sequence(w) <= seq)
            .map_or(0, |i| i + 1);
        self.waiting.insert(at, item);
    }
}

fn sequence<D>(item: &Inbound<D>) -> u64 {
    item.origin.as_ref().map_or(0, |(_, seq)| *seq)
}

/// Take `from` (the transport's events for `plugin`) into `to` (the
/// pipeline's), one event per key at a time for `order_by` subscriptions;
/// events of other subscriptions pass straight through.
pub async fn lanes<D: Delivery>(
    plugin: Arc<Plugin>,
    mut from: mpsc::Receiver<Inbound<D>>,
    to: mpsc::Sender<Inbound<Ordered<D>>>,
    stop: CancellationToken,
) {
    // A JetStream event belongs to the subscription of its stream whose
    // subject it matches (`order_by` is refused at load on core ones).
    let orders: Vec<(String, Option<String>, Option<OrderBy>)> = (plugin.manifest.subscribe)
        .iter()
        .map(|s| (s.subject.clone(), s.stream.clone(), s.order_by.clone()))
        .collect();
    let stats = plugin.stats.clone();
    let (free, mut freed) = mpsc::unbounded_channel::<Freed>();
    // A key is busy while it has an entry: its lane of waiting events.
    let mut busy: HashMap<Key, Lane<D>> = HashMap::new();
    let mut waiting = 0usize;
    let mut progress = ticker(Duration::from_secs(5));
    let mut stopped = false;
    loop {
        tokio::select! {
            biased;
            Some(Freed { key, again }) = freed.recv() => {
                let Some(lane) = busy.get_mut(&key) else { continue };
                if let Some(seq) = again.filter(|_| !stopped) {
                    // Reserved until it comes back; if it already has (a
                    // redelivery that raced the settle), it goes on now.
                    lane.again = Some(seq);
                    let back = lane.waiting.iter().position(|w| sequence(w) == seq);
                    if let Some(item) = back.and_then(|at| lane.waiting.remove(at)) {
                        lane.again = None;
                        waiting -= 1;
                        Stats::drop_gauge(&stats.order_waiting);
                        forward(&stats, &to, item, Some(hold(key, seq, &free))).await;
                    }
                    continue;
                }
                lane.again = None;
                match lane.waiting.pop_front() {
                    Some(item) => {
                        waiting -= 1;
                        Stats::drop_gauge(&stats.order_waiting);
                        let seq = sequence(&item);
                        forward(&stats, &to, item, Some(hold(key, seq, &free))).await;
                    }
                    None => {
                        busy.remove(&key);
                    }
                }
            }
            _ = stop.cancelled(), if !stopped => {
                stopped = true;
                for lane in busy.values_mut() {
                    lane.again = None;
                    for item in lane.waiting.drain(..) {
                        hand_back(&stats, item).await;
                    }
                }
                Stats::add_gauge(&stats.order_waiting, -(waiting as i64));
                waiting = 0;
            }
            _ = progress.tick(), if waiting > 0 => {
                for item in busy.values().flat_map(|lane| lane.waiting.iter()) {
                    item.delivery.progress().await;
                }
            }
            item = from.recv() => {
                let Some(mut item) = item else { break };
                let stream = item.origin.as_ref().map(|(stream, _)| stream.as_str());
                let Some((lane, order)) = orders
                    .iter()
                    .enumerate()
                    .find(|(_, (subject, of, _))| {
                        subject_matches(subject, &item.event.subject)
                            && (of.is_none() || of.as_deref() == stream)
                    })
                    .and_then(|(i, (_, _, order))| Some((i, order.as_ref()?)))
                else {
                    forward(&stats, &to, item, None).await;
                    continue;
                };
                let Some(key) = order.key_of(&item.event).map(str::to_owned) else {
                    if item.refused.is_none() {
                        item.refused = Some(Failure::new(
                            FailureKind::BadInput,
                            format!("the event has no key: order_by = \"{order}\" found none"),
                        ));
                    }
                    forward(&stats, &to, item, None).await;
                    continue;
                };
                let key = (lane, key);
                let seq = sequence(&item);
                if let Some(lane) = busy.get_mut(&key) {
                    if stopped {
                        hand_back(&stats, item).await;
                        continue;
                    }
                    if lane.again == Some(seq) {
                        // The event the key was reserved for, back.
                        lane.again = None;
                        forward(&stats, &to, item, Some(hold(key, seq, &free))).await;
                        continue;
                    }
                    if let Some(every) = item.delivery.progress_every() {
                        let every = every.max(Duration::from_millis(100));
                        if every < progress.period() {
                            progress = ticker(every);
                        }
                    }
                    if waiting == 0 {
                        progress.reset();
                    }
                    lane.push(item);
                    waiting += 1;
                    Stats::bump(&stats.order_waits);
                    Stats::bump_gauge(&stats.order_waiting);
                    continue;
                }
                busy.insert(key.clone(), Lane { waiting: VecDeque::new(), again: None });
                forward(&stats, &to, item, Some(hold(key, seq, &free))).await;
            }
        }
    }
    // The transport stopped reading: what still waits did not start.
    for item in busy.into_values().flat_map(|lane| lane.waiting) {
        Stats::drop_gauge(&stats.order_waiting);
        hand_back(&stats, item).await;
    }
}

/// A ticker that skips the ticks it missed (while nothing waited).
fn ticker(every: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

fn hold(key: Key, sequence: u64, free: &mpsc::UnboundedSender<Freed>) -> Busy {
    Busy {
        key,
        sequence,
        again: false,
        free: free.clone(),
    }
}

async fn forward<D: Delivery>(
    stats: &Stats,
    to: &mpsc::Sender<Inbound<Ordered<D>>>,
    item: Inbound<D>,
    key: Option<Busy>,
) {
    let Inbound {
        event,
        first_seen,
        origin,
        refused,
        delivery,
    } = item;
    let item = Inbound {
        event,
        first_seen,
        origin,
        refused,
        delivery: Ordered {
            inner: delivery,
            key,
        },
    };
    if let Err(mpsc::error::SendError(item)) = to.send(item).await {
        // The pipeline is gone (shutdown): not started.
        Stats::drop_gauge(&stats.queued);
        Stats::bump(&stats.handed_back);
        item.delivery.settle(Settle::HandBack).await;
    }
}

/// Hand back an event the pipeline never took: it leaves the queue here.
async fn hand_back<D: Delivery>(stats: &Stats, item: Inbound<D>) {
    Stats::drop_gauge(&stats.queued);
    Stats::bump(&stats.handed_back);
    item.delivery.settle(Settle::HandBack).await;
}
