//! `[deploy]` in weir.toml: where the fleet's desired state lives in NATS —
//! bundle archives in an Object Store bucket, one deployment record per
//! plugin in a KV bucket (with history, for rollbacks).

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// `[deploy]`: the buckets `weir deploy` writes and hosts read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// The Object Store bucket holding bundle archives.
    pub bundles_bucket: String,
    /// The KV bucket holding one deployment record per plugin (key: its name).
    pub deployments_bucket: String,
    /// Revisions of each record kept (what `weir rollback` can go back to), 1..=64.
    pub history: i64,
    /// Copies of both buckets across a cluster's nodes when weir creates them (1..=5).
    pub replicas: usize,
    /// Whether `weir up` runs what the deployments bucket names and follows
    /// its changes (`weir up --watch-deployments`).
    pub watch: bool,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            bundles_bucket: "weir_bundles".into(),
            deployments_bucket: "weir_deployments".into(),
            history: 64,
            replicas: 1,
            watch: false,
        }
    }
}

impl DeployConfig {
    pub(crate) fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, msg: &str| {
            Err(ConfigError::new(
                file,
                Some(&format!("deploy.{field}")),
                msg,
            ))
        };
        let bucket = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !bucket(&self.bundles_bucket) {
            return err("bundles_bucket", "letters, digits, `_` and `-` only");
        }
        if !bucket(&self.deployments_bucket) {
            return err("deployments_bucket", "letters, digits, `_` and `-` only");
        }
        if !(1..=64).contains(&self.history) {
            return err("history", "must be between 1 and 64 (the server's limit)");
        }
        if !(1..=super::MAX_REPLICAS).contains(&self.replicas) {
            return err("replicas", "must be between 1 and 5");
        }
        Ok(())
    }
}
