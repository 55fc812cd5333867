//! Issue 10: a 3-node JetStream cluster that loses a node under two weir
//! hosts: R3 streams, a steady stream of events, `kill -9` of the stream
//! leader (holding unfinished work), a restart; and a host whose node dies.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use crate::support::cluster::NatsCluster;
use crate::support::*;

const EVENTS: usize = 300;

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A weir.toml for a host tagged `tag`, given every node's URL with `first`
/// first and the order kept.
fn host_toml(cluster: &NatsCluster, first: usize, relay: &std::path::Path) -> String {
    let urls: Vec<String> = (0..3).map(|i| cluster.url((first + i) % 3)).collect();
    format!(
        "[nats]\nurl = [{}]\nrandomize_servers = false\n[plugins]\ndirs = []\nbundles = [\"{}\"]\n\
         [sandbox]\ncache_dir = \"{}/weir-cache\"\n[dead_letter]\nreplicas = 3\n\
         [[streams]]\nname = \"IN\"\nsubjects = [\"in.>\"]\nreplicas = 3\n\
         [[streams]]\nname = \"OUT\"\nsubjects = [\"out.>\"]\nreplicas = 3\n",
        urls.iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", "),
        path(relay),
        env!("CARGO_TARGET_TMPDIR")
    )
}

/// Two hosts, host `h<i>` first connected to node `i`; each its own relay
/// bundle tagged `h<i>`, one durable consumer shared.
fn start_hosts(cluster: &NatsCluster, dir: &std::path::Path) -> Vec<WeirProcess> {
    (0..2)
        .map(|i| {
            let sub = dir.join(format!("h{i}"));
            std::fs::create_dir_all(&sub).expect("mkdir");
            let relay = jetstream_bundle(
                "relay",
                &sub,
                "IN",
                &format!("\n[config]\ntag = \"h{i}\"\n"),
            );
            let config = sub.join("weir.toml");
            std::fs::write(&config, host_toml(cluster, i, &relay)).expect("write config");
            let mut host = WeirProcess::start(&["up", "--config", path(&config)], &[]);
            host.wait_for_output("weir is up");
            host
        })
        .collect()
}

/// Outputs by event id and the tags seen after `since` (an output count).
struct Outputs {
    sub: async_nats::Subscriber,
    tags: Vec<String>,
}

impl Outputs {
    /// Read what has arrived; wait until every tag of `want` appears among
    /// outputs numbered `since` and later.
    async fn wait_for_tags(&mut self, since: usize, want: &[&str]) {
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        loop {
            let seen: HashSet<&str> = self.tags[since.min(self.tags.len())..]
                .iter()
                .map(String::as_str)
                .collect();
            if want.iter().all(|t| seen.contains(t)) {
                return;
            }
            match tokio::time::timeout_at(deadline, self.sub.next()).await {
                Ok(Some(msg)) => self
                    .tags
                    .push(header(&msg, "Relay-Tag").unwrap_or_default()),
                _ => panic!("tags {want:?} not all seen after output {since}: {seen:?}"),
            }
        }
    }
}

/// Publish events `from..to`, each with its Nats-Msg-Id, a few ms apart,
/// until stored.
async fn produce(client: async_nats::Client, from: usize, to: usize) {
    let js = async_nats::jetstream::new(client);
    for i in from..to {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("ev-{i}").as_str());
            let sent = js
                .publish_with_headers(format!("in.{i}"), headers, format!("{i}").into())
                .await;
            let stored = match sent {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if stored {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "event {i} never stored"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stream leader dies mid-stream holding unfinished work, and comes back
/// later: every event has exactly one stored output, none is dead-lettered,
/// both hosts relay again, and weir's totals say what it cost.
#[test]
fn killing_the_stream_leader_loses_nothing() {
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(cluster.wait_for_jetstream(0));
    let hosts = start_hosts(&cluster, dir.path());
    rt.block_on(async {
        let leader = cluster.stream_leader(0, "IN").await;
        // Watch and produce through a node that will stay up.
        let safe = (leader + 1) % 3;
        let client = async_nats::connect(cluster.url(safe)).await.expect("connect");
        let mut raw = RawCount::start(&client, "out.>").await;
        let mut outputs = Outputs { sub: client.subscribe("out.>").await.expect("subscribe"), tags: Vec::new() };
        client.flush().await.expect("flush");
        let producer = tokio::spawn(produce(client.clone(), 0, EVENTS));
        // Mid-stream, with work held: kill the leader of IN.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let held = loop {
            let info = consumer_info(&client, "IN").await;
            let stored = stream_count(&client, "OUT").await;
            if info.num_ack_pending > 0 && stored >= (EVENTS / 3) as u64 {
                break info.num_ack_pending;
            }
            assert!(tokio::time::Instant::now() < deadline, "no unfinished work to kill under");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let killed_at = Instant::now();
        cluster.kill(leader);
        let since = outputs.tags.len();
        outputs.wait_for_tags(since, &["h0", "h1"]).await;
        let relaying = killed_at.elapsed();
        producer.await.expect("producer");
        wait_stream_count(&client, "OUT", EVENTS as u64).await;
        let stored = killed_at.elapsed();
        cluster.restart(leader);
        cluster.wait_for_jetstream(leader).await;
        wait_consumer_idle(&client, "IN").await;
        let js = async_nats::jetstream::new(client.clone());
        let mut ids = HashSet::new();
        let out = js.get_stream("OUT").await.expect("OUT");
        for seq in 1..=stream_count(&client, "OUT").await {
            let msg = out.get_raw_message(seq).await.expect("stored output");
            ids.insert(msg.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default());
        }
        assert_eq!(ids.len(), EVENTS, "one stored output per event");
        assert_eq!(stream_count(&client, "WEIR_DLQ").await, 0, "no dead letter");
        let published = raw.count().await;
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for host in hosts {
            let (status, log) = host.stop();
            assert!(status.success(), "{log}");
            for name in ["succeeded", "redelivered", "outputs_retried", "dead_lettered"] {
                *totals.entry(name).or_default() += total(&log, "relay", name);
            }
        }
        assert!(totals["succeeded"] >= EVENTS as u64, "{totals:?}");
        assert!(published >= EVENTS as u64, "raw publishes {published}");
        assert_eq!(totals["dead_lettered"], 0);
        println!(
            "cluster: {EVENTS} events, {held} unacknowledged at the kill, redelivered {}, outputs retried {}, raw publishes {published}; both hosts relaying {relaying:?} after the kill, all stored after {stored:?}",
            totals["redelivered"], totals["outputs_retried"]
        );
    });
}
