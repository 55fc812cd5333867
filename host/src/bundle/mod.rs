//! Bundles: a folder holding `plugin.toml`, the component it names and maybe
//! a `grant.jwt` — or the same packed in one tar ([`archive`]). Loading reads
//! them, checks the component's header and computes its SHA-256 (what grants
//! and the compile cache are keyed by).

pub mod archive;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Manifest};

/// The name of the manifest inside a bundle folder.
pub const MANIFEST: &str = "plugin.toml";

/// A bundle read from disk, not yet compiled.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle folder, or the archive file: what errors name (an entry of
    /// an archive as `<archive>/<entry>`).
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub wasm_path: PathBuf,
    pub wasm: Arc<[u8]>,
    pub sha256: [u8; 32],
    /// The `grant.jwt` token, trimmed, when the bundle has one.
    pub grant: Option<String>,
    /// Read from an archive (nothing can be written into it).
    pub archived: bool,
}

/// Only the bundle's `plugin.toml`, parsed and checked (a folder's wasm is
/// neither read nor hashed): for commands that need a plugin's name and
/// subscriptions, not its code.
pub fn read_manifest(dir: &Path, max_memory_mb: u32) -> Result<Manifest, ConfigError> {
    if archive::is_archive(dir) {
        return Ok(archive::read(dir, max_memory_mb)?.manifest);
    }
    let manifest_path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| ConfigError::new(&manifest_path, None, format!("cannot read: {e}")))?;
    Manifest::parse(&manifest_path, &text, max_memory_mb)
}

impl Bundle {
    /// Read the bundle in the folder (or archive file) `dir`. `max_memory_mb`
    /// is the host's cap on `memory_mb`.
    pub fn load(dir: &Path, max_memory_mb: u32) -> Result<Self, ConfigError> {
        if archive::is_archive(dir) {
            return Self::assemble(dir, archive::read(dir, max_memory_mb)?, true);
        }
        let manifest_path = dir.join(MANIFEST);
        let unpacked = {
            let manifest = read_manifest(dir, max_memory_mb)?;
            let wasm_path = dir.join(&manifest.wasm);
            let wasm = std::fs::read(&wasm_path).map_err(|e| {
                ConfigError::new(
                    &manifest_path,
                    Some("wasm"),
                    format!("cannot read {}: {e}", wasm_path.display()),
                )
            })?;
            archive::Unpacked {
                manifest,
                wasm,
                grant: read_grant(dir)?,
            }
        };
        Self::assemble(dir, unpacked, false)
    }

    /// The bundle in archive `bytes`, read from `path` (what errors name):
    /// the bytes checked are the bytes kept, for `weir deploy`.
    pub fn from_archive_bytes(
        path: &Path,
        bytes: &[u8],
        max_memory_mb: u32,
    ) -> Result<Self, ConfigError> {
        Self::assemble(path, archive::read_bytes(path, bytes, max_memory_mb)?, true)
    }

    fn assemble(
        dir: &Path,
        unpacked: archive::Unpacked,
        archived: bool,
    ) -> Result<Self, ConfigError> {
        let archive::Unpacked {
            manifest,
            wasm,
            grant,
        } = unpacked;
        let manifest_path = dir.join(MANIFEST);
        let wasm_path = dir.join(&manifest.wasm);
        check_component_header(&wasm).map_err(|msg| {
            ConfigError::new(
                &manifest_path,
                Some("wasm"),
                format!("{}: {msg}", wasm_path.display()),
            )
        })?;
        let sha256: [u8; 32] = Sha256::digest(&wasm).into();
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            wasm_path,
            wasm: wasm.into(),
            sha256,
            grant,
            archived,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// A folder's `grant.jwt`, trimmed, if it has one; an unreadable or
/// oversized one is an error naming it.
fn read_grant(dir: &Path) -> Result<Option<String>, ConfigError> {
    let path = dir.join(crate::auth::grant::GRANT_FILE);
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError::new(&path, None, format!("cannot read: {e}"))),
    };
    if meta.len() > crate::auth::grant::MAX_GRANT_FILE {
        return Err(ConfigError::new(
            &path,
            None,
            format!("{} bytes: too large for a grant", meta.len()),
        ));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::new(&path, None, format!("cannot read: {e}")))?;
    Ok(Some(text.trim().to_owned()))
}

/// Tell a core module or a stray file from a component before wasmtime does,
/// for an error a plugin author can act on.
fn check_component_header(bytes: &[u8]) -> Result<(), &'static str> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err("not a WebAssembly file");
    }
    // Bytes 4..8: version 1 + layer 0 is a core module; layer 1 a component.
    match (bytes[4..6] == [1, 0], bytes[6..8] == [0, 0]) {
        (true, true) => Err(
            "is a core WebAssembly module, not a component: build for wasm32-wasip2 or wrap it with `wasm-tools component new`",
        ),
        _ if bytes[6..8] == [1, 0] => Ok(()),
        _ => Err("unknown WebAssembly version or layer"),
    }
}

/// The bundles inside `dir`: every sub-folder that holds a plugin.toml and
/// every `.tar` file (a bundle archive), sorted by path so the load order is
/// stable.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, None, format!("cannot list plugin folder: {e}")))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.join(MANIFEST).is_file()
                || (path.is_file() && path.extension().is_some_and(|e| e == "tar"))
        })
        .collect();
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_modules_from_components() {
        assert!(check_component_header(b"\0asm\x0d\0\x01\0").is_ok());
        let e = check_component_header(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(e.contains("core WebAssembly module"));
        assert!(check_component_header(b"hello world").is_err());
    }
}
