//! What the connected nats-server can do, judged by the version it reports in
//! its INFO: the oldest server weir runs on, and the features that need a newer
//! one. Start-up refuses a server older than [`OLDEST`] and says, once, what
//! degrades on one older than [`CURRENT`].

use std::fmt;
use std::str::FromStr;

/// A nats-server release, `major.minor.patch`; a pre-release suffix
/// (`2.11.0-RC.1`) counts as its release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

/// The oldest server weir supports: core NATS, JetStream pull consumers with
/// headers and heartbeats, the dead-letter streams.
pub const OLDEST: Version = Version(2, 9, 0);

/// From this release on nothing weir does degrades.
pub const CURRENT: Version = Version(2, 11, 0);

/// Consumer pause (`pause_until`): an open circuit pauses the consumer on
/// the server, for every host.
pub const CONSUMER_PAUSE: Version = Version(2, 11, 0);

/// Message schedules, one-shot (`Nats-Schedule: @at`): `weir pub --in`,
/// handlers' follow-ups.
pub const SCHEDULE_AT: Version = Version(2, 12, 0);

/// Recurring message schedules: `@every`, 6-field cron, time zones
/// (`[[schedule]]` in plugin.toml).
pub const SCHEDULE_RECURRING: Version = Version(2, 14, 0);

/// TLS before the INFO line (`tls_first` / `handshake_first`).
pub const TLS_FIRST: Version = Version(2, 10, 4);

impl FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bare = text.trim().trim_start_matches('v');
        let release = bare.split(['-', '+']).next().unwrap_or(bare);
        let mut parts = release.split('.').map(str::parse::<u32>);
        let mut next = || match parts.next() {
            Some(Ok(n)) => Ok(n),
            _ => Err(format!(
                "`{text}` is not a nats-server version (major.minor.patch)"
            )),
        };
        let version = Version(next()?, next()?, next().unwrap_or(0));
        Ok(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What one server offers, from its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub version: Version,
}

impl Features {
    /// Judge a server by the version string of its INFO; refuse one older
    /// than [`OLDEST`] or one whose version does not parse.
    pub fn of(version: &str) -> anyhow::Result<Self> {
        let version: Version = version.parse().map_err(anyhow::Error::msg)?;
        if version < OLDEST {
            anyhow::bail!(
                "nats-server {version} is older than {OLDEST}, the oldest weir supports \
                 (scripts/setup.sh installs a current one into target/nats-server)"
            );
        }
        Ok(Self { version })
    }

    /// Whether the server pauses consumers (`pause_until`).
    pub fn consumer_pause(&self) -> bool {
        self.version >= CONSUMER_PAUSE
    }

    /// Whether the server runs one-shot message schedules (`@at`).
    pub fn schedules(&self) -> bool {
        self.version >= SCHEDULE_AT
    }

    /// Whether the server runs `@every` and cron schedules.
    pub fn recurring_schedules(&self) -> bool {
        self.version >= SCHEDULE_RECURRING
    }

    /// What works differently on this server than on a current one, one
    /// sentence each; empty from [`CURRENT`] on.
    pub fn degraded(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.consumer_pause() {
            notes.push(format!(
                "no consumer pause before {CONSUMER_PAUSE}: an open circuit (or `weir pause`) \
                 stops this host's own pulling only, not the other hosts'"
            ));
        }
        notes
    }
}

/// Log the server's version, and once each thing that degrades on it.
pub fn announce(features: &Features, server_name: &str) {
    tracing::info!(version = %features.version, server = server_name, "NATS server");
    for note in features.degraded() {
        tracing::warn!(version = %features.version, "nats-server {}: {note}", features.version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_prefixes_and_suffixes() {
        assert_eq!("2.15.1".parse(), Ok(Version(2, 15, 1)));
        assert_eq!("v2.10.4".parse(), Ok(Version(2, 10, 4)));
        assert_eq!("2.11.0-RC.1".parse(), Ok(Version(2, 11, 0)));
        assert_eq!("2.12".parse(), Ok(Version(2, 12, 0)));
        let e = "nats".parse::<Version>().expect_err("not a version");
        assert!(e.contains("`nats`"), "{e}");
    }

    #[test]
    fn versions_order_numerically_not_as_text() {
        assert!(Version(2, 9, 10) < Version(2, 10, 0));
        assert!(Version(2, 15, 1) > Version(2, 11, 0));
    }

    #[test]
    fn an_old_server_is_refused_and_names_its_version() {
        let e = Features::of("2.8.4").expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("2.8.4") && text.contains("2.9.0"), "{text}");
        assert!(Features::of("garbage").is_err());
    }

    #[test]
    fn only_servers_before_2_11_degrade() {
        let old = Features::of("2.9.10").expect("supported");
        assert!(!old.consumer_pause());
        assert_eq!(old.degraded().len(), 1, "{:?}", old.degraded());
        assert!(old.degraded()[0].contains("consumer pause"));
        let current = Features::of("2.15.1").expect("supported");
        assert!(current.consumer_pause());
        assert!(current.degraded().is_empty());
    }
}
