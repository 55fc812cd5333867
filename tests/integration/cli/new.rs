//! Issue 9: what `weir new` writes. Its `.gitignore` keeps out what building,
//! testing (pytest's cache) and `weir up --dev` (its `.weir/` store) leave.

use super::*;

#[test]
fn the_scaffolds_gitignore_covers_build_test_and_dev_leftovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    for lang in ["python", "rust"] {
        let name = format!("greeter-{lang}");
        let out = weir_in(dir.path(), &["new", &name, "--lang", lang], &[]);
        assert!(out.status.success(), "{}", shown(&out));
        let plugin = dir.path().join(&name);
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .current_dir(&plugin)
                .output()
                .expect("run git")
        };
        assert!(git(&["init", "-q"]).status.success());
        let leftovers = [
            ".weir/nats/jetstream/x",
            ".pytest_cache/v/x",
            "__pycache__/app.cpython-312.pyc",
            "target/x",
            "greeter.wasm",
        ];
        for file in leftovers {
            let file = plugin.join(file);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, "x").expect("write");
        }
        let mut args = vec!["check-ignore", "--no-index", "-v", "-n"];
        args.extend(leftovers);
        args.push("plugin.toml");
        let out = git(&args);
        let ignored = stdout(&out);
        for file in leftovers {
            assert!(
                ignored
                    .lines()
                    .any(|l| l.ends_with(&format!("\t{file}")) && !l.starts_with("::")),
                "{lang}: {file} not ignored:\n{ignored}"
            );
        }
        assert!(
            ignored.lines().any(|l| l == "::\tplugin.toml"),
            "{lang}: plugin.toml must not be ignored:\n{ignored}"
        );
    }
}
