//! `plugin.toml`: one bundle's manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::auth::PluginAuth;
use super::circuit::CircuitConfig;
use super::schedule::ScheduleEntry;
use super::{ConfigError, is_plugin_name, is_stream_name, parse_toml};
use crate::event::is_subscribe_subject;
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
    /// `[circuit]`: the circuit breaker; off unless present.
    #[serde(default)]
    pub circuit: Option<CircuitConfig>,
    /// `[webhook]`: where the final status of an event that came through the
    /// HTTP gateway is POSTed, when its request named no `Weir-Callback`.
    #[serde(default)]
    pub webhook: Option<WebhookTarget>,
    /// `[[schedule]]`: ticks the NATS server publishes on a schedule (the
    /// [`crate::schedule`] module writes their definitions at load).
    #[serde(default)]
    pub schedule: Vec<ScheduleEntry>,
}

/// `[webhook]` in plugin.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// An http:// or https:// URL.
    pub url: String,
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
    /// Events handed to the plugin's `handle-batch` together; off when absent.
    #[serde(default)]
    pub batch: Option<BatchSpec>,
    /// jetstream: events of one key (see [`OrderBy`]) run one at a time, in
    /// stream order; off when absent.
    #[serde(default)]
    pub order_by: Option<super::OrderBy>,
}

/// `batch = { max_events = 100, max_wait_ms = 20 }` on a `[[subscribe]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// The most events in one call.
    pub max_events: u32,
    /// How long the first event of a batch waits for more before the batch
    /// runs with what it has.
    #[serde(default = "BatchSpec::default_wait_ms")]
    pub max_wait_ms: u64,
}

impl BatchSpec {
    /// The most events one batch may hold.
    pub const MAX_EVENTS: u32 = 10_000;
    /// The longest an event may wait for a batch to fill.
    pub const MAX_WAIT_MS: u64 = 60_000;

    fn default_wait_ms() -> u64 {
        20
    }
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
    /// Calls of this plugin running at once on this host: events, or batches
    /// for a subscription with `batch`.
    pub max_in_flight: u32,
    /// Events received but not yet started, per plugin; past it, core events are shed.
    pub queue: u32,
    /// Messages one event may publish (published plus returned).
    pub max_outputs: u32,
    /// Bytes (subject + payload + headers) one event may publish in all.
    pub max_output_bytes: u64,
}

impl Manifest {
    /// The largest `batch.max_events` of its subscriptions; 1 without batches.
    pub fn largest_batch(&self) -> u32 {
        self.subscribe
            .iter()
            .filter_map(|s| s.batch.map(|b| b.max_events))
            .max()
            .unwrap_or(1)
    }

    /// Events of this plugin one host takes at once: `max_in_flight` calls,
    /// each of up to [`largest_batch`](Self::largest_batch) events.
    pub fn events_in_flight(&self) -> u32 {
        self.limits
            .max_in_flight
            .saturating_mul(self.largest_batch())
    }
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
            if sub.order_by.is_some() {
                if sub.mode != DeliveryMode::Jetstream {
                    return err(
                        field("order_by"),
                        "only a jetstream subscription keeps order per key (core NATS redelivers nothing to order)".into(),
                    );
                }
                if sub.batch.is_some() {
                    return err(
                        field("order_by"),
                        "order_by and batch cannot be combined: a batch runs events of one key together".into(),
                    );
                }
            }
            if let Some(batch) = &sub.batch {
                if !(1..=BatchSpec::MAX_EVENTS).contains(&batch.max_events) {
                    return err(
                        field("batch.max_events"),
                        format!("must be 1 to {}", BatchSpec::MAX_EVENTS),
                    );
                }
                if batch.max_wait_ms > BatchSpec::MAX_WAIT_MS {
                    return err(
                        field("batch.max_wait_ms"),
                        format!("must be at most {}", BatchSpec::MAX_WAIT_MS),
                    );
                }
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
        if let Some(webhook) = &self.webhook
            && !(webhook.url.starts_with("http://") || webhook.url.starts_with("https://"))
        {
            return err(
                "webhook.url".into(),
                format!("{:?} must be an http:// or https:// URL", webhook.url),
            );
        }
        if let Some(circuit) = &self.circuit {
            circuit.validate(path)?;
        }
        super::schedule::validate(&self.schedule, path)?;
        Ok(())
    }
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
        assert_eq!(e.field.as_deref(), Some("limits.timeout"));
        let shown = e.to_string();
        assert!(
            shown.starts_with("p/plugin.toml: limits.timeout: unknown field"),
            "{shown}"
        );
    }

    /// Issue 8: the error names the table and the line, not just the key.
    #[test]
    fn unknown_field_names_its_table_and_line() {
        let text = format!("{MINIMAL}\n[limits]\nmemory_mb = 32\ntimeout_msec = 5\n");
        let e = manifest(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limits.timeout_msec"));
        let shown = e.to_string();
        assert!(
            shown.starts_with(
                "p/plugin.toml: limits.timeout_msec: unknown field `timeout_msec`, expected one of"
            ),
            "{shown}"
        );
        assert!(shown.ends_with("(line 9)"), "{shown}");

        let text = MINIMAL.replace("subject = ", "subjct = ");
        let e = manifest(&format!("{text}[[subscribe]]\nsubject = \"y\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribe[0].subjct"));
        let text = format!("{MINIMAL}[[subscribe]]\nsubject = \"y\"\nqueu = \"q\"\n");
        let e = manifest(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribe[1].queu"));
        assert!(e.to_string().ends_with("(line 8)"), "{e}");
        let e = manifest(&format!("{MINIMAL}[auth]\nissuers = [\"b\"]\nbogus = 1\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("auth.bogus"));
        let text =
            format!("{MINIMAL}[auth]\nissuers = [\"b\"]\n[auth.required_claims]\nscope = 1\n");
        let e = manifest(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("auth.required_claims.scope"));
        let e = manifest(&format!("{MINIMAL}[limits]\ntimeout_ms = \"slow\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limits.timeout_ms"));
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
        // order_by: jetstream only, never with batch, in one of two forms.
        let e = manifest(&format!("{MINIMAL}order_by = \"subject:2\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribe[0].order_by"));
        assert!(e.message.contains("only a jetstream subscription"), "{e}");
        let js = format!("{MINIMAL}mode = \"jetstream\"\nstream = \"S\"\n");
        let ok = manifest(&format!("{js}order_by = \"header:Order-Id\"\n")).unwrap();
        assert_eq!(
            ok.subscribe[0].order_by,
            Some(super::super::OrderBy::Header("Order-Id".into()))
        );
        let e = manifest(&format!(
            "{js}order_by = \"subject:2\"\nbatch = {{ max_events = 4 }}\n"
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribe[0].order_by"));
        let e = manifest(&format!("{js}order_by = \"token:2\"\n")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribe[0].order_by"));
        assert!(e.to_string().contains("subject:N"), "{e}");
    }

    #[test]
    fn missing_field_is_named() {
        let e = manifest("name = \"a\"\nversion = \"1\"\n[[subscribe]]\nsubject = \"x\"\n")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("wasm"));
        let e = manifest(&MINIMAL.replace("subject = \"x.>\"", "mode = \"core\"")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subscribe[0].subject"));
    }
}
