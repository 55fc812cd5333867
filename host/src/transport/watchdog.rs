//! The JetStream pull watchdog's question to the server: after a quiet
//! spell, does it hold messages for the consumer with room to deliver them
//! and no pull request waiting? The reader asks it beside its reading
//! ([`super::jetstream`]) and renews the pull when the answer is yes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;

/// The watchdog's question in flight: `Some((num_pending, num_ack_pending))`
/// when the pull looks stalled.
pub(super) type Check = Pin<Box<dyn Future<Output = Option<(u64, u64)>> + Send>>;

/// The watchdog's check after a quiet spell: does the server hold messages
/// for this consumer, with room to deliver them, and no pull request waiting?
/// Then its pending and ack-pending counts. No answer within `within` (a
/// cluster without a consumer leader) is no.
pub(super) async fn stalled(
    mut consumer: PullConsumer,
    plugin: Arc<str>,
    within: Duration,
) -> Option<(u64, u64)> {
    let info = match tokio::time::timeout(within, consumer.info()).await {
        Ok(Ok(info)) => info.clone(),
        Ok(Err(e)) => {
            tracing::debug!(plugin = %plugin, error = %e, "watchdog: cannot read the consumer's state");
            return None;
        }
        Err(_) => {
            tracing::debug!(plugin = %plugin, "watchdog: no answer about the consumer's state");
            return None;
        }
    };
    let room = info.config.max_ack_pending <= 0
        || (info.num_ack_pending as i64) < info.config.max_ack_pending;
    // A paused consumer (an open circuit, `weir pause`, `nats consumer
    // pause`) delivers nothing by design.
    if info.num_pending == 0 || info.num_waiting > 0 || !room || info.paused {
        return None;
    }
    Some((info.num_pending, info.num_ack_pending as u64))
}
