//! `nats.url`: the NATS servers to reach, written as one URL, a
//! comma-separated list (`"nats://a:4222,nats://b:4222"`, as NATS clients
//! take them) or a TOML array of URLs. Every entry is checked when the file
//! (or `--nats`) is read, so a typo fails start-up with its position instead
//! of as one unparsable string deep in the client.

use std::fmt;
use std::str::FromStr;

use async_nats::ServerAddr;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// The servers of `nats.url`, in the order given; the client tries them in
/// a random order and learns the rest of a cluster from the one it reaches.
/// Display and Debug print them comma separated with any credentials
/// replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrls(Vec<ServerAddr>);

/// A `nats.url` entry that is not a NATS server URL. Its `Display` never
/// shows credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct BadServerUrl {
    /// 1-based position of the bad entry; 0 when no entry was given at all.
    pub entry: usize,
    /// How many entries there were.
    pub of: usize,
    /// The entry, redacted; `None` when it cannot be shown safely.
    shown: Option<String>,
    reason: String,
}

impl BadServerUrl {
    fn describe(&self) -> String {
        if self.entry == 0 {
            return self.reason.clone();
        }
        let shown = self
            .shown
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        format!(
            "entry {} of {}{shown}: {}",
            self.entry, self.of, self.reason
        )
    }
}

impl ServerUrls {
    /// Parse a comma-separated list of server URLs.
    pub fn parse_list(list: &str) -> Result<Self, BadServerUrl> {
        let entries: Vec<&str> = list.split(',').collect();
        // A comma inside a password would split it across two entries, the
        // part before the `@` looking like an entry without credentials: when
        // the list holds an `@` at all, errors give only the entry's position.
        Self::from_entries(&entries, !list.contains('@'))
    }

    /// Parse entries that are one URL each (a TOML array).
    pub fn from_entries<S: AsRef<str>>(entries: &[S], show: bool) -> Result<Self, BadServerUrl> {
        let of = entries.len();
        let bad = |entry: usize, text: &str, reason: String| BadServerUrl {
            entry,
            of,
            shown: show.then(|| redact_url(text)),
            reason,
        };
        let mut addrs = Vec::with_capacity(of);
        for (i, entry) in entries.iter().enumerate() {
            let text = entry.as_ref().trim();
            if text.is_empty() {
                return Err(bad(i + 1, text, "is empty".into()).hidden());
            }
            let addr = text
                .parse::<ServerAddr>()
                .map_err(|e| bad(i + 1, text, e.to_string()))?;
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(bad(0, "", "names no server".into()));
        }
        Ok(Self(addrs))
    }

    /// The servers, as parsed (credentials included).
    pub fn addrs(&self) -> &[ServerAddr] {
        &self.0
    }

    /// The servers without the credentials of their URLs: what the client is
    /// given. async-nats 0.51 does not authenticate with URL credentials (the
    /// host passes them from `[nats]`), and it logs addresses whole at debug
    /// level.
    pub fn for_client(&self) -> Vec<ServerAddr> {
        self.0
            .iter()
            .map(|addr| {
                if !addr.has_user_pass() && addr.password().is_none() {
                    return addr.clone();
                }
                let mut url = addr.clone().into_inner();
                // Both only fail for URLs that cannot have userinfo at all.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                ServerAddr::from_url(url).unwrap_or_else(|_| addr.clone())
            })
            .collect()
    }

    /// Whether any URL carries credentials (which the client ignores).
    pub fn has_credentials(&self) -> bool {
        self.0
            .iter()
            .any(|addr| addr.has_user_pass() || addr.password().is_some())
    }
}

impl BadServerUrl {
    /// An empty entry has nothing to show.
    fn hidden(mut self) -> Self {
        self.shown = None;
        self
    }
}

impl Default for ServerUrls {
    fn default() -> Self {
        let local = "nats://127.0.0.1:4222"
            .parse()
            .expect("the default server URL is valid");
        Self(vec![local])
    }
}

impl FromStr for ServerUrls {
    type Err = BadServerUrl;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Self::parse_list(list)
    }
}

impl fmt::Display for ServerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            // One URL at a time: a comma in a password must not split it.
            f.write_str(&redact_url(addr.as_url_str()))?;
        }
        Ok(())
    }
}

impl fmt::Debug for ServerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrls({:?})", self.to_string())
    }
}

impl<'de> Deserialize<'de> for ServerUrls {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Urls;
        impl<'de> Visitor<'de> for Urls {
            type Value = ServerUrls;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a NATS server URL, a comma-separated list of them or an array of them")
            }

            fn visit_str<E: de::Error>(self, list: &str) -> Result<ServerUrls, E> {
                ServerUrls::parse_list(list).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ServerUrls, A::Error> {
                let mut entries: Vec<String> = Vec::new();
                while let Some(entry) = seq.next_element::<String>()? {
                    entries.push(entry);
                }
                ServerUrls::from_entries(&entries, true).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(Urls)
    }
}

/// One NATS URL with its `user:password@` or `token@` replaced by `***@`,
/// for messages.
///
/// The userinfo ends at the *last* `@`: RFC 3986 allows no unescaped `@` in
/// it, but people type passwords holding one (`nats://u:p@ss@host`), and URL
/// parsers take the last `@` too. The whole rest of the URL is searched, not
/// just up to the first `/`, so a password holding a `/` is hidden as well;
/// NATS URLs have no path that could hold an `@` of its own.
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => format!("***@{}", &rest[at + 1..]),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(urls: &ServerUrls) -> Vec<(String, u16)> {
        urls.addrs()
            .iter()
            .map(|a| (a.host().to_owned(), a.port()))
            .collect()
    }

    /// Issue 8: the README's comma-separated form is a list, not one URL.
    #[test]
    fn comma_separated_list() {
        let urls: ServerUrls = "nats://a:4222, nats://b:4223,tls://c".parse().unwrap();
        assert_eq!(
            ports(&urls),
            [("a".into(), 4222), ("b".into(), 4223), ("c".into(), 4222)]
        );
        assert_eq!(urls.to_string(), "nats://a:4222,nats://b:4223,tls://c");
        let one: ServerUrls = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(ports(&one), [("127.0.0.1".into(), 5000)]);
    }

    #[test]
    fn bad_entries_are_named_by_position() {
        let e = "nats://a:4222,nats://b:x"
            .parse::<ServerUrls>()
            .unwrap_err();
        assert_eq!((e.entry, e.of), (2, 2));
        assert_eq!(
            e.to_string(),
            "entry 2 of 2 (nats://b:x): NATS server URL is invalid: invalid port number"
        );
        let e = "nats://a,,nats://c".parse::<ServerUrls>().unwrap_err();
        assert_eq!(e.to_string(), "entry 2 of 3: is empty");
        let e = ServerUrls::from_entries::<&str>(&[], true).unwrap_err();
        assert_eq!(e.to_string(), "names no server");
        let e = "http://a".parse::<ServerUrls>().unwrap_err();
        assert!(e.to_string().contains("invalid scheme"), "{e}");
    }

    #[test]
    fn credentials_are_never_shown_and_not_given_to_the_client() {
        let urls: ServerUrls = "nats://u:p@ss@a:1,nats://tok@b:2".parse().unwrap();
        assert_eq!(urls.to_string(), "nats://***@a:1,nats://***@b:2");
        assert!(!format!("{urls:?}").contains("ss"), "{urls:?}");
        assert!(urls.has_credentials());
        let bare: Vec<String> = urls
            .for_client()
            .iter()
            .map(|a| a.as_url_str().to_owned())
            .collect();
        assert_eq!(bare, ["nats://a:1", "nats://b:2"]);
        // A bad entry in a list with credentials is named by position only.
        let e = "nats://u:p,w@a:1,nats://b:x"
            .parse::<ServerUrls>()
            .unwrap_err();
        assert_eq!((e.entry, e.of), (1, 3));
        assert!(!e.to_string().contains("u:p"), "{e}");
    }
}
