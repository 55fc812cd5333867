//! A nats-server cluster with JetStream for one test: each node its own
//! store dir and config file, routes on 127.0.0.1 naming every node.

use std::time::Duration;

use super::{NatsServer, PATIENCE, init_logs};

/// A nats-server cluster with JetStream: each node with its own store dir and
/// config file (`cluster { routes = [...] }` naming every node), client ports
/// chosen by the servers themselves; every node killed on drop. Node `i` is
/// named `n<i>` (its `server_name`).
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Start `size` nodes and wait until they are one cluster whose
    /// JetStream answers.
    pub fn start(size: usize) -> Self {
        init_logs();
        // Routes must name every node's cluster port before any node starts,
        // so these (unlike client ports) are picked here: bound, released and
        // handed over at once. Letting each node pick its own
        // (`cluster { listen: 127.0.0.1:-1 }`) and routing later nodes to
        // earlier ones still does not work on nats-server 2.15.1 (checked):
        // the first node, having no routes yet, exits with "Can't start
        // JetStream: JetStream cluster requires configured routes or
        // solicited leafnode for the system account". A port taken in the
        // meantime makes a node fail to start: then the whole cluster starts
        // again on new ports.
        for _ in 0..3 {
            if let Some(cluster) = Self::try_start(size) {
                return cluster;
            }
        }
        panic!("a {size}-node nats-server cluster did not start (3 tries)");
    }

    fn try_start(size: usize) -> Option<Self> {
        let cluster_ports: Vec<u16> = (0..size)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .expect("free ports")
            .iter()
            .map(|l| l.local_addr().expect("local addr").port())
            .collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, port) in cluster_ports.iter().enumerate() {
            nodes.push(NatsServer::try_start_with_config(&format!(
                "server_name: n{i}\ncluster {{\n  name: weir-test\n  host: 127.0.0.1\n  port: {port}\n  routes: [{routes}]\n}}\n"
            ))?);
        }
        Some(Self { nodes })
    }

    pub fn url(&self, node: usize) -> String {
        self.nodes[node].url()
    }

    /// SIGKILL one node.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Start a killed node again: same store dir, ports and config.
    pub fn restart(&mut self, node: usize) {
        self.nodes[node].restart();
    }

    /// Move the leadership of `stream` (and of its consumer `consumer`, when
    /// given) onto `node`: step the leader down until the election lands
    /// there (each election picks among the other replicas).
    pub async fn lead_on(&self, node: usize, stream: &str, consumer: Option<&str>) {
        let through = (node + 1) % self.nodes.len();
        let client = self.nodes[through].client().await;
        let groups = [(
            format!("STREAM.INFO.{stream}"),
            format!("STREAM.LEADER.STEPDOWN.{stream}"),
        )]
        .into_iter()
        .chain(consumer.map(|c| {
            (
                format!("CONSUMER.INFO.{stream}.{c}"),
                format!("CONSUMER.LEADER.STEPDOWN.{stream}.{c}"),
            )
        }));
        for (info, stepdown) in groups {
            for _ in 0..20 {
                let now = self.leader(through, &info).await;
                if now == node {
                    break;
                }
                let _ = client
                    .request(format!("$JS.API.{stepdown}"), bytes::Bytes::new())
                    .await;
                // The old leader answers before the election ends: wait for
                // the group's next leader.
                let deadline = tokio::time::Instant::now() + PATIENCE;
                while self.leader(through, &info).await == now {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{info}: no new leader"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            assert_eq!(
                self.leader(through, &info).await,
                node,
                "{info}: the leadership never landed on n{node}"
            );
        }
    }

    /// Wait until `stream`, and its consumer `consumer`, are led by a node
    /// other than `gone` (asked through `through`): the cluster's own
    /// recovery after `gone` died, for comparing weir's against.
    pub async fn wait_led_without(
        &self,
        through: usize,
        gone: usize,
        stream: &str,
        consumer: Option<&str>,
    ) {
        let infos = [format!("STREAM.INFO.{stream}")]
            .into_iter()
            .chain(consumer.map(|c| format!("CONSUMER.INFO.{stream}.{c}")));
        for info in infos {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while self.leader(through, &info).await == gone {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{info}: still led by n{gone}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// `cluster.leader` of a JetStream API info answer (`$JS.API.<info>`).
    async fn leader(&self, through: usize, info: &str) -> usize {
        let client = self.nodes[through].client().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let probe = client.request(format!("$JS.API.{info}"), bytes::Bytes::new());
            let answer = tokio::time::timeout(Duration::from_secs(1), probe).await;
            let leader = answer.ok().and_then(Result::ok).and_then(|reply| {
                let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
                let name = info["cluster"]["leader"].as_str()?.to_owned();
                name.strip_prefix('n')?.parse::<usize>().ok()
            });
            if let Some(leader) = leader {
                return leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "{info}: no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until JetStream answers through `node` (the cluster has a
    /// metadata leader): after start-up, and again after a node is killed.
    pub async fn wait_for_jetstream(&self, node: usize) {
        let client = self.nodes[node].client().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // The raw API: async-nats 0.51's account info does not parse a
            // clustered 2.9 server's answer. Until there is a leader, the
            // answer is an error.
            let probe = client.request("$JS.API.INFO", bytes::Bytes::new());
            let answer = tokio::time::timeout(Duration::from_secs(1), probe).await;
            let ready = answer.ok().and_then(Result::ok).is_some_and(|reply| {
                serde_json::from_slice::<serde_json::Value>(&reply.payload)
                    .is_ok_and(|info| info.get("error").is_none())
            });
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster's JetStream never answered through node {node}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
