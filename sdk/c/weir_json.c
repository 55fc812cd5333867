/*
 * The C SDK's JSON values: parsing (strict, as the Rust SDK's), building and
 * dumping, all in the event's arena (see weir.h, "JSON"). Split from weir.c;
 * every build compiles both.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weir.h"
#include "weir_internal.h"

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
