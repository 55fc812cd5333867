//! `weir pause`, `weir resume` and `weir status`: an operator's hand on a
//! plugin's circuit (the same lever an open `[circuit]` pulls: the plugin's
//! JetStream consumers paused on the server, every host told on
//! `weir.circuit.<plugin>`), and what every running host reports.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::{GlobalArgs, connect_cli, load_config};
use crate::config::{DeliveryMode, HostConfig};
use crate::pipeline::rfc3339;
use crate::telemetry;
use crate::transport::circuit::{Consumers, Control, control_subject, set_paused};
use crate::transport::jetstream::ConsumerSpec;

/// How long `weir pause` without `--for` lasts: until `weir resume`, in
/// practice (a consumer pause needs a deadline).
const UNTIL_RESUMED: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The plugin's name (plugin.toml `name`).
    pub plugin: String,
    /// How long (`30s`, `10m`, `2h`); default until `weir resume`.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The plugin's name (plugin.toml `name`).
    pub plugin: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this plugin.
    #[arg(long)]
    pub plugin: Option<String>,
    /// How long to gather the hosts' answers.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// The JetStream consumers of `plugin`, from its bundle among the config's
/// plugins; `None` when no bundle of that name is there. Only manifests are
/// read, and one that cannot be read is skipped with a warning: during an
/// incident a broken bundle elsewhere must not block a pause.
fn consumers_of(config: &HostConfig, plugin: &str) -> anyhow::Result<Option<Vec<ConsumerSpec>>> {
    let mut folders = config.plugins.bundles.clone();
    for dir in &config.plugins.dirs {
        folders.extend(crate::bundle::discover(dir)?);
    }
    for folder in folders {
        let manifest = match crate::bundle::read_manifest(&folder, config.sandbox.max_memory_mb) {
            Ok(manifest) => manifest,
            Err(e) => {
                tracing::warn!("skipping {}: {e}", folder.display());
                continue;
            }
        };
        if manifest.name != plugin {
            continue;
        }
        let specs = manifest
            .subscribe
            .iter()
            .filter(|s| s.mode == DeliveryMode::Jetstream)
            .map(|s| ConsumerSpec::new(&manifest, s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok(Some(specs));
    }
    Ok(None)
}

/// `weir pause` (with `until`) and `weir resume` (without).
async fn set(
    plugin: &str,
    until: Option<SystemTime>,
    global: &GlobalArgs,
) -> anyhow::Result<ExitCode> {
    telemetry::init(&telemetry::command_filter(global.verbose), false);
    let config = load_config(global)?;
    let client = connect_cli(global).await?;
    let features = crate::transport::features(&client)?;
    let specs = consumers_of(&config, plugin)?;
    let mut notes = Vec::new();
    let mut paused_on_server = 0;
    match &specs {
        None => notes.push(format!(
            "no bundle named {plugin} among the config's plugins: its JetStream consumers, if any, \
             are left alone; running hosts still hear it on {}",
            control_subject(plugin)
        )),
        Some(specs) if !specs.is_empty() && !features.consumer_pause() => notes.push(format!(
            "nats-server {} has no consumer pause (2.11+): only running hosts hold back",
            features.version
        )),
        Some(specs) if !specs.is_empty() => {
            let consumers = Consumers {
                js: Some(async_nats::jetstream::new(client.clone())),
                specs: specs.clone(),
            };
            set_paused(&consumers, until).await?;
            paused_on_server = specs.len();
        }
        Some(_) => {}
    }
    let control = match until {
        Some(until) => Control::open(until, "operator"),
        None => Control::closed("operator"),
    };
    client
        .publish(
            control_subject(plugin),
            serde_json::to_vec(&control)?.into(),
        )
        .await?;
    client.flush().await?;
    let mut out = std::io::stdout().lock();
    if global.json {
        let report = serde_json::json!({
            "plugin": plugin,
            "state": control.state,
            "until": until.map(rfc3339),
            "consumers_on_server": paused_on_server,
            "notes": notes,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        match until {
            Some(until) => writeln!(out, "paused {plugin} until {}", rfc3339(until))?,
            None => writeln!(out, "resumed {plugin}")?,
        }
        writeln!(out, "  consumers on the server: {paused_on_server}")?;
        for note in notes {
            writeln!(out, "  note: {note}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(args: PauseArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let until = SystemTime::now() + args.duration.unwrap_or(UNTIL_RESUMED);
    set(&args.plugin, Some(until), global).await
}

pub async fn resume(args: ResumeArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    set(&args.plugin, None, global).await
}

pub async fn status(args: StatusArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(&telemetry::command_filter(global.verbose), false);
    let client = connect_cli(global).await?;
    let mut hosts = crate::status::gather(&client, args.wait).await?;
    if let Some(only) = &args.plugin {
        for host in &mut hosts {
            host.plugins.retain(|p| &p.name == only);
        }
    }
    let mut out = std::io::stdout().lock();
    if global.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&hosts)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if hosts.is_empty() {
        writeln!(
            out,
            "no host answered on {} within {}",
            crate::status::SUBJECT,
            humantime::format_duration(args.wait)
        )?;
        return Ok(ExitCode::from(1));
    }
    writeln!(
        out,
        "{:<22} {:<20} {:<16} {:>9} {:>9} {:>7} {:>6} {:>6} {:>6}",
        "HOST", "PLUGIN", "CIRCUIT", "RECEIVED", "SUCCEEDED", "FAILED", "DEAD", "SHED", "HELD"
    )?;
    for host in &hosts {
        for p in &host.plugins {
            let circuit = match (p.circuit, p.circuit_remaining_ms) {
                (crate::status::CircuitState::Open, Some(ms)) => format!(
                    "open {}",
                    humantime::format_duration(Duration::from_secs(ms.div_ceil(1000)))
                ),
                (state, _) => state.as_str().to_owned(),
            };
            writeln!(
                out,
                "{:<22} {:<20} {:<16} {:>9} {:>9} {:>7} {:>6} {:>6} {:>6}",
                host.host,
                p.name,
                circuit,
                p.received,
                p.succeeded,
                p.failed_attempts,
                p.dead_lettered,
                p.shed + p.shed_circuit_open,
                p.held
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
