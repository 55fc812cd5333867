//! What the pipeline's tests share: an in-memory [`Delivery`] and [`Sink`]
//! around a native handler, and a serve loop run to its end.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Delivery, Inbound, Settle, Sink, serve};
use crate::config::{HostConfig, Manifest};
use crate::event::{Event, Failure, FailureKind, Message};
use crate::pipeline::Unavailable;
use crate::plugin::Plugin;
use crate::policy::OutputPolicy;
use crate::sandbox::{Executor, PluginShared};
use crate::tracking::{Handler, StatusDoc};

/// Records how each event was settled.
pub(super) struct MemDelivery {
    pub redelivers: bool,
    pub settled: Arc<Mutex<Vec<(String, Settle)>>>,
    pub id: String,
}

impl Delivery for MemDelivery {
    fn redelivers(&self) -> bool {
        self.redelivers
    }
    fn progress_every(&self) -> Option<Duration> {
        None
    }
    async fn progress(&self) {}
    async fn settle(self, settle: Settle) {
        if let Ok(mut s) = self.settled.lock() {
            s.push((self.id, settle));
        }
    }
}

#[derive(Default)]
pub(super) struct MemSink {
    pub published: Mutex<Vec<Message>>,
    pub letters: Mutex<Vec<Message>>,
    pub refuse_letters: AtomicBool,
    pub refuse_outputs: AtomicBool,
    /// Publishes to fail with [`Unavailable`] before one passes.
    pub unavailable: std::sync::atomic::AtomicU32,
    /// Status documents by id, and every write in order.
    pub statuses: Mutex<Vec<StatusDoc>>,
    pub status_writes: Mutex<Vec<Handler>>,
    pub webhooks: Mutex<Vec<Message>>,
    pub refuse_webhooks: AtomicBool,
}

impl Sink for MemSink {
    async fn publish(&self, outputs: Vec<Message>, _confirm: bool) -> anyhow::Result<()> {
        if self.refuse_outputs.load(Ordering::Relaxed) {
            anyhow::bail!("no ack");
        }
        let left = self.unavailable.load(Ordering::Relaxed);
        if left > 0 {
            self.unavailable.store(left - 1, Ordering::Relaxed);
            return Err(anyhow::anyhow!("no responders").context(Unavailable));
        }
        self.published.lock().expect("lock").extend(outputs);
        Ok(())
    }
    async fn dead_letter(&self, message: Message) -> anyhow::Result<()> {
        if self.refuse_letters.load(Ordering::Relaxed) {
            anyhow::bail!("maximum messages exceeded");
        }
        self.letters.lock().expect("lock").push(message);
        Ok(())
    }
    fn max_payload(&self) -> usize {
        1 << 20
    }
    async fn track(&self, id: &str, handler: Handler) -> anyhow::Result<Option<(StatusDoc, bool)>> {
        self.status_writes
            .lock()
            .expect("lock")
            .push(handler.clone());
        let mut docs = self.statuses.lock().expect("lock");
        let Some(doc) = docs.iter_mut().find(|d| d.id == id) else {
            return Ok(None);
        };
        let taken = doc.apply(handler);
        Ok(Some((doc.clone(), taken)))
    }
    async fn enqueue_webhook(&self, job: Message) -> anyhow::Result<()> {
        if self.refuse_webhooks.load(Ordering::Relaxed) {
            anyhow::bail!("no webhooks stream");
        }
        self.webhooks.lock().expect("lock").push(job);
        Ok(())
    }
}

/// A plugin whose handler answers by the payload: `ok`, `retry`, `reject`.
pub(super) fn plugin(max_attempts: u32) -> Arc<Plugin> {
    plugin_with(max_attempts, "")
}

/// Like [`plugin`], with `extra` appended to its plugin.toml.
pub(super) fn plugin_with(max_attempts: u32, extra: &str) -> Arc<Plugin> {
    let text = format!(
        "name = \"mem\"\nversion = \"0.1.0\"\nwasm = \"mem.wasm\"\n\
         [[subscribe]]\nsubject = \"in.>\"\n[retry]\nmax_attempts = {max_attempts}\nbackoff_ms = [1]\n{extra}"
    );
    let manifest = Manifest::parse(Path::new("plugin.toml"), &text, 64).expect("manifest");
    let shared = PluginShared {
        name: "mem".into(),
        config: Default::default(),
        policy: OutputPolicy {
            max_outputs: 10,
            max_output_bytes: 1 << 20,
            dead_letter_prefix: "weir.dlq".into(),
            granted: None,
        },
        memory_bytes: 0,
        capture_logs: false,
    };
    let executor = Executor::native(
        shared,
        Arc::new(|event: &Event| match &event.payload[..] {
            b"ok" => Ok(vec![Message {
                subject: "out".into(),
                payload: event.payload.clone(),
                headers: vec![],
            }]),
            b"retry" => Err(Failure::new(FailureKind::Retry, "later")),
            _ => Err(Failure::new(FailureKind::Reject, "never")),
        }),
    );
    Arc::new(Plugin::new(
        manifest,
        executor,
        &HostConfig::default(),
        None,
    ))
}

pub(super) struct Run {
    pub settled: Vec<(String, Settle)>,
    pub sink: Arc<MemSink>,
}

/// Serve `events` (id, payload, attempt) to the end.
pub(super) async fn serve_all(
    plugin: Arc<Plugin>,
    sink: Arc<MemSink>,
    redelivers: bool,
    events: &[(&str, &str, u32)],
    stopped: bool,
) -> Run {
    let events = events
        .iter()
        .map(|(id, payload, attempt)| event(id, payload, *attempt, vec![]))
        .collect();
    serve_events(plugin, sink, redelivers, events, stopped).await
}

/// An event on `in.x`.
pub(super) fn event(
    id: &str,
    payload: &str,
    attempt: u32,
    headers: crate::event::Headers,
) -> Event {
    Event {
        id: id.into(),
        subject: "in.x".into(),
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        headers,
        reply_to: None,
        attempt,
        principal: None,
    }
}

/// Serve `events` to the end.
pub(super) async fn serve_events(
    plugin: Arc<Plugin>,
    sink: Arc<MemSink>,
    redelivers: bool,
    events: Vec<Event>,
    stopped: bool,
) -> Run {
    let settled = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel(events.len().max(1));
    for event in events {
        let id = event.id.clone();
        let item = Inbound {
            event,
            first_seen: SystemTime::now(),
            origin: redelivers.then(|| ("IN".to_owned(), 7)),
            refused: None,
            delivery: MemDelivery {
                redelivers,
                settled: settled.clone(),
                id,
            },
        };
        tx.send(item).await.expect("queue");
    }
    drop(tx);
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    if stopped {
        stop.cancel();
    }
    serve(plugin, sink.clone(), rx, tracker.clone(), stop).await;
    tracker.close();
    tracker.wait().await;
    let mut settled = settled.lock().expect("lock").clone();
    settled.sort_by(|a, b| a.0.cmp(&b.0));
    Run { settled, sink }
}
