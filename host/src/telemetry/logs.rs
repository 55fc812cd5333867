//! Logging: `tracing` to stderr, as text or JSON lines.
//!
//! What is logged: each command's default filter (weir's own lines at a level
//! set by `-v`, every other crate at warn), unless `RUST_LOG` is set, or
//! `WEIR_LOG`, which wins over `RUST_LOG` (weir's older name for it, and a way
//! to filter weir without touching other programs' `RUST_LOG`). Both take
//! EnvFilter syntax: `RUST_LOG=info,weir_host::pipeline=trace`.
//!
//! Targets: weir's own lines are `weir_host::<module>`, a plugin's are
//! `weir::plugin`; a filter on `weir` covers both.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// The variables that replace the default filter, the first set one winning.
const FILTER_VARS: [&str; 2] = ["WEIR_LOG", "RUST_LOG"];

/// `weir up`'s default filter at `-v` count `verbose`: weir's lines (its own
/// and its plugins') at info, debug (`-v`) or trace (`-vv`); wasmtime,
/// cranelift, async-nats and the rest at warn, whatever the count.
pub fn host_filter(verbose: u8) -> String {
    weir_at(match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    })
}

/// The other commands' default filter: warnings only, and weir's own lines
/// at debug (`-v`) or trace (`-vv`).
pub fn command_filter(verbose: u8) -> String {
    match verbose {
        0 => "warn".to_owned(),
        1 => weir_at("debug"),
        _ => weir_at("trace"),
    }
}

fn weir_at(level: &str) -> String {
    format!("warn,weir={level}")
}

/// The filter in force: `WEIR_LOG` or `RUST_LOG` when set (and not empty),
/// else `default`. A variable that does not parse is reported on stderr and
/// the default used, rather than logging nothing.
fn filter(default: &str) -> EnvFilter {
    for var in FILTER_VARS {
        let Ok(value) = std::env::var(var) else {
            continue;
        };
        if value.trim().is_empty() {
            continue;
        }
        match EnvFilter::builder().parse(&value) {
            Ok(filter) => return filter,
            Err(e) => {
                eprintln!("warning: {var}={value:?} is not a log filter ({e}); using {default:?}");
                break;
            }
        }
    }
    EnvFilter::new(default)
}

/// Install the global subscriber, filtered by [`filter`]`(default)`.
pub fn init(default: &str, json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weir_is_louder_with_each_v_and_the_rest_stays_at_warn() {
        assert_eq!(host_filter(0), "warn,weir=info");
        assert_eq!(host_filter(1), "warn,weir=debug");
        assert_eq!(host_filter(2), "warn,weir=trace");
        assert_eq!(host_filter(9), "warn,weir=trace");
        assert_eq!(command_filter(0), "warn");
        assert_eq!(command_filter(1), "warn,weir=debug");
    }
}
