//! `weir pub` and `weir sub`: a small producer and a consumer for demos and checks.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;

use super::{GlobalArgs, connect_cli};
use crate::{telemetry, transport};

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
}

#[derive(Debug, Args)]
pub struct SubArgs {
    pub subject: String,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
}

pub async fn publish(args: PubArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(&telemetry::command_filter(global.verbose), false);
    let mut pairs = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected NAME:VALUE"))?;
        pairs.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let headers = transport::to_header_map(&pairs)?;
    let client = connect_cli(global).await?;
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

/// `--json`: one JSON object per message.
pub async fn subscribe(args: SubArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(&telemetry::command_filter(global.verbose), false);
    let client = connect_cli(global).await?;
    let mut sub = client.subscribe(args.subject.clone()).await?;
    let mut seen = 0u64;
    while let Some(msg) = sub.next().await {
        let headers = msg
            .headers
            .as_ref()
            .map(transport::from_header_map)
            .unwrap_or_default();
        let mut out = std::io::stdout().lock();
        if global.json {
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
