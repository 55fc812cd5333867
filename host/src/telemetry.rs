//! Logging: `tracing` to stderr, filtered by `WEIR_LOG` (EnvFilter syntax),
//! as text or JSON lines.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `default` is the filter when `WEIR_LOG` is unset.
pub fn init(default: &str, json: bool) {
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
