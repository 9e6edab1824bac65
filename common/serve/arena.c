/* One response's objects, freed at once. See arena.h. */
#include "arena.h"

#include <stdlib.h>
#include <string.h>

struct sh_arena_block {
	struct sh_arena_block *next;
	size_t used, cap;
	max_align_t data[];
};

#define ARENA_BLOCK (64u << 10)

void *sh_arena_alloc(sh_arena *a, size_t size)
{
	size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	struct sh_arena_block *b = a->blocks;
	if (!b || b->cap - b->used < size) {
		size_t cap = size > ARENA_BLOCK ? size : ARENA_BLOCK;
		b = malloc(sizeof(*b) + cap);
		if (!b) {
			a->oom = true;
			return NULL;
		}
		b->used = 0;
		b->cap = cap;
		b->next = a->blocks;
		a->blocks = b;
	}
	void *p = (char *)b->data + b->used;
	b->used += size;
	memset(p, 0, size);
	return p;
}

char *sh_arena_strndup(sh_arena *a, const char *s, size_t n)
{
	char *p = sh_arena_alloc(a, n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

bool sh_arena_defer(sh_arena *a, void (*fn)(void *), void *p)
{
	if (!p)
		return true;
	if (a->nowned == a->capowned) {
		size_t cap = a->capowned ? 2 * a->capowned : 16;
		struct sh_arena_owned *o = realloc(a->owned, cap * sizeof(*o));
		if (!o) {
			fn(p);
			a->oom = true;
			return false;
		}
		a->owned = o;
		a->capowned = cap;
	}
	a->owned[a->nowned].fn = fn;
	a->owned[a->nowned].p = p;
	a->nowned++;
	return true;
}

bool sh_arena_own(sh_arena *a, void *p)
{
	return sh_arena_defer(a, free, p);
}

void sh_arena_free(sh_arena *a)
{
	while (a->blocks) {
		struct sh_arena_block *b = a->blocks;
		a->blocks = b->next;
		free(b);
	}
	for (size_t i = 0; i < a->nowned; i++)
		a->owned[i].fn(a->owned[i].p);
	free(a->owned);
	memset(a, 0, sizeof(*a));
}
