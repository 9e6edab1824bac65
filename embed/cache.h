/*
 * The query cache of shoal-embed: (model, text) -> vector, least recently
 * used entries evicted first, bounded by a number of entries and,
 * optionally, by the bytes they hold (a long text's key costs more).
 *
 * Repeated query texts are common (the same search typed by many users, a
 * retried request), and a hit costs a hash and a copy instead of a forward
 * pass. Keys are the model's index on the server plus the exact bytes of the
 * text (no normalisation: the tokenizer decides what is equal, and two texts
 * that tokenize alike but differ in bytes simply take two entries).
 *
 * Locking: the cache is split into EMBED_CACHE_SHARDS shards by the key's
 * hash (xxHash XXH3), each with its own mutex, hash table and LRU list, so
 * that concurrent requests rarely wait on each other. A shard's lock is held
 * only for a lookup or an insertion and a copy of one vector; memory is
 * allocated outside it.
 */
#ifndef SH_EMBED_CACHE_H
#define SH_EMBED_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Shards: enough that 2x the worker threads of a busy server rarely meet
 * on one lock; a power of two (the hash's low bits pick the shard). */
#define EMBED_CACHE_SHARDS 16

typedef struct embed_cache embed_cache;

/* A cache of at most `entries` vectors (>= 1) holding at most max_bytes
 * (keys, vectors and bookkeeping; 0: no byte bound). Each shard gets an
 * equal share of both bounds. Returns SH_OK with *out, SH_EINVAL or
 * SH_ENOMEM. Freed with embed_cache_free. */
int embed_cache_new(size_t entries, size_t max_bytes, embed_cache **out);

/* Frees every entry. NULL is a no-op. No other call may run. */
void embed_cache_free(embed_cache *c);

/* Looks (model, text[0..len)) up: on a hit copies its dim floats to vec,
 * marks it most recently used and returns true. A NULL cache misses. Any
 * thread. */
bool embed_cache_get(embed_cache *c, uint32_t model, const char *text,
		     size_t len, float *vec, uint32_t dim);

/* Inserts (or refreshes) (model, text) -> vec[0..dim), evicting the least
 * recently used entries of its shard beyond the bound. Out of memory, the
 * vector is simply not cached. A NULL cache ignores it. Any thread. */
void embed_cache_put(embed_cache *c, uint32_t model, const char *text,
		     size_t len, const float *vec, uint32_t dim);

/* Current entries and the bytes they hold (keys, vectors, bookkeeping). */
void embed_cache_stats(embed_cache *c, size_t *entries, size_t *bytes);

#endif
