//! Secrets the host needs to reach NATS (a token, a password, an nkey seed),
//! read from files or environment variables named in weir.toml — never
//! written in it — and wrapped so that no `{:?}` or log line shows them.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::NatsConfig;

/// A secret string. Debug and Display print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: only to hand it to the NATS client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the host authenticates to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsCredentials {
    None,
    Token(Secret),
    UserPassword {
        user: String,
        password: Secret,
    },
    NkeySeed(Secret),
    /// A `.creds` file (user JWT + nkey seed), read by the NATS client.
    CredsFile(PathBuf),
}

/// Read the credentials `[nats]` names. Errors name the field and the file or
/// variable, never the secret.
pub fn nats_credentials(config: &NatsConfig) -> anyhow::Result<NatsCredentials> {
    let token = read_secret(
        "nats.token_file",
        config.token_file.as_deref(),
        "nats.token_env",
        config.token_env.as_deref(),
    )?;
    let password = read_secret(
        "nats.password_file",
        config.password_file.as_deref(),
        "nats.password_env",
        config.password_env.as_deref(),
    )?;
    let seed = read_secret(
        "nats.nkey_seed_file",
        config.nkey_seed_file.as_deref(),
        "",
        None,
    )?;
    if let (Some(seed), Some(path)) = (&seed, &config.nkey_seed_file) {
        check_user_seed(seed, path)?;
    }
    if let Some(creds) = &config.creds_file {
        std::fs::metadata(creds)
            .with_context(|| format!("nats.creds_file: cannot read {}", creds.display()))?;
    }
    for (field, path) in [
        ("nats.tls_ca_file", &config.tls_ca_file),
        ("nats.tls_cert_file", &config.tls_cert_file),
        ("nats.tls_key_file", &config.tls_key_file),
    ] {
        if let Some(path) = path {
            std::fs::metadata(path)
                .with_context(|| format!("{field}: cannot read {}", path.display()))?;
        }
    }
    Ok(
        match (token, &config.user, password, seed, &config.creds_file) {
            (None, None, None, None, None) => NatsCredentials::None,
            (Some(t), None, None, None, None) => NatsCredentials::Token(t),
            (None, Some(user), Some(password), None, None) => NatsCredentials::UserPassword {
                user: user.clone(),
                password,
            },
            (None, None, None, Some(seed), None) => NatsCredentials::NkeySeed(seed),
            (None, None, None, None, Some(path)) => NatsCredentials::CredsFile(path.clone()),
            (None, Some(_), None, None, None) => {
                bail!("nats.user: give the password with password_file or password_env")
            }
            (None, None, Some(_), None, None) => bail!("nats.password_file: give nats.user too"),
            _ => bail!(
                "[nats]: choose one way to authenticate: a token, user + password, an nkey seed or a creds file"
            ),
        },
    )
}

/// A seed the client could not sign with fails every connection attempt the
/// same way: say so now, naming the file and what is wrong with its content
/// (the nkeys error's kind only: its description can quote a character).
fn check_user_seed(seed: &Secret, path: &Path) -> anyhow::Result<()> {
    let pair = nkeys::KeyPair::from_seed(seed.expose()).map_err(|e| {
        anyhow::anyhow!(
            "nats.nkey_seed_file: {} does not hold an nkey seed ({})",
            path.display(),
            e.kind().as_str().to_lowercase()
        )
    })?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        bail!(
            "nats.nkey_seed_file: {} holds the seed of a{} key, not of a user \
             (a user's seed starts with SU)",
            path.display(),
            match pair.key_pair_type() {
                nkeys::KeyPairType::Account => "n account",
                nkeys::KeyPairType::Operator => "n operator",
                nkeys::KeyPairType::Server => " server",
                nkeys::KeyPairType::Cluster => " cluster",
                _ => "nother kind of",
            }
        );
    }
    Ok(())
}

/// Where the credentials `[nats]` names come from, for an error the server's
/// refusal causes: the fields and their files or variables, never a secret.
/// `None` when `[nats]` names none.
pub fn credentials_source(config: &NatsConfig) -> Option<String> {
    let file = |field: &str, path: &Path| format!("{field} ({})", path.display());
    let env = |field: &str, var: &str| format!("{field} (${var})");
    let mut parts = Vec::new();
    if let Some(path) = &config.token_file {
        parts.push(file("nats.token_file", path));
    }
    if let Some(var) = &config.token_env {
        parts.push(env("nats.token_env", var));
    }
    if let Some(user) = &config.user {
        parts.push(format!("nats.user {user:?}"));
    }
    if let Some(path) = &config.password_file {
        parts.push(file("nats.password_file", path));
    }
    if let Some(var) = &config.password_env {
        parts.push(env("nats.password_env", var));
    }
    if let Some(path) = &config.nkey_seed_file {
        parts.push(file("nats.nkey_seed_file", path));
    }
    if let Some(path) = &config.creds_file {
        parts.push(file("nats.creds_file", path));
    }
    (!parts.is_empty()).then(|| parts.join(" with "))
}

pub(crate) fn read_secret(
    file_field: &str,
    file: Option<&Path>,
    env_field: &str,
    env: Option<&str>,
) -> anyhow::Result<Option<Secret>> {
    let value = match (file, env) {
        (Some(_), Some(_)) => {
            bail!("{file_field}: give a file or an environment variable, not both")
        }
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("{file_field}: cannot read {}", path.display()))?,
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("{env_field}: environment variable {var} is not set"))?,
        (None, None) => return Ok(None),
    };
    let value = value.trim();
    if value.is_empty() {
        bail!("{file_field}: the secret is empty");
    }
    Ok(Some(Secret::new(value)))
}

pub use crate::config::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        let c = NatsCredentials::UserPassword {
            user: "weir".into(),
            password: s,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn credentials_from_files_and_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        let config = NatsConfig {
            user: Some("weir".into()),
            password_file: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(
            nats_credentials(&config).expect("reads"),
            NatsCredentials::UserPassword {
                user: "weir".into(),
                password: Secret::new("s3cret")
            }
        );
        let both = NatsConfig {
            token_file: Some(file.clone()),
            ..config.clone()
        };
        let e = nats_credentials(&both).unwrap_err().to_string();
        assert!(e.contains("choose one way"), "{e}");
        let missing = NatsConfig {
            token_env: Some("WEIR_TEST_SURELY_UNSET_VAR".into()),
            ..Default::default()
        };
        let e = nats_credentials(&missing).unwrap_err().to_string();
        assert!(e.starts_with("nats.token_env:"), "{e}");
        assert!(!e.contains("s3cret"));
    }

    #[test]
    fn seeds_are_checked_without_quoting_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("seed");
        let config = NatsConfig {
            nkey_seed_file: Some(file.clone()),
            ..Default::default()
        };
        std::fs::write(&file, "SXnot-a-seed-at-all").expect("write");
        let e = nats_credentials(&config).unwrap_err().to_string();
        assert!(e.starts_with("nats.nkey_seed_file:"), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(!e.contains("not-a-seed"), "{e}");
        let account = nkeys::KeyPair::new_account().seed().expect("seed");
        std::fs::write(&file, &account).expect("write");
        let e = nats_credentials(&config).unwrap_err().to_string();
        assert!(e.contains("an account key, not of a user"), "{e}");
        assert!(!e.contains(&account), "{e}");
        let user = nkeys::KeyPair::new_user().seed().expect("seed");
        std::fs::write(&file, format!("{user}\n")).expect("write");
        assert_eq!(
            nats_credentials(&config).expect("a user seed"),
            NatsCredentials::NkeySeed(Secret::new(user))
        );
    }

    #[test]
    fn the_source_names_fields_files_and_variables_only() {
        let config = NatsConfig {
            user: Some("weir".into()),
            password_env: Some("NATS_PW".into()),
            ..Default::default()
        };
        assert_eq!(
            credentials_source(&config).as_deref(),
            Some("nats.user \"weir\" with nats.password_env ($NATS_PW)")
        );
        let creds = NatsConfig {
            creds_file: Some("/etc/weir/host.creds".into()),
            ..Default::default()
        };
        assert_eq!(
            credentials_source(&creds).as_deref(),
            Some("nats.creds_file (/etc/weir/host.creds)")
        );
        assert_eq!(credentials_source(&NatsConfig::default()), None);
    }

    #[test]
    fn urls_lose_their_userinfo() {
        assert_eq!(redact_url(" tls://tok@h2"), "tls://***@h2");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact_url("u:p@h"), "***@h");
    }

    /// Issue 8: the userinfo ends at the last `@`, so no piece of a password
    /// holding `@` (or `/`) is left in the message.
    #[test]
    fn passwords_holding_at_signs_are_hidden_whole() {
        assert_eq!(
            redact_url("nats://u:p@ss@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(redact_url("nats://u:p/s@s@host"), "nats://***@host");
        assert_eq!(redact_url("tls://x@y@z@h3"), "tls://***@h3");
    }
}
