//! `weir.toml`: the host's settings.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::auth::HostAuthConfig;
use super::{
    ConfigError, DeployConfig, HttpConfig, ServerUrls, TelemetryConfig, is_stream_name, parse_toml,
};
use crate::event::{is_publish_subject, is_subscribe_subject};
/// `weir.toml`: the host's settings. Every field has a default so that `weir up`
/// alone works.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    pub nats: NatsConfig,
    pub plugins: PluginsConfig,
    pub sandbox: SandboxConfig,
    pub dead_letter: DeadLetterConfig,
    pub shutdown: ShutdownConfig,
    /// `[[streams]]`: JetStream streams to create when missing. weir creates
    /// no stream on its own in production; `weir up --dev` also creates the
    /// ones its plugins' jetstream subscriptions name.
    pub streams: Vec<StreamSpec>,
    /// `[auth]`: trusted keys and the grant policy (the auth module).
    pub auth: HostAuthConfig,
    /// `[telemetry]`: metrics and health endpoint, trace export.
    pub telemetry: TelemetryConfig,
    /// `[deploy]`: the buckets of the fleet's desired state.
    pub deploy: DeployConfig,
    /// `[http]`: the HTTP gateway; off when absent.
    pub http: Option<HttpConfig>,
}

/// One `[[streams]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub name: String,
    pub subjects: Vec<String>,
    /// Keep messages in memory instead of files.
    #[serde(default)]
    pub memory: bool,
    /// How long `Nats-Msg-Id` deduplication remembers an id.
    #[serde(default = "default_duplicate_window_ms")]
    pub duplicate_window_ms: u64,
    /// Copies kept across a cluster's nodes (1..=5; R3 survives one lost node).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

fn default_duplicate_window_ms() -> u64 {
    120_000
}

fn default_replicas() -> usize {
    1
}

/// The most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;

/// `[nats]`: how the host reaches its NATS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// The server(s): one URL, several comma separated (as NATS clients take
    /// them) or an array of URLs. Credentials belong in the fields below, not
    /// here: the client does not use a URL's.
    pub url: ServerUrls,
    /// Connection name shown in the server's monitoring.
    pub name: String,
    /// Messages async-nats buffers per subscription before it drops silently;
    /// weir drains it into its own bounded queue and counts what it sheds.
    pub subscription_capacity: usize,
    /// Token auth: a file holding the token, or an environment variable.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// User/password auth: the password from a file or an environment variable.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// NKey auth: a file holding the seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes them.
    pub creds_file: Option<PathBuf>,
    /// TLS: a PEM file of CA certificates to trust (besides the system's).
    pub tls_ca_file: Option<PathBuf>,
    /// TLS client certificate and its key (PEM), for servers that verify clients.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Start TLS before the server's INFO (servers with `handshake_first`).
    pub tls_first: bool,
    /// Refuse to talk to a server without TLS.
    pub require_tls: bool,
    /// Try the servers of `url` in random order (async-nats's default), on
    /// connecting and reconnecting; `false` keeps the order given.
    pub randomize_servers: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: ServerUrls::default(),
            name: "weir".into(),
            subscription_capacity: 65_536,
            token_file: None,
            token_env: None,
            user: None,
            password_file: None,
            password_env: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_first: false,
            require_tls: false,
            randomize_servers: true,
        }
    }
}

/// `[plugins]`: where bundles come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Folders whose every sub-folder holding a plugin.toml is a bundle.
    pub dirs: Vec<PathBuf>,
    /// Single bundle folders.
    pub bundles: Vec<PathBuf>,
    /// Load a bundle again when its files change, swapping it in while the
    /// host runs (`weir up --watch`).
    pub watch: bool,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dirs: vec![PathBuf::from("plugins")],
            bundles: Vec::new(),
            watch: false,
        }
    }
}

/// `[sandbox]`: the wasmtime engine every plugin shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Where compiled components are cached; default `$XDG_CACHE_HOME/weir` or
    /// `~/.cache/weir`. Set `cache = false` to compile on every start.
    pub cache_dir: Option<PathBuf>,
    pub cache: bool,
    /// The cache's size cap: past it, the least recently used entries are
    /// removed (a Python or JavaScript component compiles to ~36 MB).
    pub cache_max_mb: u64,
    /// Instances that may exist at once across all plugins (the pool's size).
    pub max_instances: u32,
    /// The largest `memory_mb` any plugin may ask for.
    pub max_memory_mb: u32,
    /// Epoch tick: the granularity of timeouts.
    pub epoch_tick_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            cache: true,
            cache_max_mb: 1024,
            max_instances: 1000,
            max_memory_mb: 512,
            epoch_tick_ms: 5,
        }
    }
}

impl SandboxConfig {
    /// `cache_max_mb` in bytes.
    pub fn cache_max_bytes(&self) -> u64 {
        self.cache_max_mb.saturating_mul(1024 * 1024)
    }

    /// The cache folder in force, if caching is on.
    pub fn resolved_cache_dir(&self) -> Option<PathBuf> {
        if !self.cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("weir"))
    }
}

/// `[dead_letter]`: where failed events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Dead letters are published to `<subject_prefix>.<plugin>`.
    pub subject_prefix: String,
    /// The JetStream stream that captures `<subject_prefix>.>`; created if missing.
    pub stream: String,
    /// The replicas of that stream when weir creates it (1..=5).
    pub replicas: usize,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            subject_prefix: "weir.dlq".into(),
            stream: "WEIR_DLQ".into(),
            replicas: 1,
        }
    }
}

/// `[shutdown]`: how long a graceful stop may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After this, events still queued are dead-lettered rather than run.
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_ms: 30_000 }
    }
}

impl HostConfig {
    /// Read and check a weir.toml.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, None, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = parse_toml(path, text)?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, msg: &str| Err(ConfigError::new(path, Some(field), msg));
        if self.nats.subscription_capacity == 0 {
            return err("nats.subscription_capacity", "must be at least 1");
        }
        if self.nats.tls_cert_file.is_some() != self.nats.tls_key_file.is_some() {
            return err(
                "nats.tls_cert_file",
                "give the client certificate and its key (tls_key_file) together",
            );
        }
        self.auth.validate(path)?;
        self.telemetry.validate(path)?;
        self.deploy.validate(path)?;
        if let Some(http) = &self.http {
            http.validate(path)?;
        }
        if self.sandbox.max_instances == 0 {
            return err("sandbox.max_instances", "must be at least 1");
        }
        if self.sandbox.max_memory_mb == 0 || self.sandbox.max_memory_mb > 4096 {
            return err("sandbox.max_memory_mb", "must be between 1 and 4096");
        }
        if self.sandbox.cache_max_mb == 0 {
            return err(
                "sandbox.cache_max_mb",
                "must be at least 1 (cache = false turns the compile cache off)",
            );
        }
        if self.sandbox.epoch_tick_ms == 0 || self.sandbox.epoch_tick_ms > 1000 {
            return err("sandbox.epoch_tick_ms", "must be between 1 and 1000");
        }
        if !is_publish_subject(&self.dead_letter.subject_prefix) {
            return err(
                "dead_letter.subject_prefix",
                "must be a subject without wildcards",
            );
        }
        for (i, stream) in self.streams.iter().enumerate() {
            if !is_stream_name(&stream.name) {
                return err(
                    &format!("streams[{i}].name"),
                    "must be a stream name (no dots, wildcards or spaces)",
                );
            }
            if stream.subjects.is_empty()
                || !stream.subjects.iter().all(|s| is_subscribe_subject(s))
            {
                return err(
                    &format!("streams[{i}].subjects"),
                    "needs one or more valid NATS subjects",
                );
            }
            if !(1..=MAX_REPLICAS).contains(&stream.replicas) {
                return err(&format!("streams[{i}].replicas"), "must be between 1 and 5");
            }
        }
        if !(1..=MAX_REPLICAS).contains(&self.dead_letter.replicas) {
            return err("dead_letter.replicas", "must be between 1 and 5");
        }
        if !is_stream_name(&self.dead_letter.stream) {
            return err(
                "dead_letter.stream",
                "must be a stream name (no dots, wildcards or spaces)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_config_defaults_and_errors() {
        let c = HostConfig::parse(Path::new("weir.toml"), "").expect("empty is fine");
        assert_eq!(c.nats.url.to_string(), "nats://127.0.0.1:4222");
        let e = HostConfig::parse(Path::new("weir.toml"), "[nats]\nulr = \"x\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("nats.ulr"));
        assert!(e.to_string().starts_with("weir.toml: nats.ulr:"), "{e}");
    }

    /// Issue 8: `nats.url` takes a comma-separated list or an array, and a bad
    /// entry is named by its position.
    #[test]
    fn nats_url_takes_a_list_or_an_array() {
        let parse = |text: &str| HostConfig::parse(Path::new("weir.toml"), text);
        let c = parse("[nats]\nurl = \"nats://a:4222,nats://b:4222\"\n").expect("comma list");
        assert_eq!(c.nats.url.addrs().len(), 2);
        let c = parse("[nats]\nurl = [\"nats://a:1\", \"b:2\", \"tls://c:3\"]\n").expect("array");
        assert_eq!(c.nats.url.to_string(), "nats://a:1,nats://b:2,tls://c:3");
        let e =
            parse("[nats]\nname = \"w\"\nurl = [\"nats://a:1\", \"nats://b:x\"]\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("nats.url"));
        assert!(
            e.to_string().starts_with(
                "weir.toml: nats.url: entry 2 of 2 (nats://b:x): NATS server URL is invalid"
            ),
            "{e}"
        );
        assert!(e.to_string().ends_with("(line 3)"), "{e}");
        let e = parse("[nats]\nurl = []\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "weir.toml: nats.url: names no server (line 2)"
        );
        let e = parse("[nats]\nurl = 4222\n").unwrap_err();
        assert!(e.to_string().contains("an array of them"), "{e}");
    }

    /// Issue 8: errors name the table (or array entry) of the key and its line.
    #[test]
    fn errors_name_the_dotted_path_and_line() {
        let parse = |text: &str| HostConfig::parse(Path::new("weir.toml"), text).unwrap_err();
        let e = parse("[plugins]\ndirs = []\n\n[nats]\nname = \"w\"\nurll = \"nats://h\"\n");
        assert_eq!(e.field.as_deref(), Some("nats.urll"));
        assert!(
            e.to_string()
                .starts_with("weir.toml: nats.urll: unknown field `urll`, expected one of"),
            "{e}"
        );
        assert!(e.to_string().ends_with("(line 6)"), "{e}");
        let e = parse(
            "[[streams]]\nname = \"A\"\nsubjects = [\"a\"]\n[[streams]]\nname = \"B\"\nsubject = [\"b\"]\n",
        );
        assert_eq!(e.field.as_deref(), Some("streams[1].subject"));
        assert!(e.to_string().ends_with("(line 6)"), "{e}");
        let e = parse("[[streams]]\nname = \"A\"\n");
        assert_eq!(e.field.as_deref(), Some("streams[0].subjects"));
        let e = parse("[[auth.keys]]\nissuer = \"i\"\nalg = \"EdDSA\"\nfiel = \"k\"\n");
        assert_eq!(e.field.as_deref(), Some("auth.keys[0].fiel"));
        let e = parse("[sandbox]\ncache_max_mb = 0\n");
        assert_eq!(e.field.as_deref(), Some("sandbox.cache_max_mb"));
        let e = parse("sandbox.max_instances = \"many\"\n");
        assert_eq!(e.field.as_deref(), Some("sandbox.max_instances"));
        let e = parse("[shutdown]\ngrace_ms = 1\n[dead_letter]\nstream = 5\n");
        assert_eq!(e.field.as_deref(), Some("dead_letter.stream"));
        assert!(e.to_string().ends_with("(line 4)"), "{e}");
    }

    /// Issue 10: replicas for `[[streams]]` and `[dead_letter]`, and
    /// `nats.randomize_servers`.
    #[test]
    fn replicas_and_server_order() {
        let parse = |text: &str| HostConfig::parse(Path::new("weir.toml"), text);
        let c = parse("[[streams]]\nname = \"A\"\nsubjects = [\"a\"]\n").expect("defaults");
        assert_eq!((c.streams[0].replicas, c.dead_letter.replicas), (1, 1));
        assert!(c.nats.randomize_servers);
        let c = parse(
            "[nats]\nrandomize_servers = false\n[dead_letter]\nreplicas = 3\n[[streams]]\nname = \"A\"\nsubjects = [\"a\"]\nreplicas = 3\n",
        )
        .expect("R3");
        assert_eq!((c.streams[0].replicas, c.dead_letter.replicas), (3, 3));
        assert!(!c.nats.randomize_servers);
        let e = parse("[[streams]]\nname = \"A\"\nsubjects = [\"a\"]\nreplicas = 0\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("streams[0].replicas"));
        let e = parse("[dead_letter]\nreplicas = 6\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("dead_letter.replicas"));
        assert!(e.to_string().contains("between 1 and 5"), "{e}");
    }
}
