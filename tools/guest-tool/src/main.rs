//! `weir-guest-tool`: the two steps of a C guest build that need WebAssembly
//! tooling, done with the same crates as `wit-bindgen c` and
//! `wasm-tools component new` — built in the workspace in seconds instead of
//! installing both CLIs (minutes each).
//!
//! ```text
//! weir-guest-tool bindgen-c WIT_DIR WORLD OUT_DIR
//!     C bindings of WORLD: <world>.h, <world>.c, <world>_component_type.o
//! weir-guest-tool component-new CORE.wasm OUT.wasm
//!     wrap a core module (wasm32-wasi, preview1) as a component, adapting
//!     preview1 imports with wasmtime's reactor adapter
//! ```

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use wit_bindgen_core::wit_parser::Resolve;

const USAGE: &str = "usage:
  weir-guest-tool bindgen-c WIT_DIR WORLD OUT_DIR
  weir-guest-tool component-new CORE.wasm OUT.wasm";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["bindgen-c", wit, world, out] => bindgen_c(Path::new(wit), world, Path::new(out)),
        ["component-new", core, out] => component_new(Path::new(core), Path::new(out)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-guest-tool: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bindgen_c(wit: &Path, world: &str, out: &Path) -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("cannot read the WIT package in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        // Rewrite only what changed, so that make-like freshness checks hold.
        if std::fs::read(&path).is_ok_and(|old| old == contents) {
            continue;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn component_new(core: &Path, out: &Path) -> anyhow::Result<()> {
    let module = std::fs::read(core).with_context(|| format!("cannot read {}", core.display()))?;
    if !module.starts_with(b"\0asm\x01\0\0\0") {
        bail!("{} is not a core WebAssembly module", core.display());
    }
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| {
            format!(
                "{}: no component type section (link the bindings' _component_type.o)",
                core.display()
            )
        })?
        .validate(true)
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
        .with_context(|| format!("cannot make a component of {}", core.display()))?;
    std::fs::write(out, component).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
