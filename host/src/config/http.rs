//! `[http]` in weir.toml: the HTTP gateway (accept an event with 202, poll
//! its status, get a signed webhook when it is final). Off when absent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::event::is_subscribe_subject;

/// `[http]`: the gateway's address, limits, callback policy and secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `POST /v1/events/{subject}` and `GET /v1/events/{id}` on this address.
    pub listen: SocketAddr,
    /// The largest request body accepted (413 past it); never more than the
    /// NATS server's `max_payload`, which is checked per request too.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long an event's status is kept (the `weir_status` bucket's
    /// `max_age` when weir creates it; a retried `Idempotency-Key` maps to the
    /// same id for as long).
    #[serde(default = "default_status_ttl_ms")]
    pub status_ttl_ms: u64,
    /// Callback URLs a request may name in `Weir-Callback`, as patterns
    /// `scheme://host[:port]/path`: the scheme and host match exactly (a
    /// leading `*.` in the host stands for one or more labels), a port of `*`
    /// for any port (no port: the scheme's own), and `*` in the path for any
    /// run of characters (`https://hooks.example.com/*`,
    /// `http://127.0.0.1:*/*`). A URL with a user or password never
    /// matches. Empty: no request may name a callback.
    #[serde(default)]
    pub callback_allow: Vec<String>,
    /// The gateway's address as callers reach it (e.g. behind a proxy:
    /// `https://api.example.com/weir`): `status_url` is built on it. Absent:
    /// `status_url` is the path alone, as `Location` is.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Subjects the gateway may publish to (NATS wildcards); every subject
    /// a stream captures when absent. Reserved subjects are never allowed.
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// The Standard Webhooks signing secret (`whsec_...`): a file holding it,
    /// or an environment variable. Without one, this host delivers no
    /// webhooks (another host may).
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// Deliveries of one webhook before it is dead-lettered.
    #[serde(default = "default_webhook_attempts")]
    pub webhook_max_attempts: u32,
    /// Delay before delivery n+1 is `webhook_backoff_ms[n-1]`; the last repeats.
    #[serde(default = "default_webhook_backoff")]
    pub webhook_backoff_ms: Vec<u64>,
    /// How long one webhook POST may take.
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// Replicas of the `weir_status` bucket and `WEIR_WEBHOOKS` stream when
    /// weir creates them (1..=5).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

fn default_status_ttl_ms() -> u64 {
    24 * 60 * 60 * 1000
}

/// With the backoff below, about 8 hours of tries: a receiver down for
/// minutes gets its callbacks seconds after it is back, one down for a night
/// still gets them.
fn default_webhook_attempts() -> u32 {
    15
}

fn default_webhook_backoff() -> Vec<u64> {
    vec![
        1_000, 5_000, 30_000, 120_000, 300_000, 900_000, 1_800_000, 3_600_000,
    ]
}

/// The Standard Webhooks advice: 15 to 30 s.
fn default_webhook_timeout_ms() -> u64 {
    15_000
}

fn default_replicas() -> usize {
    1
}

impl HttpConfig {
    pub(crate) fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, msg: String| {
            Err(ConfigError::new(file, Some(&format!("http.{field}")), msg))
        };
        if self.max_body_bytes == 0 {
            return err("max_body_bytes", "must be at least 1".into());
        }
        if self.status_ttl_ms < 1_000 {
            return err("status_ttl_ms", "must be at least 1000".into());
        }
        for (i, pattern) in self.callback_allow.iter().enumerate() {
            if let Err(why) = UrlPattern::parse(pattern) {
                return err(
                    &format!("callback_allow[{i}]"),
                    format!("{pattern:?} {why}"),
                );
            }
        }
        if let Some(url) = &self.public_url
            && url::Url::parse(url).is_err()
        {
            return err("public_url", format!("{url:?} is not a URL"));
        }
        if let Some(subjects) = &self.subjects {
            for (i, s) in subjects.iter().enumerate() {
                if !is_subscribe_subject(s) {
                    return err(&format!("subjects[{i}]"), format!("{s:?} is not a subject"));
                }
            }
        }
        if self.webhook_secret_file.is_some() && self.webhook_secret_env.is_some() {
            return err(
                "webhook_secret_file",
                "give webhook_secret_file or webhook_secret_env, not both".into(),
            );
        }
        if self.webhook_max_attempts == 0 {
            return err("webhook_max_attempts", "must be at least 1".into());
        }
        if self.webhook_backoff_ms.is_empty() {
            return err("webhook_backoff_ms", "needs at least one delay".into());
        }
        if self.webhook_timeout_ms == 0 {
            return err("webhook_timeout_ms", "must be at least 1".into());
        }
        if !(1..=super::MAX_REPLICAS).contains(&self.replicas) {
            return err("replicas", "must be between 1 and 5".into());
        }
        Ok(())
    }

    /// Whether a callback URL matches one of `callback_allow`.
    pub fn callback_allowed(&self, url: &str) -> bool {
        let Ok(url) = url::Url::parse(url) else {
            return false;
        };
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        self.callback_allow
            .iter()
            .any(|p| UrlPattern::parse(p).is_ok_and(|p| p.matches(&url)))
    }
}

/// One `callback_allow` entry, taken apart.
struct UrlPattern<'a> {
    scheme: &'a str,
    host: &'a str,
    /// `None`: the scheme's own port; `Some("*")`: any.
    port: Option<&'a str>,
    path: &'a str,
}

impl<'a> UrlPattern<'a> {
    fn parse(pattern: &'a str) -> Result<Self, &'static str> {
        let (scheme, rest) = pattern
            .split_once("://")
            .ok_or("must be scheme://host/path")?;
        if scheme != "http" && scheme != "https" {
            return Err("must start with http:// or https://");
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("must not name a user");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if port == "*" || port.parse::<u16>().is_ok() => (host, Some(port)),
            Some(_) => return Err("has a port that is neither a number nor *"),
            None => (authority, None),
        };
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty() || bare.contains('*') {
            return Err("must name a host (only a leading *. may stand for labels)");
        }
        Ok(Self {
            scheme,
            host,
            port,
            path,
        })
    }

    fn matches(&self, url: &url::Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
            None => host.eq_ignore_ascii_case(self.host),
        };
        let port_ok = match (self.port, url.port_or_known_default()) {
            (Some("*"), _) => true,
            (Some(p), Some(port)) => p.parse::<u16>() == Ok(port),
            (None, port) => {
                port == url::Url::parse(&format!("{}://x/", self.scheme))
                    .ok()
                    .and_then(|u| u.port_or_known_default())
            }
            (Some(_), None) => false,
        };
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        host_ok && port_ok && glob_matches(self.path, &path)
    }
}

/// `*` matches any run of characters (none included); every other character
/// matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostConfig;

    #[test]
    fn callback_urls_are_matched_as_urls() {
        let http: HttpConfig = toml::from_str(
            "listen = \"127.0.0.1:0\"\ncallback_allow = [\"http://127.0.0.1:*/*\", \"https://*.example.com/hooks/*\", \"https://a.test/x\"]\n",
        )
        .expect("config");
        assert!(http.callback_allowed("http://127.0.0.1:8081/hook"));
        assert!(http.callback_allowed("https://eu.example.com/hooks/1?a=b"));
        assert!(http.callback_allowed("https://a.test/x"));
        assert!(http.callback_allowed("https://a.test:443/x"));
        for bad in [
            "http://127.0.0.1:1@10.0.0.5:8080/admin",
            "http://user@127.0.0.1:80/x",
            "https://evil.com/.example.com/hooks/1",
            "https://example.com/hooks/1",
            "https://eu.example.com.evil.net/hooks/1",
            "https://a.test:8443/x",
            "http://a.test/x",
            "https://a.test/xy",
            "not a url",
        ] {
            assert!(!http.callback_allowed(bad), "{bad}");
        }
        let parse = |text: &str| HostConfig::parse(Path::new("weir.toml"), text);
        let e =
            parse("[http]\nlisten = \"127.0.0.1:1\"\ncallback_allow = [\"https://a*b.com/\"]\n")
                .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("http.callback_allow[0]"));
    }

    #[test]
    fn globs_match_as_documented() {
        assert!(glob_matches(
            "https://hooks.example.com/*",
            "https://hooks.example.com/a/b"
        ));
        assert!(!glob_matches(
            "https://hooks.example.com/*",
            "https://hooks.example.com.evil.net/a"
        ));
        assert!(glob_matches(
            "http://127.0.0.1:*/*",
            "http://127.0.0.1:8081/hook"
        ));
        assert!(!glob_matches(
            "http://127.0.0.1:*/*",
            "http://127.0.0.2:80/x"
        ));
        assert!(glob_matches("http://a/x", "http://a/x"));
        assert!(!glob_matches("http://a/x", "http://a/xy"));
        assert!(glob_matches("*", "anything"));
        assert!(!glob_matches("a*a", "a"));
    }

    #[test]
    fn http_is_off_by_default_and_errors_name_the_field() {
        let parse = |text: &str| HostConfig::parse(Path::new("weir.toml"), text);
        assert!(parse("").expect("empty").http.is_none());
        let c = parse("[http]\nlisten = \"127.0.0.1:8080\"\n").expect("defaults");
        let http = c.http.expect("on");
        assert_eq!(http.max_body_bytes, 1024 * 1024);
        assert_eq!(http.status_ttl_ms, 86_400_000);
        assert!(!http.callback_allowed("http://127.0.0.1:1/x"));
        let e = parse("[http]\nlisten = \"127.0.0.1:8080\"\ncallback_allow = [\"ftp://x/*\"]\n")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("http.callback_allow[0]"));
        let e = parse("[http]\nlisten = \"127.0.0.1:8080\"\nsubjects = [\"a..b\"]\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("http.subjects[0]"));
        let e = parse("[http]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("http.listen"));
        let e = parse("[http]\nmax_body_bytes = 5\n").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
    }
}
