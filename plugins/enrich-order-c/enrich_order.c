/*
 * `enrich-order-c`: prices an order, exactly like plugins/enrich-order (Rust).
 *
 * `orders.created.<rest>` with
 * {"id": "o-1", "customer": "c-9", "items": [{"sku": "A", "qty": 2, "unit_price": 12.5}]}
 * becomes `orders.enriched.<rest>`: the same order (unknown fields kept) plus
 * `currency`, `subtotal`, `tax`, `total` (rounded to cents) and `item_count`. An
 * order whose total reaches `large_order_threshold` is also announced on
 * `orders.large`.
 *
 * Configuration ([config] in plugin.toml): `currency`, `tax_rate` (decimal,
 * e.g. "0.2"), `large_order_threshold` (number).
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "weir.h"

#define CREATED "orders.created."
#define ENRICHED "orders.enriched."
#define LARGE "orders.large"

/* `config(key)`, trimmed; NULL and a reject when missing or blank. */
static const char *required(const char *key, weir_failure **failure) {
    const char *value = weir_config(key);
    if (value) {
        while (isspace((unsigned char)*value)) value++;
        size_t len = strlen(value);
        while (len && isspace((unsigned char)value[len - 1])) len--;
        if (len) {
            char *trimmed = weir_alloc(len + 1);
            memcpy(trimmed, value, len);
            trimmed[len] = 0;
            return trimmed;
        }
    }
    *failure = weir_reject("config `%s` is missing", key);
    return NULL;
}

/* What Rust's `str::parse::<f64>` accepts: [+-] digits [. digits] [e[+-]digits],
 * or inf / infinity / nan (refused below as not finite). */
static bool rust_float(const char *s, double *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!strcasecmp(p, "inf") || !strcasecmp(p, "infinity") || !strcasecmp(p, "nan")) {
        *out = NAN;
        return true;
    }
    size_t digits = 0;
    while (isdigit((unsigned char)*p)) p++, digits++;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) p++, digits++;
    }
    if (!digits) return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!isdigit((unsigned char)*p)) return false;
        while (isdigit((unsigned char)*p)) p++;
    }
    if (*p) return false;
    *out = strtod(s, NULL);
    return true;
}

static bool number(const char *key, double *out, weir_failure **failure) {
    const char *raw = required(key, failure);
    if (!raw) return false;
    double n;
    if (rust_float(raw, &n) && isfinite(n) && n >= 0.0) {
        *out = n;
        return true;
    }
    weir_json *quoted = weir_json_new_string(raw);
    *failure = weir_reject("config `%s` = %s is not a non-negative number", key,
                           weir_json_dump(quoted, NULL));
    return false;
}

static double cents(double x) { return round(x * 100.0) / 100.0; }

/* A JSON value as serde_json prints it in messages. */
static const char *show(const weir_json *v) { return weir_json_dump(v, NULL); }

typedef struct {
    uint64_t item_count;
    double subtotal, tax, total;
} priced;

/* Checks the order's fields and prices it; NULL when fine. */
static weir_failure *price(const weir_json *order, double tax_rate, priced *out) {
    const weir_json *id = weir_json_get(order, "id");
    if (!id) return weir_reject("field `id` is missing");
    const char *id_text = weir_json_string(id);
    if (!id_text || !*id_text) return weir_reject("field `id` must be a non-empty string");
    const weir_json *items = weir_json_get(order, "items");
    if (!items) return weir_reject("field `items` is missing");
    if (!weir_json_is(items, WEIR_JSON_ARRAY)) return weir_reject("field `items` must be an array");
    if (weir_json_size(items) == 0) return weir_reject("field `items` must not be empty");
    uint64_t item_count = 0;
    double subtotal = 0.0;
    for (size_t i = 0; i < weir_json_size(items); i++) {
        const weir_json *item = weir_json_at(items, i);
        if (!weir_json_is(item, WEIR_JSON_OBJECT))
            return weir_reject("field `items[%zu]` must be an object", i);
        const weir_json *q = weir_json_get(item, "qty");
        if (!q) return weir_reject("field `items[%zu].qty` is missing", i);
        uint64_t qty;
        if (!weir_json_u64(q, &qty) || qty == 0)
            return weir_reject("field `items[%zu].qty` must be a positive integer, got %s", i, show(q));
        const weir_json *p = weir_json_get(item, "unit_price");
        if (!p) return weir_reject("field `items[%zu].unit_price` is missing", i);
        double unit_price;
        if (!weir_json_double(p, &unit_price) || !isfinite(unit_price) || unit_price < 0.0)
            return weir_reject("field `items[%zu].unit_price` must be a non-negative number, got %s", i,
                               show(p));
        if (item_count > UINT64_MAX - qty) return weir_reject("field `items` quantities overflow");
        item_count += qty;
        subtotal += (double)qty * unit_price;
    }
    out->item_count = item_count;
    out->subtotal = cents(subtotal);
    out->tax = cents(out->subtotal * tax_rate);
    out->total = cents(out->subtotal + out->tax);
    return NULL;
}

weir_failure *weir_handle(const weir_event *event, weir_outputs *out) {
    const char *subject = weir_event_subject(event);
    if (strncmp(subject, CREATED, strlen(CREATED)) != 0)
        return weir_reject("unexpected subject %s", subject);
    const char *enriched = weir_sprintf(ENRICHED "%s", subject + strlen(CREATED));

    weir_failure *failure = NULL;
    weir_json *order = weir_event_json(event, &failure);
    if (!order) return failure;
    if (!weir_json_is(order, WEIR_JSON_OBJECT)) return weir_reject("order must be a JSON object");
    const char *simulate = weir_json_string(weir_json_get(order, "simulate"));
    if (simulate && !strcmp(simulate, "transient")) return weir_retry("simulated transient failure");

    const char *currency = required("currency", &failure);
    if (!currency) return failure;
    double tax_rate, threshold;
    if (!number("tax_rate", &tax_rate, &failure)) return failure;
    if (!number("large_order_threshold", &threshold, &failure)) return failure;
    priced priced;
    if ((failure = price(order, tax_rate, &priced))) return failure;
    const char *id = weir_json_string(weir_json_get(order, "id"));

    weir_info("order %s: %llu items, total %.2f %s", id, (unsigned long long)priced.item_count,
              priced.total, currency);

    if (priced.total >= threshold) {
        weir_json *large = weir_json_new_object();
        weir_json_set(large, "id", weir_json_new_string(id));
        weir_json_set(large, "total", weir_json_new_double(priced.total));
        weir_json_set(large, "currency", weir_json_new_string(currency));
        weir_message *msg = weir_message_json(LARGE, large);
        const char *refused = weir_publish(weir_message_header(msg, "content-type", "application/json"));
        if (refused) return weir_reject("publish to " LARGE " refused: %s", refused);
    }

    weir_json_set(order, "currency", weir_json_new_string(currency));
    weir_json_set(order, "subtotal", weir_json_new_double(priced.subtotal));
    weir_json_set(order, "tax", weir_json_new_double(priced.tax));
    weir_json_set(order, "total", weir_json_new_double(priced.total));
    weir_json_set(order, "item_count", weir_json_new_u64(priced.item_count));
    weir_emit(out, weir_message_header(weir_message_json(enriched, order), "content-type",
                                       "application/json"));
    return NULL;
}
