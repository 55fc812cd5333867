//! The fleet's desired state in NATS, with no registry of weir's own: bundle
//! archives in an Object Store bucket, and per plugin one [`Deployment`]
//! record in a KV bucket (key: the plugin's name), whose history is what a
//! rollback goes back to. `weir deploy`, `weir deployments`, `weir rollback`
//! and `weir undeploy` write and read it here.

use std::time::SystemTime;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, kv, object_store};
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::Bundle;
use crate::config::DeployConfig;

/// What a host is to run for one plugin: the value of its KV key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub name: String,
    pub version: String,
    /// The wasm's SHA-256 (hex): what grants and the compile cache key on.
    pub sha256: String,
    /// The archive's object in the bundles bucket.
    pub object: String,
    /// The archive's own SHA-256 (hex), checked by whoever fetches it.
    pub archive_sha256: String,
    pub archive_bytes: u64,
    /// Who deployed it (`$USER@hostname`) and when (RFC 3339).
    pub by: String,
    pub at: String,
    /// Why, when weir wrote it for a command (e.g. `rollback to revision 3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One revision of a plugin's record.
#[derive(Debug, Clone, Serialize)]
pub struct Revision {
    pub revision: u64,
    /// `put`, `delete` (undeployed) or `purge`.
    pub operation: &'static str,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
}

/// The two buckets.
pub struct Buckets {
    pub bundles: object_store::ObjectStore,
    pub deployments: kv::Store,
    config: DeployConfig,
}

impl Buckets {
    /// Open both buckets; with `create`, create the missing ones (`weir
    /// deploy`); without, a missing bucket means nothing was deployed yet.
    pub async fn open(
        js: &jetstream::Context,
        config: &DeployConfig,
        create: bool,
    ) -> anyhow::Result<Self> {
        let bundles = match js.get_object_store(&config.bundles_bucket).await {
            Ok(store) => store,
            Err(_) if create => js
                .create_object_store(object_store::Config {
                    bucket: config.bundles_bucket.clone(),
                    description: Some("weir bundle archives".into()),
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await
                .with_context(|| {
                    format!(
                        "cannot create the object store bucket {} (deploy.bundles_bucket)",
                        config.bundles_bucket
                    )
                })?,
            Err(e) => bail!(
                "no object store bucket {} (deploy.bundles_bucket): {e}; nothing was deployed with weir deploy",
                config.bundles_bucket
            ),
        };
        let deployments = match js.get_key_value(&config.deployments_bucket).await {
            Ok(store) => store,
            Err(_) if create => js
                .create_key_value(kv::Config {
                    bucket: config.deployments_bucket.clone(),
                    description: "weir deployments: plugin name -> what hosts run".into(),
                    history: config.history,
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await
                .with_context(|| {
                    format!(
                        "cannot create the KV bucket {} (deploy.deployments_bucket)",
                        config.deployments_bucket
                    )
                })?,
            Err(e) => bail!(
                "no KV bucket {} (deploy.deployments_bucket): {e}; nothing was deployed with weir deploy",
                config.deployments_bucket
            ),
        };
        Ok(Self {
            bundles,
            deployments,
            config: config.clone(),
        })
    }

    /// Upload `archive` (the bytes of `bundle`, already checked by loading
    /// it) unless the same bytes are there, and point the plugin's key at it.
    /// Returns the record and its revision.
    pub async fn deploy(
        &self,
        bundle: &Bundle,
        archive: &[u8],
        note: Option<String>,
    ) -> anyhow::Result<(Deployment, u64)> {
        let archive_sha256 = hex::encode(Sha256::digest(archive));
        let object = format!(
            "{}-{}-{}.tar",
            bundle.name(),
            bundle.manifest.version,
            &archive_sha256[..16]
        );
        let present = self
            .bundles
            .info(&object)
            .await
            .is_ok_and(|info| info.size as u64 == archive.len() as u64 && !info.deleted);
        if !present {
            let mut reader = archive;
            self.bundles
                .put(object.as_str(), &mut reader)
                .await
                .with_context(|| {
                    format!(
                        "cannot upload {object} to the object store bucket {}",
                        self.config.bundles_bucket
                    )
                })?;
        }
        let record = Deployment {
            name: bundle.name().to_owned(),
            version: bundle.manifest.version.to_string(),
            sha256: bundle.sha256_hex(),
            object,
            archive_sha256,
            archive_bytes: archive.len() as u64,
            by: who(),
            at: crate::pipeline::rfc3339(SystemTime::now()),
            note,
        };
        let revision = self.put(&record).await?;
        Ok((record, revision))
    }

    async fn put(&self, record: &Deployment) -> anyhow::Result<u64> {
        let value = serde_json::to_vec(record)?;
        self.deployments
            .put(&record.name, value.into())
            .await
            .with_context(|| {
                format!(
                    "cannot record the deployment of {} in the KV bucket {}",
                    record.name, self.config.deployments_bucket
                )
            })
    }

    /// Every plugin deployed now, by name, with its revision.
    pub async fn list(&self) -> anyhow::Result<Vec<(Deployment, u64)>> {
        self.list_each()
            .await?
            .into_iter()
            .map(|(_, found)| found)
            .collect()
    }

    /// [`list`](Self::list), a record that cannot be read an error of its own
    /// key (a host refuses that plugin and runs the others).
    pub async fn list_each(
        &self,
    ) -> anyhow::Result<Vec<(String, anyhow::Result<(Deployment, u64)>)>> {
        let mut keys: Vec<String> = self
            .deployments
            .keys()
            .await
            .context("cannot list the deployments")?
            .try_collect()
            .await
            .context("cannot list the deployments")?;
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            if let Some(entry) = self
                .deployments
                .entry(&key)
                .await
                .with_context(|| format!("cannot read the deployment of {key}"))?
                && entry.operation == kv::Operation::Put
            {
                let found = parse(&key, &entry.value).map(|d| (d, entry.revision));
                out.push((key, found));
            }
        }
        Ok(out)
    }

    /// Every revision the bucket keeps of `name`'s record, oldest first.
    pub async fn history(&self, name: &str) -> anyhow::Result<Vec<Revision>> {
        let entries: Vec<kv::Entry> = match self.deployments.history(name).await {
            Ok(history) => history
                .try_collect()
                .await
                .with_context(|| format!("cannot read the history of {name}"))?,
            Err(e) => bail!("cannot read the history of {name}: {e}"),
        };
        entries
            .into_iter()
            .map(|e| {
                let operation = match e.operation {
                    kv::Operation::Put => "put",
                    kv::Operation::Delete => "delete",
                    kv::Operation::Purge => "purge",
                };
                let deployment = match e.operation {
                    kv::Operation::Put => Some(parse(name, &e.value)?),
                    _ => None,
                };
                Ok(Revision {
                    revision: e.revision,
                    operation,
                    at: crate::pipeline::rfc3339(e.created.into()),
                    deployment,
                })
            })
            .collect()
    }

    /// Point `name` at the record of revision `to` again (default: the
    /// latest put before the current one that deployed something else),
    /// as a new revision. Returns the record, its new revision and `to`.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<u64>,
    ) -> anyhow::Result<(Deployment, u64, u64)> {
        let history = self.history(name).await?;
        if history.is_empty() {
            bail!(
                "{name} was never deployed (no history in {})",
                self.config.deployments_bucket
            );
        }
        let current = history
            .last()
            .and_then(|r| r.deployment.as_ref())
            .map(|d| (d.sha256.clone(), d.object.clone()));
        let target = match to {
            Some(rev) => history
                .iter()
                .find(|r| r.revision == rev)
                .with_context(|| {
                    format!(
                        "{name} has no revision {rev} (kept: {})",
                        history
                            .iter()
                            .map(|r| r.revision.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
            None => history
                .iter()
                .rev()
                .skip(1)
                .find(|r| {
                    r.deployment
                        .as_ref()
                        .is_some_and(|d| Some((d.sha256.clone(), d.object.clone())) != current)
                })
                .with_context(|| format!("{name} has no earlier deployment to roll back to"))?,
        };
        let Some(old) = &target.deployment else {
            bail!(
                "revision {} of {name} is an undeploy ({}): nothing to roll back to",
                target.revision,
                target.operation
            );
        };
        let held = self
            .bundles
            .info(&old.object)
            .await
            .is_ok_and(|info| !info.deleted);
        if !held {
            bail!(
                "revision {} of {name} names {}, which the bucket {} no longer holds",
                target.revision,
                old.object,
                self.config.bundles_bucket
            );
        }
        let record = Deployment {
            by: who(),
            at: crate::pipeline::rfc3339(SystemTime::now()),
            note: Some(format!("rollback to revision {}", target.revision)),
            ..old.clone()
        };
        // Only over the revision read above: a deploy in between wins, and
        // this rollback says so instead of overwriting it.
        let latest = history.last().map_or(0, |r| r.revision);
        let revision = self
            .deployments
            .update(name, serde_json::to_vec(&record)?.into(), latest)
            .await
            .with_context(|| {
                format!(
                    "cannot roll {name} back: its deployment changed since revision {latest} (run weir deployments history {name})"
                )
            })?;
        Ok((record, revision, target.revision))
    }

    /// Remove `name`'s record (hosts stop running it); its history and
    /// archives stay, for a rollback. An error when it is not deployed.
    pub async fn undeploy(&self, name: &str) -> anyhow::Result<Deployment> {
        let current = self
            .deployments
            .entry(name)
            .await
            .with_context(|| format!("cannot read the deployment of {name}"))?;
        let Some(entry) = current.filter(|e| e.operation == kv::Operation::Put) else {
            bail!("{name} is not deployed");
        };
        let record = parse(name, &entry.value)?;
        self.deployments
            .delete_expect_revision(name, Some(entry.revision))
            .await
            .with_context(|| {
                format!(
                    "cannot undeploy {name}: its deployment changed since revision {} (or the server refused)",
                    entry.revision
                )
            })?;
        Ok(record)
    }

    /// The archive bytes of `record`, checked against its digest.
    pub async fn fetch(&self, record: &Deployment) -> anyhow::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt as _;
        let mut object = self
            .bundles
            .get(&record.object)
            .await
            .with_context(|| format!("cannot fetch {}", record.object))?;
        let cap = crate::bundle::archive::MAX_ARCHIVE_BYTES;
        let mut bytes = Vec::with_capacity(record.archive_bytes.min(cap) as usize);
        (&mut object)
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("cannot read {}", record.object))?;
        if bytes.len() as u64 > cap {
            bail!(
                "{}: larger than a bundle archive may be ({cap} bytes)",
                record.object
            );
        }
        let digest = hex::encode(Sha256::digest(&bytes));
        if digest != record.archive_sha256 {
            bail!(
                "{}: its SHA-256 is {digest}, the deployment says {}",
                record.object,
                record.archive_sha256
            );
        }
        Ok(bytes)
    }
}

fn parse(key: &str, value: &[u8]) -> anyhow::Result<Deployment> {
    serde_json::from_slice(value)
        .with_context(|| format!("the deployment record of {key} is not a weir deployment"))
}

/// `$USER@hostname`, for the record.
fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = crate::fleet::hostname();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}
