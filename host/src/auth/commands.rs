//! `weir keys gen`, `weir grant sign|verify`, `weir token issue`: their
//! arguments and bodies. The `cli` module only routes to them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::config::KeyAlg;
use super::grant::{self, GrantSpec};
use super::keys::KeySet;
use super::signing::{self, SigningKey};
use super::token::{self, TokenSpec};
use crate::bundle::Bundle;
use crate::config::HostConfig;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair: <kid>.key.pem (private, mode 0600), <kid>.pub.pem and <kid>.jwks.json.
    Gen(KeysGenArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AlgArg {
    Ed25519,
    Es256,
    Rs256,
}

impl From<AlgArg> for KeyAlg {
    fn from(a: AlgArg) -> Self {
        match a {
            AlgArg::Ed25519 => KeyAlg::EdDsa,
            AlgArg::Es256 => KeyAlg::Es256,
            AlgArg::Rs256 => KeyAlg::Rs256,
        }
    }
}

#[derive(Debug, Args)]
pub struct KeysGenArgs {
    #[arg(long, value_enum, default_value = "ed25519")]
    pub alg: AlgArg,
    /// The folder to write the key files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The key id; default <alg>-<date>-<random>.
    #[arg(long, value_name = "KID")]
    pub kid: Option<String>,
    /// The issuer to show in the weir.toml snippet printed.
    #[arg(long, default_value = "weir")]
    pub issuer: String,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(subcommand)]
    pub command: GrantCommand,
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Sign a grant for a bundle: writes <bundle>/grant.jwt.
    Sign(GrantSignArgs),
    /// Verify a bundle's grant and explain what it allows; exit 1 if refused.
    Verify(GrantVerifyArgs),
}

#[derive(Debug, Args)]
pub struct GrantSignArgs {
    /// The private key (<kid>.key.pem from `weir keys gen`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The key id; default from the key's file name.
    #[arg(long, value_name = "KID")]
    pub kid: Option<String>,
    /// The bundle folder (holding plugin.toml and the .wasm).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Subjects it may subscribe to (NATS wildcards); default: its manifest's.
    #[arg(long, value_name = "SUBJECT", num_args = 1..)]
    pub subscribe: Vec<String>,
    /// Subjects it may publish to (NATS wildcards); none: replies only.
    #[arg(long, value_name = "SUBJECT", num_args = 1..)]
    pub publish: Vec<String>,
    /// Cap on limits.timeout_ms.
    #[arg(long, value_name = "MS")]
    pub max_timeout_ms: Option<u64>,
    /// Cap on limits.memory_mb.
    #[arg(long, value_name = "MB")]
    pub max_memory_mb: Option<u32>,
    /// How long the grant is valid (e.g. 90d, 12h).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "365d")]
    pub ttl: Duration,
    /// The grant's issuer: one of weir.toml's auth.grant_issuers.
    #[arg(long, default_value = "weir")]
    pub issuer: String,
}

#[derive(Debug, Args)]
pub struct GrantVerifyArgs {
    /// The bundle folder.
    pub bundle: PathBuf,
    /// Verify with this public key (PEM or JWKS), for any issuer; without
    /// it, with the trusted keys and grant issuers of --config (default
    /// ./weir.toml).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub key: Option<PathBuf>,
    /// With --key: the key id (default from the file name).
    #[arg(long, value_name = "KID", requires = "key")]
    pub kid: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a producer token (for tests and demos) and print it.
    Issue(TokenIssueArgs),
}

#[derive(Debug, Args)]
pub struct TokenIssueArgs {
    /// The private key (<kid>.key.pem from `weir keys gen`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The key id; default from the key's file name.
    #[arg(long, value_name = "KID")]
    pub kid: Option<String>,
    /// The producer: the `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// The plugin's audience (default: its name).
    #[arg(long)]
    pub aud: String,
    /// The issuer: the one weir.toml trusts this key for.
    #[arg(long, default_value = "weir")]
    pub iss: String,
    /// An extra claim NAME=VALUE (repeatable); a VALUE that is JSON stays JSON.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
    /// How long the token is valid (e.g. 15m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub ttl: Duration,
}

/// The largest memory cap any manifest may carry, for reading bundles
/// outside a host config.
const ANY_MEMORY_MB: u32 = 4096;

/// `json`: the global `--json`.
pub fn keys(args: KeysArgs, json: bool) -> anyhow::Result<ExitCode> {
    let KeysCommand::Gen(args) = args.command;
    let alg: KeyAlg = args.alg.into();
    let kid = match args.kid {
        Some(kid) => kid,
        None => format!(
            "{}-{}-{:04x}",
            format!("{:?}", args.alg).to_lowercase(),
            &humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10],
            rand::random::<u16>()
        ),
    };
    let g = signing::generate(alg, &args.out, &kid)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &g)?;
        writeln!(out)?;
    } else {
        writeln!(out, "kid {} ({})", g.kid, g.alg)?;
        writeln!(
            out,
            "  private key: {}  (keep it off the hosts)",
            g.private_key.display()
        )?;
        writeln!(out, "  public key:  {}", g.public_key.display())?;
        writeln!(out, "  JWKS:        {}", g.jwks.display())?;
        writeln!(out, "\nTrust it in weir.toml:\n")?;
        writeln!(out, "[[auth.keys]]")?;
        writeln!(out, "issuer = {:?}", args.issuer)?;
        writeln!(out, "alg = {:?}", g.alg)?;
        writeln!(out, "file = {:?}", g.public_key.display().to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `config`: the global `--config` (for `verify`); `json`: the global `--json`.
pub fn grant(args: GrantArgs, config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    match args.command {
        GrantCommand::Sign(args) => grant_sign(args, json),
        GrantCommand::Verify(args) => grant_verify(args, config, json),
    }
}

fn grant_sign(args: GrantSignArgs, json: bool) -> anyhow::Result<ExitCode> {
    let key = SigningKey::load(&args.key, args.kid.as_deref())?;
    let bundle = Bundle::load(&args.bundle, ANY_MEMORY_MB)?;
    let subscribe = if args.subscribe.is_empty() {
        bundle
            .manifest
            .subscribe
            .iter()
            .map(|s| s.subject.clone())
            .collect()
    } else {
        args.subscribe
    };
    let spec = GrantSpec {
        issuer: args.issuer,
        subscribe,
        publish: args.publish,
        max_timeout_ms: args.max_timeout_ms,
        max_memory_mb: args.max_memory_mb,
        ttl: args.ttl,
    };
    let claims = grant::sign(&key, &bundle, &spec)
        .with_context(|| format!("grant for {}", args.bundle.display()))?;
    let path = bundle.dir.join(grant::GRANT_FILE);
    let mut out = std::io::stdout().lock();
    if json {
        let report = serde_json::json!({ "grant": path, "kid": key.kid, "claims": claims });
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "wrote {} (plugin {:?}, kid {:?}, expires {})",
            path.display(),
            claims.sub,
            key.kid,
            super::verify::unix_rfc3339(claims.exp)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn grant_verify(
    args: GrantVerifyArgs,
    config: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (keys, issuers, max_memory_mb) = match &args.key {
        Some(path) => (
            KeySet::from_file(path, args.kid.as_deref())?,
            None,
            ANY_MEMORY_MB,
        ),
        None => {
            let path = config.map_or_else(|| PathBuf::from("weir.toml"), Path::to_path_buf);
            if !path.is_file() {
                anyhow::bail!(
                    "no key to verify with: pass --key FILE or --config weir.toml ({} not found)",
                    path.display()
                );
            }
            let config = HostConfig::load(&path)?;
            let keys = KeySet::load(&config.auth)?;
            (
                keys,
                Some(config.auth.grant_issuers.clone()),
                config.sandbox.max_memory_mb,
            )
        }
    };
    let bundle = Bundle::load(&args.bundle, max_memory_mb)?;
    let explained = grant::explain(&bundle, &keys, issuers.as_deref());
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &explained)?;
        writeln!(out)?;
    } else {
        grant::print_explained(&explained, &mut out)?;
    }
    Ok(if explained.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `json`: the global `--json` (`{"token": ...}`).
pub fn token(args: TokenArgs, json: bool) -> anyhow::Result<ExitCode> {
    let TokenCommand::Issue(args) = args.command;
    let key = SigningKey::load(&args.key, args.kid.as_deref())?;
    let mut claims = Vec::new();
    for c in &args.claims {
        let (k, v) = c
            .split_once('=')
            .with_context(|| format!("--claim {c:?}: expected NAME=VALUE"))?;
        claims.push((k.trim().to_owned(), v.to_owned()));
    }
    let spec = TokenSpec {
        issuer: args.iss,
        subject: args.sub,
        audience: args.aud,
        ttl: args.ttl,
        claims,
    };
    let jwt = token::issue(&key, &spec)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::json!({ "token": jwt }))?;
    } else {
        writeln!(out, "{jwt}")?;
    }
    Ok(ExitCode::SUCCESS)
}
