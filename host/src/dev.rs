//! `weir up --dev`: start a local nats-server with JetStream when none answers
//! at the configured URL, and stop it when the host stops; and which
//! nats-server binary weir, its tests and its benches start.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::ServerAddr;

use crate::config::ServerUrls;
use crate::config::redact_url;

/// A nats-server started by `--dev`; killed on drop.
pub struct DevServer {
    child: Child,
    pub url: String,
    pub store_dir: PathBuf,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment variable naming the nats-server binary to start.
pub const SERVER_ENV: &str = "WEIR_NATS_SERVER";

/// Where `scripts/setup.sh` installs the pinned nats-server, under the
/// checkout weir was built from.
const PROJECT_SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/nats-server/bin/nats-server"
);

/// The nats-server binary to start: `$WEIR_NATS_SERVER` when set, else the
/// pinned one `scripts/setup.sh` installs into the checkout's
/// `target/nats-server/` when it is there, else `nats-server` on the PATH.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(SERVER_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let project = Path::new(PROJECT_SERVER);
    if project.is_file() {
        return project.to_path_buf();
    }
    PathBuf::from("nats-server")
}

fn answers(addr: &SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(addr, Duration::from_millis(300)).is_ok()
}

/// The socket addresses of a server; none when its name does not resolve
/// (a server that cannot be reached does not answer).
fn resolve(server: &ServerAddr) -> Vec<SocketAddr> {
    (server.host(), server.port())
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default()
}

/// Start a nats-server for the first of `servers` unless one of them answers
/// already.
pub fn ensure_nats(servers: &ServerUrls, data_dir: &Path) -> anyhow::Result<Option<DevServer>> {
    for server in servers.addrs() {
        if resolve(server).iter().any(answers) {
            let url = redact_url(server.as_url_str());
            tracing::info!(url, "a NATS server answers; --dev starts none");
            return Ok(None);
        }
    }
    let first = servers
        .addrs()
        .first()
        .context("nats.url names no server")?;
    let (host, port) = (first.host().to_owned(), first.port());
    let addrs = resolve(first);
    if addrs.is_empty() {
        bail!("cannot resolve {host}, the first server of nats.url");
    }
    if !addrs.iter().all(|a| a.ip().is_loopback()) {
        bail!(
            "--dev starts a NATS server only for a loopback URL, and nothing answers at {servers}"
        );
    }
    let store_dir = data_dir.join("nats");
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    let binary = nats_server_binary();
    let child = Command::new(&binary)
        .args([
            "--jetstream",
            "--addr",
            &host,
            "--port",
            &port.to_string(),
            "--store_dir",
        ])
        .arg(&store_dir)
        .args(["--server_name", "weir-dev"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (scripts/setup.sh installs one into target/nats-server; \
                 ${SERVER_ENV} names another)",
                binary.display()
            )
        })?;
    let server = DevServer {
        child,
        url: format!("nats://{host}:{port}"),
        store_dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !addrs.iter().any(answers) {
        if Instant::now() > deadline {
            bail!("nats-server did not start listening on {host}:{port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!(url = %server.url, store = %server.store_dir.display(), binary = %binary.display(), "started a local nats-server with JetStream (--dev)");
    Ok(Some(server))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8: with several servers, any one answering is enough; --dev
    /// starts none (and so needs no nats-server here).
    #[test]
    fn any_answering_server_of_the_list_counts() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let open = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = open.local_addr().expect("local addr").port();
        let servers: ServerUrls = format!("nats://{closed},nats://127.0.0.1:{port}")
            .parse()
            .expect("two URLs");
        let dir = tempfile::tempdir().expect("tempdir");
        let started = ensure_nats(&servers, dir.path()).expect("no error");
        assert!(started.is_none(), "the second server answers");
        assert!(!dir.path().join("nats").exists(), "nothing was started");
    }

    #[test]
    fn only_loopback_servers_are_started() {
        let servers: ServerUrls = "nats://192.0.2.1:4222".parse().expect("URL");
        let dir = tempfile::tempdir().expect("tempdir");
        let e = ensure_nats(&servers, dir.path()).err().expect("refused");
        assert!(e.to_string().contains("only for a loopback URL"), "{e}");
    }
}
