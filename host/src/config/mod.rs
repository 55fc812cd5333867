//! The two files users write: `weir.toml` (the host) and `plugin.toml` (one
//! bundle). Both are parsed strictly (unknown fields are errors) and every
//! error names the file and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod auth;
mod circuit;
mod deploy;
mod host;
mod http;
mod locate;
mod manifest;
mod order;
mod schedule;
mod servers;
mod telemetry;

pub use circuit::CircuitConfig;
pub use deploy::DeployConfig;
pub use host::*;
pub use http::HttpConfig;
pub use manifest::*;
pub use order::OrderBy;
pub use schedule::{ScheduleEntry, Spec, ceil_second, parse_every, parse_instant};
pub use servers::{BadServerUrl, ServerUrls, redact_url};
pub use telemetry::TelemetryConfig;

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

/// Parse TOML strictly, turning serde's error into one that names the file,
/// the dotted path of the field at fault and its line.
pub(crate) fn parse_toml<T: for<'de> Deserialize<'de>>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // `message()`, not `Display`: Display quotes the source line, which
        // may hold a secret (a password in `nats.url`).
        let message = e.message().trim().to_owned();
        let span = e.span();
        let location = span
            .as_ref()
            .map(|span| format!(" (line {})", line_of(text, span.start)))
            .unwrap_or_default();
        let path = span.and_then(|span| locate::path_at(text, span));
        let field = field_path(&message, path);
        ConfigError::new(file, field.as_deref(), format!("{message}{location}"))
    })
}

/// The 1-based line of byte `at`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    // A span may start right after a newline: count newlines, not lines.
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The field an error is about. serde names only the last key ("unknown
/// field `x`", "missing field `x`"); the span gives the path to it: the key
/// itself for an unknown field, the table lacking it for a missing one.
fn field_path(message: &str, path: Option<String>) -> Option<String> {
    let named = || {
        let start = message.find('`')? + 1;
        let len = message[start..].find('`')?;
        Some(message[start..start + len].to_owned())
    };
    if message.starts_with("missing field") {
        let name = named()?;
        return Some(match path {
            Some(table) => format!("{table}.{name}"),
            None => name,
        });
    }
    if message.starts_with("unknown field") {
        return path.or_else(named);
    }
    path
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
