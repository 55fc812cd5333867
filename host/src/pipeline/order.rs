//! Order per key: for a subscription with `order_by`, the events that share
//! a key go into the pipeline one at a time, in stream-sequence order, while
//! the events of other keys flow past them up to `max_in_flight`.
//!
//! [`lanes`] sits between the transport and [`serve`](super::serve): the
//! first event of a key goes on at once and its key becomes busy; later
//! events of a busy key wait in the key's lane, in stream order, and the
//! server is told they are in progress (so it does not hand them to another
//! host). When an event is settled, its [`Ordered`] delivery frees the key and
//! the lane's next event goes on. An ordered event retries in-process
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
use crate::config::{DeliveryMode, OrderBy};
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
    free: mpsc::UnboundedSender<Key>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.free.send(std::mem::take(&mut self.key));
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
        let Self { inner, key } = self;
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
#[derive(Default)]
struct Lane<D> {
    waiting: VecDeque<Inbound<D>>,
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
    let orders: Vec<(String, Option<OrderBy>)> = (plugin.manifest.subscribe.iter())
        .map(|s| {
            let ordered = s.mode == DeliveryMode::Jetstream;
            (s.subject.clone(), s.order_by.clone().filter(|_| ordered))
        })
        .collect();
    let stats = plugin.stats.clone();
    let (free, mut freed) = mpsc::unbounded_channel::<Key>();
    // A key is busy while it has an entry: its lane of waiting events.
    let mut busy: HashMap<Key, Lane<D>> = HashMap::new();
    let mut waiting = 0usize;
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    let mut stopped = false;
    loop {
        tokio::select! {
            biased;
            Some(key) = freed.recv() => {
                let next = busy.get_mut(&key).and_then(|lane| lane.waiting.pop_front());
                match next {
                    Some(item) => {
                        waiting -= 1;
                        Stats::drop_gauge(&stats.order_waiting);
                        let busy_key = Busy { key, free: free.clone() };
                        forward(&to, item, Some(busy_key)).await;
                    }
                    None => {
                        busy.remove(&key);
                    }
                }
            }
            _ = stop.cancelled(), if !stopped => {
                stopped = true;
                for lane in busy.values_mut() {
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
                let Some((lane, order)) = orders
                    .iter()
                    .enumerate()
                    .find(|(_, (subject, _))| subject_matches(subject, &item.event.subject))
                    .and_then(|(i, (_, order))| Some((i, order.as_ref()?)))
                else {
                    forward(&to, item, None).await;
                    continue;
                };
                let Some(key) = order.key_of(&item.event).map(str::to_owned) else {
                    if item.refused.is_none() {
                        item.refused = Some(Failure::new(
                            FailureKind::BadInput,
                            format!("the event has no key: order_by = \"{order}\" found none"),
                        ));
                    }
                    forward(&to, item, None).await;
                    continue;
                };
                let key = (lane, key);
                if let Some(lane) = busy.get_mut(&key) {
                    if stopped {
                        hand_back(&stats, item).await;
                        continue;
                    }
                    if let Some(every) = item.delivery.progress_every() {
                        let every = every.max(Duration::from_millis(100));
                        if every < progress.period() {
                            progress = tokio::time::interval(every);
                        }
                    }
                    lane.push(item);
                    waiting += 1;
                    Stats::bump(&stats.order_waits);
                    Stats::bump_gauge(&stats.order_waiting);
                    continue;
                }
                busy.insert(key.clone(), Lane { waiting: VecDeque::new() });
                forward(&to, item, Some(Busy { key, free: free.clone() })).await;
            }
        }
    }
    // The transport stopped reading: what still waits did not start.
    for item in busy.into_values().flat_map(|lane| lane.waiting) {
        Stats::drop_gauge(&stats.order_waiting);
        hand_back(&stats, item).await;
    }
}

async fn forward<D: Delivery>(
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
        item.delivery.settle(Settle::HandBack).await;
    }
}

async fn hand_back<D: Delivery>(stats: &Stats, item: Inbound<D>) {
    Stats::bump(&stats.handed_back);
    item.delivery.settle(Settle::HandBack).await;
}
