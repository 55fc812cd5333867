use weir_host::host::Host;

use crate::support::*;

/// A folder of bundles where most are broken: each broken one is refused with
/// an error naming its file and field, and the good one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bundles_are_refused_and_the_others_run() {
    let server = NatsServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path();
    bundle_copy("echo", plugins, |m| m);

    let broken = |name: &str, manifest: &str, wasm: Option<&[u8]>| {
        let d = plugins.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("plugin.toml"), manifest).expect("write manifest");
        if let Some(bytes) = wasm {
            std::fs::write(d.join("p.wasm"), bytes).expect("write wasm");
        }
    };
    let manifest = |name: &str| {
        format!(
            "name = \"{name}\"\nversion = \"1\"\nwasm = \"p.wasm\"\n[[subscribe]]\nsubject = \"x.{name}\"\n"
        )
    };
    broken("missing-wasm", &manifest("missing-wasm"), None);
    broken(
        "core-module",
        &manifest("core-module"),
        Some(b"\0asm\x01\0\0\0"),
    );
    // An empty component: valid, but it exports no `handle`.
    broken(
        "wrong-world",
        &manifest("wrong-world"),
        Some(b"\0asm\x0d\0\x01\0"),
    );
    broken(
        "bad-manifest",
        &(manifest("bad-manifest") + "[limits]\ntimeout = 5\n"),
        Some(b"\0asm\x0d\0\x01\0"),
    );
    broken(
        "bad-subject",
        &manifest("bad-subject").replace("x.bad-subject", "x.>.y"),
        Some(b"\0asm\x0d\0\x01\0"),
    );
    // Not a bundle at all (no plugin.toml): ignored, not an error.
    std::fs::create_dir_all(plugins.join("notes")).expect("mkdir");

    let mut config = host_config(&server, &[]);
    config.plugins.dirs = vec![plugins.to_path_buf()];
    let host = Host::start(&config)
        .await
        .expect("host starts despite bad bundles");
    let loaded: Vec<_> = host.plugins().iter().map(|p| p.name().to_owned()).collect();
    assert_eq!(loaded, ["echo"]);

    let reason = |name: &str| {
        host.refused()
            .iter()
            .find(|r| r.path.ends_with(name))
            .map(|r| r.reason.clone())
            .unwrap_or_else(|| panic!("{name} was not refused: {:?}", host.refused()))
    };
    assert_eq!(host.refused().len(), 5, "{:?}", host.refused());
    let r = reason("missing-wasm");
    assert!(
        r.contains("missing-wasm/plugin.toml: wasm: cannot read"),
        "{r}"
    );
    let r = reason("core-module");
    assert!(
        r.contains("core-module/plugin.toml: wasm:") && r.contains("not a component"),
        "{r}"
    );
    let r = reason("wrong-world");
    assert!(
        r.contains("wrong-world/p.wasm") && r.contains("handler world"),
        "{r}"
    );
    let r = reason("bad-manifest");
    assert!(
        r.contains("bad-manifest/plugin.toml: limits.timeout: unknown field"),
        "{r}"
    );
    let r = reason("bad-subject");
    assert!(
        r.contains("bad-subject/plugin.toml: subscribe[0].subject"),
        "{r}"
    );

    let reply = client
        .request("demo.echo.still-here", "yes".into())
        .await
        .expect("the good plugin runs");
    assert_eq!(reply.payload, "yes".as_bytes());
    host.stop().await.expect("clean stop");
}

/// The first load compiles a component and caches it; a second runtime
/// (another process, in real life) maps the cached file instead of compiling:
/// the entry is neither rewritten nor duplicated.
#[test]
fn compiled_components_are_cached_on_disk() {
    use std::os::unix::fs::MetadataExt as _;
    use weir_host::bundle::Bundle;
    use weir_host::config::SandboxConfig;
    use weir_host::sandbox::Runtime;

    let cache = tempfile::tempdir().expect("tempdir");
    let sandbox = SandboxConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        max_instances: 10,
        ..SandboxConfig::default()
    };
    let bundle = Bundle::load(&bundle("echo"), sandbox.max_memory_mb).expect("echo bundle");
    let entries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(cache.path())
            .expect("cache dir")
            .map(|e| e.expect("entry").path())
            .collect()
    };

    let first = Runtime::new(&sandbox).expect("runtime");
    first
        .prepare(&bundle.wasm, &bundle.sha256)
        .expect("compiles");
    let cached = entries();
    assert_eq!(cached.len(), 1, "one entry: {cached:?}");
    let name = cached[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    assert!(
        name.starts_with(&bundle.sha256_hex()) && name.ends_with(".cwasm"),
        "{name}"
    );
    let before = std::fs::metadata(&cached[0]).expect("metadata");
    let compiled = std::fs::read(&cached[0]).expect("read");

    let second = Runtime::new(&sandbox).expect("runtime");
    second
        .prepare(&bundle.wasm, &bundle.sha256)
        .expect("loads from the cache");
    assert_eq!(entries(), cached);
    // Loaded, not written again: the same file, the same bytes (only its
    // modification time moves: it records the last use, for eviction).
    let after = std::fs::metadata(&cached[0]).expect("metadata");
    assert_eq!(before.ino(), after.ino());
    assert_eq!(std::fs::read(&cached[0]).expect("read"), compiled);

    // A corrupt entry is not trusted: it is replaced by a fresh compile.
    std::fs::write(&cached[0], b"not a compiled component").expect("corrupt it");
    let third = Runtime::new(&sandbox).expect("runtime");
    third
        .prepare(&bundle.wasm, &bundle.sha256)
        .expect("recompiles");
    assert_ne!(
        std::fs::read(&cached[0]).expect("read"),
        b"not a compiled component"
    );
}
