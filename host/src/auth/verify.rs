//! Verifying one JWT against the trusted keys: shared by grants and producer
//! tokens. jsonwebtoken does the parsing, the signature and the time and
//! audience checks; this module chooses the key by `kid`, pins the algorithm
//! to the key's (never the token's), and turns every failure into a
//! [`Rejected`] that says what failed without quoting the token.

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};

use super::keys::{KeySet, LookupError, TrustedKey};

/// The `typ` header of grants. Producer tokens with it are refused, and
/// grants without it, so neither can stand in for the other.
pub const GRANT_TYP: &str = "weir-grant+jwt";

/// What is accepted for one kind of token.
#[derive(Debug, Clone)]
pub struct Accept<'a> {
    /// Issuers whose keys may have signed it; `None`: any key of the set.
    pub issuers: Option<&'a [String]>,
    pub audience: &'a str,
    pub leeway_s: u64,
    /// Whether this is a grant (typ [`GRANT_TYP`]) or a producer token.
    pub grant: bool,
}

/// Why a token was refused. Displays as the reason carried by
/// `Weir-Error` / `weir grant verify`; never quotes the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// No `Authorization` header.
    Missing,
    /// More than one `Authorization` header.
    Repeated,
    /// An `Authorization` header with another scheme than `Bearer`.
    WrongScheme,
    /// `Bearer` with nothing after it.
    Empty,
    /// Longer than `auth.max_token_bytes`.
    TooLarge {
        bytes: usize,
        max: usize,
    },
    /// Not three base64url parts of JSON.
    Malformed(String),
    /// The header's `alg` is none, unknown, or not the pinned one of the key.
    Alg(String),
    /// A grant where a producer token belongs, or the other way round.
    WrongType(String),
    /// No key for the token's kid, or the kid's issuer is not accepted.
    Key(LookupError),
    BadSignature,
    Expired {
        exp: Option<u64>,
        leeway_s: u64,
    },
    NotYetValid {
        nbf: Option<u64>,
        leeway_s: u64,
    },
    WrongAudience {
        expected: String,
    },
    WrongIssuer {
        expected: String,
    },
    MissingClaim(String),
    /// A claim the plugin requires has another value.
    ClaimMismatch {
        claim: String,
        required: String,
    },
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no Authorization header: a Bearer token is required"),
            Self::Repeated => f.write_str("more than one Authorization header"),
            Self::WrongScheme => {
                f.write_str("wrong scheme: the Authorization header is not \"Bearer <jwt>\"")
            }
            Self::Empty => f.write_str("empty bearer token"),
            Self::TooLarge { bytes, max } => write!(
                f,
                "oversized Authorization header: {bytes} bytes, more than the {max} allowed (auth.max_token_bytes)"
            ),
            Self::Malformed(why) => write!(f, "malformed token: {why}"),
            Self::Alg(why) => write!(f, "alg not accepted: {why}"),
            Self::WrongType(why) => write!(f, "wrong token type: {why}"),
            Self::Key(e) => write!(f, "{e}"),
            Self::BadSignature => f.write_str("bad signature"),
            Self::Expired { exp, leeway_s } => {
                write!(f, "expired")?;
                if let Some(exp) = exp {
                    write!(f, " at {}", unix_rfc3339(*exp))?;
                }
                write!(f, " (leeway {leeway_s} s)")
            }
            Self::NotYetValid { nbf, leeway_s } => {
                write!(f, "not yet valid")?;
                if let Some(nbf) = nbf {
                    write!(f, ": nbf is {}", unix_rfc3339(*nbf))?;
                }
                write!(f, " (leeway {leeway_s} s)")
            }
            Self::WrongAudience { expected } => {
                write!(f, "wrong audience: aud does not name {expected:?}")
            }
            Self::WrongIssuer { expected } => write!(
                f,
                "wrong issuer: iss is not {expected:?}, the issuer of the signing key"
            ),
            Self::MissingClaim(claim) => write!(f, "missing claim {claim:?}"),
            Self::ClaimMismatch { claim, required } => {
                write!(f, "claim {claim:?} does not hold the required {required:?}")
            }
        }
    }
}

impl std::error::Error for Rejected {}

/// A seconds-since-epoch time as RFC 3339.
pub fn unix_rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// Verify `token` with the key its kid names and return its claims and that
/// key. The algorithm is the key's: a header naming another one (HS256 with
/// the public key as secret, `none`, ...) is refused before any crypto.
pub fn verify<'k>(
    token: &str,
    keys: &'k KeySet,
    accept: &Accept<'_>,
) -> Result<(serde_json::Value, &'k TrustedKey), Rejected> {
    let header = decode_header(token).map_err(|e| header_error(e.kind()))?;
    if header.crit.is_some() {
        return Err(Rejected::Malformed(
            "the header has a crit field, which weir does not support".into(),
        ));
    }
    let is_grant = header.typ.as_deref() == Some(GRANT_TYP);
    if accept.grant && !is_grant {
        return Err(Rejected::WrongType(format!(
            "a grant must have typ {GRANT_TYP:?}"
        )));
    }
    if !accept.grant && is_grant {
        return Err(Rejected::WrongType(
            "a grant is not a producer token".into(),
        ));
    }
    let key = keys
        .lookup(header.kid.as_deref(), accept.issuers)
        .map_err(Rejected::Key)?;
    if header.alg != key.alg.jwt() {
        return Err(Rejected::Alg(format!(
            "the header says {:?}, but key {:?} is pinned to {}",
            header.alg, key.kid, key.alg
        )));
    }

    let mut validation = Validation::new(key.alg.jwt());
    validation.leeway = accept.leeway_s;
    validation.validate_nbf = true;
    validation.set_audience(&[accept.audience]);
    let mut required = vec!["exp", "aud", "sub"];
    if let Some(issuer) = &key.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);

    match decode::<serde_json::Value>(token, &key.key, &validation) {
        Ok(data) if data.claims.is_object() => Ok((data.claims, key)),
        Ok(_) => Err(Rejected::Malformed(
            "the claims are not a JSON object".into(),
        )),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_) => Rejected::BadSignature,
            // Time checks run after the signature: the claims are genuine.
            ErrorKind::ExpiredSignature => Rejected::Expired {
                exp: time_claim(token, "exp"),
                leeway_s: accept.leeway_s,
            },
            ErrorKind::ImmatureSignature => Rejected::NotYetValid {
                nbf: time_claim(token, "nbf"),
                leeway_s: accept.leeway_s,
            },
            ErrorKind::InvalidAudience => Rejected::WrongAudience {
                expected: accept.audience.to_owned(),
            },
            ErrorKind::InvalidIssuer => Rejected::WrongIssuer {
                expected: key.issuer.clone().unwrap_or_default(),
            },
            ErrorKind::MissingRequiredClaim(claim) => Rejected::MissingClaim(claim.clone()),
            ErrorKind::InvalidClaimFormat(claim) => {
                Rejected::Malformed(format!("claim {claim:?} is not a number"))
            }
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                Rejected::Alg(format!("key {:?} is pinned to {}", key.kid, key.alg))
            }
            other => body_error(other),
        }),
    }
}

/// Read one time claim of a token whose signature has been verified, for the
/// message of an expired or premature token.
fn time_claim(token: &str, name: &str) -> Option<u64> {
    jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
        .ok()?
        .get(name)?
        .as_u64()
}

fn header_error(kind: &ErrorKind) -> Rejected {
    match kind {
        // serde names the unknown `alg` value ("unknown variant `none`"): the
        // header's only field with a closed set of values that matters here.
        ErrorKind::Json(e) if e.to_string().contains("unknown variant") => {
            Rejected::Alg(format!("the header's alg is not one weir knows ({e})"))
        }
        ErrorKind::Json(e) => Rejected::Malformed(format!("the header is not valid JSON ({e})")),
        other => body_error(other),
    }
}

fn body_error(kind: &ErrorKind) -> Rejected {
    Rejected::Malformed(match kind {
        ErrorKind::InvalidToken => "not three dot-separated parts".into(),
        ErrorKind::Base64(e) => format!("not base64url ({e})"),
        ErrorKind::Utf8(_) => "not UTF-8".into(),
        ErrorKind::Json(e) => format!("the claims are not valid JSON ({e})"),
        other => format!("{other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_well_and_quote_no_token() {
        assert_eq!(
            Rejected::Expired {
                exp: Some(0),
                leeway_s: 30
            }
            .to_string(),
            "expired at 1970-01-01T00:00:00Z (leeway 30 s)"
        );
        assert_eq!(
            Rejected::Key(LookupError::UnknownKid("k9".into())).to_string(),
            "unknown kid \"k9\": no trusted key has it"
        );
        assert!(
            Rejected::TooLarge {
                bytes: 9000,
                max: 8192
            }
            .to_string()
            .starts_with("oversized Authorization header")
        );
    }
}
