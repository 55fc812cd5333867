//! The deliverer: the durable consumer [`DURABLE`](super::DURABLE) on
//! [`STREAM`](super::STREAM), shared by every host; a loop that pulls as many
//! jobs as it has free slots (at most [`MAX_IN_FLIGHT`](super::MAX_IN_FLIGHT)
//! POSTs at once) and hands each to its own task; and stop: no pull after the
//! token fires, jobs that arrive from the last pull are NAK'd at once (another
//! host or a later start takes them), POSTs under way finish and settle.
//!
//! Pulls are short single requests (`batch`, [`PULL_EXPIRES`]) rather than a
//! long-lived pull stream: stop waits at most that long, and there is no
//! stream to stall.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::attempt::{self, Shared};
use super::http::Poster;
use super::{Counters, DURABLE, MAX_IN_FLIGHT, STREAM, Settings};
use crate::transport::durable;

/// How long one pull waits on the server for jobs; also the longest stop
/// waits for the pull under way.
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The most jobs the consumer keeps unacknowledged across every host. A job
/// waiting out its backoff counts, so this is also how many failing jobs can
/// wait at once before new ones queue behind them.
pub const MAX_ACK_PENDING: i64 = 10_000;

/// The consumer's ack wait: twice the POST timeout and a second. A job whose
/// host died is delivered again after it.
pub fn ack_wait(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(1)
}

/// Start delivering: bind the shared consumer on [`STREAM`] (which
/// [`ensure_stream`](super::ensure_stream) creates) and spawn the deliverer on
/// `tasks`. It runs until `stop` fires; `tasks` then also holds the POSTs
/// under way until they settle (at most `timeout` each). The counters are
/// live.
pub async fn spawn(
    js: jetstream::Context,
    settings: Settings,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Arc<Counters>> {
    if settings.timeout.is_zero() {
        bail!("webhooks: the timeout must be above 0");
    }
    if !crate::event::is_publish_subject(&settings.dead_letter_subject) {
        bail!(
            "webhooks: the dead-letter subject {:?} is not a subject to publish to",
            settings.dead_letter_subject
        );
    }
    let poster = Poster::new(settings.timeout)?;
    let config = consumer_config(&settings);
    let consumer = durable::bind(&js, STREAM, &config, "webhooks").await?;
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        js: js.clone(),
        progress_every: ack_wait(settings.timeout) / 3,
        settings,
        poster,
        counters: counters.clone(),
    });
    tracing::info!(
        stream = STREAM,
        consumer = DURABLE,
        "webhook deliverer started"
    );
    tasks.spawn(run(js, config, consumer, shared, stop, tasks.clone()));
    Ok(counters)
}

fn consumer_config(settings: &Settings) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(DURABLE.into()),
        description: Some("weir webhook deliverers".into()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ack_wait(settings.timeout),
        // Unlimited: the deliverer counts attempts from the delivery count
        // and dead-letters after the last; a server-side cap would end a job
        // silently when its dead letter could not be stored.
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

async fn run(
    js: jetstream::Context,
    config: jetstream::consumer::pull::Config,
    mut consumer: PullConsumer,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    'pull: loop {
        // One free slot at least before asking for anything.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            _ = stop.cancelled() => break,
        };
        let Ok(first) = first else { break };
        let want = slots.available_permits() + 1;
        // Not raced with stop: once the request is out, its jobs must be
        // read (and handed back), not left to the ack wait.
        let pulled = consumer
            .batch()
            .max_messages(want)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match pulled {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(consumer = DURABLE, error = %e, "webhooks: cannot pull; binding the consumer again in 1 s");
                drop(first);
                match durable::bind_again(&js, STREAM, &config, "webhooks", &stop).await {
                    Some(bound) => {
                        consumer = bound;
                        continue 'pull;
                    }
                    None => break 'pull,
                }
            }
        };
        let mut first = Some(first);
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    hand_back(&mut batch).await;
                    break 'pull;
                }
                next = batch.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "webhooks: pull ended early");
                    break;
                }
                None => break,
            };
            // The pull asked for no more than there were free slots, and only
            // this loop takes them: a slot is free.
            let permit = match first.take() {
                Some(permit) => permit,
                None => match slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break 'pull,
                },
            };
            let shared = shared.clone();
            tasks.spawn(async move {
                attempt::deliver(&shared, message).await;
                drop(permit);
            });
        }
    }
    tracing::info!(consumer = DURABLE, "webhook deliverer stopped");
}

/// NAK, for another host or a later start, what the pull under way still
/// brings (until the server answers it: at most [`PULL_EXPIRES`]).
async fn hand_back(batch: &mut jetstream::consumer::pull::Batch) {
    let mut handed = 0;
    while let Some(next) = batch.next().await {
        if let Ok(message) = next {
            if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                tracing::warn!(error = %e, "webhooks: cannot hand a job back; it is delivered again after the ack wait");
            }
            handed += 1;
        }
    }
    if handed > 0 {
        tracing::info!(
            handed_back = handed,
            "webhooks: handed back jobs not started"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_waits_past_a_whole_post_and_caps_nothing() {
        let (secret, _) = super::super::Secret::generate();
        let settings = Settings::new(secret);
        let config = consumer_config(&settings);
        assert_eq!(config.ack_wait, Duration::from_secs(31));
        assert_eq!(config.max_deliver, -1);
        assert_eq!(config.durable_name.as_deref(), Some(DURABLE));
        assert!(ack_wait(settings.timeout) / 3 > settings.timeout / 2);
    }
}
