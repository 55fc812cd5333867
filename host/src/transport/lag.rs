//! JetStream consumer lag, for the metrics endpoint: every `lag_poll_ms` the
//! host asks the server for the info of each durable consumer its plugins
//! pull from, and keeps `num_pending` (stored, not yet delivered) and
//! `num_ack_pending` (delivered, not yet acknowledged) on a
//! [`LagBoard`] — what KEDA's NATS
//! JetStream scaler reads — and whether the consumer still exists (`/readyz`
//! names a plugin whose consumer is gone).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::ConsumerInfoErrorKind};
use tokio_util::sync::CancellationToken;

use crate::config::DeliveryMode;
use crate::plugin::Plugin;
use crate::roster::Roster;
use crate::telemetry::lag::{ConsumerState, LagBoard, LagSample};
use crate::transport::jetstream::ConsumerSpec;

/// One consumer to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub plugin: String,
    pub stream: String,
    pub consumer: String,
}

/// Poll every consumer the plugins of `roster` pull from, every `every`
/// until `stop`, writing each round onto `board`; the set is read again each
/// round (a swapped plugin may pull from others). A consumer that cannot be
/// asked about (no answer) keeps its last figures, marked stale.
pub async fn poll(
    js: jetstream::Context,
    roster: Arc<Roster>,
    every: Duration,
    board: Arc<LagBoard>,
    stop: CancellationToken,
) {
    let mut watched: Vec<Watched> = Vec::new();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = consumers(&roster.plugins());
        if now != watched {
            watched = now;
            board.set(
                watched
                    .iter()
                    .map(|w| LagSample::new(&w.plugin, &w.stream, &w.consumer))
                    .collect(),
            );
        }
        for (i, w) in watched.iter().enumerate() {
            let state = ask(&js, w).await;
            board.update(i, state);
        }
    }
}

async fn ask(js: &jetstream::Context, w: &Watched) -> ConsumerState {
    let stream = match js.get_stream_no_info(&w.stream).await {
        Ok(stream) => stream,
        Err(e) => return ConsumerState::Unknown(format!("{e}")),
    };
    match stream.consumer_info(&w.consumer).await {
        Ok(info) => ConsumerState::Present {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
        },
        Err(e) => match e.kind() {
            ConsumerInfoErrorKind::NotFound => ConsumerState::Missing(format!(
                "consumer {} of stream {} is missing",
                w.consumer, w.stream
            )),
            ConsumerInfoErrorKind::StreamNotFound => {
                ConsumerState::Missing(format!("stream {} is missing", w.stream))
            }
            _ => ConsumerState::Unknown(format!("{e}")),
        },
    }
}

/// Every JetStream consumer `plugins` pull from.
fn consumers(plugins: &[Arc<Plugin>]) -> Vec<Watched> {
    let mut watched = Vec::new();
    for plugin in plugins {
        for sub in &plugin.manifest.subscribe {
            if sub.mode != DeliveryMode::Jetstream {
                continue;
            }
            if let Ok(spec) = ConsumerSpec::new(&plugin.manifest, sub) {
                watched.push(Watched {
                    plugin: plugin.name().to_owned(),
                    stream: spec.stream.clone(),
                    consumer: spec.durable().to_owned(),
                });
            }
        }
    }
    watched
}
