//! `weir dlq`: list, show, replay and purge dead letters.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use clap::{Args, Subcommand};

use super::{GlobalArgs, connect_cli, load_config};
use crate::dlq::Entry;
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
        /// With an id: replay this payload instead of the dead letter's (a
        /// file, or - for stdin), to mend an event before it goes again.
        #[arg(long, value_name = "FILE", requires = "id")]
        payload: Option<PathBuf>,
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
                out.write_all(list_table(&entries).as_bytes())?;
                let n = entries.len();
                writeln!(out, "{n} dead letter{}", if n == 1 { "" } else { "s" })?;
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
        DlqCommand::Replay {
            id,
            plugin,
            all,
            payload,
        } => {
            // Read first: a missing file replays nothing.
            let payload = payload.as_deref().map(read_payload).transpose()?;
            let entries = match id {
                Some(id) => {
                    let mut entry = dead.get(id).await?;
                    if let Some(payload) = payload {
                        entry.mend(payload);
                    }
                    vec![entry]
                }
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

/// `--payload FILE`'s bytes; `-` reads stdin.
fn read_payload(file: &Path) -> anyhow::Result<bytes::Bytes> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("--payload -: cannot read stdin")?;
    } else {
        bytes = std::fs::read(file)
            .with_context(|| format!("--payload {}: cannot read", file.display()))?;
    }
    Ok(bytes.into())
}

/// Widest a column of `weir dlq list` grows before its values are elided
/// (`--json` has them whole).
const MAX_PLUGIN: usize = 24;
const MAX_SUBJECT: usize = 32;
const MAX_ERROR: usize = 60;

/// `weir dlq list`'s table: each column as wide as its widest value, up to a
/// cap past which values are elided with `…` (a subject in the middle, where
/// its ends say most; the rest at the end), so the columns stay aligned.
fn list_table(entries: &[Entry]) -> String {
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            [
                e.id.to_string(),
                elide_end(&e.plugin, MAX_PLUGIN),
                one_line(&e.kind),
                e.attempts.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                elide_middle(&e.original_subject, MAX_SUBJECT),
                one_line(&e.last_seen),
                elide_end(&e.error, MAX_ERROR),
            ]
        })
        .collect();
    let header = [
        "ID",
        "PLUGIN",
        "KIND",
        "ATTEMPTS",
        "SUBJECT",
        "LAST SEEN",
        "ERROR",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            let pad = " ".repeat(width - cell.chars().count());
            match i {
                // Numbers to the right.
                0 | 3 => line.push_str(&format!("{pad}{cell}  ")),
                6 => line.push_str(cell),
                _ => line.push_str(&format!("{cell}{pad}  ")),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` on one line: control characters (a newline in an error) as spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` characters: the start, then `…`.
fn elide_end(text: &str, max: usize) -> String {
    let text = one_line(text);
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// At most `max` characters: the start, `…`, the end.
fn elide_middle(text: &str, max: usize) -> String {
    let text = one_line(text);
    let len = text.chars().count();
    if len <= max {
        return text;
    }
    let tail = (max - 1) / 2;
    let head = max - 1 - tail;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(len - tail));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_elided_and_the_columns_stay_aligned() {
        let entry = |id: u64, plugin: &str, subject: &str, error: &str| Entry {
            id,
            plugin: plugin.into(),
            original_subject: subject.into(),
            kind: "reject".into(),
            error: error.into(),
            attempts: Some(1),
            first_seen: "2026-12-02T04:33:57.253Z".into(),
            last_seen: "2026-12-02T04:33:57.253Z".into(),
            headers: Vec::new(),
            payload: bytes::Bytes::new(),
            payload_text: None,
            payload_bytes: 0,
        };
        let long_plugin = "p".repeat(40);
        let long_subject = format!("orders.{}.end", "x".repeat(60));
        let table = list_table(&[
            entry(7, "echo", "demo.echo.a", "short"),
            entry(1234, &long_plugin, &long_subject, &"e".repeat(100)),
            entry(8, "echo", "demo.echo.b", "two\nlines"),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let at = |line: &str, needle: &str| line.find(needle).map(|b| line[..b].chars().count());
        // Every row's kind and timestamp start under their headings.
        for line in &lines[1..] {
            assert_eq!(at(line, "reject"), at(lines[0], "KIND"), "{table}");
            assert_eq!(at(line, "2026-"), at(lines[0], "LAST SEEN"), "{table}");
        }
        let long = lines[2];
        assert!(
            long.contains(&format!("{}…", "p".repeat(MAX_PLUGIN - 1))),
            "{long}"
        );
        let subject = elide_middle(&long_subject, MAX_SUBJECT);
        assert_eq!(subject.chars().count(), MAX_SUBJECT);
        assert!(
            subject.starts_with("orders.x") && subject.contains('…') && subject.ends_with("x.end"),
            "{subject}"
        );
        assert!(long.contains(&format!("  {subject}  ")), "{long}");
        assert!(
            long.ends_with(&format!("{}…", "e".repeat(MAX_ERROR - 1))),
            "{long}"
        );
        assert!(lines[3].ends_with("two lines"), "{table}");
        assert_eq!(elide_middle("abcdefgh", 5), "ab…gh");
        assert_eq!(elide_end("abcdef", 4), "abc…");
        assert_eq!(elide_end("abc", 4), "abc");
    }
}
