//! Standard Webhooks signatures: the shared [`Secret`] and [`sign`], an
//! HMAC-SHA256 over `<webhook-id>.<timestamp>.<body>`, written as
//! `v1,<base64>` in the `webhook-signature` header.

use std::fmt;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The prefix the spec gives a serialized symmetric secret.
const PREFIX: &str = "whsec_";

/// The shortest key the spec allows (192 bits).
pub const MIN_KEY_BYTES: usize = 24;

/// The longest key the spec allows (512 bits).
pub const MAX_KEY_BYTES: usize = 64;

/// The key webhooks are signed with. Neither `Debug` nor any other way out
/// shows its bytes: it can sit in a settings struct that gets logged.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Read a secret as the spec serializes it: `whsec_` and the key in
    /// standard base64 (padded or not). The bare base64 without the prefix is
    /// accepted too, as the spec's own libraries do. Whitespace around it is
    /// ignored (a secret file ends with a newline). The key must be 24 to 64
    /// bytes long, the spec's bounds. Errors never quote the text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        if encoded.is_empty() {
            bail!("the webhook secret is empty (expected whsec_<base64>)");
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
            // The decoder's message can quote a byte of the secret: drop it.
            .map_err(|_| anyhow::anyhow!("not standard base64"))
            .context("the webhook secret is not whsec_<base64>")?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            bail!(
                "the webhook secret's key is {} bytes; Standard Webhooks wants {MIN_KEY_BYTES} to {MAX_KEY_BYTES} (e.g. whsec_ and 32 random bytes in base64: `openssl rand -base64 32`)",
                key.len()
            );
        }
        Ok(Self(key))
    }

    /// A fresh random 32-byte secret, serialized as `whsec_<base64>` (for a
    /// receiver's configuration and for tests).
    pub fn generate() -> (Self, String) {
        let key: [u8; 32] = rand::random();
        let text = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        (Self(key.to_vec()), text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The `webhook-signature` value for one attempt: `v1,` and the standard
/// base64 of HMAC-SHA256(key, `<webhook_id>.<timestamp>.<body>`).
pub fn sign(secret: &Secret, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&secret.0) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector the Standard Webhooks libraries test against.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn signs_the_spec_vector() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(sign(&secret, ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn accepts_bare_base64_and_surrounding_whitespace() {
        let bare = Secret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(sign(&bare, ID, TIMESTAMP, BODY), SIGNATURE);
        let file = Secret::parse(&format!("  {SECRET}\n")).unwrap();
        assert_eq!(sign(&file, ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn any_change_changes_the_signature() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_ne!(sign(&secret, "msg_other", TIMESTAMP, BODY), SIGNATURE);
        assert_ne!(sign(&secret, ID, TIMESTAMP + 1, BODY), SIGNATURE);
        assert_ne!(sign(&secret, ID, TIMESTAMP, b"{}"), SIGNATURE);
    }

    #[test]
    fn refuses_bad_secrets_without_quoting_them() {
        for bad in [
            "",
            "whsec_",
            "whsec_not*base64!",
            "whsec_c2hvcnQ=", // "short": 5 bytes
            &format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode([7u8; 65])
            ),
        ] {
            let e = format!("{:#}", Secret::parse(bad).expect_err(bad));
            assert!(e.contains("webhook secret"), "{e}");
            let body = bad.trim_start_matches(PREFIX);
            assert!(body.is_empty() || !e.contains(body), "{e} quotes {bad:?}");
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let (secret, text) = Secret::generate();
        let shown = format!("{secret:?}");
        assert_eq!(shown, "Secret(32 bytes)");
        assert!(Secret::parse(&text).is_ok());
    }
}
