//! A host following the fleet's desired state (`[deploy] watch = true`,
//! `weir up --watch-deployments`): at start-up it runs every plugin the
//! deployments bucket names, then watches the bucket and applies each change
//! as it comes — a put runs that record's archive (fetched, its digest and
//! the wasm's checked, then loaded: grant, compile), a delete stops the
//! plugin. A record that cannot be run is refused — logged and shown by
//! `weir ps` — and whatever ran under its name keeps running.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::load::Loader;
use super::swap::{Origin, Swapper};
use crate::bundle::Bundle;
use crate::deploy::{Buckets, Deployment};
use crate::roster::Refused;

/// What follows the bucket.
pub struct Follower {
    pub buckets: Buckets,
    pub loader: Loader,
    pub swapper: Arc<Swapper>,
}

impl Follower {
    /// Run what the bucket holds now; returns where to watch from.
    pub async fn converge(&self) -> anyhow::Result<Converged> {
        // Read before the records: a change made while they are read is
        // watched, not missed.
        let last = (self.buckets.deployments.stream.get_info().await)
            .context("cannot read the deployments bucket")?
            .state
            .last_sequence;
        let mut applied = HashMap::new();
        for (name, found) in self.buckets.list_each().await? {
            match found {
                Ok((record, revision)) => {
                    applied.insert(name, revision);
                    self.apply_put(record, revision).await
                }
                // One bad record refuses that plugin, not the host.
                Err(e) => self.refuse(&name, None, format!("{e:#}")),
            }
        }
        Ok(Converged {
            from: last + 1,
            applied,
        })
    }

    /// Apply every change from `converged.from` on until `stop`, but none
    /// that converging applied or passed already. A watch that breaks (the
    /// connection lost for long) is made again from the next revision not seen.
    pub async fn follow(self, converged: Converged, stop: CancellationToken) {
        let Converged {
            from: mut revision,
            applied,
        } = converged;
        let bucket = self.buckets.deployments.name.clone();
        loop {
            let watch = tokio::select! {
                _ = stop.cancelled() => return,
                watch = self.buckets.deployments.watch_all_from_revision(revision) => watch,
            };
            let mut watch = match watch {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::warn!(bucket, error = %e, "cannot watch the deployments; trying again");
                    if pause(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let entry = tokio::select! {
                    _ = stop.cancelled() => return,
                    entry = watch.next() => entry,
                };
                match entry {
                    Some(Ok(entry)) if !fresh(&applied, &entry.key, entry.revision) => {
                        revision = entry.revision + 1;
                    }
                    Some(Ok(entry)) => {
                        revision = entry.revision + 1;
                        // A fetch or a compile under way does not hold up a
                        // stopping host; what runs is left as it is.
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            () = self.apply(entry) => {}
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(bucket, error = %e, "the deployments watch broke; watching again");
                        break;
                    }
                    None => break,
                }
            }
            if pause(&stop).await {
                return;
            }
        }
    }

    async fn apply(&self, entry: kv::Entry) {
        let name = entry.key.clone();
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Deployment>(&entry.value) {
                Ok(record) if record.name == name => self.apply_put(record, entry.revision).await,
                Ok(record) => self.refuse(
                    &name,
                    None,
                    format!(
                        "the record under key {name:?} names the plugin {:?}",
                        record.name
                    ),
                ),
                Err(e) => self.refuse(
                    &name,
                    None,
                    format!("revision {}: not a weir deployment: {e}", entry.revision),
                ),
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                let any = Origin::Deployed {
                    revision: entry.revision,
                    archive_sha256: String::new(),
                };
                if self.swapper.remove(&name, &any).await {
                    tracing::info!(plugin = %name, revision = entry.revision, "undeployed");
                }
                // A deployment that never ran is not refused any more either.
                self.swapper.roster.forget_refusal(&name);
            }
        }
    }

    /// Run `record` unless it runs already.
    async fn apply_put(&self, record: Deployment, revision: u64) {
        let name = record.name.clone();
        if let Some(Origin::Deployed { archive_sha256, .. }) = self.swapper.origin(&name).await
            && archive_sha256 == record.archive_sha256
        {
            // Back to what runs (a rollback past a refused version).
            self.swapper.roster.forget_refusal(&name);
            return;
        }
        tracing::info!(
            plugin = %name, version = %record.version, revision, by = %record.by,
            "deployment: fetching {}", record.object
        );
        let plugin = match self.fetch_and_load(&record, revision).await {
            Ok(plugin) => plugin,
            Err(refused) => {
                tracing::error!(
                    plugin = %name, version = %record.version, revision,
                    "deployment refused: {}; what ran keeps running", refused.reason
                );
                self.swapper.roster.refuse(refused);
                return;
            }
        };
        let origin = Origin::Deployed {
            revision,
            archive_sha256: record.archive_sha256.clone(),
        };
        if let Err(reason) = self.swapper.install(plugin, origin).await {
            self.refuse(&name, Some(&record), reason);
        }
    }

    async fn fetch_and_load(
        &self,
        record: &Deployment,
        revision: u64,
    ) -> Result<crate::plugin::Plugin, Refused> {
        let refused = |reason: String| Refused {
            path: format!("deploy:{}", record.name).into(),
            reason: format!("revision {revision}: {reason}"),
            name: Some(record.name.clone()),
            version: Some(record.version.clone()),
            sha256: Some(record.sha256.clone()),
        };
        let bytes = (self.buckets.fetch(record).await).map_err(|e| refused(format!("{e:#}")))?;
        let label = std::path::PathBuf::from(&record.object);
        let max_memory = self.loader.config.sandbox.max_memory_mb;
        let bundle = Bundle::from_archive_bytes(&label, &bytes, max_memory)
            .map_err(|e| refused(e.to_string()))?;
        if bundle.manifest.name != record.name {
            return Err(refused(format!(
                "the archive holds the plugin {:?}",
                bundle.manifest.name
            )));
        }
        if bundle.sha256_hex() != record.sha256 {
            return Err(refused(format!(
                "the archive's wasm has SHA-256 {}, the deployment says {}",
                bundle.sha256_hex(),
                record.sha256
            )));
        }
        self.loader.load_async(bundle).await.map_err(|mut r| {
            r.path = format!("deploy:{}", record.name).into();
            r.reason = format!("revision {revision}: {}", r.reason);
            r
        })
    }

    fn refuse(&self, name: &str, record: Option<&Deployment>, reason: String) {
        tracing::error!(plugin = %name, "deployment refused: {reason}; what ran keeps running");
        self.swapper.roster.refuse(Refused {
            path: format!("deploy:{name}").into(),
            reason,
            name: Some(name.to_owned()),
            version: record.map(|r| r.version.clone()),
            sha256: record.map(|r| r.sha256.clone()),
        });
    }
}

/// Where following starts once the host converged.
pub struct Converged {
    /// The first revision of the bucket to watch.
    from: u64,
    /// The revision applied of each record, when converging read it later
    /// than `from`: older changes of that record watched are stale.
    applied: HashMap<String, u64>,
}

/// Whether a watched `revision` of `key` is newer than what converging
/// applied of it (a change made while the records were read is watched too,
/// and would otherwise run an intermediate version again).
fn fresh(applied: &HashMap<String, u64>, key: &str, revision: u64) -> bool {
    applied.get(key).is_none_or(|&done| revision > done)
}

/// Wait a moment before watching again; whether `stop` fired meanwhile.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_converging_applied_is_not_applied_again() {
        // Converging read rev 7 of relay while revs 6 and 7 came in.
        let applied = HashMap::from([("relay".to_owned(), 7)]);
        assert!(!fresh(&applied, "relay", 6), "an intermediate revision");
        assert!(!fresh(&applied, "relay", 7), "the one applied");
        assert!(fresh(&applied, "relay", 8));
        assert!(fresh(&applied, "other", 6), "a record not read then");
    }
}
