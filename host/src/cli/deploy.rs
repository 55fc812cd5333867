//! `weir deploy BUNDLE`, `weir deployments [history NAME]`, `weir rollback
//! NAME [--to REVISION]` and `weir undeploy NAME`: the fleet's desired state
//! in NATS ([`crate::deploy`]).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{GlobalArgs, connect_cli_with, load_config};
use crate::bundle::{Bundle, archive};
use crate::config::HostConfig;
use crate::deploy::{Buckets, Deployment};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A bundle archive (weir bundle pack) or folder (packed on the way).
    pub bundle: PathBuf,
}

#[derive(Debug, Args)]
pub struct DeploymentsArgs {
    #[command(subcommand)]
    pub command: Option<DeploymentsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// Every revision kept of one plugin's deployment record.
    History { name: String },
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub name: String,
    /// The revision to go back to (weir deployments history NAME); default:
    /// the latest earlier one that deployed something else.
    #[arg(long, value_name = "REVISION")]
    pub to: Option<u64>,
}

#[derive(Debug, Args)]
pub struct UndeployArgs {
    pub name: String,
}

async fn buckets(config: HostConfig, global: &GlobalArgs, create: bool) -> anyhow::Result<Buckets> {
    let deploy = config.deploy.clone();
    let client = connect_cli_with(config, global).await?;
    let js = async_nats::jetstream::new(client);
    Buckets::open(&js, &deploy, create).await
}

pub async fn deploy(args: DeployArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(global)?;
    let max_memory_mb = config.sandbox.max_memory_mb;
    let (bundle, bytes) = if archive::is_archive(&args.bundle) {
        // Read once: what is checked is what is uploaded.
        let bytes = std::fs::read(&args.bundle)
            .with_context(|| format!("cannot read {}", args.bundle.display()))?;
        let size = bytes.len() as u64;
        if size > archive::MAX_ARCHIVE_BYTES {
            anyhow::bail!(
                "{}: {size} bytes: larger than a bundle archive may be",
                args.bundle.display()
            );
        }
        (
            Bundle::from_archive_bytes(&args.bundle, &bytes, max_memory_mb)?,
            bytes,
        )
    } else {
        archive::pack_bytes(&args.bundle, max_memory_mb)?
    };
    let buckets = buckets(config, global, true).await?;
    let (record, revision) = buckets.deploy(&bundle, &bytes, None).await?;
    report(global, &record, revision, "deployed")
}

pub async fn deployments(args: DeploymentsArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let buckets = buckets(load_config(global)?, global, false).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        None => {
            let list = buckets.list().await?;
            if global.json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|(d, revision)| serde_json::json!({ "revision": revision, "deployment": d }))
                    .collect();
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                writeln!(out, "nothing deployed")?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(
                out,
                "{:<20} {:<10} {:<14} {:>4}  {:<24} BY",
                "NAME", "VERSION", "SHA256", "REV", "AT"
            )?;
            for (d, revision) in &list {
                writeln!(
                    out,
                    "{:<20} {:<10} {:<14} {:>4}  {:<24} {}{}",
                    d.name,
                    d.version,
                    &d.sha256[..12.min(d.sha256.len())],
                    revision,
                    d.at,
                    d.by,
                    d.note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                )?;
            }
        }
        Some(DeploymentsCommand::History { name }) => {
            let history = buckets.history(&name).await?;
            if global.json {
                serde_json::to_writer_pretty(&mut out, &history)?;
                writeln!(out)?;
                return Ok(ExitCode::SUCCESS);
            }
            if history.is_empty() {
                writeln!(out, "{name}: no history")?;
            }
            for r in &history {
                match &r.deployment {
                    Some(d) => writeln!(
                        out,
                        "{:>4}  {:<24} {} {} (sha256 {}) by {}{}",
                        r.revision,
                        r.at,
                        d.name,
                        d.version,
                        &d.sha256[..12.min(d.sha256.len())],
                        d.by,
                        d.note
                            .as_deref()
                            .map(|n| format!(", {n}"))
                            .unwrap_or_default()
                    )?,
                    None => writeln!(
                        out,
                        "{:>4}  {:<24} undeployed ({})",
                        r.revision, r.at, r.operation
                    )?,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(args: RollbackArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let buckets = buckets(load_config(global)?, global, false).await?;
    let (record, revision, to) = buckets.rollback(&args.name, args.to).await?;
    report(
        global,
        &record,
        revision,
        &format!("rolled back to revision {to}:"),
    )
}

pub async fn undeploy(args: UndeployArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let buckets = buckets(load_config(global)?, global, false).await?;
    let record = buckets.undeploy(&args.name).await?;
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "undeployed": record }))?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "undeployed {} (was {}); its history and archives are kept: weir rollback {} brings it back",
            record.name, record.version, record.name
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report(
    global: &GlobalArgs,
    record: &Deployment,
    revision: u64,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({ "revision": revision, "deployment": record }),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{what} {} {} (wasm sha256 {}, object {}, revision {revision})",
            record.name, record.version, record.sha256, record.object
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
