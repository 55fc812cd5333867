//! `weir pub` and `weir sub`: a small producer and a consumer for demos and checks.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;

use super::{GlobalArgs, connect_cli};
use crate::event::header;
use crate::pipeline::headers::{SERVICE_ERROR, SERVICE_ERROR_CODE};
use crate::{telemetry, transport};

#[derive(Debug, Args)]
pub struct PubArgs {
    /// The subject to publish to.
    pub subject: String,
    /// The payload; `{seq}` in it becomes the message's number, 1 to --count.
    #[arg(default_value = "")]
    pub payload: String,
    /// A header NAME:VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// How many messages to publish.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Send as requests and print each reply (--json: as JSON lines). An error
    /// reply (a Nats-Service-Error header, as weir sends for a dead-lettered
    /// request) is printed on stderr, and weir exits 1 after the last request.
    #[arg(long)]
    pub request: bool,
    /// Reply timeout for --request.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Deliver later (10m, 1h 30m): stored now as a one-shot schedule in
    /// WEIR_SCHEDULES, published on SUBJECT when due, on the whole second.
    #[arg(long = "in", value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with_all = ["at", "request"])]
    pub delay: Option<Duration>,
    /// Deliver at this time (RFC 3339, such as 2026-12-24T18:00:00Z), as --in.
    #[arg(long, value_name = "TIME", conflicts_with = "request")]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubArgs {
    /// The subject to listen on; `*` and `>` wildcards allowed.
    pub subject: String,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
}

/// `PAYLOAD` for message `seq`: `{seq}` replaced, and `{n}`, its older
/// spelling, which the help cannot show (clap renders `{n}` as a line break).
fn payload_for(template: &str, seq: u64) -> String {
    let seq = seq.to_string();
    template.replace("{seq}", &seq).replace("{n}", &seq)
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
    if args.delay.is_some() || args.at.is_some() {
        let payloads = (1..=args.count)
            .map(|n| payload_for(&args.payload, n))
            .collect();
        let when = (args.delay, args.at.as_deref());
        return super::schedule::publish_later(
            &client,
            &args.subject,
            payloads,
            pairs,
            when,
            global.json,
        )
        .await;
    }
    let mut out = std::io::stdout().lock();
    let mut error_replies = 0u64;
    let mut noted_stream_ack = false;
    for n in 1..=args.count {
        let payload = payload_for(&args.payload, n);
        if !args.request {
            client
                .publish_with_headers(args.subject.clone(), headers.clone(), payload.into())
                .await?;
            continue;
        }
        let request = async_nats::Request::new()
            .payload(payload.into())
            .headers(headers.clone())
            .timeout(Some(Duration::from_millis(args.timeout_ms)));
        let reply = client
            .send_request(args.subject.clone(), request)
            .await
            .with_context(|| format!("request {n} to {:?}", args.subject))?;
        let reply_headers = reply
            .headers
            .as_ref()
            .map(transport::from_header_map)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&reply.payload);
        if global.json {
            let line = serde_json::json!({
                "subject": reply.subject.as_str(),
                "headers": reply_headers,
                "payload": text,
            });
            writeln!(out, "{line}")?;
        }
        if let Some(error) = header(&reply_headers, SERVICE_ERROR) {
            error_replies += 1;
            let code = header(&reply_headers, SERVICE_ERROR_CODE)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            eprintln!("error reply to request {n}{code}: {error}");
            continue;
        }
        if !global.json {
            writeln!(out, "{text}")?;
        }
        if !noted_stream_ack && let Some(stream) = stream_ack(&reply.payload) {
            noted_stream_ack = true;
            eprintln!(
                "note: this reply is stream {stream:?}'s ack, not a handler's: the stream captures {:?}, \
                 so the request was stored as an event and any reply to it goes nowhere \
                 (see \"Requests\" in the README: subscribe the handler in core mode to answer requests)",
                args.subject
            );
        }
    }
    client.flush().await?;
    Ok(if error_replies == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The stream's name when `payload` is a JetStream publish ack
/// (`{"stream": "ORDERS", "seq": 5}`, perhaps with `duplicate` or `domain`).
fn stream_ack(payload: &[u8]) -> Option<String> {
    let serde_json::Value::Object(ack) = serde_json::from_slice(payload).ok()? else {
        return None;
    };
    let known = ack
        .keys()
        .all(|k| matches!(k.as_str(), "stream" | "seq" | "duplicate" | "domain"));
    let stream = ack.get("stream")?.as_str()?;
    (known && ack.get("seq")?.is_u64()).then(|| stream.to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_and_its_old_spelling_are_replaced() {
        assert_eq!(payload_for("order {seq} of {n}", 7), "order 7 of 7");
        assert_eq!(payload_for("plain", 1), "plain");
    }

    #[test]
    fn a_stream_ack_is_told_from_a_handlers_reply() {
        assert_eq!(
            stream_ack(br#"{"stream":"ORDERS","seq":5}"#).as_deref(),
            Some("ORDERS")
        );
        assert_eq!(
            stream_ack(br#"{"stream":"ORDERS","seq":5,"duplicate":true}"#).as_deref(),
            Some("ORDERS")
        );
        assert_eq!(stream_ack(br#"{"stream":"x","seq":1,"total":3}"#), None);
        assert_eq!(stream_ack(b"Hi, Ada!"), None);
    }
}
