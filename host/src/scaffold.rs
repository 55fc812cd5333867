//! `weir new NAME --lang rust|python|js|c [--batch]`: a plugin folder that
//! builds, has a fixture and its expected outputs, and passes `weir test` at
//! once; with `--batch`, its handler takes events in batches.
//!
//! The templates live in `host/templates/` and are compiled into the binary.
//! Generated projects point at the weir checkout the binary was built from (the
//! Rust SDK as a path dependency, the other languages' build script): set
//! `WEIR_REPO` to use another checkout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// `weir new`'s arguments.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: 1-64 of a-z, 0-9, '-' and '_', starting with a letter.
    pub name: String,
    /// The language of the handler.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// The folder to create (default: ./NAME); it must not exist, or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Write a batch handler (many events per call, a result per event) and
    /// turn `batch` on for its subscription.
    #[arg(long)]
    pub batch: bool,
}

/// The languages `weir new` writes plugins in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::C => "C",
        }
    }

    fn doc(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }
}

/// One file to write: its path inside the plugin folder, its text, and whether
/// it is a script to make executable.
#[derive(Debug)]
pub struct File {
    pub path: &'static str,
    pub text: String,
    pub executable: bool,
}

const EVENTS: &str = include_str!("../templates/common/events.json.tmpl");
const EXPECTED: &str = include_str!("../templates/common/expected.json.tmpl");
const MANIFEST: &str = include_str!("../templates/common/plugin.toml.tmpl");
const README: &str = include_str!("../templates/common/README.md.tmpl");
const GITIGNORE: &str = include_str!("../templates/common/gitignore.tmpl");
const BUILD_GUEST: &str = include_str!("../templates/common/build-guest.sh.tmpl");
const RUST_CARGO: &str = include_str!("../templates/rust/Cargo.toml.tmpl");
const RUST_LIB: &str = include_str!("../templates/rust/lib.rs.tmpl");
const RUST_BUILD: &str = include_str!("../templates/rust/build.sh.tmpl");
const RUST_BATCH: &str = include_str!("../templates/rust/lib_batch.rs.tmpl");
const PYTHON_APP: &str = include_str!("../templates/python/app.py.tmpl");
const PYTHON_BATCH: &str = include_str!("../templates/python/app_batch.py.tmpl");
const JS_APP: &str = include_str!("../templates/js/app.js.tmpl");
const JS_BATCH: &str = include_str!("../templates/js/app_batch.js.tmpl");
const JS_TEST: &str = include_str!("../templates/js/app.test.js.tmpl");
const JS_BATCH_TEST: &str = include_str!("../templates/js/app_batch.test.js.tmpl");
const JS_PACKAGE: &str = include_str!("../templates/js/package.json.tmpl");
const C_PLUGIN: &str = include_str!("../templates/c/plugin.c.tmpl");
const C_BATCH: &str = include_str!("../templates/c/plugin_batch.c.tmpl");

/// The `batch` line of plugin.toml's subscription: on with `--batch`, else a
/// pointer to it.
const BATCH_ON: &str =
    "batch = { max_events = 100, max_wait_ms = 20 }  # up to 100 events per call";
const BATCH_OFF: &str =
    "# batch = { max_events = 100, max_wait_ms = 20 }  # with a batch handler (weir new --batch)";

/// The weir checkout generated projects build against: `WEIR_REPO`, else the
/// one this binary was built from.
pub fn weir_repo() -> PathBuf {
    match std::env::var_os("WEIR_REPO") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    }
}

/// A name fit for a plugin and for every language's package: a letter, then
/// a-z, 0-9, '-' or '_' (64 at most).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = crate::config::is_plugin_name(name) && name.as_bytes()[0].is_ascii_lowercase();
    if !ok {
        bail!(
            "{name:?} is not a plugin name for `weir new`: use 1-64 of a-z, 0-9, '-' and '_', starting with a letter"
        );
    }
    Ok(())
}

/// The files of a new plugin `name` in `lang` (a batch handler with `batch`),
/// building against `repo`.
pub fn files(name: &str, lang: Lang, batch: bool, repo: &Path) -> anyhow::Result<Vec<File>> {
    check_name(name)?;
    let crate_name = name.replace('-', "_");
    let wasm = format!("{crate_name}.wasm");
    let isolation = match lang {
        Lang::Rust | Lang::C => {
            "isolation = \"event\"         # a fresh instance per event\n".to_owned()
        }
        Lang::Python | Lang::Js => format!(
            "# A {} runtime takes about a millisecond to start: keep warm instances\n\
             # (thrown away after any trap, timeout or limit hit).\n\
             isolation = \"reuse\"\nmax_events_per_instance = 10000\n",
            lang.title()
        ),
    };
    let doc = repo
        .join("docs")
        .join(format!("writing-a-handler-{}.md", lang.doc()));
    let vars = [
        ("{{name}}", name.to_owned()),
        ("{{crate}}", crate_name),
        ("{{wasm}}", wasm),
        ("{{language}}", lang.title().to_owned()),
        ("{{doc}}", doc.display().to_string()),
        ("{{isolation}}", isolation),
        ("{{batch}}", if batch { BATCH_ON } else { BATCH_OFF }.to_owned()),
        ("{{weir_repo}}", repo.display().to_string()),
        ("{{sdk_path}}", repo.join("sdk").display().to_string()),
        (
            "{{unit_tests}}",
            match lang {
                Lang::Js => "npm test                                                    # app.test.js under node, no build needed\n",
                _ => "",
            }
            .to_owned(),
        ),
    ];
    let fill = |template: &str| {
        let mut text = template.to_owned();
        for (key, value) in &vars {
            text = text.replace(key, value);
        }
        text
    };
    let file = |path, template: &str, executable| File {
        path,
        text: fill(template),
        executable,
    };
    let mut out = vec![
        file("plugin.toml", MANIFEST, false),
        file("fixtures/events.json", EVENTS, false),
        file("fixtures/expected.json", EXPECTED, false),
        file("README.md", README, false),
        file(".gitignore", GITIGNORE, false),
    ];
    let pick = |one, many| if batch { many } else { one };
    match lang {
        Lang::Rust => out.extend([
            file("Cargo.toml", RUST_CARGO, false),
            file("src/lib.rs", pick(RUST_LIB, RUST_BATCH), false),
            file("build.sh", RUST_BUILD, true),
        ]),
        Lang::Python => out.extend([
            file("app.py", pick(PYTHON_APP, PYTHON_BATCH), false),
            file("build.sh", BUILD_GUEST, true),
        ]),
        Lang::Js => out.extend([
            file("app.js", pick(JS_APP, JS_BATCH), false),
            file("app.test.js", pick(JS_TEST, JS_BATCH_TEST), false),
            file("package.json", JS_PACKAGE, false),
            file("build.sh", BUILD_GUEST, true),
        ]),
        Lang::C => out.extend([
            file("plugin.c", pick(C_PLUGIN, C_BATCH), false),
            file("build.sh", BUILD_GUEST, true),
        ]),
    }
    Ok(out)
}

/// Write a new plugin into `dir`, which must not exist or be empty.
pub fn create(
    name: &str,
    lang: Lang,
    batch: bool,
    dir: &Path,
    repo: &Path,
) -> anyhow::Result<Vec<File>> {
    let files = files(name, lang, batch, repo)?;
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} already exists and is not empty", dir.display());
        }
    }
    for f in &files {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &f.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if f.executable {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    Ok(files)
}

/// `weir new`; `json` (the global `--json`) prints what was created as JSON.
pub fn run(args: NewArgs, json: bool) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let repo = weir_repo();
    if !repo.join("sdk").join("Cargo.toml").is_file() {
        eprintln!(
            "warning: {} does not look like a weir checkout (no sdk/Cargo.toml): set WEIR_REPO to one",
            repo.display()
        );
    }
    let files = create(&args.name, args.lang, args.batch, &dir, &repo)?;
    let mut next = vec![format!("cd {}", dir.display())];
    if args.lang == Lang::Js {
        next.push("npm test".to_owned());
    }
    next.extend([
        "./build.sh".to_owned(),
        "weir test . -e fixtures/events.json --expect fixtures/expected.json".to_owned(),
    ]);
    if json {
        let report = serde_json::json!({
            "plugin": args.name,
            "lang": args.lang.doc(),
            "batch": args.batch,
            "dir": dir,
            "files": files.iter().map(|f| f.path).collect::<Vec<_>>(),
            "next": next,
        });
        println!("{report:#}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "created {} {}plugin {} in {}:",
        args.lang.title(),
        if args.batch { "batch " } else { "" },
        args.name,
        dir.display()
    );
    for f in &files {
        println!("  {}", f.path);
    }
    println!("next:");
    for step in &next {
        println!("  {step}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LANGS: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

    /// Every language, with and without `--batch`.
    fn shapes() -> impl Iterator<Item = (Lang, bool)> {
        LANGS.into_iter().flat_map(|l| [(l, false), (l, true)])
    }

    #[test]
    fn every_placeholder_is_filled() {
        for (lang, batch) in shapes() {
            for f in files("my-greeter", lang, batch, Path::new("/opt/weir")).unwrap() {
                assert!(!f.text.contains("{{"), "{lang:?} {}: {}", f.path, f.text);
            }
        }
    }

    #[test]
    fn manifest_parses_and_names_the_component() {
        for (lang, batch) in shapes() {
            let files = files("my-greeter", lang, batch, Path::new("/opt/weir")).unwrap();
            let manifest = files.iter().find(|f| f.path == "plugin.toml").unwrap();
            let parsed =
                crate::config::Manifest::parse(Path::new("plugin.toml"), &manifest.text, 512)
                    .unwrap_or_else(|e| panic!("{lang:?}: {e}\n{}", manifest.text));
            assert_eq!(parsed.name, "my-greeter");
            assert_eq!(parsed.wasm, Path::new("my_greeter.wasm"));
            assert_eq!(parsed.largest_batch() > 1, batch, "{lang:?}");
            let reuse = matches!(lang, Lang::Python | Lang::Js);
            assert_eq!(
                parsed.limits.isolation == crate::config::Isolation::Reuse,
                reuse,
                "{lang:?}"
            );
        }
    }

    #[test]
    fn fixtures_are_json_of_equal_length() {
        let files = files("g", Lang::C, false, Path::new("/r")).unwrap();
        let json = |p: &str| -> serde_json::Value {
            serde_json::from_str(&files.iter().find(|f| f.path == p).unwrap().text).unwrap()
        };
        let events = json("fixtures/events.json");
        let expected = json("fixtures/expected.json");
        assert_eq!(events.as_array().unwrap().len(), 3);
        assert_eq!(expected.as_array().unwrap().len(), 3);
        assert_eq!(events[0]["subject"], "g.in");
        assert_eq!(expected[0]["outputs"][0]["subject"], "g.out");
    }

    #[test]
    fn rust_projects_depend_on_this_checkouts_sdk() {
        let files = files("g", Lang::Rust, false, Path::new("/opt/weir")).unwrap();
        let cargo = files.iter().find(|f| f.path == "Cargo.toml").unwrap();
        assert!(
            cargo
                .text
                .contains("weir-sdk = { path = \"/opt/weir/sdk\" }")
        );
        let build = files.iter().find(|f| f.path == "build.sh").unwrap();
        assert!(build.executable);
        assert!(build.text.contains("release/g.wasm\" g.wasm"));
    }

    #[test]
    fn js_projects_unit_test_with_this_checkouts_sdk() {
        let files = files("g", Lang::Js, false, Path::new("/opt/weir")).unwrap();
        let find = |p: &str| files.iter().find(|f| f.path == p).unwrap();
        let package: serde_json::Value = serde_json::from_str(&find("package.json").text).unwrap();
        assert_eq!(
            package["type"], "module",
            "app.js is an ES module under node"
        );
        assert_eq!(
            package["scripts"]["test"],
            "node --import \"/opt/weir/sdk/js/register.js\" --test"
        );
        assert!(find("app.test.js").text.contains("from \"weir/testing\""));
        assert!(find("README.md").text.contains("npm test "));
        let python = files_of(Lang::Python);
        assert!(!python.iter().any(|f| f.path == "package.json"));
        assert!(!python.iter().any(|f| f.text.contains("npm test")));
    }

    fn files_of(lang: Lang) -> Vec<File> {
        files("g", lang, false, Path::new("/opt/weir")).unwrap()
    }

    #[test]
    fn batch_projects_write_a_batch_handler() {
        let handler = |lang, batch| {
            let files = files("g", lang, batch, Path::new("/r")).unwrap();
            let name = ["src/lib.rs", "app.py", "app.js", "plugin.c"];
            let f = files.iter().find(|f| name.contains(&f.path)).unwrap();
            f.text.clone()
        };
        assert!(handler(Lang::Rust, true).contains("batch_handler!(handle_all)"));
        assert!(handler(Lang::Python, true).contains("def handle_batch("));
        assert!(!handler(Lang::Python, false).contains("handle_batch"));
        assert!(handler(Lang::Js, true).contains("export function handleBatch("));
        assert!(handler(Lang::C, true).contains("weir_handle_batch("));
    }

    #[test]
    fn bad_names_and_busy_folders_are_refused() {
        for bad in ["", "Greeter", "9lives", "a.b", "a b", &"x".repeat(65)] {
            let err = files(bad, Lang::Python, false, Path::new("/r")).unwrap_err();
            assert!(
                err.to_string().contains("not a plugin name"),
                "{bad}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "x").unwrap();
        let err = create("g", Lang::C, false, dir.path(), Path::new("/r")).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(!dir.path().join("plugin.toml").exists());
    }

    #[test]
    fn create_writes_an_executable_build_script() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let into = dir.path().join("g");
        create("g", Lang::Js, false, &into, Path::new("/r")).unwrap();
        assert!(into.join("app.js").is_file());
        assert!(into.join("fixtures/expected.json").is_file());
        let mode = std::fs::metadata(into.join("build.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }
}
