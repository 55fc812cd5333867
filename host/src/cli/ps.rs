//! `weir ps`: every live host of the fleet ([`crate::fleet`]), its plugins
//! with version, sha256 and state, and their counters.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{GlobalArgs, connect_cli};
use crate::telemetry;

#[derive(Debug, Args)]
pub struct PsArgs {
    /// How long to gather the hosts' answers.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

pub async fn ps(args: PsArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(&telemetry::command_filter(global.verbose), false);
    let client = connect_cli(global).await?;
    let hosts = crate::fleet::gather(&client, args.wait).await?;
    let mut out = std::io::stdout().lock();
    if global.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&hosts)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if hosts.is_empty() {
        writeln!(
            out,
            "no weir host answered on $SRV.STATS.{} within {}",
            crate::fleet::SERVICE,
            humantime::format_duration(args.wait)
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    for host in &hosts {
        let uptime = Duration::from_secs(host.uptime_ms / 1000);
        writeln!(
            out,
            "{}  {} pid {}  weir {}  up {}  nats {}{}",
            host.host,
            host.hostname,
            host.pid,
            host.weir_version,
            humantime::format_duration(uptime),
            host.nats_server,
            host.metrics
                .as_deref()
                .map(|m| format!("  metrics {m}"))
                .unwrap_or_default()
        )?;
        writeln!(
            out,
            "  {:<20} {:<10} {:<14} {:<10} {:>9} {:>9} {:>7} {:>6} {:>6}",
            "PLUGIN",
            "VERSION",
            "SHA256",
            "STATE",
            "RECEIVED",
            "SUCCEEDED",
            "FAILED",
            "DEAD",
            "SHED"
        )?;
        for p in &host.plugins {
            if let Some(reason) = &p.reason {
                writeln!(
                    out,
                    "  {:<20} {:<10} {:<14} {:<10} {reason}",
                    p.name, "-", "-", p.state
                )?;
                continue;
            }
            let sha = p.sha256.as_deref().unwrap_or("");
            writeln!(
                out,
                "  {:<20} {:<10} {:<14} {:<10} {:>9} {:>9} {:>7} {:>6} {:>6}",
                p.name,
                p.version.as_deref().unwrap_or("-"),
                &sha[..12.min(sha.len())],
                p.state,
                p.received,
                p.succeeded,
                p.failed_attempts,
                p.dead_lettered,
                p.shed
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
