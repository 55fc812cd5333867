//! Issue 13, review: `weir up --watch` (`plugins.watch`) on what authors do.
//! A wasm that plugin.toml names outside the bundle's folder is watched
//! where it lies; a bundle refused before its name could be read is no
//! longer refused once it loads; a stopping host does not wait for files that
//! keep changing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir_host::host::Host;

use crate::support::*;

fn watching(server: &NatsServer, bundle: &Path) -> weir_host::config::HostConfig {
    let mut config = host_config(server, &[bundle.to_path_buf()]);
    config.plugins.watch = true;
    config
}

/// The wasm SHA-256 of the relay the host runs, if it runs one.
fn relay_sha(host: &Host) -> Option<String> {
    (host.plugins().iter())
        .find(|p| p.name() == "relay")
        .map(|p| p.sha256.clone())
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_outside_the_bundle_is_watched_where_it_lies() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The bundle names a build's output folder beside it.
    let build = dir.path().join("build");
    std::fs::create_dir_all(&build).expect("mkdir");
    std::fs::copy(bundle("relay").join("relay.wasm"), build.join("relay.wasm")).expect("copy");
    let folder = bundle_copy("relay", dir.path(), |m| {
        m.replace("wasm = \"relay.wasm\"", "wasm = \"../build/relay.wasm\"")
    });
    std::fs::remove_file(folder.join("relay.wasm")).expect("only the outside wasm");
    let host = Host::start(&watching(&server, &folder))
        .await
        .expect("host");
    let before = relay_sha(&host).expect("relay runs");

    // A rebuild: another component in its place (echo's), plugin.toml untouched.
    let rebuilt = std::fs::read(bundle("echo").join("echo.wasm")).expect("echo wasm");
    let part = build.join("relay.wasm.part");
    std::fs::write(&part, rebuilt).expect("write");
    std::fs::rename(&part, build.join("relay.wasm")).expect("rename");
    until("the rebuilt wasm runs", || {
        relay_sha(&host).is_some_and(|sha| sha != before)
    })
    .await;
    assert!(host.refused().is_empty(), "{:?}", host.refused());
    host.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_refused_unnamed_is_cleared_once_it_loads() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = bundle_copy("relay", dir.path(), |m| m);
    let manifest = folder.join("plugin.toml");
    let good = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, "name = [not toml").expect("break the manifest");
    let host = Host::start(&watching(&server, &folder))
        .await
        .expect("host");
    let refused = host.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].name, None, "refused before its name was read");

    std::fs::write(&manifest, good).expect("mend the manifest");
    until("the mended bundle runs", || relay_sha(&host).is_some()).await;
    assert!(
        host.refused().is_empty(),
        "the unnamed refusal outlived the load: {:?}",
        host.refused()
    );
    host.stop().await.expect("stop");
}

/// Rewrite `path` with a new line every few milliseconds until `done`.
async fn keep_touching(path: PathBuf, done: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !done.load(Ordering::SeqCst) {
        n += 1;
        let text = std::fs::read_to_string(&path).expect("manifest");
        std::fs::write(&path, format!("{text}# edit {n}\n")).expect("manifest");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// One thread: the host's log lines are this test's.
#[tokio::test(flavor = "current_thread")]
async fn a_stopping_host_does_not_wait_for_files_that_keep_changing() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = bundle_copy("relay", dir.path(), |m| m);
    let host = Host::start(&watching(&server, &folder))
        .await
        .expect("host");
    let (logs, _guard) = capture_logs();
    let done = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_touching(folder.join("plugin.toml"), done.clone()));
    // Edits keep coming: the watcher waits for the files to be quiet.
    until("a few edits", || {
        std::fs::read_to_string(folder.join("plugin.toml"))
            .is_ok_and(|text| text.contains("# edit 3"))
    })
    .await;
    host.stop().await.expect("stop");
    done.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let text = logs.text();
    assert!(
        !text.contains("shutdown grace"),
        "the stop waited for the watcher:\n{text}"
    );
}
