//! Grants: a JWT an operator signs for one bundle (`grant.jwt` beside its
//! plugin.toml). It binds the plugin's name (`sub`) and the SHA-256 of its
//! `.wasm` to the subjects it may subscribe and publish to and to caps on its
//! limits. Checked when the plugin loads; the publish subjects become the
//! plugin's output policy.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::config::{GRANT_AUDIENCE, HostAuthConfig};
use super::keys::KeySet;
use super::signing::SigningKey;
use super::verify::{Accept, GRANT_TYP, Rejected, verify};
use crate::bundle::Bundle;
use crate::config::Manifest;
use crate::event::is_subscribe_subject;

/// The grant's file name inside a bundle.
pub const GRANT_FILE: &str = "grant.jwt";

/// Largest grant file read.
pub(crate) const MAX_GRANT_FILE: u64 = 64 * 1024;

/// Clock skew tolerated on a grant's `exp` and `nbf`.
const GRANT_LEEWAY_S: u64 = 60;

/// A grant's claims. The registered ones (`iss`, `sub` = the plugin's name,
/// `aud` = `weir:grant`, `iat`, `exp`, optional `nbf`, `jti`) and weir's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    pub iss: String,
    /// The plugin's name (plugin.toml's `name`).
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Hex SHA-256 of the `.wasm`: a grant covers exactly one build.
    pub wasm_sha256: String,
    /// Subjects (NATS wildcards) the plugin may subscribe to: every
    /// `[[subscribe]]` subject must be covered by one of them.
    pub subscribe: Vec<String>,
    /// Subjects (NATS wildcards) the plugin may publish to, besides the reply
    /// subject of the event it handles. Empty: replies only.
    pub publish: Vec<String>,
    /// Caps on `[limits]`; absent: no cap beyond the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u32>,
}

/// A verified grant that fits its bundle.
#[derive(Debug, Clone)]
pub struct Grant {
    pub path: PathBuf,
    pub kid: String,
    pub claims: GrantClaims,
}

/// Read, verify and check the grant of `bundle`. `Ok(None)`: the bundle has
/// no grant and none is required. Errors name the grant file.
pub fn check_bundle(
    bundle: &Bundle,
    host: &HostAuthConfig,
    keys: &KeySet,
) -> Result<Option<Grant>, String> {
    let path = bundle.dir.join(GRANT_FILE);
    let Some(token) = &bundle.grant else {
        if host.require_grants {
            return Err(format!(
                "{}: missing: weir.toml requires a signed grant for every plugin (auth.require_grants)",
                path.display()
            ));
        }
        return Ok(None);
    };
    let fail = |why: String| format!("{}: {why}", path.display());
    let (claims, kid) =
        verify_grant(token, keys, &host.grant_issuers).map_err(|e| fail(e.to_string()))?;
    let problems = misfits(&claims, &bundle.manifest, &bundle.sha256_hex());
    if !problems.is_empty() {
        return Err(fail(problems.join("; ")));
    }
    Ok(Some(Grant { path, kid, claims }))
}

/// Verify a grant's signature, issuer, audience and times; return its claims
/// and the kid that signed it. `issuers`: those allowed to sign grants.
pub fn verify_grant(
    token: &str,
    keys: &KeySet,
    issuers: &[String],
) -> Result<(GrantClaims, String), Rejected> {
    verify_grant_with(token, keys, Some(issuers))
}

fn verify_grant_with(
    token: &str,
    keys: &KeySet,
    issuers: Option<&[String]>,
) -> Result<(GrantClaims, String), Rejected> {
    let accept = Accept {
        issuers,
        audience: GRANT_AUDIENCE,
        leeway_s: GRANT_LEEWAY_S,
        grant: true,
    };
    let (claims, key) = verify(token, keys, &accept)?;
    let claims: GrantClaims = serde_json::from_value(claims)
        .map_err(|e| Rejected::Malformed(format!("not a weir grant: {e}")))?;
    Ok((claims, key.kid.clone()))
}

/// What the manifest and the wasm ask beyond the grant; empty when it fits.
pub fn misfits(claims: &GrantClaims, manifest: &Manifest, wasm_sha256: &str) -> Vec<String> {
    let mut out = Vec::new();
    if claims.sub != manifest.name {
        out.push(format!(
            "the grant is for plugin {:?}, not {:?}",
            claims.sub, manifest.name
        ));
    }
    if !claims.wasm_sha256.eq_ignore_ascii_case(wasm_sha256) {
        out.push(format!(
            "wasm sha256 mismatch: the grant is for {}, but {} is {wasm_sha256}",
            claims.wasm_sha256,
            manifest.wasm.display()
        ));
    }
    for (i, sub) in manifest.subscribe.iter().enumerate() {
        if !claims
            .subscribe
            .iter()
            .any(|p| subject_covers(p, &sub.subject))
        {
            out.push(format!(
                "subscribe[{i}].subject {:?} is outside the grant's subscribe {:?}",
                sub.subject, claims.subscribe
            ));
        }
    }
    let limits = &manifest.limits;
    if let Some(max) = claims.max_timeout_ms
        && limits.timeout_ms > max
    {
        out.push(format!(
            "limits.timeout_ms {} is above the grant's cap {max}",
            limits.timeout_ms
        ));
    }
    if let Some(max) = claims.max_memory_mb
        && limits.memory_mb > max
    {
        out.push(format!(
            "limits.memory_mb {} is above the grant's cap {max}",
            limits.memory_mb
        ));
    }
    out
}

/// Whether every subject matching subscription `subject` also matches
/// `pattern` (both with NATS wildcards): `orders.>` covers `orders.*.eu`,
/// `orders.*` does not cover `orders.>`.
pub fn subject_covers(pattern: &str, subject: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut sub = subject.split('.');
    loop {
        match (pat.next(), sub.next()) {
            // `>` matches one or more tokens: so does whatever is left.
            (Some(">"), Some(_)) => return true,
            (Some(_), Some(">")) => return false,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s && s != "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What `weir grant sign` puts in a grant.
#[derive(Debug, Clone)]
pub struct GrantSpec {
    pub issuer: String,
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
    pub max_timeout_ms: Option<u64>,
    pub max_memory_mb: Option<u32>,
    pub ttl: Duration,
}

/// Sign a grant for `bundle` and write it to `<bundle>/grant.jwt`. Refuses a
/// grant its own bundle would not fit.
pub fn sign(key: &SigningKey, bundle: &Bundle, spec: &GrantSpec) -> anyhow::Result<GrantClaims> {
    if bundle.archived {
        bail!(
            "{} is an archive: sign the bundle folder, then pack it (weir bundle pack)",
            bundle.dir.display()
        );
    }
    for s in spec.subscribe.iter().chain(&spec.publish) {
        if !is_subscribe_subject(s) {
            bail!("{s:?} is not a NATS subject (wildcards allowed)");
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let claims = GrantClaims {
        iss: spec.issuer.clone(),
        sub: bundle.manifest.name.clone(),
        aud: GRANT_AUDIENCE.into(),
        iat: now,
        exp: now + spec.ttl.as_secs().max(1),
        nbf: None,
        jti: Some(format!("{:032x}", rand::random::<u128>())),
        wasm_sha256: bundle.sha256_hex(),
        subscribe: spec.subscribe.clone(),
        publish: spec.publish.clone(),
        max_timeout_ms: spec.max_timeout_ms,
        max_memory_mb: spec.max_memory_mb,
    };
    let problems = misfits(&claims, &bundle.manifest, &bundle.sha256_hex());
    if !problems.is_empty() {
        bail!(
            "the bundle would not fit this grant: {}",
            problems.join("; ")
        );
    }
    let token = sign_claims(key, &claims)?;
    let path = bundle.dir.join(GRANT_FILE);
    std::fs::write(&path, format!("{token}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(claims)
}

/// Sign grant claims as they are (tests use it for expired or foreign grants).
pub fn sign_claims(key: &SigningKey, claims: &GrantClaims) -> anyhow::Result<String> {
    let mut header = key.header();
    header.typ = Some(GRANT_TYP.into());
    key.sign(&header, claims)
}

/// `weir grant verify`: what a grant says and whether its bundle fits it.
#[derive(Debug, Serialize)]
pub struct Explained {
    pub grant: PathBuf,
    pub valid: bool,
    /// Why the grant was refused (signature, time, issuer, or misfits).
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<GrantClaims>,
    pub wasm_sha256: String,
}

/// Verify `bundle`'s grant with `keys` (grant signers: `issuers`, `None` for
/// any) and explain it.
pub fn explain(bundle: &Bundle, keys: &KeySet, issuers: Option<&[String]>) -> Explained {
    let path = bundle.dir.join(GRANT_FILE);
    let mut out = Explained {
        grant: path.clone(),
        valid: false,
        errors: Vec::new(),
        kid: None,
        claims: None,
        wasm_sha256: bundle.sha256_hex(),
    };
    let Some(token) = &bundle.grant else {
        out.errors.push("missing".into());
        return out;
    };
    match verify_grant_with(token, keys, issuers) {
        Ok((claims, kid)) => {
            out.errors = misfits(&claims, &bundle.manifest, &bundle.sha256_hex());
            out.valid = out.errors.is_empty();
            out.kid = Some(kid);
            out.claims = Some(claims);
        }
        Err(e) => out.errors.push(e.to_string()),
    }
    out
}

/// The human form of [`Explained`].
pub fn print_explained(e: &Explained, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let verdict = if e.valid { "valid" } else { "REFUSED" };
    writeln!(out, "{}: {verdict}", e.grant.display())?;
    for err in &e.errors {
        writeln!(out, "  error: {err}")?;
    }
    if let Some(c) = &e.claims {
        writeln!(out, "  plugin:     {}", c.sub)?;
        writeln!(
            out,
            "  signed by:  issuer {:?}, kid {:?}",
            c.iss,
            e.kid.as_deref().unwrap_or("")
        )?;
        writeln!(
            out,
            "  valid:      {} to {}",
            super::verify::unix_rfc3339(c.nbf.unwrap_or(c.iat)),
            super::verify::unix_rfc3339(c.exp)
        )?;
        writeln!(out, "  wasm:       sha256 {}", c.wasm_sha256)?;
        if !c.wasm_sha256.eq_ignore_ascii_case(&e.wasm_sha256) {
            writeln!(out, "              (the bundle's is {})", e.wasm_sha256)?;
        }
        writeln!(out, "  may subscribe to: {}", list(&c.subscribe))?;
        writeln!(
            out,
            "  may publish to:   {} (and the reply subject of each event)",
            list(&c.publish)
        )?;
        let cap = |v: Option<String>| v.unwrap_or_else(|| "the host's".into());
        writeln!(
            out,
            "  caps:       timeout_ms {}, memory_mb {}",
            cap(c.max_timeout_ms.map(|v| v.to_string())),
            cap(c.max_memory_mb.map(|v| v.to_string()))
        )?;
        writeln!(
            out,
            "  always:     never $SYS.>, $JS.>, $KV.>, $O.>, _INBOX.> (but the reply subject) or the dead-letter queue"
        )?;
    }
    Ok(())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_follows_nats_wildcards() {
        let yes = [
            ("orders.>", "orders.created.>"),
            ("orders.>", "orders.*.eu"),
            ("orders.>", "orders.x"),
            ("orders.*", "orders.x"),
            ("orders.*", "orders.*"),
            (">", "anything.>"),
            ("a.b", "a.b"),
            ("*.b", "a.b"),
        ];
        let no = [
            ("orders.*", "orders.>"),
            ("orders.*", "orders.x.y"),
            ("orders.x", "orders.*"),
            ("orders.>", "orders"),
            ("orders.>", ">"),
            ("a.b", "a.b.c"),
            ("a.b.c", "a.b"),
            ("billing.>", "orders.x"),
        ];
        for (p, s) in yes {
            assert!(subject_covers(p, s), "{p} should cover {s}");
        }
        for (p, s) in no {
            assert!(!subject_covers(p, s), "{p} should not cover {s}");
        }
    }
}
