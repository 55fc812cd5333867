//! The `[auth]` sections: in `weir.toml` (trusted keys, grant policy) and in
//! `plugin.toml` (what a plugin asks of producer tokens). Parsed strictly like
//! the rest of both files; errors name the file and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The audience of grants: a plugin may never ask producer tokens for it.
pub const GRANT_AUDIENCE: &str = "weir:grant";

/// `[auth]` in weir.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostAuthConfig {
    /// Load no plugin without a valid `grant.jwt` in its bundle. A grant that
    /// is present is verified and enforced either way.
    pub require_grants: bool,
    /// Issuers whose keys may sign grants. Producer keys (those of other
    /// issuers) can never grant a plugin anything.
    pub grant_issuers: Vec<String>,
    /// The longest `Authorization` header accepted, in bytes: a bound on the
    /// work an unauthenticated producer can make the host do.
    pub max_token_bytes: usize,
    /// Trusted public keys: `[[auth.keys]]`.
    pub keys: Vec<KeyConfig>,
}

impl Default for HostAuthConfig {
    fn default() -> Self {
        Self {
            require_grants: false,
            grant_issuers: vec!["weir".into()],
            max_token_bytes: 8 * 1024,
            keys: Vec::new(),
        }
    }
}

/// One `[[auth.keys]]` entry: a PEM public key, or a JWKS file, trusted for
/// one issuer with one algorithm. The algorithm is pinned here, never read
/// from a token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The `iss` that tokens verified by this key must carry.
    pub issuer: String,
    /// `EdDSA` (Ed25519), `ES256` (P-256) or `RS256` (RSA, 2048 bits or more).
    pub alg: KeyAlg,
    /// A PEM public key (SubjectPublicKeyInfo, or PKCS#1 for RSA).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`): every key in it needs a `kid`.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// The key id tokens name in their header. For `file`, default: the file
    /// name without `.pem` and `.pub` (what `weir keys gen` writes). For
    /// `jwks`, trust only the key with this id.
    #[serde(default)]
    pub kid: Option<String>,
}

/// The signature algorithms weir accepts. HMAC is left out on purpose: a
/// shared secret in a host's config could mint tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum KeyAlg {
    #[serde(rename = "EdDSA", alias = "ed25519")]
    EdDsa,
    #[serde(rename = "ES256", alias = "es256")]
    Es256,
    #[serde(rename = "RS256", alias = "rs256")]
    Rs256,
}

impl KeyAlg {
    /// The JOSE name, as in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[auth]` in plugin.toml: the plugin accepts only events carrying a valid
/// producer token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginAuth {
    /// Issuers whose tokens are accepted; each needs a key in weir.toml.
    pub issuers: Vec<String>,
    /// The `aud` tokens must carry; default: the plugin's name.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in milliseconds (rounded up
    /// to whole seconds, the unit of JWT times).
    #[serde(default = "default_leeway_ms")]
    pub leeway_ms: u64,
    /// Claims the token must carry, with a value: a string claim must equal
    /// it or hold it as one of its space-separated words (OAuth `scope`), an
    /// array claim must hold it.
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
}

fn default_leeway_ms() -> u64 {
    30_000
}

/// Longest clock leeway: past it a token's `exp` means little.
const MAX_LEEWAY_MS: u64 = 10 * 60 * 1000;

impl PluginAuth {
    /// The audience in force for plugin `name`.
    pub fn audience_for<'a>(&'a self, name: &'a str) -> &'a str {
        self.audience.as_deref().unwrap_or(name)
    }

    pub fn leeway_s(&self) -> u64 {
        self.leeway_ms.div_ceil(1000)
    }

    /// Checks on plugin.toml's `[auth]`; `file` is the manifest.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, msg: String| Err(ConfigError::new(file, Some(field), msg));
        if self.issuers.is_empty() {
            return err("auth.issuers", "name at least one issuer".into());
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if issuer.trim().is_empty() {
                return err(&format!("auth.issuers[{i}]"), "must not be empty".into());
            }
        }
        if let Some(aud) = &self.audience {
            if aud.trim().is_empty() {
                return err("auth.audience", "must not be empty".into());
            }
            if aud.starts_with("weir:") {
                return err(
                    "auth.audience",
                    format!("{aud:?}: audiences starting with \"weir:\" are the host's (grants)"),
                );
            }
        }
        if self.leeway_ms > MAX_LEEWAY_MS {
            return err(
                "auth.leeway_ms",
                format!("at most {MAX_LEEWAY_MS} (10 minutes)"),
            );
        }
        for name in self.required_claims.keys() {
            if name.is_empty() {
                return err("auth.required_claims", "a claim name is empty".into());
            }
        }
        Ok(())
    }
}

impl HostAuthConfig {
    /// Checks on weir.toml's `[auth]` that need no file reads; `file` is weir.toml.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let err = |field: String, msg: String| Err(ConfigError::new(file, Some(&field), msg));
        if self.require_grants && self.grant_issuers.is_empty() {
            return err(
                "auth.grant_issuers".into(),
                "require_grants needs at least one grant issuer".into(),
            );
        }
        if !(256..=64 * 1024).contains(&self.max_token_bytes) {
            return err(
                "auth.max_token_bytes".into(),
                "must be between 256 and 65536".into(),
            );
        }
        for (i, key) in self.keys.iter().enumerate() {
            let field = |f: &str| format!("auth.keys[{i}].{f}");
            if key.issuer.trim().is_empty() {
                return err(field("issuer"), "must not be empty".into());
            }
            match (&key.file, &key.jwks) {
                (Some(_), Some(_)) => {
                    return err(field("file"), "give one of file and jwks, not both".into());
                }
                (None, None) => {
                    return err(
                        field("file"),
                        "give the key as file (PEM) or jwks (a JWKS file)".into(),
                    );
                }
                _ => {}
            }
            if let Some(kid) = &key.kid
                && !is_kid(kid)
            {
                return err(
                    field("kid"),
                    format!("{kid:?}: use 1-128 of A-Z, a-z, 0-9, '.', '_' and '-'"),
                );
            }
        }
        Ok(())
    }
}

/// Key ids end up in file names (`weir keys gen`): keep them to a safe alphabet.
pub fn is_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 128
        && !kid.starts_with('.')
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> Result<HostAuthConfig, String> {
        let c: HostAuthConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate(Path::new("weir.toml"))
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn host_auth_parses_and_checks_keys() {
        let c = host(
            "require_grants = true\n[[keys]]\nissuer = \"ops\"\nalg = \"EdDSA\"\nfile = \"k/ops.pub.pem\"\n",
        )
        .expect("valid");
        assert_eq!(c.keys[0].alg, KeyAlg::EdDsa);
        assert_eq!(c.grant_issuers, ["weir"]);
        let e = host("[[keys]]\nissuer = \"ops\"\nalg = \"EdDSA\"\n").unwrap_err();
        assert!(
            e.starts_with("weir.toml: auth.keys[0].file: give the key"),
            "{e}"
        );
        let e = host("[[keys]]\nissuer = \"ops\"\nalg = \"HS256\"\nfile = \"x\"\n").unwrap_err();
        assert!(e.contains("unknown variant `HS256`"), "{e}");
        let e = host("[[keys]]\nissuer = \"o\"\nalg = \"ES256\"\nfile = \"x\"\nkid = \"../x\"\n")
            .unwrap_err();
        assert!(e.contains("auth.keys[0].kid"), "{e}");
    }

    #[test]
    fn plugin_auth_checks() {
        let p: PluginAuth = toml::from_str(
            "issuers = [\"billing\"]\n[required_claims]\nscope = \"orders:write\"\n",
        )
        .expect("parses");
        assert_eq!(p.audience_for("enrich"), "enrich");
        assert_eq!(p.leeway_s(), 30);
        p.validate(Path::new("plugin.toml")).expect("valid");
        let bad = PluginAuth {
            audience: Some("weir:grant".into()),
            ..p.clone()
        };
        let e = bad.validate(Path::new("plugin.toml")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("auth.audience"));
        let none = PluginAuth {
            issuers: vec![],
            ..p
        };
        assert!(none.validate(Path::new("plugin.toml")).is_err());
    }
}
