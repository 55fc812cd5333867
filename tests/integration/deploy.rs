//! Issue 13, item 2: the fleet's desired state in NATS, through the binary
//! against a real nats-server: `weir deploy` (a folder, then an archive),
//! `weir deployments [history]`, `weir rollback [--to]`, `weir undeploy`;
//! the archive fetched back by a plain async-nats client matches its record.

use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt as _;

use crate::support::*;

pub(crate) fn weir(nats: &str, args: &[&str]) -> std::process::Output {
    Command::new(WEIR)
        .args(args)
        .args(["--nats", nats])
        .env_remove("WEIR_LOG")
        .env_remove("RUST_LOG")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run weir")
}

pub(crate) fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_list_rollback_and_undeploy() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = bundle_copy("echo", &dir.path().join("v1"), |m| m);
    let v2 = bundle_copy("echo", &dir.path().join("v2"), |m| {
        m.replace("version = \"0.1.0\"", "version = \"0.2.0\"")
    });
    let v2_tar = dir.path().join("echo-0.2.0.tar");
    assert!(
        weir(&url, &["bundle", "pack", s(&v2), "-o", s(&v2_tar)])
            .status
            .success()
    );

    // A folder is packed on the way; an archive goes as it is.
    let first = json(&weir(&url, &["deploy", s(&v1), "--json"]));
    assert_eq!(first["revision"], 1);
    assert_eq!(first["deployment"]["version"], "0.1.0");
    let inspected = json(&weir(&url, &["bundle", "inspect", s(&v1), "--json"]));
    assert_eq!(first["deployment"]["sha256"], inspected["sha256"]);
    let second = json(&weir(&url, &["--json", "deploy", s(&v2_tar)]));
    assert_eq!(second["revision"], 2);
    assert_eq!(second["deployment"]["version"], "0.2.0");

    let list = json(&weir(&url, &["deployments", "--json"]));
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["deployment"]["name"], "echo");
    assert_eq!(list[0]["deployment"]["version"], "0.2.0");
    assert_eq!(list[0]["revision"], 2);

    // Another NATS client fetches the archive: the record's digest holds and
    // it is the v2 bundle.
    let client = server.client().await;
    let js = async_nats::jetstream::new(client);
    let store = js.get_object_store("weir_bundles").await.expect("bucket");
    let object = second["deployment"]["object"].as_str().expect("object");
    let mut bytes = Vec::new();
    store
        .get(object)
        .await
        .expect("object")
        .read_to_end(&mut bytes)
        .await
        .expect("read");
    assert_eq!(
        Some(hex::encode(Sha256::digest(&bytes)).as_str()),
        second["deployment"]["archive_sha256"].as_str()
    );
    assert_eq!(bytes, std::fs::read(&v2_tar).expect("v2 archive"));
    let mut tar = tar::Archive::new(bytes.as_slice());
    let mut manifest = String::new();
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_str() == Some("plugin.toml") {
            entry.read_to_string(&mut manifest).expect("manifest");
        }
    }
    assert!(manifest.contains("version = \"0.2.0\""), "{manifest}");

    let history = json(&weir(&url, &["deployments", "history", "echo", "--json"]));
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    assert_eq!(history[0]["deployment"]["version"], "0.1.0");

    // Back to what came before, then forward again by revision.
    let back = json(&weir(&url, &["rollback", "echo", "--json"]));
    assert_eq!(back["revision"], 3);
    assert_eq!(back["deployment"]["version"], "0.1.0");
    assert_eq!(back["deployment"]["note"], "rollback to revision 1");
    let forward = json(&weir(&url, &["rollback", "echo", "--to", "2", "--json"]));
    assert_eq!(forward["deployment"]["version"], "0.2.0");
    assert_eq!(forward["revision"], 4);

    let gone = json(&weir(&url, &["undeploy", "echo", "--json"]));
    assert_eq!(gone["undeployed"]["version"], "0.2.0");
    let list = json(&weir(&url, &["deployments", "--json"]));
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let history = json(&weir(&url, &["deployments", "history", "echo", "--json"]));
    assert_eq!(history[4]["operation"], "delete", "{history}");
    let human = weir(&url, &["deployments", "history", "echo"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("undeployed (delete)"), "{human}");
    assert!(human.contains("rollback to revision 1"), "{human}");
    // An undeployed plugin comes back with a rollback.
    let again = json(&weir(&url, &["rollback", "echo", "--json"]));
    assert_eq!(again["deployment"]["version"], "0.2.0");

    // Errors name what is wrong.
    for (args, says) in [
        (&["rollback", "nothere"][..], "nothere was never deployed"),
        (&["undeploy", "nothere"][..], "nothere is not deployed"),
        (
            &["rollback", "echo", "--to", "99"][..],
            "echo has no revision 99",
        ),
        (
            &["rollback", "echo", "--to", "5"][..],
            "revision 5 of echo is an undeploy",
        ),
    ] {
        let out = weir(&url, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
