//! Bundles: a folder holding `plugin.toml` and the component it names. Loading
//! reads both, checks the component's header and computes its SHA-256 (what
//! grants and the compile cache are keyed by).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Manifest};

/// The name of the manifest inside a bundle folder.
pub const MANIFEST: &str = "plugin.toml";

/// A bundle read from disk, not yet compiled.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub wasm_path: PathBuf,
    pub wasm: Arc<[u8]>,
    pub sha256: [u8; 32],
}

/// Only the bundle's `plugin.toml`, parsed and checked (its wasm is neither
/// read nor hashed): for commands that need a plugin's name and
/// subscriptions, not its code.
pub fn read_manifest(dir: &Path, max_memory_mb: u32) -> Result<Manifest, ConfigError> {
    let manifest_path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| ConfigError::new(&manifest_path, None, format!("cannot read: {e}")))?;
    Manifest::parse(&manifest_path, &text, max_memory_mb)
}

impl Bundle {
    /// Read the bundle in `dir`. `max_memory_mb` is the host's cap on `memory_mb`.
    pub fn load(dir: &Path, max_memory_mb: u32) -> Result<Self, ConfigError> {
        let manifest_path = dir.join(MANIFEST);
        let manifest = read_manifest(dir, max_memory_mb)?;
        let wasm_path = dir.join(&manifest.wasm);
        let wasm = std::fs::read(&wasm_path).map_err(|e| {
            ConfigError::new(
                &manifest_path,
                Some("wasm"),
                format!("cannot read {}: {e}", wasm_path.display()),
            )
        })?;
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
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
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

/// The bundle folders inside `dir`: every sub-folder that holds a plugin.toml,
/// sorted by path so the load order is stable.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, None, format!("cannot list plugin folder: {e}")))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join(MANIFEST).is_file())
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
