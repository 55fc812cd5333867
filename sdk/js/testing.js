// weir/testing: unit-test a JavaScript handler under plain node, without the
// component. Off WebAssembly, weir.js serves the host calls in-process:
// `config` reads what `setConfig` set, `publish` and `log` are kept for
// `takePublished` and `takeLogs`. `node --import <weir>/sdk/js/register.js
// --test` lets your modules (and this one) import "weir" and "weir/testing":
//
//   import { test } from "node:test";
//   import assert from "node:assert/strict";
//   import { Event, Reject } from "weir";
//   import * as testing from "weir/testing";
//   import { handle } from "./app.js";
//
//   test("rejects orders without an id", () => {
//     testing.reset();
//     testing.setConfig("currency", "EUR");
//     assert.throws(() => handle(new Event("orders.created.eu", "{}")), Reject);
//   });

import { _outputs, _standIn } from "./weir.js";

/** Forget all config, published messages and log lines. */
export function reset() {
  _standIn.config.clear();
  _standIn.published.length = 0;
  _standIn.logs.length = 0;
}

/** Give `config(key)` a value, as `[config]` in plugin.toml would (a string). */
export function setConfig(key, value) {
  _standIn.config.set(String(key), String(value));
}

/** Undo `setConfig(key, ...)`: `config(key, fallback)` gives the fallback. */
export function removeConfig(key) {
  _standIn.config.delete(String(key));
}

/** The messages given to `publish` since the last call, in order. */
export function takePublished() {
  return _standIn.published.splice(0);
}

/** The `[level, text]` lines logged since the last call, in order. */
export function takeLogs() {
  return _standIn.logs.splice(0);
}

/** Run `handle` on `event` as the host does: the messages it returned, as an
 * array (none, one or many), checked to be `Message`s. A `Retry` or `Reject`
 * it throws is thrown; published messages stay for `takePublished`. */
export function run(handle, event) {
  return _outputs(handle(event));
}
