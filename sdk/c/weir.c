/*
 * weir SDK for C: the small surface of weir.h over the `wit-bindgen c` bindings
 * (generated at build time) of world weir:plugin/handler (handler.h), or of
 * weir:plugin/handler-and-batch (handler_and_batch.h) when built with
 * -DWEIR_BATCH, which scripts/build-guest.sh passes when the plugin defines
 * weir_handle_batch.
 *
 * Off wasm (a native compiler, for unit tests) no bindings are used: the host
 * calls are served in-process and weir_test_* run the handlers (see weir.h).
 */
#include "weir.h"
#include "weir_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__wasm__) && defined(WEIR_BATCH)
#include "handler_and_batch.h"
#define WB(name) handler_and_batch_##name
#define WB_EXPORT(name) exports_handler_and_batch_##name
#elif defined(__wasm__)
#include "handler.h"
#define WB(name) handler_##name
#define WB_EXPORT(name) exports_handler_##name
#endif

/* Which of the two entry points the plugin defines. With only weir_handle (the
 * handler world) weir_handle stays a strong reference, so a plugin without it
 * fails to link as before; otherwise either may be missing (address NULL). */
#if !defined(__wasm__) || defined(WEIR_BATCH)
#pragma weak weir_handle
#pragma weak weir_handle_batch
#define has_handle (weir_handle != NULL)
#define has_handle_batch (weir_handle_batch != NULL)
#define call_handle_batch weir_handle_batch
#else
#define has_handle true
#define has_handle_batch false
static void call_handle_batch(weir_batch *b) { (void)b; abort(); }
#endif

/* ---- the per-event arena ---------------------------------------------------- */

typedef struct block {
    struct block *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
} block;

static block *arena;

void *weir_alloc(size_t size) {
    size = (size + 15) & ~(size_t)15;
    if (!arena || arena->size - arena->used < size) {
        size_t cap = size > 60000 ? size : 60000;
        block *b = malloc(sizeof(block) + cap);
        if (!b) abort();
        b->next = arena;
        b->used = 0;
        b->size = cap;
        arena = b;
    }
    void *p = arena->data + arena->used;
    arena->used += size;
    return p;
}

static void arena_free(void) {
    while (arena) {
        block *next = arena->next;
        free(arena);
        arena = next;
    }
}

char *dup_n(const void *s, size_t len) {
    char *p = weir_alloc(len + 1);
    if (len) memcpy(p, s, len);
    p[len] = 0;
    return p;
}

char *dup_str(const char *s) { return dup_n(s, strlen(s)); }

static char *vformat(const char *fmt, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0) return dup_str(fmt);
    char *p = weir_alloc((size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *weir_sprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *p = vformat(fmt, ap);
    va_end(ap);
    return p;
}

void buf_put(buf *b, const void *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = weir_alloc(cap);
        if (b->len) memcpy(p, b->p, b->len);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void buf_str(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* ---- failures --------------------------------------------------------------- */

struct weir_failure {
    bool retry;
    const char *message;
};

static weir_failure *failure(bool retry, const char *fmt, va_list ap) {
    weir_failure *f = weir_alloc(sizeof *f);
    f->retry = retry;
    f->message = vformat(fmt, ap);
    return f;
}

weir_failure *weir_retry(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    weir_failure *f = failure(true, fmt, ap);
    va_end(ap);
    return f;
}

weir_failure *weir_reject(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    weir_failure *f = failure(false, fmt, ap);
    va_end(ap);
    return f;
}

bool weir_failure_is_retry(const weir_failure *f) { return f && f->retry; }
const char *weir_failure_message(const weir_failure *f) { return f ? f->message : ""; }

/* ---- events ----------------------------------------------------------------- */

typedef struct {
    const char *name, *value;
} header;

struct weir_event {
    const char *id, *subject, *reply_to;
    const uint8_t *payload;
    size_t payload_len;
    header *headers;
    size_t header_count;
    uint32_t attempt;
    const char *principal_subject, *principal_issuer, *principal_claims;
};

const char *weir_event_id(const weir_event *e) { return e->id; }
const char *weir_event_subject(const weir_event *e) { return e->subject; }
const char *weir_event_reply_to(const weir_event *e) { return e->reply_to; }
uint32_t weir_event_attempt(const weir_event *e) { return e->attempt; }
size_t weir_event_header_count(const weir_event *e) { return e->header_count; }
const char *weir_event_principal_subject(const weir_event *e) { return e->principal_subject; }
const char *weir_event_principal_issuer(const weir_event *e) { return e->principal_issuer; }
const char *weir_event_principal_claims(const weir_event *e) { return e->principal_claims; }

const uint8_t *weir_event_payload(const weir_event *e, size_t *len) {
    if (len) *len = e->payload_len;
    return e->payload;
}

const char *weir_event_header_name(const weir_event *e, size_t i) {
    return i < e->header_count ? e->headers[i].name : NULL;
}

const char *weir_event_header_value(const weir_event *e, size_t i) {
    return i < e->header_count ? e->headers[i].value : NULL;
}

static bool ascii_iequal(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a >= 'A' && *a <= 'Z' ? *a + 32 : *a;
        char y = *b >= 'A' && *b <= 'Z' ? *b + 32 : *b;
        if (x != y) return false;
    }
    return *a == *b;
}

const char *weir_event_header(const weir_event *e, const char *name) {
    for (size_t i = 0; i < e->header_count; i++)
        if (ascii_iequal(e->headers[i].name, name)) return e->headers[i].value;
    return NULL;
}

/* The length of the valid UTF-8 prefix of s. */
size_t utf8_valid_up_to(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t min, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 2, min = 0x80, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3, min = 0x800, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 4, min = 0x10000, cp = c & 0x07;
        } else {
            return i;
        }
        if (i + n > len) return i;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += n;
    }
    return len;
}

const char *weir_event_text(const weir_event *e, weir_failure **failure) {
    size_t ok = utf8_valid_up_to(e->payload, e->payload_len);
    if (ok != e->payload_len) {
        if (failure) *failure = weir_reject("payload is not valid UTF-8: invalid byte at offset %zu", ok);
        return NULL;
    }
    return (const char *)e->payload; /* NUL-terminated by the SDK's copy */
}

weir_json *weir_event_json(const weir_event *e, weir_failure **failure) {
    const char *error = NULL;
    weir_json *v = weir_json_parse((const char *)e->payload, e->payload_len, &error);
    if (!v && failure) *failure = weir_reject("invalid JSON payload: %s", error);
    return v;
}

/* ---- messages ----------------------------------------------------------------- */

struct weir_message {
    const char *subject;
    const uint8_t *payload;
    size_t payload_len;
    header *headers;
    size_t header_count, header_cap;
    weir_message *next;
};

struct weir_outputs {
    weir_message *first, *last;
    size_t count;
};

weir_message *weir_message_new(const char *subject, const void *payload, size_t len) {
    weir_message *m = weir_alloc(sizeof *m);
    memset(m, 0, sizeof *m);
    m->subject = dup_str(subject);
    m->payload = (const uint8_t *)dup_n(payload, len);
    m->payload_len = len;
    return m;
}

weir_message *weir_message_text(const char *subject, const char *text) {
    return weir_message_new(subject, text, strlen(text));
}

weir_message *weir_message_json(const char *subject, const weir_json *value) {
    size_t len;
    char *text = weir_json_dump(value, &len);
    return weir_message_new(subject, text, len);
}

weir_message *weir_message_header(weir_message *m, const char *name, const char *value) {
    if (m->header_count == m->header_cap) {
        size_t cap = m->header_cap ? m->header_cap * 2 : 4;
        header *h = weir_alloc(cap * sizeof *h);
        if (m->header_count) memcpy(h, m->headers, m->header_count * sizeof *h);
        m->headers = h;
        m->header_cap = cap;
    }
    m->headers[m->header_count].name = dup_str(name);
    m->headers[m->header_count].value = dup_str(value);
    m->header_count++;
    return m;
}

weir_message *weir_event_to_message(const weir_event *e, const char *subject) {
    weir_message *m = weir_alloc(sizeof *m);
    memset(m, 0, sizeof *m);
    m->subject = dup_str(subject);
    m->payload = e->payload; /* the event's copy lives as long */
    m->payload_len = e->payload_len;
    for (size_t i = 0; i < e->header_count; i++)
        weir_message_header(m, e->headers[i].name, e->headers[i].value);
    return m;
}

void weir_emit(weir_outputs *out, weir_message *m) {
    m->next = NULL;
    if (out->last) out->last->next = m;
    else out->first = m;
    out->last = m;
    out->count++;
}

const char *weir_message_subject(const weir_message *m) { return m->subject; }

const uint8_t *weir_message_payload(const weir_message *m, size_t *len) {
    if (len) *len = m->payload_len;
    return m->payload;
}

const char *weir_message_get_header(const weir_message *m, const char *name) {
    for (size_t i = 0; i < m->header_count; i++)
        if (ascii_iequal(m->headers[i].name, name)) return m->headers[i].value;
    return NULL;
}

size_t weir_outputs_count(const weir_outputs *out) { return out ? out->count : 0; }

const weir_message *weir_outputs_at(const weir_outputs *out, size_t i) {
    if (!out || i >= out->count) return NULL;
    const weir_message *m = out->first;
    while (i--) m = m->next;
    return m;
}

/* ---- batches ------------------------------------------------------------------ */

typedef struct {
    weir_outputs out;
    weir_failure *failure;
} slot;

struct weir_batch {
    const weir_event **events;
    slot *slots;
    size_t len;   /* events */
    size_t count; /* results returned: len unless weir_batch_truncate */
};

static weir_batch *batch_new(size_t len) {
    weir_batch *b = weir_alloc(sizeof *b);
    b->events = weir_alloc((len ? len : 1) * sizeof *b->events);
    b->slots = weir_alloc((len ? len : 1) * sizeof *b->slots);
    memset(b->slots, 0, (len ? len : 1) * sizeof *b->slots);
    b->len = b->count = len;
    return b;
}

size_t weir_batch_len(const weir_batch *b) { return b->len; }

const weir_event *weir_batch_event(const weir_batch *b, size_t i) {
    return i < b->len ? b->events[i] : NULL;
}

weir_outputs *weir_batch_outputs(weir_batch *b, size_t i) {
    if (i >= b->len) abort(); /* a bug in the handler: trap the call */
    return &b->slots[i].out;
}

void weir_batch_fail(weir_batch *b, size_t i, weir_failure *failure) {
    if (i >= b->len) abort();
    b->slots[i].failure = failure;
}

void weir_batch_truncate(weir_batch *b, size_t count) {
    if (count < b->count) b->count = count;
}

/* Whether the calls now run inside weir_handle_batch: weir_publish refuses. */
static bool in_batch __attribute__((unused));

/* The plugin's batch handler over `b`; with no weir_handle_batch, weir_handle
 * per event (as the host does for a plugin that exports only `handle`). */
__attribute__((unused)) static void run_batch(weir_batch *b) {
    if (has_handle_batch) {
        in_batch = true;
        call_handle_batch(b);
        in_batch = false;
        return;
    }
    if (!has_handle) abort(); /* neither entry point: scripts/build-guest.sh refuses that */
    for (size_t i = 0; i < b->len; i++) b->slots[i].failure = weir_handle(b->events[i], &b->slots[i].out);
}

/* One event: weir_handle, or else weir_handle_batch over a batch of one (as
 * `handle` is derived then); NULL or the failure, the messages in `out`. */
static weir_failure *run_one(const weir_event *e, weir_outputs *out) {
    if (has_handle) return weir_handle(e, out);
    if (!has_handle_batch) {
        fputs("weir: the plugin defines neither weir_handle nor weir_handle_batch\n", stderr);
        abort(); /* scripts/build-guest.sh refuses such a plugin */
    }
    weir_batch *b = batch_new(1);
    b->events[0] = e;
    call_handle_batch(b);
    if (b->count != 1) return weir_reject("the batch handler did not return one result for one event");
    *out = b->slots[0].out;
    return b->slots[0].failure;
}

#ifdef __wasm__

/* Strings handed to the bindings point into memory we own (borrowed). */
static WB(string_t) borrow(const char *s) {
    return (WB(string_t)){(uint8_t *)s, strlen(s)};
}

/* An owned (malloc'd) copy, as the canonical ABI frees returned values. */
static WB(string_t) owned(const char *s) {
    WB(string_t) r;
    WB(string_dup)(&r, s);
    return r;
}

static void to_raw(const weir_message *m, weir_plugin_types_message_t *raw, bool own) {
    raw->subject = own ? owned(m->subject) : borrow(m->subject);
    raw->payload.len = m->payload_len;
    if (own) {
        raw->payload.ptr = malloc(m->payload_len ? m->payload_len : 1);
        if (m->payload_len) memcpy(raw->payload.ptr, m->payload, m->payload_len);
    } else {
        raw->payload.ptr = (uint8_t *)m->payload;
    }
    raw->headers.len = m->header_count;
    raw->headers.ptr = NULL;
    if (m->header_count) {
        WB(tuple2_string_string_t) *h =
            own ? malloc(m->header_count * sizeof *h) : weir_alloc(m->header_count * sizeof *h);
        for (size_t i = 0; i < m->header_count; i++) {
            h[i].f0 = own ? owned(m->headers[i].name) : borrow(m->headers[i].name);
            h[i].f1 = own ? owned(m->headers[i].value) : borrow(m->headers[i].value);
        }
        raw->headers.ptr = h;
    }
}

const char *weir_publish(const weir_message *m) {
    /* Refused in the batch form even when it runs as `handle` (a batch of
     * one), as the host refuses it inside handle-batch. */
    if (in_batch) return dup_str(WEIR_PUBLISH_IN_BATCH);
    weir_plugin_types_message_t raw;
    to_raw(m, &raw, false);
    WB(string_t) err;
    if (weir_plugin_host_publish(&raw, &err)) return NULL;
    char *reason = dup_n(err.ptr, err.len);
    WB(string_free)(&err);
    return reason;
}

/* ---- host ------------------------------------------------------------------- */

const char *weir_config(const char *key) {
    WB(string_t) k = borrow(key), value;
    if (!weir_plugin_host_config(&k, &value)) return NULL;
    char *v = dup_n(value.ptr, value.len);
    WB(string_free)(&value);
    return v;
}

void weir_log(weir_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *text = vformat(fmt, ap);
    va_end(ap);
    WB(string_t) t = borrow(text);
    weir_plugin_host_log((weir_plugin_host_level_t)level, &t);
}

/* ---- the exports ---------------------------------------------------------------- */

/* The event, copied into the arena (the export then frees the bindings' copy). */
static weir_event *copy_event(const WB(event_t) *e) {
    weir_event *ev = weir_alloc(sizeof *ev);
    memset(ev, 0, sizeof *ev);
    ev->id = dup_n(e->id.ptr, e->id.len);
    ev->subject = dup_n(e->subject.ptr, e->subject.len);
    ev->payload = (const uint8_t *)dup_n(e->payload.ptr, e->payload.len);
    ev->payload_len = e->payload.len;
    ev->attempt = e->attempt;
    if (e->reply_to.is_some) ev->reply_to = dup_n(e->reply_to.val.ptr, e->reply_to.val.len);
    ev->header_count = e->headers.len;
    ev->headers = weir_alloc((e->headers.len ? e->headers.len : 1) * sizeof(header));
    for (size_t i = 0; i < e->headers.len; i++) {
        ev->headers[i].name = dup_n(e->headers.ptr[i].f0.ptr, e->headers.ptr[i].f0.len);
        ev->headers[i].value = dup_n(e->headers.ptr[i].f1.ptr, e->headers.ptr[i].f1.len);
    }
    if (e->principal.is_some) {
        const weir_plugin_types_principal_t *p = &e->principal.val;
        ev->principal_subject = dup_n(p->subject.ptr, p->subject.len);
        ev->principal_issuer = dup_n(p->issuer.ptr, p->issuer.len);
        ev->principal_claims = dup_n(p->claims.ptr, p->claims.len);
    }
    return ev;
}

/* An outcome as the bindings return it (owned copies); true if ok. */
static bool to_result(const weir_failure *f, const weir_outputs *out, WB(list_message_t) *ret,
                      WB(failure_t) *err) {
    if (f == NULL) {
        ret->len = out->count;
        ret->ptr = malloc((out->count ? out->count : 1) * sizeof(WB(message_t)));
        size_t i = 0;
        for (weir_message *m = out->first; m; m = m->next) to_raw(m, &ret->ptr[i++], true);
        return true;
    }
    err->tag = f->retry ? WEIR_PLUGIN_TYPES_FAILURE_RETRY : WEIR_PLUGIN_TYPES_FAILURE_REJECT;
    WB(string_dup)(f->retry ? &err->val.retry : &err->val.reject, f->message);
    return false;
}

bool WB_EXPORT(handle)(WB(event_t) *e, WB(list_message_t) *ret, WB(failure_t) *err) {
    weir_event *ev = copy_event(e);
    WB(event_free)(e); /* an export owns its arguments */
    weir_outputs out = {0};
    weir_failure *f = run_one(ev, &out);
    bool ok = to_result(f, &out, ret, err);
    arena_free();
    return ok;
}

#ifdef WEIR_BATCH
void WB_EXPORT(handle_batch)(WB(list_event_t) *events, WB(list_result_list_message_failure_t) *ret) {
    weir_batch *b = batch_new(events->len);
    for (size_t i = 0; i < events->len; i++) b->events[i] = copy_event(&events->ptr[i]);
    WB(list_event_free)(events);
    run_batch(b);
    ret->len = b->count;
    ret->ptr = malloc((b->count ? b->count : 1) * sizeof *ret->ptr);
    for (size_t i = 0; i < b->count; i++) {
        WB(result_list_message_failure_t) *r = &ret->ptr[i];
        r->is_err = !to_result(b->slots[i].failure, &b->slots[i].out, &r->val.ok, &r->val.err);
    }
    arena_free();
}
#endif

#else /* not __wasm__: the host calls served in-process, for unit tests */

typedef struct kv {
    struct kv *next;
    char *key, *value;
} kv;

static kv *config;
static const weir_message **published;
static size_t published_count, published_cap;
static struct logged {
    weir_level level;
    const char *text;
} *logs;
static size_t log_count, log_cap;

static void *grow_array(void *p, size_t *cap, size_t count, size_t item) {
    if (count < *cap) return p;
    *cap = *cap ? *cap * 2 : 16;
    p = realloc(p, *cap * item);
    if (!p) abort();
    return p;
}

const char *weir_publish(const weir_message *m) {
    if (in_batch) return dup_str(WEIR_PUBLISH_IN_BATCH);
    published = grow_array(published, &published_cap, published_count, sizeof *published);
    published[published_count++] = m;
    return NULL;
}

const char *weir_config(const char *key) {
    for (kv *c = config; c; c = c->next)
        if (strcmp(c->key, key) == 0) return dup_str(c->value);
    return NULL;
}

void weir_log(weir_level level, const char *fmt, ...) {
    static const char *names[] = {"trace", "debug", "info", "warn", "error"};
    va_list ap;
    va_start(ap, fmt);
    char *text = vformat(fmt, ap);
    va_end(ap);
    fprintf(stderr, "[%s] %s\n", level <= WEIR_ERROR ? names[level] : "?", text);
    logs = grow_array(logs, &log_cap, log_count, sizeof *logs);
    logs[log_count++] = (struct logged){level, text};
}

void weir_test_set_config(const char *key, const char *value) {
    for (kv *c = config; c; c = c->next)
        if (strcmp(c->key, key) == 0) {
            free(c->value);
            c->value = strdup(value);
            return;
        }
    kv *c = malloc(sizeof *c);
    if (!c) abort();
    *c = (kv){config, strdup(key), strdup(value)};
    config = c;
}

size_t weir_test_published_count(void) { return published_count; }
const weir_message *weir_test_published(size_t i) { return i < published_count ? published[i] : NULL; }
size_t weir_test_log_count(void) { return log_count; }

const char *weir_test_log(size_t i, weir_level *level) {
    if (i >= log_count) return NULL;
    if (level) *level = logs[i].level;
    return logs[i].text;
}

void weir_test_reset(void) {
    while (config) {
        kv *next = config->next;
        free(config->key);
        free(config->value);
        free(config);
        config = next;
    }
    published_count = log_count = 0;
    in_batch = false;
    arena_free();
}

weir_event *weir_test_event(const char *subject, const char *payload) {
    weir_event *e = weir_alloc(sizeof *e);
    memset(e, 0, sizeof *e);
    e->id = dup_str("test");
    e->subject = dup_str(subject);
    e->payload_len = strlen(payload);
    e->payload = (const uint8_t *)dup_n(payload, e->payload_len);
    e->attempt = 1;
    return e;
}

weir_event *weir_test_event_with_id(weir_event *e, const char *id) {
    e->id = dup_str(id);
    return e;
}

weir_event *weir_test_event_with_attempt(weir_event *e, uint32_t attempt) {
    e->attempt = attempt;
    return e;
}

weir_event *weir_test_event_with_reply_to(weir_event *e, const char *reply_to) {
    e->reply_to = dup_str(reply_to);
    return e;
}

weir_event *weir_test_event_with_header(weir_event *e, const char *name, const char *value) {
    header *h = weir_alloc((e->header_count + 1) * sizeof *h);
    if (e->header_count) memcpy(h, e->headers, e->header_count * sizeof *h);
    h[e->header_count++] = (header){dup_str(name), dup_str(value)};
    e->headers = h;
    return e;
}

weir_result weir_test_run(const weir_event *e) {
    weir_outputs *out = weir_alloc(sizeof *out);
    memset(out, 0, sizeof *out);
    weir_failure *f = run_one(e, out);
    return (weir_result){f, f ? NULL : out};
}

size_t weir_test_run_batch(const weir_event *const *events, size_t n, weir_result *results) {
    weir_batch *b = batch_new(n);
    for (size_t i = 0; i < n; i++) b->events[i] = events[i];
    run_batch(b);
    for (size_t i = 0; i < b->count; i++) {
        weir_failure *f = b->slots[i].failure;
        results[i] = (weir_result){f, f ? NULL : &b->slots[i].out};
    }
    return b->count;
}

#endif /* __wasm__ */
