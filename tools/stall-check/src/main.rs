//! Issue 16's reproduction, as a check: N runs per isolation mode of a
//! `weir up` relaying 20,000 preloaded JetStream events (`in.<rest>` →
//! `out.<rest>`, the `relay` plugin, `max_in_flight = 64`), each against its
//! own nats-server. The output stream's count is sampled every 250 ms; a run's
//! figure is its longest window without a new output while outputs are short
//! of the total (counted from the first output, so start-up is not a stall).
//! Exits 1 if any window reaches `--limit-ms` (3000), 2 on a setup failure.
//!
//! Driven by scripts/stall-check.sh; by hand:
//! `cargo run --release -p weir-stall-check -- --weir target/release/weir`.
//! Options: `--runs N` (50), `--modes event,reuse`, `--events N` (20000),
//! `--limit-ms MS` (3000), `--keep-logs DIR` (each run's weir log).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;

const SAMPLE: Duration = Duration::from_millis(250);
/// A run that has not finished by then is reported as one long window.
const RUN_LIMIT: Duration = Duration::from_secs(180);
const PAYLOAD: usize = 128;

struct Options {
    weir: PathBuf,
    runs: usize,
    modes: Vec<String>,
    events: u64,
    limit: Duration,
    keep_logs: Option<PathBuf>,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        weir: PathBuf::from("target/release/weir"),
        runs: 50,
        modes: vec!["event".into(), "reuse".into()],
        events: 20_000,
        limit: Duration::from_millis(3000),
        keep_logs: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--weir" => options.weir = value()?.into(),
            "--runs" => options.runs = value()?.parse().context("--runs")?,
            "--modes" => options.modes = value()?.split(',').map(str::to_owned).collect(),
            "--events" => options.events = value()?.parse().context("--events")?,
            "--limit-ms" => {
                options.limit = Duration::from_millis(value()?.parse().context("--limit-ms")?)
            }
            "--keep-logs" => options.keep_logs = Some(value()?.into()),
            other => bail!("unknown option {other:?}"),
        }
    }
    Ok(options)
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A nats-server (`$WEIR_NATS_SERVER`, else the one on PATH) with JetStream in `store`, on a port it
/// picks itself and reports in its ports file.
fn start_server(store: &Path) -> anyhow::Result<(Killed, String)> {
    let binary = std::env::var_os("WEIR_NATS_SERVER").unwrap_or_else(|| "nats-server".into());
    let child = Command::new(binary)
        .args(["--jetstream", "--addr", "127.0.0.1", "--port", "-1"])
        .arg("--store_dir")
        .arg(store)
        .arg("--ports_file_dir")
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start nats-server (scripts/setup.sh installs it)")?;
    let ports = store.join(format!("nats-server_{}.ports", child.id()));
    let server = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(url) = std::fs::read_to_string(&ports)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["nats"][0].as_str().map(str::to_owned))
        {
            return Ok((server, url));
        }
        if Instant::now() > deadline {
            bail!("nats-server did not write {}", ports.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The relay bundle from plugins/relay, as a JetStream subscriber on `IN`.
fn relay_bundle(into: &Path, isolation: &str) -> anyhow::Result<PathBuf> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/relay");
    let manifest = std::fs::read_to_string(src.join("plugin.toml"))
        .context("read plugins/relay/plugin.toml")?;
    let dst = into.join("relay");
    std::fs::create_dir_all(&dst)?;
    std::fs::copy(src.join("relay.wasm"), dst.join("relay.wasm"))
        .context("plugins/relay/relay.wasm (scripts/build-plugins.sh builds it)")?;
    let mut out = String::new();
    for line in manifest.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("subject = ") {
            out.push_str("mode = \"jetstream\"\nstream = \"IN\"\n");
        }
    }
    out.push_str(&format!(
        "\n[limits]\nisolation = \"{isolation}\"\nmax_in_flight = 64\n"
    ));
    std::fs::write(dst.join("plugin.toml"), out)?;
    Ok(dst)
}

async fn preload(js: &jetstream::Context, n: u64) -> anyhow::Result<()> {
    for (name, subject) in [("IN", "in.>"), ("OUT", "out.>")] {
        js.create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .with_context(|| format!("create stream {name}"))?;
    }
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let mut acks = Vec::with_capacity(1000);
    for i in 0..n {
        acks.push(
            js.publish(format!("in.{}", i % 100), payload.clone())
                .await?,
        );
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

async fn out_count(js: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(js.get_stream("OUT").await?.info().await?.state.messages)
}

struct Run {
    /// From `weir up` to the first output.
    first_output: Duration,
    /// The longest time without a new output, after the first one.
    longest_window: Duration,
    /// How far the outputs had got when that window began.
    window_at: u64,
    outputs: u64,
    total: Duration,
    /// The host's own count of renewed pulls (its watchdog's warnings).
    stall_warnings: usize,
}

async fn one_run(options: &Options, isolation: &str, index: usize) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store)?;
    let (_server, url) = start_server(&store)?;
    let client = async_nats::connect(&url).await?;
    let js = jetstream::new(client);
    preload(&js, options.events).await?;

    let bundle = relay_bundle(dir.path(), isolation)?;
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/weir-stall-cache");
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{url}\"\n[plugins]\ndirs = []\nbundles = [\"{}\"]\n[sandbox]\ncache_dir = \"{}\"\n",
            bundle.display(),
            cache.display()
        ),
    )?;
    let log_path = dir.path().join("weir.log");
    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let weir = Killed(
        Command::new(&options.weir)
            .args(["up", "--config"])
            .arg(&config)
            .env_remove("WEIR_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", options.weir.display()))?,
    );

    let mut outputs = 0;
    let mut first_output = None;
    let mut last_change = started;
    let mut longest_window = Duration::ZERO;
    let mut window_at = 0;
    while outputs < options.events && started.elapsed() < RUN_LIMIT {
        tokio::time::sleep(SAMPLE).await;
        let count = out_count(&js).await?;
        let now = Instant::now();
        if count > outputs {
            if first_output.is_none() {
                first_output = Some(now - started);
            } else if now - last_change > longest_window {
                longest_window = now - last_change;
                window_at = outputs;
            }
            outputs = count;
            last_change = now;
        }
    }
    if outputs < options.events && now_since(last_change) > longest_window {
        longest_window = now_since(last_change);
        window_at = outputs;
    }
    let total = started.elapsed();
    drop(weir);
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let stall_warnings = text.matches("JetStream pull stalled").count();
    if let Some(keep) = &options.keep_logs {
        std::fs::create_dir_all(keep)?;
        std::fs::write(keep.join(format!("{isolation}-{index:03}.log")), &text)?;
    }
    Ok(Run {
        first_output: first_output.unwrap_or(total),
        longest_window,
        window_at,
        outputs,
        total,
        stall_warnings,
    })
}

fn now_since(then: Instant) -> Duration {
    Instant::now() - then
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("stall-check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stall-check: tokio: {e}");
            return ExitCode::from(2);
        }
    };
    let ms = |d: Duration| d.as_millis();
    let mut failed = false;
    let mut summary = Vec::new();
    for isolation in &options.modes {
        let (mut worst, mut over, mut warned) = (Duration::ZERO, 0, 0);
        for index in 1..=options.runs {
            let run = match rt.block_on(one_run(&options, isolation, index)) {
                Ok(run) => run,
                Err(e) => {
                    eprintln!("stall-check: {isolation} run {index}: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let stalled = run.longest_window >= options.limit;
            println!(
                "{isolation:<5} run {index:>3}: {} outputs in {} ms (first after {} ms), longest window {} ms at {}, {} stall warnings{}",
                run.outputs,
                ms(run.total),
                ms(run.first_output),
                ms(run.longest_window),
                run.window_at,
                run.stall_warnings,
                if stalled { "  STALL" } else { "" }
            );
            worst = worst.max(run.longest_window);
            over += usize::from(stalled);
            warned += usize::from(run.stall_warnings > 0);
        }
        failed |= over > 0;
        summary.push(format!(
            "{isolation}: {} runs, longest window {} ms, {over} runs with a window >= {} ms, {warned} runs with a stall warning",
            options.runs,
            ms(worst),
            ms(options.limit)
        ));
    }
    for line in summary {
        println!("{line}");
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
