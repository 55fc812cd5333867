//! `[[schedule]]` in plugin.toml, and what a schedule is: a 6-field cron
//! expression (with an optional time zone), an interval or one instant —
//! parsed, checked and turned into the `Nats-Schedule` header value the
//! server runs (ADR-51). Knows nothing of NATS otherwise; the
//! [`crate::schedule`] module writes the definitions.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

use super::{ConfigError, is_plugin_name};
use crate::event::{is_header_name, is_header_value, is_publish_subject};

/// One `[[schedule]]` entry: the server publishes `payload` on `subject` on
/// this schedule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// Names the entry in its definition's subject
    /// (`weir.schedule.plugin.<plugin>.<name>`); default its index. Give one
    /// so that reordering the entries does not replace their schedules.
    #[serde(default)]
    pub name: Option<String>,
    /// Six fields, `sec min hour day-of-month month day-of-week`, or one of
    /// `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
    #[serde(default)]
    pub cron: Option<String>,
    /// An interval, `30s`, `5m`, `1h 30m` (whole seconds, at least one).
    #[serde(default)]
    pub every: Option<String>,
    /// An IANA time zone (`Europe/Berlin`) the cron fields are read in;
    /// default UTC. Cron only.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Where each tick is published; the plugin subscribes to it like to any
    /// subject.
    pub subject: String,
    /// The body of every tick.
    #[serde(default)]
    pub payload: String,
    /// Headers on every tick.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The largest payload a `[[schedule]]` entry may carry.
pub const MAX_SCHEDULE_PAYLOAD: usize = 64 * 1024;

/// Subject prefixes a schedule may not publish to: the server's APIs, inboxes
/// and weir's own subjects.
const RESERVED: &[&str] = &["$", "_INBOX.", "weir."];

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A cron expression (six fields or an `@daily`-style alias), read in
    /// `time_zone` (UTC when `None`).
    Cron {
        expr: String,
        time_zone: Option<String>,
    },
    /// Every so many whole seconds, counted from when the definition was stored.
    Every(Duration),
    /// Once.
    At(DateTime<Utc>),
}

/// The cron aliases the server knows, and the expression each stands for.
const ALIASES: &[(&str, &str)] = &[
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
];

impl Spec {
    /// The `Nats-Schedule` header value: the expression, `@every <n>s` or
    /// `@at <RFC 3339>`.
    pub fn header(&self) -> String {
        match self {
            Self::Cron { expr, .. } => expr.clone(),
            Self::Every(d) => format!("@every {}s", d.as_secs()),
            Self::At(at) => format!("@at {}", at.to_rfc3339_opts(SecondsFormat::Secs, true)),
        }
    }

    /// The `Nats-Schedule-Time-Zone` header value, for a cron in a zone.
    pub fn time_zone(&self) -> Option<&str> {
        match self {
            Self::Cron { time_zone, .. } => time_zone.as_deref(),
            _ => None,
        }
    }

    /// Read a `Nats-Schedule` header value (and the time zone header) back.
    pub fn from_header(value: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let value = value.trim();
        if let Some(at) = value.strip_prefix("@at ") {
            return parse_instant(at).map(Self::At);
        }
        if let Some(every) = value.strip_prefix("@every ") {
            return parse_every(every).map(Self::Every);
        }
        let tz = time_zone.map(str::to_owned);
        let spec = Self::Cron {
            expr: value.to_owned(),
            time_zone: tz,
        };
        spec.check()?;
        Ok(spec)
    }

    /// Whether the server needs `@every`/cron support (2.14) rather than
    /// only `@at` (2.12).
    pub fn is_recurring(&self) -> bool {
        !matches!(self, Self::At(_))
    }

    /// The first fire time after `now`; for [`Spec::Every`], `stored` is
    /// when the definition was stored (its phase). `None` when it never
    /// fires again.
    pub fn next_after(&self, now: DateTime<Utc>, stored: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::At(at) => (*at > now).then_some(*at),
            Self::Every(every) => {
                let step = i64::try_from(every.as_secs()).ok()?.max(1);
                let since = (now - stored).num_seconds().max(0);
                let n = since / step + 1;
                Some(stored + chrono::Duration::seconds(n * step))
            }
            Self::Cron { expr, time_zone } => {
                let cron = parse_cron(expr).ok()?;
                match time_zone {
                    Some(tz) => {
                        let tz: chrono_tz::Tz = tz.parse().ok()?;
                        let local = now.with_timezone(&tz);
                        (cron.find_next_occurrence(&local, false).ok())
                            .map(|t| t.with_timezone(&Utc))
                    }
                    None => cron.find_next_occurrence(&now, false).ok(),
                }
            }
        }
    }

    /// Check a cron spec: six fields (or an alias) and a known time zone.
    fn check(&self) -> Result<(), String> {
        let Self::Cron { expr, time_zone } = self else {
            return Ok(());
        };
        parse_cron(expr)?;
        if let Some(tz) = time_zone {
            tz.parse::<chrono_tz::Tz>()
                .map_err(|_| format!("{tz:?} is not an IANA time zone (such as Europe/Berlin)"))?;
        }
        Ok(())
    }
}

/// Parse a cron expression as the server reads it: six fields with seconds,
/// or one of the aliases.
fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let expr = expr.trim();
    let full = ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(expr))
        .map_or(expr, |(_, full)| *full);
    let fields = full.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "{expr:?} has {fields} fields; a schedule takes six (sec min hour day-of-month month day-of-week) or an alias such as @hourly"
        ));
    }
    croner::Cron::from_str(full).map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// `30s`, `5m`, `1h 30m`: whole seconds, at least one.
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not an interval (such as 30s, 5m, 1h): {e}"))?;
    if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
        return Err(format!(
            "{text:?}: an interval is a whole number of seconds, at least 1s"
        ));
    }
    Ok(d)
}

/// An RFC 3339 instant, any offset; kept to the second (rounded up).
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|e| {
            format!("{text:?} is not an RFC 3339 time (such as 2026-12-24T18:00:00Z): {e}")
        })?
        .with_timezone(&Utc);
    Ok(ceil_second(at))
}

/// `at` rounded up to a whole second: the server fires on the second.
pub fn ceil_second(at: DateTime<Utc>) -> DateTime<Utc> {
    let whole = at.timestamp();
    let up = if at.timestamp_subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    DateTime::from_timestamp(up, 0).unwrap_or(at)
}

impl ScheduleEntry {
    /// What names the entry: `name`, or its index.
    pub fn key(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| index.to_string())
    }

    /// When it fires. Only for a checked entry; an unchecked one may be wrong.
    pub fn spec(&self) -> Result<Spec, String> {
        match (&self.cron, &self.every) {
            (Some(expr), None) => Ok(Spec::Cron {
                expr: expr.trim().to_owned(),
                time_zone: self.time_zone.clone(),
            }),
            (None, Some(every)) => parse_every(every).map(Spec::Every),
            _ => Err("give exactly one of cron and every".into()),
        }
    }
}

/// Check every entry; errors name the field (`schedule[0].cron`).
pub(super) fn validate(entries: &[ScheduleEntry], path: &Path) -> Result<(), ConfigError> {
    let err = |field: String, msg: String| Err(ConfigError::new(path, Some(&field), msg));
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |f: &str| format!("schedule[{i}].{f}");
        if let Some(name) = &entry.name
            && !is_plugin_name(name)
        {
            return err(
                field("name"),
                format!("{name:?} is not an entry name: use 1-64 of a-z, 0-9, '-' and '_'"),
            );
        }
        let key = entry.key(i);
        if keys.contains(&key) {
            return err(
                field("name"),
                format!("another entry is already named {key:?}"),
            );
        }
        keys.push(key);
        match (&entry.cron, &entry.every) {
            (Some(_), Some(_)) => {
                return err(field("every"), "give cron or every, not both".into());
            }
            (None, None) => return err(field("cron"), "give cron or every".into()),
            (None, Some(every)) => {
                if let Err(e) = parse_every(every) {
                    return err(field("every"), e);
                }
                if entry.time_zone.is_some() {
                    return err(
                        field("time_zone"),
                        "only a cron schedule has a time zone".into(),
                    );
                }
            }
            (Some(expr), None) => {
                if let Err(e) = parse_cron(expr) {
                    return err(field("cron"), e);
                }
                if let Some(tz) = &entry.time_zone
                    && tz.parse::<chrono_tz::Tz>().is_err()
                {
                    return err(
                        field("time_zone"),
                        format!("{tz:?} is not an IANA time zone (such as Europe/Berlin)"),
                    );
                }
            }
        }
        if !is_publish_subject(&entry.subject) {
            return err(
                field("subject"),
                format!("{:?} is not a subject to publish to", entry.subject),
            );
        }
        if let Some(prefix) = RESERVED.iter().find(|p| entry.subject.starts_with(**p)) {
            return err(
                field("subject"),
                format!("{:?}: {prefix}* is reserved", entry.subject),
            );
        }
        if entry.payload.len() > MAX_SCHEDULE_PAYLOAD {
            return err(
                field("payload"),
                format!("at most {MAX_SCHEDULE_PAYLOAD} bytes"),
            );
        }
        for (name, value) in &entry.headers {
            let bad = !is_header_name(name)
                || !is_header_value(value)
                || name.to_ascii_lowercase().starts_with("nats-")
                || name.to_ascii_lowercase().starts_with("weir-");
            if bad {
                return err(
                    field(&format!("headers.{name}")),
                    "not a header a schedule may set (Nats-* and Weir-* are the server's and weir's)"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cron: Option<&str>, every: Option<&str>) -> ScheduleEntry {
        ScheduleEntry {
            name: None,
            cron: cron.map(str::to_owned),
            every: every.map(str::to_owned),
            time_zone: None,
            subject: "reports.tick".into(),
            payload: String::new(),
            headers: BTreeMap::new(),
        }
    }

    fn field(entries: &[ScheduleEntry]) -> Option<String> {
        validate(entries, Path::new("p/plugin.toml"))
            .err()
            .and_then(|e| e.field)
    }

    #[test]
    fn good_entries_pass_and_become_headers() {
        let e = entry(Some("0 */5 * * * *"), None);
        assert_eq!(field(std::slice::from_ref(&e)), None);
        assert_eq!(e.spec().expect("spec").header(), "0 */5 * * * *");
        let e = entry(None, Some("1m 30s"));
        assert_eq!(field(std::slice::from_ref(&e)), None);
        assert_eq!(e.spec().expect("spec").header(), "@every 90s");
        assert_eq!(field(&[entry(Some("@hourly"), None)]), None);
    }

    #[test]
    fn bad_entries_name_their_field() {
        let cron = Some("schedule[0].cron".to_owned());
        assert_eq!(field(&[entry(Some("*/5 * * * *"), None)]), cron, "5 fields");
        assert_eq!(field(&[entry(Some("61 * * * * *"), None)]), cron);
        assert_eq!(field(&[entry(None, None)]), cron);
        let every = Some("schedule[0].every".to_owned());
        assert_eq!(field(&[entry(None, Some("500ms"))]), every);
        assert_eq!(field(&[entry(None, Some("soon"))]), every);
        let mut e = entry(Some("0 0 * * * *"), None);
        e.time_zone = Some("Mars/Base".into());
        assert_eq!(field(&[e]), Some("schedule[0].time_zone".into()));
        let mut e = entry(None, Some("1s"));
        e.subject = "weir.dlq.x".into();
        assert_eq!(
            field(&[entry(None, Some("1s")), e]),
            Some("schedule[1].subject".into())
        );
        let mut e = entry(None, Some("1s"));
        e.headers.insert("Nats-Msg-Id".into(), "x".into());
        assert_eq!(field(&[e]), Some("schedule[0].headers.Nats-Msg-Id".into()));
        let twice = [entry(None, Some("1s")), entry(None, Some("2s"))];
        assert_eq!(field(&twice), None, "indices differ");
        let mut a = entry(None, Some("1s"));
        a.name = Some("t".into());
        assert_eq!(field(&[a.clone(), a]), Some("schedule[1].name".into()));
    }

    #[test]
    fn specs_read_back_and_tell_their_next_time() {
        let stored = DateTime::from_timestamp(1_000, 0).expect("time");
        let every = Spec::from_header("@every 10s", None).expect("every");
        let now = DateTime::from_timestamp(1_025, 0).expect("time");
        assert_eq!(
            every.next_after(now, stored),
            DateTime::from_timestamp(1_030, 0)
        );
        let cron = Spec::from_header("30 * * * * *", None).expect("cron");
        let next = cron.next_after(now, stored).expect("fires");
        assert_eq!(next.timestamp() % 60, 30);
        let at = Spec::from_header("@at 2026-12-24T18:00:00+01:00", None).expect("at");
        assert_eq!(at.header(), "@at 2026-12-24T17:00:00Z");
        let berlin = Spec::from_header("0 0 9 * * *", Some("Europe/Berlin")).expect("tz");
        assert_eq!(berlin.time_zone(), Some("Europe/Berlin"));
        assert!(Spec::from_header("0 0 9 * * *", Some("Nowhere")).is_err());
    }

    #[test]
    fn instants_round_up_to_the_second() {
        let t = parse_instant("2026-12-24T18:00:00.2Z").expect("parses");
        assert_eq!(
            t.to_rfc3339_opts(SecondsFormat::Secs, true),
            "2026-12-24T18:00:01Z"
        );
    }
}
