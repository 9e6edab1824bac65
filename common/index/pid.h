/*
 * Point ids.
 *
 * A point is named by its caller either by an unsigned 64-bit integer or by a
 * UTF-8 string of at most SH_PID_MAX_STR bytes (a product SKU, say). The two
 * kinds live in one namespace: the integer 7 and the string "7" are different
 * points.
 *
 * sh_pid is a plain value (no pointers), so it can be copied with = and
 * returned in search results that outlive the index's read-side section.
 */
#ifndef SH_PID_H
#define SH_PID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest string id, in bytes. Large enough for SKUs, UUIDs (36) and most
 * URL slugs; small enough that an id fits in one cache line. */
#define SH_PID_MAX_STR 64

enum { SH_PID_U64 = 0, SH_PID_STR = 1 };

typedef struct sh_pid {
	uint8_t kind;		  /* SH_PID_U64 or SH_PID_STR */
	uint8_t len;		  /* string length in bytes (SH_PID_STR only) */
	uint64_t num;		  /* the integer (SH_PID_U64 only) */
	char str[SH_PID_MAX_STR]; /* not NUL-terminated when len == 64 */
} sh_pid;

/* Strict UTF-8: true when the n bytes are well-formed UTF-8 with no
 * overlong forms, no surrogates, nothing above U+10FFFF and no NUL (an
 * embedded NUL would silently shorten a string handed on as C text). The one
 * check for ids, payload keys and filter values. */
bool sh_utf8_valid(const void *s, size_t n);

/* An integer id. */
sh_pid sh_pid_u64(uint64_t v);

/* A string id. Returns SH_OK, or SH_EINVAL when len is 0, len exceeds
 * SH_PID_MAX_STR or the bytes are not sh_utf8_valid (out is then untouched). */
int sh_pid_str(const char *s, size_t len, sh_pid *out);

bool sh_pid_eq(const sh_pid *a, const sh_pid *b);

/* The bytes an id hashes and sorts by: 8 little-endian bytes for integers,
 * the string bytes for strings. Sets *len; the pointer aliases a or buf
 * (at least 8 bytes). */
const void *sh_pid_bytes(const sh_pid *a, uint8_t buf[8], size_t *len);

/* xxh64 of sh_pid_bytes() with seed 0: the hash that places a point in a slot
 * (slot = hash % 16384) and in the index's id table. */
uint64_t sh_pid_hash(const sh_pid *a);

/* Writes a printable form ("42" or "\"sku-1\"") into buf, NUL-terminated and
 * truncated to cap. Returns buf. */
char *sh_pid_format(const sh_pid *a, char *buf, size_t cap);

#endif
