//! NATS server URLs: credentials in them kept out of every log line, lists of
//! servers, and a cluster whose first node is down.

use crate::support::*;

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Issue 8: userinfo ends at the last `@`. A password holding `@` signs, in
/// the URL and in `password_env`, appears in no piece anywhere in the host's
/// output, from start-up to shutdown, even at debug level.
#[test]
fn a_password_with_at_signs_never_reaches_the_logs() {
    const PASSWORD: &str = "p@ss@word";
    let server = NatsServer::start_with_config(&format!(
        "authorization {{\n  user: weir\n  password: \"{PASSWORD}\"\n}}\n"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    bundle_copy("echo", &plugins, |m| m);
    let url = server
        .url()
        .replace("nats://", &format!("nats://weir:{PASSWORD}@"));
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{url}\"\nuser = \"weir\"\npassword_env = \"WEIR_TEST_NATS_PASSWORD\"\n\
             [plugins]\ndirs = [\"{}\"]\n[sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            path(&plugins),
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write config");
    let mut weir = WeirProcess::start(
        &["up", "--config", path(&config)],
        &[
            ("WEIR_TEST_NATS_PASSWORD", PASSWORD),
            // The NATS client's debug lines print server addresses whole.
            ("WEIR_LOG", "debug,cranelift_codegen=info,wasmtime=info"),
        ],
    );
    weir.wait_for_output("NATS servers");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client =
            async_nats::ConnectOptions::with_user_and_password("weir".into(), PASSWORD.into())
                .connect(server.url())
                .await
                .expect("test client connects");
        let reply = request_until_answered(&client, "demo.echo.secret", "hi").await;
        assert_eq!(reply.payload, "hi".as_bytes());
    });
    let (status, output) = weir.stop();
    assert!(status.success(), "weir up exited {status:?}:\n{output}");
    // The host did log its server, redacted.
    let redacted = server.url().replace("nats://", "nats://***@");
    assert!(output.contains(&redacted), "no {redacted} in:\n{output}");
    for piece in [PASSWORD, "ss@word", "p@ss", "@word", "p%40ss", "ss%40word"] {
        assert!(
            !output.contains(piece),
            "{piece:?} in the output:\n{output}"
        );
    }
}

/// Issue 8: `nats.url` as an array of a 3-node cluster's nodes, the first of
/// them dead: `weir up` starts on another and events flow.
#[test]
fn weir_up_starts_on_a_cluster_whose_first_node_is_down() {
    let mut cluster = NatsCluster::start(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(cluster.wait_for_jetstream(1));
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    cluster.kill(0);
    // A new metadata leader, if the dead node was it: weir up creates its
    // dead-letter stream at start.
    rt.block_on(cluster.wait_for_jetstream(1));

    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("mkdir");
    bundle_copy("echo", &plugins, |m| m);
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = [\"{}\", \"{}\", \"{}\"]\n[plugins]\ndirs = [\"{}\"]\n\
             [sandbox]\ncache_dir = \"{}/weir-cache\"\n",
            urls[0],
            urls[1],
            urls[2],
            path(&plugins),
            env!("CARGO_TARGET_TMPDIR")
        ),
    )
    .expect("write config");
    let mut weir = WeirProcess::start(&["up", "--config", path(&config)], &[]);
    let output = weir.wait_for_output("NATS servers");
    assert!(output.contains(&urls.join(",")), "{output}");
    rt.block_on(async {
        // Asked through the third node; the host is on the second or third.
        let client = async_nats::connect(&urls[2])
            .await
            .expect("connect to node 3");
        let reply = request_until_answered(&client, "demo.echo.cluster", "across").await;
        assert_eq!(reply.payload, "across".as_bytes());
    });
    let (status, output) = weir.stop();
    assert!(status.success(), "weir up exited {status:?}:\n{output}");
}
