//! Every way `weir up` authenticates to NATS, end to end against a real
//! nats-server: a token, a user and password, an nkey seed, a `.creds` file
//! (operator, account and user JWTs minted by the test, a memory resolver),
//! and TLS before INFO (`tls_first` against `handshake_first`). The right one
//! connects and events flow; a wrong one of each ends start-up at once (exit
//! 2) with an error naming the field and its file or variable, and no secret —
//! right or wrong — in anything the host prints, down to the NATS client's
//! trace lines.

use std::path::{Path, PathBuf};

use crate::support::creds::Operator;
use crate::support::*;

/// Verbose enough that a secret the client handled would show.
const LOG: (&str, &str) = (
    "WEIR_LOG",
    "debug,async_nats=trace,cranelift_codegen=info,wasmtime=info",
);

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A folder with the echo plugin, where each case writes its weir.toml.
struct Case {
    dir: tempfile::TempDir,
    plugins: PathBuf,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("mkdir");
        bundle_copy("echo", &plugins, |m| m);
        Self { dir, plugins }
    }

    /// Write `text` (a secret) to a file of this case.
    fn secret(&self, name: &str, text: &str) -> PathBuf {
        let file = self.dir.path().join(name);
        std::fs::write(&file, text).expect("write secret");
        file
    }

    /// A weir.toml for `url` whose `[nats]` table adds `nats`.
    fn config(&self, name: &str, url: &str, nats: &str) -> PathBuf {
        let file = self.dir.path().join(name);
        std::fs::write(
            &file,
            format!(
                "[nats]\nurl = \"{url}\"\n{nats}\n[plugins]\ndirs = [\"{}\"]\n\
                 [sandbox]\ncache_dir = \"{}/weir-cache\"\n",
                path(&self.plugins),
                env!("CARGO_TARGET_TMPDIR")
            ),
        )
        .expect("write config");
        file
    }
}

fn no_secret_in(output: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !output.contains(secret),
            "a secret ({} bytes) is in the output:\n{output}",
            secret.len()
        );
    }
}

/// `weir up --config config` answers a request through `client`, then stops
/// cleanly; no secret in its output.
fn serves(config: &Path, env: &[(&str, &str)], client: &async_nats::Client, secrets: &[&str]) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut env = env.to_vec();
    env.push(LOG);
    let weir = WeirProcess::start(&["up", "--config", path(config)], &env);
    rt.block_on(async {
        let reply = request_until_answered(client, "demo.echo.creds", "signed in").await;
        assert_eq!(reply.payload, "signed in".as_bytes());
    });
    let (status, output) = weir.stop();
    assert!(status.success(), "weir up exited {status:?}:\n{output}");
    assert!(output.contains("connected to NATS"), "{output}");
    no_secret_in(&output, secrets);
}

/// `weir up --config config` exits 2 by itself, its error line holding every
/// one of `names`; no secret in its output. The error line.
fn refused(config: &Path, env: &[(&str, &str)], names: &[&str], secrets: &[&str]) -> String {
    let mut env = env.to_vec();
    env.push(LOG);
    let weir = WeirProcess::start(&["up", "--config", path(config)], &env);
    let (status, output) = weir.wait_exit();
    assert_eq!(
        status.code(),
        Some(2),
        "weir up exited {status:?}:\n{output}"
    );
    let error = output
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{output}"));
    for name in names {
        assert!(error.contains(name), "{name:?} not in {error:?}");
    }
    assert!(!output.contains("weir is up"), "{output}");
    no_secret_in(&output, secrets);
    error.to_owned()
}

/// A token from a file connects; a wrong one is refused naming the file, a
/// wrong one from the environment naming the variable; no token at all is
/// refused saying the server wants one.
#[test]
fn a_token_connects_and_a_wrong_one_is_refused() {
    const TOKEN: &str = "tok-9f3c1e7a55";
    const WRONG: &str = "tok-wrong-41b2d8";
    let server =
        NatsServer::start_with_config(&format!("authorization {{ token: \"{TOKEN}\" }}\n"));
    let case = Case::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(async_nats::ConnectOptions::with_token(TOKEN.into()).connect(server.url()))
        .expect("test client");

    let right = case.secret("token", &format!("{TOKEN}\n"));
    let config = case.config(
        "right.toml",
        &server.url(),
        &format!("token_file = \"{}\"", path(&right)),
    );
    serves(&config, &[], &client, &[TOKEN]);

    let wrong = case.secret("wrong-token", WRONG);
    let config = case.config(
        "wrong.toml",
        &server.url(),
        &format!("token_file = \"{}\"", path(&wrong)),
    );
    let error = refused(
        &config,
        &[],
        &["nats.token_file", path(&wrong), "authorization violation"],
        &[TOKEN, WRONG],
    );
    assert!(error.contains(&server.url()), "{error}");

    let config = case.config(
        "env.toml",
        &server.url(),
        "token_env = \"WEIR_TEST_NATS_TOKEN\"",
    );
    refused(
        &config,
        &[("WEIR_TEST_NATS_TOKEN", WRONG)],
        &["nats.token_env", "$WEIR_TEST_NATS_TOKEN"],
        &[TOKEN, WRONG],
    );

    let config = case.config("none.toml", &server.url(), "");
    refused(
        &config,
        &[],
        &["requires credentials", "gives none"],
        &[TOKEN],
    );
}

/// A user with a password from the environment connects; a wrong password
/// from a file is refused naming the user and the file.
#[test]
fn a_user_and_password_connect_and_a_wrong_password_is_refused() {
    const PASSWORD: &str = "pw-2d7e90c4b1";
    const WRONG: &str = "pw-wrong-c0ffee";
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users = [ {{ user: weir, password: \"{PASSWORD}\" }} ] }}\n"
    ));
    let case = Case::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(
            async_nats::ConnectOptions::with_user_and_password("weir".into(), PASSWORD.into())
                .connect(server.url()),
        )
        .expect("test client");

    let config = case.config(
        "right.toml",
        &server.url(),
        "user = \"weir\"\npassword_env = \"WEIR_TEST_NATS_PASSWORD\"",
    );
    serves(
        &config,
        &[("WEIR_TEST_NATS_PASSWORD", PASSWORD)],
        &client,
        &[PASSWORD],
    );

    let wrong = case.secret("password", WRONG);
    let config = case.config(
        "wrong.toml",
        &server.url(),
        &format!("user = \"weir\"\npassword_file = \"{}\"", path(&wrong)),
    );
    refused(
        &config,
        &[],
        &["nats.user \"weir\"", "nats.password_file", path(&wrong)],
        &[PASSWORD, WRONG],
    );
}

/// A user's nkey seed connects; the seed of another user is refused naming
/// the file; a file holding no seed at all is refused before connecting.
#[test]
fn an_nkey_seed_connects_and_another_seed_is_refused() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let stranger = nkeys::KeyPair::new_user().seed().expect("seed");
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    ));
    let case = Case::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(async_nats::ConnectOptions::with_nkey(seed.clone()).connect(server.url()))
        .expect("test client");

    let right = case.secret("user.nk", &format!("{seed}\n"));
    let config = case.config(
        "right.toml",
        &server.url(),
        &format!("nkey_seed_file = \"{}\"", path(&right)),
    );
    serves(&config, &[], &client, &[&seed]);

    let wrong = case.secret("stranger.nk", &stranger);
    let config = case.config(
        "wrong.toml",
        &server.url(),
        &format!("nkey_seed_file = \"{}\"", path(&wrong)),
    );
    refused(
        &config,
        &[],
        &[
            "nats.nkey_seed_file",
            path(&wrong),
            "authorization violation",
        ],
        &[&seed, &stranger],
    );

    let garbage = case.secret("garbage.nk", "SUnot-a-seed-but-secret");
    let config = case.config(
        "garbage.toml",
        &server.url(),
        &format!("nkey_seed_file = \"{}\"", path(&garbage)),
    );
    refused(
        &config,
        &[],
        &[
            "nats.nkey_seed_file",
            path(&garbage),
            "does not hold an nkey seed",
        ],
        &["not-a-seed-but-secret"],
    );
}

/// Decentralized auth: a server trusting an operator, its accounts resolved
/// from memory. A `.creds` file of a user of a known account connects (and
/// the host makes its dead-letter stream there: the account has JetStream);
/// a user of an account the operator never signed is refused naming the
/// file; a file that is no creds file is refused before connecting.
#[test]
fn a_creds_file_connects_and_a_strangers_is_refused() {
    let operator = Operator::new();
    let server = NatsServer::start_with_config(&operator.server_config());
    let case = Case::new();
    let host = operator.user("weir-host");
    let tester = operator.user("tester");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(
            async_nats::ConnectOptions::with_credentials(&tester.text)
                .expect("creds parse")
                .connect(server.url()),
        )
        .expect("test client");

    let right = case.secret("host.creds", &host.text);
    let config = case.config(
        "right.toml",
        &server.url(),
        &format!("creds_file = \"{}\"", path(&right)),
    );
    serves(&config, &[], &client, &[&host.seed, &host.jwt]);
    assert_eq!(rt.block_on(stream_count(&client, "WEIR_DLQ")), 0);

    let stranger = operator.stranger("stranger");
    let wrong = case.secret("stranger.creds", &stranger.text);
    let config = case.config(
        "wrong.toml",
        &server.url(),
        &format!("creds_file = \"{}\"", path(&wrong)),
    );
    refused(
        &config,
        &[],
        &["nats.creds_file", path(&wrong)],
        &[&stranger.seed, &stranger.jwt, &host.seed],
    );

    let torn = case.secret("torn.creds", &host.text[..host.text.len() / 3]);
    let config = case.config(
        "torn.toml",
        &server.url(),
        &format!("creds_file = \"{}\"", path(&torn)),
    );
    refused(
        &config,
        &[],
        &["nats.creds_file", path(&torn)],
        &[&host.seed, &host.jwt[..40]],
    );
}

/// `tls_first` reaches a `handshake_first` server; without its CA the
/// certificate is refused naming `tls_ca_file`; `tls_first` against a server
/// that starts in plain text, and no `tls_first` against one that waits for
/// TLS, are both refused saying what to set.
#[test]
fn tls_first_connects_to_a_handshake_first_server_and_mismatches_are_refused() {
    let tls = Tls::new();
    let first = NatsServer::start_with_config(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  handshake_first: true\n}}\n",
        tls.path("server.pem").display(),
        tls.path("server-key.pem").display(),
    ));
    let plain = NatsServer::start();
    let case = Case::new();
    let ca = tls.path("ca.pem");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(
            async_nats::ConnectOptions::new()
                .add_root_certificates(ca.clone())
                .tls_first()
                .connect(first.url()),
        )
        .expect("test client over TLS first");

    let with_ca = format!("tls_first = true\ntls_ca_file = \"{}\"", path(&ca));
    let config = case.config("right.toml", &first.url(), &with_ca);
    serves(&config, &[], &client, &[]);

    let config = case.config("no-ca.toml", &first.url(), "tls_first = true");
    refused(&config, &[], &["not trusted", "nats.tls_ca_file"], &[]);

    let config = case.config("plain.toml", &plain.url(), &with_ca);
    refused(&config, &[], &["nats.tls_first", "handshake_first"], &[]);

    let config = case.config(
        "not-first.toml",
        &first.url(),
        &format!("tls_ca_file = \"{}\"", path(&ca)),
    );
    refused(
        &config,
        &[],
        &["without a word", "set nats.tls_first = true"],
        &[],
    );
}
