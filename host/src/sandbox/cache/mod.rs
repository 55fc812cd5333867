//! The compiled-component cache: `<dir>/<sha256 of wasm>-<engine hash>.cwasm`.
//!
//! Compiling a Python or JavaScript component takes seconds; loading its
//! compiled form takes milliseconds. Entries are written to a temporary file
//! and renamed into place, so a reader never maps a half-written file, and the
//! engine's compatibility hash is part of the name, so a file compiled with
//! other settings or another wasmtime is never fed to `deserialize_file`.
//!
//! The cache is bounded (`sandbox.cache_max_mb`): an entry's modification
//! time is its last use (set when it is written or loaded), and after each
//! write the least recently used entries are removed until the rest fit.
//! Removing a file another process has mapped is safe: its mapping stays.
//! `weir cache` (`cli::cache`) shows, prunes and clears it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The extension of cache entries; nothing else in the folder is one.
const EXTENSION: &str = "cwasm";
/// A temporary file older than this is a leftover of a writer that died.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Where and how much the runtime caches.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub max_bytes: u64,
    /// When this runtime started: an entry used since is one this process
    /// needs, and evicting it means the cap is too small.
    pub since: SystemTime,
}

pub fn load_or_compile(
    engine: &Engine,
    cache: Option<&Settings>,
    wasm: &[u8],
    sha256: &[u8; 32],
) -> anyhow::Result<Component> {
    let Some(cache) = cache else {
        return Ok(Component::new(engine, wasm)?);
    };
    let dir = cache.dir.as_path();
    let path = entry_path(engine, dir, sha256);
    if path.is_file() {
        // SAFETY: the file is named after the engine's compatibility hash and
        // was written by `precompile_component` of an engine with that hash
        // (below), then renamed into place; cache entries are never rewritten
        // in place (only their times are set), so the mapping cannot change
        // underneath.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                mark_used(&path);
                return Ok(component);
            }
            // Evicted by another process between the check and the open.
            Err(_) if !path.exists() => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compile cache entry");
            }
        }
    }
    let compiled = engine.precompile_component(wasm)?;
    match store(dir, &path, &compiled) {
        Ok(()) => evict_for(cache, &path),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "cannot write the compile cache");
        }
    }
    // SAFETY: `compiled` is this engine's own output from just above.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

fn entry_path(engine: &Engine, dir: &Path, sha256: &[u8; 32]) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    dir.join(format!(
        "{}-{:016x}.{EXTENSION}",
        hex::encode(sha256),
        hasher.finish()
    ))
}

fn store(dir: &Path, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot rename into {}", path.display()))?;
    Ok(())
}

/// Record a use: the entry's modification time is its last use.
fn mark_used(path: &Path) {
    let touched = std::fs::File::open(path).and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %path.display(), error = %e, "cannot mark a compile cache entry used");
    }
}

/// After writing `kept`: bring the cache under its cap, and say so when that
/// removed an entry this process has used (the cap is below what it needs,
/// and every start will compile again).
fn evict_for(cache: &Settings, kept: &Path) {
    match prune(&cache.dir, cache.max_bytes, Some(kept)) {
        Ok(pruned) => {
            for entry in &pruned.removed {
                if entry.last_used >= cache.since {
                    tracing::warn!(
                        path = %entry.path.display(),
                        "compile cache: removed an entry this process loaded, to stay under sandbox.cache_max_mb ({} MB): raise it, or its plugin compiles again on every start",
                        cache.max_bytes / (1024 * 1024)
                    );
                } else {
                    tracing::debug!(path = %entry.path.display(), bytes = entry.bytes, "compile cache: removed the least recently used entry");
                }
            }
        }
        Err(e) => {
            tracing::warn!(dir = %cache.dir.display(), error = %e, "cannot bound the compile cache");
        }
    }
}

/// One cached component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    /// When it was last written or loaded.
    #[serde(serialize_with = "rfc3339")]
    pub last_used: SystemTime,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

/// The entries in `dir`, least recently used first; none when it does not exist.
pub fn entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut found = Vec::new();
    for item in read_dir(dir)? {
        let item = item?;
        let path = item.path();
        if path.extension().is_none_or(|e| e != EXTENSION) {
            continue;
        }
        // Gone since the listing: another process evicted it.
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        found.push(Entry {
            path,
            bytes: meta.len(),
            last_used: meta.modified()?,
        });
    }
    found.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.path.cmp(&b.path)));
    Ok(found)
}

/// What a prune or a clear removed and left.
#[derive(Debug, Default, serde::Serialize)]
pub struct Pruned {
    pub removed: Vec<Entry>,
    pub freed_bytes: u64,
    /// Leftover temporary files of writers that died, removed.
    pub leftovers: usize,
    pub kept: usize,
    pub kept_bytes: u64,
}

/// Remove the least recently used entries of `dir` until the others total
/// at most `max_bytes` (never `keep`, the entry just written, even if it
/// alone is larger), and temporary files a writer left behind.
pub fn prune(dir: &Path, max_bytes: u64, keep: Option<&Path>) -> std::io::Result<Pruned> {
    let all = entries(dir)?;
    let mut total: u64 = all.iter().map(|e| e.bytes).sum();
    let mut pruned = Pruned::default();
    for entry in all {
        if total > max_bytes && keep != Some(entry.path.as_path()) {
            total -= entry.bytes;
            // Not removed here: another process removed it first.
            if remove(&entry.path)? {
                pruned.freed_bytes += entry.bytes;
                pruned.removed.push(entry);
            }
            continue;
        }
        pruned.kept += 1;
        pruned.kept_bytes += entry.bytes;
    }
    pruned.leftovers = remove_leftovers(dir, LEFTOVER_AGE)?;
    Ok(pruned)
}

/// Remove every entry of `dir` (and leftover temporary files).
pub fn clear(dir: &Path) -> std::io::Result<Pruned> {
    let mut pruned = Pruned::default();
    for entry in entries(dir)? {
        if remove(&entry.path)? {
            pruned.freed_bytes += entry.bytes;
            pruned.removed.push(entry);
        }
    }
    pruned.leftovers = remove_leftovers(dir, Duration::ZERO)?;
    Ok(pruned)
}

/// `fs::read_dir`, with a folder that does not exist read as empty.
fn read_dir(dir: &Path) -> std::io::Result<Vec<std::io::Result<std::fs::DirEntry>>> {
    match std::fs::read_dir(dir) {
        Ok(items) => Ok(items.collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Whether this call removed the file (`false`: someone else did first).
fn remove(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `tempfile`'s files (`.tmp…`) untouched for `age`: a writer died mid-write.
fn remove_leftovers(dir: &Path, age: Duration) -> std::io::Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    for item in read_dir(dir)? {
        let item = item?;
        if !item.file_name().to_string_lossy().starts_with(".tmp") {
            continue;
        }
        let Ok(modified) = item.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if now.duration_since(modified).unwrap_or_default() >= age && remove(&item.path())? {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of `kb` KiB last used `ago` seconds before now.
    fn entry(dir: &Path, name: &str, kb: usize, ago: u64) -> PathBuf {
        let path = dir.join(format!("{name}.{EXTENSION}"));
        std::fs::write(&path, vec![0u8; kb * 1024]).expect("write");
        let when = SystemTime::now() - Duration::from_secs(ago);
        std::fs::File::open(&path)
            .and_then(|f| f.set_modified(when))
            .expect("set mtime");
        path
    }

    fn names(list: &[Entry]) -> Vec<String> {
        list.iter()
            .map(|e| {
                e.path
                    .file_stem()
                    .expect("stem")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn prune_removes_the_least_recently_used_until_the_rest_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        entry(dir.path(), "old", 40, 300);
        entry(dir.path(), "mid", 40, 200);
        let new = entry(dir.path(), "new", 40, 100);
        std::fs::write(dir.path().join("notes.txt"), "not an entry").expect("write");
        assert_eq!(
            names(&entries(dir.path()).expect("list")),
            ["old", "mid", "new"]
        );

        // 120 KiB under a 100 KiB cap: the oldest goes.
        let pruned = prune(dir.path(), 100 * 1024, None).expect("prune");
        assert_eq!(names(&pruned.removed), ["old"]);
        assert_eq!((pruned.kept, pruned.kept_bytes), (2, 80 * 1024));
        // Marking `mid` used makes `new` the least recently used.
        mark_used(&dir.path().join(format!("mid.{EXTENSION}")));
        let pruned = prune(dir.path(), 50 * 1024, None).expect("prune");
        assert_eq!(names(&pruned.removed), ["new"]);
        // The entry just written stays even when it alone is over the cap.
        let pruned = prune(
            dir.path(),
            1,
            Some(&dir.path().join(format!("mid.{EXTENSION}"))),
        )
        .expect("prune");
        assert!(pruned.removed.is_empty());
        assert_eq!(pruned.kept, 1);
        assert!(!new.exists());
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn clear_removes_entries_and_leftovers_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        entry(dir.path(), "a", 1, 10);
        entry(dir.path(), "b", 2, 5);
        std::fs::write(dir.path().join(".tmpXyZ"), "half written").expect("write");
        std::fs::write(dir.path().join("keep.txt"), "x").expect("write");
        // A fresh temporary file may be a writer at work: prune keeps it.
        assert_eq!(
            prune(dir.path(), u64::MAX, None).expect("prune").leftovers,
            0
        );
        let cleared = clear(dir.path()).expect("clear");
        assert_eq!(names(&cleared.removed), ["a", "b"]);
        assert_eq!((cleared.freed_bytes, cleared.leftovers), (3 * 1024, 1));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["keep.txt"]);
        // A folder that does not exist is an empty cache.
        assert!(entries(&dir.path().join("none")).expect("list").is_empty());
    }
}
