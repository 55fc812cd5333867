//! `weir bundle pack DIR [-o FILE]` and `weir bundle inspect FILE`: a bundle
//! as one archive ([`crate::bundle::archive`]), and what one holds.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{GlobalArgs, load_config};
use crate::bundle::{Bundle, archive};
use crate::config::DeliveryMode;

#[derive(Debug, Args)]
pub struct BundleArgs {
    #[command(subcommand)]
    pub command: BundleCommand,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write a bundle folder (plugin.toml, its wasm, grant.jwt if any) as one tar.
    Pack {
        /// The bundle folder.
        dir: PathBuf,
        /// Where to write it; default ./<name>-<version>.tar.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print what a bundle (archive or folder) holds: name, version, sha256,
    /// subscriptions and grant status.
    Inspect {
        /// The archive (or folder).
        bundle: PathBuf,
    },
}

/// What `weir bundle inspect` reports.
#[derive(Debug, Serialize)]
struct Inspected {
    bundle: PathBuf,
    archive: bool,
    name: String,
    version: String,
    wasm: String,
    wasm_bytes: usize,
    sha256: String,
    subscriptions: Vec<Sub>,
    grant: GrantStatus,
}

#[derive(Debug, Serialize)]
struct Sub {
    subject: String,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<String>,
}

/// `none`, `unverified` (no keys to check it with), `valid` or `refused`.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum GrantStatus {
    None,
    Unverified { why: String },
    Valid { kid: String, issuer: String },
    Refused { errors: Vec<String> },
}

pub fn bundle(args: BundleArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(global)?;
    let max_memory_mb = config.sandbox.max_memory_mb;
    let mut out = std::io::stdout().lock();
    match args.command {
        BundleCommand::Pack { dir, out: file } => {
            let manifest = crate::bundle::read_manifest(&dir, max_memory_mb)?;
            let file = file.unwrap_or_else(|| archive::default_name(&manifest));
            let bundle = archive::pack(&dir, &file, max_memory_mb)?;
            if global.json {
                let report = serde_json::json!({
                    "archive": file,
                    "name": bundle.name(),
                    "version": bundle.manifest.version,
                    "sha256": bundle.sha256_hex(),
                    "grant": bundle.grant.is_some(),
                });
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "wrote {} ({} {}, wasm sha256 {}{})",
                    file.display(),
                    bundle.name(),
                    bundle.manifest.version,
                    bundle.sha256_hex(),
                    if bundle.grant.is_some() {
                        ", with its grant"
                    } else {
                        ""
                    }
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Inspect { bundle } => {
            let loaded = Bundle::load(&bundle, max_memory_mb)?;
            let report = inspect(bundle, &loaded, &config);
            if global.json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                print(&report, &mut out)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn inspect(path: PathBuf, bundle: &Bundle, config: &crate::config::HostConfig) -> Inspected {
    let grant = match &bundle.grant {
        None => GrantStatus::None,
        Some(_) => match crate::auth::keys::KeySet::load(&config.auth) {
            Err(e) => GrantStatus::Unverified {
                why: format!("no keys to verify it with ({e}); weir grant verify --key FILE"),
            },
            Ok(keys) => {
                let e = crate::auth::grant::explain(
                    bundle,
                    &keys,
                    Some(config.auth.grant_issuers.as_slice()),
                );
                match (e.valid, e.kid, e.claims) {
                    (true, Some(kid), Some(claims)) => GrantStatus::Valid {
                        kid,
                        issuer: claims.iss,
                    },
                    _ => GrantStatus::Refused { errors: e.errors },
                }
            }
        },
    };
    Inspected {
        bundle: path,
        archive: bundle.archived,
        name: bundle.manifest.name.clone(),
        version: bundle.manifest.version.to_string(),
        wasm: bundle.manifest.wasm.display().to_string(),
        wasm_bytes: bundle.wasm.len(),
        sha256: bundle.sha256_hex(),
        subscriptions: bundle
            .manifest
            .subscribe
            .iter()
            .map(|s| Sub {
                subject: s.subject.clone(),
                mode: match s.mode {
                    DeliveryMode::Core => "core",
                    DeliveryMode::Jetstream => "jetstream",
                },
                stream: s.stream.clone(),
                queue: s.queue.clone(),
            })
            .collect(),
        grant,
    }
}

fn print(r: &Inspected, out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{} ({})",
        r.bundle.display(),
        if r.archive { "archive" } else { "folder" }
    )?;
    writeln!(out, "  name:     {}", r.name)?;
    writeln!(out, "  version:  {}", r.version)?;
    writeln!(out, "  wasm:     {} ({} bytes)", r.wasm, r.wasm_bytes)?;
    writeln!(out, "  sha256:   {}", r.sha256)?;
    for s in &r.subscriptions {
        let via = match (&s.stream, &s.queue) {
            (Some(stream), _) => format!(" (stream {stream})"),
            (None, Some(queue)) => format!(" (queue {queue})"),
            (None, None) => String::new(),
        };
        writeln!(out, "  subscribe: {} [{}]{via}", s.subject, s.mode)?;
    }
    match &r.grant {
        GrantStatus::None => writeln!(out, "  grant:    none"),
        GrantStatus::Unverified { why } => {
            writeln!(out, "  grant:    present, not verified: {why}")
        }
        GrantStatus::Valid { kid, issuer } => {
            writeln!(out, "  grant:    valid (issuer {issuer:?}, kid {kid:?})")
        }
        GrantStatus::Refused { errors } => {
            writeln!(out, "  grant:    REFUSED: {}", errors.join("; "))
        }
    }
}
