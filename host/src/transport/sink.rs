//! [`NatsSink`]: publishes a plugin's outputs (confirmed by the server when
//! asked: stored for subjects a stream captures, a round trip otherwise) and
//! stores dead letters in the dead-letter stream, saying so when it cannot.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use async_nats::Client;
use async_nats::jetstream as js;

use super::status_kv::StatusBucket;
use super::streams::StreamIndex;
use super::{sync_with_server, to_header_map};
use crate::config::DeadLetterConfig;
use crate::event::Message;
use crate::pipeline::{Sink, Unavailable};

/// Publishes through one NATS connection.
pub struct NatsSink {
    client: Client,
    /// Set when the server has JetStream (for this account).
    jetstream: Option<js::Context>,
    /// The dead-letter stream, created when missing.
    dead_letters: js::stream::Config,
    /// Whether the dead-letter stream is known to exist; while not, each dead
    /// letter tries to create it first.
    dead_letters_ready: AtomicBool,
    /// Which output subjects a stream captures.
    streams: StreamIndex,
    /// The status bucket of tracked events, opened on the first one.
    status: tokio::sync::OnceCell<StatusBucket>,
}

impl NatsSink {
    /// Ask whether the server has JetStream and make sure the dead-letter
    /// stream exists (file storage, capturing `<prefix>.>`). When it cannot be
    /// made, the host still starts: the reason is logged, each dead letter
    /// tries again, and until one is stored the events stay in their streams.
    pub async fn new(client: Client, dead_letter: &DeadLetterConfig) -> Self {
        let jetstream = match has_jetstream(&client).await {
            Ok(()) => Some(js::new(client.clone())),
            Err(e) => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "no JetStream: jetstream subscriptions are refused, and dead letters cannot be stored"
                );
                None
            }
        };
        let sink = Self {
            streams: StreamIndex::new(&client).await,
            client,
            jetstream,
            dead_letters: js::stream::Config {
                name: dead_letter.stream.clone(),
                subjects: vec![format!("{}.>", dead_letter.subject_prefix)],
                storage: js::stream::StorageType::File,
                allow_direct: true,
                description: Some("weir dead letters".into()),
                num_replicas: dead_letter.replicas,
                ..Default::default()
            },
            dead_letters_ready: AtomicBool::new(false),
            status: tokio::sync::OnceCell::new(),
        };
        if sink.jetstream.is_some()
            && let Err(e) = sink.ensure_dead_letter_stream().await
        {
            tracing::error!(
                stream = %sink.dead_letters.name, error = %format!("{e:#}"),
                "no dead-letter stream yet: events to dead-letter stay in their streams until it can be made"
            );
        }
        sink
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The JetStream context, when the server has JetStream.
    pub fn jetstream(&self) -> Option<&js::Context> {
        self.jetstream.as_ref()
    }

    async fn ensure_dead_letter_stream(&self) -> anyhow::Result<()> {
        let Some(js) = &self.jetstream else {
            bail!("the NATS server has no JetStream");
        };
        js.get_or_create_stream(self.dead_letters.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot create the dead-letter stream {:?} on {:?}",
                    self.dead_letters.name, self.dead_letters.subjects
                )
            })?;
        self.dead_letters_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a stream captures `subject` (from the cached list of streams).
    pub async fn captures(&self, subject: &str) -> anyhow::Result<bool> {
        let Some(js) = &self.jetstream else {
            return Ok(false);
        };
        self.streams.captures(js, subject).await
    }

    /// Store one-shot definitions in the schedules stream, confirmed
    /// (pipelined as outputs are).
    async fn publish_delayed(&self, later: Vec<crate::schedule::Definition>) -> anyhow::Result<()> {
        let Some(js) = &self.jetstream else {
            bail!(
                "a delayed output (Weir-Deliver-In/At) needs JetStream, which the NATS server has not"
            );
        };
        let mut acks = Vec::new();
        for def in later {
            let msg = def.to_message();
            let headers = to_header_map(&msg.headers)?;
            let ack = js
                .publish_with_headers(msg.subject, headers, msg.payload)
                .await
                .map_err(classify)
                .with_context(|| format!("cannot schedule the output to {:?}", def.target))?;
            acks.push((def.target, ack));
        }
        for (target, ack) in acks {
            let ack = ack.await.map_err(classify).with_context(|| {
                format!(
                    "the delayed output to {target:?} was not stored (is there a {} stream?)",
                    crate::schedule::STREAM
                )
            })?;
            if ack.stream != crate::schedule::STREAM {
                bail!(
                    "the delayed output to {target:?} went to stream {:?}, not {}",
                    ack.stream,
                    crate::schedule::STREAM
                );
            }
        }
        Ok(())
    }

    async fn publish_core(&self, msg: Message) -> anyhow::Result<()> {
        let headers = to_header_map(&msg.headers)?;
        let subject = msg.subject;
        self.client
            .publish_with_headers(subject.clone(), headers, msg.payload)
            .await
            .with_context(|| format!("cannot publish to {subject:?}"))
    }
}

impl Sink for NatsSink {
    async fn publish(&self, outputs: Vec<Message>, confirm: bool) -> anyhow::Result<()> {
        // Outputs with Weir-Deliver-In/At go out as one-shot schedules.
        let (outputs, later) = crate::schedule::delay::split(outputs, chrono::Utc::now)?;
        if !later.is_empty() {
            self.publish_delayed(later).await?;
        }
        let js = match &self.jetstream {
            Some(js) if confirm => js,
            _ => {
                for msg in outputs {
                    self.publish_core(msg).await?;
                }
                return Ok(());
            }
        };
        // Pipelined: every output is sent, then every confirmation awaited.
        let mut acks = Vec::new();
        let mut unconfirmed = false;
        for msg in outputs {
            let captured = (self.streams.captures(js, &msg.subject).await).context(Unavailable)?;
            if captured {
                let headers = to_header_map(&msg.headers)?;
                let ack = js
                    .publish_with_headers(msg.subject.clone(), headers, msg.payload)
                    .await
                    .map_err(classify)
                    .with_context(|| format!("cannot publish to {:?}", msg.subject))?;
                acks.push((msg.subject, ack));
            } else {
                self.publish_core(msg).await?;
                unconfirmed = true;
            }
        }
        for (subject, ack) in acks {
            ack.await
                .map_err(classify)
                .with_context(|| format!("no ack from JetStream for {subject:?}"))?;
        }
        if unconfirmed {
            sync_with_server(&self.client).await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, msg: Message) -> anyhow::Result<()> {
        let Some(js) = &self.jetstream else {
            // Someone may listen on core NATS; it is still not stored.
            let subject = msg.subject.clone();
            self.publish_core(msg).await.ok();
            bail!("the NATS server has no JetStream: dead letter on {subject:?} not stored");
        };
        if !self.dead_letters_ready.load(Ordering::Relaxed) {
            self.ensure_dead_letter_stream().await?;
        }
        let headers = to_header_map(&msg.headers)?;
        let ack = js
            .publish_with_headers(msg.subject.clone(), headers, msg.payload)
            .await
            .with_context(|| format!("cannot publish the dead letter to {:?}", msg.subject))?
            .await;
        let ack = match ack {
            Ok(ack) => ack,
            Err(e) => {
                // The stream may be gone: make sure it exists next time.
                self.dead_letters_ready.store(false, Ordering::Relaxed);
                return Err(e).with_context(|| {
                    format!(
                        "the server did not store the dead letter on {:?}",
                        msg.subject
                    )
                });
            }
        };
        if ack.stream != self.dead_letters.name {
            bail!(
                "the dead letter on {:?} went to stream {:?}, not to the dead-letter stream {:?} (another stream captures {:?})",
                msg.subject,
                ack.stream,
                self.dead_letters.name,
                self.dead_letters.subjects
            );
        }
        Ok(())
    }

    fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    async fn track(
        &self,
        id: &str,
        handler: crate::tracking::Handler,
    ) -> anyhow::Result<Option<(crate::tracking::StatusDoc, bool)>> {
        let Some(js) = &self.jetstream else {
            bail!("the NATS server has no JetStream: no event status is kept");
        };
        let bucket = self
            .status
            .get_or_try_init(|| StatusBucket::open(js))
            .await?;
        bucket.record(id, handler).await
    }

    async fn enqueue_webhook(&self, job: Message) -> anyhow::Result<()> {
        let Some(js) = &self.jetstream else {
            bail!("the NATS server has no JetStream: webhooks cannot be queued");
        };
        let headers = to_header_map(&job.headers)?;
        let ack = js
            .publish_with_headers(job.subject.clone(), headers, job.payload)
            .await
            .map_err(classify)
            .with_context(|| format!("cannot queue the webhook on {:?}", job.subject))?
            .await
            .map_err(classify)
            .with_context(|| {
                format!(
                    "the webhook on {:?} was not stored (is there a {} stream? a host with [http] creates it)",
                    job.subject,
                    crate::webhook::STREAM
                )
            })?;
        if ack.stream != crate::webhook::STREAM {
            bail!(
                "the webhook on {:?} went to stream {:?}, not {}",
                job.subject,
                ack.stream,
                crate::webhook::STREAM
            );
        }
        Ok(())
    }
}

/// A JetStream publish error as weir's kind: [`Unavailable`] when the same
/// publish may pass later (no answer in time, the connection down, no
/// responder for a subject the stream index says a stream captures — a stream
/// without a leader during an election —, a 5xx API error such as 503
/// "JetStream not available"); a refusal otherwise (too large, a wrong
/// expected sequence, any 4xx).
fn classify(e: js::context::PublishError) -> anyhow::Error {
    use js::context::PublishErrorKind as Kind;
    let retry = match e.kind() {
        Kind::TimedOut | Kind::BrokenPipe | Kind::StreamNotFound => true,
        Kind::Other => std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<js::Error>())
            .is_some_and(|api| {
                api.code() >= 500
                    || [
                        js::ErrorCode::CLUSTER_NOT_AVAILABLE,
                        js::ErrorCode::CLUSTER_NOT_LEADER,
                        js::ErrorCode::CLUSTER_NOT_ACTIVE,
                        js::ErrorCode::CLUSTER_NOT_ASSIGNED,
                    ]
                    .contains(&api.error_code())
            }),
        _ => false,
    };
    let e = anyhow::Error::new(e);
    if retry { e.context(Unavailable) } else { e }
}

/// Whether JetStream answers for this connection's account: `$JS.API.INFO`
/// (read as plain JSON, so any server version will do).
async fn has_jetstream(client: &Client) -> anyhow::Result<()> {
    let answer = match client.request("$JS.API.INFO", bytes::Bytes::new()).await {
        Ok(answer) => answer,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            bail!("the NATS server does not run JetStream")
        }
        Err(e) => return Err(e).context("no answer to $JS.API.INFO"),
    };
    let info: serde_json::Value =
        serde_json::from_slice(&answer.payload).context("$JS.API.INFO: not JSON")?;
    if let Some(error) = info.get("error") {
        bail!("JetStream is not enabled for this account: {error}");
    }
    Ok(())
}
