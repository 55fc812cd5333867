//! `weir up --watch`, for plugin authors: the host watches each local bundle
//! (its folder, or its archive) through the OS's file notifications, and
//! when its wasm, `plugin.toml` or grant changes it loads it again and swaps
//! it in like a deployment: new events on the new build, those running on
//! the old one. A build that does not load (half written, not a component,
//! a bad manifest) is refused with its reason and the last good version
//! keeps running. Changes are gathered until the files are quiet for a
//! moment, so a build that writes in several steps is loaded once. A wasm
//! that plugin.toml names outside the bundle's folder (a build's output
//! folder) is watched where it lies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::Watcher as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::load::Loader;
use super::swap::{Origin, Swapper};
use crate::bundle::{self, archive};

/// How long the files must be quiet before a bundle is loaded again.
const QUIET: Duration = Duration::from_millis(250);

/// What was last seen of one bundle's files: what a change is logged as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    manifest: [u8; 32],
    wasm: [u8; 32],
    grant: [u8; 32],
}

/// Watch `bundles` (the paths the host loaded them from, with the name of
/// the plugin each runs; refused ones too, with none) until `stop`. Returns
/// once the watches are registered.
pub fn spawn(
    bundles: Vec<(PathBuf, Option<String>)>,
    loader: Loader,
    swapper: Arc<Swapper>,
    stop: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && !event.kind.is_access()
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })
    .context("cannot watch the bundle files")?;
    let mut seen = HashMap::new();
    let mut names: HashMap<PathBuf, String> = (bundles.iter())
        .filter_map(|(path, name)| Some((path.clone(), name.clone()?)))
        .collect();
    let bundles: Vec<PathBuf> = bundles.into_iter().map(|(path, _)| path).collect();
    // Wasm files that plugin.toml names outside their bundle's folder: their
    // own folder is watched too.
    let mut outside: HashMap<PathBuf, PathBuf> = HashMap::new();
    for path in &bundles {
        if let Some(wasm) = wasm_outside(path) {
            watch_wasm(&mut watcher, path, &wasm)?;
            outside.insert(path.clone(), wasm);
        }
        // An archive's folder is watched: an editor or a build replaces the
        // file (a new inode), which a watch on the file itself would miss.
        let watched = if archive::is_archive(path) {
            path.parent().unwrap_or(Path::new("."))
        } else {
            path.as_path()
        };
        watcher
            .watch(watched, notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", watched.display()))?;
        if let Some(s) = look(path) {
            seen.insert(path.clone(), s);
        }
        tracing::info!(bundle = %path.display(), "watching for changes");
    }
    tasks.spawn(async move {
        // Dropped at the end: the watches go with it.
        let mut watcher = watcher;
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                path = rx.recv() => match path {
                    Some(path) => path,
                    None => return,
                },
            };
            let mut changed = vec![first];
            // Until quiet, or stopped: files that keep changing do not hold
            // up a stopping host.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    next = tokio::time::timeout(QUIET, rx.recv()) => match next {
                        Ok(Some(path)) => changed.push(path),
                        _ => break,
                    },
                }
            }
            for bundle in &bundles {
                let wasm = outside.get(bundle);
                if changed.iter().any(|p| belongs(p, bundle, wasm)) {
                    // Nor does a compile under way.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        () = reload(bundle, &mut seen, &mut names, &loader, &swapper) => {}
                    }
                    // plugin.toml may name another wasm now.
                    if let Some(now) = wasm_outside(bundle)
                        && outside.get(bundle) != Some(&now)
                    {
                        if let Err(e) = watch_wasm(&mut watcher, bundle, &now) {
                            tracing::warn!("{e:#}");
                        }
                        outside.insert(bundle.clone(), now);
                    }
                }
            }
        }
    });
    Ok(())
}

/// Whether a changed `path` is one of `bundle`'s files; `wasm`: its wasm,
/// when that lies outside its folder (as [`wasm_outside`] gives it).
fn belongs(path: &Path, bundle: &Path, wasm: Option<&PathBuf>) -> bool {
    if archive::is_archive(bundle) {
        path == bundle
    } else {
        path.parent() == Some(bundle) || wasm.is_some_and(|w| canonical(path).as_ref() == Some(w))
    }
}

/// The wasm that a bundle folder's plugin.toml names, when it lies outside
/// the folder (`wasm = "../target/…/x.wasm"`): its folder canonical, so it
/// compares with the paths a watch on that folder reports.
fn wasm_outside(bundle: &Path) -> Option<PathBuf> {
    if archive::is_archive(bundle) {
        return None;
    }
    let text = std::fs::read_to_string(bundle.join(bundle::MANIFEST)).ok()?;
    let table = toml::from_str::<toml::Table>(&text).ok()?;
    let wasm = canonical(&bundle.join(table.get("wasm")?.as_str()?))?;
    (wasm.parent() != bundle.canonicalize().ok().as_deref()).then_some(wasm)
}

/// `path` with its folder canonical (the file itself may be missing).
fn canonical(path: &Path) -> Option<PathBuf> {
    let folder = path.parent()?.canonicalize().ok()?;
    Some(folder.join(path.file_name()?))
}

fn watch_wasm(
    watcher: &mut notify::RecommendedWatcher,
    bundle: &Path,
    wasm: &Path,
) -> anyhow::Result<()> {
    let folder = wasm.parent().unwrap_or(Path::new("."));
    watcher
        .watch(folder, notify::RecursiveMode::NonRecursive)
        .with_context(|| {
            format!(
                "cannot watch {} (the wasm of {})",
                folder.display(),
                bundle.display()
            )
        })?;
    tracing::info!(bundle = %bundle.display(), wasm = %wasm.display(), "watching the wasm outside the bundle");
    Ok(())
}

async fn reload(
    path: &Path,
    seen: &mut HashMap<PathBuf, Seen>,
    names: &mut HashMap<PathBuf, String>,
    loader: &Loader,
    swapper: &Swapper,
) {
    let Some(now) = look(path) else { return };
    let before = seen.get(path);
    if before == Some(&now) {
        return;
    }
    let what: Vec<&str> = match before {
        Some(b) => [
            (b.wasm != now.wasm, "the wasm"),
            (b.manifest != now.manifest, bundle::MANIFEST),
            (b.grant != now.grant, "grant.jwt"),
        ]
        .into_iter()
        .filter_map(|(changed, name)| changed.then_some(name))
        .collect(),
        None => vec!["the bundle"],
    };
    seen.insert(path.to_owned(), now);
    tracing::info!(bundle = %path.display(), changed = %what.join(", "), "bundle changed: loading it again");
    let loaded = {
        let loader = loader.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || loader.load_path(&path)).await
    };
    let plugin = match loaded {
        Ok(Ok(plugin)) => plugin,
        Ok(Err(refused)) => {
            tracing::error!(
                bundle = %path.display(),
                "the new build is refused, the last good version keeps running: {}", refused.reason
            );
            swapper.roster.refuse(refused);
            return;
        }
        Err(e) => {
            tracing::error!(bundle = %path.display(), "loading panicked: {e}");
            return;
        }
    };
    let name = plugin.name().to_owned();
    if let Some(ran) = names.get(path)
        && *ran != name
    {
        return refuse(
            swapper,
            path,
            &name,
            format!(
                "{}: name: the plugin {ran:?} was renamed to {name:?}; restart the host to rename a plugin",
                path.join(bundle::MANIFEST).display()
            ),
        );
    }
    match swapper
        .install(plugin, Origin::Local(path.to_owned()))
        .await
    {
        Ok(()) => {
            names.insert(path.to_owned(), name);
            // A refusal from before its name could be read, too.
            swapper.roster.forget_refusal_at(path);
        }
        Err(reason) => refuse(swapper, path, &name, reason),
    }
}

fn refuse(swapper: &Swapper, path: &Path, name: &str, reason: String) {
    tracing::error!(bundle = %path.display(), "the new build is refused: {reason}");
    swapper.roster.refuse(crate::roster::Refused {
        path: path.to_owned(),
        reason,
        name: Some(name.to_owned()),
        version: None,
        sha256: None,
    });
}

/// The digests of a bundle's files now; `None` when its manifest cannot be
/// read at all (mid-write: the next change tries again).
fn look(path: &Path) -> Option<Seen> {
    let digest = |p: &Path| -> [u8; 32] {
        std::fs::read(p)
            .map(|b| Sha256::digest(&b).into())
            .unwrap_or_default()
    };
    if archive::is_archive(path) {
        let whole = digest(path);
        return Some(Seen {
            manifest: whole,
            wasm: whole,
            grant: whole,
        });
    }
    let manifest_path = path.join(bundle::MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).ok()?;
    let wasm = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("wasm").and_then(|w| w.as_str()).map(|w| path.join(w)))
        .map(|w| digest(&w))
        .unwrap_or_default();
    Some(Seen {
        manifest: Sha256::digest(text.as_bytes()).into(),
        wasm,
        grant: digest(&path.join("grant.jwt")),
    })
}
