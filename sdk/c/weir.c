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

static char *dup_n(const void *s, size_t len) {
    char *p = weir_alloc(len + 1);
    if (len) memcpy(p, s, len);
    p[len] = 0;
    return p;
}

static char *dup_str(const char *s) { return dup_n(s, strlen(s)); }

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

/* A growable byte buffer in the arena. */
typedef struct {
    char *p;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const void *s, size_t n) {
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

static void buf_str(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

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
static size_t utf8_valid_up_to(const uint8_t *s, size_t len) {
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

/* ---- JSON ---------------------------------------------------------------------- */

typedef struct {
    char *key;
    size_t key_len;
    weir_json *value;
} member;

struct weir_json {
    weir_json_kind kind;
    bool b;
    double num;
    const char *num_text; /* as written, or as it will be written */
    bool u64_ok;
    uint64_t u64;
    char *str;
    size_t str_len;
    size_t len, cap;
    weir_json **items; /* arrays */
    member *members;   /* objects */
};

static weir_json *node(weir_json_kind kind) {
    weir_json *v = weir_alloc(sizeof *v);
    memset(v, 0, sizeof *v);
    v->kind = kind;
    return v;
}

weir_json *weir_json_null(void) { return node(WEIR_JSON_NULL); }

weir_json *weir_json_new_bool(bool b) {
    weir_json *v = node(WEIR_JSON_BOOL);
    v->b = b;
    return v;
}

/* Shortest text that reads back as x, with ".0" on integral values as
 * serde_json writes floats; non-finite numbers are written as null. */
static const char *format_double(double x) {
    if (!isfinite(x)) return NULL;
    char text[48];
    double magnitude = fabs(x);
    if (magnitude == 0.0 || (magnitude >= 1e-5 && magnitude < 1e16)) {
        /* Plain decimals, with as few fraction digits as read back exactly. */
        for (int digits = 0; digits <= 24; digits++) {
            snprintf(text, sizeof text, "%.*f", digits, x);
            if (strtod(text, NULL) == x) break;
        }
    } else {
        for (int precision = 1; precision <= 17; precision++) {
            snprintf(text, sizeof text, "%.*g", precision, x);
            if (strtod(text, NULL) == x) break;
        }
    }
    if (!strpbrk(text, ".eE")) strcat(text, ".0");
    return dup_str(text);
}

weir_json *weir_json_new_double(double x) {
    weir_json *v = node(WEIR_JSON_NUMBER);
    v->num = x;
    v->num_text = format_double(x);
    if (!v->num_text) v->kind = WEIR_JSON_NULL;
    return v;
}

weir_json *weir_json_new_u64(uint64_t n) {
    weir_json *v = node(WEIR_JSON_NUMBER);
    v->num = (double)n;
    v->u64 = n;
    v->u64_ok = true;
    v->num_text = weir_sprintf("%llu", (unsigned long long)n);
    return v;
}

weir_json *weir_json_new_string(const char *s) {
    weir_json *v = node(WEIR_JSON_STRING);
    v->str_len = strlen(s);
    v->str = dup_n(s, v->str_len);
    return v;
}

weir_json *weir_json_new_array(void) { return node(WEIR_JSON_ARRAY); }
weir_json *weir_json_new_object(void) { return node(WEIR_JSON_OBJECT); }

static void grow(weir_json *v, size_t item_size, void **items) {
    if (v->len < v->cap) return;
    size_t cap = v->cap ? v->cap * 2 : 8;
    void *p = weir_alloc(cap * item_size);
    if (v->len) memcpy(p, *items, v->len * item_size);
    *items = p;
    v->cap = cap;
}

void weir_json_push(weir_json *array, weir_json *value) {
    if (!array || array->kind != WEIR_JSON_ARRAY || !value) return;
    grow(array, sizeof(weir_json *), (void **)&array->items);
    array->items[array->len++] = value;
}

static void set_n(weir_json *object, const char *key, size_t key_len, weir_json *value) {
    for (size_t i = 0; i < object->len; i++) {
        member *m = &object->members[i];
        if (m->key_len == key_len && memcmp(m->key, key, key_len) == 0) {
            m->value = value;
            return;
        }
    }
    grow(object, sizeof(member), (void **)&object->members);
    object->members[object->len++] = (member){dup_n(key, key_len), key_len, value};
}

void weir_json_set(weir_json *object, const char *key, weir_json *value) {
    if (!object || object->kind != WEIR_JSON_OBJECT || !value) return;
    set_n(object, key, strlen(key), value);
}

weir_json_kind weir_json_kind_of(const weir_json *v) { return v ? v->kind : WEIR_JSON_NULL; }
bool weir_json_is(const weir_json *v, weir_json_kind kind) { return v && v->kind == kind; }

weir_json *weir_json_get(const weir_json *object, const char *key) {
    if (!weir_json_is(object, WEIR_JSON_OBJECT)) return NULL;
    size_t key_len = strlen(key);
    for (size_t i = 0; i < object->len; i++)
        if (object->members[i].key_len == key_len && memcmp(object->members[i].key, key, key_len) == 0)
            return object->members[i].value;
    return NULL;
}

size_t weir_json_size(const weir_json *v) {
    return v && (v->kind == WEIR_JSON_ARRAY || v->kind == WEIR_JSON_OBJECT) ? v->len : 0;
}

weir_json *weir_json_at(const weir_json *array, size_t i) {
    return weir_json_is(array, WEIR_JSON_ARRAY) && i < array->len ? array->items[i] : NULL;
}

const char *weir_json_key_at(const weir_json *object, size_t i) {
    return weir_json_is(object, WEIR_JSON_OBJECT) && i < object->len ? object->members[i].key : NULL;
}

weir_json *weir_json_value_at(const weir_json *object, size_t i) {
    return weir_json_is(object, WEIR_JSON_OBJECT) && i < object->len ? object->members[i].value : NULL;
}

const char *weir_json_string(const weir_json *v) {
    return weir_json_is(v, WEIR_JSON_STRING) ? v->str : NULL;
}

bool weir_json_bool(const weir_json *v, bool *out) {
    if (!weir_json_is(v, WEIR_JSON_BOOL)) return false;
    *out = v->b;
    return true;
}

bool weir_json_double(const weir_json *v, double *out) {
    if (!weir_json_is(v, WEIR_JSON_NUMBER)) return false;
    *out = v->num;
    return true;
}

bool weir_json_u64(const weir_json *v, uint64_t *out) {
    if (!weir_json_is(v, WEIR_JSON_NUMBER) || !v->u64_ok) return false;
    *out = v->u64;
    return true;
}

const char *weir_json_number_text(const weir_json *v) {
    return weir_json_is(v, WEIR_JSON_NUMBER) ? v->num_text : NULL;
}

/* The parser. */

typedef struct {
    const char *s;
    size_t len, pos;
    int depth;
    const char *error;
} parser;

static weir_json *fail(parser *p, const char *what) {
    if (!p->error) {
        size_t line = 1, column = 0;
        for (size_t i = 0; i < p->pos && i < p->len; i++) {
            if (p->s[i] == '\n') line++, column = 0;
            else column++;
        }
        p->error = weir_sprintf("%s at line %zu column %zu", what, line, column + (p->pos < p->len));
    }
    return NULL;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static bool literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return false;
    p->pos += n;
    return true;
}

static int hex4(parser *p) {
    if (p->len - p->pos < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    p->pos += 4;
    return v;
}

static void put_utf8(buf *b, uint32_t cp) {
    char out[4];
    size_t n;
    if (cp < 0x80) out[0] = (char)cp, n = 1;
    else if (cp < 0x800) out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        out[0] = (char)(0xE0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
        out[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        out[0] = (char)(0xF0 | cp >> 18), out[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    buf_put(b, out, n);
}

/* A string, after its opening quote. */
static bool parse_string(parser *p, char **out, size_t *out_len) {
    buf b = {0};
    buf_put(&b, "", 0);
    for (;;) {
        if (p->pos >= p->len) return fail(p, "EOF while parsing a string"), false;
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) return fail(p, "control character (\\u0000-\\u001F) found while parsing a string"), false;
        if (c != '\\') {
            size_t start = p->pos;
            while (p->pos < p->len && p->s[p->pos] != '"' && p->s[p->pos] != '\\' &&
                   (unsigned char)p->s[p->pos] >= 0x20)
                p->pos++;
            buf_put(&b, p->s + start, p->pos - start);
            continue;
        }
        p->pos++;
        if (p->pos >= p->len) return fail(p, "EOF while parsing a string"), false;
        char e = p->s[p->pos++];
        switch (e) {
        case '"': buf_put(&b, "\"", 1); break;
        case '\\': buf_put(&b, "\\", 1); break;
        case '/': buf_put(&b, "/", 1); break;
        case 'b': buf_put(&b, "\b", 1); break;
        case 'f': buf_put(&b, "\f", 1); break;
        case 'n': buf_put(&b, "\n", 1); break;
        case 'r': buf_put(&b, "\r", 1); break;
        case 't': buf_put(&b, "\t", 1); break;
        case 'u': {
            int cp = hex4(p);
            if (cp < 0) return fail(p, "invalid escape"), false;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, "lone leading surrogate in hex escape"), false;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (!literal(p, "\\u")) return fail(p, "unexpected end of hex escape"), false;
                int lo = hex4(p);
                if (lo < 0xDC00 || lo > 0xDFFF) return fail(p, "lone leading surrogate in hex escape"), false;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(&b, (uint32_t)cp);
            break;
        }
        default: return fail(p, "invalid escape"), false;
        }
    }
    *out = b.p;
    *out_len = b.len;
    return true;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static weir_json *parse_number(parser *p) {
    size_t start = p->pos;
    bool integer = true, negative = false;
    if (p->s[p->pos] == '-') p->pos++, negative = true;
    if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "invalid number");
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && is_digit(p->s[p->pos])) return fail(p, "invalid number");
    } else {
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        integer = false;
        p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "invalid number");
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        integer = false;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "invalid number");
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    weir_json *v = node(WEIR_JSON_NUMBER);
    v->num_text = dup_n(p->s + start, p->pos - start);
    v->num = strtod(v->num_text, NULL);
    if (!isfinite(v->num)) return fail(p, "number out of range");
    if (integer && !negative) {
        uint64_t n = 0;
        bool fits = true;
        for (const char *d = v->num_text; *d; d++) {
            uint64_t digit = (uint64_t)(*d - '0');
            if (n > (UINT64_MAX - digit) / 10) {
                fits = false;
                break;
            }
            n = n * 10 + digit;
        }
        v->u64_ok = fits;
        v->u64 = n;
    }
    return v;
}

static weir_json *parse_value(parser *p) {
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, "EOF while parsing a value");
    char c = p->s[p->pos];
    if (c == '{' || c == '[') {
        if (++p->depth > 128) return fail(p, "recursion limit exceeded");
        p->pos++;
        bool object = c == '{';
        weir_json *v = node(object ? WEIR_JSON_OBJECT : WEIR_JSON_ARRAY);
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == (object ? '}' : ']')) {
            p->pos++;
            p->depth--;
            return v;
        }
        for (;;) {
            if (object) {
                skip_ws(p);
                if (p->pos >= p->len) return fail(p, "EOF while parsing an object");
                if (p->s[p->pos] != '"') return fail(p, "key must be a string");
                p->pos++;
                char *key;
                size_t key_len;
                if (!parse_string(p, &key, &key_len)) return NULL;
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':') return fail(p, "expected `:`");
                p->pos++;
                weir_json *value = parse_value(p);
                if (!value) return NULL;
                set_n(v, key, key_len, value); /* a repeated key: the last one wins */
            } else {
                weir_json *item = parse_value(p);
                if (!item) return NULL;
                weir_json_push(v, item);
            }
            skip_ws(p);
            if (p->pos >= p->len) return fail(p, object ? "EOF while parsing an object" : "EOF while parsing a list");
            char d = p->s[p->pos++];
            if (d == ',') continue;
            if (d == (object ? '}' : ']')) break;
            p->pos--;
            return fail(p, object ? "expected `,` or `}`" : "expected `,` or `]`");
        }
        p->depth--;
        return v;
    }
    if (c == '"') {
        p->pos++;
        weir_json *v = node(WEIR_JSON_STRING);
        return parse_string(p, &v->str, &v->str_len) ? v : NULL;
    }
    if (c == '-' || is_digit(c)) return parse_number(p);
    if (literal(p, "true")) return weir_json_new_bool(true);
    if (literal(p, "false")) return weir_json_new_bool(false);
    if (literal(p, "null")) return weir_json_null();
    return fail(p, "expected value");
}

weir_json *weir_json_parse(const char *text, size_t len, const char **error) {
    parser p = {text, len, 0, 0, NULL};
    size_t valid = utf8_valid_up_to((const uint8_t *)text, len);
    weir_json *v = NULL;
    if (valid != len) {
        p.pos = valid;
        fail(&p, "invalid unicode code point");
    } else if ((v = parse_value(&p))) {
        skip_ws(&p);
        if (p.pos < len) v = fail(&p, "trailing characters");
    }
    if (!v && error) *error = p.error;
    return v;
}

static void dump_string(buf *b, const char *s, size_t len) {
    buf_put(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) snprintf(u, sizeof u, "\\u%04x", c), esc = u;
        if (!esc) continue;
        buf_put(b, s + start, i - start);
        buf_str(b, esc);
        start = i + 1;
    }
    buf_put(b, s + start, len - start);
    buf_put(b, "\"", 1);
}

static void dump(buf *b, const weir_json *v) {
    switch (weir_json_kind_of(v)) {
    case WEIR_JSON_NULL: buf_str(b, "null"); break;
    case WEIR_JSON_BOOL: buf_str(b, v->b ? "true" : "false"); break;
    case WEIR_JSON_NUMBER: buf_str(b, v->num_text); break;
    case WEIR_JSON_STRING: dump_string(b, v->str, v->str_len); break;
    case WEIR_JSON_ARRAY:
        buf_put(b, "[", 1);
        for (size_t i = 0; i < v->len; i++) {
            if (i) buf_put(b, ",", 1);
            dump(b, v->items[i]);
        }
        buf_put(b, "]", 1);
        break;
    case WEIR_JSON_OBJECT:
        buf_put(b, "{", 1);
        for (size_t i = 0; i < v->len; i++) {
            if (i) buf_put(b, ",", 1);
            dump_string(b, v->members[i].key, v->members[i].key_len);
            buf_put(b, ":", 1);
            dump(b, v->members[i].value);
        }
        buf_put(b, "}", 1);
        break;
    }
}

char *weir_json_dump(const weir_json *v, size_t *len) {
    buf b = {0};
    buf_put(&b, "", 0);
    dump(&b, v);
    if (len) *len = b.len;
    return b.p;
}
