//! `weir test`: run a plugin on fixture events, without NATS; its arguments
//! and the exit status it gives a language's test runner.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{GlobalArgs, load_config};
use crate::{harness, telemetry};

/// The exit status, for `-h` and `--help`.
macro_rules! exit_status {
    () => {
        "\
Exit status:
  0  every event ran to a result: its outputs, or a retry or reject the handler
     returned (or, with --expect, exactly what was expected)
  1  with --expect, an event's result differs from its expectation; without,
     the handler crashed or broke a limit (trap, timeout, memory, bad-output,
     forbidden-publish): name that failure in --expect to expect it
  2  the test could not run: a bad bundle, fixture, expectation or flag"
    };
}

/// What an expectation may say, for `--help`.
const LONG_HELP: &str = concat!(
    exit_status!(),
    "

Expectations (--expect FILE), one per event, in order; every field optional:
  {\"verdict\": \"done\" | \"retry\" | \"dead-letter\",
   \"failure\": {\"kind\": \"reject\" | \"retry\" | \"retry-exhausted\" | \"timeout\" | ...,
               \"message_contains\": \"...\"},
   \"attempts\": 3,         the attempt the verdict came at (Weir-Attempts)
   \"delay_ms\": 100,       the backoff before the next attempt (verdict retry)
   \"outputs\": [{\"subject\": \"...\", \"payload\" | \"payload_json\" | \"payload_b64\": ...,
                \"headers\": {...}}]}
An entry with neither verdict nor failure expects success. An output's
headers, when given, must be exactly those (any order; Nats-Msg-Id, which the
host adds when it publishes, is not among them)."
);

/// `weir test`'s arguments (`--json` prints the report as JSON).
#[derive(Debug, Args)]
#[command(after_help = exit_status!(), after_long_help = LONG_HELP)]
pub struct TestArgs {
    /// The bundle folder (holding plugin.toml), or a bundle archive.
    pub bundle: PathBuf,
    /// Fixture files: JSON objects (or arrays of them) with subject, payload /
    /// payload_json / payload_b64, headers, reply_to, attempt (1 to
    /// max_attempts), id, config.
    #[arg(long = "event", short = 'e', value_name = "FILE", required = true, num_args = 1..)]
    pub events: Vec<PathBuf>,
    /// Expected results, one per event, in order: verdict, failure, attempts,
    /// delay_ms, outputs (see --help).
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Run each event attempt after attempt, as the host would (the plugin's
    /// [retry] policy and backoff, not waited), until it is done or
    /// dead-lettered.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Override a [config] value of plugin.toml for this run (repeatable); a
    /// fixture's own "config" wins over it.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = harness::fixture::parse_set)]
    pub set: Vec<(String, String)>,
}

/// Run `weir test`: 0 when every event passed, 1 when one did not.
pub async fn test(args: TestArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    // The plugin's own lines are in the report.
    let filter = format!(
        "{},weir::plugin=off",
        telemetry::command_filter(global.verbose)
    );
    telemetry::init(&filter, false);
    let config = load_config(global)?;
    let options = harness::Options {
        events: args.events,
        expect: args.expect,
        follow: args.follow,
        set: args.set,
    };
    let report = harness::run(&config, &args.bundle, &options).await?;
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
