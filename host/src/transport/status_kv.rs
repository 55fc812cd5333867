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

use crate::tracking::{BUCKET, Handler, State, StatusDoc};

/// What [`StatusBucket::next_change`] saw.
pub enum Change {
    /// The status became this.
    To(Box<StatusDoc>),
    /// The document was deleted or purged.
    Gone,
    /// Nothing changed the status in time.
    None,
}

fn decode(id: &str, entry: &kv::Entry) -> anyhow::Result<StatusDoc> {
    serde_json::from_slice(&entry.value)
        .with_context(|| format!("status {id} is not a status document"))
}

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
            Ok(kv) => {
                if let Ok(status) = kv.status().await
                    && status.info.config.max_age != ttl
                {
                    tracing::warn!(
                        bucket = BUCKET,
                        "http.status_ttl_ms is {} ms but the bucket keeps statuses {} ms (the first host made it; change it with the nats CLI)",
                        ttl.as_millis(),
                        status.info.config.max_age.as_millis()
                    );
                }
                kv
            }
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

    /// Record one plugin's handling of event `id`: the document as stored
    /// and whether the update was taken ([`StatusDoc::apply`]); `None` when
    /// the event has no document (expired, or a status id no gateway gave:
    /// such events are not tracked).
    pub async fn record(
        &self,
        id: &str,
        handler: Handler,
    ) -> anyhow::Result<Option<(StatusDoc, bool)>> {
        self.change(id, |doc| doc.apply(handler.clone())).await
    }

    /// Note that the stream acknowledged event `id`.
    pub async fn mark_published(&self, id: &str) -> anyhow::Result<()> {
        self.change(id, |doc| !std::mem::replace(&mut doc.published, true))
            .await
            .map(|_| ())
    }

    /// Change the document of `id` with `edit` (which says whether it changed
    /// anything), compare-and-set on the revision read.
    async fn change(
        &self,
        id: &str,
        mut edit: impl FnMut(&mut StatusDoc) -> bool,
    ) -> anyhow::Result<Option<(StatusDoc, bool)>> {
        for _ in 0..ROUNDS {
            let Some((mut doc, revision)) = self.read(id).await? else {
                return Ok(None);
            };
            if !edit(&mut doc) {
                return Ok(Some((doc, false)));
            }
            let value = serde_json::to_vec(&doc)?;
            match self.kv.update(id, value.into(), revision).await {
                Ok(_) => return Ok(Some((doc, true))),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot update status {id}")),
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
            Some(e) if e.operation == kv::Operation::Put => Ok(Some((decode(id, &e)?, e.revision))),
            _ => Ok(None),
        }
    }

    /// Wait up to `wait` for the status of `id` to become other than
    /// `status` (it was so at `revision`).
    pub async fn next_change(
        &self,
        id: &str,
        revision: u64,
        status: State,
        wait: Duration,
    ) -> anyhow::Result<Change> {
        let mut changes = self
            .kv
            .watch_from_revision(id, revision + 1)
            .await
            .with_context(|| format!("cannot watch status {id}"))?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, changes.next()).await {
                Ok(Some(Ok(e))) if e.operation == kv::Operation::Put => {
                    let doc = decode(id, &e)?;
                    if doc.status != status {
                        return Ok(Change::To(Box::new(doc)));
                    }
                }
                Ok(Some(Ok(_))) => return Ok(Change::Gone),
                Ok(Some(Err(e))) => {
                    return Err(e).with_context(|| format!("cannot watch status {id}"));
                }
                Ok(None) | Err(_) => return Ok(Change::None),
            }
        }
    }

    /// The first request with this `Idempotency-Key` (keyed like
    /// `Nats-Msg-Id`, by the key alone): `Ok(fresh)` when this is it, or the
    /// first one's id when it carried the same `fingerprint` (subject and
    /// body); `Err(None)` when it did not (the key was used for something
    /// else), `Err(Some(e))` when the bucket cannot say.
    pub async fn idempotent(
        &self,
        key: &str,
        fresh: &str,
        fingerprint: &str,
    ) -> Result<String, Option<anyhow::Error>> {
        let name = format!("k.{}", hex::encode(&Sha256::digest(key.as_bytes())[..16]));
        let mine = format!("{fresh} {fingerprint}");
        for _ in 0..ROUNDS {
            match self.kv.create(&name, mine.clone().into()).await {
                Ok(_) => return Ok(fresh.to_owned()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let first = self.kv.get(&name).await.map_err(|e| Some(e.into()))?;
                    // None: purged in between; try to be the first again.
                    if let Some(first) = first {
                        let first = String::from_utf8_lossy(&first);
                        return match first.split_once(' ') {
                            Some((id, print)) if print == fingerprint => Ok(id.to_owned()),
                            _ => Err(None),
                        };
                    }
                }
                Err(e) => {
                    return Err(Some(
                        anyhow::Error::new(e).context("cannot store the idempotency key"),
                    ));
                }
            }
        }
        Err(Some(anyhow::anyhow!(
            "the idempotency key keeps changing under this request"
        )))
    }
}
