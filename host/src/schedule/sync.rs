//! A plugin's `[[schedule]]` entries made the definitions in the stream, at
//! every load (start, rebuild, deployment): one definition per entry, written
//! only when it differs from what is stored (so ten hosts loading the same
//! plugin make one schedule, and a restart does not shift an `@every`
//! schedule's phase); the definitions of entries the plugin no longer has
//! are purged.

use std::collections::BTreeSet;

use anyhow::Context as _;
use async_nats::jetstream as js;
use futures::TryStreamExt as _;

use super::{DEFINITIONS, Definition, STREAM, ensure_stream, plugin_subject};
use crate::config::Manifest;
use crate::transport::server::{Features, SCHEDULE_RECURRING};
use crate::transport::{from_header_map, to_header_map};

/// The definitions `manifest` asks for.
pub fn wanted(manifest: &Manifest) -> Result<Vec<Definition>, String> {
    let mut out = Vec::new();
    for (i, entry) in manifest.schedule.iter().enumerate() {
        let spec = entry.spec().map_err(|e| format!("schedule[{i}]: {e}"))?;
        out.push(Definition {
            subject: plugin_subject(&manifest.name, &entry.key(i)),
            spec,
            target: entry.subject.clone(),
            payload: entry.payload.clone().into(),
            headers: entry
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            owner: Some(manifest.name.clone()),
            msg_id: None,
        });
    }
    Ok(out)
}

/// Whether this server can run the plugin's entries; the refusal names the
/// plugin, the entry and the server's version.
pub fn check_server(
    manifest: &Manifest,
    features: Features,
    jetstream: bool,
) -> Result<(), String> {
    let Some(first) = manifest.schedule.first() else {
        return Ok(());
    };
    let name = &manifest.name;
    let entry = first.key(0);
    if !jetstream {
        return Err(format!(
            "plugin {name:?}: schedule[0] ({entry:?}) needs JetStream, which the NATS server has not for this account"
        ));
    }
    if !features.recurring_schedules() {
        return Err(format!(
            "plugin {name:?}: schedule[0] ({entry:?}) needs nats-server {SCHEDULE_RECURRING} or later \
             (cron and @every message schedules); this one is {} \
             (scripts/setup.sh installs a current one into target/nats-server)",
            features.version
        ));
    }
    Ok(())
}

/// Write `manifest`'s definitions and purge the stale ones of its plugin.
/// A plugin with no entries costs one look at the stream (when it exists),
/// and never a refusal: nothing of it depends on schedules.
pub async fn sync_plugin(
    js: Option<&js::Context>,
    features: Features,
    manifest: &Manifest,
) -> Result<(), String> {
    check_server(manifest, features, js.is_some())?;
    let Some(js) = js else { return Ok(()) };
    let name = &manifest.name;
    if manifest.schedule.is_empty() {
        if !features.schedules() {
            return Ok(());
        }
        // Entries removed since the last load, if any.
        let Ok(stream) = js.get_stream(STREAM).await else {
            return Ok(());
        };
        if let Err(e) = purge_stale(&stream, name, &BTreeSet::new()).await {
            tracing::warn!(plugin = %name, error = %format!("{e:#}"), "cannot remove the plugin's old schedules");
        }
        return Ok(());
    }
    let wanted = wanted(manifest)?;
    let result = async {
        let stream = ensure_stream(js).await?;
        for def in &wanted {
            write(js, &stream, def).await?;
        }
        let keep = wanted.iter().map(|d| d.subject.clone()).collect();
        purge_stale(&stream, name, &keep).await
    }
    .await;
    result.map_err(|e| format!("plugin {name:?}: schedules: {e:#}"))
}

/// Publish `def` unless the stream holds it already, as it is.
async fn write(
    js: &js::Context,
    stream: &js::stream::Stream,
    def: &Definition,
) -> anyhow::Result<()> {
    if let Ok(stored) = stream.get_last_raw_message_by_subject(&def.subject).await {
        let headers = from_header_map(&stored.headers);
        // Header order is not kept by the server's header map: compare sorted.
        let sorted = |d: &Definition| {
            let mut d = d.clone();
            d.headers.sort();
            d
        };
        let same = Definition::from_stored(&def.subject, &headers, stored.payload)
            .is_ok_and(|stored| sorted(&stored) == sorted(def));
        if same {
            tracing::debug!(schedule = %def.subject, "schedule unchanged");
            return Ok(());
        }
    }
    publish(js, def).await?;
    tracing::info!(
        schedule = %def.subject, spec = %def.spec.header(), target = %def.target,
        "schedule written"
    );
    Ok(())
}

/// Publish a definition into [`STREAM`] and wait for the server to store it
/// (it refuses one whose schedule it cannot parse).
pub async fn publish(js: &js::Context, def: &Definition) -> anyhow::Result<()> {
    let msg = def.to_message();
    let headers = to_header_map(&msg.headers)?;
    let ack = js
        .publish_with_headers(msg.subject.clone(), headers, msg.payload)
        .await
        .with_context(|| format!("cannot publish the schedule {:?}", def.subject))?
        .await
        .with_context(|| {
            format!(
                "the server did not store the schedule {:?} ({})",
                def.subject,
                def.spec.header()
            )
        })?;
    if ack.stream != STREAM {
        anyhow::bail!(
            "the schedule {:?} went to stream {:?}, not {STREAM}",
            def.subject,
            ack.stream
        );
    }
    Ok(())
}

/// Purge the definitions of `plugin` whose subjects are not in `keep`.
async fn purge_stale(
    stream: &js::stream::Stream,
    plugin: &str,
    keep: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let filter = format!("{DEFINITIONS}.plugin.{plugin}.*");
    let stored: Vec<(String, usize)> = stream
        .info_with_subjects(&filter)
        .await
        .context("cannot list the plugin's schedules")?
        .try_collect()
        .await
        .context("cannot list the plugin's schedules")?;
    for (subject, _) in stored {
        if keep.contains(&subject) {
            continue;
        }
        stream
            .purge()
            .filter(subject.clone())
            .await
            .with_context(|| format!("cannot remove the schedule {subject:?}"))?;
        tracing::info!(plugin, schedule = %subject, "schedule removed: the plugin no longer has its entry");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        let text = format!(
            "name = \"reports\"\nversion = \"1\"\nwasm = \"r.wasm\"\n[[subscribe]]\nsubject = \"reports.tick\"\n{extra}"
        );
        Manifest::parse(std::path::Path::new("r/plugin.toml"), &text, 512).expect("manifest")
    }

    #[test]
    fn a_server_too_old_refuses_naming_plugin_entry_and_version() {
        let m = manifest(
            "[[schedule]]\nname = \"daily\"\ncron = \"@daily\"\nsubject = \"reports.tick\"\n",
        );
        let old = Features::of("2.12.1").expect("supported");
        let e = check_server(&m, old, true).expect_err("refused");
        assert!(
            e.contains("\"reports\"") && e.contains("\"daily\"") && e.contains("2.12.1"),
            "{e}"
        );
        let e =
            check_server(&m, Features::of("2.15.1").expect("ok"), false).expect_err("no JetStream");
        assert!(e.contains("JetStream"), "{e}");
        assert_eq!(
            check_server(&m, Features::of("2.15.1").expect("ok"), true),
            Ok(())
        );
        assert_eq!(
            check_server(&manifest(""), old, false),
            Ok(()),
            "no entries, no need"
        );
    }

    #[test]
    fn entries_become_definitions_named_by_plugin_and_entry() {
        let m = manifest(
            "[[schedule]]\nevery = \"30s\"\nsubject = \"reports.tick\"\n[[schedule]]\nname = \"b\"\ncron = \"0 0 9 * * *\"\ntime_zone = \"Europe/Berlin\"\nsubject = \"reports.tick\"\nheaders = { kind = \"morning\" }\n",
        );
        let defs = wanted(&m).expect("definitions");
        assert_eq!(defs[0].subject, "weir.schedule.plugin.reports.0");
        assert_eq!(defs[0].spec.header(), "@every 30s");
        assert_eq!(defs[1].subject, "weir.schedule.plugin.reports.b");
        assert_eq!(defs[1].spec.time_zone(), Some("Europe/Berlin"));
        assert_eq!(
            defs[1].headers,
            vec![("kind".to_owned(), "morning".to_owned())]
        );
        assert_eq!(defs[1].owner.as_deref(), Some("reports"));
    }
}
