//! The `weir` binary as a user types it: flags anywhere on the line, logs and
//! verbosity, `weir pub`, `weir dlq`. Each test runs the real binary against
//! its own nats-server and real plugins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

/// `weir bench`: both isolation modes timed.
mod bench;
/// `weir dlq list` columns and JSON, `weir dlq replay --payload`.
mod dlq;
/// Global flags before or after the command, `RUST_LOG` and `WEIR_LOG`.
mod flags;
/// `weir up`'s log lines, `-v`, and the shutdown totals.
mod logs;
/// What `weir new` writes.
mod new;
/// `weir pub --request`: error replies, a stream's ack; replies on JetStream.
mod requests;

/// `weir` run to its end, in `dir` (so no ./weir.toml is read unless the test
/// wrote one there), with none of weir's variables inherited from the test's
/// environment and the compile cache in the build's temp folder.
pub fn weir_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(WEIR)
        .args(args)
        .current_dir(dir)
        .env_remove("WEIR_LOG")
        .env_remove("RUST_LOG")
        .env_remove("WEIR_NATS_URL")
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .envs(env.iter().copied())
        .output()
        .expect("run weir")
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Both streams, for assertion messages.
pub fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// `dir/weir.toml` for `server`, loading exactly `bundles`.
pub fn write_config(dir: &Path, server: &NatsServer, bundles: &[PathBuf]) -> PathBuf {
    let list = bundles
        .iter()
        .map(|b| format!("{:?}", path(b)))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[plugins]\ndirs = []\nbundles = [{list}]\n[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            server.url(),
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write weir.toml");
    config
}
