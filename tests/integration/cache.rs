//! The compile cache is bounded: past `sandbox.cache_max_mb` the least
//! recently used entries go (a load counts as a use), with a warning when
//! one this process loaded had to go; `weir cache` shows it, `prune` and
//! `clear` shrink it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use weir_host::bundle::Bundle;
use weir_host::config::SandboxConfig;
use weir_host::sandbox::Runtime;

use crate::support::*;

/// A fake entry of `kb` KiB, last used `ago` before now.
fn fake_entry(dir: &Path, name: &str, kb: usize, ago: Duration) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create cache dir");
    let path = dir.join(format!("{name}.cwasm"));
    std::fs::write(&path, vec![0u8; kb * 1024]).expect("write fake entry");
    set_last_use(&path, SystemTime::now() - ago);
    path
}

fn set_last_use(path: &Path, when: SystemTime) {
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(when))
        .expect("set mtime");
}

/// A weir.toml whose compile cache is `dir`, capped at `max_mb`.
fn config(dir: &Path, cache: &Path, max_mb: u64) -> PathBuf {
    let file = dir.join("weir.toml");
    std::fs::write(
        &file,
        format!(
            "[sandbox]\ncache_dir = \"{}\"\ncache_max_mb = {max_mb}\n",
            cache.display()
        ),
    )
    .expect("write weir.toml");
    file
}

/// `weir COMMAND --config CONFIG REST...`.
fn weir(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(WEIR)
        .arg(args[0])
        .arg("--config")
        .arg(config)
        .args(&args[1..])
        .output()
        .expect("run weir");
    assert!(
        out.status.success(),
        "weir {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The cache's entries as `weir cache --json` lists them, least recently
/// used first: (file name, bytes).
fn listed(config: &Path) -> Vec<(String, u64)> {
    let out = weir(config, &["cache", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    report["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let path = PathBuf::from(e["path"].as_str().expect("path"));
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, e["bytes"].as_u64().expect("bytes"))
        })
        .collect()
}

fn names(entries: &[(String, u64)]) -> Vec<&str> {
    entries.iter().map(|(n, _)| n.as_str()).collect()
}

/// Issue 9: a compile that takes the cache past its cap removes the least
/// recently used entries first, and loading an entry makes it recent.
#[test]
fn the_cache_keeps_under_its_cap_least_recently_used_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let config = config(dir.path(), &cache, 1);
    let event = dir.path().join("event.json");
    std::fs::write(&event, r#"{"subject": "test.flaky.1", "payload": "p"}"#).expect("write");
    let test_flaky = || {
        weir(
            &config,
            &["test", path_str(&bundle("flaky")), "-e", path_str(&event)],
        )
    };
    // 800 KiB used a day ago, 100 KiB a minute ago: together under 1 MB.
    fake_entry(&cache, "old", 800, Duration::from_secs(86_400));
    fake_entry(&cache, "recent", 100, Duration::from_secs(60));
    assert_eq!(names(&listed(&config)), ["old.cwasm", "recent.cwasm"]);

    // Compiling flaky takes it past 1 MB: the day-old entry goes, not the
    // recent one, nor flaky's own.
    test_flaky();
    let after = listed(&config);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0].0, "recent.cwasm", "{after:?}");
    let flaky = cache.join(&after[1].0);
    assert!(after[1].0.ends_with(".cwasm") && after[1].1 > 0);
    assert!(after.iter().map(|(_, b)| b).sum::<u64>() <= 1024 * 1024);
    assert!(!cache.join("old.cwasm").exists());

    // Make flaky's entry the oldest; a run that loads it makes it the most
    // recent again (and writes nothing new).
    set_last_use(&flaky, SystemTime::now() - Duration::from_secs(7_200));
    assert_eq!(listed(&config)[0].0, after[1].0);
    test_flaky();
    let reloaded = listed(&config);
    assert_eq!(names(&reloaded), ["recent.cwasm", after[1].0.as_str()]);
}

/// `weir cache` shows the folder, the entries and the cap; `prune` brings
/// it under a cap (and removes files of writes that died); `clear` empties it.
#[test]
fn weir_cache_shows_prunes_and_clears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let config = config(dir.path(), &cache, 64);
    fake_entry(&cache, "a", 3 * 1024, Duration::from_secs(300));
    fake_entry(&cache, "b", 2 * 1024, Duration::from_secs(200));
    fake_entry(&cache, "c", 1024, Duration::from_secs(100));
    let dead_write = cache.join(".tmpAbC123");
    std::fs::write(&dead_write, "half").expect("write");
    set_last_use(&dead_write, SystemTime::now() - Duration::from_secs(86_400));
    std::fs::write(cache.join("README"), "not an entry").expect("write");

    let out = weir(&config, &["cache"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "compile cache {}: 3 entries, 6.0 MB of 64 MB (sandbox.cache_max_mb)\n",
            cache.display()
        )),
        "{text}"
    );
    // Most recently used first.
    let order: Vec<_> = ["c.cwasm", "b.cwasm", "a.cwasm"]
        .iter()
        .map(|n| {
            text.find(n)
                .unwrap_or_else(|| panic!("{n} not listed:\n{text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");

    let out = weir(&config, &["cache", "prune", "--max-mb", "4"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("removed 1 entries (3.0 MB)")
            && text.contains("removed 1 files of interrupted writes"),
        "{text}"
    );
    assert!(text.contains("kept 2 entries, 3.0 MB of 4 MB"), "{text}");
    assert_eq!(names(&listed(&config)), ["b.cwasm", "c.cwasm"]);
    assert!(!dead_write.exists());

    let out = weir(&config, &["cache", "clear", "--json"]);
    let cleared: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(cleared["removed"].as_array().map(Vec::len), Some(2));
    assert_eq!(cleared["freed_bytes"], 3 * 1024 * 1024);
    assert!(listed(&config).is_empty());
    assert!(cache.join("README").exists(), "clear removes only entries");

    let off = dir.path().join("off.toml");
    std::fs::write(&off, "[sandbox]\ncache = false\n").expect("write");
    let out = weir(&off, &["cache"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "the compile cache is off (sandbox.cache = false)\n"
    );
}

/// A cap below what one process loads is said, not silently paid for at
/// every start: evicting an entry this runtime has used since it started
/// is a warning naming the setting.
#[tokio::test(flavor = "current_thread")]
async fn evicting_an_entry_in_use_warns_that_the_cap_is_too_small() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let sandbox = SandboxConfig {
        cache_dir: Some(cache.clone()),
        cache_max_mb: 1,
        max_instances: 10,
        ..SandboxConfig::default()
    };
    let runtime = Runtime::new(&sandbox).expect("runtime");
    // Used after the runtime started, as an entry this process loaded is.
    let in_use = fake_entry(&cache, "in-use", 1000, Duration::ZERO);
    let flaky = Bundle::load(&bundle("flaky"), 512).expect("bundle");
    runtime
        .prepare(&flaky.wasm, &flaky.sha256)
        .map_err(|e| e.to_string())
        .expect("prepare");
    assert!(!in_use.exists());
    let line = logs
        .wait_for(&[
            "WARN",
            "removed an entry this process loaded",
            "sandbox.cache_max_mb (1 MB)",
        ])
        .await;
    assert!(line.contains("in-use.cwasm"), "{line}");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
