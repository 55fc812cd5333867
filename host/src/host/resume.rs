//! Where a new durable consumer starts when a swap changes a plugin's
//! JetStream subscriptions. A subscription whose subject changed gets a
//! durable of its own (its name hashes the subject); made as a fresh
//! consumer is, it would deliver the whole stream again, events the running
//! version handled included. So a new durable with no `durable` named, on a
//! stream the running version consumed through consumers the new one drops,
//! starts just after the lowest ack floor of those: nothing they left
//! unacknowledged is lost, and what they acknowledged below it is not
//! handled again. When that floor cannot be read the new version is refused,
//! naming the subscription.

use std::collections::HashMap;

use async_nats::jetstream;

use crate::config::{DeliveryMode, Manifest};
use crate::transport::jetstream::durable_name;

/// A durable consumer of the new version that continues retired ones.
#[derive(Debug, Clone)]
pub(super) struct Successor {
    /// The new durable consumer's name.
    durable: String,
    stream: String,
    /// Where in plugin.toml: `subscribe[i]`, and its subject.
    field: String,
    subject: String,
    /// The running version's consumers on the same stream that the new
    /// version drops.
    retired: Vec<String>,
}

/// The durable consumers `new` makes that continue consumers of `old`.
pub(super) fn successors(old: &Manifest, new: &Manifest) -> Vec<Successor> {
    let durables = |m: &Manifest| -> Vec<(String, String)> {
        (m.subscribe.iter())
            .filter(|s| s.mode == DeliveryMode::Jetstream)
            .filter_map(|s| Some((durable_name(&m.name, s), s.stream.clone()?)))
            .collect()
    };
    let (before, after) = (durables(old), durables(new));
    let kept = |d: &String| after.iter().any(|(a, _)| a == d);
    let mut found = Vec::new();
    for (i, sub) in new.subscribe.iter().enumerate() {
        let Some(stream) = &sub.stream else { continue };
        if sub.mode != DeliveryMode::Jetstream || sub.durable.is_some() {
            continue;
        }
        let durable = durable_name(&new.name, sub);
        if before.iter().any(|(d, _)| *d == durable) {
            continue;
        }
        let retired: Vec<String> = (before.iter())
            .filter(|(d, s)| s == stream && !kept(d))
            .map(|(d, _)| d.clone())
            .collect();
        if !retired.is_empty() {
            found.push(Successor {
                durable,
                stream: stream.clone(),
                field: format!("subscribe[{i}]"),
                subject: sub.subject.clone(),
                retired,
            });
        }
    }
    found
}

/// The stream sequence each successor starts at (by durable name): one past
/// the lowest ack floor of the consumers it continues. An error names the
/// plugin, the subscription and the consumer that could not be read.
pub(super) async fn start_points(
    js: Option<&jetstream::Context>,
    plugin: &str,
    successors: &[Successor],
) -> Result<HashMap<String, u64>, String> {
    let mut starts = HashMap::new();
    for next in successors {
        let refuse = |retired: &str, why: String| {
            format!(
                "plugin {plugin:?}: {} (subject {:?} on stream {:?}): a new durable consumer {:?} \
                 would deliver the stream from its start, and where the running version's consumer \
                 {retired:?} stopped cannot be read: {why}; name the consumer with `durable` to choose",
                next.field, next.subject, next.stream, next.durable
            )
        };
        let Some(js) = js else {
            return Err(refuse(&next.retired[0], "no JetStream".into()));
        };
        let stream = (js.get_stream(&next.stream).await)
            .map_err(|e| refuse(&next.retired[0], e.to_string()))?;
        let mut floor = u64::MAX;
        for retired in &next.retired {
            let info = (stream.consumer_info(retired).await)
                .map_err(|e| refuse(retired, e.to_string()))?;
            floor = floor.min(info.ack_floor.stream_sequence);
        }
        tracing::info!(
            plugin, consumer = %next.durable, stream = %next.stream, after = ?next.retired,
            start_sequence = floor + 1,
            "a new durable consumer continues where the running version's stopped"
        );
        starts.insert(next.durable.clone(), floor + 1);
    }
    Ok(starts)
}
