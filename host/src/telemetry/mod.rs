//! What weir shows of itself: log lines ([`logs`]); Prometheus metrics and
//! the health endpoints; W3C trace context and OTLP spans. Settings come from
//! `[telemetry]` in weir.toml ([`crate::config::TelemetryConfig`]).

pub mod http;
pub mod lag;
pub mod logs;
pub mod metrics;
pub mod traces;

pub use logs::{command_filter, host_filter, init};
