//! `weir cache`: show the compile cache (its folder, entries and cap), prune
//! it to its cap, or clear it.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{GlobalArgs, load_config};
use crate::config::SandboxConfig;
use crate::sandbox::cache;

/// `weir cache`'s arguments (`--json` prints JSON).
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: Option<CacheCommand>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove the least recently used entries until the cache fits its cap
    /// (sandbox.cache_max_mb, or --max-mb), and files of interrupted writes.
    Prune {
        /// The cap for this prune, instead of sandbox.cache_max_mb.
        #[arg(long, value_name = "MB")]
        max_mb: Option<u64>,
    },
    /// Remove every entry: each plugin compiles again on its next load.
    Clear,
}

const MB: u64 = 1024 * 1024;

/// Run `weir cache`.
pub fn cache(args: CacheArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(global)?;
    let json = global.json;
    let sandbox = &config.sandbox;
    let Some(dir) = sandbox.resolved_cache_dir() else {
        let why = if sandbox.cache {
            "no folder for it: set sandbox.cache_dir, XDG_CACHE_HOME or HOME"
        } else {
            "off (sandbox.cache = false)"
        };
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::json!({ "dir": null, "why": why }))?;
        } else {
            writeln!(out, "the compile cache is {why}")?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let read = |e: std::io::Error| anyhow::anyhow!("compile cache {}: {e}", dir.display());
    match args.command {
        None => {
            let entries = cache::entries(&dir).map_err(read)?;
            show(&dir, &entries, sandbox, json)?;
        }
        Some(CacheCommand::Prune { max_mb }) => {
            let max_bytes = max_mb.map_or(sandbox.cache_max_bytes(), |mb| mb.saturating_mul(MB));
            let pruned = cache::prune(&dir, max_bytes, None).map_err(read)?;
            report(&dir, &pruned, Some(max_bytes), json)?;
        }
        Some(CacheCommand::Clear) => {
            let cleared = cache::clear(&dir).map_err(read)?;
            report(&dir, &cleared, None, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(
    dir: &Path,
    entries: &[cache::Entry],
    sandbox: &SandboxConfig,
    json: bool,
) -> std::io::Result<()> {
    let bytes: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut out = std::io::stdout().lock();
    if json {
        let value = serde_json::json!({
            "dir": dir,
            "bytes": bytes,
            "max_bytes": sandbox.cache_max_bytes(),
            "entries": entries,
        });
        serde_json::to_writer_pretty(&mut out, &value)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "compile cache {}: {} entries, {} of {} MB (sandbox.cache_max_mb)",
        dir.display(),
        entries.len(),
        megabytes(bytes),
        sandbox.cache_max_mb
    )?;
    if entries.is_empty() {
        return Ok(());
    }
    writeln!(out, "{:<22} {:>10}  ENTRY", "LAST USED", "SIZE")?;
    // Most recently used first: the ones a prune keeps at the top.
    for e in entries.iter().rev() {
        let name = e
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        writeln!(
            out,
            "{:<22} {:>10}  {name}",
            humantime::format_rfc3339_seconds(e.last_used).to_string(),
            megabytes(e.bytes)
        )?;
    }
    Ok(())
}

fn report(
    dir: &Path,
    pruned: &cache::Pruned,
    max_bytes: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, pruned)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "removed {} entries ({}) from {}",
        pruned.removed.len(),
        megabytes(pruned.freed_bytes),
        dir.display()
    )?;
    if pruned.leftovers > 0 {
        writeln!(
            out,
            "removed {} files of interrupted writes",
            pruned.leftovers
        )?;
    }
    if let Some(max) = max_bytes {
        writeln!(
            out,
            "kept {} entries, {} of {} MB",
            pruned.kept,
            megabytes(pruned.kept_bytes),
            max / MB
        )?;
    }
    Ok(())
}

/// `36.1 MB` (MiB, as every `_mb` setting of weir).
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / MB as f64)
}
