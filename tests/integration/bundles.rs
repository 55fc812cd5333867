//! Issue 13, item 1: bundle archives. `weir bundle pack` and `inspect`
//! through the binary; `weir up`, `weir test` and `weir grant verify` take
//! an archive where they take a folder; bad archives are refused naming the
//! archive and the entry, while the other plugins run.

use std::path::{Path, PathBuf};
use std::process::Command;

use weir_host::host::Host;

use crate::support::*;

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(WEIR)
        .args(args)
        .env_remove("WEIR_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run weir")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `weir bundle pack` of a copy of plugins/`name` into `dir`.
fn pack(name: &str, dir: &Path) -> PathBuf {
    let folder = bundle_copy(name, dir, |m| m);
    let archive = dir.join(format!("{name}.tar"));
    let out = weir(&["bundle", "pack", s(&folder), "-o", s(&archive)]);
    assert!(out.status.success(), "{}", text(&out));
    archive
}

/// A tar holding exactly `entries` (names written raw, so `..` stays).
fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        tar.append(&header, *data).expect("append");
    }
    tar.into_inner().expect("tar")
}

#[test]
fn pack_and_inspect_an_archive_the_same_as_its_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = pack("echo", dir.path());
    // Reproducible: packing again gives the same bytes.
    let again = dir.path().join("again.tar");
    let out = weir(&[
        "bundle",
        "pack",
        s(&dir.path().join("echo")),
        "-o",
        s(&again),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&archive).expect("archive"),
        std::fs::read(&again).expect("again")
    );
    let inspect = |path: &Path| -> serde_json::Value {
        let out = weir(&["bundle", "inspect", s(path), "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let packed = inspect(&archive);
    let folder = inspect(&dir.path().join("echo"));
    assert_eq!(packed["archive"], true);
    assert_eq!(packed["name"], "echo");
    assert_eq!(packed["sha256"], folder["sha256"]);
    assert_eq!(packed["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(packed["subscriptions"][0]["subject"], "demo.echo.>");
    assert_eq!(packed["grant"]["status"], "none");
    let human = text(&weir(&["bundle", "inspect", s(&archive)]));
    assert!(
        human.contains("name:     echo") && human.contains("grant:    none"),
        "{human}"
    );

    // `weir test` on the archive.
    let fixture = dir.path().join("hello.json");
    std::fs::write(&fixture, r#"{"subject": "demo.echo.hi", "payload": "hi"}"#).expect("fixture");
    let out = weir(&["test", s(&archive), "--event", s(&fixture)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("demo.echoed.hi"), "{}", text(&out));
}

/// A grant signed on the folder travels inside the archive and verifies there.
#[test]
fn a_signed_bundle_keeps_its_grant_in_the_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let out = weir(&["keys", "gen", "--out", s(&keys), "--kid", "ops-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let folder = bundle_copy("echo", dir.path(), |m| m);
    let key = keys.join("ops-1.key.pem");
    let out = weir(&[
        "grant",
        "sign",
        "--key",
        s(&key),
        "--bundle",
        s(&folder),
        "--publish",
        "demo.echoed.>",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let archive = dir.path().join("echo.tar");
    let out = weir(&["bundle", "pack", s(&folder), "-o", s(&archive)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("with its grant"), "{}", text(&out));

    let public = keys.join("ops-1.pub.pem");
    let out = weir(&[
        "grant",
        "verify",
        s(&archive),
        "--key",
        s(&public),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["claims"]["sub"], "echo");

    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nrequire_grants = true\n[[auth.keys]]\nissuer = \"weir\"\nalg = \"EdDSA\"\nfile = \"{}\"\n",
            public.display()
        ),
    )
    .expect("write weir.toml");
    let out = weir(&[
        "bundle",
        "inspect",
        s(&archive),
        "--config",
        s(&config),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["grant"]["status"], "valid", "{v}");
    assert_eq!(v["grant"]["kid"], "ops-1", "{v}");

    // Signing an archive is refused: there is nowhere to write the grant.
    let out = weir(&["grant", "sign", "--key", s(&key), "--bundle", s(&archive)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is an archive"), "{}", text(&out));
}

/// Each bad archive is refused with an error naming the archive and the
/// entry; a host given them runs the good archive beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_archives_are_refused_and_the_good_one_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = pack("echo", dir.path());
    let bytes = std::fs::read(&good).expect("archive");
    let manifest = std::fs::read(repo_root().join("plugins/echo/plugin.toml")).expect("manifest");

    let bad = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).expect("write");
        path
    };
    let truncated = bad("truncated.tar", &bytes[..bytes.len() / 2]);
    let traversal = bad(
        "traversal.tar",
        &raw_tar(&[("plugin.toml", &manifest), ("../escape.wasm", b"\0asm")]),
    );
    let missing = bad("missing.tar", &raw_tar(&[("plugin.toml", &manifest)]));
    let stray = bad(
        "stray.tar",
        &raw_tar(&[
            ("plugin.toml", &manifest),
            ("echo.wasm", b"x"),
            ("notes.txt", b"hi"),
        ]),
    );
    // Oversized: a sparse file past the cap costs no disk.
    let oversized = dir.path().join("oversized.tar");
    std::fs::File::create(&oversized)
        .and_then(|f| f.set_len(weir_host::bundle::archive::MAX_ARCHIVE_BYTES + 1))
        .expect("sparse file");

    let cases: [(&PathBuf, &str); 5] = [
        (&truncated, "truncated"),
        (&traversal, "../escape.wasm"),
        (&missing, "echo.wasm: not in the archive"),
        (&stray, "notes.txt"),
        (&oversized, "larger than a bundle archive may be"),
    ];
    for (archive, why) in cases {
        let out = weir(&["bundle", "inspect", s(archive)]);
        assert!(!out.status.success(), "{} was accepted", archive.display());
        let said = text(&out);
        assert!(
            said.contains(s(archive)),
            "does not name the archive: {said}"
        );
        assert!(
            said.contains(why),
            "{}: expected {why:?} in: {said}",
            archive.display()
        );
    }

    let server = NatsServer::start();
    let client = server.client().await;
    let mut bundles = vec![good.clone()];
    bundles.extend(cases.iter().map(|(p, _)| (*p).clone()));
    let host = Host::start(&host_config(&server, &bundles))
        .await
        .expect("host starts");
    assert_eq!(host.plugins().len(), 1, "only the good archive runs");
    assert_eq!(host.refused().len(), 5, "{:?}", host.refused());
    let answer = client
        .request("demo.echo.packed", "from a tar".into())
        .await
        .expect("echo answers");
    assert_eq!(&answer.payload[..], b"from a tar");
    host.stop().await.expect("clean stop");
}
