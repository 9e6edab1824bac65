/* The query cache: sharded hash tables with LRU lists. See cache.h. */
#include "cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "error.h"

/* One cached vector, allocated as one block: the struct, dim floats, then
 * the text's bytes. */
struct centry {
	uint64_t hash;
	struct centry *hnext;	    /* next in the hash bucket */
	struct centry *prev, *next; /* LRU list: head is the most recent */
	uint32_t model;
	uint32_t dim;
	size_t len;  /* text bytes */
	size_t size; /* the whole block, for the bytes gauge */
	float vec[]; /* dim floats, then the text */
};

/* One shard; everything in it is guarded by mu. */
struct cshard {
	pthread_mutex_t mu;
	struct centry **bucket; /* nbucket chains */
	size_t nbucket;		/* power of two */
	struct centry *head, *tail;
	size_t count, cap, bytes;
	size_t cap_bytes; /* 0: none */
};

struct embed_cache {
	struct cshard shard[EMBED_CACHE_SHARDS];
};

static const char *entry_text(const struct centry *e)
{
	return (const char *)(e->vec + e->dim);
}

static uint64_t key_hash(uint32_t model, const char *text, size_t len)
{
	return XXH3_64bits_withSeed(text, len, (XXH64_hash_t)model + 1);
}

int embed_cache_new(size_t entries, size_t max_bytes, embed_cache **out)
{
	*out = NULL;
	if (entries == 0)
		return SH_EINVAL;
	embed_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return SH_ENOMEM;
	size_t per = (entries + EMBED_CACHE_SHARDS - 1) / EMBED_CACHE_SHARDS;
	size_t nb = 16;
	while (nb < per && nb < ((size_t)1 << 30))
		nb <<= 1;
	for (int i = 0; i < EMBED_CACHE_SHARDS; i++) {
		struct cshard *s = &c->shard[i];
		pthread_mutex_init(&s->mu, NULL);
		/* The last shards take the remainder so the sum is exact. */
		s->cap = entries / EMBED_CACHE_SHARDS +
			 ((size_t)i < entries % EMBED_CACHE_SHARDS ? 1 : 0);
		s->cap_bytes = max_bytes / EMBED_CACHE_SHARDS;
		s->nbucket = nb;
		s->bucket = calloc(nb, sizeof(*s->bucket));
		if (!s->bucket) {
			embed_cache_free(c);
			return SH_ENOMEM;
		}
	}
	*out = c;
	return SH_OK;
}

void embed_cache_free(embed_cache *c)
{
	if (!c)
		return;
	for (int i = 0; i < EMBED_CACHE_SHARDS; i++) {
		struct cshard *s = &c->shard[i];
		struct centry *e = s->head;
		while (e) {
			struct centry *n = e->next;
			free(e);
			e = n;
		}
		free(s->bucket);
		pthread_mutex_destroy(&s->mu);
	}
	free(c);
}

static void lru_unlink(struct cshard *s, struct centry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		s->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		s->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push_front(struct cshard *s, struct centry *e)
{
	e->prev = NULL;
	e->next = s->head;
	if (s->head)
		s->head->prev = e;
	s->head = e;
	if (!s->tail)
		s->tail = e;
}

/* The link that points at the entry for the key (or at NULL). */
static struct centry **find(struct cshard *s, uint64_t h, uint32_t model,
			    const char *text, size_t len, uint32_t dim)
{
	struct centry **pp = &s->bucket[(h >> 4) & (s->nbucket - 1)];
	for (; *pp; pp = &(*pp)->hnext) {
		struct centry *e = *pp;
		if (e->hash == h && e->model == model && e->len == len &&
		    e->dim == dim && memcmp(entry_text(e), text, len) == 0)
			break;
	}
	return pp;
}

bool embed_cache_get(embed_cache *c, uint32_t model, const char *text,
		     size_t len, float *vec, uint32_t dim)
{
	if (!c)
		return false;
	uint64_t h = key_hash(model, text, len);
	struct cshard *s = &c->shard[h & (EMBED_CACHE_SHARDS - 1)];
	pthread_mutex_lock(&s->mu);
	struct centry *e = *find(s, h, model, text, len, dim);
	if (e) {
		lru_unlink(s, e);
		lru_push_front(s, e);
		memcpy(vec, e->vec, dim * sizeof(float));
	}
	pthread_mutex_unlock(&s->mu);
	return e != NULL;
}

void embed_cache_put(embed_cache *c, uint32_t model, const char *text,
		     size_t len, const float *vec, uint32_t dim)
{
	if (!c)
		return;
	uint64_t h = key_hash(model, text, len);
	struct cshard *s = &c->shard[h & (EMBED_CACHE_SHARDS - 1)];
	size_t size = sizeof(struct centry) + dim * sizeof(float) + len;
	struct centry *n = malloc(size);
	if (!n)
		return;
	n->hash = h;
	n->model = model;
	n->dim = dim;
	n->len = len;
	n->size = size;
	n->hnext = n->prev = n->next = NULL;
	memcpy(n->vec, vec, dim * sizeof(float));
	memcpy((char *)(n->vec + dim), text, len);

	struct centry *victims = NULL;
	pthread_mutex_lock(&s->mu);
	struct centry **pp = find(s, h, model, text, len, dim);
	if (*pp) {
		/* Another request embedded the same text meanwhile: keep the
		 * entry, refresh its place. */
		struct centry *e = *pp;
		lru_unlink(s, e);
		lru_push_front(s, e);
		pthread_mutex_unlock(&s->mu);
		free(n);
		return;
	}
	*pp = n;
	lru_push_front(s, n);
	s->count++;
	s->bytes += size;
	while (
	    (s->count > s->cap || (s->cap_bytes && s->bytes > s->cap_bytes)) &&
	    s->tail) {
		struct centry *v = s->tail;
		struct centry **vp =
		    find(s, v->hash, v->model, entry_text(v), v->len, v->dim);
		*vp = v->hnext;
		lru_unlink(s, v);
		s->count--;
		s->bytes -= v->size;
		v->hnext = victims;
		victims = v;
	}
	pthread_mutex_unlock(&s->mu);
	while (victims) {
		struct centry *v = victims;
		victims = v->hnext;
		free(v);
	}
}

void embed_cache_stats(embed_cache *c, size_t *entries, size_t *bytes)
{
	*entries = *bytes = 0;
	if (!c)
		return;
	for (int i = 0; i < EMBED_CACHE_SHARDS; i++) {
		struct cshard *s = &c->shard[i];
		pthread_mutex_lock(&s->mu);
		*entries += s->count;
		*bytes += s->bytes + s->nbucket * sizeof(*s->bucket);
		pthread_mutex_unlock(&s->mu);
	}
}
