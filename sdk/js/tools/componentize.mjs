// Build a weir JavaScript plugin into a component:
//
//   node componentize.mjs WIT_DIR PLUGIN_DIR OUT.wasm
//
// PLUGIN_DIR holds app.js (exporting `handle(event)`, `handleBatch(events)` or
// both) and any modules it imports by relative path. They are copied into a
// scratch folder beside the SDK (weir.js), with the bare import "weir" pointed at
// it, and an entry module that binds the host's imports for the SDK and exports
// the world's functions is added; componentize-js's `componentize()` builds that
// (the jco CLI's componentize is broken with the preview2-shim it nests). No AOT
// (weval would download a binary).
//
// The world follows app.js's exports (read with es-module-lexer): `handle` alone
// builds world `handler`, as before batches; with `handleBatch` it is
// `handler-and-batch`, exporting `handle-batch` and `handle` (the app's own, or
// else a batch of one through `handleBatch`).
//
// Every module is first checked by node itself, so a syntax error is reported
// as `<file>:<line>:<col>: SyntaxError: ...` with its line, not as the module
// lexer's parse error (15 KB of minified source, at `app.js:1:1`). Any other
// failure prints its message alone, with paths in the scratch folder mapped
// back to the plugin's, and exits 1.

import { spawnSync } from "node:child_process";

import { componentize } from "@bytecodealliance/componentize-js";
import { init, parse } from "es-module-lexer";
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const [witDir, pluginDir, out] = process.argv.slice(2);
if (!witDir || !pluginDir || !out) {
  console.error("usage: node componentize.mjs WIT_DIR PLUGIN_DIR OUT.wasm");
  process.exit(2);
}
const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..", "weir.js");

/** The plugin's modules, relative to `base`; tests (`*.test.js`) are not part of it. */
async function jsFiles(dir, base = dir) {
  const found = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name === "node_modules" || entry.name.startsWith(".")) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await jsFiles(path, base)));
    else if (/\.m?js$/.test(entry.name) && !/\.test\.m?js$/.test(entry.name)) {
      found.push(relative(base, path));
    }
  }
  return found;
}

/** Node's verdict on `source` as an ES module: null when it parses, else the
 * error as `<path>:<line>:<col>: SyntaxError: ...`, the line and a caret. */
function syntaxError(path, source) {
  const check = spawnSync(process.execPath, ["--input-type=module", "--check"], {
    input: source,
    encoding: "utf8",
  });
  if (check.status === 0) return null;
  const lines = (check.stderr ?? "").split("\n");
  const at = lines.findIndex((l) => /^\[stdin\]:\d+$/.test(l));
  const message = lines.find((l) => /^\w*Error: /.test(l)) ?? "SyntaxError";
  if (at < 0) return `${path}: ${message}`;
  const line = lines[at].slice("[stdin]:".length);
  const code = lines[at + 1] ?? "";
  const caret = lines[at + 2] ?? "";
  const column = Math.max(caret.indexOf("^"), 0) + 1;
  return `${path}:${line}:${column}: ${message}\n  ${code}\n  ${caret}`;
}

await init;
const scratch = await mkdtemp(join(tmpdir(), "weir-js-"));
try {
  const files = await jsFiles(pluginDir);
  if (!files.includes("app.js")) {
    throw new Error(`${pluginDir}: no app.js (the module exporting handle(event))`);
  }
  const sources = new Map();
  for (const file of files) {
    const path = join(resolve(pluginDir), file);
    const source = await readFile(path, "utf8");
    const error = syntaxError(path, source);
    if (error) throw new Error(error);
    sources.set(file, source);
  }
  for (const file of files) {
    let source = sources.get(file);
    // Point the bare specifier "weir" at the SDK copy, from the end backwards so
    // that offsets stay valid.
    const [imports] = parse(source, file);
    // app files live under app/ in the scratch tree, the SDK at its root.
    const sdkPath = "../".repeat(file.split(sep).length) + "weir.js";
    for (const imp of [...imports].reverse()) {
      if (imp.n === "weir") source = source.slice(0, imp.s) + sdkPath + source.slice(imp.e);
    }
    await mkdir(dirname(join(scratch, "app", file)), { recursive: true });
    await writeFile(join(scratch, "app", file), source);
  }
  // Which of handle and handleBatch app.js exports decides the world.
  const [, appExports] = parse(sources.get("app.js"), "app.js");
  const names = new Set(appExports.map((e) => e.n));
  const batch = names.has("handleBatch");
  await cp(sdk, join(scratch, "weir.js"));
  // The SDK imports nothing: bind.js gives it the component's host imports,
  // and is imported first, so they are bound before any plugin module runs.
  await writeFile(
    join(scratch, "bind.js"),
    `import { config, log, publish } from "weir:plugin/host@0.1.0";
import { _bindHost } from "./weir.js";
_bindHost({ config, log, publish });
`,
  );
  let entry;
  if (!batch) {
    entry = `import "./bind.js";
import { dispatch } from "./weir.js";
import * as app from "./app/app.js";
if (typeof app.handle !== "function") throw new Error("app.js must export a function handle(event) or handleBatch(events)");
export function handle(e) { return dispatch(app.handle, e); }
`;
  } else {
    const handle = names.has("handle")
      ? `if (typeof app.handle !== "function") throw new Error("app.js: handle must be a function handle(event)");
export function handle(e) { return dispatch(app.handle, e); }`
      : `export function handle(e) { return dispatchOne(app.handleBatch, e); }`;
    entry = `import "./bind.js";
import { dispatch, dispatchBatch, dispatchOne } from "./weir.js";
import * as app from "./app/app.js";
if (typeof app.handleBatch !== "function") throw new Error("app.js: handleBatch must be a function handleBatch(events)");
export function handleBatch(events) { return dispatchBatch(app.handleBatch, events); }
${handle}
`;
  }
  await writeFile(join(scratch, "entry.js"), entry);
  const { component } = await componentize({
    sourcePath: join(scratch, "entry.js"),
    witPath: resolve(witDir),
    worldName: batch ? "handler-and-batch" : "handler",
    disableFeatures: ["http", "fetch-event"],
    enableAot: false,
  });
  await writeFile(out, component);
} catch (e) {
  // Messages name modules by their place in the scratch tree (app/<file>):
  // name the plugin's own files instead.
  const plugin = resolve(pluginDir) + sep;
  const message = String(e instanceof Error ? e.message : e)
    .replaceAll(scratch + sep, "")
    .replace(/(^|[\s(@])app\//gm, `$1${plugin}`);
  console.error(`error: ${message}`);
  process.exitCode = 1;
} finally {
  await rm(scratch, { recursive: true, force: true });
}
