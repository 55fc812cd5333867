// `enrich-order-js`: prices an order, exactly like plugins/enrich-order (Rust).
//
// `orders.created.<rest>` with
// `{"id": "o-1", "customer": "c-9", "items": [{"sku": "A", "qty": 2, "unit_price": 12.5}]}`
// becomes `orders.enriched.<rest>`: the same order (unknown fields kept) plus
// `currency`, `subtotal`, `tax`, `total` (rounded to cents) and `item_count`. An
// order whose total reaches `large_order_threshold` is also announced on
// `orders.large`.
//
// Configuration (`[config]` in plugin.toml): `currency`, `tax_rate` (decimal, e.g.
// "0.2"), `large_order_threshold` (number).

import {
  Message,
  PublishError,
  Reject,
  Retry,
  config,
  info,
  publish,
  roundHalfAway,
} from "weir";

const CREATED = "orders.created.";
const ENRICHED = "orders.enriched.";
const LARGE = "orders.large";
// What Rust's `str::parse::<f64>` accepts (non-finite spellings are refused later).
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|infinity|nan)$/i;
const INTEGER = /^-?\d+$/;
const U64_MAX = 18446744073709551615n;

function required(key) {
  const value = config(key);
  if (value == null || value.trim() === "") throw new Reject(`config \`${key}\` is missing`);
  return value.trim();
}

function number(key) {
  const raw = required(key);
  const n = NUMBER.test(raw) ? parseFloat(raw.replace(/^([+-]?)inf$/i, "$1Infinity")) : NaN;
  if (!(Number.isFinite(n) && n >= 0)) {
    throw new Reject(`config \`${key}\` = ${JSON.stringify(raw)} is not a non-negative number`);
  }
  return n;
}

const cents = (x) => roundHalfAway(x, 2);
const reject = (field, problem) => new Reject(`field \`${field}\` ${problem}`);
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

/** A JSON value as serde_json prints it in messages. */
const show = (v) => JSON.stringify(v);

/** Checks the order's fields and prices it. */
function price(order, taxRate, qtyText) {
  if (!("id" in order)) throw reject("id", "is missing");
  if (typeof order.id !== "string" || order.id === "") {
    throw reject("id", "must be a non-empty string");
  }
  if (!("items" in order)) throw reject("items", "is missing");
  const items = order.items;
  if (!Array.isArray(items)) throw reject("items", "must be an array");
  if (items.length === 0) throw reject("items", "must not be empty");
  let itemCount = 0n;
  let subtotal = 0;
  items.forEach((item, i) => {
    if (!isObject(item)) throw reject(`items[${i}]`, "must be an object");
    if (!("qty" in item)) throw reject(`items[${i}].qty`, "is missing");
    const q = item.qty;
    const text = qtyText.get(item);
    const integral =
      typeof q === "number" && (text !== undefined ? INTEGER.test(text) : Number.isInteger(q));
    const exact = integral && text !== undefined ? BigInt(text) : integral ? BigInt(q) : 0n;
    if (!(integral && exact > 0n && exact <= U64_MAX)) {
      throw reject(`items[${i}].qty`, `must be a positive integer, got ${text ?? show(q)}`);
    }
    if (!("unit_price" in item)) throw reject(`items[${i}].unit_price`, "is missing");
    const p = item.unit_price;
    if (!(typeof p === "number" && Number.isFinite(p) && p >= 0)) {
      throw reject(`items[${i}].unit_price`, `must be a non-negative number, got ${show(p)}`);
    }
    itemCount += exact;
    if (itemCount > U64_MAX) throw reject("items", "quantities overflow");
    subtotal += Number(exact) * p;
  });
  subtotal = cents(subtotal);
  const tax = cents(subtotal * taxRate);
  return { itemCount, subtotal, tax, total: cents(subtotal + tax) };
}

export function handle(event) {
  if (!event.subject.startsWith(CREATED)) {
    throw new Reject(`unexpected subject ${event.subject}`);
  }
  const subject = ENRICHED + event.subject.slice(CREATED.length);

  // JSON.parse loses the difference between `2` and `2.0`, which Rust's `as_u64`
  // sees: keep the source text of every `qty` where the engine's reviver gives it.
  const qtyText = new WeakMap();
  const order = event.json(function (key, value, context) {
    if (key === "qty" && typeof context?.source === "string" && isObject(this)) {
      qtyText.set(this, context.source);
    }
    return value;
  });
  if (!isObject(order)) throw new Reject("order must be a JSON object");
  if (order.simulate === "transient") throw new Retry("simulated transient failure");

  const currency = required("currency");
  const taxRate = number("tax_rate");
  const threshold = number("large_order_threshold");
  const { itemCount, subtotal, tax, total } = price(order, taxRate, qtyText);
  const id = order.id;

  info(`order ${id}: ${itemCount} items, total ${total.toFixed(2)} ${currency}`);

  if (total >= threshold) {
    const large = Message.json(LARGE, { id, total, currency }).header(
      "content-type",
      "application/json",
    );
    try {
      publish(large);
    } catch (e) {
      if (e instanceof PublishError) throw new Reject(`publish to ${LARGE} refused: ${e.message}`);
      throw e;
    }
  }

  order.currency = currency;
  order.subtotal = subtotal;
  order.tax = tax;
  order.total = total;
  order.item_count = Number(itemCount); // an integer, exact up to 2^53
  return [Message.json(subject, order).header("content-type", "application/json")];
}
