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

    /// The node that leads `stream` (`cluster.leader` of
    /// `$JS.API.STREAM.INFO`, asked through `through`), once it has one.
    pub async fn stream_leader(&self, through: usize, stream: &str) -> usize {
        let client = self.nodes[through].client().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let probe =
                client.request(format!("$JS.API.STREAM.INFO.{stream}"), bytes::Bytes::new());
            let answer = tokio::time::timeout(Duration::from_secs(1), probe).await;
            let leader = answer.ok().and_then(Result::ok).and_then(|reply| {
                let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
                let name = info["cluster"]["leader"].as_str()?.to_owned();
                name.strip_prefix('n')?.parse::<usize>().ok()
            });
            if let Some(leader) = leader {
                return leader;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {stream} has no leader"
            );
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
