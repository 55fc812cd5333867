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
 * Batches (`batch = { max_events = 64 }` on a [[subscribe]] in plugin.toml):
 * define instead, or as well,
 *
 *     void weir_handle_batch(weir_batch *batch);
 *
 * which gets 1 to max_events events in one call and gives each its own
 * outcome: emit into weir_batch_outputs(batch, i) for an `ok` (the default,
 * with no messages), or weir_batch_fail(batch, i, failure). Each event is then
 * settled on its own (published and acknowledged, retried, or dead-lettered):
 *
 *     void weir_handle_batch(weir_batch *batch) {
 *         for (size_t i = 0; i < weir_batch_len(batch); i++) {
 *             const weir_event *event = weir_batch_event(batch, i);
 *             weir_failure *failure = NULL;
 *             const char *text = weir_event_text(event, &failure);
 *             if (!text || !*text) {
 *                 weir_batch_fail(batch, i, text ? weir_reject("empty payload") : failure);
 *                 continue;
 *             }
 *             weir_emit(weir_batch_outputs(batch, i), weir_event_to_message(event, "seen"));
 *         }
 *     }
 *
 * Inside weir_handle_batch, weir_publish is refused (it returns the host's
 * reason, WEIR_PUBLISH_IN_BATCH): a message belongs to the event whose outputs
 * carry it. A crash (abort, __builtin_trap) fails the whole call: the host then
 * splits the batch until the event that crashes runs alone. A plugin that
 * defines only weir_handle_batch also handles events that come alone (as a
 * batch of one); one that defines both gets each where it belongs. The build
 * tells which it defines from the compiled objects: with weir_handle_batch the
 * component has world handler-and-batch, without it world handler, as before.
 *
 * Memory: everything the SDK hands out (strings, messages, JSON values,
 * failures, weir_alloc) lives until the event (or the whole batch) ends and is
 * freed then, in one go: never free it yourself. Strings are NUL-terminated
 * UTF-8.
 *
 * Unit tests: compiled natively (not for wasm), weir.c serves the host calls
 * in-process and weir_test_run / weir_test_run_batch run your handlers; see
 * "testing off wasm" below:
 *
 *     cc -I sdk/c sdk/c/weir.c sdk/c/weir_json.c DIR/plugin.c test.c -lm && ./a.out
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
typedef struct weir_batch weir_batch;

/* ---- the handler you write ------------------------------------------------ */

/* Handle one event: weir_emit() the outputs and return NULL, or return a failure. */
weir_failure *weir_handle(const weir_event *event, weir_outputs *out);
/* Or, and: handle a batch of events, each with its own outcome (see above). */
void weir_handle_batch(weir_batch *batch);

/* ---- batches -------------------------------------------------------------- */

size_t weir_batch_len(const weir_batch *b); /* 1 or more events */
const weir_event *weir_batch_event(const weir_batch *b, size_t i);
/* Where event i's messages go (weir_emit); they leave only if it is not failed. */
weir_outputs *weir_batch_outputs(weir_batch *b, size_t i);
/* Event i fails with `failure` (weir_retry or weir_reject); NULL makes it ok again. */
void weir_batch_fail(weir_batch *b, size_t i, weir_failure *failure);
/* Return results for the first `count` events only. A result list shorter than
 * the events is a failure of the whole call (the host splits the batch): for
 * tests of the host, never needed by a handler. */
void weir_batch_truncate(weir_batch *b, size_t count);

/* What weir_publish answers inside weir_handle_batch (the host's refusal). */
#define WEIR_PUBLISH_IN_BATCH                                                      \
    "host.publish is not available inside handle-batch: return each event's messages " \
    "in its result, so they leave with that event's ok"

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
 * (the event then fails whatever the handler returns). Always refused inside
 * weir_handle_batch (WEIR_PUBLISH_IN_BATCH). */
const char *weir_publish(const weir_message *m);
/* Reading a message back (mostly for tests). */
const char *weir_message_subject(const weir_message *m);
const uint8_t *weir_message_payload(const weir_message *m, size_t *len);
/* The first value of header `name` (ASCII case-insensitive), or NULL. */
const char *weir_message_get_header(const weir_message *m, const char *name);
size_t weir_outputs_count(const weir_outputs *out); /* NULL: 0 */
const weir_message *weir_outputs_at(const weir_outputs *out, size_t i);

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

/* ---- testing off wasm ----------------------------------------------------- */

#ifndef __wasm__
/* Compiled natively, weir.c serves the host calls in-process: weir_config reads
 * weir_test_set_config, weir_publish collects (and refuses inside a batch, as
 * the host does), weir_log prints to stderr and collects. Everything, results
 * included, lives until weir_test_reset(). */

/* An event with id "test", attempt 1, no headers; the with_* return `e`. */
weir_event *weir_test_event(const char *subject, const char *payload);
weir_event *weir_test_event_with_id(weir_event *e, const char *id);
weir_event *weir_test_event_with_attempt(weir_event *e, uint32_t attempt);
weir_event *weir_test_event_with_reply_to(weir_event *e, const char *reply_to);
weir_event *weir_test_event_with_header(weir_event *e, const char *name, const char *value);

/* One event's outcome: failure NULL and its messages in `outputs`, or a failure. */
typedef struct {
    weir_failure *failure;
    const weir_outputs *outputs;
} weir_result;

/* Runs `e` as the host's `handle`: weir_handle, or weir_handle_batch over a
 * batch of one when the plugin defines only that. */
weir_result weir_test_run(const weir_event *e);
/* Runs `events` as the host's `handle-batch` (weir_publish refused meanwhile),
 * or weir_handle per event if the plugin has no weir_handle_batch. Fills
 * results[0..n) and returns how many results the handler gave: anything but
 * `n` is a failure of the whole call to the host. */
size_t weir_test_run_batch(const weir_event *const *events, size_t n, weir_result *results);

void weir_test_set_config(const char *key, const char *value);
size_t weir_test_published_count(void);
const weir_message *weir_test_published(size_t i);
size_t weir_test_log_count(void);
const char *weir_test_log(size_t i, weir_level *level);
/* Clears configuration, published messages and logs; frees the arena. */
void weir_test_reset(void);
#endif

#ifdef __cplusplus
}
#endif

#endif /* WEIR_H */
