//! Command-line parsing. Each command parses its arguments and calls the library.
//!
//! # Layout
//!
//! - this file: the top-level parser, the entry point, and what every command
//!   shares (loading the config, connecting to NATS).
//! - [`up`]: `weir up`.
//! - [`test`]: `weir test`; [`bench`]: `weir bench`.
//! - [`pubsub`]: `weir pub` and `weir sub`.
//! - [`schedule`]: `weir schedule list|add|rm`, and `weir pub --in/--at`.
//! - [`dlq`]: `weir dlq list|show|replay|purge`.
//! - [`cache`]: `weir cache [prune|clear]`.
//! - [`circuit`]: `weir pause`, `weir resume`, `weir status`.
//! - [`bundle`]: `weir bundle pack|inspect`.
//! - [`ps`]: `weir ps`.
//! - [`deploy`]: `weir deploy`, `weir deployments`, `weir rollback`, `weir undeploy`.
//!
//! `weir keys|grant|token` live in [`crate::auth::commands`], `weir new` in
//! [`crate::scaffold`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::{HostConfig, ServerUrls};
use crate::transport;

pub mod bench;
pub mod bundle;
pub mod cache;
pub mod circuit;
pub mod deploy;
pub mod dlq;
pub mod ps;
pub mod pubsub;
pub mod schedule;
pub mod test;
pub mod up;

use circuit::{PauseArgs, ResumeArgs, StatusArgs};
use dlq::DlqArgs;
use pubsub::{PubArgs, SubArgs};
use test::TestArgs;
use up::UpArgs;

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "A host for WebAssembly event handlers on NATS"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: load plugins, subscribe, handle events until SIGINT/SIGTERM.
    Up(UpArgs),
    /// Run a plugin on fixture events, without NATS; exit 1 on a mismatch with
    /// --expect, or a crash.
    Test(TestArgs),
    /// Time a plugin on fixture events, without NATS, in both isolation modes:
    /// µs/event (p50, p99), events/s per core, instance memory high-water.
    Bench(bench::BenchArgs),
    /// Publish messages (a small producer for demos and checks).
    Pub(PubArgs),
    /// Print messages arriving on a subject.
    Sub(SubArgs),
    /// The schedules NATS keeps for weir: list, add, remove.
    Schedule(schedule::ScheduleArgs),
    /// Generate signing keys for grants and producer tokens.
    Keys(crate::auth::commands::KeysArgs),
    /// Sign or verify a plugin's grant (grant.jwt in its bundle).
    Grant(crate::auth::commands::GrantArgs),
    /// Mint producer tokens (for tests and demos).
    Token(crate::auth::commands::TokenArgs),
    /// Inspect, replay and purge the dead-letter queue.
    Dlq(DlqArgs),
    /// Stop a plugin's events on every host (its circuit opened by hand).
    Pause(PauseArgs),
    /// Let a paused plugin's events flow again (its circuit closed by hand).
    Resume(ResumeArgs),
    /// What every running host reports: plugins, circuits, counters.
    Status(StatusArgs),
    /// Every live host (the `weir` NATS service): id, uptime, plugins with
    /// version, sha256 and state (running, paused, refused and why), counters.
    Ps(ps::PsArgs),
    /// Create a plugin folder (Rust, Python, JavaScript or C) that builds and passes `weir test`.
    New(crate::scaffold::NewArgs),
    /// Show the compile cache (folder, entries, size and cap); prune or clear it.
    Cache(cache::CacheArgs),
    /// Pack a bundle folder into one archive, or inspect one.
    Bundle(bundle::BundleArgs),
    /// Upload a bundle to NATS (Object Store) and record it as the plugin's
    /// deployment (KV).
    Deploy(deploy::DeployArgs),
    /// List what is deployed, or one plugin's deployment history.
    Deployments(deploy::DeploymentsArgs),
    /// Point a plugin's deployment at an earlier revision again.
    Rollback(deploy::RollbackArgs),
    /// Remove a plugin's deployment (its history and archives are kept).
    Undeploy(deploy::UndeployArgs),
}

/// Flags every command takes, before or after its name: `weir --json dlq
/// list` and `weir dlq list --json` are the same. A command that has no use
/// for one (`weir keys gen --nats ...`) ignores it.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The host config; default ./weir.toml when it exists, else built-in defaults.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// NATS server URL(s), comma separated: replaces nats.url (credentials
    /// and TLS still come from the config).
    #[arg(
        long,
        env = "WEIR_NATS_URL",
        value_name = "URL[,URL...]",
        hide_env_values = true,
        global = true
    )]
    pub nats: Option<String>,
    /// Print JSON: the report or data a command prints (for `weir up`: JSON log lines).
    #[arg(long, global = true)]
    pub json: bool,
    /// More log lines: -v weir's debug lines, -vv its trace lines; other
    /// crates stay at warn. RUST_LOG (or WEIR_LOG), when set, decides instead.
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Run a parsed command; `Ok` carries the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Up(args) => up::up(args, global).await,
        Command::Test(args) => test::test(args, global).await,
        Command::Bench(args) => bench::bench(args, global).await,
        Command::Pub(args) => pubsub::publish(args, global).await,
        Command::Sub(args) => pubsub::subscribe(args, global).await,
        Command::Schedule(args) => schedule::schedule(args, global).await,
        Command::Keys(args) => crate::auth::commands::keys(args, global.json),
        Command::Grant(args) => {
            crate::auth::commands::grant(args, global.config.as_deref(), global.json)
        }
        Command::Token(args) => crate::auth::commands::token(args, global.json),
        Command::Dlq(args) => dlq::dlq(args, global).await,
        Command::Pause(args) => circuit::pause(args, global).await,
        Command::Resume(args) => circuit::resume(args, global).await,
        Command::Status(args) => circuit::status(args, global).await,
        Command::Ps(args) => ps::ps(args, global).await,
        Command::New(args) => crate::scaffold::run(args, global.json),
        Command::Cache(args) => cache::cache(args, global),
        Command::Bundle(args) => bundle::bundle(args, global),
        Command::Deploy(args) => deploy::deploy(args, global).await,
        Command::Deployments(args) => deploy::deployments(args, global).await,
        Command::Rollback(args) => deploy::rollback(args, global).await,
        Command::Undeploy(args) => deploy::undeploy(args, global).await,
    }
}

pub(crate) fn load_config(global: &GlobalArgs) -> anyhow::Result<HostConfig> {
    Ok(load_config_from(global)?.0)
}

/// The host config and the file it came from (`None`: built-in defaults).
pub(crate) fn load_config_from(
    global: &GlobalArgs,
) -> anyhow::Result<(HostConfig, Option<PathBuf>)> {
    let file = match &global.config {
        Some(path) => Some(path.clone()),
        None if Path::new("weir.toml").is_file() => Some(PathBuf::from("weir.toml")),
        None => None,
    };
    let config = match &file {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::default(),
    };
    Ok((config, file))
}

/// `--nats` (or `WEIR_NATS_URL`): one URL or several, comma separated. Parsed
/// here rather than by clap, whose error would quote the value, password and all.
pub(crate) fn parse_nats_flag(urls: &str) -> anyhow::Result<ServerUrls> {
    urls.parse().map_err(|e| anyhow::anyhow!("--nats: {e}"))
}

/// Connect as the host would (weir.toml's credentials and TLS), but give up
/// after 10 s instead of retrying for ever.
pub(crate) async fn connect_cli(global: &GlobalArgs) -> anyhow::Result<async_nats::Client> {
    connect_cli_with(load_config(global)?, global).await
}

/// [`connect_cli`] with the config already loaded.
pub(crate) async fn connect_cli_with(
    mut config: HostConfig,
    global: &GlobalArgs,
) -> anyhow::Result<async_nats::Client> {
    if let Some(urls) = &global.nats {
        config.nats.url = parse_nats_flag(urls)?;
    }
    tokio::time::timeout(Duration::from_secs(10), transport::connect(&config.nats))
        .await
        .with_context(|| format!("no NATS server answered at {} within 10 s", config.nats.url))?
}
