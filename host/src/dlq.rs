//! `weir dlq`: read, replay and purge the dead-letter stream.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer::DeliverPolicy, stream::Stream};
use futures::StreamExt as _;
use serde::Serialize;

use crate::config::DeadLetterConfig;
use crate::event::{Headers, header};
use crate::pipeline::headers as h;
use crate::transport::{from_header_map, to_header_map};

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Its sequence in the dead-letter stream: the id `show` and `replay` take.
    pub id: u64,
    pub plugin: String,
    pub original_subject: String,
    pub kind: String,
    pub error: String,
    /// `Weir-Attempts`; `None` when the header is missing or not a number.
    pub attempts: Option<u32>,
    pub first_seen: String,
    pub last_seen: String,
    pub headers: Headers,
    #[serde(skip)]
    pub payload: bytes::Bytes,
    /// The payload as text, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
    pub payload_bytes: usize,
}

impl Entry {
    fn new(id: u64, headers: Headers, payload: bytes::Bytes) -> Self {
        let get = |name: &str| header(&headers, name).unwrap_or_default().to_owned();
        Self {
            id,
            plugin: get(h::PLUGIN),
            original_subject: get(h::ORIGINAL_SUBJECT),
            kind: get(h::ERROR_KIND),
            error: get(h::ERROR),
            attempts: header(&headers, h::ATTEMPTS).and_then(|a| a.trim().parse().ok()),
            first_seen: get(h::FIRST_SEEN),
            last_seen: get(h::LAST_SEEN),
            payload_text: std::str::from_utf8(&payload).ok().map(str::to_owned),
            payload_bytes: payload.len(),
            headers,
            payload,
        }
    }

    /// Replace the payload (`weir dlq replay --payload`): the event goes
    /// again with this one, whole, whatever the letter kept.
    pub fn mend(&mut self, payload: bytes::Bytes) {
        self.payload_text = std::str::from_utf8(&payload).ok().map(str::to_owned);
        self.payload_bytes = payload.len();
        self.payload = payload;
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(h::PAYLOAD_TRUNCATED));
    }

    /// Why the payload cannot be replayed as it is: it was cut to fit the
    /// server's max_payload when the letter was stored.
    fn cut(&self) -> Option<String> {
        let size = header(&self.headers, h::PAYLOAD_TRUNCATED)?;
        let whole = match (
            header(&self.headers, h::ORIGINAL_STREAM),
            header(&self.headers, h::ORIGINAL_SEQUENCE),
        ) {
            (Some(stream), Some(seq)) => {
                format!("; the whole event is in stream {stream:?} at sequence {seq}")
            }
            _ => String::new(),
        };
        Some(format!(
            "dead letter {}: its payload was cut to fit the server's max_payload \
             ({} of {size} bytes kept){whole}: give the whole payload with --payload FILE",
            self.id, self.payload_bytes
        ))
    }

    /// The headers the event had before it was dead-lettered.
    pub fn original_headers(&self) -> Headers {
        self.headers
            .iter()
            // weir's own headers go, but a webhook job's URL: without it a
            // replayed job could not be delivered.
            .filter(|(k, _)| {
                !(k.len() > 5 && k[..5].eq_ignore_ascii_case("weir-"))
                    || k.eq_ignore_ascii_case(crate::webhook::CALLBACK_URL)
            })
            // A replay is a new event: the old id would be dropped as a
            // duplicate by a stream still remembering it.
            .filter(|(k, _)| !k.eq_ignore_ascii_case(h::MSG_ID))
            .cloned()
            .collect()
    }
}

/// The dead-letter stream and how to reach it.
pub struct DeadLetters {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: Stream,
    prefix: String,
    /// Which original subjects a stream captures: one list for a whole
    /// `replay --all`, not a request per entry.
    streams: crate::transport::StreamIndex,
}

impl DeadLetters {
    pub async fn open(
        client: async_nats::Client,
        config: &DeadLetterConfig,
    ) -> anyhow::Result<Self> {
        let js = jetstream::new(client.clone());
        let stream = js.get_stream(&config.stream).await.with_context(|| {
            format!(
                "no dead-letter stream {:?} (weir up creates it)",
                config.stream
            )
        })?;
        Ok(Self {
            streams: crate::transport::StreamIndex::new(&client).await,
            client,
            js,
            stream,
            prefix: config.subject_prefix.clone(),
        })
    }

    fn filter(&self, plugin: Option<&str>) -> String {
        match plugin {
            Some(p) => format!("{}.{p}", self.prefix),
            None => format!("{}.>", self.prefix),
        }
    }

    /// Every entry, oldest first, optionally of one plugin.
    pub async fn list(&mut self, plugin: Option<&str>) -> anyhow::Result<Vec<Entry>> {
        let info = self.stream.info().await.context("cannot read the stream")?;
        if info.state.messages == 0 {
            return Ok(Vec::new());
        }
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: self.filter(plugin),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .context("cannot read the stream")?;
        let mut pending = consumer.cached_info().num_pending;
        let mut messages = consumer
            .messages()
            .await
            .context("cannot read the stream")?;
        let mut entries = Vec::new();
        while pending > 0 {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .context("the dead-letter stream stopped answering")?;
            let Some(message) = next else { break };
            let message = message.context("cannot read the stream")?;
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("bad stream message: {e}"))?;
            let (seq, left) = (info.stream_sequence, info.pending);
            let headers = message
                .headers
                .as_ref()
                .map(from_header_map)
                .unwrap_or_default();
            entries.push(Entry::new(seq, headers, message.payload.clone()));
            pending = left;
        }
        Ok(entries)
    }

    pub async fn get(&self, id: u64) -> anyhow::Result<Entry> {
        let message = self
            .stream
            .get_raw_message(id)
            .await
            .with_context(|| format!("no dead letter {id}"))?;
        if !crate::event::subject_matches(&self.filter(None), &message.subject) {
            bail!("message {id} is not a dead letter");
        }
        Ok(Entry::new(
            id,
            from_header_map(&message.headers),
            message.payload,
        ))
    }

    /// Publish the entry's event again, to its original subject with its
    /// original headers, then remove the entry.
    /// A letter whose payload was cut is refused: replaying it would send a
    /// broken event (mend it first: [`Entry::mend`]).
    pub async fn replay(&self, entry: &Entry) -> anyhow::Result<()> {
        if let Some(why) = entry.cut() {
            bail!(why);
        }
        if entry.original_subject.is_empty() {
            bail!(
                "dead letter {} has no {} header",
                entry.id,
                h::ORIGINAL_SUBJECT
            );
        }
        let headers = to_header_map(&entry.original_headers())?;
        // Through JetStream when a stream captures the subject (so the
        // replay is stored before the entry goes), else on core NATS.
        if self
            .streams
            .captures(&self.js, &entry.original_subject)
            .await?
        {
            self.js
                .publish_with_headers(
                    entry.original_subject.clone(),
                    headers,
                    entry.payload.clone(),
                )
                .await
                .context("cannot publish the replay")?
                .await
                .context("the replay was not stored")?;
        } else {
            self.client
                .publish_with_headers(
                    entry.original_subject.clone(),
                    headers,
                    entry.payload.clone(),
                )
                .await
                .context("cannot publish the replay")?;
            crate::transport::sync_with_server(&self.client).await?;
        }
        self.stream
            .delete_message(entry.id)
            .await
            .with_context(|| format!("replayed, but cannot remove dead letter {}", entry.id))?;
        Ok(())
    }

    /// Remove every entry (of one plugin); returns how many.
    pub async fn purge(&self, plugin: Option<&str>) -> anyhow::Result<u64> {
        let purged = match plugin {
            Some(_) => self.stream.purge().filter(self.filter(plugin)).await,
            None => self.stream.purge().await,
        }
        .context("cannot purge")?;
        Ok(purged.purged)
    }
}
