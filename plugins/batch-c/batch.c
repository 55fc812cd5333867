/*
 * `batch-c`: a batch handler (weir_handle_batch) whose every event's outcome
 * is chosen by its payload, `<kind>:<n>`; plugins/batch (Rust) in C:
 *
 * - `ok`: one output on `batched.ok`, the event's payload, header
 *   `Batch-Attempt` = its attempt;
 * - `retry`: `retry` on the first attempt, then as `ok`;
 * - `reject`: rejected;
 * - `trap`: the whole call traps;
 * - `short`: the call returns one result fewer than it got events;
 * - `busy`: as `ok`, but a batch holding one logs "busy batch of N" and
 *   then spins for 1.5 s (a batch running when the host stops).
 */
#include <string.h>
#include <time.h>

#include "weir.h"

/* The payload's text before the first ':' (the whole payload if none). */
static const char *kind(const weir_event *event) {
    size_t len;
    const uint8_t *payload = weir_event_payload(event, &len);
    const void *colon = memchr(payload, ':', len);
    size_t n = colon ? (size_t)((const uint8_t *)colon - payload) : len;
    char *k = weir_alloc(n + 1);
    memcpy(k, payload, n);
    k[n] = 0;
    return k;
}

static bool any(weir_batch *batch, const char *wanted) {
    for (size_t i = 0; i < weir_batch_len(batch); i++)
        if (strcmp(kind(weir_batch_event(batch, i)), wanted) == 0) return true;
    return false;
}

static weir_failure *one(const weir_event *event, weir_outputs *out) {
    const char *k = kind(event);
    if (strcmp(k, "retry") == 0 && weir_event_attempt(event) == 1) return weir_retry("retry once");
    if (strcmp(k, "reject") == 0) return weir_reject("rejected by payload");
    if (strcmp(k, "ok") != 0 && strcmp(k, "busy") != 0 && strcmp(k, "retry") != 0)
        return weir_reject("unknown kind \"%s\"", k);
    size_t len;
    const uint8_t *payload = weir_event_payload(event, &len);
    weir_message *m = weir_message_new("batched.ok", payload, len);
    weir_emit(out, weir_message_header(m, "Batch-Attempt", weir_sprintf("%u", weir_event_attempt(event))));
    return NULL;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

void weir_handle_batch(weir_batch *batch) {
    size_t n = weir_batch_len(batch);
    if (any(batch, "trap")) { /* the whole call fails */
        weir_error("trap requested by payload");
        __builtin_trap();
    }
    if (any(batch, "busy")) {
        weir_info("busy batch of %zu", n);
        double until = now_ms() + 1500;
        while (now_ms() < until) {
        }
    }
    for (size_t i = 0; i < n; i++) {
        const weir_event *event = weir_batch_event(batch, i);
        if (strcmp(kind(event), "short") == 0) continue; /* ok, no messages */
        weir_batch_fail(batch, i, one(event, weir_batch_outputs(batch, i)));
    }
    if (any(batch, "short")) weir_batch_truncate(batch, n - 1);
}
