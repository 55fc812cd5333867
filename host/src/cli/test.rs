//! `weir test`: run a plugin on fixture events, without NATS.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{GlobalArgs, load_config};
use crate::{harness, telemetry};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The bundle folder (holding plugin.toml).
    pub bundle: PathBuf,
    /// Fixture files: JSON objects (or arrays of them) with subject, payload /
    /// payload_json / payload_b64, headers, reply_to, attempt.
    #[arg(long = "event", short = 'e', value_name = "FILE", required = true, num_args = 1..)]
    pub events: Vec<PathBuf>,
    /// Expected results, one per event, in order: {"outputs": [...]} or {"failure": {"kind": ...}}.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
}

/// `--json` prints the report as JSON.
pub async fn test(args: TestArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    // The plugin's own lines are in the report.
    let filter = format!(
        "{},weir::plugin=off",
        telemetry::command_filter(global.verbose)
    );
    telemetry::init(&filter, false);
    let config = load_config(global)?;
    let report = harness::run(&config, &args.bundle, &args.events, args.expect.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        harness::print_human(&report, &mut out)?;
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
