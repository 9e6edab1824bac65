/* HNSW index: lifecycle, parameters, info, and per-thread state. */
#include "hnsw_impl.h"

#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "../error.h"

/* ---- Thread state: RCU registration, visited tags, scratch --------------- */

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static _Thread_local struct tls *tls_self;

static void tls_destroy(void *p)
{
	struct tls *t = p;
	if (!t)
		return;
	if (t->registered)
		urcu_memb_unregister_thread();
	free(t->tags);
	for (int i = 0; i < B_COUNT; i++)
		free(t->buf[i]);
	free(t);
}

static void tls_key_init(void)
{
	pthread_key_create(&tls_key, tls_destroy);
}

struct tls *hnsw_tls_get(void)
{
	struct tls *t = tls_self;
	if (likely(t != NULL))
		return t;
	pthread_once(&tls_once, tls_key_init);
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	urcu_memb_register_thread();
	t->registered = true;
	pthread_setspecific(tls_key, t);
	tls_self = t;
	return t;
}

void *hnsw_tls_buf(struct tls *t, int which, size_t bytes)
{
	if (t->bufcap[which] >= bytes)
		return t->buf[which];
	size_t cap = t->bufcap[which] ? t->bufcap[which] : 256;
	while (cap < bytes)
		cap *= 2;
	void *nb = realloc(t->buf[which], cap);
	if (!nb)
		return NULL;
	t->buf[which] = nb;
	t->bufcap[which] = cap;
	return nb;
}

/* Starts a query's visited set covering iids below n. */
int hnsw_visited_begin(struct tls *t, size_t n)
{
	if (t->ntags < n) {
		size_t cap = t->ntags ? t->ntags : 1024;
		while (cap < n)
			cap *= 2;
		uint16_t *nt = calloc(cap, sizeof(*nt));
		if (!nt)
			return SH_ENOMEM;
		free(t->tags);
		t->tags = nt;
		t->ntags = cap;
		t->epoch = 0;
	}
	if (++t->epoch == 0) {
		memset(t->tags, 0, t->ntags * sizeof(*t->tags));
		t->epoch = 1;
	}
	return SH_OK;
}

/* ---- Vector checks ------------------------------------------------------- */

int hnsw_check_vector(const float *v, uint32_t dim)
{
	for (uint32_t i = 0; i < dim; i++)
		if (!isfinite(v[i]))
			return SH_ENAN;
	return SH_OK;
}

int hnsw_normalise(const float *in, float *out, uint32_t dim)
{
	double s = 0;
	for (uint32_t i = 0; i < dim; i++)
		s += (double)in[i] * in[i];
	if (!(s > 0))
		return SH_EINVAL;
	float inv = (float)(1.0 / sqrt(s));
	for (uint32_t i = 0; i < dim; i++)
		out[i] = in[i] * inv;
	return SH_OK;
}

/* ---- Lifecycle ----------------------------------------------------------- */

void sh_hnsw_params_default(sh_hnsw_params *p, uint32_t dim)
{
	memset(p, 0, sizeof(*p));
	p->dim = dim;
	p->metric = SH_METRIC_L2;
	p->storage = SH_STORAGE_F32;
	p->m = 16;
	p->ef_construction = 200;
	p->ef_search = 64;
	p->seed = 42;
	p->rescore = 3;
}

int sh_hnsw_new(const sh_hnsw_params *p, sh_hnsw **out)
{
	if (!p || p->dim < 1 || p->dim > SH_HNSW_MAX_DIM || p->m < 2 ||
	    p->m > SH_HNSW_MAX_M || p->ef_construction < 1 ||
	    p->ef_construction > SH_HNSW_MAX_EF ||
	    p->ef_search > SH_HNSW_MAX_EF || p->rescore > SH_HNSW_MAX_EF ||
	    p->metric > SH_METRIC_COSINE || p->storage > SH_STORAGE_INT8)
		return SH_EINVAL;
	sh_hnsw *h = calloc(1, sizeof(*h));
	if (!h)
		return SH_ENOMEM;
	h->p = *p;
	if (!h->p.ef_search)
		h->p.ef_search = 64;
	h->k = sh_kernels_get();
	h->m0 = 2 * p->m;
	h->vec_bytes =
	    p->storage == SH_STORAGE_INT8 ? p->dim : p->dim * sizeof(float);
	size_t hdr = OFF_LINKS + (size_t)h->m0 * sizeof(uint32_t);
	if (p->storage == SH_STORAGE_INT8)
		hdr += sizeof(sh_q8_meta);
	h->vec_off = round_up(hdr, 64);
	h->stride = round_up(h->vec_off + h->vec_bytes, 64);
	h->level_mult = 1.0 / log((double)p->m);
	h->rng = p->seed;
	h->entry = SH_IID_NONE;
	pthread_mutex_init(&h->wlock, NULL);
	h->wvec = malloc(p->dim * sizeof(float));
	h->dir = malloc(sizeof(struct nodedir) + 4 * sizeof(char *));
	if (!h->wvec || !h->dir) {
		free(h->wvec);
		free(h->dir);
		free(h);
		return SH_ENOMEM;
	}
	h->dir->nchunks = 0;
	h->dir->cap = 4;
	*out = h;
	return SH_OK;
}

void sh_hnsw_free(sh_hnsw *h)
{
	if (!h)
		return;
	for (uint32_t i = 0; i < h->next; i++)
		if (node_flags(wnode(h, i)) & NF_USED)
			hnsw_node_release(h, i);
	for (uint32_t c = 0; c < h->dir->nchunks; c++)
		free(h->dir->chunk[c]);
	/* directories replaced earlier may still wait in call_rcu */
	if (hnsw_tls_get())
		urcu_memb_barrier();
	free(h->dir);
	free(h->map.e);
	free(h->freelist);
	free(h->chg);
	free(h->chgbuf);
	free(h->touched);
	free(h->wvec);
	pthread_mutex_destroy(&h->wlock);
	free(h);
}

const sh_hnsw_params *sh_hnsw_params_of(const sh_hnsw *h)
{
	return &h->p;
}

void sh_hnsw_set_change_fn(sh_hnsw *h, sh_hnsw_change_fn fn, void *ctx)
{
	pthread_mutex_lock(&h->wlock);
	h->change_fn = fn;
	h->change_ctx = ctx;
	pthread_mutex_unlock(&h->wlock);
}

void sh_hnsw_set_fetch_fn(sh_hnsw *h, sh_hnsw_fetch_fn fn, void *ctx)
{
	pthread_mutex_lock(&h->wlock);
	h->fetch = fn;
	h->fetch_ctx = ctx;
	pthread_mutex_unlock(&h->wlock);
}

void sh_hnsw_info_get(const sh_hnsw *h, sh_hnsw_info *out)
{
	sh_hnsw *w = (sh_hnsw *)h;
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&w->wlock);
	out->live = h->nlive;
	out->tombstones = h->ntomb;
	out->nodes = h->next - h->nfree;
	out->capacity = (uint64_t)h->dir->nchunks * SH_CHUNK_NODES;
	out->mem_bytes = sizeof(*h) + out->capacity * h->stride +
			 sizeof(struct nodedir) + h->dir->cap * sizeof(char *) +
			 h->upper_bytes + h->map.cap * sizeof(uint64_t) +
			 h->capfree * sizeof(uint32_t);
	out->mem_bytes += h->nstr * sizeof(sh_pid);
	out->entry = (uint32_t)h->entry;
	out->max_level =
	    out->entry == SH_IID_NONE ? 0 : (uint32_t)(h->entry >> 32);
	out->kernels = h->k->name;
	pthread_mutex_unlock(&w->wlock);
}
