//! `weir schedule list|add|rm`, and `weir pub --in/--at`: what the schedules
//! stream holds, and schedules made by hand.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream as js;
use chrono::{SecondsFormat, Utc};
use clap::{Args, Subcommand};
use futures::TryStreamExt as _;

use super::{GlobalArgs, connect_cli};
use crate::config::{Spec, is_plugin_name, parse_every, parse_instant};
use crate::event::{Message, is_publish_subject};
use crate::schedule::{self, DEFINITIONS, Definition, STREAM, delay, named_subject};
use crate::transport::server::{Features, SCHEDULE_AT, SCHEDULE_RECURRING};
use crate::{telemetry, transport};

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Every schedule in the WEIR_SCHEDULES stream: subject, spec, time
    /// zone, target, owner plugin, next fire time (--json: one object each).
    List,
    /// Make (or replace) the schedule `weir.schedule.named.<NAME>`.
    Add(AddArgs),
    /// Remove a schedule: NAME (one `weir schedule add` made) or its full
    /// subject. A plugin's entry comes back when the plugin is next loaded.
    Rm {
        /// NAME, or a subject under weir.schedule.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The schedule's name: 1-64 of a-z, 0-9, '-' and '_'.
    pub name: String,
    /// Where it publishes.
    #[arg(long)]
    pub subject: String,
    /// Six cron fields (sec min hour day-of-month month day-of-week) or @hourly, @daily, ...
    #[arg(long, conflicts_with_all = ["every", "at"], required_unless_present_any = ["every", "at"])]
    pub cron: Option<String>,
    /// An interval: 30s, 5m, 1h.
    #[arg(long, conflicts_with = "at")]
    pub every: Option<String>,
    /// Once, at this RFC 3339 time.
    #[arg(long)]
    pub at: Option<String>,
    /// The IANA time zone of --cron (default UTC).
    #[arg(long, requires = "cron")]
    pub time_zone: Option<String>,
    /// The body of each message.
    #[arg(long, default_value = "")]
    pub payload: String,
    /// A header NAME:VALUE on each message (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
}

pub async fn schedule(args: ScheduleArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(&telemetry::command_filter(global.verbose), false);
    let client = connect_cli(global).await?;
    let js = js::new(client.clone());
    match args.command {
        ScheduleCommand::List => list(&js, global.json).await,
        ScheduleCommand::Add(add) => {
            let features = transport::features(&client)?;
            let spec = match (&add.cron, &add.every, &add.at) {
                (Some(cron), _, _) => Spec::from_header(cron, add.time_zone.as_deref())
                    .map_err(|e| anyhow::anyhow!("--cron: {e}"))?,
                (_, Some(every), _) => {
                    Spec::Every(parse_every(every).map_err(|e| anyhow::anyhow!("--every: {e}"))?)
                }
                (_, _, Some(at)) => {
                    Spec::At(parse_instant(at).map_err(|e| anyhow::anyhow!("--at: {e}"))?)
                }
                _ => bail!("give --cron, --every or --at"),
            };
            if !is_plugin_name(&add.name) {
                bail!(
                    "{:?} is not a schedule name: use 1-64 of a-z, 0-9, '-' and '_'",
                    add.name
                );
            }
            check_target(&add.subject)?;
            need_server(features, spec.is_recurring())?;
            let def = Definition {
                subject: named_subject(&add.name),
                spec,
                target: add.subject.clone(),
                payload: add.payload.clone().into(),
                headers: header_pairs(&add.headers)?,
                owner: None,
                msg_id: None,
            };
            schedule::ensure_stream(&js).await?;
            schedule::sync::publish(&js, &def).await?;
            println!("{} {} -> {}", def.subject, def.spec.header(), def.target);
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Rm { name } => {
            let subject = if name.starts_with(&format!("{DEFINITIONS}.")) {
                name.clone()
            } else {
                named_subject(&name)
            };
            let stream = js
                .get_stream(STREAM)
                .await
                .with_context(|| format!("no stream {STREAM:?}: no schedules"))?;
            let purged = stream.purge().filter(subject.clone()).await?.purged;
            if purged == 0 {
                eprintln!("no schedule {subject:?}");
                return Ok(ExitCode::from(1));
            }
            println!("removed {subject}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line (or JSON object) per schedule.
async fn list(js: &js::Context, json: bool) -> anyhow::Result<ExitCode> {
    let Ok(stream) = js.get_stream(STREAM).await else {
        if !json {
            eprintln!("no schedules (no {STREAM} stream)");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(format!("{DEFINITIONS}.>"))
        .await?
        .try_collect()
        .await?;
    let now = Utc::now();
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<44} {:<18} {:<14} {:<24} {:<14} NEXT",
            "SUBJECT", "SPEC", "TIME ZONE", "TARGET", "OWNER"
        )?;
    }
    for (subject, _) in subjects {
        let Ok(stored) = stream.get_last_raw_message_by_subject(&subject).await else {
            continue;
        };
        let headers = transport::from_header_map(&stored.headers);
        let def = match Definition::from_stored(&subject, &headers, stored.payload) {
            Ok(def) => def,
            Err(e) => {
                eprintln!("{subject}: {e}");
                continue;
            }
        };
        let at = schedule::stored_time(stored.time.unix_timestamp_nanos());
        let next = def
            .next_after(now, at)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
        if json {
            let line = serde_json::json!({
                "subject": def.subject,
                "spec": def.spec.header(),
                "time_zone": def.spec.time_zone(),
                "target": def.target,
                "owner": def.owner,
                "next": next,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{:<44} {:<18} {:<14} {:<24} {:<14} {}",
                def.subject,
                def.spec.header(),
                def.spec.time_zone().unwrap_or("UTC"),
                def.target,
                def.owner.as_deref().unwrap_or("-"),
                next.as_deref().unwrap_or("-"),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir pub SUBJECT DATA --in 10m | --at TIME`: each message stored as a
/// one-shot schedule; prints where and when.
pub async fn publish_later(
    client: &async_nats::Client,
    subject: &str,
    payloads: Vec<String>,
    headers: Vec<(String, String)>,
    (delay_for, at): (Option<Duration>, Option<&str>),
    json: bool,
) -> anyhow::Result<ExitCode> {
    check_target(subject)?;
    need_server(transport::features(client)?, false)?;
    let js = js::new(client.clone());
    schedule::ensure_stream(&js).await?;
    let mut out = std::io::stdout().lock();
    for payload in payloads {
        let due = match (delay_for, at) {
            (Some(d), _) => {
                delay::in_from(Utc::now(), d).map_err(|e| anyhow::anyhow!("--in: {e}"))?
            }
            (_, Some(at)) => parse_instant(at).map_err(|e| anyhow::anyhow!("--at: {e}"))?,
            _ => bail!("give --in or --at"),
        };
        let msg = Message {
            subject: subject.to_owned(),
            payload: payload.into(),
            headers: headers.clone(),
        };
        let def = delay::definition(&msg, due);
        schedule::sync::publish(&js, &def).await?;
        let when = due.to_rfc3339_opts(SecondsFormat::Secs, true);
        if json {
            let line = serde_json::json!({"subject": subject, "at": when, "schedule": def.subject});
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "scheduled {subject} for {when} ({})", def.subject)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_target(subject: &str) -> anyhow::Result<()> {
    if !is_publish_subject(subject) {
        bail!("{subject:?} is not a subject to publish to");
    }
    if subject.starts_with("weir.schedule.") || subject.starts_with("weir.due.") {
        bail!("{subject:?}: weir.schedule.* and weir.due.* are the schedules' own");
    }
    Ok(())
}

fn need_server(features: Features, recurring: bool) -> anyhow::Result<()> {
    let needed = if recurring {
        SCHEDULE_RECURRING
    } else {
        SCHEDULE_AT
    };
    if features.version < needed {
        bail!(
            "nats-server {} has no {} message schedules (they need {needed}; scripts/setup.sh installs a current one)",
            features.version,
            if recurring { "cron or @every" } else { "@at" }
        );
    }
    Ok(())
}

fn header_pairs(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .with_context(|| format!("--header {h:?}: expected NAME:VALUE"))
        })
        .collect()
}
