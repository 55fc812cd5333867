//! Signing, on the operator's side: private keys for grants and tokens, and
//! `weir keys gen`. Hosts never need a private key.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{DecodingKey, EncodingKey};

use super::config::{KeyAlg, is_kid};
use super::keys::{MIN_RSA_BITS, kid_from_path};

/// A private key to sign grants or tokens with. Its Debug shows no key material.
pub struct SigningKey {
    pub kid: String,
    pub alg: KeyAlg,
    key: EncodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Read a PKCS#8 PEM private key (or PKCS#1 for RSA); its kind gives the
    /// algorithm, the file name (`<kid>.key.pem`) the kid unless given.
    pub fn load(path: &Path, kid: Option<&str>) -> anyhow::Result<Self> {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = std::str::from_utf8(&pem)
            .with_context(|| format!("{}: not a PEM file", path.display()))?;
        let alg = private_pem_alg(text)
            .with_context(|| format!("{}: not a supported private key", path.display()))?;
        let key = match alg {
            KeyAlg::EdDsa => EncodingKey::from_ed_pem(&pem),
            KeyAlg::Es256 => EncodingKey::from_ec_pem(&pem),
            KeyAlg::Rs256 => EncodingKey::from_rsa_pem(&pem),
        }
        .with_context(|| format!("{}: not a {alg} private key", path.display()))?;
        let kid = match kid {
            Some(kid) if is_kid(kid) => kid.to_owned(),
            Some(kid) => bail!("--kid {kid:?}: use 1-128 of A-Z, a-z, 0-9, '.', '_' and '-'"),
            None => kid_from_path(path).with_context(|| {
                format!(
                    "{}: cannot take a kid from the file name: pass --kid",
                    path.display()
                )
            })?,
        };
        Ok(Self { kid, alg, key })
    }

    /// A JWT header for this key: its alg and kid.
    pub fn header(&self) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(self.alg.jwt());
        header.kid = Some(self.kid.clone());
        header
    }

    /// Sign `claims` with `header` (which must name this key's alg).
    pub fn sign<T: serde::Serialize>(
        &self,
        header: &jsonwebtoken::Header,
        claims: &T,
    ) -> anyhow::Result<String> {
        jsonwebtoken::encode(header, claims, &self.key).context("cannot sign")
    }
}

fn private_pem_alg(text: &str) -> anyhow::Result<KeyAlg> {
    {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        if ed25519_dalek::SigningKey::from_pkcs8_pem(text).is_ok() {
            return Ok(KeyAlg::EdDsa);
        }
    }
    {
        use p256::pkcs8::DecodePrivateKey as _;
        if p256::SecretKey::from_pkcs8_pem(text).is_ok() {
            return Ok(KeyAlg::Es256);
        }
    }
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(text)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(text))
    {
        let bits = key.size() * 8;
        if bits < MIN_RSA_BITS {
            bail!("an RSA key of {bits} bits: at least {MIN_RSA_BITS} are needed");
        }
        return Ok(KeyAlg::Rs256);
    }
    bail!("expected a PKCS#8 PEM Ed25519, P-256 or RSA private key")
}

// ----------------------------------------------------------------------------
// Generation

/// What `weir keys gen` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generated {
    pub kid: String,
    pub alg: &'static str,
    /// The private key (mode 0600): keep it off the hosts.
    pub private_key: PathBuf,
    /// The public key as PEM, for weir.toml's `file`.
    pub public_key: PathBuf,
    /// The public key as a JWKS, for weir.toml's `jwks` or other tools.
    pub jwks: PathBuf,
}

/// Generate a key pair for `alg` into `out`: `<kid>.key.pem` (PKCS#8,
/// mode 0600), `<kid>.pub.pem` and `<kid>.jwks.json`. Never overwrites.
pub fn generate(alg: KeyAlg, out: &Path, kid: &str) -> anyhow::Result<Generated> {
    use rand_core::OsRng;
    if !is_kid(kid) {
        bail!("kid {kid:?}: use 1-128 of A-Z, a-z, 0-9, '.', '_' and '-'");
    }
    let lf = p256::pkcs8::LineEnding::LF;
    let (private_pem, public_pem) = match alg {
        KeyAlg::EdDsa => {
            use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            (
                key.to_pkcs8_pem(lf)?,
                key.verifying_key().to_public_key_pem(lf)?,
            )
        }
        KeyAlg::Es256 => {
            use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
            let key = p256::SecretKey::random(&mut OsRng);
            (
                key.to_pkcs8_pem(lf)?,
                key.public_key().to_public_key_pem(lf)?,
            )
        }
        KeyAlg::Rs256 => {
            use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
            let key = rsa::RsaPrivateKey::new(&mut OsRng, MIN_RSA_BITS)
                .context("cannot generate the RSA key")?;
            let public = rsa::RsaPublicKey::from(&key).to_public_key_pem(lf)?;
            (key.to_pkcs8_pem(lf)?, public)
        }
    };
    let public = match alg {
        KeyAlg::EdDsa => DecodingKey::from_ed_pem(public_pem.as_bytes()),
        KeyAlg::Es256 => DecodingKey::from_ec_pem(public_pem.as_bytes()),
        KeyAlg::Rs256 => DecodingKey::from_rsa_pem(public_pem.as_bytes()),
    }
    .context("cannot read back the generated public key")?;
    let mut jwk =
        Jwk::from_decoding_key(&public, Some(alg.jwt())).context("cannot make the JWK")?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let jwks = serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] })?;

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let generated = Generated {
        kid: kid.to_owned(),
        alg: alg.as_str(),
        private_key: out.join(format!("{kid}.key.pem")),
        public_key: out.join(format!("{kid}.pub.pem")),
        jwks: out.join(format!("{kid}.jwks.json")),
    };
    for path in [
        &generated.private_key,
        &generated.public_key,
        &generated.jwks,
    ] {
        if path.exists() {
            bail!(
                "{} exists: weir keys gen never overwrites a key",
                path.display()
            );
        }
    }
    write_new(&generated.private_key, private_pem.as_bytes(), 0o600)?;
    write_new(&generated.public_key, public_pem.as_bytes(), 0o644)?;
    write_new(&generated.jwks, format!("{jwks}\n").as_bytes(), 0o644)?;
    Ok(generated)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
