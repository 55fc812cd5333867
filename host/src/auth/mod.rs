//! Auth: what a plugin may do and whose events it accepts.
//!
//! # Layout
//!
//! - [`config`]: the `[auth]` sections of weir.toml (trusted keys, grant
//!   policy) and plugin.toml (issuers, audience, required claims, leeway).
//! - [`keys`]: trusted public keys from PEM or JWKS files, each pinned to one
//!   algorithm and one issuer and found by `kid`.
//! - [`signing`]: private keys for signing grants and tokens; `weir keys gen`.
//! - [`verify`]: one JWT against the trusted keys (jsonwebtoken underneath),
//!   with a [`Rejected`](verify::Rejected) reason for every way it can fail.
//! - [`grant`]: grants bound to a bundle's wasm hash, checked at load.
//! - [`token`]: producer tokens, checked per event before the first attempt.
//! - [`secret`]: NATS credentials read from files or the environment.
//! - [`commands`]: the bodies of `weir keys|grant|token`.
//!
//! Every JWT is parsed, signed and verified by `jsonwebtoken`; the algorithm
//! comes from the key's configuration, never from the token.

pub mod commands;
pub mod grant;
pub mod keys;
pub mod secret;
pub mod signing;
pub mod token;
pub mod verify;

use std::sync::Arc;

/// Auth settings are config (`[auth]` in weir.toml and plugin.toml): they live
/// there, and auth reads them.
pub use crate::config::auth as config;
pub use crate::config::auth::{HostAuthConfig, KeyAlg, PluginAuth};
pub use grant::Grant;
pub use token::TokenVerifier;

use crate::bundle::{Bundle, MANIFEST};

/// What auth decided for one plugin at load time.
#[derive(Debug, Default)]
pub struct PluginAuthState {
    /// The verified grant, when the bundle has one.
    pub grant: Option<Grant>,
    /// The producer-token verifier, when plugin.toml has `[auth]`.
    pub verifier: Option<Arc<TokenVerifier>>,
}

impl PluginAuthState {
    /// The subjects the plugin may publish to: `None` without a grant.
    pub fn granted_publish(&self) -> Option<Vec<String>> {
        self.grant.as_ref().map(|g| g.claims.publish.clone())
    }

    /// Check `bundle`'s grant and build its token verifier. An error refuses
    /// the plugin; it names the file at fault.
    pub fn load(bundle: &Bundle, host: &HostAuthConfig) -> Result<Self, String> {
        let needs_keys =
            host.require_grants || bundle.manifest.auth.is_some() || bundle.grant.is_some();
        if !needs_keys {
            return Ok(Self::default());
        }
        let keys = keys::KeySet::load(host).map_err(|e| format!("weir.toml [auth]: {e}"))?;
        let grant = grant::check_bundle(bundle, host, &keys)?;
        let verifier = match &bundle.manifest.auth {
            Some(auth) => Some(Arc::new(
                TokenVerifier::new(&bundle.manifest.name, auth, host, &keys)
                    .map_err(|e| format!("{}: {e}", bundle.dir.join(MANIFEST).display()))?,
            )),
            None => None,
        };
        Ok(Self { grant, verifier })
    }
}
