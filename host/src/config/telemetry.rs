//! `[telemetry]` in weir.toml: the HTTP endpoint (metrics, health) and trace
//! export. Everything is off unless set.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// `[telemetry]`: where weir shows what it does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `GET /metrics`, `/healthz` and `/readyz` on this address; off when
    /// absent (`weir up --metrics ADDR` sets it too).
    pub listen: Option<SocketAddr>,
    /// How often JetStream consumer lag (`num_pending`, `num_ack_pending`)
    /// is read from the server for the metrics.
    pub lag_poll_ms: u64,
    /// OTLP/HTTP (protobuf) traces endpoint, e.g.
    /// `http://127.0.0.1:4318/v1/traces`; no export when absent.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces (events that arrive without a `traceparent`)
    /// that are sampled; an incoming `traceparent` keeps its own decision.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            listen: None,
            lag_poll_ms: 5_000,
            otlp_endpoint: None,
            service_name: "weir".into(),
            sample_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    pub(crate) fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, msg: &str| {
            Err(ConfigError::new(
                file,
                Some(&format!("telemetry.{field}")),
                msg,
            ))
        };
        if self.lag_poll_ms < 100 {
            return err("lag_poll_ms", "must be at least 100");
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return err("sample_ratio", "must be between 0 and 1");
        }
        if self.service_name.trim().is_empty() {
            return err("service_name", "must not be empty");
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return err(
                "otlp_endpoint",
                "must be an http:// or https:// URL (OTLP over HTTP, protobuf)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostConfig;

    #[test]
    fn off_by_default_and_bad_values_are_named() {
        let parse = |text: &str| HostConfig::parse(Path::new("weir.toml"), text);
        let c = parse("").expect("empty");
        assert_eq!(c.telemetry, TelemetryConfig::default());
        assert!(c.telemetry.listen.is_none() && c.telemetry.otlp_endpoint.is_none());
        let c = parse("[telemetry]\nlisten = \"127.0.0.1:9464\"\n").expect("listen");
        assert_eq!(c.telemetry.listen.map(|a| a.port()), Some(9464));
        let e = parse("[telemetry]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("telemetry.listen"));
        let e = parse("[telemetry]\nsample_ratio = 1.5\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("telemetry.sample_ratio"));
        let e = parse("[telemetry]\notlp_endpoint = \"127.0.0.1:4318\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("telemetry.otlp_endpoint"));
    }
}
