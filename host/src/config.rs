//! The two files users write: `weir.toml` (the host) and `plugin.toml` (one
//! bundle). Both are parsed strictly (unknown fields are errors) and every
//! error names the file and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::{HostAuthConfig, PluginAuth};
use crate::event::{is_publish_subject, is_subscribe_subject};

/// A config file could not be used. Displays as `FILE: FIELD: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The dotted path of the field at fault, when one is.
    pub field: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parse TOML strictly, turning serde's error into one that names the file and
/// (when serde knows it) the field.
fn parse_toml<T: for<'de> Deserialize<'de>>(file: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // toml's message carries the line, column and the offending key; keep it
        // whole but on one line.
        let message = e.message().trim().to_owned();
        let location = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                format!(" (line {line})")
            })
            .unwrap_or_default();
        let field = field_from_message(&message);
        ConfigError::new(file, field.as_deref(), format!("{message}{location}"))
    })
}

/// serde names the field in messages like "unknown field `x`" or
/// "missing field `x`"; lift it out so the error leads with it.
fn field_from_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    let kind_ok = message.starts_with("unknown field") || message.starts_with("missing field");
    kind_ok.then(|| message[start..start + len].to_owned())
}

// ----------------------------------------------------------------------------
// weir.toml

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
}

fn default_duplicate_window_ms() -> u64 {
    120_000
}

/// `[nats]`: how the host reaches its NATS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma separated, as NATS clients take them.
    pub url: String,
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
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
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
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dirs: vec![PathBuf::from("plugins")],
            bundles: Vec::new(),
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
            max_instances: 1000,
            max_memory_mb: 512,
            epoch_tick_ms: 5,
        }
    }
}

impl SandboxConfig {
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
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            subject_prefix: "weir.dlq".into(),
            stream: "WEIR_DLQ".into(),
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
        if self.nats.url.trim().is_empty() {
            return err("nats.url", "must not be empty");
        }
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
        if self.sandbox.max_instances == 0 {
            return err("sandbox.max_instances", "must be at least 1");
        }
        if self.sandbox.max_memory_mb == 0 || self.sandbox.max_memory_mb > 4096 {
            return err("sandbox.max_memory_mb", "must be between 1 and 4096");
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

// ----------------------------------------------------------------------------
// plugin.toml

/// `plugin.toml`: one plugin's manifest, beside its `.wasm`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Names the plugin in logs, dead-letter subjects and grants.
    pub name: String,
    pub version: String,
    /// The component, relative to the bundle folder.
    pub wasm: PathBuf,
    #[serde(default)]
    pub description: Option<String>,
    /// What to listen to: one or more entries.
    pub subscribe: Vec<Subscription>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Strings handed to the plugin through `host.config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// `[auth]`: events must carry a valid producer token (the auth module).
    #[serde(default)]
    pub auth: Option<PluginAuth>,
}

/// One `[[subscribe]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// A NATS subject; `*` and `>` wildcards allowed.
    pub subject: String,
    #[serde(default)]
    pub mode: DeliveryMode,
    /// jetstream: the stream holding the subject.
    #[serde(default)]
    pub stream: Option<String>,
    /// core: a queue group, so several hosts share the work.
    #[serde(default)]
    pub queue: Option<String>,
    /// jetstream: the durable consumer's name; default
    /// `weir-<plugin>-<hash of the subject>`, shared by every host.
    #[serde(default)]
    pub durable: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// At most once: core NATS; retries happen in-process.
    #[default]
    Core,
    /// At least once: a durable JetStream consumer.
    Jetstream,
}

/// `[limits]`: what one event may cost.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub isolation: Isolation,
    /// reuse: events one warm instance serves before it is replaced.
    pub max_events_per_instance: u32,
    pub timeout_ms: u64,
    pub memory_mb: u32,
    /// Events of this plugin handled at once on this host.
    pub max_in_flight: u32,
    /// Events received but not yet started, per plugin; past it, core events are shed.
    pub queue: u32,
    /// Messages one event may publish (published plus returned).
    pub max_outputs: u32,
    /// Bytes (subject + payload + headers) one event may publish in all.
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            isolation: Isolation::Event,
            max_events_per_instance: 10_000,
            timeout_ms: 2_000,
            memory_mb: 64,
            max_in_flight: 32,
            queue: 1_024,
            max_outputs: 100,
            max_output_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A fresh instance per event: no state survives an event.
    #[default]
    Event,
    /// Warm instances serve several events; thrown away after any trap.
    Reuse,
}

/// `[retry]`: how often and how late failed events are tried again.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before retry n is `backoff_ms[n-1]`; the last value repeats.
    pub backoff_ms: Vec<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_ms: vec![100, 1_000],
        }
    }
}

impl RetryPolicy {
    /// The delay before the attempt after `failed_attempt` (1-based).
    pub fn delay_after(&self, failed_attempt: u32) -> std::time::Duration {
        let i = (failed_attempt.max(1) as usize - 1).min(self.backoff_ms.len().saturating_sub(1));
        std::time::Duration::from_millis(self.backoff_ms.get(i).copied().unwrap_or(0))
    }
}

impl Manifest {
    /// Parse and check a plugin.toml; `max_memory_mb` is the host's cap.
    pub fn parse(path: &Path, text: &str, max_memory_mb: u32) -> Result<Self, ConfigError> {
        let manifest: Self = parse_toml(path, text)?;
        manifest.validate(path, max_memory_mb)?;
        Ok(manifest)
    }

    fn validate(&self, path: &Path, max_memory_mb: u32) -> Result<(), ConfigError> {
        let err = |field: String, msg: String| Err(ConfigError::new(path, Some(&field), msg));
        if !is_plugin_name(&self.name) {
            return err(
                "name".into(),
                format!(
                    "{:?} is not a plugin name: use 1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit",
                    self.name
                ),
            );
        }
        if self.version.trim().is_empty() {
            return err("version".into(), "must not be empty".into());
        }
        if self.wasm.as_os_str().is_empty() {
            return err("wasm".into(), "must name the component file".into());
        }
        if self.subscribe.is_empty() {
            return err(
                "subscribe".into(),
                "at least one [[subscribe]] entry is needed".into(),
            );
        }
        for (i, sub) in self.subscribe.iter().enumerate() {
            let field = |f: &str| format!("subscribe[{i}].{f}");
            if !is_subscribe_subject(&sub.subject) {
                return err(
                    field("subject"),
                    format!("{:?} is not a valid NATS subject", sub.subject),
                );
            }
            match sub.mode {
                DeliveryMode::Core => {
                    if sub.stream.is_some() {
                        return err(
                            field("stream"),
                            "only jetstream subscriptions name a stream".into(),
                        );
                    }
                    if sub.durable.is_some() {
                        return err(
                            field("durable"),
                            "only jetstream subscriptions have a durable consumer".into(),
                        );
                    }
                }
                DeliveryMode::Jetstream => {
                    match sub.stream.as_deref() {
                        None | Some("") => {
                            return err(
                                field("stream"),
                                "a jetstream subscription must name its stream".into(),
                            );
                        }
                        Some(_) => {}
                    }
                    if let Some(durable) = &sub.durable
                        && !is_stream_name(durable)
                    {
                        return err(
                            field("durable"),
                            format!("{durable:?} is not a consumer name"),
                        );
                    }
                    if sub.queue.is_some() {
                        return err(
                            field("queue"),
                            "jetstream subscriptions share work through their durable consumer, not a queue group".into(),
                        );
                    }
                }
            }
            if let Some(q) = &sub.queue
                && (q.is_empty() || q.contains(char::is_whitespace))
            {
                return err(field("queue"), format!("{q:?} is not a queue group name"));
            }
        }
        let l = &self.limits;
        if l.timeout_ms == 0 {
            return err("limits.timeout_ms".into(), "must be at least 1".into());
        }
        if l.memory_mb == 0 || l.memory_mb > max_memory_mb {
            return err(
                "limits.memory_mb".into(),
                format!("must be between 1 and the host's sandbox.max_memory_mb ({max_memory_mb})"),
            );
        }
        if l.max_in_flight == 0 {
            return err("limits.max_in_flight".into(), "must be at least 1".into());
        }
        if l.queue == 0 {
            return err("limits.queue".into(), "must be at least 1".into());
        }
        if l.max_events_per_instance == 0 {
            return err(
                "limits.max_events_per_instance".into(),
                "must be at least 1".into(),
            );
        }
        if self.retry.max_attempts == 0 {
            return err(
                "retry.max_attempts".into(),
                "must be at least 1 (the first attempt counts)".into(),
            );
        }
        if self.retry.backoff_ms.is_empty() {
            return err("retry.backoff_ms".into(), "needs at least one delay".into());
        }
        if let Some(auth) = &self.auth {
            auth.validate(path)?;
        }
        Ok(())
    }
}

/// JetStream stream and consumer names: no dots, wildcards or whitespace.
pub fn is_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(|c: char| {
            c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control()
        })
}

/// Plugin names end up in subjects (`weir.dlq.<name>`) and durable names, so
/// they are kept to a safe alphabet.
pub fn is_plugin_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Result<Manifest, ConfigError> {
        Manifest::parse(Path::new("p/plugin.toml"), text, 512)
    }

    const MINIMAL: &str =
        "name = \"a\"\nversion = \"1\"\nwasm = \"a.wasm\"\n[[subscribe]]\nsubject = \"x.>\"\n";

    #[test]
    fn minimal_manifest_takes_defaults() {
        let m = manifest(MINIMAL).expect("minimal manifest parses");
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.subscribe[0].mode, DeliveryMode::Core);
        assert_eq!(m.retry.delay_after(1).as_millis(), 100);
        assert_eq!(m.retry.delay_after(7).as_millis(), 1000);
    }

    #[test]
    fn unknown_field_is_named_with_the_file() {
        let e = manifest(&format!("{MINIMAL}[limits]\ntimeout = 5\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("timeout"));
        let shown = e.to_string();
        assert!(
            shown.starts_with("p/plugin.toml: timeout: unknown field"),
            "{shown}"
        );
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let e = manifest(&MINIMAL.replace("x.>", "x.>.y")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribe[0].subject"));
        let e = manifest(&format!("{MINIMAL}[limits]\nmemory_mb = 100000\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limits.memory_mb"));
        let e = manifest(&MINIMAL.replace("name = \"a\"", "name = \"a.b\"")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = manifest(&format!("{MINIMAL}mode = \"jetstream\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribe[0].stream"));
    }

    #[test]
    fn missing_field_is_named() {
        let e = manifest("name = \"a\"\nversion = \"1\"\n[[subscribe]]\nsubject = \"x\"\n")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("wasm"));
    }

    #[test]
    fn host_config_defaults_and_errors() {
        let c = HostConfig::parse(Path::new("weir.toml"), "").expect("empty is fine");
        assert_eq!(c.nats.url, "nats://127.0.0.1:4222");
        let e = HostConfig::parse(Path::new("weir.toml"), "[nats]\nulr = \"x\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ulr"));
        assert!(e.to_string().starts_with("weir.toml: ulr:"), "{e}");
    }
}
