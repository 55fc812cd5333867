//! How one plugin is wired to NATS: its core subscriptions and durable
//! consumers, its readers, its circuit follower and its pipeline, stopped
//! together by the wiring's own token; `--dev` streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{DeliveryMode, StreamSpec};
use crate::pipeline;
use crate::plugin::Plugin;
use crate::transport::{self, Feed, IdSource, NatsSink, jetstream};

/// One plugin's readers and pipeline, running.
pub(super) struct Wired {
    /// The version new events start on; replacing it is a swap that keeps
    /// the subscriptions.
    pub(super) current: watch::Sender<Arc<Plugin>>,
    /// Stops the readers and the circuit follower (a child of the host's
    /// stop); the pipeline then finishes what they queued and ends.
    pub(super) stop: CancellationToken,
    /// The core readers: done once their subscriptions are drained.
    pub(super) core_readers: TaskTracker,
    /// The serve loop: done once its readers are gone and every event they
    /// queued has started or been handed back; none starts after.
    pub(super) pipeline: TaskTracker,
}

/// Subscribe all of one plugin's subscriptions, then start its readers and
/// its pipeline. `starts`: durable consumers to create at a stream sequence
/// (by durable name) instead of at the stream's first event.
pub(super) async fn subscribe_plugin(
    client: &async_nats::Client,
    sink: &Arc<NatsSink>,
    plugin: &Arc<Plugin>,
    ctx: &Running,
    starts: &HashMap<String, u64>,
) -> anyhow::Result<Wired> {
    let wiring = ctx.stop.child_token();
    let manifest = &plugin.manifest;
    // JetStream deliveries wait in the queue with their ack timer running:
    // keep that wait short.
    let has_jetstream = manifest
        .subscribe
        .iter()
        .any(|s| s.mode == DeliveryMode::Jetstream);
    let capacity = if has_jetstream {
        manifest.events_in_flight() as usize
    } else {
        manifest.limits.queue as usize
    };
    let (tx, rx) = mpsc::channel(capacity);
    // Subscribe everything first: a failure refuses the plugin before any
    // reader starts.
    let mut core = Vec::new();
    let mut pulls = Vec::new();
    let mut specs = Vec::new();
    for sub in &manifest.subscribe {
        match sub.mode {
            DeliveryMode::Core => {
                core.push(transport::core::subscribe(client, plugin.name(), sub).await?)
            }
            DeliveryMode::Jetstream => {
                let js = sink.jetstream().context(
                    "jetstream subscription, but the NATS server has no JetStream for this account",
                )?;
                let mut spec = jetstream::ConsumerSpec::new(manifest, sub)?;
                if let Some(&start_sequence) = starts.get(spec.durable()) {
                    spec.config.deliver_policy =
                        async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                            start_sequence,
                        };
                }
                let consumer = jetstream::bind_consumer(js, &spec).await?;
                // Paused on the server (an open circuit, `weir pause`): this
                // host joins in.
                let info = consumer.cached_info();
                if info.paused
                    && let Some(left) = info.pause_remaining
                {
                    let now = tokio::time::Instant::now();
                    if plugin.circuit.open_until(now, now + left).is_some() {
                        tracing::warn!(
                            plugin = plugin.name(),
                            consumer = spec.durable(),
                            remaining_ms = left.as_millis() as u64,
                            "the consumer is paused on the server: circuit open"
                        );
                    }
                }
                specs.push(spec.clone());
                pulls.push((js.clone(), spec, consumer));
            }
        }
    }
    let consumers = transport::circuit::Consumers {
        js: sink.jetstream().cloned(),
        specs,
    };
    let follower = transport::circuit::Follower::subscribe(
        client,
        plugin,
        consumers,
        ctx.features,
        &ctx.host_id,
    )
    .await?;
    let feed = Feed {
        plugin: plugin.name().into(),
        stats: plugin.stats.clone(),
        queue: tx,
    };
    let core_readers = TaskTracker::new();
    for subscriber in core {
        core_readers.spawn(transport::core::read(
            subscriber,
            feed.clone(),
            manifest.limits.queue,
            ctx.ids.clone(),
            wiring.clone(),
        ));
    }
    let pull = jetstream::PullSettings::new(manifest, ctx.grace);
    for (js, spec, consumer) in pulls {
        ctx.feeders.spawn(jetstream::read(
            js,
            spec,
            consumer,
            feed.clone(),
            pull,
            wiring.clone(),
        ));
    }
    drop(feed);
    ctx.feeders.spawn(follower.run(wiring.clone()));
    let (current, versions) = watch::channel(plugin.clone());
    let serving = TaskTracker::new();
    if pipeline::order::any_ordered(plugin) {
        // One event per key at a time: the lanes go between the readers and
        // the pipeline.
        let (ordered, rx_ordered) = mpsc::channel(capacity);
        serving.spawn(pipeline::order::lanes(
            plugin.clone(),
            rx,
            ordered,
            ctx.stop.clone(),
        ));
        serving.spawn(pipeline::serve_versions(
            versions,
            sink.clone(),
            rx_ordered,
            ctx.events.clone(),
            ctx.stop.clone(),
        ));
    } else {
        serving.spawn(pipeline::serve_versions(
            versions,
            sink.clone(),
            rx,
            ctx.events.clone(),
            ctx.stop.clone(),
        ));
    }
    for tracker in [&core_readers, &serving] {
        tracker.close();
        // The host's stop waits for them too.
        let tracker = tracker.clone();
        ctx.feeders.spawn(async move { tracker.wait().await });
    }
    Ok(Wired {
        current,
        stop: wiring,
        core_readers,
        pipeline: serving,
    })
}

/// What every plugin's readers and pipeline share.
#[derive(Clone)]
pub(super) struct Running {
    pub(super) ids: Arc<IdSource>,
    /// Readers and pipelines.
    pub(super) feeders: TaskTracker,
    /// One task per event in flight.
    pub(super) events: TaskTracker,
    pub(super) stop: CancellationToken,
    pub(super) grace: Duration,
    /// What the server offers (consumer pause, for circuits).
    pub(super) features: transport::server::Features,
    /// This host among the fleet, in circuit control messages.
    pub(super) host_id: String,
}

/// `--dev`: a file stream per jetstream subscription whose stream is neither
/// declared nor requested twice, capturing the subscription's subject.
pub(super) fn dev_stream_specs(
    manifests: &[&crate::config::Manifest],
    declared: &[StreamSpec],
) -> Vec<StreamSpec> {
    let mut specs: Vec<StreamSpec> = Vec::new();
    for manifest in manifests {
        for sub in &manifest.subscribe {
            let Some(name) = &sub.stream else { continue };
            if declared.iter().any(|s| &s.name == name) {
                continue;
            }
            match specs.iter_mut().find(|s| &s.name == name) {
                Some(spec) if !spec.subjects.contains(&sub.subject) => {
                    spec.subjects.push(sub.subject.clone())
                }
                Some(_) => {}
                None => specs.push(StreamSpec {
                    name: name.clone(),
                    subjects: vec![sub.subject.clone()],
                    memory: false,
                    duplicate_window_ms: 120_000,
                    replicas: 1,
                }),
            }
        }
    }
    specs
}
