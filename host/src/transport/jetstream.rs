//! JetStream delivery (at least once): a durable pull consumer per (plugin,
//! subscription), a reader that feeds the plugin's pipeline, hands back on
//! stop what it has not started, and renews a pull that stalls; and
//! [`JsDelivery`], which maps the pipeline's [`Settle`] onto ack, nak with a
//! delay, and term.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt as _;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Feed, NatsDelivery, watchdog};
use crate::config::{Manifest, StreamSpec, Subscription};
use crate::event::Event;
use crate::pipeline::{Delivery as _, Inbound, Settle};
use crate::plugin::Stats;

/// The durable name of a subscription: `weir-<plugin>-<8 hex of the subject's
/// SHA-256>`, stable across restarts and hosts, so every host running the
/// plugin shares it.
pub fn durable_name(plugin: &str, sub: &Subscription) -> String {
    if let Some(name) = &sub.durable {
        return name.clone();
    }
    let digest = Sha256::digest(sub.subject.as_bytes());
    format!("weir-{plugin}-{}", hex::encode(&digest[..4]))
}

/// How long the server waits for an ack before redelivering: generous next to
/// the handler's timeout (the handler also sends in-progress while it runs).
pub fn ack_wait(timeout_ms: u64) -> Duration {
    Duration::from_millis((timeout_ms.saturating_mul(3)).max(10_000))
}

/// Create the streams weir.toml declares (or `--dev` asks for), leaving
/// existing ones as they are.
pub async fn ensure_streams(js: &jetstream::Context, specs: &[StreamSpec]) -> anyhow::Result<()> {
    for spec in specs {
        let config = jetstream::stream::Config {
            name: spec.name.clone(),
            subjects: spec.subjects.clone(),
            storage: if spec.memory {
                jetstream::stream::StorageType::Memory
            } else {
                jetstream::stream::StorageType::File
            },
            duplicate_window: Duration::from_millis(spec.duplicate_window_ms),
            num_replicas: spec.replicas,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .with_context(|| format!("cannot create stream {:?}", spec.name))?;
        tracing::info!(stream = %spec.name, subjects = ?spec.subjects, "stream ready");
    }
    Ok(())
}

/// What a subscription's durable consumer must look like.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub plugin: String,
    pub stream: String,
    pub config: jetstream::consumer::pull::Config,
}

impl ConsumerSpec {
    pub fn new(manifest: &Manifest, sub: &Subscription) -> anyhow::Result<Self> {
        let Some(stream) = sub.stream.clone() else {
            bail!("subscription to {:?} names no stream", sub.subject);
        };
        let limits = &manifest.limits;
        let durable = durable_name(&manifest.name, sub);
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(durable),
            description: Some(format!("weir plugin {}", manifest.name)),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: ack_wait(limits.timeout_ms),
            // Unlimited: weir counts the attempts from the delivery count and
            // dead-letters after the last one. A server-side cap would end an
            // event silently when its dead letter could not be stored.
            max_deliver: -1,
            // Room for several hosts to work at full speed on one durable.
            max_ack_pending: i64::from(manifest.events_in_flight()) * 4,
            filter_subject: sub.subject.clone(),
            ..Default::default()
        };
        let config = match sub.order_by {
            // One host at a time takes an ordered subscription's events: the
            // server pins the consumer to the first that pulls, until it has
            // not pulled for about an ack_wait (it stopped or died).
            Some(_) => jetstream::consumer::pull::Config {
                priority_policy: jetstream::consumer::PriorityPolicy::PinnedClient,
                priority_groups: vec![ORDER_GROUP.to_owned()],
                priority_timeout: config.ack_wait.max(Duration::from_secs(10)),
                ..config
            },
            None => config,
        };
        Ok(Self {
            plugin: manifest.name.clone(),
            stream,
            config,
        })
    }

    pub fn durable(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }

    /// The priority group this consumer's pulls name, if it has one.
    fn group(&self) -> Option<&str> {
        self.config.priority_groups.first().map(String::as_str)
    }
}

/// The priority group of an ordered subscription's consumer (`order_by`):
/// with `pinned_client`, at most one host pulls from it at a time, so no two
/// hosts run events of one key at once.
pub const ORDER_GROUP: &str = "weir-order";

/// Bind (create or update) the durable pull consumer of one subscription.
pub async fn bind_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> anyhow::Result<PullConsumer> {
    let (plugin, stream_name, durable) = (&spec.plugin, &spec.stream, spec.durable());
    let subject = &spec.config.filter_subject;
    let stream = match js.get_stream(stream_name).await {
        Ok(stream) => stream,
        Err(e) => bail!(
            "stream {stream_name:?} for {subject:?}: {e} (create it, declare it under [[streams]] in weir.toml, or use `weir up --dev`)"
        ),
    };
    let consumer = match stream
        .get_consumer::<jetstream::consumer::pull::Config>(durable)
        .await
    {
        Ok(existing) if &existing.cached_info().config.filter_subject == subject => {
            // Bring limits in line with the manifest (they may have changed),
            // keeping a pause (an open circuit, `weir pause`): an update
            // without one would resume the consumer for every host.
            let mut config = spec.config.clone();
            config.pause_until = existing.cached_info().config.pause_until;
            // Where it started is fixed for its life; asking for another
            // start would fail the update.
            config.deliver_policy = existing.cached_info().config.deliver_policy;
            match stream.update_consumer(config).await {
                Ok(updated) => updated,
                Err(e) => {
                    tracing::warn!(plugin, consumer = durable, error = %e, "cannot update the consumer; using it as it is");
                    existing
                }
            }
        }
        Ok(_) => bail!(
            "consumer {durable:?} on stream {stream_name:?} exists with another filter subject"
        ),
        Err(_) => stream
            .create_consumer(spec.config.clone())
            .await
            .with_context(|| format!("cannot create consumer {durable:?} on {stream_name:?}"))?,
    };
    tracing::info!(plugin, stream = %stream_name, consumer = durable, subject = %subject, "bound to JetStream");
    Ok(consumer)
}

/// A JetStream message in the pipeline.
pub struct JsDelivery {
    message: jetstream::Message,
    /// How often the pipeline says the event is in progress (+WPI).
    pub(super) progress_every: Duration,
    hand_backs: HandBacks,
}

/// Messages handed back while their reader still has pull requests
/// outstanding. A nak then would send the message straight back to this
/// host's own pull (costing it a delivery, an attempt, each time), so they
/// wait until the reader's pulls are answered and are nak'd together.
#[derive(Clone)]
pub struct HandBacks(Arc<Mutex<Option<Vec<jetstream::Message>>>>);

impl HandBacks {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Some(Vec::new()))))
    }

    /// Keep `message` for later, or nak it now once the reader is done.
    async fn hand_back(&self, message: jetstream::Message) {
        let message = match self.0.lock() {
            Ok(mut held) => match held.as_mut() {
                Some(held) => {
                    tracing::debug!(subject = %message.subject, "hand-back held until the pulls are answered");
                    held.push(message);
                    return;
                }
                None => message,
            },
            Err(_) => message,
        };
        nak_now(&message).await;
    }

    /// Nak what was kept, in stream order (the server redelivers in nak
    /// order, so an ordered subscription's next host gets each key's events
    /// in sequence); from now on hand-backs are nak'd at once.
    async fn release(&self, plugin: &str) {
        let mut held = self
            .0
            .lock()
            .ok()
            .and_then(|mut held| held.take())
            .unwrap_or_default();
        held.sort_by_key(|m| m.info().map_or(0, |info| info.stream_sequence));
        for message in &held {
            nak_now(message).await;
        }
        if !held.is_empty() {
            tracing::info!(
                plugin,
                handed_back = held.len(),
                "handed back deliveries that had not started"
            );
        }
    }
}

async fn nak_now(message: &jetstream::Message) {
    tracing::debug!(subject = %message.subject, "handing back");
    if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
        tracing::warn!(subject = %message.subject, error = %e, "cannot hand a message back; the server will deliver it again after ack_wait");
    }
}

impl JsDelivery {
    pub(super) async fn progress(&self) {
        let _ = self.message.ack_with(AckKind::Progress).await;
    }

    /// Settle the message as the pipeline decided.
    pub(super) async fn settle(self: Box<Self>, settle: Settle) {
        let kind = match settle {
            Settle::Done => AckKind::Ack,
            Settle::Retry(delay) | Settle::Unfinished(delay) => AckKind::Nak(Some(delay)),
            Settle::HandBack => return self.hand_backs.hand_back(self.message).await,
            Settle::DeadLettered => AckKind::Term,
        };
        if let Err(e) = self.message.ack_with(kind).await {
            tracing::warn!(subject = %self.message.subject, error = %e, "cannot settle the message; the server will deliver it again after ack_wait");
        }
    }
}

/// Turn a JetStream message into an event for the pipeline: the event id is
/// `<stream>:<sequence>` (stable across redeliveries and hosts), the attempt
/// the server's delivery count (so attempts survive a host restart). A
/// malformed header block refuses it (dead-lettered, then term'd).
fn to_inbound(
    message: jetstream::Message,
    progress_every: Duration,
    hand_backs: &HandBacks,
) -> anyhow::Result<Inbound<NatsDelivery>> {
    let (stream, sequence, attempt, first_seen) = {
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("not a JetStream delivery: {e}"))?;
        (
            info.stream.to_owned(),
            info.stream_sequence,
            u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            SystemTime::from(info.published),
        )
    };
    let refused = super::refusal(&message);
    let headers = message
        .headers
        .as_ref()
        .map(super::from_header_map)
        .unwrap_or_default();
    let event = Event {
        id: format!("{stream}:{sequence}"),
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        headers,
        reply_to: None,
        attempt,
        principal: None,
    };
    Ok(Inbound {
        event,
        first_seen,
        origin: Some((stream, sequence)),
        refused,
        delivery: NatsDelivery::JetStream(Box::new(JsDelivery {
            message,
            progress_every,
            hand_backs: hand_backs.clone(),
        })),
    })
}

/// How the reader pulls.
#[derive(Debug, Clone, Copy)]
pub struct PullSettings {
    /// Messages per pull request: the events the plugin takes at once
    /// (`max_in_flight`, times the largest `batch.max_events`).
    pub batch: usize,
    /// How long a pull request waits on the server. Short, because a stopping
    /// host waits for its outstanding pulls to be answered (see [`read`]).
    pub expires: Duration,
    pub heartbeat: Duration,
    /// How often the pipeline sends +WPI for a running event.
    pub progress_every: Duration,
}

impl PullSettings {
    /// Pull requests expire within half the shutdown grace (1 to 5 s), with
    /// the server's idle heartbeat at 2/5 of that.
    pub fn new(manifest: &Manifest, grace: Duration) -> Self {
        let expires = (grace / 2).clamp(Duration::from_secs(1), Duration::from_secs(5));
        Self {
            batch: manifest.events_in_flight() as usize,
            expires,
            heartbeat: expires * 2 / 5,
            progress_every: ack_wait(manifest.limits.timeout_ms) / 3,
        }
    }
}

/// Pull from `consumer` into the plugin's pipeline until `stop` fires, then
/// hand back everything received and not started. The reader lets go of the
/// pipeline's queue as soon as it stops, before the outstanding pulls are
/// answered: the pipeline can end (and a swap report) without waiting for them.
///
/// - The pull stream is kept through missed heartbeats and failed pull
///   requests (async-nats re-issues its pulls after a reconnect); only when
///   the consumer is gone is it bound again.
/// - On stop the stream stops pulling and is read to its end: the messages of
///   the outstanding pull requests are nak'd at once, so none waits for
///   `ack_wait` on the server (dropping the stream would drop them).
/// - A watchdog: when nothing has arrived for two heartbeats while the server
///   holds messages for the consumer and no pull request from anyone, the pull
///   has stalled. That is logged, counted and the pull renewed.
pub async fn read(
    js: jetstream::Context,
    spec: ConsumerSpec,
    consumer: PullConsumer,
    feed: Feed,
    pull: PullSettings,
    stop: CancellationToken,
) {
    let hand_backs = HandBacks::new();
    let pulling = pull_until_stopped(js, spec, consumer, &feed, pull, &hand_backs, stop).await;
    let Feed {
        plugin,
        stats,
        queue,
    } = feed;
    drop(queue);
    if let Some(mut messages) = pulling {
        drain(&mut messages, &stats, &hand_backs).await;
    }
    hand_backs.release(&plugin).await;
}

/// Pull until `stop`; the stream still to drain, when it stopped mid-stream.
async fn pull_until_stopped(
    js: jetstream::Context,
    spec: ConsumerSpec,
    mut consumer: PullConsumer,
    feed: &Feed,
    pull: PullSettings,
    hand_backs: &HandBacks,
    stop: CancellationToken,
) -> Option<jetstream::consumer::pull::Stream> {
    use jetstream::consumer::pull::MessagesErrorKind as Kind;
    let pause = || async {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => true,
            _ = stop.cancelled() => false,
        }
    };
    let quiet_limit = pull.heartbeat * 2;
    'bind: while !stop.is_cancelled() {
        let mut stream = consumer
            .stream()
            .max_messages_per_batch(pull.batch)
            .heartbeat(pull.heartbeat)
            .expires(pull.expires);
        if let Some(group) = spec.group() {
            stream = stream.group(group);
        }
        let opened = stream.messages().await;
        let mut messages = match opened {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(plugin = %feed.plugin, error = %e, "cannot pull from JetStream; retrying in 1 s");
                if !pause().await {
                    return None;
                }
                continue;
            }
        };
        let mut last_arrival = Instant::now();
        // The watchdog's question to the server runs beside the reading: a
        // cluster electing the consumer's leader answers it late or never,
        // and messages must flow the moment the new leader sends them.
        let mut check: Option<(Instant, watchdog::Check)> = None;
        loop {
            let quiet = tokio::time::sleep_until((last_arrival + quiet_limit).into());
            let idle = check.is_none();
            let checking = async {
                match check.as_mut() {
                    Some((_, answer)) => answer.await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                biased;
                next = messages.next() => next,
                _ = stop.cancelled() => return Some(messages),
                stalled = checking => {
                    let asked_at = check.take().map(|(at, _)| at);
                    // Stalled, and still nothing arrived since asking: the
                    // stream is buffering nothing and the server holds no
                    // pull: open anew.
                    if let Some((pending, ack_pending)) = stalled
                        && asked_at.is_some_and(|at| last_arrival <= at)
                    {
                        Stats::bump(&feed.stats.stalls);
                        tracing::warn!(
                            plugin = %feed.plugin, stream = %spec.stream, consumer = spec.durable(),
                            pending, ack_pending,
                            "JetStream pull stalled: the server holds messages and no pull request; renewing the pull"
                        );
                        continue 'bind;
                    }
                    continue;
                }
                _ = quiet, if idle => {
                    last_arrival = Instant::now();
                    let ask = watchdog::stalled(consumer.clone(), feed.plugin.clone(), quiet_limit);
                    check = Some((last_arrival, Box::pin(ask)));
                    continue;
                }
            };
            match next {
                Some(Ok(message)) => {
                    // Only a message is progress. A stalled stream yields a
                    // missed-heartbeat error every two heartbeats (no pull,
                    // no heartbeats), just as the watchdog's spell ends:
                    // counting those would keep the watchdog from ever firing.
                    last_arrival = Instant::now();
                    count_delivery(&feed.stats, &message);
                    let inbound = match to_inbound(message, pull.progress_every, hand_backs) {
                        Ok(inbound) => inbound,
                        Err(e) => {
                            tracing::error!(plugin = %feed.plugin, error = %e, "skipping a message");
                            continue;
                        }
                    };
                    // Wait for room in the pipeline's queue, or for stop: the
                    // message is then handed back, not dropped.
                    let room = tokio::select! {
                        room = feed.queue.reserve() => room.ok(),
                        _ = stop.cancelled() => None,
                    };
                    match room {
                        Some(room) => {
                            // Up before the send: the pipeline takes it down.
                            Stats::bump_gauge(&feed.stats.queued);
                            room.send(inbound);
                            last_arrival = Instant::now();
                        }
                        None => {
                            Stats::bump(&feed.stats.handed_back);
                            inbound.delivery.settle(Settle::HandBack).await;
                            return Some(messages);
                        }
                    }
                }
                Some(Err(e)) if matches!(e.kind(), Kind::MissingHeartbeat | Kind::Pull) => {
                    tracing::debug!(plugin = %feed.plugin, error = %e, "JetStream pull hiccup; the stream recovers by itself");
                }
                Some(Err(e)) => {
                    tracing::warn!(plugin = %feed.plugin, error = %e, "JetStream pull ended; binding the consumer again");
                    break;
                }
                None => break,
            }
        }
        drop(messages);
        loop {
            match bind_consumer(&js, &spec).await {
                Ok(bound) => {
                    consumer = bound;
                    break;
                }
                Err(e) => {
                    tracing::warn!(plugin = %feed.plugin, error = %format!("{e:#}"), "cannot bind the consumer; retrying in 1 s");
                    if !pause().await {
                        return None;
                    }
                }
            }
        }
    }
    None
}

/// Count a delivery as a new event (`received`) the first time the server
/// delivers it, else as `redelivered`: a retry is not a new event.
fn count_delivery(stats: &Stats, message: &jetstream::Message) {
    match message.info() {
        Ok(info) if info.delivered > 1 => Stats::bump(&stats.redelivered),
        _ => Stats::bump(&stats.received),
    }
}

/// Stop pulling and keep, to hand back, what the outstanding pull requests
/// still bring, until they are all answered (at most `expires` and a second).
async fn drain(
    messages: &mut jetstream::consumer::pull::Stream,
    stats: &Stats,
    hand_backs: &HandBacks,
) {
    messages.stop_pulling();
    while let Some(next) = messages.next().await {
        if let Ok(message) = next {
            count_delivery(stats, &message);
            Stats::bump(&stats.handed_back);
            hand_backs.hand_back(message).await;
        }
    }
}
