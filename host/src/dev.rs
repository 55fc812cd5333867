//! `weir up --dev`: start a local nats-server with JetStream when none answers
//! at the configured URL, and stop it when the host stops.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

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

/// `host:port` of a `nats://host:port` URL (the first, if several).
fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let first = url.split(',').next().unwrap_or(url).trim();
    let rest = first
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(first);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            p.trim_end_matches('/')
                .parse()
                .with_context(|| format!("bad port in NATS URL {url:?}"))?,
        ),
        None => (rest.trim_end_matches('/').to_owned(), 4222),
    };
    Ok((host, port))
}

fn answers(addr: &SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(addr, Duration::from_millis(300)).is_ok()
}

/// Start a nats-server for `url` unless one answers there already.
pub fn ensure_nats(url: &str, data_dir: &Path) -> anyhow::Result<Option<DevServer>> {
    let (host, port) = host_port(url)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    if addrs.iter().any(answers) {
        tracing::info!(url, "a NATS server answers; --dev starts none");
        return Ok(None);
    }
    if !addrs.iter().all(|a| a.ip().is_loopback()) {
        bail!("--dev starts a NATS server only for a loopback URL, and nothing answers at {url}");
    }
    let store_dir = data_dir.join("nats");
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    let child = Command::new("nats-server")
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
        .context("cannot start nats-server (install it: `apt-get install nats-server`)")?;
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
    tracing::info!(url = %server.url, store = %server.store_dir.display(), "started a local nats-server with JetStream (--dev)");
    Ok(Some(server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nats_urls() {
        assert_eq!(
            host_port("nats://127.0.0.1:4333").unwrap(),
            ("127.0.0.1".into(), 4333)
        );
        assert_eq!(host_port("localhost").unwrap(), ("localhost".into(), 4222));
        assert_eq!(
            host_port("nats://u:p@h:5,nats://x:6").unwrap(),
            ("h".into(), 5)
        );
    }
}
