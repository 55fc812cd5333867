//! Which JetStream stream, if any, captures an output subject: the streams'
//! subject filters are fetched once and matched here, so an event's outputs
//! cost no API request each. The list is fetched again when JetStream
//! announces a stream created, updated or deleted, and at least every
//! [`MAX_AGE`] (an advisory can be missed across a reconnect). A fetch that
//! fails (a cluster electing a leader) leaves the last good list in use for
//! [`RETRY_AFTER`] before the next try.

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

/// After a failed fetch, how long the last good list answers before the
/// next fetch.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The stream advisories that say the list changed. Not every stream
/// advisory: leader-elected ones fire constantly while a cluster elects.
const ADVISORIES: [&str; 3] = [
    "$JS.EVENT.ADVISORY.STREAM.CREATED.>",
    "$JS.EVENT.ADVISORY.STREAM.UPDATED.>",
    "$JS.EVENT.ADVISORY.STREAM.DELETED.>",
];

#[derive(Default)]
struct Snapshot {
    /// Every stream's subject filters, from the last good fetch.
    filters: Vec<String>,
    /// When that fetch was.
    fetched: Option<Instant>,
    /// When the last fetch failed, if it failed after the last good one.
    failed: Option<Instant>,
}

impl Snapshot {
    /// The answer without fetching, if there is one: from a fresh list (not
    /// `stale`, younger than [`MAX_AGE`]), or from the last good list while a
    /// failed fetch is younger than [`RETRY_AFTER`].
    fn answer(&self, subject: &str, stale: bool, now: Instant) -> Option<bool> {
        let fetched = self.fetched?;
        let fresh = !stale && now.duration_since(fetched) < MAX_AGE;
        let backing_off = self
            .failed
            .is_some_and(|at| now.duration_since(at) < RETRY_AFTER);
        (fresh || backing_off).then(|| self.filters.iter().any(|f| subject_matches(f, subject)))
    }
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
        let mut subscriptions = Vec::new();
        for subject in ADVISORIES {
            match client.subscribe(subject).await {
                Ok(sub) => subscriptions.push(sub),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot watch JetStream stream advisories; the list of streams is fetched every {} s",
                        MAX_AGE.as_secs()
                    );
                    subscriptions.clear();
                    break;
                }
            }
        }
        if !subscriptions.is_empty() {
            let mut advisories = futures::stream::select_all(subscriptions);
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
        Self {
            snapshot: RwLock::default(),
            stale,
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a stream captures `subject`. An error only when no list was
    /// ever fetched and the fetch fails.
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
                let mut snapshot = self
                    .snapshot
                    .write()
                    .map_err(|_| anyhow::anyhow!("the stream index is poisoned"))?;
                snapshot.failed = Some(Instant::now());
                if snapshot.fetched.is_none() {
                    return Err(e);
                }
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "cannot refresh the list of streams; using the last one for {} s",
                    RETRY_AFTER.as_secs()
                );
                return Ok(snapshot.filters.iter().any(|f| subject_matches(f, subject)));
            }
        };
        let answer = filters.iter().any(|f| subject_matches(f, subject));
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = Snapshot {
                filters,
                fetched: Some(Instant::now()),
                failed: None,
            };
        }
        Ok(answer)
    }

    /// The answer without fetching, if there is one.
    fn lookup(&self, subject: &str) -> Option<bool> {
        let stale = self.stale.load(Ordering::Relaxed);
        let snapshot = self.snapshot.read().ok()?;
        snapshot.answer(subject, stale, Instant::now())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(fetched: Instant, failed: Option<Instant>) -> Snapshot {
        Snapshot {
            filters: vec!["out.>".into()],
            fetched: Some(fetched),
            failed,
        }
    }

    #[test]
    fn a_fresh_list_answers_until_stale_or_old() {
        let t0 = Instant::now();
        let s = snapshot(t0, None);
        assert_eq!(s.answer("out.a", false, t0), Some(true));
        assert_eq!(s.answer("in.a", false, t0), Some(false));
        assert_eq!(
            s.answer("out.a", true, t0),
            None,
            "an advisory: fetch again"
        );
        assert_eq!(s.answer("out.a", false, t0 + MAX_AGE), None, "too old");
        assert_eq!(Snapshot::default().answer("out.a", false, t0), None);
    }

    /// Issue 10: during an election the refresh fails; the last good list
    /// answers for RETRY_AFTER, then a fetch is tried again.
    #[test]
    fn after_a_failed_fetch_the_last_list_answers_for_a_while() {
        let t0 = Instant::now();
        let failed_at = t0 + MAX_AGE;
        let s = snapshot(t0, Some(failed_at));
        assert_eq!(s.answer("out.a", true, failed_at), Some(true));
        assert_eq!(s.answer("in.a", true, failed_at), Some(false));
        let later = failed_at + RETRY_AFTER / 2;
        assert_eq!(s.answer("out.a", true, later), Some(true));
        assert_eq!(s.answer("out.a", true, failed_at + RETRY_AFTER), None);
    }

    #[test]
    fn only_stream_changes_mark_the_list_stale() {
        let leader = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.IN";
        assert!(!ADVISORIES.iter().any(|a| subject_matches(a, leader)));
        for change in ["CREATED", "UPDATED", "DELETED"] {
            let subject = format!("$JS.EVENT.ADVISORY.STREAM.{change}.IN");
            assert!(ADVISORIES.iter().any(|a| subject_matches(a, &subject)));
        }
    }
}
