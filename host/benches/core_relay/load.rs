//! The driver every relay is measured with: a publisher on `in.bench`
//! (flat out, or paced at a rate) and a counting subscriber on `out.>`, each
//! on its own connection. Each payload carries its send time, so the counter
//! can tell the end-to-end latency of every event it sees.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures::StreamExt as _;
use tokio::sync::{oneshot, watch};

/// Where the events go in and come out.
pub const IN_SUBJECT: &str = "in.bench";
pub const OUT_SUBJECT: &str = "out.bench";
/// Published until its relayed copy comes back: the relay is up (and warm).
const PROBE_IN: &str = "in.probe";
const PROBE_OUT: &str = "out.probe";
/// Bytes of every event's payload.
pub const PAYLOAD: usize = 128;
/// How long the counter waits for more once the publisher is done and
/// nothing has come for this long: what is missing by then is lost.
const QUIET: Duration = Duration::from_secs(2);

/// The clock the send stamps count from (one process, one clock).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn payload(now: Instant) -> Bytes {
    let mut buf = BytesMut::with_capacity(PAYLOAD);
    buf.put_u64((now - base()).as_nanos() as u64);
    buf.put_bytes(b'x', PAYLOAD - 8);
    buf.freeze()
}

fn sent_at(payload: &[u8]) -> Option<Instant> {
    let nanos = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    Some(base() + Duration::from_nanos(nanos))
}

/// What the counter saw of one run.
pub struct Counted {
    pub published: u64,
    pub received: u64,
    /// From the first publish to the last event counted.
    pub elapsed: Duration,
    /// End-to-end latency of every event counted, in ns (when asked for).
    pub latencies: Vec<u64>,
}

impl Counted {
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile of the latencies, in µs.
    pub fn latency_us(&mut self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i] as f64 / 1_000.0
    }
}

/// A publisher and a counter on their own connections, shared by all runs.
pub struct Driver {
    publisher: Client,
    counter: Client,
}

impl Driver {
    pub async fn connect(url: &str) -> Self {
        let connect = || async {
            async_nats::ConnectOptions::new()
                .subscription_capacity(1 << 20)
                .connect(url)
                .await
                .expect("connect the driver")
        };
        Self {
            publisher: connect().await,
            counter: connect().await,
        }
    }

    /// Wait until a relay answers on the probe subject (it is subscribed
    /// and has relayed one event), so no run times the relay's start-up.
    pub async fn until_relaying(&self) {
        let mut probe = self.counter.subscribe(PROBE_OUT).await.expect("subscribe");
        self.counter.flush().await.expect("flush");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.publisher
                .publish(PROBE_IN, Bytes::from_static(b"probe"))
                .await
                .expect("publish probe");
            self.publisher.flush().await.expect("flush");
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), probe.next()).await
            {
                return;
            }
            assert!(Instant::now() < deadline, "the relay never answered");
        }
    }

    /// Publish `n` events, flat out (`rate` None) or paced at `rate` events
    /// a second, and count what comes out, with latencies when `paced`.
    pub async fn run(&self, n: u64, rate: Option<f64>) -> Counted {
        let sub = self
            .counter
            .subscribe(OUT_SUBJECT)
            .await
            .expect("subscribe");
        self.counter.flush().await.expect("flush");
        let (done_tx, done_rx) = watch::channel(false);
        let (start_tx, start_rx) = oneshot::channel();
        let counting = tokio::spawn(count(sub, n, rate.is_some(), done_rx, start_rx));
        let publisher = self.publisher.clone();
        let published = publish(&publisher, n, rate, start_tx).await;
        publisher.flush().await.expect("flush");
        let _ = done_tx.send(true);
        let (received, last, latencies, start) = counting.await.expect("counter");
        Counted {
            published,
            received,
            elapsed: last.saturating_duration_since(start),
            latencies,
        }
    }
}

async fn publish(
    client: &Client,
    n: u64,
    rate: Option<f64>,
    start: oneshot::Sender<Instant>,
) -> u64 {
    let began = Instant::now();
    let _ = start.send(began);
    match rate {
        None => {
            for _ in 0..n {
                client
                    .publish(IN_SUBJECT, payload(Instant::now()))
                    .await
                    .expect("publish");
            }
        }
        Some(rate) => {
            // Every millisecond, what is due by then: a steady rate at any
            // size, with no timer per event.
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut sent = 0;
            while sent < n {
                tick.tick().await;
                let due = ((began.elapsed().as_secs_f64() * rate) as u64).min(n);
                while sent < due {
                    client
                        .publish(IN_SUBJECT, payload(Instant::now()))
                        .await
                        .expect("publish");
                    sent += 1;
                }
            }
        }
    }
    n
}

/// Count `n` events (or until quiet after the publisher is done): how many,
/// when the last came, their latencies, and when publishing began.
async fn count(
    mut sub: async_nats::Subscriber,
    n: u64,
    latencies: bool,
    done: watch::Receiver<bool>,
    start: oneshot::Receiver<Instant>,
) -> (u64, Instant, Vec<u64>, Instant) {
    let mut received = 0;
    let mut last = Instant::now();
    let mut seen = Vec::with_capacity(if latencies { n as usize } else { 0 });
    // One timer for the whole run, not one per event.
    let mut check = tokio::time::interval(Duration::from_millis(100));
    while received < n {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                last = Instant::now();
                received += 1;
                if latencies && let Some(sent) = sent_at(&msg.payload) {
                    seen.push(last.saturating_duration_since(sent).as_nanos() as u64);
                }
            }
            _ = check.tick() => {
                if *done.borrow() && last.elapsed() > QUIET {
                    break;
                }
            }
        }
    }
    let _ = sub.unsubscribe().await;
    let start = start.await.expect("publisher started");
    (received, last, seen, start)
}
