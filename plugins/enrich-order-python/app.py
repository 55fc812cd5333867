"""`enrich-order-python`: prices an order, exactly like plugins/enrich-order (Rust).

`orders.created.<rest>` with
`{"id": "o-1", "customer": "c-9", "items": [{"sku": "A", "qty": 2, "unit_price": 12.5}]}`
becomes `orders.enriched.<rest>`: the same order (unknown fields kept) plus
`currency`, `subtotal`, `tax`, `total` (rounded to cents) and `item_count`. An order
whose total reaches `large_order_threshold` is also announced on `orders.large`.

Configuration (`[config]` in plugin.toml): `currency`, `tax_rate` (decimal, e.g.
"0.2"), `large_order_threshold` (number).
"""

import json
import math
import re

import weir_sdk as weir

CREATED = "orders.created."
ENRICHED = "orders.enriched."
LARGE = "orders.large"
U64_MAX = 2**64 - 1
# What Rust's `str::parse::<f64>` accepts (the non-finite spellings are refused later).
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def required(key: str) -> str:
    value = weir.config(key)
    if value is None or not value.strip():
        raise weir.Reject(f"config `{key}` is missing")
    return value.strip()


def number(key: str) -> float:
    raw = required(key)
    n = float(raw) if NUMBER.fullmatch(raw) else math.nan
    if not (math.isfinite(n) and n >= 0.0):
        raise weir.Reject(f"config `{key}` = {json.dumps(raw)} is not a non-negative number")
    return n


def cents(x: float) -> float:
    return weir.round_half_away(x, 2)


def reject(field: str, problem: str) -> weir.Reject:
    return weir.Reject(f"field `{field}` {problem}")


def show(value) -> str:
    """A JSON value as serde_json prints it in messages."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def as_f64(v):
    """The number as a float, or None (not a number, or out of float range)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        return float(v)
    except OverflowError:
        return None


def price(order: dict, tax_rate: float):
    """Checks the order's fields and prices it: (item_count, subtotal, tax, total)."""
    if "id" not in order:
        raise reject("id", "is missing")
    if not isinstance(order["id"], str) or not order["id"]:
        raise reject("id", "must be a non-empty string")
    if "items" not in order:
        raise reject("items", "is missing")
    items = order["items"]
    if not isinstance(items, list):
        raise reject("items", "must be an array")
    if not items:
        raise reject("items", "must not be empty")
    item_count = 0
    subtotal = 0.0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise reject(f"items[{i}]", "must be an object")
        if "qty" not in item:
            raise reject(f"items[{i}].qty", "is missing")
        q = item["qty"]
        if not (isinstance(q, int) and not isinstance(q, bool) and 0 < q <= U64_MAX):
            raise reject(f"items[{i}].qty", f"must be a positive integer, got {show(q)}")
        if "unit_price" not in item:
            raise reject(f"items[{i}].unit_price", "is missing")
        p = as_f64(item["unit_price"])
        if p is None or not math.isfinite(p) or p < 0.0:
            raise reject(f"items[{i}].unit_price", f"must be a non-negative number, got {show(item['unit_price'])}")
        item_count += q
        if item_count > U64_MAX:
            raise reject("items", "quantities overflow")
        subtotal += float(q) * p
    subtotal = cents(subtotal)
    tax = cents(subtotal * tax_rate)
    return item_count, subtotal, tax, cents(subtotal + tax)


def handle(event: weir.Event) -> list[weir.Message]:
    if not event.subject.startswith(CREATED):
        raise weir.Reject(f"unexpected subject {event.subject}")
    subject = ENRICHED + event.subject[len(CREATED):]

    order = event.json()
    if not isinstance(order, dict):
        raise weir.Reject("order must be a JSON object")
    if order.get("simulate") == "transient":
        raise weir.Retry("simulated transient failure")

    currency = required("currency")
    tax_rate = number("tax_rate")
    threshold = number("large_order_threshold")
    item_count, subtotal, tax, total = price(order, tax_rate)
    order_id = order["id"]

    weir.info(f"order {order_id}: {item_count} items, total {total:.2f} {currency}")

    if total >= threshold:
        large = weir.Message.json(LARGE, {"id": order_id, "total": total, "currency": currency})
        try:
            weir.publish(large.header("content-type", "application/json"))
        except weir.PublishError as e:
            raise weir.Reject(f"publish to {LARGE} refused: {e}") from None

    order["currency"] = currency
    order["subtotal"] = subtotal
    order["tax"] = tax
    order["total"] = total
    order["item_count"] = item_count
    return [weir.Message.json(subject, order).header("content-type", "application/json")]
