/*
 * weir SDK for C: write an event handler as one function over an event.
 *
 * A plugin defines
 *
 *     weir_failure *weir_handle(const weir_event *event, weir_outputs *out);
 *
 * which adds the messages to publish with weir_emit() and returns NULL, or
 * returns weir_retry(...) (transient: the host retries by the plugin's policy)
 * or weir_reject(...) (permanent: dead-lettered at once):
 *
 *     #include "weir.h"
 *
 *     weir_failure *weir_handle(const weir_event *event, weir_outputs *out) {
 *         weir_failure *failure = NULL;
 *         weir_json *order = weir_event_json(event, &failure);  // bad JSON: a reject
 *         if (!order) return failure;
 *         const char *id = weir_json_string(weir_json_get(order, "id"));
 *         if (!id) return weir_reject("field `id` is missing");
 *         weir_info("order %s", id);
 *         weir_emit(out, weir_message_header(weir_message_json("orders.seen", order),
 *                                            "content-type", "application/json"));
 *         return NULL;
 *     }
 *
 * Effects are transactional: messages emitted *and* published leave the host
 * only if weir_handle returns NULL.
 *
 * Memory: everything the SDK hands out (strings, messages, JSON values,
 * failures, weir_alloc) lives until the event ends and is freed then, in one
 * go: never free it yourself. Strings are NUL-terminated UTF-8.
 *
 * Build with scripts/build-guest.sh DIR (clang-19 for wasm32-wasi, then the
 * generated `wit-bindgen c` bindings and the component wrapper; you never
 * touch the generated bindings).
 */
#ifndef WEIR_H
#define WEIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_event weir_event;
typedef struct weir_message weir_message;
typedef struct weir_outputs weir_outputs;
typedef struct weir_failure weir_failure;
typedef struct weir_json weir_json;

/* ---- the handler you write ------------------------------------------------ */

/* Handle one event: weir_emit() the outputs and return NULL, or return a failure. */
weir_failure *weir_handle(const weir_event *event, weir_outputs *out);

/* ---- failures ------------------------------------------------------------- */

/* Transient: the host retries the event (printf-style message). */
weir_failure *weir_retry(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Permanent: the host dead-letters the event at once (printf-style message). */
weir_failure *weir_reject(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool weir_failure_is_retry(const weir_failure *f);
const char *weir_failure_message(const weir_failure *f);

/* ---- the event ------------------------------------------------------------ */

const char *weir_event_id(const weir_event *e);        /* stable across redeliveries */
const char *weir_event_subject(const weir_event *e);
const uint8_t *weir_event_payload(const weir_event *e, size_t *len);
const char *weir_event_reply_to(const weir_event *e);  /* NULL unless a request */
uint32_t weir_event_attempt(const weir_event *e);      /* 1 on the first delivery */
size_t weir_event_header_count(const weir_event *e);
const char *weir_event_header_name(const weir_event *e, size_t i);
const char *weir_event_header_value(const weir_event *e, size_t i);
/* The first value of header `name` (ASCII case-insensitive), or NULL. */
const char *weir_event_header(const weir_event *e, const char *name);
/* The verified producer (plugins with [auth]); NULL when there is none. */
const char *weir_event_principal_subject(const weir_event *e);
const char *weir_event_principal_issuer(const weir_event *e);
const char *weir_event_principal_claims(const weir_event *e); /* a JSON object */
/* The payload as text; NULL and *failure set to a reject if it is not UTF-8. */
const char *weir_event_text(const weir_event *e, weir_failure **failure);
/* The payload parsed as JSON; NULL and *failure set to a reject if it is not. */
weir_json *weir_event_json(const weir_event *e, weir_failure **failure);

/* ---- messages ------------------------------------------------------------- */

weir_message *weir_message_new(const char *subject, const void *payload, size_t len);
weir_message *weir_message_text(const char *subject, const char *text);
/* The payload is `value` as compact JSON. Adds no header. */
weir_message *weir_message_json(const char *subject, const weir_json *value);
/* A message to `subject` with the event's payload and headers. */
weir_message *weir_event_to_message(const weir_event *e, const char *subject);
/* Appends a header (a name may repeat); returns `m`. */
weir_message *weir_message_header(weir_message *m, const char *name, const char *value);
/* Adds `m` to the handler's outputs. */
void weir_emit(weir_outputs *out, weir_message *m);
/* Queues `m` with the host now; NULL when accepted, else the host's reason
 * (the event then fails whatever the handler returns). */
const char *weir_publish(const weir_message *m);

/* ---- host ----------------------------------------------------------------- */

/* A value from the [config] table of plugin.toml, or NULL. */
const char *weir_config(const char *key);

typedef enum { WEIR_TRACE, WEIR_DEBUG, WEIR_INFO, WEIR_WARN, WEIR_ERROR } weir_level;
void weir_log(weir_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define weir_trace(...) weir_log(WEIR_TRACE, __VA_ARGS__)
#define weir_debug(...) weir_log(WEIR_DEBUG, __VA_ARGS__)
#define weir_info(...) weir_log(WEIR_INFO, __VA_ARGS__)
#define weir_warn(...) weir_log(WEIR_WARN, __VA_ARGS__)
#define weir_error(...) weir_log(WEIR_ERROR, __VA_ARGS__)

/* ---- memory that lives until the event ends ------------------------------- */

void *weir_alloc(size_t size);
char *weir_sprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- JSON ----------------------------------------------------------------- */

typedef enum {
    WEIR_JSON_NULL,
    WEIR_JSON_BOOL,
    WEIR_JSON_NUMBER,
    WEIR_JSON_STRING,
    WEIR_JSON_ARRAY,
    WEIR_JSON_OBJECT,
} weir_json_kind;

/* Strict RFC 8259 parsing (depth limit 128); NULL and *error set on bad input. */
weir_json *weir_json_parse(const char *text, size_t len, const char **error);
/* Compact JSON text; object members keep their order. */
char *weir_json_dump(const weir_json *v, size_t *len);
/* Every accessor takes NULL (a missing value) and answers "no". */
weir_json_kind weir_json_kind_of(const weir_json *v); /* NULL: WEIR_JSON_NULL */
bool weir_json_is(const weir_json *v, weir_json_kind kind);
weir_json *weir_json_get(const weir_json *object, const char *key); /* NULL if missing */
size_t weir_json_size(const weir_json *v);                          /* array or object */
weir_json *weir_json_at(const weir_json *array, size_t i);
const char *weir_json_key_at(const weir_json *object, size_t i);
weir_json *weir_json_value_at(const weir_json *object, size_t i);
const char *weir_json_string(const weir_json *v); /* NULL unless a string */
bool weir_json_bool(const weir_json *v, bool *out);
bool weir_json_double(const weir_json *v, double *out); /* any number */
/* A non-negative integer written without fraction or exponent, that fits. */
bool weir_json_u64(const weir_json *v, uint64_t *out);
/* The number as written in the source (or as it will be written). */
const char *weir_json_number_text(const weir_json *v);

weir_json *weir_json_null(void);
weir_json *weir_json_new_bool(bool b);
weir_json *weir_json_new_double(double x); /* written like serde_json: 1440.0 */
weir_json *weir_json_new_u64(uint64_t n);
weir_json *weir_json_new_string(const char *s);
weir_json *weir_json_new_array(void);
weir_json *weir_json_new_object(void);
/* Sets member `key` (replacing its value, or appending it). */
void weir_json_set(weir_json *object, const char *key, weir_json *value);
void weir_json_push(weir_json *array, weir_json *value);

#ifdef __cplusplus
}
#endif

#endif /* WEIR_H */
