// Unit tests of the batch handler under plain node (no component, no host):
// `node --import <weir>/sdk/js/register.js --test`. The component runs the same
// events through `weir test plugins/batch-js --event fixtures/mixed.json`.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { Event, Message, Reject, Retry } from "weir";
import * as testing from "weir/testing";

import { handleBatch } from "./app.js";

beforeEach(() => testing.reset());

test("each event gets its own outcome", () => {
  const out = testing.runBatch(handleBatch, [
    new Event("batch.js.1", "ok:1"),
    new Event("batch.js.2", "retry:2"),
    new Event("batch.js.3", "retry:3", { attempt: 2 }),
    new Event("batch.js.4", "reject:4"),
  ]);
  assert.deepEqual(out[0], [new Message("batched.ok", "ok:1").header("Batch-Attempt", "1")]);
  assert.ok(out[1] instanceof Retry);
  assert.deepEqual(out[2], [new Message("batched.ok", "retry:3").header("Batch-Attempt", "2")]);
  assert.ok(out[3] instanceof Reject);
});

test("trap fails the whole call; short returns one result fewer", () => {
  const events = (kind) => [new Event("batch.js.1", "ok:1"), new Event("batch.js.2", `${kind}:2`)];
  assert.throws(() => testing.runBatch(handleBatch, events("trap")), /trap requested by payload/);
  assert.throws(() => testing.runBatch(handleBatch, events("short")), {
    message: "the batch handler returned 1 results for 2 events",
  });
});
