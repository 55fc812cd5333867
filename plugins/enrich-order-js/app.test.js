// Unit tests of the handler under plain node (no component, no host): `npm test`
// here, or `node --import <weir>/sdk/js/register.js --test`. The real component
// runs the same events through `weir test` (plugins/enrich-order/fixtures/).

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { Event, Reject, Retry } from "weir";
import * as testing from "weir/testing";

import { handle } from "./app.js";

beforeEach(() => {
  testing.reset();
  testing.setConfig("currency", "EUR");
  testing.setConfig("tax_rate", "0.2");
  testing.setConfig("large_order_threshold", "1000");
});

const order = (value) => new Event("orders.created.eu", JSON.stringify(value));
const json = (msg) => JSON.parse(new TextDecoder().decode(msg.payload));

test("prices an order and logs it", () => {
  const out = testing.run(handle, order({ id: "o-1", items: [{ sku: "A", qty: 2, unit_price: 12.5 }] }));
  assert.equal(out.length, 1);
  assert.equal(out[0].subject, "orders.enriched.eu");
  assert.deepEqual(out[0].headers, [["content-type", "application/json"]]);
  assert.deepEqual(json(out[0]), {
    id: "o-1",
    items: [{ sku: "A", qty: 2, unit_price: 12.5 }],
    currency: "EUR",
    subtotal: 25,
    tax: 5,
    total: 30,
    item_count: 2,
  });
  assert.deepEqual(testing.takeLogs(), [["info", "order o-1: 2 items, total 30.00 EUR"]]);
  assert.deepEqual(testing.takePublished(), []);
});

test("a large order is also published on orders.large", () => {
  testing.setConfig("currency", "USD");
  testing.run(handle, order({ id: "o-2", items: [{ sku: "C", qty: 3, unit_price: 400 }] }));
  const [large] = testing.takePublished();
  assert.equal(large.subject, "orders.large");
  assert.deepEqual(json(large), { id: "o-2", total: 1440, currency: "USD" });
});

test("bad orders are rejected, a transient failure retried", () => {
  assert.throws(() => handle(order({ id: "o-3", items: [] })), (e) => {
    assert.ok(e instanceof Reject);
    assert.equal(e.message, "field `items` must not be empty");
    return true;
  });
  assert.throws(() => handle(new Event("orders.created.eu", "not JSON")), Reject);
  assert.throws(() => handle(order({ id: "o-4", items: [], simulate: "transient" })), Retry);
});

test("missing configuration is a reject naming the key", () => {
  testing.removeConfig("tax_rate");
  assert.throws(
    () => handle(order({ id: "o-5", items: [{ sku: "A", qty: 1, unit_price: 1 }] })),
    { name: "Reject", message: "config `tax_rate` is missing" },
  );
});
