// Build a weir JavaScript plugin into a component:
//
//   node componentize.mjs WIT_DIR PLUGIN_DIR OUT.wasm
//
// PLUGIN_DIR holds app.js (exporting `handle(event)`) and any modules it imports
// by relative path. They are copied into a scratch folder beside the SDK (weir.js),
// with the bare import "weir" pointed at it, and an entry module that exports the
// world's `handle` is added; componentize-js's `componentize()` builds that (the
// jco CLI's componentize is broken with the preview2-shim it nests). No AOT
// (weval would download a binary).

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

async function jsFiles(dir, base = dir) {
  const found = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name === "node_modules" || entry.name.startsWith(".")) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await jsFiles(path, base)));
    else if (/\.m?js$/.test(entry.name)) found.push(relative(base, path));
  }
  return found;
}

await init;
const scratch = await mkdtemp(join(tmpdir(), "weir-js-"));
try {
  const files = await jsFiles(pluginDir);
  if (!files.includes("app.js")) {
    throw new Error(`${pluginDir}: no app.js (the module exporting handle(event))`);
  }
  for (const file of files) {
    let source = await readFile(join(pluginDir, file), "utf8");
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
  await cp(sdk, join(scratch, "weir.js"));
  await writeFile(
    join(scratch, "entry.js"),
    `import { dispatch } from "./weir.js";
import * as app from "./app/app.js";
if (typeof app.handle !== "function") throw new Error("app.js must export a function handle(event)");
export function handle(e) { return dispatch(app.handle, e); }
`,
  );
  const { component } = await componentize({
    sourcePath: join(scratch, "entry.js"),
    witPath: resolve(witDir),
    worldName: "handler",
    disableFeatures: ["http", "fetch-event"],
    enableAot: false,
  });
  await writeFile(out, component);
} finally {
  await rm(scratch, { recursive: true, force: true });
}
