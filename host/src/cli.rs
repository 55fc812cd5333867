//! Command-line parsing. Each command parses its arguments and calls the library.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt as _;

use crate::config::{HostConfig, PluginsConfig, ServerUrls};
use crate::{dev, harness, host, telemetry, transport};

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "A host for WebAssembly event handlers on NATS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: load plugins, subscribe, handle events until SIGINT/SIGTERM.
    Up(UpArgs),
    /// Run a plugin on fixture events, without NATS; exit 1 on a failure or mismatch.
    Test(TestArgs),
    /// Publish messages (a small producer for demos and checks).
    Pub(PubArgs),
    /// Print messages arriving on a subject.
    Sub(SubArgs),
    /// Generate signing keys for grants and producer tokens.
    Keys(crate::auth::commands::KeysArgs),
    /// Sign or verify a plugin's grant (grant.jwt in its bundle).
    Grant(crate::auth::commands::GrantArgs),
    /// Mint producer tokens (for tests and demos).
    Token(crate::auth::commands::TokenArgs),
    /// Inspect, replay and purge the dead-letter queue.
    Dlq(DlqArgs),
    /// Create a plugin folder (Rust, Python, JavaScript or C) that builds and passes `weir test`.
    New(crate::scaffold::NewArgs),
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// NATS server URL(s), comma separated (replaces nats.url).
    #[arg(
        long,
        env = "WEIR_NATS_URL",
        value_name = "URL[,URL...]",
        global = true
    )]
    pub nats: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
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

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The host config; default ./weir.toml when it exists, else built-in defaults.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Load every bundle folder inside DIR (repeatable). --plugins and
    /// --bundle replace the config's whole plugin set (plugins.dirs and
    /// plugins.bundles).
    #[arg(long, value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
    /// Load the bundle in FOLDER (repeatable); replaces the config's plugin
    /// set, like --plugins.
    #[arg(long = "bundle", value_name = "FOLDER")]
    pub bundles: Vec<PathBuf>,
    /// NATS server URL(s), comma separated (replaces nats.url).
    #[arg(long, env = "WEIR_NATS_URL", value_name = "URL[,URL...]")]
    pub nats: Option<String>,
    /// Start a local nats-server with JetStream if none answers at the URL.
    #[arg(long)]
    pub dev: bool,
    /// Where --dev keeps the server's store.
    #[arg(long, value_name = "DIR", default_value = ".weir")]
    pub data_dir: PathBuf,
    /// Log JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The bundle folder (holding plugin.toml).
    pub bundle: PathBuf,
    /// Fixture files: JSON objects (or arrays of them) with subject, payload /
    /// payload_json / payload_b64, headers, reply_to, attempt.
    #[arg(long = "event", short = 'e', value_name = "FILE", required = true, num_args = 1..)]
    pub events: Vec<PathBuf>,
    /// Expected results, one per event, in order: {"outputs": [...]} or {"failure": {"kind": ...}}.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PubArgs {
    pub subject: String,
    /// The payload; `{n}` is replaced by the message number (1-based).
    #[arg(default_value = "")]
    pub payload: String,
    /// A header NAME:VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// How many messages to publish.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Send as requests and print each reply.
    #[arg(long)]
    pub request: bool,
    /// Reply timeout for --request.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// NATS server URL(s), comma separated (replaces nats.url; credentials and
    /// TLS come from weir.toml).
    #[arg(long, env = "WEIR_NATS_URL", value_name = "URL[,URL...]")]
    pub nats: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubArgs {
    pub subject: String,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Print one JSON object per message.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// NATS server URL(s), comma separated (replaces nats.url; credentials and
    /// TLS come from weir.toml).
    #[arg(long, env = "WEIR_NATS_URL", value_name = "URL[,URL...]")]
    pub nats: Option<String>,
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
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Test(args) => test(args).await,
        Command::Pub(args) => publish(args).await,
        Command::Sub(args) => subscribe(args).await,
        Command::Keys(args) => crate::auth::commands::keys(args),
        Command::Grant(args) => crate::auth::commands::grant(args),
        Command::Token(args) => crate::auth::commands::token(args),
        Command::Dlq(args) => dlq(args).await,
        Command::New(args) => crate::scaffold::run(args),
    }
}

fn load_config(args: &ConfigArgs) -> anyhow::Result<HostConfig> {
    Ok(load_config_from(args)?.0)
}

/// The host config and the file it came from (`None`: built-in defaults).
fn load_config_from(args: &ConfigArgs) -> anyhow::Result<(HostConfig, Option<PathBuf>)> {
    let file = match &args.config {
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

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    telemetry::init("info", args.log_json);
    let shutdown = shutdown_signal()?;
    let (mut config, file) = load_config_from(&args.config)?;
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
        };
    }
    tracing::info!(
        dirs = %path_list(&config.plugins.dirs),
        bundles = %path_list(&config.plugins.bundles),
        from = if from_flags { "--plugins/--bundle" } else { "config" },
        "weir up: plugins"
    );
    if let Some(urls) = &args.nats {
        config.nats.url = parse_nats_flag(urls)?;
    }
    tracing::info!(servers = %config.nats.url, "weir up: NATS servers");
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

async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    telemetry::init("warn,weir::plugin=off", false);
    let config = load_config(&args.config)?;
    let report = harness::run(&config, &args.bundle, &args.events, args.expect.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        harness::print_human(&report, &mut out)?;
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--nats` (or `WEIR_NATS_URL`): one URL or several, comma separated. Parsed
/// here rather than by clap, whose error would quote the value, password and all.
fn parse_nats_flag(urls: &str) -> anyhow::Result<ServerUrls> {
    urls.parse().map_err(|e| anyhow::anyhow!("--nats: {e}"))
}

/// Connect as the host would (weir.toml's credentials and TLS), but give up
/// after 10 s instead of retrying for ever.
async fn connect_cli(config: &ConfigArgs, url: Option<&str>) -> anyhow::Result<async_nats::Client> {
    let mut config = load_config(config)?;
    if let Some(urls) = url {
        config.nats.url = parse_nats_flag(urls)?;
    }
    tokio::time::timeout(Duration::from_secs(10), transport::connect(&config.nats))
        .await
        .with_context(|| format!("no NATS server answered at {} within 10 s", config.nats.url))?
}

async fn publish(args: PubArgs) -> anyhow::Result<ExitCode> {
    telemetry::init("warn", false);
    let mut pairs = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected NAME:VALUE"))?;
        pairs.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let headers = transport::to_header_map(&pairs)?;
    let client = connect_cli(&args.config, args.nats.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    for n in 1..=args.count {
        let payload = args.payload.replace("{n}", &n.to_string());
        if args.request {
            let request = async_nats::Request::new()
                .payload(payload.into())
                .headers(headers.clone())
                .timeout(Some(Duration::from_millis(args.timeout_ms)));
            let reply = client
                .send_request(args.subject.clone(), request)
                .await
                .with_context(|| format!("request {n} to {:?}", args.subject))?;
            let error = reply
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Service-Error"))
                .map(|v| v.as_str().to_owned());
            match error {
                Some(e) => writeln!(out, "error reply: {e}")?,
                None => writeln!(out, "{}", String::from_utf8_lossy(&reply.payload))?,
            }
        } else {
            client
                .publish_with_headers(args.subject.clone(), headers.clone(), payload.into())
                .await?;
        }
    }
    client.flush().await?;
    Ok(ExitCode::SUCCESS)
}

async fn subscribe(args: SubArgs) -> anyhow::Result<ExitCode> {
    telemetry::init("warn", false);
    let client = connect_cli(&args.config, args.nats.as_deref()).await?;
    let mut sub = client.subscribe(args.subject.clone()).await?;
    let mut seen = 0u64;
    while let Some(msg) = sub.next().await {
        let headers = msg
            .headers
            .as_ref()
            .map(transport::from_header_map)
            .unwrap_or_default();
        let mut out = std::io::stdout().lock();
        if args.json {
            let line = serde_json::json!({
                "subject": msg.subject.as_str(),
                "headers": headers,
                "payload": String::from_utf8_lossy(&msg.payload),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "[{}] {}",
                msg.subject,
                String::from_utf8_lossy(&msg.payload)
            )?;
            for (k, v) in &headers {
                writeln!(out, "    {k}: {v}")?;
            }
        }
        out.flush()?;
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn dlq(args: DlqArgs) -> anyhow::Result<ExitCode> {
    telemetry::init("warn", false);
    let config = load_config(&args.config)?;
    let client = connect_cli(&args.config, args.nats.as_deref()).await?;
    let mut dead = crate::dlq::DeadLetters::open(client, &config.dead_letter).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        DlqCommand::List { plugin } => {
            let entries = dead.list(plugin.as_deref()).await?;
            if args.json {
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
            if args.json {
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
                if !args.json {
                    writeln!(out, "replayed {} to {}", entry.id, entry.original_subject)?;
                }
            }
            if args.json {
                writeln!(out, "{}", serde_json::json!({ "replayed": replayed }))?;
            }
        }
        DlqCommand::Purge { plugin, all } => {
            let purged = dead
                .purge(if all { None } else { plugin.as_deref() })
                .await?;
            if args.json {
                writeln!(out, "{}", serde_json::json!({ "purged": purged }))?;
            } else {
                writeln!(out, "purged {purged} dead letters")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
