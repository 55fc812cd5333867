//! `[circuit]` in `plugin.toml`: when a plugin's retryable failures pile up,
//! stop feeding it for a cool-down instead of burning every event's attempts.
//! Off unless the table is present.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[circuit]`: the breaker's thresholds and cool-downs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Open when at least this share of the attempts in the window failed
    /// with a retryable failure (retry, timeout, trap, memory, ...). Rejects
    /// and other final failures are the event's fault, never the plugin's:
    /// they do not count either way.
    pub failure_ratio: f64,
    /// ... and the window holds at least this many attempts.
    pub min_events: u32,
    /// The sliding window the ratio is taken over.
    pub window_ms: u64,
    /// How long the circuit stays open before probes try again.
    pub open_ms: u64,
    /// The cool-down doubles each time the probes fail, up to this.
    pub max_open_ms: u64,
    /// Events let through at once while half-open; this many successes in a
    /// row close the circuit, one retryable failure opens it again.
    pub probes: u32,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_events: 20,
            window_ms: 10_000,
            open_ms: 5_000,
            max_open_ms: 300_000,
            probes: 3,
        }
    }
}

impl CircuitConfig {
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    pub fn open(&self) -> Duration {
        Duration::from_millis(self.open_ms)
    }

    pub fn max_open(&self) -> Duration {
        Duration::from_millis(self.max_open_ms)
    }

    pub(crate) fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, message: String| {
            Err(ConfigError::new(
                file,
                Some(&format!("circuit.{field}")),
                message,
            ))
        };
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return err(
                "failure_ratio",
                format!(
                    "{} is not a share of attempts (more than 0, at most 1)",
                    self.failure_ratio
                ),
            );
        }
        if self.min_events == 0 {
            return err("min_events", "must be at least 1".into());
        }
        if self.window_ms == 0 {
            return err("window_ms", "must be at least 1".into());
        }
        if self.open_ms == 0 {
            return err("open_ms", "must be at least 1".into());
        }
        if self.max_open_ms < self.open_ms {
            return err(
                "max_open_ms",
                format!(
                    "{} is below open_ms ({}): the cool-down only grows",
                    self.max_open_ms, self.open_ms
                ),
            );
        }
        if self.probes == 0 {
            return err("probes", "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_named_with_the_field() {
        let file = Path::new("p/plugin.toml");
        let bad = |edit: fn(&mut CircuitConfig)| {
            let mut c = CircuitConfig::default();
            edit(&mut c);
            c.validate(file).expect_err("refused").to_string()
        };
        assert!(bad(|c| c.failure_ratio = 0.0).contains("circuit.failure_ratio"));
        assert!(bad(|c| c.failure_ratio = 1.5).contains("circuit.failure_ratio"));
        assert!(bad(|c| c.failure_ratio = f64::NAN).contains("circuit.failure_ratio"));
        assert!(bad(|c| c.min_events = 0).contains("circuit.min_events"));
        assert!(bad(|c| c.max_open_ms = 10).contains("circuit.max_open_ms: 10 is below"));
        assert!(bad(|c| c.probes = 0).contains("circuit.probes"));
        assert!(CircuitConfig::default().validate(file).is_ok());
    }
}
