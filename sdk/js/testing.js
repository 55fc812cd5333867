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

//
// A batch handler runs through `runBatch`, as the host runs it:
//
//   test("each order gets its own outcome", () => {
//     const [ok, bad] = testing.runBatch(handleBatch, [
//       new Event("orders.created.eu", '{"id": 1}'),
//       new Event("orders.created.eu", "{}"),
//     ]);
//     assert.equal(ok.length, 1);            // the messages of the first
//     assert.ok(bad instanceof Reject);      // the failure of the second
//   });

import { Failure, Reject, _batchEntry, _outputs, _standIn } from "./weir.js";

export { PUBLISH_IN_BATCH } from "./weir.js";

/** Forget all config, published messages and log lines. */
export function reset() {
  _standIn.config.clear();
  _standIn.published.length = 0;
  _standIn.logs.length = 0;
  _standIn.inBatch = false;
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

/** Run `handleBatch` on `events` as the host does: `publish` throws
 * `PublishError` (PUBLISH_IN_BATCH) meanwhile, and a result array of another
 * length than the events' throws an Error naming both counts (the host would
 * split the batch). Returns one entry per event: its messages as an array, or
 * its `Retry` or `Reject`; an entry of another type comes back as the `Reject`
 * the host would see. Whatever `handleBatch` throws is thrown. */
export function runBatch(handleBatch, events) {
  const list = Array.from(events);
  let out;
  _standIn.inBatch = true;
  try {
    out = handleBatch(list);
  } finally {
    _standIn.inBatch = false;
  }
  if (out === undefined || out === null || typeof out === "string" || !out[Symbol.iterator]) {
    throw new TypeError(`handleBatch must return an array (one entry per event), not ${out === null ? "null" : typeof out}`);
  }
  const results = Array.from(out);
  if (results.length !== list.length) {
    throw new Error(`the batch handler returned ${results.length} results for ${list.length} events`);
  }
  return results.map((entry, i) => {
    if (entry instanceof Failure) return entry;
    const r = _batchEntry(entry, i);
    return r.tag === "ok" ? r.val : new Reject(r.val.val);
  });
}
