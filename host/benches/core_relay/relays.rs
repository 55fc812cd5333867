//! The relays under test, each started on its own connection and stopped
//! after its run: native async-nats, raw wasmtime (fresh or warm), and weir
//! (an in-process `Host` with the relay bundle, either isolation, and event
//! isolation with batches of 64).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use futures::StreamExt as _;
use weir_host::config::HostConfig;
use weir_host::host::Host;

use super::raw::Raw;

/// Events weir may queue before it sheds: room for a whole flat-out run, as
/// the native relays get from their subscription buffer.
const WEIR_QUEUE: u32 = 1 << 18;
/// Events weir runs at once (as the JetStream bench).
const WEIR_IN_FLIGHT: u32 = 64;
/// Events per call for `weir_event_b64`; its calls at once are
/// `max(WEIR_IN_FLIGHT / BATCH, 2)`, as in the JetStream bench.
const BATCH: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    Native,
    RawFresh,
    RawWarm,
    WeirEvent,
    WeirReuse,
    WeirEventBatch,
}

impl Relay {
    pub const ALL: [Relay; 6] = [
        Relay::Native,
        Relay::RawWarm,
        Relay::RawFresh,
        Relay::WeirReuse,
        Relay::WeirEvent,
        Relay::WeirEventBatch,
    ];

    /// The figure's name in the table and the SUMMARY line.
    pub fn key(self) -> &'static str {
        match self {
            Relay::Native => "native",
            Relay::RawFresh => "raw_fresh",
            Relay::RawWarm => "raw_warm",
            Relay::WeirEvent => "weir_event",
            Relay::WeirReuse => "weir_reuse",
            Relay::WeirEventBatch => "weir_event_b64",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Relay::Native => "native async-nats relay",
            Relay::RawFresh => "raw wasmtime, fresh instance per event",
            Relay::RawWarm => "raw wasmtime, one warm instance",
            Relay::WeirEvent => "weir, isolation = event",
            Relay::WeirReuse => "weir, isolation = reuse",
            Relay::WeirEventBatch => "weir, isolation = event, batches of 64",
        }
    }

    pub fn is_weir(self) -> bool {
        matches!(
            self,
            Relay::WeirEvent | Relay::WeirReuse | Relay::WeirEventBatch
        )
    }
}

/// What the relays need to start: the server, the compiled raw relay, and
/// weir's bundles.
pub struct Setup {
    pub url: String,
    pub raw: Raw,
    bundles: PathBuf,
}

/// A relay that is running.
pub enum Running {
    Task(tokio::task::JoinHandle<()>),
    Weir(Box<Host>),
}

/// The best native setup known: one client with room for a whole run in its
/// subscription buffer (the default 65,536 overflowed silently, NATS.md), no
/// flush per message.
pub async fn relay_client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .expect("connect the relay")
}

impl Setup {
    pub fn new(url: String, repo: &Path, dir: &Path) -> Self {
        let relay = repo.join("plugins/relay");
        let bundles = dir.to_path_buf();
        for isolation in ["event", "reuse"] {
            bundle(&relay, &bundles.join(isolation), isolation, None);
        }
        bundle(&relay, &bundles.join("event-b64"), "event", Some(BATCH));
        Self {
            raw: Raw::load(&relay.join("relay.wasm")),
            url,
            bundles,
        }
    }

    pub async fn start(&self, relay: Relay) -> Running {
        match relay {
            Relay::Native => Running::Task(native(&self.url).await),
            Relay::RawFresh => Running::Task(start_raw(&self.url, self.raw.clone(), true).await),
            Relay::RawWarm => Running::Task(start_raw(&self.url, self.raw.clone(), false).await),
            Relay::WeirEvent => Running::Weir(Box::new(self.weir("event").await)),
            Relay::WeirReuse => Running::Weir(Box::new(self.weir("reuse").await)),
            Relay::WeirEventBatch => Running::Weir(Box::new(self.weir("event-b64").await)),
        }
    }

    async fn weir(&self, bundle: &str) -> Host {
        let mut config = HostConfig::default();
        config.nats.url = self.url.parse().expect("the bench server URL parses");
        config.nats.subscription_capacity = 1 << 20;
        config.plugins.dirs = Vec::new();
        config.plugins.bundles = vec![self.bundles.join(bundle)];
        config.sandbox.cache_dir =
            Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/weir-bench-cache"));
        let host = Host::start(&config).await.expect("host starts");
        assert!(host.refused().is_empty(), "{:?}", host.refused());
        host
    }
}

impl Running {
    /// Stop the relay; weir's events shed (counted, never silently) and its
    /// failed attempts.
    pub async fn stop(self) -> (u64, u64) {
        match self {
            Running::Task(task) => {
                task.abort();
                let _ = task.await;
                (0, 0)
            }
            Running::Weir(host) => {
                let stats = &host.plugins()[0].stats;
                let shed = stats.shed.load(Ordering::Relaxed)
                    + stats.shed_circuit_open.load(Ordering::Relaxed);
                let failed = stats.failed_attempts.load(Ordering::Relaxed);
                host.stop().await.expect("stop");
                (shed, failed)
            }
        }
    }
}

async fn native(url: &str) -> tokio::task::JoinHandle<()> {
    let client = relay_client(url).await;
    let mut sub = client.subscribe("in.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(rest) = msg.subject.strip_prefix("in.") {
                let _ = client.publish(format!("out.{rest}"), msg.payload).await;
            }
        }
    })
}

/// `plugins/relay` as a bundle in `dst` with the bench's limits, and with
/// `batch` events per call when given (gathered for at most 5 ms).
fn bundle(src: &Path, dst: &Path, isolation: &str, batch: Option<u32>) {
    std::fs::create_dir_all(dst).expect("bundle dir");
    std::fs::copy(src.join("relay.wasm"), dst.join("relay.wasm"))
        .expect("plugins/relay is built (scripts/build-plugins.sh)");
    let manifest = std::fs::read_to_string(src.join("plugin.toml")).expect("relay plugin.toml");
    assert!(!manifest.contains("[limits]"), "the relay sets no limits");
    let subscribe = "subject = \"in.>\"\n";
    assert!(manifest.contains(subscribe), "the relay subscribes to in.>");
    let (manifest, in_flight) = match batch {
        None => (manifest, WEIR_IN_FLIGHT),
        Some(size) => (
            manifest.replacen(
                subscribe,
                &format!("{subscribe}batch = {{ max_events = {size}, max_wait_ms = 5 }}\n"),
                1,
            ),
            (WEIR_IN_FLIGHT / size).max(2),
        ),
    };
    let limits = format!(
        "\n[limits]\nisolation = \"{isolation}\"\nmax_in_flight = {in_flight}\nqueue = {WEIR_QUEUE}\n"
    );
    std::fs::write(dst.join("plugin.toml"), manifest + &limits).expect("write manifest");
}

/// A raw relay on its own connection, subscribed to `in.>`.
pub async fn start_raw(url: &str, raw: Raw, fresh: bool) -> tokio::task::JoinHandle<()> {
    let client = relay_client(url).await;
    let sub = client.subscribe("in.>").await.expect("subscribe");
    client.flush().await.expect("flush");
    tokio::spawn(raw.relay(client, sub, fresh))
}
