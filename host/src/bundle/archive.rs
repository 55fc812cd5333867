//! Bundle archives: one plain tar holding a bundle's `plugin.toml`, the
//! component it names and its `grant.jwt` if it has one, so a bundle travels
//! as one file (`weir bundle pack`, and whatever accepts a bundle folder).
//!
//! Packing is reproducible: entries in a fixed order, no owner, mode 0644,
//! mtime 0 — the same folder gives the same bytes. Reading is strict, since
//! an archive may come from anywhere: every entry must be a regular file at a
//! plain relative path (no `..`, no absolute path, no link or device), named
//! once; sizes are capped; a truncated or corrupt archive is refused. Errors
//! name the archive and the entry.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use crate::auth::grant::GRANT_FILE;
use crate::config::{ConfigError, Manifest};

use super::MANIFEST;

/// The largest archive weir reads (a Python component is ~20 MB).
pub const MAX_ARCHIVE_BYTES: u64 = 256 * 1024 * 1024;
/// The largest `plugin.toml` or `grant.jwt` inside one.
const MAX_SMALL_ENTRY: u64 = 1024 * 1024;

/// The files of a bundle, read from an archive.
#[derive(Debug)]
pub struct Unpacked {
    pub manifest: Manifest,
    pub wasm: Vec<u8>,
    pub grant: Option<String>,
}

/// Whether `path` is to be read as an archive (a file, not a folder).
pub fn is_archive(path: &Path) -> bool {
    path.is_file()
}

/// Read and check the archive at `path`. `max_memory_mb`: the host's cap on
/// `memory_mb`, as for a folder.
pub fn read(path: &Path, max_memory_mb: u32) -> Result<Unpacked, ConfigError> {
    let fail = |entry: Option<&str>, why: String| {
        let at = match entry {
            Some(entry) => path.join(entry),
            None => path.to_path_buf(),
        };
        ConfigError::new(&at, None, why)
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(None, format!("cannot read: {e}")))?
        .len();
    if size > MAX_ARCHIVE_BYTES {
        return Err(fail(
            None,
            format!("{size} bytes: larger than a bundle archive may be ({MAX_ARCHIVE_BYTES})"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(None, format!("cannot read: {e}")))?;
    read_bytes(path, &bytes, max_memory_mb)
}

/// Check and unpack the archive `bytes`, read from `path` (what errors name).
pub fn read_bytes(path: &Path, bytes: &[u8], max_memory_mb: u32) -> Result<Unpacked, ConfigError> {
    let fail = |entry: Option<&str>, why: String| {
        let at = match entry {
            Some(entry) => path.join(entry),
            None => path.to_path_buf(),
        };
        ConfigError::new(&at, None, why)
    };
    let mut files = entries(bytes).map_err(|(entry, why)| fail(entry.as_deref(), why))?;
    let mut text = |name: &str| -> Result<Option<String>, ConfigError> {
        match files.remove(name) {
            None => Ok(None),
            Some(data) => String::from_utf8(data)
                .map(Some)
                .map_err(|_| fail(Some(name), "not UTF-8 text".into())),
        }
    };
    let manifest_text = text(MANIFEST)?.ok_or_else(|| {
        fail(
            None,
            format!("no {MANIFEST} in the archive (weir bundle pack DIR writes one)"),
        )
    })?;
    let grant = text(GRANT_FILE)?.map(|g| g.trim().to_owned());
    let manifest = Manifest::parse(&path.join(MANIFEST), &manifest_text, max_memory_mb)?;
    let wasm_name = entry_name(Path::new(&manifest.wasm)).ok_or_else(|| {
        ConfigError::new(
            &path.join(MANIFEST),
            Some("wasm"),
            format!("{:?}: not a plain relative path", manifest.wasm),
        )
    })?;
    let wasm = files.remove(&wasm_name).ok_or_else(|| {
        ConfigError::new(
            &path.join(MANIFEST),
            Some("wasm"),
            format!("{wasm_name}: not in the archive"),
        )
    })?;
    if let Some(name) = files.keys().next() {
        return Err(fail(
            Some(name),
            format!("not part of a bundle (only {MANIFEST}, its wasm and {GRANT_FILE})"),
        ));
    }
    Ok(Unpacked {
        manifest,
        wasm,
        grant,
    })
}

/// Every entry of a tar as (plain relative path → bytes), refusing anything
/// a bundle cannot hold. An error: the entry at fault (when there is one)
/// and why.
fn entries(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, (Option<String>, String)> {
    let corrupt = |e: std::io::Error| (None, format!("truncated or not a tar archive: {e}"));
    let mut archive = tar::Archive::new(bytes);
    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            // A folder entry ("./", "bundle/") holds nothing by itself.
            continue;
        }
        if !kind.is_file() {
            return Err((
                Some(raw),
                format!("a {kind:?} entry: only regular files belong in a bundle"),
            ));
        }
        let Some(name) = entry_name(Path::new(&raw)) else {
            return Err((
                Some(raw.clone()),
                format!("{raw:?}: not a plain relative path (absolute, or `..`)"),
            ));
        };
        let size = entry.header().size().map_err(corrupt)?;
        if (name == MANIFEST || name == GRANT_FILE) && size > MAX_SMALL_ENTRY {
            return Err((Some(name), format!("{size} bytes: too large")));
        }
        total = total.saturating_add(size);
        if total > MAX_ARCHIVE_BYTES {
            return Err((
                Some(name),
                "the entries add up to more than an archive may hold".into(),
            ));
        }
        // The header's size is the sender's word: never reserve past the
        // bytes there are.
        let mut data = Vec::with_capacity((size as usize).min(bytes.len()));
        entry
            .read_to_end(&mut data)
            .map_err(|e| (Some(name.clone()), format!("truncated: {e}")))?;
        if data.len() as u64 != size {
            return Err((Some(name), "truncated".into()));
        }
        if files.insert(name.clone(), data).is_some() {
            return Err((Some(name), "appears twice".into()));
        }
    }
    Ok(files)
}

/// A path's plain relative form (`a/b.wasm`, a leading `./` dropped), or
/// `None` for an absolute path, a `..`, or nothing at all.
fn entry_name(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Write the bundle folder `dir` (its `plugin.toml`, the wasm it names, and
/// `grant.jwt` when present) as an archive at `out`. The bundle is loaded
/// first, so a folder that would be refused is not packed.
pub fn pack(dir: &Path, out: &Path, max_memory_mb: u32) -> anyhow::Result<super::Bundle> {
    use anyhow::Context as _;
    let (bundle, bytes) = pack_bytes(dir, max_memory_mb)?;
    let tmp = out.with_extension("tar.partial");
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(bundle)
}

/// The archive of the bundle folder `dir`, in memory, and the bundle.
pub fn pack_bytes(dir: &Path, max_memory_mb: u32) -> anyhow::Result<(super::Bundle, Vec<u8>)> {
    use anyhow::Context as _;
    let bundle = super::Bundle::load(dir, max_memory_mb)?;
    let wasm_name = entry_name(Path::new(&bundle.manifest.wasm)).with_context(|| {
        format!(
            "{}: wasm: {:?} is not a plain relative path",
            dir.join(MANIFEST).display(),
            bundle.manifest.wasm
        )
    })?;
    let manifest = std::fs::read(dir.join(MANIFEST))
        .with_context(|| format!("cannot read {}", dir.join(MANIFEST).display()))?;
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (MANIFEST.to_owned(), manifest),
        (wasm_name, bundle.wasm.to_vec()),
    ];
    if let Some(grant) = &bundle.grant {
        files.push((GRANT_FILE.to_owned(), format!("{grant}\n").into_bytes()));
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data.as_slice())
            .with_context(|| format!("cannot add {name} to the archive"))?;
    }
    let bytes = tar.into_inner().context("cannot finish the archive")?;
    Ok((bundle, bytes))
}

/// Where `weir bundle pack` writes by default: `<name>-<version>.tar`.
pub fn default_name(manifest: &Manifest) -> PathBuf {
    PathBuf::from(format!("{}-{}.tar", manifest.name, manifest.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            // Write the name raw: `append_data` itself refuses `..`.
            let field = &mut header.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            tar.append(&header, *data).expect("append");
        }
        tar.into_inner().expect("tar")
    }

    #[test]
    fn plain_paths_only() {
        assert_eq!(entry_name(Path::new("./a.wasm")).as_deref(), Some("a.wasm"));
        assert_eq!(
            entry_name(Path::new("x/a.wasm")).as_deref(),
            Some("x/a.wasm")
        );
        assert_eq!(entry_name(Path::new("../a.wasm")), None);
        assert_eq!(entry_name(Path::new("/etc/passwd")), None);
        assert_eq!(entry_name(Path::new(".")), None);
    }

    #[test]
    fn traversal_links_and_duplicates_are_named() {
        let traversal = tar_of(&[("../evil", b"x", tar::EntryType::Regular)]);
        let (entry, why) = entries(&traversal).unwrap_err();
        assert_eq!(entry.as_deref(), Some("../evil"), "{why}");
        let link = tar_of(&[("plugin.toml", b"", tar::EntryType::Symlink)]);
        let (entry, why) = entries(&link).unwrap_err();
        assert_eq!(entry.as_deref(), Some("plugin.toml"));
        assert!(why.contains("regular files"), "{why}");
        let twice = tar_of(&[
            ("a", b"1", tar::EntryType::Regular),
            ("./a", b"2", tar::EntryType::Regular),
        ]);
        let (entry, why) = entries(&twice).unwrap_err();
        assert_eq!(entry.as_deref(), Some("a"));
        assert!(why.contains("twice"), "{why}");
    }

    #[test]
    fn a_truncated_archive_is_refused() {
        let whole = tar_of(&[("plugin.toml", &[b'x'; 2000], tar::EntryType::Regular)]);
        let (_, why) = entries(&whole[..1024]).unwrap_err();
        assert!(why.contains("truncated"), "{why}");
    }
}
