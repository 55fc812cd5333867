//! Per-plugin auth: producer tokens (a matrix of bad ones, valid ones from
//! three algorithms and from another library, key rotation), grants bound to
//! the wasm hash, and the host reaching a NATS server over TLS with
//! credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use weir_host::auth::config::{KeyAlg, KeyConfig};
use weir_host::auth::grant::{self, GrantClaims, GrantSpec};
use weir_host::auth::signing::{SigningKey, generate};
use weir_host::auth::token::{TokenSpec, issue};
use weir_host::bundle::Bundle;
use weir_host::config::HostConfig;
use weir_host::host::Host;

use crate::support::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Key pairs made for one test: `weir` signs grants; `producers` has two
/// keys (rotation) and an RSA one; `billing` is trusted, but not by whoami.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("key dir");
        for (alg, kid) in [
            (KeyAlg::EdDsa, "ops-1"),
            (KeyAlg::Es256, "prod-1"),
            (KeyAlg::EdDsa, "prod-2"),
            (KeyAlg::Rs256, "prod-rsa"),
            (KeyAlg::EdDsa, "billing-1"),
        ] {
            generate(alg, dir.path(), kid).expect("generate key");
        }
        Self { dir }
    }

    fn public(&self, kid: &str) -> PathBuf {
        self.dir.path().join(format!("{kid}.pub.pem"))
    }

    fn signing(&self, kid: &str) -> SigningKey {
        SigningKey::load(&self.dir.path().join(format!("{kid}.key.pem")), None)
            .expect("signing key")
    }

    fn trusted(&self, kids: &[(&str, &str, KeyAlg)]) -> Vec<KeyConfig> {
        kids.iter()
            .map(|(issuer, kid, alg)| KeyConfig {
                issuer: issuer.to_string(),
                alg: *alg,
                file: Some(self.public(kid)),
                jwks: None,
                kid: None,
            })
            .collect()
    }

    fn all_trusted(&self) -> Vec<KeyConfig> {
        self.trusted(&[
            ("weir", "ops-1", KeyAlg::EdDsa),
            ("producers", "prod-1", KeyAlg::Es256),
            ("producers", "prod-2", KeyAlg::EdDsa),
            ("producers", "prod-rsa", KeyAlg::Rs256),
            ("billing", "billing-1", KeyAlg::EdDsa),
        ])
    }
}

fn token(key: &SigningKey, iss: &str, aud: &str, claims: &[(&str, &str)]) -> String {
    issue(
        key,
        &TokenSpec {
            issuer: iss.into(),
            subject: "svc-orders".into(),
            audience: aud.into(),
            ttl: std::time::Duration::from_secs(600),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    )
    .expect("issue token")
}

/// A token signed with `key` over arbitrary claims and header fields.
fn custom(key: &SigningKey, claims: serde_json::Value) -> String {
    key.sign(&key.header(), &claims).expect("sign")
}

fn claims(iss: &str, aud: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": iss, "sub": "svc-orders", "aud": aud,
        "iat": now(), "exp": now() + 600, "scope": "whoami:read",
    })
}

/// A token made without jsonwebtoken: Ed25519 over the JWS signing input
/// with ed25519-dalek and base64url by hand, as any other library would.
fn foreign_ed25519_token(keys: &Keys, kid: &str) -> String {
    use ed25519_dalek::Signer as _;
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    let pem =
        std::fs::read_to_string(keys.dir.path().join(format!("{kid}.key.pem"))).expect("read key");
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("ed25519 key");
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let mut body = claims("producers", "whoami");
    body["sub"] = "svc-foreign".into();
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(body.to_string())
    );
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature.to_bytes()))
}

fn split(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// A whoami bundle requiring the scope `whoami:read`.
fn whoami_bundle(into: &Path) -> PathBuf {
    bundle_copy("whoami", into, |m| {
        format!("{m}[auth.required_claims]\nscope = \"whoami:read\"\n")
    })
}

fn auth_config(server: &NatsServer, bundles: &[PathBuf], keys: &[KeyConfig]) -> HostConfig {
    let mut config = host_config(server, bundles);
    config.auth.keys = keys.to_vec();
    config
}

async fn publish_with(
    client: &async_nats::Client,
    subject: &str,
    headers: &[(&str, &str)],
    payload: &str,
) {
    let mut map = async_nats::HeaderMap::new();
    for (k, v) in headers {
        map.append(*k, *v);
    }
    client
        .publish_with_headers(subject.to_owned(), map, payload.to_owned().into())
        .await
        .expect("publish");
}

/// Every bad token is dead-lettered as `unauthorized`, at the first attempt,
/// with its reason, without the token; valid tokens from three algorithms,
/// two kids of one issuer and a token made by another library reach the
/// handler as its principal, with the token gone from its headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_tokens_are_verified_per_event() {
    let server = NatsServer::start();
    let client = server.client().await;
    let keys = Keys::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = auth_config(&server, &[whoami_bundle(dir.path())], &keys.all_trusted());
    let host = Host::start(&config).await.expect("host starts");
    assert_eq!(host.plugins().len(), 1, "refused: {:?}", host.refused());

    let mut dlq = client.subscribe("weir.dlq.whoami").await.expect("sub");
    let mut seen = client.subscribe("auth.seen.>").await.expect("sub");
    client.flush().await.expect("flush");

    let p1 = keys.signing("prod-1");
    let p2 = keys.signing("prod-2");
    let scope = [("scope", "whoami:read")];
    let good = token(&p2, "producers", "whoami", &scope);
    let parts = split(&good);

    let none_token = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT","kid":"prod-2"}"#),
        B64.encode(claims("producers", "whoami").to_string())
    );
    let hs256_with_public_key = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("prod-1".into());
        let secret = std::fs::read(keys.public("prod-1")).expect("public key");
        jsonwebtoken::encode(
            &header,
            &claims("producers", "whoami"),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("hs256")
    };
    let mut expired = claims("producers", "whoami");
    expired["exp"] = (now() - 3600).into();
    let mut early = claims("producers", "whoami");
    early["nbf"] = (now() + 3600).into();
    let mut unknown_kid = p2.header();
    unknown_kid.kid = Some("retired-9".into());
    let tampered_payload = {
        let mut body = claims("producers", "whoami");
        body["sub"] = "svc-admin".into();
        format!("{}.{}.{}", parts[0], B64.encode(body.to_string()), parts[2])
    };
    let tampered_signature = {
        let mut sig = B64.decode(&parts[2]).expect("signature");
        sig[10] ^= 0x01;
        format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig))
    };
    let truncated = good[..good.len() - 30].to_owned();
    let grant_as_token = {
        let c = GrantClaims {
            iss: "weir".into(),
            sub: "whoami".into(),
            aud: "whoami".into(),
            iat: now(),
            exp: now() + 600,
            nbf: None,
            jti: None,
            wasm_sha256: "00".into(),
            subscribe: vec![">".into()],
            publish: vec![">".into()],
            max_timeout_ms: None,
            max_memory_mb: None,
        };
        grant::sign_claims(&keys.signing("ops-1"), &c).expect("grant")
    };

    let bearer = |t: &str| format!("Bearer {t}");
    // (case, Authorization values, a fragment of the expected reason)
    let bad: Vec<(&str, Vec<String>, &str)> = vec![
        ("alg-none", vec![bearer(&none_token)], "alg not accepted"),
        (
            "hs256-public-key",
            vec![bearer(&hs256_with_public_key)],
            "the header says HS256, but key \"prod-1\" is pinned to ES256",
        ),
        ("expired", vec![bearer(&custom(&p2, expired))], "expired at"),
        (
            "not-yet-valid",
            vec![bearer(&custom(&p2, early))],
            "not yet valid",
        ),
        (
            "wrong-audience",
            vec![bearer(&token(&p2, "producers", "enrich-order", &scope))],
            "wrong audience",
        ),
        (
            "wrong-issuer",
            vec![bearer(&token(&p2, "billing", "whoami", &scope))],
            "wrong issuer: iss is not \"producers\"",
        ),
        (
            "issuer-not-accepted",
            vec![bearer(&token(
                &keys.signing("billing-1"),
                "billing",
                "whoami",
                &scope,
            ))],
            "key \"billing-1\" belongs to issuer \"billing\"",
        ),
        (
            "unknown-kid",
            vec![bearer(
                &p2.sign(&unknown_kid, &claims("producers", "whoami"))
                    .expect("sign"),
            )],
            "unknown kid \"retired-9\"",
        ),
        (
            "tampered-payload",
            vec![bearer(&tampered_payload)],
            "bad signature",
        ),
        (
            "tampered-signature",
            vec![bearer(&tampered_signature)],
            "bad signature",
        ),
        ("truncated", vec![bearer(&truncated)], "bad signature"),
        (
            "not-base64",
            vec![bearer("a$b.c%d.e&f")],
            "malformed token: not base64url",
        ),
        ("empty-bearer", vec!["Bearer ".into()], "empty bearer token"),
        (
            "wrong-scheme",
            vec!["Basic d2Vpcjpwdw==".into()],
            "wrong scheme",
        ),
        (
            "oversized",
            vec![bearer(&"a".repeat(10_000))],
            "oversized Authorization header",
        ),
        (
            "other-plugin",
            vec![bearer(&token(&p1, "producers", "echo", &scope))],
            "wrong audience: aud does not name \"whoami\"",
        ),
        ("missing", vec![], "no Authorization header"),
        (
            "two-headers",
            vec![bearer(&good), bearer(&good)],
            "more than one Authorization header",
        ),
        (
            "scope-missing",
            vec![bearer(&token(&p2, "producers", "whoami", &[]))],
            "missing claim \"scope\"",
        ),
        (
            "scope-wrong",
            vec![bearer(&token(
                &p2,
                "producers",
                "whoami",
                &[("scope", "whoami:write")],
            ))],
            "claim \"scope\" does not hold the required \"whoami:read\"",
        ),
        (
            "grant-as-token",
            vec![bearer(&grant_as_token)],
            "wrong token type",
        ),
    ];
    assert!(bad.len() >= 15);
    for (case, values, _) in &bad {
        let mut headers: Vec<(&str, &str)> = values
            .iter()
            .map(|v| ("Authorization", v.as_str()))
            .collect();
        headers.push(("trace", case));
        publish_with(&client, &format!("auth.whoami.{case}"), &headers, "{}").await;
    }

    let rsa = token(&keys.signing("prod-rsa"), "producers", "whoami", &scope);
    let good_cases = [
        (
            "es256-kid-1",
            token(&p1, "producers", "whoami", &scope),
            "svc-orders",
        ),
        ("eddsa-kid-2", good.clone(), "svc-orders"),
        ("rs256", rsa, "svc-orders"),
        (
            "foreign-library",
            foreign_ed25519_token(&keys, "prod-2"),
            "svc-foreign",
        ),
    ];
    for (case, t, _) in &good_cases {
        let value = format!("Bearer {t}");
        publish_with(
            &client,
            &format!("auth.whoami.{case}"),
            &[("authorization", value.as_str()), ("trace", case)],
            "{}",
        )
        .await;
    }

    let dead = collect(&mut dlq, bad.len()).await;
    let by_case: BTreeMap<String, &async_nats::Message> = dead
        .iter()
        .map(|m| {
            let subject = header(m, "Weir-Original-Subject").expect("original subject");
            (subject.trim_start_matches("auth.whoami.").to_owned(), m)
        })
        .collect();
    for (case, values, reason) in &bad {
        let m = by_case
            .get(*case)
            .unwrap_or_else(|| panic!("{case}: not dead-lettered: {:?}", by_case.keys()));
        assert_eq!(
            header(m, "Weir-Error-Kind").as_deref(),
            Some("unauthorized"),
            "{case}"
        );
        assert_eq!(header(m, "Weir-Attempts").as_deref(), Some("1"), "{case}");
        let error = header(m, "Weir-Error").expect("Weir-Error");
        assert!(error.contains(reason), "{case}: {error:?} lacks {reason:?}");
        assert_eq!(
            header(m, "Authorization"),
            None,
            "{case}: token dead-lettered"
        );
        assert_eq!(header(m, "trace").as_deref(), Some(*case), "{case}");
        for v in values {
            let secret = v.trim_start_matches("Bearer ");
            if secret.len() > 20 {
                let headers = format!("{:?}", m.headers);
                assert!(
                    !headers.contains(secret),
                    "{case}: token in the dead letter"
                );
            }
        }
    }

    let outputs = collect(&mut seen, good_cases.len()).await;
    let by_case: BTreeMap<String, serde_json::Value> = outputs
        .iter()
        .map(|m| {
            (
                m.subject.trim_start_matches("auth.seen.").to_owned(),
                serde_json::from_slice(&m.payload).expect("whoami reports JSON"),
            )
        })
        .collect();
    for (case, _, subject) in &good_cases {
        let report = by_case
            .get(*case)
            .unwrap_or_else(|| panic!("{case}: no output: {:?}", by_case.keys()));
        let p = &report["principal"];
        assert_eq!(p["subject"], *subject, "{case}: {report}");
        assert_eq!(p["issuer"], "producers", "{case}");
        assert_eq!(p["claims"]["scope"], "whoami:read", "{case}");
        let headers = report["headers"].as_array().expect("headers");
        assert!(
            headers.iter().all(|h| !h[0]
                .as_str()
                .unwrap_or("")
                .eq_ignore_ascii_case("authorization")),
            "{case}: the handler saw the token: {report}"
        );
        assert!(headers.iter().any(|h| h[0] == "trace"), "{case}");
    }
    host.stop().await.expect("clean stop");

    // Rotation: a host that no longer trusts prod-1 refuses its tokens and
    // still takes prod-2's.
    let rotated = auth_config(
        &server,
        &[whoami_bundle(&dir.path().join("rotated"))],
        &keys.trusted(&[("producers", "prod-2", KeyAlg::EdDsa)]),
    );
    let host = Host::start(&rotated).await.expect("host starts");
    assert_eq!(host.plugins().len(), 1, "refused: {:?}", host.refused());
    let old = format!("Bearer {}", token(&p1, "producers", "whoami", &scope));
    let new = format!("Bearer {}", token(&p2, "producers", "whoami", &scope));
    publish_with(
        &client,
        "auth.whoami.old-kid",
        &[("Authorization", &old)],
        "{}",
    )
    .await;
    publish_with(
        &client,
        "auth.whoami.new-kid",
        &[("Authorization", &new)],
        "{}",
    )
    .await;
    let dead = collect(&mut dlq, 1).await;
    assert_eq!(
        header(&dead[0], "Weir-Original-Subject").as_deref(),
        Some("auth.whoami.old-kid")
    );
    let error = header(&dead[0], "Weir-Error").expect("error");
    assert!(error.contains("unknown kid \"prod-1\""), "{error}");
    let out = collect(&mut seen, 1).await;
    assert_eq!(out[0].subject.as_str(), "auth.seen.new-kid");
    host.stop().await.expect("clean stop");
}

fn sign_grant(keys: &Keys, bundle_dir: &Path, publish: &[&str]) -> GrantClaims {
    let bundle = Bundle::load(bundle_dir, 4096).expect("bundle");
    grant::sign(
        &keys.signing("ops-1"),
        &bundle,
        &GrantSpec {
            issuer: "weir".into(),
            subscribe: bundle
                .manifest
                .subscribe
                .iter()
                .map(|s| s.subject.clone())
                .collect(),
            publish: publish.iter().map(|s| s.to_string()).collect(),
            max_timeout_ms: Some(5_000),
            max_memory_mb: Some(64),
            ttl: std::time::Duration::from_secs(3600),
        },
    )
    .expect("sign grant")
}

/// Write a grant with arbitrary claims (expired, too narrow, ...).
fn write_grant(key: &SigningKey, bundle_dir: &Path, edit: impl FnOnce(&mut GrantClaims)) {
    let bundle = Bundle::load(bundle_dir, 4096).expect("bundle");
    let mut c = GrantClaims {
        iss: "weir".into(),
        sub: bundle.manifest.name.clone(),
        aud: "weir:grant".into(),
        iat: now(),
        exp: now() + 3600,
        nbf: None,
        jti: None,
        wasm_sha256: bundle.sha256_hex(),
        subscribe: vec![">".into()],
        publish: vec![">".into()],
        max_timeout_ms: None,
        max_memory_mb: None,
    };
    edit(&mut c);
    let jwt = grant::sign_claims(key, &c).expect("sign");
    std::fs::write(bundle_dir.join("grant.jwt"), jwt).expect("write grant");
}

/// With `require_grants`, each bundle whose grant is missing, for another
/// wasm, expired, signed by a producer key, too narrow for its
/// subscriptions or below its limits is refused with the reason; the granted
/// ones run, and publish only where their grant says (never to reserved
/// subjects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_enforced_at_load_and_on_publish() {
    let server = NatsServer::start();
    let client = server.client().await;
    let keys = Keys::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path();
    let ops = keys.signing("ops-1");

    // Granted: echo may publish only to other.>, whoami to anything.
    let echo = bundle_copy("echo", plugins, |m| m);
    sign_grant(&keys, &echo, &["other.>"]);
    let whoami = bundle_copy("whoami", plugins, |m| {
        m.replace("[auth]\nissuers = [\"producers\"]\n", "")
    });
    sign_grant(&keys, &whoami, &[">"]);

    // Refused, one reason each.
    let staging = tempfile::tempdir().expect("tempdir");
    let refused = |name: &str| {
        let copy = bundle_copy("trivial", &staging.path().join(name), |m| {
            m.replace("name = \"trivial\"", &format!("name = \"{name}\""))
        });
        let dst = plugins.join(name);
        std::fs::rename(copy, &dst).expect("move bundle");
        dst
    };
    refused("no-grant");
    let swapped = refused("swapped-wasm");
    write_grant(&ops, &swapped, |_| {});
    std::fs::copy(
        bundle("echo").join("echo.wasm"),
        swapped.join("trivial.wasm"),
    )
    .expect("swap wasm");
    write_grant(&ops, &refused("expired"), |c| {
        c.iat = now() - 7200;
        c.exp = now() - 3600;
    });
    write_grant(&keys.signing("prod-2"), &refused("producer-signed"), |c| {
        c.iss = "producers".into()
    });
    write_grant(&ops, &refused("narrow"), |c| {
        c.subscribe = vec!["nothing.here".into()]
    });
    write_grant(&ops, &refused("capped"), |c| c.max_timeout_ms = Some(1));

    let mut config = auth_config(&server, &[], &keys.all_trusted());
    config.plugins.dirs = vec![plugins.to_path_buf()];
    config.auth.require_grants = true;
    let host = Host::start(&config).await.expect("host starts");
    let mut loaded: Vec<_> = host.plugins().iter().map(|p| p.name().to_owned()).collect();
    loaded.sort();
    assert_eq!(loaded, ["echo", "whoami"], "refused: {:?}", host.refused());
    let reason = |name: &str| {
        host.refused()
            .iter()
            .find(|r| r.path.ends_with(name))
            .map(|r| r.reason.clone())
            .unwrap_or_else(|| panic!("{name} not refused: {:?}", host.refused()))
    };
    for (name, expected) in [
        ("no-grant", "grant.jwt: missing"),
        ("swapped-wasm", "wasm sha256 mismatch"),
        ("expired", "grant.jwt: expired at"),
        ("producer-signed", "belongs to issuer \"producers\""),
        (
            "narrow",
            "subscribe[0].subject \"bench.trivial\" is outside",
        ),
        ("capped", "limits.timeout_ms"),
    ] {
        let r = reason(name);
        assert!(r.contains(expected), "{name}: {r:?} lacks {expected:?}");
    }

    let mut dlq = client.subscribe("weir.dlq.>").await.expect("sub");
    let mut seen = client.subscribe("auth.seen.>").await.expect("sub");
    client.flush().await.expect("flush");
    // echo's output (demo.echoed.x) is outside its grant.
    client
        .publish("demo.echo.x", "hi".into())
        .await
        .expect("publish");
    for target in ["$JS.API.STREAM.DELETE.WEIR_DLQ", "weir.dlq.echo"] {
        let payload = serde_json::json!({ "publish": target }).to_string();
        client
            .publish("auth.whoami.reserved", payload.into())
            .await
            .expect("publish");
    }
    client
        .publish("auth.whoami.fine", "{}".into())
        .await
        .expect("publish");

    let out = collect(&mut seen, 1).await;
    assert_eq!(out[0].subject.as_str(), "auth.seen.fine");
    let dead = collect(&mut dlq, 3).await;
    for m in &dead {
        assert_eq!(
            header(m, "Weir-Error-Kind").as_deref(),
            Some("forbidden-publish"),
            "{:?}",
            header(m, "Weir-Error")
        );
        assert_eq!(header(m, "Weir-Attempts").as_deref(), Some("1"));
    }
    let errors: Vec<String> = dead
        .iter()
        .map(|m| header(m, "Weir-Error").expect("error"))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("outside the plugin's grant")),
        "{errors:?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("is reserved") || e.contains("dead-letter queue"))
            .count(),
        2,
        "{errors:?}"
    );
    host.stop().await.expect("clean stop");
}

/// A plugin loads with its grant; once its .wasm is swapped for another, the
/// same bundle is refused — with or without require_grants, since a present
/// grant is always enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_wasm_voids_the_grant() {
    let server = NatsServer::start();
    let keys = Keys::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = bundle_copy("echo", dir.path(), |m| m);
    sign_grant(&keys, &echo, &["demo.echoed.>"]);
    let config = auth_config(&server, std::slice::from_ref(&echo), &keys.all_trusted());

    let host = Host::start(&config).await.expect("host starts");
    assert_eq!(host.plugins().len(), 1, "refused: {:?}", host.refused());
    let reply = server
        .client()
        .await
        .request("demo.echo.granted", "yes".into())
        .await
        .expect("the granted plugin answers");
    assert_eq!(reply.payload, "yes".as_bytes());
    host.stop().await.expect("clean stop");

    std::fs::copy(
        bundle("trivial").join("trivial.wasm"),
        echo.join("echo.wasm"),
    )
    .expect("swap the wasm");
    let host = Host::start(&config).await.expect("host starts");
    assert!(host.plugins().is_empty());
    let r = &host.refused()[0].reason;
    assert!(
        r.contains("grant.jwt: wasm sha256 mismatch") && r.contains("echo.wasm"),
        "{r}"
    );
    host.stop().await.expect("clean stop");
}

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(WEIR)
        .args(args)
        .output()
        .expect("run the weir binary")
}

/// The operator's commands: keys gen, grant sign, grant verify (human and
/// JSON, valid and refused), token issue — and the host accepts the results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_signs_verifies_and_issues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keydir = dir.path().join("keys");
    let k = keydir.to_str().expect("utf-8 path");
    for (alg, kid) in [("ed25519", "ops-1"), ("es256", "prod-1")] {
        let out = weir(&["keys", "gen", "--alg", alg, "--out", k, "--kid", kid]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("[[auth.keys]]"), "{text}");
    }
    let echo = bundle_copy("echo", dir.path(), |m| m);
    let e = echo.to_str().expect("utf-8 path");
    let ops_key = format!("{k}/ops-1.key.pem");
    let out = weir(&[
        "grant",
        "sign",
        "--key",
        &ops_key,
        "--bundle",
        e,
        "--publish",
        "demo.echoed.>",
        "--max-timeout-ms",
        "2000",
        "--ttl",
        "1d",
    ]);
    assert!(out.status.success(), "{out:?}");

    let ops_pub = format!("{k}/ops-1.pub.pem");
    let out = weir(&["grant", "verify", e, "--key", &ops_pub]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("valid") && text.contains("may publish to:   demo.echoed.>"),
        "{text}"
    );

    // weir.toml trusting the ops key for grants: verify --config --json.
    let weir_toml = dir.path().join("weir.toml");
    std::fs::write(
        &weir_toml,
        format!(
            "[auth]\nrequire_grants = true\n[[auth.keys]]\nissuer = \"weir\"\nalg = \"EdDSA\"\nfile = \"{ops_pub}\"\n[[auth.keys]]\nissuer = \"producers\"\nalg = \"ES256\"\njwks = \"{k}/prod-1.jwks.json\"\n"
        ),
    )
    .expect("write weir.toml");
    let cfg = weir_toml.to_str().expect("utf-8");
    let out = weir(&["grant", "verify", e, "--config", cfg, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], true);
    assert_eq!(v["claims"]["sub"], "echo");
    assert_eq!(v["claims"]["max_timeout_ms"], 2000);

    // A grant signed by a producer key does not verify against weir.toml.
    let prod_key = format!("{k}/prod-1.key.pem");
    let out = weir(&[
        "grant",
        "sign",
        "--key",
        &prod_key,
        "--bundle",
        e,
        "--publish",
        "x",
        "--issuer",
        "producers",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = weir(&["grant", "verify", e, "--config", cfg, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], false);
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap_or("")
            .contains("wrong issuer"),
        "{v}"
    );

    // A minted token verifies for the audience it names, through the host.
    let out = weir(&[
        "token",
        "issue",
        "--key",
        &prod_key,
        "--sub",
        "svc-cli",
        "--aud",
        "whoami",
        "--iss",
        "producers",
        "--claim",
        "scope=whoami:read",
        "--ttl",
        "5m",
    ]);
    assert!(out.status.success(), "{out:?}");
    let jwt = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");

    let server = NatsServer::start();
    let mut config = HostConfig::load(&weir_toml).expect("weir.toml loads");
    config.auth.require_grants = false;
    let test_config = host_config(&server, &[whoami_bundle(dir.path())]);
    config.nats = test_config.nats;
    config.plugins = test_config.plugins;
    config.sandbox = test_config.sandbox;
    let host = Host::start(&config).await.expect("host starts");
    assert_eq!(host.plugins().len(), 1, "refused: {:?}", host.refused());
    let client = server.client().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {jwt}").as_str());
    let reply = client
        .request_with_headers("auth.whoami.cli", headers, "{}".into())
        .await
        .expect("reply");
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(v["principal"]["subject"], "svc-cli", "{v}");
    host.stop().await.expect("clean stop");
}

/// The host reaches a nats-server that requires TLS, verifies client
/// certificates and wants a user and password; the password comes from a
/// file and shows in no Debug output. Clients without the credentials are
/// turned away by the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_connects_over_tls_with_user_and_password() {
    let tls = Tls::new();
    let server = NatsServer::start_with_config(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\nauthorization {{\n  users = [ {{ user: \"weir\", password: \"pw-7c1d9e\" }} ]\n}}\n",
        tls.path("server.pem").display(),
        tls.path("server-key.pem").display(),
        tls.path("ca.pem").display(),
    ));
    let secrets = tempfile::tempdir().expect("secrets");
    let password_file = secrets.path().join("nats-password");
    std::fs::write(&password_file, "pw-7c1d9e\n").expect("write password");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = host_config(&server, &[bundle_copy("echo", dir.path(), |m| m)]);
    config.nats.user = Some("weir".into());
    config.nats.password_file = Some(password_file);
    config.nats.tls_ca_file = Some(tls.path("ca.pem"));
    config.nats.tls_cert_file = Some(tls.path("client.pem"));
    config.nats.tls_key_file = Some(tls.path("client-key.pem"));
    config.nats.require_tls = true;
    assert!(!format!("{config:?}").contains("pw-7c1d9e"));
    let host = Host::start(&config).await.expect("host starts over TLS");
    assert_eq!(host.plugins().len(), 1, "refused: {:?}", host.refused());

    let tls_client = || {
        async_nats::ConnectOptions::new()
            .add_root_certificates(tls.path("ca.pem"))
            .add_client_certificate(tls.path("client.pem"), tls.path("client-key.pem"))
            .require_tls(true)
    };
    let client = tls_client()
        .user_and_password("weir".into(), "pw-7c1d9e".into())
        .connect(server.url())
        .await
        .expect("a client with the credentials connects");
    let reply = client
        .request("demo.echo.tls", "over tls".into())
        .await
        .expect("the host answers");
    assert_eq!(reply.payload, "over tls".as_bytes());

    let wrong = tls_client()
        .user_and_password("weir".into(), "not-it".into())
        .connect(server.url())
        .await;
    assert!(wrong.is_err(), "a wrong password was let in");
    let plain = async_nats::ConnectOptions::new()
        .user_and_password("weir".into(), "pw-7c1d9e".into())
        .connect(server.url())
        .await;
    assert!(plain.is_err(), "a client without the CA was let in");
    host.stop().await.expect("clean stop");
}

/// Token auth to NATS, the token read from a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_connects_with_a_token_file() {
    let server = NatsServer::start_with_config("authorization {\n  token: \"tok-5a2f\"\n}\n");
    let secrets = tempfile::tempdir().expect("secrets");
    let token_file = secrets.path().join("nats-token");
    std::fs::write(&token_file, "tok-5a2f").expect("write token");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = host_config(&server, &[bundle_copy("echo", dir.path(), |m| m)]);
    config.nats.token_file = Some(token_file);
    let host = Host::start(&config).await.expect("host starts");
    let client = async_nats::ConnectOptions::with_token("tok-5a2f".into())
        .connect(server.url())
        .await
        .expect("client connects");
    let reply = client
        .request("demo.echo.token", "t".into())
        .await
        .expect("the host answers");
    assert_eq!(reply.payload, "t".as_bytes());
    assert!(
        async_nats::connect(server.url()).await.is_err(),
        "a client without the token was let in"
    );
    host.stop().await.expect("clean stop");
}
