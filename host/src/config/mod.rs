//! The two files users write: `weir.toml` (the host) and `plugin.toml` (one
//! bundle). Both are parsed strictly (unknown fields are errors) and every
//! error names the file and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod host;
mod manifest;

pub use host::*;
pub use manifest::*;

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
pub(crate) fn parse_toml<T: for<'de> Deserialize<'de>>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
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
