//! `enrich-order`: prices an order.
//!
//! `orders.created.<rest>` with
//! `{"id": "o-1", "customer": "c-9", "items": [{"sku": "A", "qty": 2, "unit_price": 12.5}]}`
//! becomes `orders.enriched.<rest>`: the same order (unknown fields kept) plus
//! `currency`, `subtotal`, `tax`, `total` (rounded to cents) and `item_count`.
//! An order whose total reaches `large_order_threshold` is also announced on
//! `orders.large`.
//!
//! Configuration (`[config]` in plugin.toml): `currency`, `tax_rate` (decimal,
//! e.g. "0.2"), `large_order_threshold` (number).

use weir_sdk::serde::Serialize;
use weir_sdk::serde_json::{Map, Value};
use weir_sdk::{Event, Failure, Message};

const CREATED: &str = "orders.created.";
const ENRICHED: &str = "orders.enriched.";
const LARGE: &str = "orders.large";

/// The plugin's configuration, read per event from the host.
struct Settings {
    currency: String,
    tax_rate: f64,
    large_order_threshold: f64,
}

impl Settings {
    fn from_host() -> weir_sdk::Result<Self> {
        Ok(Settings {
            currency: required("currency")?,
            tax_rate: number("tax_rate")?,
            large_order_threshold: number("large_order_threshold")?,
        })
    }
}

fn required(key: &str) -> weir_sdk::Result<String> {
    match weir_sdk::config(key) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(Failure::reject(format!("config `{key}` is missing"))),
    }
}

fn number(key: &str) -> weir_sdk::Result<f64> {
    let raw = required(key)?;
    match raw.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(Failure::reject(format!(
            "config `{key}` = {raw:?} is not a non-negative number"
        ))),
    }
}

/// The announcement published on `orders.large`.
#[derive(Serialize)]
#[serde(crate = "weir_sdk::serde")]
struct LargeOrder<'a> {
    id: &'a str,
    total: f64,
    currency: &'a str,
}

/// Totals of a validated order.
struct Priced {
    item_count: u64,
    subtotal: f64,
    tax: f64,
    total: f64,
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn reject(field: &str, problem: &str) -> Failure {
    Failure::reject(format!("field `{field}` {problem}"))
}

/// Checks the order's fields and prices it.
fn price(order: &Map<String, Value>, tax_rate: f64) -> weir_sdk::Result<Priced> {
    match order.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {}
        Some(_) => return Err(reject("id", "must be a non-empty string")),
        None => return Err(reject("id", "is missing")),
    }
    let items = match order.get("items") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(reject("items", "must not be empty")),
        Some(_) => return Err(reject("items", "must be an array")),
        None => return Err(reject("items", "is missing")),
    };
    let mut item_count: u64 = 0;
    let mut subtotal = 0.0;
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(reject(&format!("items[{i}]"), "must be an object"));
        };
        let qty = match item.get("qty") {
            None => return Err(reject(&format!("items[{i}].qty"), "is missing")),
            Some(q) => match q.as_u64() {
                Some(q) if q > 0 => q,
                _ => {
                    return Err(reject(
                        &format!("items[{i}].qty"),
                        &format!("must be a positive integer, got {q}"),
                    ));
                }
            },
        };
        let unit_price = match item.get("unit_price") {
            None => return Err(reject(&format!("items[{i}].unit_price"), "is missing")),
            Some(p) => match p.as_f64() {
                Some(p) if p.is_finite() && p >= 0.0 => p,
                _ => {
                    return Err(reject(
                        &format!("items[{i}].unit_price"),
                        &format!("must be a non-negative number, got {p}"),
                    ));
                }
            },
        };
        item_count = item_count
            .checked_add(qty)
            .ok_or_else(|| reject("items", "quantities overflow"))?;
        subtotal += qty as f64 * unit_price;
    }
    let subtotal = cents(subtotal);
    let tax = cents(subtotal * tax_rate);
    Ok(Priced {
        item_count,
        subtotal,
        tax,
        total: cents(subtotal + tax),
    })
}

fn enrich(event: Event) -> weir_sdk::Result {
    let Some(rest) = event.subject().strip_prefix(CREATED) else {
        return Err(Failure::reject(format!(
            "unexpected subject {}",
            event.subject()
        )));
    };
    let subject = format!("{ENRICHED}{rest}");

    let mut order = match event.json::<Value>()? {
        Value::Object(order) => order,
        _ => return Err(Failure::reject("order must be a JSON object")),
    };
    if order.get("simulate").and_then(Value::as_str) == Some("transient") {
        return Err(Failure::retry("simulated transient failure"));
    }

    let settings = Settings::from_host()?;
    let priced = price(&order, settings.tax_rate)?;
    let id = order
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();

    weir_sdk::info!(
        "order {id}: {} items, total {:.2} {}",
        priced.item_count,
        priced.total,
        settings.currency
    );

    if priced.total >= settings.large_order_threshold {
        let large = LargeOrder {
            id: &id,
            total: priced.total,
            currency: &settings.currency,
        };
        let msg = Message::json(LARGE, &large)?.header("content-type", "application/json");
        weir_sdk::publish(msg)
            .map_err(|e| Failure::reject(format!("publish to {LARGE} refused: {e}")))?;
    }

    order.insert("currency".into(), Value::from(settings.currency));
    order.insert("subtotal".into(), Value::from(priced.subtotal));
    order.insert("tax".into(), Value::from(priced.tax));
    order.insert("total".into(), Value::from(priced.total));
    order.insert("item_count".into(), Value::from(priced.item_count));

    Ok(vec![
        Message::json(subject, &order)?.header("content-type", "application/json"),
    ])
}

weir_sdk::handler!(enrich);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::{Level, serde_json, testing};

    fn configure() {
        testing::reset();
        testing::set_config("currency", "EUR");
        testing::set_config("tax_rate", "0.2");
        testing::set_config("large_order_threshold", "100");
    }

    fn order(json: &str) -> Event {
        Event::new("orders.created.eu", json)
    }

    fn rejected(json: &str) -> String {
        let failure = enrich(order(json)).expect_err("must fail");
        assert!(failure.is_reject(), "{failure}");
        failure.message().to_owned()
    }

    #[test]
    fn prices_an_order() {
        configure();
        let out = enrich(order(
            r#"{"id": "o-1", "customer": "c-9", "items": [{"sku": "A", "qty": 2, "unit_price": 12.5}, {"sku": "B", "qty": 1, "unit_price": 6.25}]}"#,
        ))
        .expect("ok");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].subject, "orders.enriched.eu");
        assert_eq!(
            out[0].headers,
            vec![("content-type".to_owned(), "application/json".to_owned())]
        );
        let v: Value = serde_json::from_slice(&out[0].payload).expect("json");
        assert_eq!(v["id"], "o-1");
        assert_eq!(v["customer"], "c-9");
        assert_eq!(v["currency"], "EUR");
        assert_eq!(v["subtotal"], 31.25);
        assert_eq!(v["tax"], 6.25);
        assert_eq!(v["total"], 37.5);
        assert_eq!(v["item_count"], 3);
        assert_eq!(
            testing::take_logs(),
            vec![(
                Level::Info,
                "order o-1: 3 items, total 37.50 EUR".to_owned()
            )]
        );
        assert!(testing::take_published().is_empty());
    }

    #[test]
    fn rounds_to_cents() {
        configure();
        testing::set_config("tax_rate", "0.07");
        let out = enrich(order(
            r#"{"id": "o-2", "items": [{"sku": "A", "qty": 3, "unit_price": 0.333}]}"#,
        ))
        .expect("ok");
        let v: Value = serde_json::from_slice(&out[0].payload).expect("json");
        assert_eq!(v["subtotal"], 1.0);
        assert_eq!(v["tax"], 0.07);
        assert_eq!(v["total"], 1.07);
    }

    #[test]
    fn announces_large_orders() {
        configure();
        enrich(order(
            r#"{"id": "o-3", "items": [{"sku": "A", "qty": 10, "unit_price": 10}]}"#,
        ))
        .expect("ok");
        let published = testing::take_published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].subject, "orders.large");
        let v: Value = serde_json::from_slice(&published[0].payload).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"id": "o-3", "total": 120.0, "currency": "EUR"})
        );
    }

    #[test]
    fn rejects_bad_orders_naming_the_field() {
        configure();
        assert!(rejected("not json").contains("invalid JSON"));
        assert!(rejected("[1]").contains("object"));
        assert!(rejected(r#"{"items": [{"qty": 1, "unit_price": 1}]}"#).contains("`id`"));
        assert!(rejected(r#"{"id": 5, "items": []}"#).contains("`id`"));
        assert!(rejected(r#"{"id": "o"}"#).contains("`items`"));
        assert!(rejected(r#"{"id": "o", "items": []}"#).contains("`items`"));
        assert!(
            rejected(r#"{"id": "o", "items": [{"qty": 0, "unit_price": 1}]}"#)
                .contains("`items[0].qty`")
        );
        assert!(
            rejected(r#"{"id": "o", "items": [{"qty": 1, "unit_price": 1}, {"qty": 1.5, "unit_price": 1}]}"#)
                .contains("`items[1].qty`")
        );
        assert!(
            rejected(r#"{"id": "o", "items": [{"qty": 1, "unit_price": -1}]}"#)
                .contains("`items[0].unit_price`")
        );
        assert!(
            rejected(r#"{"id": "o", "items": [{"qty": 1}]}"#).contains("`items[0].unit_price`")
        );
    }

    #[test]
    fn rejects_bad_config_naming_the_key() {
        configure();
        let good = r#"{"id": "o", "items": [{"qty": 1, "unit_price": 1}]}"#;
        testing::remove_config("currency");
        assert!(rejected(good).contains("`currency`"));
        configure();
        testing::set_config("tax_rate", "twenty");
        assert!(rejected(good).contains("`tax_rate`"));
        configure();
        testing::remove_config("large_order_threshold");
        assert!(rejected(good).contains("`large_order_threshold`"));
    }

    #[test]
    fn simulated_transient_failure_is_a_retry() {
        configure();
        let failure = enrich(order(r#"{"id": "o", "simulate": "transient"}"#)).expect_err("fails");
        assert!(failure.is_retry());
        assert_eq!(failure.message(), "simulated transient failure");
    }
}
