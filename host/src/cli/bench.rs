//! `weir bench BUNDLE --event F [--isolation event|reuse] [--n N] [--batch N]`: a plugin
//! author's measure of a handler ([`crate::harness::bench`]).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{GlobalArgs, load_config};
use crate::config::Isolation;
use crate::harness;
use crate::telemetry;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The bundle folder (holding plugin.toml), or a bundle archive.
    pub bundle: PathBuf,
    /// Fixture files, as `weir test` takes them; the events run in turn.
    #[arg(long = "event", short = 'e', value_name = "FILE", required = true, num_args = 1..)]
    pub events: Vec<PathBuf>,
    /// The mode measured first (default: plugin.toml's); the other follows.
    #[arg(long, value_enum)]
    pub isolation: Option<Mode>,
    /// Events timed per mode, after a warm-up of a tenth of them (at most 100).
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Events per call: more than 1 runs them in batches (`handle-batch`,
    /// or `handle` per event in one instance), one instance per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Override a [config] value of plugin.toml (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = harness::fixture::parse_set)]
    pub set: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// A fresh instance per event.
    Event,
    /// Warm instances reused across events.
    Reuse,
}

pub async fn bench(args: BenchArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let filter = format!(
        "{},weir::plugin=off",
        telemetry::command_filter(global.verbose)
    );
    telemetry::init(&filter, false);
    let config = load_config(global)?;
    let options = harness::bench::Options {
        events: args.events,
        isolation: args.isolation.map(|m| match m {
            Mode::Event => Isolation::Event,
            Mode::Reuse => Isolation::Reuse,
        }),
        n: args.n,
        set: args.set,
        batch: args.batch,
    };
    let report = harness::bench::run(&config, &args.bundle, &options).await?;
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        harness::bench::print_human(&report, &mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}
