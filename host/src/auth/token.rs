//! Producer tokens: a plugin with `[auth]` accepts only events whose
//! `Authorization: Bearer <jwt>` verifies. The header is taken out of the
//! event before anything else, so neither the handler nor the dead-letter
//! queue ever sees it; the verified claims become the event's principal.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

use super::config::{HostAuthConfig, PluginAuth};
use super::keys::KeySet;
use super::signing::SigningKey;
use super::verify::{Accept, Rejected, verify};
use crate::event::{Event, Failure, FailureKind, Headers, Principal};

/// The header producers put their token in.
pub const AUTHORIZATION: &str = "Authorization";

/// Verifies one plugin's producer tokens. Built once when the plugin loads.
#[derive(Debug)]
pub struct TokenVerifier {
    /// The host's trusted keys: a key of another issuer is then refused as
    /// such ("wrong issuer"), not as an unknown kid.
    keys: KeySet,
    issuers: Vec<String>,
    audience: String,
    leeway_s: u64,
    required_claims: BTreeMap<String, String>,
    max_token_bytes: usize,
}

impl TokenVerifier {
    /// The verifier for plugin `name`'s `[auth]`, with the host's trusted
    /// keys. Refuses an issuer no key in weir.toml belongs to.
    pub fn new(
        name: &str,
        auth: &PluginAuth,
        host: &HostAuthConfig,
        keys: &KeySet,
    ) -> Result<Self, String> {
        for issuer in &auth.issuers {
            if !keys.has_issuer(issuer) {
                return Err(format!(
                    "auth.issuers: no key in weir.toml's [[auth.keys]] belongs to issuer {issuer:?}"
                ));
            }
        }
        Ok(Self {
            keys: keys.clone(),
            issuers: auth.issuers.clone(),
            audience: auth.audience_for(name).to_owned(),
            leeway_s: auth.leeway_s(),
            required_claims: auth.required_claims.clone(),
            max_token_bytes: host.max_token_bytes,
        })
    }

    /// Take the token out of `event`'s headers (always, also when it fails)
    /// and verify it; on success the event carries its principal. A failure
    /// is `unauthorized`, with the reason and never the token.
    pub fn admit(&self, event: &mut Event) -> Result<(), Failure> {
        let token = take_authorization(&mut event.headers);
        match self.verify(token) {
            Ok(principal) => {
                event.principal = Some(principal);
                Ok(())
            }
            Err(rejected) => {
                event.principal = None;
                Err(Failure::new(
                    FailureKind::Unauthorized,
                    rejected.to_string(),
                ))
            }
        }
    }

    /// Verify the values of the `Authorization` headers an event carried.
    pub fn verify(&self, values: Vec<String>) -> Result<Principal, Rejected> {
        let value = match values.as_slice() {
            [] => return Err(Rejected::Missing),
            [one] => one,
            _ => return Err(Rejected::Repeated),
        };
        if value.len() > self.max_token_bytes {
            return Err(Rejected::TooLarge {
                bytes: value.len(),
                max: self.max_token_bytes,
            });
        }
        let value = value.trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Rejected::WrongScheme);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(Rejected::Empty);
        }
        let accept = Accept {
            issuers: Some(&self.issuers),
            audience: &self.audience,
            leeway_s: self.leeway_s,
            grant: false,
        };
        let (claims, _key) = verify(token, &self.keys, &accept)?;
        check_required(&claims, &self.required_claims)?;
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| Rejected::MissingClaim(name.to_owned()))
        };
        Ok(Principal {
            subject: text("sub")?,
            issuer: text("iss")?,
            claims: claims.to_string(),
        })
    }
}

/// Remove every `Authorization` header (any case) and return their values.
pub fn take_authorization(headers: &mut Headers) -> Vec<String> {
    let mut taken = Vec::new();
    headers.retain(|(name, value)| {
        if name.eq_ignore_ascii_case(AUTHORIZATION) {
            taken.push(value.clone());
            false
        } else {
            true
        }
    });
    taken
}

/// Each required claim must be present and hold the required value: equal
/// to a string claim or one of its space-separated words (OAuth `scope`),
/// an element of an array claim, or equal to a number or boolean claim.
fn check_required(
    claims: &serde_json::Value,
    required: &BTreeMap<String, String>,
) -> Result<(), Rejected> {
    for (claim, want) in required {
        let Some(value) = claims.get(claim) else {
            return Err(Rejected::MissingClaim(claim.clone()));
        };
        let holds = match value {
            serde_json::Value::String(s) => s == want || s.split_whitespace().any(|w| w == want),
            serde_json::Value::Array(items) => items.iter().any(|v| v.as_str() == Some(want)),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                serde_json::from_str::<serde_json::Value>(want).is_ok_and(|w| w == *value)
            }
            _ => false,
        };
        if !holds {
            return Err(Rejected::ClaimMismatch {
                claim: claim.clone(),
                required: want.clone(),
            });
        }
    }
    Ok(())
}

/// What `weir token issue` puts in a token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub ttl: Duration,
    /// Extra claims; values that parse as JSON are kept as JSON.
    pub claims: Vec<(String, String)>,
}

/// Mint a producer token (for tests and tools: real producers use any JWT library).
pub fn issue(key: &SigningKey, spec: &TokenSpec) -> anyhow::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let mut claims = serde_json::Map::new();
    for (name, value) in &spec.claims {
        if matches!(
            name.as_str(),
            "iss" | "sub" | "aud" | "exp" | "iat" | "nbf" | "jti"
        ) {
            bail!("--claim {name}: set it with its own option (or not at all)");
        }
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
        claims.insert(name.clone(), value);
    }
    claims.insert("iss".into(), spec.issuer.clone().into());
    claims.insert("sub".into(), spec.subject.clone().into());
    claims.insert("aud".into(), spec.audience.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + spec.ttl.as_secs().max(1)).into());
    claims.insert(
        "jti".into(),
        format!("{:032x}", rand::random::<u128>()).into(),
    );
    key.sign(&key.header(), &serde_json::Value::Object(claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::{KeyAlg, KeyConfig};

    fn setup(dir: &Path) -> (TokenVerifier, SigningKey) {
        let g = crate::auth::signing::generate(KeyAlg::EdDsa, dir, "p1").expect("keys");
        let host = HostAuthConfig {
            keys: vec![KeyConfig {
                issuer: "billing".into(),
                alg: KeyAlg::EdDsa,
                file: Some(g.public_key.clone()),
                jwks: None,
                kid: None,
            }],
            ..Default::default()
        };
        let keys = KeySet::load(&host).expect("keys load");
        let auth: PluginAuth = toml::from_str(
            "issuers = [\"billing\"]\n[required_claims]\nscope = \"orders:write\"\n",
        )
        .expect("auth");
        let verifier = TokenVerifier::new("enrich", &auth, &host, &keys).expect("verifier");
        (
            verifier,
            SigningKey::load(&g.private_key, None).expect("signing key"),
        )
    }

    use std::path::Path;

    fn spec(claims: &[(&str, &str)]) -> TokenSpec {
        TokenSpec {
            issuer: "billing".into(),
            subject: "svc-a".into(),
            audience: "enrich".into(),
            ttl: Duration::from_secs(60),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_valid_token_becomes_the_principal_and_leaves_the_headers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (verifier, key) = setup(dir.path());
        let token = issue(&key, &spec(&[("scope", "orders:read orders:write")])).expect("issue");
        let mut event = Event {
            id: "1".into(),
            subject: "orders.x".into(),
            payload: Default::default(),
            headers: vec![
                ("authorization".into(), format!("bearer {token}")),
                ("trace".into(), "t".into()),
            ],
            reply_to: None,
            attempt: 1,
            principal: None,
        };
        verifier.admit(&mut event).expect("admitted");
        assert_eq!(event.headers, vec![("trace".to_owned(), "t".to_owned())]);
        let p = event.principal.expect("principal");
        assert_eq!(
            (p.subject.as_str(), p.issuer.as_str()),
            ("svc-a", "billing")
        );
        let claims: serde_json::Value = serde_json::from_str(&p.claims).expect("json");
        assert_eq!(claims["scope"], "orders:read orders:write");
    }

    #[test]
    fn required_claims_and_header_shapes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (verifier, key) = setup(dir.path());
        let v = |values: Vec<String>| verifier.verify(values).unwrap_err();
        let no_scope = issue(&key, &spec(&[])).expect("issue");
        assert_eq!(
            v(vec![format!("Bearer {no_scope}")]),
            Rejected::MissingClaim("scope".into())
        );
        let read_only = issue(&key, &spec(&[("scope", "orders:read")])).expect("issue");
        assert!(matches!(
            v(vec![format!("Bearer {read_only}")]),
            Rejected::ClaimMismatch { .. }
        ));
        let listed = issue(&key, &spec(&[("scope", "[\"orders:write\"]")])).expect("issue");
        verifier
            .verify(vec![format!("Bearer {listed}")])
            .expect("array claim holds it");
        assert_eq!(v(vec![]), Rejected::Missing);
        assert_eq!(
            v(vec!["Bearer a".into(), "Bearer b".into()]),
            Rejected::Repeated
        );
        assert_eq!(v(vec!["Basic dXNlcjpwYXNz".into()]), Rejected::WrongScheme);
        assert_eq!(v(vec!["Bearer   ".into()]), Rejected::Empty);
    }
}
