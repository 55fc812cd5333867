//! `weir up`: run the host until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::{GlobalArgs, load_config_from, parse_nats_flag};
use crate::config::PluginsConfig;
use crate::{dev, host, telemetry};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Load every bundle folder inside DIR (repeatable). --plugins and
    /// --bundle replace the config's whole plugin set (plugins.dirs and
    /// plugins.bundles).
    #[arg(long, value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
    /// Load the bundle in FOLDER (repeatable); replaces the config's plugin
    /// set, like --plugins.
    #[arg(long = "bundle", value_name = "FOLDER")]
    pub bundles: Vec<PathBuf>,
    /// Start a local nats-server with JetStream if none answers at the URL.
    #[arg(long)]
    pub dev: bool,
    /// Where --dev keeps the server's store.
    #[arg(long, value_name = "DIR", default_value = ".weir")]
    pub data_dir: PathBuf,
    /// Log JSON lines instead of text (the same as --json).
    #[arg(long)]
    pub log_json: bool,
    /// Load a local bundle again when its wasm, plugin.toml or grant
    /// changes, and swap it in (sets plugins.watch).
    #[arg(long)]
    pub watch: bool,
    /// Run what `weir deploy` put in the deployments bucket and follow its
    /// changes (sets deploy.watch).
    #[arg(long)]
    pub watch_deployments: bool,
    /// Serve /metrics, /healthz and /readyz on ADDR (sets telemetry.listen).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Paths for a log line: comma separated, or "none".
fn path_list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "none".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn up(args: UpArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(
        &telemetry::host_filter(global.verbose),
        args.log_json || global.json,
    );
    let shutdown = shutdown_signal()?;
    let (mut config, file) = load_config_from(global)?;
    match &file {
        Some(file) => tracing::info!(config = %file.display(), "weir up: config file"),
        None => tracing::info!("weir up: no config file (no ./weir.toml), built-in defaults"),
    }
    // Either flag means "these plugins": mixing them with the config's set
    // would load bundles nobody asked for on the command line.
    let from_flags = !args.plugins.is_empty() || !args.bundles.is_empty();
    if from_flags {
        config.plugins = PluginsConfig {
            dirs: args.plugins.clone(),
            bundles: args.bundles.clone(),
            watch: config.plugins.watch,
        };
    }
    config.plugins.watch |= args.watch;
    config.deploy.watch |= args.watch_deployments;
    tracing::info!(
        dirs = %path_list(&config.plugins.dirs),
        bundles = %path_list(&config.plugins.bundles),
        from = if from_flags { "--plugins/--bundle" } else { "config" },
        "weir up: plugins"
    );
    if let Some(urls) = &global.nats {
        config.nats.url = parse_nats_flag(urls)?;
    }
    tracing::info!(servers = %config.nats.url, "weir up: NATS servers");
    if let Some(addr) = args.metrics {
        config.telemetry.listen = Some(addr);
    }
    if config.nats.url.has_credentials() {
        tracing::warn!(
            "nats.url: credentials in a URL are not used; give nats.user with password_file or password_env, or token_file / token_env"
        );
    }
    let _dev_server = if args.dev {
        let urls = config.nats.url.clone();
        let data_dir = args.data_dir.clone();
        tokio::task::spawn_blocking(move || dev::ensure_nats(&urls, &data_dir)).await??
    } else {
        None
    };
    host::run(&config, args.dev, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed when
/// this is called, not when the future is first polled, so a signal that
/// arrives while the host is still starting is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}
