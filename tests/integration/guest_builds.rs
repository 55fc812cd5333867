//! Issue 9: a plugin that does not build says where, in a few lines: a
//! JavaScript or Python syntax error through `scripts/build-guest.sh` (what
//! a `weir new` plugin's build.sh runs) is `<file>:<line>:<col>:` with the
//! error, the line and a caret, with no lexer source and no Rust backtrace
//! even with `RUST_BACKTRACE=1`.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// A plugin folder `name` in `dir` with `files` and a plugin.toml.
fn plugin(dir: &Path, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).expect("create plugin dir");
    std::fs::write(
        root.join("plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\nwasm = \"{name}.wasm\"\n[[subscribe]]\nsubject = \"x\"\n"
        ),
    )
    .expect("write plugin.toml");
    for (file, text) in files {
        std::fs::write(root.join(file), text).expect("write source");
    }
    root
}

/// Build `dir` and expect it to fail; its stderr, checked to be short and
/// free of backtraces and minified source.
fn failed_build(dir: &Path) -> String {
    let out = Command::new(repo_root().join("scripts/build-guest.sh"))
        .arg(dir)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run build-guest.sh");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().count() <= 12 && stderr.len() < 2048,
        "{} lines, {} bytes:\n{stderr}",
        stderr.lines().count(),
        stderr.len()
    );
    for noise in [
        "Stack backtrace",
        "componentize_py::",
        "lexer.js",
        "Node.js v",
    ] {
        assert!(!stderr.contains(noise), "{noise}:\n{stderr}");
    }
    let wasm = std::fs::read_dir(dir)
        .expect("list plugin")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".wasm"))
        .count();
    assert_eq!(wasm, 0, "a failed build leaves no component");
    stderr
}

#[test]
fn a_javascript_syntax_error_names_its_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = plugin(
        dir.path(),
        "broken-js",
        &[(
            "app.js",
            "import { Message } from \"weir\";\n\nexport function handle(event) {\n  return [new Message(\"out\", `${event.subject)];\n}\n",
        )],
    );
    let stderr = failed_build(&app);
    let file = app.join("app.js");
    assert!(
        stderr.contains(&format!(
            "error: {}:4:33: SyntaxError: Missing }} in template expression",
            file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("  return [new Message(\"out\", `${event.subject)];"),
        "{stderr}"
    );

    // A module app.js imports is checked as well, and named.
    let lib = plugin(
        dir.path(),
        "broken-lib-js",
        &[
            (
                "app.js",
                "import { greet } from \"./lib.js\";\nexport function handle(event) {\n  return greet(event);\n}\n",
            ),
            ("lib.js", "export function greet(event) {\n  return [;\n}\n"),
        ],
    );
    let stderr = failed_build(&lib);
    assert!(
        stderr.contains(&format!(
            "error: {}:2:11: SyntaxError: Unexpected token ';'",
            lib.join("lib.js").display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_python_syntax_error_names_its_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = plugin(
        dir.path(),
        "broken-python",
        &[(
            "app.py",
            "import weir_sdk as weir\n\n\ndef handle(event):\n    return [weir.Message(\"out\", event.payload)\n",
        )],
    );
    let stderr = failed_build(&app);
    assert!(
        stderr.contains(&format!(
            "error: {}:5:12: SyntaxError: '[' was never closed",
            app.join("app.py").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n      return [weir.Message(\"out\", event.payload)\n             ^"),
        "{stderr}"
    );
}
