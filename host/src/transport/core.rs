//! Core NATS subscriptions (at most once): each feeds its plugin's pipeline
//! and sheds, counted and logged, when the pipeline's queue is full.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use async_nats::Client;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Feed, IdSource, NatsDelivery, to_event};
use crate::config::Subscription;
use crate::pipeline::Inbound;
use crate::plugin::Stats;

/// Subscribe to one core subscription of plugin `plugin`.
pub async fn subscribe(
    client: &Client,
    plugin: &str,
    sub: &Subscription,
) -> anyhow::Result<async_nats::Subscriber> {
    let subscriber = match &sub.queue {
        Some(group) => {
            client
                .queue_subscribe(sub.subject.clone(), group.clone())
                .await
        }
        None => client.subscribe(sub.subject.clone()).await,
    }
    .with_context(|| format!("plugin {plugin:?}: cannot subscribe to {:?}", sub.subject))?;
    tracing::info!(plugin, subject = %sub.subject, queue = sub.queue.as_deref().unwrap_or(""), "subscribed");
    Ok(subscriber)
}

fn inbound(msg: async_nats::Message, ids: &IdSource) -> Inbound<NatsDelivery> {
    let (event, refused) = to_event(msg, ids);
    Inbound {
        event,
        first_seen: SystemTime::now(),
        origin: None,
        refused,
        delivery: NatsDelivery::Core,
    }
}

/// Feed a plugin's pipeline from one core subscription until `stop` fires,
/// then drain: unsubscribe and queue what the client had already received.
///
/// The reader never waits on the pipeline: when its queue (`limits.queue`) is
/// full the event is shed — counted and logged — instead of letting async-nats'
/// own buffer overflow, where it would be dropped without a word.
pub async fn read(
    mut subscriber: async_nats::Subscriber,
    feed: Feed,
    queue_limit: u32,
    ids: Arc<IdSource>,
    stop: CancellationToken,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let msg = tokio::select! {
            msg = subscriber.next() => msg,
            _ = stop.cancelled() => break,
        };
        let Some(msg) = msg else { return };
        Stats::bump(&feed.stats.received);
        if let Err(mpsc::error::TrySendError::Full(item)) = feed.try_queue(inbound(msg, &ids)) {
            Stats::bump(&feed.stats.shed);
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    plugin = %feed.plugin, subject = %item.event.subject,
                    shed_total = Stats::get(&feed.stats.shed),
                    "queue full (limits.queue = {queue_limit}): shedding core events; use jetstream mode for no loss"
                );
            }
        }
    }
    if let Err(e) = subscriber.drain().await {
        tracing::warn!(plugin = %feed.plugin, error = %e, "cannot drain the subscription");
        return;
    }
    while let Some(msg) = subscriber.next().await {
        Stats::bump(&feed.stats.received);
        if feed.queue(inbound(msg, &ids)).await.is_err() {
            return;
        }
    }
}
