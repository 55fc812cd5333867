//! Publishing an event's outputs again in place while the server cannot take
//! them yet ([`Unavailable`](super::Unavailable): a cluster electing a stream
//! leader, a connection moving to another node). The same messages go again,
//! `Nats-Msg-Id` and all, so a stream keeps one copy of a publish that did
//! land; the event stays in flight meanwhile (its in-progress acks go on, see
//! `with_progress` in serve.rs), instead of being redelivered or
//! dead-lettered for a failure that is not its own.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Sink, is_unavailable};
use crate::event::Message;
use crate::plugin::{Plugin, Stats};

/// The first pause before publishing again; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How long an event's outputs are published again before the failure
/// stands (the event is then unfinished and delivered again, as before):
/// longer than a cluster's election, shorter than anyone's patience.
pub const MAX_REPUBLISH: Duration = Duration::from_secs(30);

/// Publish `outputs`; while the error says the server cannot take them yet,
/// publish them again after a backoff, each time counted in
/// `outputs_retried`, until they are taken, the failure is a refusal, `stop`
/// fires or [`MAX_REPUBLISH`] has passed. Returns the last result.
pub async fn publish_until_taken<S: Sink>(
    plugin: &Plugin,
    sink: &S,
    outputs: Vec<Message>,
    confirm: bool,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + MAX_REPUBLISH;
    let mut pause = FIRST_PAUSE;
    loop {
        let e = match sink.publish(outputs.clone(), confirm).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let now = tokio::time::Instant::now();
        if !is_unavailable(&e) || stop.is_cancelled() || now + pause > deadline {
            return Err(e);
        }
        tracing::debug!(
            plugin = plugin.name(), error = %format!("{e:#}"),
            "the server cannot take the outputs yet; publishing them again in {} ms",
            pause.as_millis()
        );
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return Err(e),
        }
        Stats::bump(&plugin.stats.outputs_retried);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
