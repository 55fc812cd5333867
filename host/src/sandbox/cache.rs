//! The compiled-component cache: `<dir>/<sha256 of wasm>-<engine hash>.cwasm`.
//!
//! Compiling a Python or JavaScript component takes seconds; loading its
//! compiled form takes milliseconds. Entries are written to a temporary file
//! and renamed into place, so a reader never maps a half-written file, and the
//! engine's compatibility hash is part of the name, so a file compiled with
//! other settings or another wasmtime is never fed to `deserialize_file`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

pub fn load_or_compile(
    engine: &Engine,
    dir: Option<&Path>,
    wasm: &[u8],
    sha256: &[u8; 32],
) -> anyhow::Result<Component> {
    let Some(dir) = dir else {
        return Ok(Component::new(engine, wasm)?);
    };
    let path = entry_path(engine, dir, sha256);
    if path.is_file() {
        // SAFETY: the file is named after the engine's compatibility hash and
        // was written by `precompile_component` of an engine with that hash
        // (below), then renamed into place; cache entries are never rewritten
        // in place, so the mapping cannot change underneath.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compile cache entry");
            }
        }
    }
    let compiled = engine.precompile_component(wasm)?;
    if let Err(e) = store(dir, &path, &compiled) {
        tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "cannot write the compile cache");
    }
    // SAFETY: `compiled` is this engine's own output from just above.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

fn entry_path(engine: &Engine, dir: &Path, sha256: &[u8; 32]) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    dir.join(format!(
        "{}-{:016x}.cwasm",
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
