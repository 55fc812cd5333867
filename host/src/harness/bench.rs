//! `weir bench`: a plugin author's measure of their handler, in-process and
//! without NATS: the fixture events run one after another through the
//! sandbox under the plugin's limits, in the isolation mode asked for and
//! then in the other, so an author can choose between them. With `--batch N`
//! the events run N to a call (one instance per call), timed per call and
//! reported per event.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::fixture::{self, Fixture};
use crate::bundle::Bundle;
use crate::config::{HostConfig, Isolation};
use crate::pipeline::{Outcome, decide};
use crate::plugin::Plugin;
use crate::sandbox::Runtime;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub events: Vec<PathBuf>,
    /// Measured first; the other mode follows.
    pub isolation: Option<Isolation>,
    /// Events timed per mode (the fixtures in turn), after a warm-up.
    pub n: usize,
    /// `[config]` overrides, as `weir test --set`.
    pub set: Vec<(String, String)>,
    /// Events per call: 1 runs each alone (`handle`), more run batches.
    pub batch: usize,
}

/// One isolation mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Mode {
    pub isolation: &'static str,
    /// Events per call.
    pub batch: usize,
    pub events: usize,
    /// Events whose attempt did not succeed (measured all the same).
    pub failed: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    /// One core, one event after another: 1 / mean.
    pub events_per_s_per_core: f64,
    /// The largest linear memory an instance reached.
    pub memory_peak_bytes: usize,
}

/// `weir bench`'s report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plugin: String,
    pub version: String,
    pub sha256: String,
    pub fixtures: usize,
    pub modes: Vec<Mode>,
}

pub async fn run(config: &HostConfig, bundle: &Path, options: &Options) -> anyhow::Result<Report> {
    if options.n == 0 {
        bail!("--n: at least 1 event");
    }
    if options.batch == 0 {
        bail!("--batch: at least 1 event per call");
    }
    let bundle = Bundle::load(bundle, config.sandbox.max_memory_mb)?;
    let mut events = Vec::new();
    for file in &options.events {
        for (i, f) in fixture::read_json_list::<Fixture>(file)?
            .into_iter()
            .enumerate()
        {
            let number = events.len() + 1;
            let loaded = f.load(format!("{}#{i}", file.display()), number)?;
            events.push(loaded.event);
        }
    }
    if events.is_empty() {
        bail!("no fixture event in {:?}", options.events);
    }
    let mut table: BTreeMap<String, String> = bundle.manifest.config.clone();
    table.extend(options.set.iter().cloned());
    let first = options
        .isolation
        .unwrap_or(bundle.manifest.limits.isolation);
    let second = match first {
        Isolation::Event => Isolation::Reuse,
        Isolation::Reuse => Isolation::Event,
    };
    let runtime = Runtime::new(&config.sandbox)?;
    let mut modes = Vec::new();
    for isolation in [first, second] {
        let mut b = bundle.clone();
        b.manifest.limits.isolation = isolation;
        let plugin = Plugin::load_with_configs(&runtime, &b, config, std::slice::from_ref(&table))
            .with_context(|| format!("{}", bundle.wasm_path.display()))?
            .pop()
            .context("no plugin was loaded")?;
        modes.push(measure(&plugin, isolation, &events, options).await);
    }
    Ok(Report {
        plugin: bundle.manifest.name.clone(),
        version: bundle.manifest.version.to_string(),
        sha256: bundle.sha256_hex(),
        fixtures: events.len(),
        modes,
    })
}

async fn measure(
    plugin: &Plugin,
    isolation: Isolation,
    events: &[crate::event::Event],
    options: &Options,
) -> Mode {
    if options.batch > 1 {
        return measure_batches(plugin, isolation, events, options).await;
    }
    let n = options.n;
    let policy = &plugin.manifest.retry;
    let warm_up = (n / 10).clamp(1, 100);
    let mut took = Vec::with_capacity(n);
    let mut failed = 0;
    let mut memory_peak = 0;
    for i in 0..warm_up + n {
        let event = &events[i % events.len()];
        let start = Instant::now();
        let run = plugin.executor.run(event).await;
        let outcome = decide(policy, event.attempt, run.result);
        let elapsed = start.elapsed();
        memory_peak = memory_peak.max(run.memory_peak);
        if i < warm_up {
            continue;
        }
        if !matches!(outcome, Outcome::Done(_)) {
            failed += 1;
        }
        took.push(elapsed);
    }
    figures(isolation, 1, took, failed, memory_peak)
}

/// `--batch`: calls of `options.batch` events, the fixtures in turn; each
/// call's time counts once per event, divided among them.
async fn measure_batches(
    plugin: &Plugin,
    isolation: Isolation,
    events: &[crate::event::Event],
    options: &Options,
) -> Mode {
    let size = options.batch;
    let calls = options.n.div_ceil(size);
    let warm_up = (calls / 10).clamp(1, 100);
    let mut took = Vec::with_capacity(calls * size);
    let mut failed = 0;
    let mut memory_peak = 0;
    let mut next = 0;
    for call in 0..warm_up + calls {
        let batch: Vec<_> = (0..size)
            .map(|j| events[(next + j) % events.len()].clone())
            .collect();
        next += size;
        let start = Instant::now();
        let run = plugin.executor.run_batch(&batch).await;
        let elapsed = start.elapsed();
        memory_peak = memory_peak.max(run.memory_peak);
        if call < warm_up {
            continue;
        }
        let ok = match &run.result {
            crate::sandbox::BatchResult::Each(each) => each.iter().filter(|r| r.is_ok()).count(),
            _ => 0,
        };
        failed += size - ok;
        let per_event = elapsed / size as u32;
        took.extend(std::iter::repeat_n(per_event, size));
    }
    figures(isolation, size, took, failed, memory_peak)
}

fn figures(
    isolation: Isolation,
    batch: usize,
    mut took: Vec<Duration>,
    failed: usize,
    memory_peak: usize,
) -> Mode {
    took.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| us(took[((took.len() - 1) as f64 * q).round() as usize]);
    let mean = us(took.iter().sum::<Duration>()) / took.len() as f64;
    Mode {
        isolation: match isolation {
            Isolation::Event => "event",
            Isolation::Reuse => "reuse",
        },
        batch,
        events: took.len(),
        failed,
        p50_us: at(0.50),
        p99_us: at(0.99),
        mean_us: mean,
        events_per_s_per_core: if mean > 0.0 { 1e6 / mean } else { 0.0 },
        memory_peak_bytes: memory_peak,
    }
}

pub fn print_human(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{} {} (sha256 {}), {} fixture event(s), one core, {}:",
        report.plugin,
        report.version,
        &report.sha256[..12.min(report.sha256.len())],
        report.fixtures,
        match report.modes.first().map_or(1, |m| m.batch) {
            1 => "one event after another".to_owned(),
            n => format!("batches of {n} (times per event: a call's time / {n})"),
        }
    )?;
    writeln!(
        out,
        "  {:<10} {:>8} {:>10} {:>10} {:>10} {:>14} {:>12} {:>7}",
        "isolation",
        "events",
        "p50 µs",
        "p99 µs",
        "mean µs",
        "events/s/core",
        "memory peak",
        "failed"
    )?;
    for m in &report.modes {
        writeln!(
            out,
            "  {:<10} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>14.0} {:>10.1} MiB {:>7}",
            m.isolation,
            m.events,
            m.p50_us,
            m.p99_us,
            m.mean_us,
            m.events_per_s_per_core,
            m.memory_peak_bytes as f64 / (1024.0 * 1024.0),
            m.failed
        )?;
    }
    if let [a, b] = report.modes.as_slice()
        && a.mean_us > 0.0
        && b.mean_us > 0.0
    {
        let (fast, slow) = if a.mean_us <= b.mean_us {
            (a, b)
        } else {
            (b, a)
        };
        writeln!(
            out,
            "  {} handles {:.1}× the events/s of {}; \"event\" gives every event a fresh instance, \"reuse\" keeps an instance's state between events",
            fast.isolation,
            slow.mean_us / fast.mean_us,
            slow.isolation
        )?;
    }
    Ok(())
}
