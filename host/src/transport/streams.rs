//! Which JetStream stream, if any, captures an output subject: the streams'
//! subject filters are fetched once and matched here, so an event's outputs
//! cost no API request each. The list is fetched again when JetStream
//! announces a stream created, updated or deleted, and at least every
//! [`MAX_AGE`] (an advisory can be missed across a reconnect).

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream as js;
use futures::{StreamExt as _, TryStreamExt as _};

use crate::event::subject_matches;

/// The longest a fetched list is trusted.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// The stream advisories that say the list changed.
const ADVISORIES: &str = "$JS.EVENT.ADVISORY.STREAM.>";

#[derive(Default)]
struct Snapshot {
    /// Every stream's subject filters.
    filters: Vec<String>,
    fetched: Option<Instant>,
}

/// The streams' subject filters, kept fresh.
pub struct StreamIndex {
    snapshot: RwLock<Snapshot>,
    /// Set by a stream advisory: fetch again before the next match.
    stale: Arc<AtomicBool>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl StreamIndex {
    /// An empty index that watches the stream advisories on `client`.
    pub async fn new(client: &async_nats::Client) -> Self {
        let stale = Arc::new(AtomicBool::new(true));
        match client.subscribe(ADVISORIES).await {
            Ok(mut advisories) => {
                let stale = Arc::downgrade(&stale);
                tokio::spawn(async move {
                    while advisories.next().await.is_some() {
                        match stale.upgrade() {
                            Some(stale) => stale.store(true, Ordering::Relaxed),
                            None => return,
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot watch JetStream stream advisories; the list of streams is fetched every {} s",
                MAX_AGE.as_secs()
            ),
        }
        Self {
            snapshot: RwLock::default(),
            stale,
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a stream captures `subject`.
    pub async fn captures(&self, js: &js::Context, subject: &str) -> anyhow::Result<bool> {
        if let Some(answer) = self.lookup(subject) {
            return Ok(answer);
        }
        let _one = self.fetching.lock().await;
        // Another task may have fetched while this one waited.
        if let Some(answer) = self.lookup(subject) {
            return Ok(answer);
        }
        self.stale.store(false, Ordering::Relaxed);
        let filters = match fetch(js).await {
            Ok(filters) => filters,
            Err(e) => {
                self.stale.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        let answer = filters.iter().any(|f| subject_matches(f, subject));
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = Snapshot {
                filters,
                fetched: Some(Instant::now()),
            };
        }
        Ok(answer)
    }

    /// The answer from a fresh list, if the list is fresh.
    fn lookup(&self, subject: &str) -> Option<bool> {
        if self.stale.load(Ordering::Relaxed) {
            return None;
        }
        let snapshot = self.snapshot.read().ok()?;
        let fresh = snapshot.fetched.is_some_and(|at| at.elapsed() < MAX_AGE);
        fresh.then(|| snapshot.filters.iter().any(|f| subject_matches(f, subject)))
    }
}

/// Every stream's subject filters (one paged `STREAM.LIST` request).
async fn fetch(js: &js::Context) -> anyhow::Result<Vec<String>> {
    let infos: Vec<js::stream::Info> = js
        .streams()
        .try_collect()
        .await
        .context("cannot list the JetStream streams")?;
    Ok(infos
        .into_iter()
        .flat_map(|info| info.config.subjects)
        .collect())
}
