/*
 * What weir.c and weir_json.c share, and plugins never see: the arena's
 * string and buffer helpers. The names are prefixed at link time so they
 * cannot clash with a plugin's own.
 */
#ifndef WEIR_INTERNAL_H
#define WEIR_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define dup_n weir__dup_n
#define dup_str weir__dup_str
#define buf_put weir__buf_put
#define buf_str weir__buf_str
#define utf8_valid_up_to weir__utf8_valid_up_to

/* A growable byte buffer in the arena. */
typedef struct {
    char *p;
    size_t len, cap;
} buf;

/* Copies into the arena, NUL-terminated. */
char *dup_n(const void *s, size_t len);
char *dup_str(const char *s);
void buf_put(buf *b, const void *s, size_t n);
void buf_str(buf *b, const char *s);
/* How many leading bytes of `s` are valid UTF-8. */
size_t utf8_valid_up_to(const uint8_t *s, size_t len);

#endif
