/*
 * An arena for the objects of one response: a server builds a protobuf
 * response out of many small objects, encodes it, and frees them all at
 * once. Buffers malloc'd elsewhere (payloads read from the store) can be
 * handed over with sh_arena_own. One thread at a time.
 */
#ifndef SH_ARENA_H
#define SH_ARENA_H

#include <stdbool.h>
#include <stddef.h>

struct sh_arena_block;

struct sh_arena_owned {
	void (*fn)(void *);
	void *p;
};

typedef struct sh_arena {
	struct sh_arena_block *blocks;
	struct sh_arena_owned *owned; /* freed with the arena, in order */
	size_t nowned, capowned;
	bool oom; /* an allocation failed: the response is incomplete */
} sh_arena;

/* Zeroed memory, aligned for any type; NULL (and a->oom) when out of
 * memory. Zero-initialised sh_arena storage is an empty arena. */
void *sh_arena_alloc(sh_arena *a, size_t size);

/* A NUL-terminated copy of s[0..n). */
char *sh_arena_strndup(sh_arena *a, const char *s, size_t n);

/* p (malloc'd, may be NULL) is freed with the arena. On failure p is freed
 * at once and false returned. */
bool sh_arena_own(sh_arena *a, void *p);

/* fn(p) runs when the arena is freed (e.g. a decoded message whose
 * objects the response points into). On failure fn(p) runs at once and
 * false is returned. */
bool sh_arena_defer(sh_arena *a, void (*fn)(void *), void *p);

/* Frees everything; the arena is empty and reusable. */
void sh_arena_free(sh_arena *a);

#endif
