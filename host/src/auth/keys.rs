//! Trusted keys: the public keys of `weir.toml` (PEM or JWKS files), each
//! pinned to one algorithm and one issuer, found by `kid`. Private keys and
//! key generation are in [`signing`](super::signing).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};

use super::config::{HostAuthConfig, KeyAlg, KeyConfig, is_kid};
use crate::config::ConfigError;

/// Largest key file read (a JWKS of a few dozen RSA keys fits).
const MAX_KEY_FILE: u64 = 1024 * 1024;

/// RSA keys shorter than this are refused.
pub(super) const MIN_RSA_BITS: usize = 2048;

/// One public key tokens may be verified with.
#[derive(Clone)]
pub struct TrustedKey {
    /// The `iss` tokens signed by this key must carry; `None` only for a key
    /// given on the command line (`weir grant verify --key`).
    pub issuer: Option<String>,
    pub kid: String,
    /// Pinned: a token whose header names another `alg` is refused.
    pub alg: KeyAlg,
    pub key: DecodingKey,
    /// Where it came from, for messages.
    pub source: PathBuf,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The trusted keys, looked up by `kid`. Key ids are unique across issuers,
/// so a kid names one key and that key names its issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<TrustedKey>,
}

/// Why no key could be chosen for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The token names a kid no trusted key has.
    UnknownKid(String),
    /// The kid is known, but its issuer is not accepted here.
    IssuerNotAccepted { kid: String, issuer: String },
    /// The token names no kid and more than one key (or none) could sign it.
    NoKid { candidates: usize },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKid(kid) => write!(f, "unknown kid {kid:?}: no trusted key has it"),
            Self::IssuerNotAccepted { kid, issuer } => write!(
                f,
                "wrong issuer: key {kid:?} belongs to issuer {issuer:?}, which is not accepted here"
            ),
            Self::NoKid { candidates: 0 } => {
                write!(f, "no kid in the token header and no trusted key for it")
            }
            Self::NoKid { candidates } => write!(
                f,
                "no kid in the token header, and {candidates} trusted keys could have signed it"
            ),
        }
    }
}

impl KeySet {
    /// Read every `[[auth.keys]]` entry. Errors name the key file and the
    /// weir.toml field.
    pub fn load(config: &HostAuthConfig) -> Result<Self, ConfigError> {
        let mut set = Self::default();
        for (i, entry) in config.keys.iter().enumerate() {
            let field = format!("auth.keys[{i}]");
            for key in load_entry(entry, &field)? {
                set.insert(key, &field)?;
            }
        }
        Ok(set)
    }

    /// One public key file (PEM or JWKS) given on the command line, trusted
    /// for any issuer; the algorithm comes from the key itself.
    pub fn from_file(path: &Path, kid: Option<&str>) -> anyhow::Result<Self> {
        let text = read_key_file(path, "--key").map_err(anyhow::Error::from)?;
        let mut set = Self::default();
        if text.trim_start().starts_with('{') {
            let jwks: JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a JWKS file", path.display()))?;
            for jwk in &jwks.keys {
                if kid.is_some() && jwk.common.key_id.as_deref() != kid {
                    continue;
                }
                let alg = jwk_alg(jwk).with_context(|| format!("{}", path.display()))?;
                let entry = KeyConfig {
                    issuer: String::new(),
                    alg,
                    file: None,
                    jwks: Some(path.to_path_buf()),
                    kid: None,
                };
                // One key at a time: each carries its own algorithm here.
                let one = serde_json::to_string(&JwkSet {
                    keys: vec![jwk.clone()],
                })?;
                for mut key in keys_from_jwks(&entry, path, &one, "--key")? {
                    key.issuer = None;
                    set.insert(key, "--key")?;
                }
            }
            if set.is_empty() {
                bail!("{}: no usable key", path.display());
            }
        } else {
            let alg = public_pem_alg(text.as_bytes())
                .with_context(|| format!("{}: not a supported PEM public key", path.display()))?;
            let entry = KeyConfig {
                issuer: String::new(),
                alg,
                file: Some(path.to_path_buf()),
                jwks: None,
                kid: kid.map(str::to_owned),
            };
            let mut key = key_from_pem(&entry, path, &text, "--key")?;
            key.issuer = None;
            set.insert(key, "--key")?;
        }
        Ok(set)
    }

    fn insert(&mut self, key: TrustedKey, field: &str) -> Result<(), ConfigError> {
        if let Some(other) = self.keys.iter().find(|k| k.kid == key.kid) {
            return Err(ConfigError::new(
                &key.source,
                Some(field),
                format!(
                    "kid {:?} is already used by {}: key ids must be unique",
                    key.kid,
                    other.source.display()
                ),
            ));
        }
        self.keys.push(key);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.iter()
    }

    /// Whether some key belongs to `issuer`.
    pub fn has_issuer(&self, issuer: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.issuer.as_deref() == Some(issuer))
    }

    /// The key for a token naming `kid`, among the keys of `issuers`
    /// (`None`: any issuer). Without a kid, the one key that could have
    /// signed it, if there is exactly one.
    pub fn lookup(
        &self,
        kid: Option<&str>,
        issuers: Option<&[String]>,
    ) -> Result<&TrustedKey, LookupError> {
        let ok = |k: &TrustedKey| issuers.is_none_or(|list| accepts(list, k));
        match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid == kid)
                    .ok_or_else(|| LookupError::UnknownKid(kid.to_owned()))?;
                if ok(key) {
                    Ok(key)
                } else {
                    Err(LookupError::IssuerNotAccepted {
                        kid: kid.to_owned(),
                        issuer: key.issuer.clone().unwrap_or_default(),
                    })
                }
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| ok(k));
                match (candidates.next(), candidates.count()) {
                    (Some(key), 0) => Ok(key),
                    (None, _) => Err(LookupError::NoKid { candidates: 0 }),
                    (Some(_), more) => Err(LookupError::NoKid {
                        candidates: more + 1,
                    }),
                }
            }
        }
    }
}

fn accepts(issuers: &[String], key: &TrustedKey) -> bool {
    key.issuer
        .as_deref()
        .is_some_and(|i| issuers.iter().any(|a| a == i))
}

fn read_key_file(path: &Path, field: &str) -> Result<String, ConfigError> {
    let fail = |msg: String| ConfigError::new(path, Some(field), msg);
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if meta.len() > MAX_KEY_FILE {
        return Err(fail(format!(
            "{} bytes: larger than a key file can be ({MAX_KEY_FILE})",
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))
}

fn load_entry(entry: &KeyConfig, field: &str) -> Result<Vec<TrustedKey>, ConfigError> {
    match (&entry.file, &entry.jwks) {
        (Some(path), None) => {
            let text = read_key_file(path, &format!("{field}.file"))?;
            Ok(vec![key_from_pem(entry, path, &text, field)?])
        }
        (None, Some(path)) => {
            let text = read_key_file(path, &format!("{field}.jwks"))?;
            keys_from_jwks(entry, path, &text, field)
        }
        _ => Err(ConfigError::new(
            Path::new("weir.toml"),
            Some(&format!("{field}.file")),
            "give one of file and jwks",
        )),
    }
}

/// The kid a key file stands for: `ops-1.pub.pem` → `ops-1`.
pub fn kid_from_path(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".pem").unwrap_or(name);
    let stem = stem
        .strip_suffix(".pub")
        .or_else(|| stem.strip_suffix(".key"))
        .unwrap_or(stem);
    is_kid(stem).then(|| stem.to_owned())
}

fn key_from_pem(
    entry: &KeyConfig,
    path: &Path,
    text: &str,
    field: &str,
) -> Result<TrustedKey, ConfigError> {
    let fail = |msg: String| ConfigError::new(path, Some(&format!("{field}.file")), msg);
    if text.contains("PRIVATE KEY") {
        return Err(fail(
            "holds a private key: trust the public key (the .pub.pem `weir keys gen` wrote)".into(),
        ));
    }
    check_public_pem(entry.alg, text.as_bytes()).map_err(|e| fail(format!("{e:#}")))?;
    let key = match entry.alg {
        KeyAlg::EdDsa => DecodingKey::from_ed_pem(text.as_bytes()),
        KeyAlg::Es256 => DecodingKey::from_ec_pem(text.as_bytes()),
        KeyAlg::Rs256 => DecodingKey::from_rsa_pem(text.as_bytes()),
    }
    .map_err(|e| fail(format!("not a {} public key: {e}", entry.alg)))?;
    let kid = match &entry.kid {
        Some(kid) => kid.clone(),
        None => kid_from_path(path).ok_or_else(|| {
            fail("cannot take a kid from the file name: set kid in weir.toml".into())
        })?,
    };
    Ok(TrustedKey {
        issuer: Some(entry.issuer.clone()),
        kid,
        alg: entry.alg,
        key,
        source: path.to_path_buf(),
    })
}

/// Parse a PEM public key with the key crates, to refuse a key of the wrong
/// kind or curve, or a short RSA key, with a clear message at load time.
fn check_public_pem(alg: KeyAlg, pem: &[u8]) -> anyhow::Result<()> {
    let text = std::str::from_utf8(pem).context("not UTF-8 text")?;
    match alg {
        KeyAlg::EdDsa => {
            use ed25519_dalek::pkcs8::DecodePublicKey as _;
            ed25519_dalek::VerifyingKey::from_public_key_pem(text)
                .map(drop)
                .map_err(|e| anyhow::anyhow!("not an Ed25519 public key (EdDSA): {e}"))
        }
        KeyAlg::Es256 => {
            use p256::pkcs8::DecodePublicKey as _;
            p256::PublicKey::from_public_key_pem(text)
                .map(drop)
                .map_err(|e| anyhow::anyhow!("not a P-256 public key (ES256): {e}"))
        }
        KeyAlg::Rs256 => {
            use rsa::pkcs1::DecodeRsaPublicKey as _;
            use rsa::pkcs8::DecodePublicKey as _;
            use rsa::traits::PublicKeyParts as _;
            let key = rsa::RsaPublicKey::from_public_key_pem(text)
                .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(text))
                .map_err(|e| anyhow::anyhow!("not an RSA public key (RS256): {e}"))?;
            let bits = key.size() * 8;
            if bits < MIN_RSA_BITS {
                bail!("an RSA key of {bits} bits: at least {MIN_RSA_BITS} are needed");
            }
            Ok(())
        }
    }
}

/// The algorithm of a PEM public key, from its kind.
fn public_pem_alg(pem: &[u8]) -> anyhow::Result<KeyAlg> {
    for alg in [KeyAlg::EdDsa, KeyAlg::Es256, KeyAlg::Rs256] {
        if check_public_pem(alg, pem).is_ok() {
            return Ok(alg);
        }
    }
    bail!("not an Ed25519, P-256 or RSA (2048+ bits) public key")
}

/// The algorithm a JWK is for: its `alg` when set, else from its key type.
fn jwk_alg(jwk: &Jwk) -> anyhow::Result<KeyAlg> {
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Ok(KeyAlg::EdDsa)
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Ok(KeyAlg::Es256)
        }
        AlgorithmParameters::RSA(_) => Ok(KeyAlg::Rs256),
        _ => bail!("a JWK that is not an Ed25519, P-256 or RSA public key"),
    }
}

fn keys_from_jwks(
    entry: &KeyConfig,
    path: &Path,
    text: &str,
    field: &str,
) -> Result<Vec<TrustedKey>, ConfigError> {
    let fail =
        |msg: String| ConfigError::new(path, Some(&format!("{field}.jwks")), msg.to_string());
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| fail(format!("not a JWKS file: {e}")))?;
    let mut out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let fail = |msg: String| fail(format!("keys[{i}]: {msg}"));
        let Some(kid) = jwk.common.key_id.clone() else {
            return Err(fail("has no kid".into()));
        };
        if entry.kid.as_ref().is_some_and(|want| *want != kid) {
            continue;
        }
        if !is_kid(&kid) {
            return Err(fail(format!(
                "kid {kid:?} uses characters weir does not allow"
            )));
        }
        if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
            return Err(fail(format!(
                "kid {kid:?} is a symmetric (HMAC) key: weir trusts only public keys"
            )));
        }
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != entry.alg.as_str()
        {
            return Err(fail(format!(
                "kid {kid:?} is for {alg}, but weir.toml pins {}",
                entry.alg
            )));
        }
        if let Some(usage) = &jwk.common.public_key_use
            && *usage != PublicKeyUse::Signature
        {
            return Err(fail(format!("kid {kid:?} is not a signing key (use)")));
        }
        let kind = jwk_alg(jwk).map_err(|e| fail(format!("kid {kid:?}: {e}")))?;
        if kind != entry.alg {
            return Err(fail(format!(
                "kid {kid:?} is a {kind} key, but weir.toml pins {}",
                entry.alg
            )));
        }
        if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            use base64::Engine as _;
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(rsa.n.trim_end_matches('='))
                .map_err(|e| fail(format!("kid {kid:?}: n is not base64url: {e}")))?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(fail(format!(
                    "kid {kid:?}: an RSA key of about {bits} bits: at least {MIN_RSA_BITS} are needed"
                )));
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(format!("kid {kid:?}: {e}")))?;
        out.push(TrustedKey {
            issuer: Some(entry.issuer.clone()),
            kid,
            alg: entry.alg,
            key,
            source: path.to_path_buf(),
        });
    }
    if out.is_empty() {
        return Err(fail(match &entry.kid {
            Some(kid) => format!("no key with kid {kid:?}"),
            None => "holds no key".into(),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::signing::{SigningKey, generate};

    fn entry(alg: KeyAlg, file: &Path) -> KeyConfig {
        KeyConfig {
            issuer: "ops".into(),
            alg,
            file: Some(file.to_path_buf()),
            jwks: None,
            kid: None,
        }
    }

    #[test]
    fn generated_keys_load_as_trusted_and_signing_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (alg, kid) in [(KeyAlg::EdDsa, "ed-1"), (KeyAlg::Es256, "ec-1")] {
            let g = generate(alg, dir.path(), kid).expect("generate");
            let signing = SigningKey::load(&g.private_key, None).expect("load private");
            assert_eq!((signing.kid.as_str(), signing.alg), (kid, alg));
            let config = HostAuthConfig {
                keys: vec![
                    entry(alg, &g.public_key),
                    KeyConfig {
                        file: None,
                        jwks: Some(g.jwks.clone()),
                        kid: None,
                        issuer: "other".into(),
                        alg,
                    },
                ],
                ..Default::default()
            };
            // The same kid twice (PEM and JWKS) is refused: kids are unique.
            let e = KeySet::load(&config).unwrap_err();
            assert!(e.message.contains("already used"), "{e}");
            let config = HostAuthConfig {
                keys: vec![config.keys[1].clone()],
                ..Default::default()
            };
            let set = KeySet::load(&config).expect("jwks loads");
            assert_eq!(set.lookup(Some(kid), None).expect("found").alg, alg);
            assert!(generate(alg, dir.path(), kid).is_err(), "never overwrites");
        }
        let mode = std::fs::metadata(dir.path().join("ed-1.key.pem"))
            .expect("meta")
            .permissions();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn a_jwks_of_mixed_keys_loads_from_the_command_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = generate(KeyAlg::EdDsa, dir.path(), "a").expect("a");
        let b = generate(KeyAlg::Es256, dir.path(), "b").expect("b");
        let read = |p: &Path| -> JwkSet {
            serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("jwks")
        };
        let mut both = read(&a.jwks);
        both.keys.extend(read(&b.jwks).keys);
        let path = dir.path().join("both.jwks.json");
        std::fs::write(&path, serde_json::to_string(&both).expect("json")).expect("write");
        let set = KeySet::from_file(&path, None).expect("loads");
        assert_eq!(set.len(), 2);
        assert_eq!(set.lookup(Some("b"), None).expect("b").alg, KeyAlg::Es256);
        let only_a = KeySet::from_file(&path, Some("a")).expect("loads");
        assert_eq!(only_a.len(), 1);
        let pem = KeySet::from_file(&a.public_key, None).expect("pem");
        assert_eq!(pem.lookup(Some("a"), None).expect("a").alg, KeyAlg::EdDsa);
    }

    #[test]
    fn pinned_alg_must_fit_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = generate(KeyAlg::EdDsa, dir.path(), "ed").expect("generate");
        let config = HostAuthConfig {
            keys: vec![entry(KeyAlg::Es256, &g.public_key)],
            ..Default::default()
        };
        let e = KeySet::load(&config).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("auth.keys[0].file"));
        assert!(e.message.contains("not a P-256 public key"), "{e}");
        let config = HostAuthConfig {
            keys: vec![entry(KeyAlg::EdDsa, &g.private_key)],
            ..Default::default()
        };
        let e = KeySet::load(&config).unwrap_err();
        assert!(e.message.contains("private key"), "{e}");
    }

    #[test]
    fn lookup_by_kid_and_issuer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = generate(KeyAlg::EdDsa, dir.path(), "a").expect("a");
        let b = generate(KeyAlg::EdDsa, dir.path(), "b").expect("b");
        let mut eb = entry(KeyAlg::EdDsa, &b.public_key);
        eb.issuer = "billing".into();
        let set = KeySet::load(&HostAuthConfig {
            keys: vec![entry(KeyAlg::EdDsa, &a.public_key), eb],
            ..Default::default()
        })
        .expect("loads");
        let ops = ["ops".to_owned()];
        assert_eq!(set.lookup(Some("a"), Some(&ops)).expect("a").kid, "a");
        assert!(matches!(
            set.lookup(Some("b"), Some(&ops)),
            Err(LookupError::IssuerNotAccepted { .. })
        ));
        assert!(matches!(
            set.lookup(Some("zz"), Some(&ops)),
            Err(LookupError::UnknownKid(_))
        ));
        assert_eq!(set.lookup(None, Some(&ops)).expect("only one").kid, "a");
        assert_eq!(
            set.lookup(None, None).unwrap_err(),
            LookupError::NoKid { candidates: 2 }
        );
        assert_eq!(
            kid_from_path(Path::new("k/ops-1.pub.pem")).as_deref(),
            Some("ops-1")
        );
        assert_eq!(
            kid_from_path(Path::new("k/ops-1.key.pem")).as_deref(),
            Some("ops-1")
        );
    }
}
