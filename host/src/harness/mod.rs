//! `weir test`: run a plugin against fixture events, in-process and without
//! NATS, under the same limits, isolation and retry policy as `weir up`;
//! compare with expected results.
//!
//! # Layout
//!
//! - [`fixture`]: fixture files (the events) and `[config]` overrides.
//! - [`expect`]: `--expect` files and the comparison.
//! - [`report`]: what a run reports, as JSON or text.
//! - [`bench`]: `weir bench`, the same fixtures timed in both isolation modes.
//!
//! The command line is `cli::test`.
//!
//! Each attempt goes through the pipeline's own [`pipeline::admit`] and
//! [`pipeline::attempt`] (whose [`pipeline::decide`] computes the backoff
//! from `[retry]`), so the verdicts are the host's. With `--follow`, a
//! retried event is run again at once with the next attempt number, as the
//! host would after the backoff, until it is done or dead-lettered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::config::HostConfig;
use crate::event::{Event, Failure, FailureKind, LogLine, Message};
use crate::pipeline::{self, Outcome};
use crate::plugin::Plugin;
use crate::sandbox::Runtime;

pub mod bench;
pub mod expect;
pub mod fixture;
pub mod report;

pub use expect::Expectation;
pub use fixture::Fixture;
pub use report::{Report, print_human};

/// What the host does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The outputs are published; the event is finished.
    Done,
    /// Another attempt after the backoff.
    Retry,
    /// The event goes to the dead-letter queue.
    DeadLetter,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retry => "retry",
            Self::DeadLetter => "dead-letter",
        }
    }
}

/// What to run: the fixtures, the expectations, and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fixture files, each one event or an array of them.
    pub events: Vec<PathBuf>,
    /// One expectation per event, in order.
    pub expect: Option<PathBuf>,
    /// Run each event attempt after attempt until it is done or dead-lettered.
    pub follow: bool,
    /// `[config]` values over plugin.toml's, for every event.
    pub set: Vec<(String, String)>,
}

/// One attempt as it ran.
#[derive(Debug)]
pub(crate) struct Ran {
    pub attempt: u32,
    pub result: Result<Vec<Message>, Failure>,
    pub verdict: Verdict,
    /// The backoff before the next attempt (verdict `retry`).
    pub delay: Option<Duration>,
    /// The verdict in words.
    pub next: String,
    pub logs: Vec<LogLine>,
}

impl Ran {
    fn new(plugin: &Plugin, attempt: u32, run: pipeline::Attempt) -> Self {
        let (result, verdict, delay, next) = match run.outcome {
            Outcome::Done(outputs) => (Ok(outputs), Verdict::Done, None, "done".to_owned()),
            Outcome::Retry { delay, failure } => {
                let next = format!(
                    "retry after {} ms (attempt {} of {})",
                    delay.as_millis(),
                    attempt + 1,
                    plugin.manifest.retry.max_attempts
                );
                (Err(failure), Verdict::Retry, Some(delay), next)
            }
            Outcome::DeadLetter(f) => {
                let next = format!("dead-letter ({})", f.kind.dead_letter_kind());
                (Err(f), Verdict::DeadLetter, None, next)
            }
        };
        Self {
            attempt,
            result,
            verdict,
            delay,
            next,
            logs: run.logs,
        }
    }
}

/// Run `bundle_dir`'s plugin over every fixture event, checking each against
/// the matching expectation when there are any.
pub async fn run(
    config: &HostConfig,
    bundle_dir: &Path,
    options: &Options,
) -> anyhow::Result<Report> {
    let bundle = Bundle::load(bundle_dir, config.sandbox.max_memory_mb)?;
    let mut fixtures = Vec::new();
    for file in &options.events {
        for (i, fixture) in fixture::read_json_list::<Fixture>(file)?
            .into_iter()
            .enumerate()
        {
            let number = fixtures.len() + 1;
            fixtures.push(fixture.load(format!("{}#{i}", file.display()), number)?);
        }
    }
    let max_attempts = bundle.manifest.retry.max_attempts;
    if let Some(late) = fixtures.iter().find(|f| f.event.attempt > max_attempts) {
        bail!(
            "{}: attempt: {} is past the last attempt ([retry] max_attempts = {max_attempts} in {}): the host never runs it",
            late.name,
            late.event.attempt,
            bundle.dir.join("plugin.toml").display()
        );
    }
    let expectations = match &options.expect {
        Some(path) => Some(read_expectations(path, fixtures.len())?),
        None => None,
    };

    // The [config] each event runs with: plugin.toml's, then --set, then the
    // fixture's own; one plugin per distinct table, compiled once.
    let mut base = bundle.manifest.config.clone();
    for (key, value) in &options.set {
        warn_unknown_key(&bundle, key, "--set");
        base.insert(key.clone(), value.clone());
    }
    let mut tables: Vec<BTreeMap<String, String>> = Vec::new();
    let mut table_of = Vec::with_capacity(fixtures.len());
    for loaded in &fixtures {
        let mut table = base.clone();
        for (key, value) in &loaded.config {
            warn_unknown_key(&bundle, key, &format!("{}: config", loaded.name));
            table.insert(key.clone(), value.clone());
        }
        let index = match tables.iter().position(|t| *t == table) {
            Some(i) => i,
            None => {
                tables.push(table);
                tables.len() - 1
            }
        };
        table_of.push(index);
    }
    if tables.is_empty() {
        tables.push(base);
    }
    let runtime = Runtime::new(&config.sandbox)?;
    let plugins = Plugin::load_with_configs(&runtime, &bundle, config, &tables)
        .with_context(|| format!("{}", bundle.wasm_path.display()))?;
    let name = plugins
        .first()
        .map(|p| p.name().to_owned())
        .unwrap_or_default();

    // A plugin with batches runs the events of each [config] table as one
    // batch (split as `weir up` splits a batch that fails as a whole).
    let batched = bundle.manifest.subscribe.iter().any(|s| s.batch.is_some());
    let mut all_runs: Vec<Vec<Ran>> = Vec::with_capacity(fixtures.len());
    if batched {
        all_runs.resize_with(fixtures.len(), Vec::new);
        for (table, plugin) in plugins.iter().enumerate() {
            let members: Vec<usize> = (0..fixtures.len())
                .filter(|&i| table_of[i] == table)
                .collect();
            let events = members.iter().map(|&i| fixtures[i].event.clone()).collect();
            let runs = run_batch(plugin, events, options.follow).await;
            for (i, runs) in members.into_iter().zip(runs) {
                all_runs[i] = runs;
            }
        }
    } else {
        for (i, loaded) in fixtures.iter().enumerate() {
            let plugin = &plugins[table_of[i]];
            all_runs.push(run_event(plugin, loaded.event.clone(), options.follow).await);
        }
    }

    let mut events = Vec::new();
    for (i, (loaded, mut runs)) in fixtures.into_iter().zip(all_runs).enumerate() {
        let Some(last) = runs.pop() else {
            bail!("{}: no attempt was run", loaded.name);
        };
        let mismatches = match expectations.as_ref().map(|e| &e[i]) {
            Some(expected) => expect::compare(&loaded.name, &last, expected)?,
            None => runs.iter().chain([&last]).filter_map(not_chosen).collect(),
        };
        events.push(report::EventReport {
            fixture: loaded.name,
            subject: loaded.event.subject,
            last: report::AttemptReport::new(last),
            retried: runs.into_iter().map(report::AttemptReport::new).collect(),
            passed: mismatches.is_empty(),
            mismatches,
        });
    }
    let passed = events.iter().filter(|e| e.passed).count();
    Ok(Report {
        plugin: name,
        failed: events.len() - passed,
        passed,
        events,
    })
}

fn read_expectations(path: &Path, events: usize) -> anyhow::Result<Vec<Expectation>> {
    let list: Vec<Expectation> = fixture::read_json_list(path)?;
    if list.len() != events {
        bail!(
            "{}: {} expectations for {} events",
            path.display(),
            list.len(),
            events
        );
    }
    for (i, e) in list.iter().enumerate() {
        e.check(&format!("{}#{i}", path.display()))?;
    }
    Ok(list)
}

/// A key plugin.toml's `[config]` does not have is set anyway (the handler
/// may read it with a fallback), but a typo should not pass unseen.
fn warn_unknown_key(bundle: &Bundle, key: &str, from: &str) {
    if !bundle.manifest.config.contains_key(key) {
        tracing::warn!(
            "{from}: {key:?} is not in {}'s [config]; set for this run anyway",
            bundle.dir.join("plugin.toml").display()
        );
    }
}

/// Admit `event`, then attempt it once, or with `follow` attempt after
/// attempt while the verdict is `retry`. Never empty.
async fn run_event(plugin: &Plugin, mut event: Event, follow: bool) -> Vec<Ran> {
    // Producer tokens are checked as under `weir up`.
    if let Err(failure) = pipeline::admit(plugin, &mut event) {
        let refused = pipeline::Attempt {
            outcome: Outcome::DeadLetter(failure),
            logs: Vec::new(),
        };
        return vec![Ran::new(plugin, event.attempt, refused)];
    }
    let mut runs = Vec::new();
    loop {
        let ran = Ran::new(
            plugin,
            event.attempt,
            pipeline::attempt(plugin, &event).await,
        );
        // `decide` retries only below max_attempts: this ends.
        let again = follow && ran.verdict == Verdict::Retry;
        runs.push(ran);
        if !again {
            return runs;
        }
        event.attempt += 1;
    }
}

/// [`run_event`] for many events at once, as one batch: each admitted, the
/// admitted ones run together, and with `follow` those whose verdict is
/// `retry` run together again at their next attempt. One list per event.
async fn run_batch(plugin: &Plugin, mut events: Vec<Event>, follow: bool) -> Vec<Vec<Ran>> {
    let mut runs: Vec<Vec<Ran>> = events.iter().map(|_| Vec::new()).collect();
    let mut pending = Vec::new();
    for (i, event) in events.iter_mut().enumerate() {
        match pipeline::admit(plugin, event) {
            Ok(()) => pending.push(i),
            Err(failure) => {
                let refused = pipeline::Attempt {
                    outcome: Outcome::DeadLetter(failure),
                    logs: Vec::new(),
                };
                runs[i].push(Ran::new(plugin, event.attempt, refused));
            }
        }
    }
    while !pending.is_empty() {
        let batch: Vec<Event> = pending.iter().map(|&i| events[i].clone()).collect();
        let outputs = pipeline::run_together(plugin, batch).await;
        let mut again = Vec::new();
        for (i, output) in pending.into_iter().zip(outputs) {
            let event = &mut events[i];
            let ran = Ran::new(
                plugin,
                event.attempt,
                pipeline::attempt_of(plugin, event, output),
            );
            if follow && ran.verdict == Verdict::Retry {
                event.attempt += 1;
                again.push(i);
            }
            runs[i].push(ran);
        }
        pending = again;
    }
    runs
}

/// Without `--expect`, an attempt passes when its result is the handler's
/// own (outputs, a `retry` or a `reject`) or the host refused the event
/// (`unauthorized`); a crash or a broken limit fails the run.
fn not_chosen(ran: &Ran) -> Option<String> {
    let failure = ran.result.as_ref().err()?;
    match failure.kind {
        FailureKind::Retry | FailureKind::Reject | FailureKind::Unauthorized => None,
        FailureKind::Timeout
        | FailureKind::Trap
        | FailureKind::Memory
        | FailureKind::BadOutput
        | FailureKind::ForbiddenPublish
        | FailureKind::BadInput => Some(format!(
            "attempt {}: {failure}: not a result the handler returned (an --expect entry {{\"failure\": {{\"kind\": \"{}\"}}}} expects it)",
            ran.attempt,
            failure.kind.as_str()
        )),
    }
}
