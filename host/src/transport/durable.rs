//! weir's own durable pull consumers (webhook deliveries, fired schedules):
//! created on their stream, and bound again after a failed pull.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use tokio_util::sync::CancellationToken;

/// Create (or bind) the durable consumer `config` on `stream`; `what` names
/// the feature in the error.
pub async fn bind(
    js: &jetstream::Context,
    stream: &str,
    config: &jetstream::consumer::pull::Config,
    what: &str,
) -> anyhow::Result<PullConsumer> {
    let durable = config.durable_name.as_deref().unwrap_or_default();
    js.get_stream(stream)
        .await
        .with_context(|| format!("{what}: no stream {stream:?}"))?
        .create_consumer(config.clone())
        .await
        .with_context(|| format!("{what}: cannot create consumer {durable:?} on {stream:?}"))
}

/// After a failed pull: every second, bind the consumer again, until it is
/// bound or `stop` fires (`None`).
pub async fn bind_again(
    js: &jetstream::Context,
    stream: &str,
    config: &jetstream::consumer::pull::Config,
    what: &str,
    stop: &CancellationToken,
) -> Option<PullConsumer> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return None,
        }
        match bind(js, stream, config, what).await {
            Ok(bound) => return Some(bound),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "{what}: cannot bind the consumer; retrying in 1 s")
            }
        }
    }
}
