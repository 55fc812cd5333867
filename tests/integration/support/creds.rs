//! NATS decentralized auth for one test: an operator, its system account and
//! one account with JetStream, minted here as NATS JWTs (ed25519 over the
//! JWS signing input, `alg: ed25519-nkey`, as nats-server and `nsc` do), for a
//! server with the memory resolver; `.creds` files for users of that account
//! and for a stranger signed by an account the server does not know.
//!
//! No Rust crate mints operator JWTs and is kept up (nats-jwt stops at
//! accounts and users), and the format is small: a header, claims with a
//! `nats` object, a signature by the issuer's nkey.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// An operator with a system account and one account for the test's users.
pub struct Operator {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
}

/// A user's `.creds` file and the secrets in it, for tests to look for.
pub struct UserCreds {
    /// The file's text, as `nsc generate creds` writes it.
    pub text: String,
    pub jwt: String,
    pub seed: String,
}

impl Operator {
    pub fn new() -> Self {
        Self {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
        }
    }

    /// The server config lines: trust the operator, use the system account,
    /// and resolve both accounts from memory.
    pub fn server_config(&self) -> String {
        let system = self.system.public_key();
        let account = self.account.public_key();
        let operator_jwt = encode(
            &self.operator,
            &self.operator.public_key(),
            "weir-test-operator",
            json!({ "type": "operator", "version": 2, "system_account": system }),
        );
        let system_jwt = account_jwt(&self.operator, &self.system, "SYS", false);
        let account_jwt = account_jwt(&self.operator, &self.account, "WEIR", true);
        format!(
            "operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {system}: {system_jwt}\n  {account}: {account_jwt}\n}}\n"
        )
    }

    /// A new user of the test account.
    pub fn user(&self, name: &str) -> UserCreds {
        user_creds(&self.account, name)
    }

    /// A user signed by an account this operator never vouched for.
    pub fn stranger(&self, name: &str) -> UserCreds {
        user_creds(&KeyPair::new_account(), name)
    }
}

fn account_jwt(operator: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
    }
    encode(
        operator,
        &account.public_key(),
        name,
        json!({
            "type": "account", "version": 2, "limits": limits,
            "default_permissions": { "pub": {}, "sub": {} },
        }),
    )
}

fn user_creds(account: &KeyPair, name: &str) -> UserCreds {
    let user = KeyPair::new_user();
    let jwt = encode(
        account,
        &user.public_key(),
        name,
        json!({
            "type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1,
        }),
    );
    let seed = user.seed().expect("a new user key has a seed");
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    UserCreds { text, jwt, seed }
}

/// A NATS JWT: `nats` claims about `subject`, issued and signed by `issuer`;
/// its `jti` is the base32 hash of the claims without it, as nats-jwt does.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let mut claims = json!({
        "iat": now, "iss": issuer.public_key(), "name": name, "sub": subject, "nats": nats,
    });
    let hash = Sha256::digest(claims.to_string().as_bytes());
    claims["jti"] = json!(BASE32_NOPAD.encode(&hash));
    let header = json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let input = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(input.as_bytes()).expect("an issuer key signs");
    format!("{input}.{}", BASE64URL_NOPAD.encode(&signature))
}
