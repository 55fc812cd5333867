//! Shared test support: a real nats-server per test, plugin bundles built from
//! plugins/, an in-process host, and waits that always time out; a cluster of
//! servers in [`cluster`], NATS JWTs and `.creds` files in [`creds`], TLS
//! certificates in [`tls`].

pub mod cluster;
pub mod creds;
pub mod tls;

pub use cluster::NatsCluster;
pub use tls::Tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use weir_host::config::HostConfig;

/// Every wait in the suite gives up after this long, so a broken build fails
/// instead of hanging. It is a ceiling, not an assertion on speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A nats-server with JetStream, on a free port with its own store directory,
/// killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The HTTP monitoring port (`-m`), also picked by the server itself.
    monitor: u16,
    pub store: tempfile::TempDir,
    /// A server config file (`-c`), for TLS and auth; flags still set the
    /// port, JetStream and the store.
    config: Option<PathBuf>,
    /// Off only for tests of a server without JetStream.
    jetstream: bool,
}

/// Host logs go to the test's captured output (shown when a test fails).
fn init_logs() {
    let filter = std::env::var("WEIR_LOG").unwrap_or_else(|_| "info,weir::plugin=debug".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

impl NatsServer {
    /// Start on a port the server picks itself (`-p -1`) and reports in its
    /// ports file: no race with other tests for a free port.
    pub fn start() -> Self {
        init_logs();
        let store = tempfile::tempdir().expect("temp store dir");
        let mut server = Self {
            child: None,
            port: 0,
            monitor: 0,
            store,
            config: None,
            jetstream: true,
        };
        assert!(server.spawn(), "nats-server did not start");
        server
    }

    /// Like [`start`](Self::start), without JetStream.
    pub fn start_without_jetstream() -> Self {
        init_logs();
        let store = tempfile::tempdir().expect("temp store dir");
        let mut server = Self {
            child: None,
            port: 0,
            monitor: 0,
            store,
            config: None,
            jetstream: false,
        };
        assert!(server.spawn(), "nats-server did not start");
        server
    }

    /// Like [`start`](Self::start), with `config` as the server's config
    /// file (TLS blocks, authorization, ...).
    pub fn start_with_config(config: &str) -> Self {
        Self::try_start_with_config(config).expect("nats-server did not start with its config")
    }

    /// Like [`start_with_config`](Self::start_with_config); `None` if the
    /// server exits or does not answer (a port in its config was taken).
    pub fn try_start_with_config(config: &str) -> Option<Self> {
        init_logs();
        let store = tempfile::tempdir().expect("temp store dir");
        let file = store.path().join("nats-server.conf");
        std::fs::write(&file, config).expect("write server config");
        let mut server = Self {
            child: None,
            port: 0,
            monitor: 0,
            store,
            config: Some(file),
            jetstream: true,
        };
        server.spawn().then_some(server)
    }

    /// Start the server again on the same port and store (after `kill`).
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "nats-server did not come back on port {}",
            self.port
        );
    }

    fn spawn(&mut self) -> bool {
        let ports_dir = self.store.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let mut command = Command::new(weir_host::dev::nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        if self.jetstream {
            command.arg("--jetstream");
        }
        let child = command
            .args(["--addr", "127.0.0.1", "--port", &port, "-m", "-1"])
            .arg("--store_dir")
            .arg(self.store.path())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (scripts/setup.sh installs it; WEIR_NATS_SERVER names another)");
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            let ports = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            let port_of = |key: &str| {
                ports
                    .as_ref()
                    .and_then(|v| v[key][0].as_str())
                    .and_then(|url| url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()))
            };
            if let (Some(port), Some(monitor)) = (port_of("nats"), port_of("monitoring")) {
                self.port = port;
                self.monitor = monitor;
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Replace the config file (see [`start_with_config`](Self::start_with_config))
    /// and have the server reload it (SIGHUP); it applies authorization
    /// changes to the clients already connected. A reload reads the file
    /// alone, without the flags: the file gets the flags' JetStream store, or
    /// the server would shut JetStream down (or refuse another store dir).
    pub fn reload_config(&self, config: &str) {
        let file = self.config.as_ref().expect("started with a config file");
        let store = self.store.path().display();
        std::fs::write(
            file,
            format!("jetstream {{ store_dir: \"{store}\" }}\n{config}"),
        )
        .expect("write server config");
        let pid = self.child.as_ref().expect("running").id();
        let hup = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(hup.success(), "kill -HUP {pid} failed");
    }

    /// SIGKILL the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("test client connects")
    }

    /// GET a monitoring endpoint (`/connz?state=all`, `/varz`, ...) as JSON.
    pub async fn monitor(&self, path: &str) -> serde_json::Value {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let exchange = async {
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor))
                .await
                .expect("monitoring port");
            socket
                .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
                .await
                .expect("send GET");
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer).await.expect("read answer");
            answer
        };
        let answer = tokio::time::timeout(PATIENCE, exchange)
            .await
            .expect("monitoring answers within PATIENCE");
        let body = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| &answer[at + 4..])
            .expect("an HTTP answer");
        serde_json::from_slice(body).expect("monitoring JSON")
    }

    /// The ids (`cid`) of every connection, open or closed, whose client
    /// named itself `name`: one id means it never reconnected.
    pub async fn connection_ids(&self, name: &str) -> Vec<u64> {
        let connz = self.monitor("/connz?state=all&limit=1024").await;
        connz["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .filter(|c| c["name"] == name)
            .filter_map(|c| c["cid"].as_u64())
            .collect()
    }
}

/// Publish `messages` (subject, header block, payload) as raw HPUBs on a
/// plain TCP connection, then PING and wait for the PONG: once it is back the
/// server has processed (and, for a stream, stored or refused) all of them.
/// The header blocks go out exactly as given: malformed ones too.
pub async fn publish_raw(server: &NatsServer, messages: &[(&str, &[u8], &[u8])]) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let url = server.url();
    let addr = url.trim_start_matches("nats://");
    let exchange = async {
        let (read, mut write) = tokio::net::TcpStream::connect(addr)
            .await
            .expect("raw connection")
            .into_split();
        let mut read = BufReader::new(read);
        let mut line = String::new();
        read.read_line(&mut line).await.expect("read INFO");
        assert!(line.starts_with("INFO "), "server greeted with {line:?}");

        let mut out = b"CONNECT {\"headers\":true,\"verbose\":false}\r\n".to_vec();
        for (subject, header, payload) in messages {
            let total = header.len() + payload.len();
            out.extend_from_slice(
                format!("HPUB {subject} {} {total}\r\n", header.len()).as_bytes(),
            );
            out.extend_from_slice(header);
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"PING\r\n");
        write.write_all(&out).await.expect("write raw protocol");

        loop {
            line.clear();
            let n = read.read_line(&mut line).await.expect("read reply");
            assert!(n > 0, "server closed the raw connection");
            assert!(!line.starts_with("-ERR"), "server refused: {line:?}");
            if line == "PONG\r\n" {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("raw publish within PATIENCE");
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The log lines of the current thread, collected from [`capture_logs`] on.
/// Only for `current_thread` tests: then the host's tasks all run (and log)
/// on the test's thread, and no other test's lines get in.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Wait until a line holds every one of `needles`; that line.
    pub async fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.text();
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {needles:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Collect this thread's log lines (info and up, no colours) until the guard
/// is dropped.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    init_logs();
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}

/// An HTTP client for the tests. reqwest is built without a TLS provider of
/// its own (see the webhook module): ring is installed first, or building a
/// client panics.
pub fn http_client() -> reqwest::Client {
    weir_host::webhook::install_tls_provider();
    reqwest::Client::new()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The bundle folder of an example plugin, checked to hold its built component.
pub fn bundle(name: &str) -> PathBuf {
    let dir = repo_root().join("plugins").join(name);
    let manifest = std::fs::read_to_string(dir.join("plugin.toml"))
        .unwrap_or_else(|e| panic!("plugins/{name}/plugin.toml: {e}"));
    let wasm = manifest
        .lines()
        .find_map(|l| l.strip_prefix("wasm = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("plugin.toml names its wasm");
    assert!(
        dir.join(&wasm).is_file(),
        "plugins/{name}/{wasm} is not built: run scripts/build-plugins.sh (scripts/test.sh does)"
    );
    dir
}

/// A copy of an example bundle in `into`, with its plugin.toml edited by `edit`.
pub fn bundle_copy(name: &str, into: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let src = bundle(name);
    let dst = into.join(name);
    std::fs::create_dir_all(&dst).expect("create bundle copy");
    for entry in std::fs::read_dir(&src).expect("list bundle") {
        let entry = entry.expect("bundle entry");
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy bundle file");
        }
    }
    let manifest = std::fs::read_to_string(dst.join("plugin.toml")).expect("read manifest");
    std::fs::write(dst.join("plugin.toml"), edit(manifest)).expect("write manifest");
    dst
}

/// A copy of `name` whose every subscription is a JetStream one on `stream`.
pub fn jetstream_bundle(name: &str, dir: &Path, stream: &str, extra: &str) -> PathBuf {
    let stream = stream.to_owned();
    let extra = extra.to_owned();
    bundle_copy(name, dir, move |m| {
        let mut out = String::new();
        for line in m.lines() {
            out.push_str(line);
            out.push('\n');
            if line.starts_with("subject = ") {
                out.push_str(&format!("mode = \"jetstream\"\nstream = \"{stream}\"\n"));
            }
        }
        out + &extra
    })
}

/// A host config for `server` loading exactly `bundles`, with a compile cache
/// shared by the whole suite.
pub fn host_config(server: &NatsServer, bundles: &[PathBuf]) -> HostConfig {
    let mut config = HostConfig::default();
    config.nats.url = server.url().parse().expect("the test server URL parses");
    config.plugins.dirs = Vec::new();
    config.plugins.bundles = bundles.to_vec();
    config.sandbox.cache_dir = Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-cache"));
    config.sandbox.max_instances = 200;
    config
}

/// Collect exactly `n` messages from `sub`, failing after PATIENCE.
pub async fn collect(sub: &mut async_nats::Subscriber, n: usize) -> Vec<async_nats::Message> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(msg)) => out.push(msg),
            Ok(None) => panic!("subscription closed after {} of {n} messages", out.len()),
            Err(_) => panic!("timed out with {} of {n} messages", out.len()),
        }
    }
    out
}

pub fn header(msg: &async_nats::Message, name: &str) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

/// The number of messages in a JetStream stream. A JetStream API that does
/// not answer (a loaded box, a server just restarted or reloaded) is asked
/// again until PATIENCE runs out.
pub async fn stream_count(client: &async_nats::Client, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let info = match js.get_stream(stream).await {
            Ok(mut found) => found
                .info()
                .await
                .map(|i| i.state.messages)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(count) => return count,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "stream {stream}: no answer from JetStream: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until a stream holds exactly `expected` messages: core publishes are
/// stored asynchronously, so a count read at once may lag. Fails if the count
/// overshoots or does not get there within PATIENCE.
pub async fn wait_stream_count(client: &async_nats::Client, stream: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let count = stream_count(client, stream).await;
        assert!(
            count <= expected,
            "stream {stream} holds {count} messages, more than {expected}"
        );
        if count == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream {stream} holds {count} messages, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Create a stream capturing `subjects` (to count outputs exactly).
pub async fn create_stream(client: &async_nats::Client, name: &str, subjects: &[&str]) {
    let js = async_nats::jetstream::new(client.clone());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .expect("create stream");
}

/// Wait until the consumer has nothing pending and nothing unacknowledged.
pub async fn wait_consumer_idle(client: &async_nats::Client, stream: &str) {
    let js = async_nats::jetstream::new(client.clone());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stream = js.get_stream(stream).await.expect("stream");
        let mut names = stream.consumer_names();
        let mut idle = true;
        use futures::StreamExt as _;
        while let Some(Ok(name)) = names.next().await {
            let mut consumer = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
                .await
                .expect("consumer");
            let info = consumer.info().await.expect("consumer info");
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                idle = false;
            }
        }
        if idle {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer never went idle"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every message published on a subject, duplicates included, counted by a
/// core subscriber: a stream's `Nats-Msg-Id` dedupe hides repeated publishes,
/// this does not.
pub struct RawCount {
    client: async_nats::Client,
    sub: async_nats::Subscriber,
    seen: u64,
}

impl RawCount {
    /// Subscribe to `subject` (wildcards allowed); counting starts once this
    /// returns (the server has the subscription).
    pub async fn start(client: &async_nats::Client, subject: &str) -> Self {
        let sub = client
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe");
        // A round trip: the subscription is registered before any publish.
        round_trip(client).await;
        Self {
            client: client.clone(),
            sub,
            seen: 0,
        }
    }

    /// Messages seen so far. Exact once every publisher has synced with the
    /// server (a stopped in-process host, a `weir up` that exited or was
    /// killed): a round trip on this connection comes back after everything
    /// the server routed to it before, so all of that is already queued.
    pub async fn count(&mut self) -> u64 {
        use futures::FutureExt as _;
        round_trip(&self.client).await;
        // Unconstrained: tokio's cooperative budget would otherwise make a
        // ready channel look empty after 128 polls.
        while let Some(Some(_)) = tokio::task::unconstrained(self.sub.next()).now_or_never() {
            self.seen += 1;
        }
        self.seen
    }
}

/// Publish to a fresh inbox of `client` and wait for it to come back: every
/// message the server sent this connection before it has been read.
async fn round_trip(client: &async_nats::Client) {
    let inbox = client.new_inbox();
    let mut marker = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .expect("publish marker");
    collect(&mut marker, 1).await;
}

/// `name=<n>` from the "plugin totals" line of `plugin` in a `weir up` log.
pub fn total(log: &str, plugin: &str, name: &str) -> u64 {
    let tag = format!("plugin=\"{plugin}\"");
    let line = log
        .lines()
        .find(|l| l.contains("plugin totals") && l.contains(&tag))
        .unwrap_or_else(|| panic!("no plugin totals of {plugin} in:\n{log}"));
    let key = format!(" {name}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number in {line}"))
}

/// The info of the one consumer on `stream`: `num_pending` (not yet
/// delivered), `num_ack_pending` (delivered, not acknowledged), ...
pub async fn consumer_info(
    client: &async_nats::Client,
    stream: &str,
) -> async_nats::jetstream::consumer::Info {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(stream).await.expect("stream");
    let name = stream
        .consumer_names()
        .next()
        .await
        .expect("a consumer")
        .expect("its name");
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
        .await
        .expect("consumer");
    consumer.info().await.expect("consumer info").clone()
}

/// Events of `stream` not yet finished: undelivered plus unacknowledged.
pub async fn unfinished(client: &async_nats::Client, stream: &str) -> u64 {
    let info = consumer_info(client, stream).await;
    info.num_pending + info.num_ack_pending as u64
}

/// The `weir` binary built with these tests.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// A `weir up` (or other long-running `weir`) process whose stdout and stderr
/// are collected whole, for tests that read its logs; killed on drop.
pub struct WeirProcess {
    child: Option<Child>,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl WeirProcess {
    /// Run `weir ARGS` with `env` added to the test's environment. `WEIR_LOG`
    /// and `RUST_LOG` are cleared so the binary logs at its own default
    /// level unless `env` sets them.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(WEIR)
            .args(args)
            .env_remove("WEIR_LOG")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = Vec::new();
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut all = output.lock().unwrap_or_else(|e| e.into_inner());
                    all.push_str(&line);
                    all.push('\n');
                }
            }));
        }
        Self {
            child: Some(child),
            output,
            readers,
        }
    }

    /// Everything printed so far, stdout and stderr interleaved by line.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait until the output holds `needle`; fail (showing the output) if the
    /// process exits first or PATIENCE runs out.
    pub fn wait_for_output(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let output = self.output();
            if output.contains(needle) {
                return output;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "weir exited ({exited:?}) before printing {needle:?}:\n{output}"
            );
            assert!(
                Instant::now() < deadline,
                "weir did not print {needle:?}:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (at most PATIENCE) for the exit: its status and the
    /// whole output, read to the end.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(term.success(), "kill -TERM failed");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for weir") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("weir did not exit after SIGTERM:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes close with the process: the readers end.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (status, self.output())
    }
}

impl WeirProcess {
    /// Wait (at most PATIENCE) for the process to exit by itself: its status
    /// and its whole output. Fails, showing the output, if it does not.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for weir") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("weir did not exit by itself:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (status, self.output())
    }

    /// SIGKILL and reap: no shutdown, no totals; the output up to then.
    pub fn kill(mut self) -> String {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL weir");
        child.wait().expect("reap weir");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.output()
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Ask `subject` until a reply comes (the host is up and subscribed), failing
/// after PATIENCE; the reply.
pub async fn request_until_answered(
    client: &async_nats::Client,
    subject: &str,
    payload: &str,
) -> async_nats::Message {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let probe = client.request(subject.to_owned(), payload.to_owned().into());
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_millis(500), probe).await {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer on {subject}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
