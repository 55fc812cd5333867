//! The `weir_status` KV bucket: one [`StatusDoc`] per tracked event under its
//! status id, plus `k.<hash>` entries mapping an `Idempotency-Key` to the id
//! it was first given. Every write is a compare-and-set on the revision read,
//! so hosts handling the same event (several plugins, or a redelivery after
//! a host died) never lose each other's entries.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self as js, kv};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::tracking::{BUCKET, Handler, StatusDoc};

/// Compare-and-set rounds before a write gives up (each lost round means
/// another host wrote in between).
const ROUNDS: usize = 16;

/// The status bucket.
#[derive(Clone)]
pub struct StatusBucket {
    kv: kv::Store,
}

impl StatusBucket {
    /// Open the bucket, creating it when missing, its entries kept for `ttl`.
    pub async fn ensure(js: &js::Context, ttl: Duration, replicas: usize) -> anyhow::Result<Self> {
        let kv = match js.get_key_value(BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: BUCKET.into(),
                    description: "weir: status of events accepted by the HTTP gateway".into(),
                    history: 1,
                    max_age: ttl,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create the KV bucket {BUCKET}"))?,
        };
        Ok(Self { kv })
    }

    /// Open the bucket a gateway created.
    pub async fn open(js: &js::Context) -> anyhow::Result<Self> {
        let kv = js.get_key_value(BUCKET).await.with_context(|| {
            format!("no KV bucket {BUCKET} (a host with [http] in weir.toml creates it)")
        })?;
        Ok(Self { kv })
    }

    /// Write the document of a newly accepted event, unless one is there
    /// (a retried request, or a handler already at work).
    pub async fn accept(&self, doc: &StatusDoc) -> anyhow::Result<()> {
        let value = serde_json::to_vec(doc)?;
        match self.kv.create(&doc.id, value.into()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot store status {}", doc.id)),
        }
    }

    /// Remove the document of an event that was not accepted after all.
    pub async fn forget(&self, id: &str) {
        if let Err(e) = self.kv.purge(id).await {
            tracing::debug!(status_id = %id, error = %e, "cannot remove the status of an event not accepted");
        }
    }

    /// Record one plugin's handling of event `id` (on `subject`); returns
    /// the document as stored.
    pub async fn record(
        &self,
        id: &str,
        subject: &str,
        handler: Handler,
    ) -> anyhow::Result<StatusDoc> {
        for _ in 0..ROUNDS {
            match self.read(id).await? {
                Some((mut doc, revision)) => {
                    doc.apply(handler.clone());
                    let value = serde_json::to_vec(&doc)?;
                    match self.kv.update(id, value.into(), revision).await {
                        Ok(_) => return Ok(doc),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => {
                            return Err(e).with_context(|| format!("cannot update status {id}"));
                        }
                    }
                }
                None => {
                    // Expired, or never written (a producer set the header).
                    let mut doc = StatusDoc::accepted(id, subject, &handler.updated_at);
                    doc.apply(handler.clone());
                    let value = serde_json::to_vec(&doc)?;
                    match self.kv.create(id, value.into()).await {
                        Ok(_) => return Ok(doc),
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                        Err(e) => {
                            return Err(e).with_context(|| format!("cannot store status {id}"));
                        }
                    }
                }
            }
        }
        bail!("status {id}: {ROUNDS} writes in a row lost to other writers")
    }

    /// The document of `id` and its revision, if there is one.
    pub async fn read(&self, id: &str) -> anyhow::Result<Option<(StatusDoc, u64)>> {
        let entry = self
            .kv
            .entry(id)
            .await
            .with_context(|| format!("cannot read status {id}"))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let doc = serde_json::from_slice(&e.value)
                    .with_context(|| format!("status {id} is not a status document"))?;
                Ok(Some((doc, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Wait up to `wait` for the document of `id` to change after `revision`;
    /// `None` when it did not.
    pub async fn next_change(
        &self,
        id: &str,
        revision: u64,
        wait: Duration,
    ) -> anyhow::Result<Option<(StatusDoc, u64)>> {
        let mut changes = self
            .kv
            .watch_from_revision(id, revision + 1)
            .await
            .with_context(|| format!("cannot watch status {id}"))?;
        let next = tokio::time::timeout(wait, changes.next()).await;
        match next {
            Ok(Some(Ok(e))) if e.operation == kv::Operation::Put => {
                let doc = serde_json::from_slice(&e.value)
                    .with_context(|| format!("status {id} is not a status document"))?;
                Ok(Some((doc, e.revision)))
            }
            Ok(Some(Err(e))) => Err(e).with_context(|| format!("cannot watch status {id}")),
            _ => Ok(None),
        }
    }

    /// The status id of the first request with this `Idempotency-Key`:
    /// `fresh` when this is the first. Keyed like `Nats-Msg-Id`, by the key
    /// alone.
    pub async fn idempotent(&self, key: &str, fresh: &str) -> anyhow::Result<String> {
        let name = format!("k.{}", hex::encode(&Sha256::digest(key.as_bytes())[..16]));
        for _ in 0..ROUNDS {
            match self.kv.create(&name, fresh.to_owned().into()).await {
                Ok(_) => return Ok(fresh.to_owned()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if let Some(id) = self.kv.get(&name).await? {
                        return String::from_utf8(id.to_vec())
                            .context("an idempotency entry is not text");
                    }
                    // Purged in between: try to be the first again.
                }
                Err(e) => return Err(e).context("cannot store the idempotency key"),
            }
        }
        bail!("the idempotency key keeps changing under this request")
    }
}
