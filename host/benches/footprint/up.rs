//! The real `weir up` process: started with a `weir.toml` that loads the
//! bundles given, timed from spawn to ready (the "weir is up" log line,
//! then `/readyz` answering 200), its resident memory read from /proc once
//! it has been idle for a while, then stopped with SIGTERM.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the host idles after ready before its memory is read.
pub const IDLE: Duration = Duration::from_secs(2);

/// What one `weir up` gave.
pub struct Started {
    /// Spawn to the "weir is up" line.
    pub ready: Duration,
    /// Spawn to each log line's arrival, with its message (the start-up's
    /// steps, for the report).
    pub steps: Vec<(Duration, String)>,
    /// `/proc/<pid>/status` after [`IDLE`]: VmRSS, RssAnon, RssFile, RssShmem (KiB).
    pub rss: Rss,
    /// The largest mappings by resident size after [`IDLE`], from smaps.
    pub top: Vec<(u64, String)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub total_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
    pub shmem_kib: u64,
}

impl Rss {
    pub fn of(pid: u32) -> Rss {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Rss {
            total_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
            shmem_kib: field("RssShmem:"),
        }
    }
}

/// Write the host's config: the server, the bundles, the compile cache,
/// the telemetry endpoint on a port of its own choosing, and the streams
/// the bundles' JetStream subscriptions name.
pub fn write_config(dir: &Path, url: &str, bundles: &[PathBuf], cache: &Path) -> PathBuf {
    let list: Vec<String> = bundles
        .iter()
        .map(|b| format!("{:?}", b.display().to_string()))
        .collect();
    let text = format!(
        "[nats]\nurl = {url:?}\n\n[plugins]\ndirs = []\nbundles = [{}]\n\n\
         [sandbox]\ncache_dir = {:?}\n\n[telemetry]\nlisten = \"127.0.0.1:0\"\n\n\
         [[streams]]\nname = \"ORDERS\"\nsubjects = [\"orders.created.>\"]\n",
        list.join(", "),
        cache.display().to_string()
    );
    let path = dir.join("weir.toml");
    std::fs::write(&path, text).expect("write weir.toml");
    path
}

/// Kills the host if a run panics half way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `weir up --config CONFIG --log-json`, wait for ready, idle, read
/// its memory, stop it.
pub fn run(config: &Path) -> Started {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["up", "--log-json", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir up");
    let mut guard = Guard(child);
    let pid = guard.0.id();
    let stderr = guard.0.stderr.take().expect("piped stderr");
    let (lines, arrived) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if lines.send((started.elapsed(), line)).is_err() {
                return;
            }
        }
    });

    let mut steps = Vec::new();
    let mut listen: Option<SocketAddr> = None;
    let ready = loop {
        let (at, line) = arrived
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("weir up did not get ready; its log:\n{}", joined(&steps)));
        let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let fields = &json["fields"];
        let message = fields["message"].as_str().unwrap_or(&line).to_owned();
        if let Some(addr) = fields["listen"].as_str().and_then(|a| a.parse().ok()) {
            listen = Some(addr);
        }
        let level = json["level"].as_str().unwrap_or_default();
        assert!(
            level != "ERROR",
            "weir up logged an error: {line}\n{}",
            joined(&steps)
        );
        steps.push((at, message.clone()));
        if message == "weir is up" {
            assert_eq!(
                fields["refused"].as_u64(),
                Some(0),
                "a bundle was refused: {line}"
            );
            break at;
        }
    };
    let listen = listen.expect("the telemetry endpoint's address is logged");
    assert_eq!(
        http_status(listen, "/readyz"),
        200,
        "/readyz after \"weir is up\""
    );
    std::thread::sleep(IDLE);
    let rss = Rss::of(pid);
    let top = top_mappings(pid, 8);

    // SIGTERM: the host's graceful stop, as an operator's would be.
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success(), "cannot signal weir up");
    let status = guard.0.wait().expect("wait for weir up");
    assert!(status.success(), "weir up exited with {status}");
    Started {
        ready,
        steps,
        rss,
        top,
    }
}

fn joined(steps: &[(Duration, String)]) -> String {
    steps
        .iter()
        .map(|(at, m)| format!("  {:>8.1} ms  {m}", at.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The status code of a plain HTTP/1.1 GET.
fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The `n` mappings with the most resident memory (KiB), named by their
/// file, `[heap]`, or `anon` for anonymous memory (summed by name).
fn top_mappings(pid: u32, n: usize) -> Vec<(u64, String)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_name: std::collections::BTreeMap<String, u64> = Default::default();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range perms offset dev inode [path].
            let path = words.nth(4).unwrap_or_default();
            name = if path.is_empty() {
                "anon".into()
            } else {
                Path::new(path)
                    .file_name()
                    .map_or(path.to_owned(), |f| f.to_string_lossy().into_owned())
            };
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by_name.entry(name.clone()).or_default() += kib;
        }
    }
    let mut top: Vec<(u64, String)> = by_name.into_iter().map(|(k, v)| (v, k)).collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.0));
    top.truncate(n);
    top
}
