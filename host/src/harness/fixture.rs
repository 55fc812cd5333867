//! Fixture files: the events `weir test` runs, as JSON, and the `[config]`
//! overrides (`--set`, a fixture's `config`) each is run with.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::Deserialize;

use crate::event::{Event, Headers};

/// A fixture event, as written in a JSON file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub subject: String,
    /// The payload as text; or `payload_json`, or `payload_b64` (one of the three).
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub payload_json: Option<serde_json::Value>,
    #[serde(default)]
    pub payload_b64: Option<String>,
    #[serde(default)]
    pub headers: HeaderSpec,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Which attempt to simulate: 1 (the default) is the first delivery.
    #[serde(default)]
    pub attempt: Option<u32>,
    /// The event id (`test-<n>` by default): the prefix of its outputs'
    /// `Nats-Msg-Id` under `weir up`.
    #[serde(default)]
    pub id: Option<String>,
    /// `[config]` values for this event only, over plugin.toml's and `--set`'s.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
}

/// A fixture read from its file, checked and turned into the event to run.
#[derive(Debug)]
pub struct Loaded {
    /// `<file>#<index>`: how reports name it.
    pub name: String,
    pub event: Event,
    /// The fixture's own `config` values (strings).
    pub config: BTreeMap<String, String>,
}

impl Fixture {
    /// Check the fixture and build its event; `name` is `<file>#<index>`,
    /// `number` (1-based, across all files) makes the default id.
    pub fn load(self, name: String, number: usize) -> anyhow::Result<Loaded> {
        let attempt = match self.attempt {
            None => 1,
            Some(0) => bail!(
                "{name}: attempt: 0 is not an attempt: attempts count from 1 (the first delivery)"
            ),
            Some(n) => n,
        };
        let mut config = BTreeMap::new();
        for (key, value) in self.config {
            match value {
                serde_json::Value::String(text) => {
                    config.insert(key, text);
                }
                other => bail!(
                    "{name}: config.{key}: [config] values are strings: write \"{}\", not {other}",
                    other.to_string().trim_matches('"')
                ),
            }
        }
        let payload = payload_bytes(&name, &self.payload, &self.payload_json, &self.payload_b64)?
            .unwrap_or_default();
        let event = Event {
            id: self.id.unwrap_or_else(|| format!("test-{number}")),
            subject: self.subject,
            payload: payload.into(),
            headers: self.headers.to_headers(),
            reply_to: self.reply_to,
            attempt,
            principal: None,
        };
        Ok(Loaded {
            name,
            event,
            config,
        })
    }
}

/// `--set KEY=VALUE`: split at the first `=`.
pub fn parse_set(arg: &str) -> anyhow::Result<(String, String)> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => bail!("{arg:?}: expected KEY=VALUE (KEY a key of plugin.toml's [config])"),
    }
}

/// A payload given as text, as JSON, or as base64: at most one of the three.
pub fn payload_bytes(
    what: &str,
    text: &Option<String>,
    json: &Option<serde_json::Value>,
    b64: &Option<String>,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (text, json, b64) {
        (None, None, None) => Ok(None),
        (Some(text), None, None) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(json), None) => Ok(Some(serde_json::to_vec(json)?)),
        (None, None, Some(b64)) => Ok(Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .with_context(|| format!("{what}: payload_b64 is not base64"))?,
        )),
        _ => bail!("{what}: give one of payload, payload_json, payload_b64"),
    }
}

/// Headers as an object (`{"k": "v"}`, or `{"k": ["v1", "v2"]}`) or as pairs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderSpec {
    Map(BTreeMap<String, OneOrMany>),
    Pairs(Vec<(String, String)>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for HeaderSpec {
    fn default() -> Self {
        Self::Pairs(Vec::new())
    }
}

impl HeaderSpec {
    pub fn to_headers(&self) -> Headers {
        match self {
            Self::Pairs(pairs) => pairs.clone(),
            Self::Map(map) => map
                .iter()
                .flat_map(|(k, v)| match v {
                    OneOrMany::One(v) => vec![(k.clone(), v.clone())],
                    OneOrMany::Many(vs) => vs.iter().map(|v| (k.clone(), v.clone())).collect(),
                })
                .collect(),
        }
    }
}

/// Read a JSON file holding one object or an array of them; an entry that
/// does not parse is named by file and index.
pub fn read_json_list<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            serde_json::from_value(item).with_context(|| format!("{}#{i}", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(json: serde_json::Value) -> Fixture {
        serde_json::from_value(json).expect("a fixture")
    }

    #[test]
    fn attempt_zero_is_an_error_naming_the_fixture_and_field() {
        let f = fixture(serde_json::json!({"subject": "a", "attempt": 0}));
        let err = f.load("events.json#2".into(), 3).expect_err("refused");
        let text = format!("{err:#}");
        assert!(text.starts_with("events.json#2: attempt: 0"), "{text}");
        let f = fixture(serde_json::json!({"subject": "a"}));
        assert_eq!(f.load("x#0".into(), 1).expect("loads").event.attempt, 1);
    }

    #[test]
    fn config_values_must_be_strings() {
        let f = fixture(serde_json::json!({"subject": "a", "config": {"limit": 5}}));
        let text = format!("{:#}", f.load("e.json#0".into(), 1).expect_err("refused"));
        assert!(text.contains("e.json#0: config.limit:"), "{text}");
        assert!(text.contains("\"5\""), "{text}");
        let f = fixture(serde_json::json!({"subject": "a", "config": {"currency": "USD"}}));
        let loaded = f.load("e.json#0".into(), 1).expect("loads");
        assert_eq!(loaded.config["currency"], "USD");
    }

    #[test]
    fn set_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_set("url=http://x?a=b").expect("parses"),
            ("url".into(), "http://x?a=b".into())
        );
        assert_eq!(parse_set("empty=").expect("parses").1, "");
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("=x").is_err());
    }
}
