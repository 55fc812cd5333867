//! JetStream delivery: a durable pull consumer per (plugin, subscription),
//! events with their delivery count, and settling each message (ack, nak with
//! a delay, term) once the pipeline has decided.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{StreamSpec, Subscription};
use crate::event::Event;
use crate::pipeline::{Plugin, Settle};

/// A JetStream message handed to the dispatcher with its event.
pub struct Delivery {
    pub event: Event,
    /// When the server first stored the message: `Weir-First-Seen`.
    pub first_seen: SystemTime,
    pub message: jetstream::Message,
}

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
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .with_context(|| format!("cannot create stream {:?}", spec.name))?;
        tracing::info!(stream = %spec.name, subjects = ?spec.subjects, "stream ready");
    }
    Ok(())
}

/// Bind (create or update) the durable pull consumer of one subscription.
pub async fn bind_consumer(
    js: &jetstream::Context,
    plugin: &Plugin,
    sub: &Subscription,
) -> anyhow::Result<PullConsumer> {
    let Some(stream_name) = sub.stream.as_deref() else {
        bail!("subscription to {:?} names no stream", sub.subject);
    };
    let stream = match js.get_stream(stream_name).await {
        Ok(stream) => stream,
        Err(e) => bail!(
            "stream {stream_name:?} for {:?}: {e} (create it, declare it under [[streams]] in weir.toml, or use `weir up --dev`)",
            sub.subject
        ),
    };
    let limits = &plugin.manifest.limits;
    let durable = durable_name(plugin.name(), sub);
    let config = jetstream::consumer::pull::Config {
        durable_name: Some(durable.clone()),
        description: Some(format!("weir plugin {}", plugin.name())),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ack_wait(limits.timeout_ms),
        // weir dead-letters on the last allowed attempt itself; the server's
        // cap only ends a message whose host kept dying mid-attempt.
        max_deliver: i64::from(plugin.manifest.retry.max_attempts) + 2,
        // Room for several hosts to work at full speed on one durable.
        max_ack_pending: i64::from(limits.max_in_flight) * 4,
        filter_subject: sub.subject.clone(),
        ..Default::default()
    };
    let consumer = match stream
        .get_consumer::<jetstream::consumer::pull::Config>(&durable)
        .await
    {
        Ok(existing) if existing.cached_info().config.filter_subject == sub.subject => {
            // Bring limits in line with the manifest (they may have changed).
            match stream.update_consumer(config).await {
                Ok(updated) => updated,
                Err(e) => {
                    tracing::warn!(plugin = plugin.name(), consumer = %durable, error = %e, "cannot update the consumer; using it as it is");
                    existing
                }
            }
        }
        Ok(_) => bail!(
            "consumer {durable:?} on stream {stream_name:?} exists with another filter subject"
        ),
        Err(_) => stream
            .create_consumer(config)
            .await
            .with_context(|| format!("cannot create consumer {durable:?} on {stream_name:?}"))?,
    };
    tracing::info!(plugin = plugin.name(), stream = stream_name, consumer = %durable, subject = %sub.subject, "bound to JetStream");
    Ok(consumer)
}

/// Turn a JetStream message into a delivery: the event id is
/// `<stream>:<sequence>` (stable across redeliveries and hosts), the attempt
/// the server's delivery count (so attempts survive a host restart).
pub fn to_delivery(message: jetstream::Message) -> anyhow::Result<Delivery> {
    let (id, attempt, first_seen) = {
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("not a JetStream delivery: {e}"))?;
        (
            format!("{}:{}", info.stream, info.stream_sequence),
            u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            SystemTime::from(info.published),
        )
    };
    let headers = message
        .headers
        .as_ref()
        .map(super::from_header_map)
        .unwrap_or_default();
    let event = Event {
        id,
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        headers,
        reply_to: None,
        attempt,
        principal: None,
    };
    Ok(Delivery {
        event,
        first_seen,
        message,
    })
}

/// Pull from `consumer` into the plugin's queue until `stop` fires.
///
/// The pull stream is kept through missed heartbeats and failed pull
/// requests: async-nats re-issues its pulls itself after a reconnect, and
/// dropping the stream would strand the messages of its outstanding pulls
/// until `ack_wait` (a stall of seconds under load). Only when the consumer is
/// gone (deleted, or the server lost it) is it bound again. Only `stop` ends
/// this.
pub async fn read(
    js: jetstream::Context,
    sub: Subscription,
    mut consumer: PullConsumer,
    plugin: Arc<Plugin>,
    queue: mpsc::Sender<crate::host::Job>,
    stop: CancellationToken,
) {
    use jetstream::consumer::pull::MessagesErrorKind as Kind;
    let batch = plugin.manifest.limits.max_in_flight as usize;
    let pause = || async {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => true,
            _ = stop.cancelled() => false,
        }
    };
    while !stop.is_cancelled() {
        let opened = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match opened {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(plugin = plugin.name(), error = %e, "cannot pull from JetStream; retrying in 1 s");
                if !pause().await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = stop.cancelled() => return,
            };
            match next {
                Some(Ok(message)) => {
                    plugin
                        .stats
                        .received
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match to_delivery(message) {
                        Ok(delivery) => {
                            let job = crate::host::Job::JetStream(Box::new(delivery));
                            if queue.send(job).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!(plugin = plugin.name(), error = %e, "skipping a message")
                        }
                    }
                }
                Some(Err(e)) if matches!(e.kind(), Kind::MissingHeartbeat | Kind::Pull) => {
                    tracing::debug!(plugin = plugin.name(), error = %e, "JetStream pull hiccup; the stream recovers by itself");
                }
                Some(Err(e)) => {
                    tracing::warn!(plugin = plugin.name(), error = %e, "JetStream pull ended; binding the consumer again");
                    break;
                }
                None => break,
            }
        }
        drop(messages);
        loop {
            match bind_consumer(&js, &plugin, &sub).await {
                Ok(bound) => {
                    consumer = bound;
                    break;
                }
                Err(e) => {
                    tracing::warn!(plugin = plugin.name(), error = %format!("{e:#}"), "cannot bind the consumer; retrying in 1 s");
                    if !pause().await {
                        return;
                    }
                }
            }
        }
    }
}

/// Settle a message as the pipeline decided.
pub async fn settle(message: &jetstream::Message, settle: Settle, plugin: &str, event_id: &str) {
    let kind = match settle {
        Settle::Ack => AckKind::Ack,
        Settle::Nak(delay) => AckKind::Nak(Some(delay)),
        Settle::NakNow => AckKind::Nak(None),
        Settle::Term => AckKind::Term,
        // Redelivered by the server after ack_wait.
        Settle::Leave => return,
    };
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(plugin, event = event_id, error = %e, "cannot settle the message; the server will redeliver it");
    }
}

/// Run `work` while telling the server every `every` that the message is
/// still in progress, so a long handler is not redelivered under it.
pub async fn with_progress<T>(
    message: &jetstream::Message,
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}
