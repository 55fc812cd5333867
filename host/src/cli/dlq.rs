//! `weir dlq`: list, show, replay and purge dead letters.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{GlobalArgs, connect_cli, load_config};
use crate::telemetry;

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long)]
        plugin: Option<String>,
    },
    /// Show one dead letter: headers and payload.
    Show { id: u64 },
    /// Republish dead letters to their original subjects with their original
    /// headers, then remove them.
    Replay {
        /// The dead letter's id (its sequence in the stream).
        #[arg(conflicts_with_all = ["plugin", "all"], required_unless_present_any = ["plugin", "all"])]
        id: Option<u64>,
        /// Every dead letter of this plugin.
        #[arg(long, conflicts_with = "all")]
        plugin: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Remove dead letters without replaying them.
    Purge {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        plugin: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

pub async fn dlq(args: DlqArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(&telemetry::command_filter(global.verbose), false);
    let config = load_config(global)?;
    let client = connect_cli(global).await?;
    let mut dead = crate::dlq::DeadLetters::open(client, &config.dead_letter).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        DlqCommand::List { plugin } => {
            let entries = dead.list(plugin.as_deref()).await?;
            if global.json {
                serde_json::to_writer_pretty(&mut out, &entries)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:>6}  {:<20} {:<16} {:>8}  {:<24} {:<24} ERROR",
                    "ID", "PLUGIN", "KIND", "ATTEMPTS", "SUBJECT", "LAST SEEN"
                )?;
                for e in &entries {
                    let error: String = e.error.chars().take(60).collect();
                    writeln!(
                        out,
                        "{:>6}  {:<20} {:<16} {:>8}  {:<24} {:<24} {error}",
                        e.id, e.plugin, e.kind, e.attempts, e.original_subject, e.last_seen
                    )?;
                }
                writeln!(out, "{} dead letters", entries.len())?;
            }
        }
        DlqCommand::Show { id } => {
            let entry = dead.get(id).await?;
            if global.json {
                serde_json::to_writer_pretty(&mut out, &entry)?;
                writeln!(out)?;
            } else {
                writeln!(out, "dead letter {} of plugin {}", entry.id, entry.plugin)?;
                for (k, v) in &entry.headers {
                    writeln!(out, "  {k}: {v}")?;
                }
                match &entry.payload_text {
                    Some(text) => writeln!(out, "\n{text}")?,
                    None => writeln!(out, "\n({} bytes of binary payload)", entry.payload_bytes)?,
                }
            }
        }
        DlqCommand::Replay { id, plugin, all } => {
            let entries = match id {
                Some(id) => vec![dead.get(id).await?],
                None if all || plugin.is_some() => dead.list(plugin.as_deref()).await?,
                None => anyhow::bail!("give an id, --plugin or --all"),
            };
            let mut replayed = Vec::new();
            for entry in &entries {
                dead.replay(entry).await?;
                replayed.push(entry.id);
                if !global.json {
                    writeln!(out, "replayed {} to {}", entry.id, entry.original_subject)?;
                }
            }
            if global.json {
                writeln!(out, "{}", serde_json::json!({ "replayed": replayed }))?;
            }
        }
        DlqCommand::Purge { plugin, all } => {
            let purged = dead
                .purge(if all { None } else { plugin.as_deref() })
                .await?;
            if global.json {
                writeln!(out, "{}", serde_json::json!({ "purged": purged }))?;
            } else {
                writeln!(out, "purged {purged} dead letters")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
