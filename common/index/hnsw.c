/*
 * HNSW index: graph, search, writes, vacuum, change log and loader.
 * The public contract, including the RCU story, is in hnsw.h.
 *
 * Memory layout. Nodes live in chunks of SH_CHUNK_NODES fixed-size blocks.
 * One block holds everything a level-0 visit touches, so a visit is one
 * memory stream:
 *
 *   off 0   u32  nlinks0         level-0 link count (atomic)
 *   off 4   u8   level           top level of the node
 *   off 5   u8   flags           NF_USED | NF_TOMB | NF_STR (atomic)
 *   off 8   u64  label           u64 point id, or sh_pid * for string ids
 *   off 16  u32* upper           levels 1..level: (1 + M) u32 each
 *   off 24  u32  links0[2M]      level-0 neighbours
 *   ...     sh_q8_meta           int8 storage only, just before the codes
 *   vec_off float[dim] | u8[dim] 64-byte aligned: no split cache lines
 *
 * The stride is a multiple of 64 bytes.
 */
#include "hnsw.h"

#include <math.h>
#include <pthread.h>
#include <roaring/roaring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <urcu/urcu-memb.h>
#include <urcu/pointer.h>

#include "../error.h"
#include "quant.h"

#define SH_CHUNK_SHIFT 12
#define SH_CHUNK_NODES (1u << SH_CHUNK_SHIFT)
#define SH_CHUNK_MASK (SH_CHUNK_NODES - 1)

#define NF_USED 1u /* block holds a node (live or tombstoned) */
#define NF_TOMB 2u /* tombstoned: routes, never returned */
#define NF_STR 4u  /* label is a heap sh_pid * (string id) */

#define OFF_NLINKS 0
#define OFF_LEVEL 4
#define OFF_FLAGS 5
#define OFF_LABEL 8
#define OFF_UPPER 16
#define OFF_LINKS 24

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Chunk directory: replaced copy-on-write when it fills (rare), so readers
 * index it without a lock. A reader whose copy is too short for an iid it
 * found reloads the pointer: the iid was published after the longer copy. */
struct nodedir {
	struct rcu_head rcu;
	uint32_t nchunks; /* chunks in use */
	uint32_t cap;     /* slots in chunk[] */
	char *chunk[];
};

/* Open-addressing table point id -> iid, owned by the writer (lookups take
 * the writer mutex). An entry packs iid (low 32 bits) and 32 bits of the
 * point id's hash (high) for a cheap first compare. */
#define MAP_EMPTY UINT64_MAX
#define MAP_DEAD (UINT64_MAX - 1)

struct idmap {
	uint64_t *e;
	size_t cap; /* power of two */
	size_t used; /* live + dead entries */
	size_t live;
};

struct sh_hnsw {
	sh_hnsw_params p;
	const sh_kernels *k;
	uint32_t m0;        /* level-0 capacity: 2M */
	size_t stride;      /* bytes per node block */
	size_t vec_off;     /* offset of the vector or codes */
	size_t vec_bytes;   /* 4 * dim or dim */
	double level_mult;  /* 1 / ln(M) */

	/* Published to readers. */
	struct nodedir *dir;        /* rcu_assign_pointer / rcu_dereference */
	uint64_t entry;             /* (level << 32) | iid, atomic */
	uint64_t ntomb;             /* tombstoned nodes, atomic */
	uint64_t nlive;             /* atomic */
	sh_hnsw_fetch_fn fetch;
	void *fetch_ctx;

	/* Writer state: everything below is owned by whoever holds wlock. */
	pthread_mutex_t wlock;
	uint32_t next;         /* iids [0, next) have been handed out */
	uint32_t *freelist;    /* iids ready for reuse */
	size_t nfree, capfree;
	struct idmap map;
	uint64_t rng;
	uint64_t upper_bytes;  /* heap bytes of upper link lists */
	uint64_t nstr;         /* nodes holding a heap string id */
	sh_hnsw_change_fn change_fn;
	void *change_ctx;
	bool loading;
	/* Change log of the mutation in progress. */
	sh_hnsw_change *chg;
	size_t nchg, capchg;
	uint32_t *chgbuf;      /* link copies the LINKS records point into */
	size_t chgneed, capchgbuf;
	uint64_t *touched;     /* (iid << 8 | level) touched, deduplicated */
	size_t ntouched, captouched;
	float *wvec;           /* writer scratch: normalised vector */
};

/* ---- Small helpers -------------------------------------------------------- */

static inline size_t round_up(size_t x, size_t a)
{
	return (x + a - 1) / a * a;
}

static inline uint32_t ld32(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void st32(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline uint8_t node_flags(const char *n)
{
	return __atomic_load_n((const uint8_t *)(n + OFF_FLAGS),
			       __ATOMIC_ACQUIRE);
}

static inline void node_set_flags(char *n, uint8_t f)
{
	__atomic_store_n((uint8_t *)(n + OFF_FLAGS), f, __ATOMIC_RELEASE);
}

static inline uint32_t node_level(const char *n)
{
	return *(const uint8_t *)(n + OFF_LEVEL);
}

static inline uint32_t *node_links0(const char *n)
{
	return (uint32_t *)(n + OFF_LINKS);
}

static inline uint32_t *node_upper(const char *n)
{
	uint32_t *u;
	memcpy(&u, n + OFF_UPPER, sizeof(u));
	return u;
}

static inline uint64_t node_label(const char *n)
{
	uint64_t v;
	memcpy(&v, n + OFF_LABEL, sizeof(v));
	return v;
}

/* Count word of the list at level l; the iids follow it (level 0: the
 * count sits at OFF_NLINKS and the iids at OFF_LINKS). */
static inline uint32_t *node_list(const sh_hnsw *h, const char *n, uint32_t l,
				  uint32_t **ids)
{
	if (l == 0) {
		*ids = node_links0(n);
		return (uint32_t *)(n + OFF_NLINKS);
	}
	uint32_t *u = node_upper(n) + (size_t)(l - 1) * (h->p.m + 1);
	*ids = u + 1;
	return u;
}

static inline uint32_t level_cap(const sh_hnsw *h, uint32_t l)
{
	return l == 0 ? h->m0 : h->p.m;
}

static inline const char *node_at(const sh_hnsw *h,
				  const struct nodedir **dp, uint32_t iid)
{
	const struct nodedir *d = *dp;
	uint32_t c = iid >> SH_CHUNK_SHIFT;
	if (unlikely(c >= __atomic_load_n(&d->nchunks, __ATOMIC_ACQUIRE))) {
		d = rcu_dereference(((sh_hnsw *)h)->dir);
		*dp = d;
	}
	return d->chunk[c] + (size_t)(iid & SH_CHUNK_MASK) * h->stride;
}

/* Writer's view: the writer owns the directory, no reload needed. */
static inline char *wnode(const sh_hnsw *h, uint32_t iid)
{
	return h->dir->chunk[iid >> SH_CHUNK_SHIFT] +
	       (size_t)(iid & SH_CHUNK_MASK) * h->stride;
}

static inline const float *node_vec(const sh_hnsw *h, const char *n)
{
	return (const float *)(n + h->vec_off);
}

static inline const uint8_t *node_codes(const sh_hnsw *h, const char *n)
{
	return (const uint8_t *)(n + h->vec_off);
}

static inline const sh_q8_meta *node_meta(const sh_hnsw *h, const char *n)
{
	return (const sh_q8_meta *)(n + h->vec_off - sizeof(sh_q8_meta));
}

static void node_pid(const char *n, sh_pid *out)
{
	uint64_t lab = node_label(n);
	if (node_flags(n) & NF_STR)
		*out = *(const sh_pid *)(uintptr_t)lab;
	else
		*out = sh_pid_u64(lab);
}

static inline void prefetch_lines(const void *p, size_t bytes)
{
	const char *c = p;
	for (size_t o = 0; o < bytes; o += 64)
		__builtin_prefetch(c + o, 0, 3);
}

static int check_vector(const float *v, uint32_t dim)
{
	for (uint32_t i = 0; i < dim; i++)
		if (!isfinite(v[i]))
			return SH_ENAN;
	return SH_OK;
}

/* ---- Thread state: RCU registration, visited tags, scratch --------------- */

/* Everything one thread needs to search, grown on demand and kept for the
 * thread's lifetime, so a warm thread allocates nothing per query. Visited
 * marks are u16 tags compared with a per-query epoch: reset is O(1) except
 * once every 65535 queries. */
struct tls {
	bool registered;
	uint16_t epoch;
	uint16_t *tags;
	size_t ntags;
	void *buf[6];
	size_t bufcap[6];
};

enum { B_QUERY, B_POOL, B_CAND, B_TOP, B_UNVIS, B_RES };

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
	for (int i = 0; i < 6; i++)
		free(t->buf[i]);
	free(t);
}

static void tls_key_init(void)
{
	pthread_key_create(&tls_key, tls_destroy);
}

static struct tls *tls_get(void)
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

static void *tls_buf(struct tls *t, int which, size_t bytes)
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
static int visited_begin(struct tls *t, size_t n)
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

/* ---- Distances ----------------------------------------------------------- */

/* A prepared query: the normalised floats (cosine) or the quantized codes. */
struct qctx {
	const float *f;
	const int8_t *codes;
	sh_q8_meta meta;
	uint64_t ndist;
};

static inline float dist_q(const sh_hnsw *h, struct qctx *q, const char *n)
{
	q->ndist++;
	size_t d = h->p.dim;
	if (h->p.storage == SH_STORAGE_INT8) {
		const sh_q8_meta *m = node_meta(h, n);
		int32_t raw = h->k->dot_u8i8(node_codes(h, n), q->codes, d);
		float dot = sh_q8_dot_query(raw, m, &q->meta, d);
		if (h->p.metric == SH_METRIC_L2) {
			float r = m->norm2 + q->meta.norm2 - 2.0f * dot;
			return r > 0 ? r : 0;
		}
		return 1.0f - dot;
	}
	if (h->p.metric == SH_METRIC_L2)
		return h->k->l2sq_f32(node_vec(h, n), q->f, d);
	return 1.0f - h->k->dot_f32(node_vec(h, n), q->f, d);
}

/* Distance between two stored nodes (the writer's neighbour selection). */
static float dist_nodes(const sh_hnsw *h, const char *a, const char *b)
{
	size_t d = h->p.dim;
	if (h->p.storage == SH_STORAGE_INT8) {
		const sh_q8_meta *ma = node_meta(h, a), *mb = node_meta(h, b);
		uint32_t raw = h->k->dot_u8(node_codes(h, a), node_codes(h, b), d);
		float dot = sh_q8_dot_pair(raw, ma, mb, d);
		if (h->p.metric == SH_METRIC_L2) {
			float r = ma->norm2 + mb->norm2 - 2.0f * dot;
			return r > 0 ? r : 0;
		}
		return 1.0f - dot;
	}
	if (h->p.metric == SH_METRIC_L2)
		return h->k->l2sq_f32(node_vec(h, a), node_vec(h, b), d);
	return 1.0f - h->k->dot_f32(node_vec(h, a), node_vec(h, b), d);
}

/* Exact float distance between a query and a float vector. */
static float dist_f32(const sh_hnsw *h, const float *q, const float *v)
{
	if (h->p.metric == SH_METRIC_L2)
		return h->k->l2sq_f32(v, q, h->p.dim);
	return 1.0f - h->k->dot_f32(v, q, h->p.dim);
}

static int normalise(const float *in, float *out, uint32_t dim)
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

/* Prepares q for searching: normalises for cosine, quantizes for int8.
 * *fq gets the float query the distances use (for rescoring). */
static int prepare_query(const sh_hnsw *h, struct tls *t, const float *q,
			 struct qctx *qc, const float **fq)
{
	size_t d = h->p.dim;
	memset(qc, 0, sizeof(*qc));
	qc->f = q;
	/* one buffer: [normalised floats | codes] */
	char *b = tls_buf(t, B_QUERY, d * sizeof(float) + d + 64);
	if (!b)
		return SH_ENOMEM;
	if (h->p.metric == SH_METRIC_COSINE) {
		if (normalise(q, (float *)b, (uint32_t)d) != SH_OK)
			return SH_EINVAL;
		qc->f = (const float *)b;
	}
	if (h->p.storage == SH_STORAGE_INT8) {
		int8_t *codes = (int8_t *)(b + d * sizeof(float));
		sh_q8_encode_query(qc->f, d, codes, &qc->meta);
		qc->codes = codes;
	}
	*fq = qc->f;
	return SH_OK;
}

/* ---- Search primitives --------------------------------------------------- */

typedef struct cand {
	float d;
	uint32_t id;
} cand;

/* Binary heaps over cand: min-heap (closest on top) for candidates to
 * expand, max-heap (farthest on top) for the best results so far. */
static inline void heap_push(cand *a, size_t *n, cand c, bool max)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		bool up = max ? (a[p].d < c.d) : (a[p].d > c.d);
		if (!up)
			break;
		a[i] = a[p];
		i = p;
	}
	a[i] = c;
}

static inline cand heap_pop(cand *a, size_t *n, bool max)
{
	cand top = a[0], last = a[--(*n)];
	size_t i = 0, sz = *n;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, b = i;
		cand best = last;
		if (l < sz && (max ? a[l].d > best.d : a[l].d < best.d))
			b = l, best = a[l];
		if (r < sz && (max ? a[r].d > best.d : a[r].d < best.d))
			b = r;
		if (b == i)
			break;
		a[i] = a[b];
		i = b;
	}
	if (sz)
		a[i] = last;
	return top;
}

/* Greedy descent through the upper levels down to level `stop`+1. */
static uint32_t descend(const sh_hnsw *h, const struct nodedir **dp,
			struct qctx *q, uint32_t ep, uint32_t top,
			uint32_t stop, float *dep)
{
	const char *n = node_at(h, dp, ep);
	float best = dist_q(h, q, n);
	for (uint32_t l = top; l > stop; l--) {
		bool changed = true;
		while (changed) {
			changed = false;
			n = node_at(h, dp, ep);
			uint32_t *ids, cnt;
			if (node_level(n) < l)
				break;
			cnt = ld32(node_list(h, n, l, &ids));
			if (cnt > h->p.m)
				cnt = h->p.m;
			for (uint32_t i = 0; i < cnt; i++) {
				uint32_t c = ld32(&ids[i]);
				const char *cn = node_at(h, dp, c);
				float d = dist_q(h, q, cn);
				if (d < best) {
					best = d;
					ep = c;
					changed = true;
				}
			}
		}
	}
	*dep = best;
	return ep;
}

/* Filter and liveness test for a result. */
struct elig {
	const sh_hnsw_filter *f;
	bool any; /* a filter is set */
};

static inline bool eligible(const struct elig *e, const char *n, uint32_t id)
{
	if (node_flags(n) & NF_TOMB)
		return false;
	if (!e->any)
		return true;
	if (e->f->allow && !roaring_bitmap_contains(e->f->allow, id))
		return false;
	if (e->f->fn && !e->f->fn(e->f->ctx, id))
		return false;
	return true;
}

/* Lookahead of the distance loop: prefetch the vector of the neighbour this
 * many places ahead. */
#define PF_AHEAD 2

/*
 * Level-0 search, fast path: a sorted array of at most ef candidates that
 * are both the expansion frontier and the result (as in the "linear pool"
 * of fast graph indexes). Used when no filter is set and there are no
 * tombstones. Returns the pool size; pool[0..n) ascending.
 */
static size_t search_pool(const sh_hnsw *h, const struct nodedir **dp,
			  struct tls *t, struct qctx *q, uint32_t ep,
			  float dep, size_t ef, cand *pool, uint8_t *checked,
			  uint32_t *unvis)
{
	size_t n = 0, cur = 0;
	uint16_t ep_tag = t->epoch;
	uint16_t *tags = t->tags;
	size_t ntags = t->ntags;
	size_t vbytes = h->vec_bytes;
	size_t pf = vbytes < 512 ? vbytes : 512;

	pool[0] = (cand){dep, ep};
	checked[0] = 0;
	n = 1;
	tags[ep] = ep_tag;
	while (cur < n) {
		checked[cur] = 1;
		const char *cn = node_at(h, dp, pool[cur].id);
		uint32_t cnt = ld32((const uint32_t *)(cn + OFF_NLINKS));
		const uint32_t *ids = node_links0(cn);
		if (cnt > h->m0)
			cnt = h->m0;
		size_t nu = 0;
		for (uint32_t i = 0; i < cnt; i++) {
			uint32_t id = ld32(&ids[i]);
			/* a node linked after this search began: skip it */
			if (unlikely(id >= ntags) || tags[id] == ep_tag)
				continue;
			tags[id] = ep_tag;
			unvis[nu++] = id;
		}
		for (size_t i = 0; i < nu && i < PF_AHEAD; i++)
			prefetch_lines(node_at(h, dp, unvis[i]) + h->vec_off, pf);
		size_t lowest = n;
		for (size_t i = 0; i < nu; i++) {
			if (i + PF_AHEAD < nu)
				prefetch_lines(node_at(h, dp, unvis[i + PF_AHEAD]) +
						       h->vec_off,
					       pf);
			const char *nn = node_at(h, dp, unvis[i]);
			float d = dist_q(h, q, nn);
			if (n == ef && d >= pool[n - 1].d)
				continue;
			/* insertion point: first entry farther than d */
			size_t lo = 0, hi = n;
			while (lo < hi) {
				size_t mid = (lo + hi) / 2;
				if (pool[mid].d <= d)
					lo = mid + 1;
				else
					hi = mid;
			}
			size_t move = (n == ef ? n - 1 : n) - lo;
			memmove(&pool[lo + 1], &pool[lo], move * sizeof(*pool));
			memmove(&checked[lo + 1], &checked[lo], move);
			pool[lo] = (cand){d, unvis[i]};
			checked[lo] = 0;
			if (n < ef)
				n++;
			if (lo < lowest)
				lowest = lo;
		}
		if (lowest < cur)
			cur = lowest;
		while (cur < n && checked[cur])
			cur++;
	}
	return n;
}

/*
 * Level-0 search, general path (filters, tombstones, and the writer's
 * insertion search, which must see every node): candidates in a min-heap,
 * the best `ef` eligible nodes in a max-heap. Ineligible nodes still route.
 * While fewer than ef eligible nodes are known, the search keeps expanding.
 * Returns the number of results in top (a max-heap), or SIZE_MAX when it
 * computed more than `budget` distances (0: no limit) without finishing.
 */
static size_t search_heaps(const sh_hnsw *h, const struct nodedir **dp,
			   struct tls *t, struct qctx *q, const uint32_t *eps,
			   const float *deps, size_t neps, size_t ef,
			   const struct elig *el, uint32_t level, uint64_t budget,
			   cand **candp, size_t *candcap, cand *top)
{
	uint16_t tag = t->epoch;
	uint16_t *tags = t->tags;
	size_t ntags = t->ntags;
	cand *cq = *candp;
	size_t nc = 0, nt = 0;
	float bound = INFINITY;
	size_t vbytes = h->vec_bytes;
	size_t pf = vbytes < 512 ? vbytes : 512;

	for (size_t i = 0; i < neps; i++) {
		uint32_t ep = eps[i];
		if (ep >= ntags || tags[ep] == tag)
			continue;
		tags[ep] = tag;
		const char *n = node_at(h, dp, ep);
		heap_push(cq, &nc, (cand){deps[i], ep}, false);
		if (!el || eligible(el, n, ep)) {
			heap_push(top, &nt, (cand){deps[i], ep}, true);
			if (nt > ef)
				heap_pop(top, &nt, true);
		}
	}
	if (nt == ef)
		bound = top[0].d;

	while (nc > 0) {
		cand c = heap_pop(cq, &nc, false);
		if (c.d > bound && nt == ef)
			break;
		if (budget && q->ndist > budget) {
			*candp = cq;
			return SIZE_MAX;
		}
		const char *cn = node_at(h, dp, c.id);
		uint32_t *ids;
		uint32_t cnt;
		if (level > 0 && node_level(cn) < level)
			continue;
		cnt = ld32(node_list(h, cn, level, &ids));
		uint32_t capl = level_cap(h, level);
		if (cnt > capl)
			cnt = capl;
		for (uint32_t i = 0; i < cnt; i++) {
			uint32_t id = ld32(&ids[i]);
			if (unlikely(id >= ntags) || tags[id] == tag)
				continue;
			tags[id] = tag;
			if (i + 1 < cnt)
				prefetch_lines(node_at(h, dp, ld32(&ids[i + 1])) +
						       h->vec_off,
					       pf);
			const char *nn = node_at(h, dp, id);
			float d = dist_q(h, q, nn);
			if (nt == ef && d >= bound)
				continue;
			if (nc + 1 > *candcap) {
				size_t ncap = *candcap * 2;
				cand *ncq = realloc(cq, ncap * sizeof(*cq));
				if (!ncq)
					break; /* degrade: stop growing */
				cq = ncq;
				*candcap = ncap;
			}
			heap_push(cq, &nc, (cand){d, id}, false);
			if (!el || eligible(el, nn, id)) {
				heap_push(top, &nt, (cand){d, id}, true);
				if (nt > ef)
					heap_pop(top, &nt, true);
				if (nt == ef)
					bound = top[0].d;
			}
		}
	}
	*candp = cq;
	return nt;
}

static int cand_cmp(const void *a, const void *b)
{
	const cand *x = a, *y = b;
	if (x->d < y->d)
		return -1;
	if (x->d > y->d)
		return 1;
	return (x->id > y->id) - (x->id < y->id);
}

/* ---- Planner and public search ------------------------------------------ */

const char *sh_hnsw_plan_name(sh_hnsw_plan p)
{
	switch (p) {
	case SH_PLAN_GRAPH:
		return "graph";
	case SH_PLAN_FILTERED_GRAPH:
		return "filtered_graph";
	case SH_PLAN_EXACT_SCAN:
		return "exact_scan";
	}
	return "unknown";
}

static bool filter_set(const sh_hnsw_filter *f)
{
	return f && (f->allow || f->fn);
}

/*
 * Estimates how many live points pass f and picks a plan. A filtered graph
 * search has to look at about (the unfiltered cost) / (fraction passing)
 * nodes to find ef passing ones, and the unfiltered cost is about ef * 2M
 * distances; an exact scan costs one distance per passing point, read in
 * iid order (cheaper per point than a graph hop). Choose the cheaper.
 */
static sh_hnsw_plan plan_search(const sh_hnsw *h, const sh_hnsw_filter *f,
				size_t ef, uint64_t *est_out)
{
	uint64_t live = __atomic_load_n(&h->nlive, __ATOMIC_RELAXED);
	if (f && f->force_plan == 1 + SH_PLAN_EXACT_SCAN) {
		*est_out = live;
		return SH_PLAN_EXACT_SCAN;
	}
	if (!filter_set(f)) {
		*est_out = live;
		return SH_PLAN_GRAPH;
	}
	uint64_t est = live;
	if (f->allow) {
		uint64_t c = roaring_bitmap_get_cardinality(f->allow);
		est = c < est ? c : est;
	}
	if (f->fn && f->est_pass && f->est_pass < est)
		est = f->est_pass;
	*est_out = est;
	if (f->force_plan == 1 + SH_PLAN_GRAPH ||
	    f->force_plan == 1 + SH_PLAN_FILTERED_GRAPH)
		return SH_PLAN_FILTERED_GRAPH;
	if (live == 0)
		return SH_PLAN_EXACT_SCAN;
	double sel = (double)(est ? est : 1) / (double)live;
	double graph_cost = (double)ef * h->m0 / sel;
	if ((double)est <= 2.0 * graph_cost)
		return SH_PLAN_EXACT_SCAN;
	return SH_PLAN_FILTERED_GRAPH;
}

/* Keeps the k best of an ascending list, dropping duplicate point ids (an
 * upsert can make the old and the new node visible for an instant) and
 * filling out. Returns the count. */
static size_t collect_hits(const sh_hnsw *h, const struct nodedir **dp,
			   const cand *c, size_t nc, size_t k,
			   sh_hnsw_hit *out)
{
	size_t n = 0;
	for (size_t i = 0; i < nc && n < k; i++) {
		const char *nn = node_at(h, dp, c[i].id);
		uint8_t fl = node_flags(nn);
		if (!(fl & NF_USED) || (fl & NF_TOMB))
			continue;
		sh_pid pid;
		node_pid(nn, &pid);
		bool dup = false;
		for (size_t j = 0; j < n && !dup; j++)
			dup = sh_pid_eq(&out[j].pid, &pid);
		if (dup)
			continue;
		out[n].dist = c[i].d;
		out[n].iid = c[i].id;
		out[n].pid = pid;
		n++;
	}
	return n;
}

/* Re-ranks candidates with exact float distances from the fetch callback
 * (int8 storage). c is re-sorted in place. */
static size_t rescore(const sh_hnsw *h, const struct nodedir **dp,
		      struct tls *t, const float *fq, cand *c, size_t nc,
		      uint64_t *nres)
{
	float *scratch = tls_buf(t, B_RES, h->p.dim * sizeof(float));
	if (!scratch)
		return nc;
	for (size_t i = 0; i < nc; i++) {
		const char *nn = node_at(h, dp, c[i].id);
		uint8_t fl = node_flags(nn);
		if (!(fl & NF_USED) || (fl & NF_TOMB))
			continue;
		sh_pid pid;
		node_pid(nn, &pid);
		const float *v = h->fetch(h->fetch_ctx, c[i].id, &pid, scratch);
		if (!v)
			continue;
		(*nres)++;
		if (h->p.metric == SH_METRIC_COSINE) {
			/* the stored vector is normalised; the fetched one may
			 * not be */
			double s = 0;
			for (uint32_t j = 0; j < h->p.dim; j++)
				s += (double)v[j] * v[j];
			float dot = h->k->dot_f32(v, fq, h->p.dim);
			c[i].d = s > 0 ? 1.0f - dot / (float)sqrt(s) : 1.0f;
		} else {
			c[i].d = dist_f32(h, fq, v);
		}
	}
	qsort(c, nc, sizeof(*c), cand_cmp);
	return nc;
}

/* Distance to one scanned node, kept in the max-heap `top` of size keep. */
static inline void scan_one(const sh_hnsw *h, const struct nodedir **dp,
			    struct qctx *q, const struct elig *el, uint32_t id,
			    size_t keep, cand *top, size_t *nt)
{
	const char *n = node_at(h, dp, id);
	if (!(node_flags(n) & NF_USED) || !eligible(el, n, id))
		return;
	float dd = dist_q(h, q, n);
	if (*nt == keep && dd >= top[0].d)
		return;
	heap_push(top, nt, (cand){dd, id}, true);
	if (*nt > keep)
		heap_pop(top, nt, true);
}

/* Lookahead of the exact scan over a bitmap: passing nodes are scattered
 * through the node array, too far apart for the hardware prefetcher. */
#define SCAN_AHEAD 4
#define SCAN_BATCH 256

static size_t exact_scan(const sh_hnsw *h, const struct nodedir **dp,
			 struct qctx *q, const sh_hnsw_filter *f, size_t keep,
			 cand *top)
{
	struct elig el = {f, filter_set(f)};
	size_t nt = 0;
	uint32_t next = __atomic_load_n(&((sh_hnsw *)h)->next, __ATOMIC_ACQUIRE);
	size_t pf = h->vec_bytes < 512 ? h->vec_bytes : 512;
	if (f && f->allow) {
		roaring_uint32_iterator_t it;
		uint32_t ids[SCAN_BATCH];
		roaring_init_iterator(f->allow, &it);
		for (;;) {
			uint32_t n = roaring_read_uint32_iterator(&it, ids,
								  SCAN_BATCH);
			while (n > 0 && ids[n - 1] >= next)
				n--; /* iids not handed out yet */
			if (n == 0)
				break;
			for (uint32_t i = 0; i < n && i < SCAN_AHEAD; i++)
				prefetch_lines(node_at(h, dp, ids[i]), pf);
			for (uint32_t i = 0; i < n; i++) {
				if (i + SCAN_AHEAD < n)
					prefetch_lines(node_at(h, dp, ids[i + SCAN_AHEAD]),
						       pf);
				scan_one(h, dp, q, &el, ids[i], keep, top, &nt);
			}
		}
		return nt;
	}
	/* everything: node order is memory order, the prefetcher keeps up */
	for (uint32_t id = 0; id < next; id++)
		scan_one(h, dp, q, &el, id, keep, top, &nt);
	return nt;
}

static int search_impl(const sh_hnsw *h, const float *qv, size_t k, size_t ef,
		       const sh_hnsw_filter *f, bool force_exact,
		       sh_hnsw_hit *out, size_t *nout,
		       sh_hnsw_search_stats *st)
{
	*nout = 0;
	if (k == 0 || k > SH_HNSW_MAX_EF || ef > SH_HNSW_MAX_EF)
		return SH_EINVAL;
	int rc = check_vector(qv, h->p.dim);
	if (rc)
		return rc;
	if (ef == 0)
		ef = h->p.ef_search;
	if (ef < k)
		ef = k;
	struct tls *t = tls_get();
	if (!t)
		return SH_ENOMEM;
	struct qctx q;
	const float *fq;
	rc = prepare_query(h, t, qv, &q, &fq);
	if (rc)
		return rc;
	sh_hnsw_search_stats s = {0};
	s.plan = force_exact ? SH_PLAN_EXACT_SCAN : plan_search(h, f, ef, &s.est_pass);
	bool quant = h->p.storage == SH_STORAGE_INT8;
	bool resc = quant && h->fetch;
	/* With rescoring the exact scan keeps ef candidates for re-ranking. */
	size_t keep = (s.plan == SH_PLAN_EXACT_SCAN && !resc) ? k : ef;

	cand *top = tls_buf(t, B_TOP, (keep + 1) * sizeof(cand));
	if (!top)
		return SH_ENOMEM;
	size_t candcap = t->bufcap[B_CAND] / sizeof(cand);
	if (candcap < 4 * ef + 64) {
		if (!tls_buf(t, B_CAND, (4 * ef + 64) * sizeof(cand)))
			return SH_ENOMEM;
		candcap = t->bufcap[B_CAND] / sizeof(cand);
	}
	size_t nres = 0;
	cand *res = top;

	urcu_memb_read_lock();
	const struct nodedir *d = rcu_dereference(((sh_hnsw *)h)->dir);
	uint64_t entry = __atomic_load_n(&h->entry, __ATOMIC_ACQUIRE);
	uint32_t ep = (uint32_t)entry, top_level = (uint32_t)(entry >> 32);
	size_t span = (size_t)__atomic_load_n(&d->nchunks, __ATOMIC_ACQUIRE) *
		      SH_CHUNK_NODES;

	if (s.plan == SH_PLAN_EXACT_SCAN) {
		nres = exact_scan(h, &d, &q, f, keep, top);
	} else if (ep != SH_IID_NONE) {
		if (visited_begin(t, span) != SH_OK) {
			urcu_memb_read_unlock();
			return SH_ENOMEM;
		}
		float dep;
		ep = descend(h, &d, &q, ep, top_level, 0, &dep);
		bool fast = s.plan == SH_PLAN_GRAPH &&
			    __atomic_load_n(&h->ntomb, __ATOMIC_RELAXED) == 0;
		if (fast) {
			cand *pool = tls_buf(t, B_POOL, ef * (sizeof(cand) + 1) + 64);
			uint32_t *unvis = tls_buf(t, B_UNVIS, h->m0 * sizeof(uint32_t));
			if (!pool || !unvis) {
				urcu_memb_read_unlock();
				return SH_ENOMEM;
			}
			uint8_t *checked = (uint8_t *)(pool + ef);
			nres = search_pool(h, &d, t, &q, ep, dep, ef, pool,
					   checked, unvis);
			res = pool;
		} else {
			struct elig el = {f, filter_set(f)};
			cand *cq = t->buf[B_CAND];
			/* A filter that passes points far from the query (one
			 * correlated with the data) can send the graph walk much
			 * further than its selectivity suggests: past the cost
			 * of scanning the passing set, scan instead. */
			uint64_t budget = s.plan == SH_PLAN_FILTERED_GRAPH &&
						  !f->force_plan
						  ? q.ndist + s.est_pass + 1
						  : 0;
			nres = search_heaps(h, &d, t, &q, &ep, &dep, 1, ef, &el,
					    0, budget, &cq, &candcap, top);
			t->buf[B_CAND] = cq;
			t->bufcap[B_CAND] = candcap * sizeof(cand);
			if (nres == SIZE_MAX) {
				s.plan = SH_PLAN_EXACT_SCAN;
				s.fallback = true;
				keep = resc ? ef : k;
				nres = exact_scan(h, &d, &q, f, keep, top);
			}
		}
	}
	if (res == top)
		qsort(top, nres, sizeof(*top), cand_cmp);
	if (resc)
		nres = rescore(h, &d, t, fq, res, nres, &s.nrescored);
	*nout = collect_hits(h, &d, res, nres, k, out);
	urcu_memb_read_unlock();

	s.ndist = q.ndist;
	if (st)
		*st = s;
	return SH_OK;
}

int sh_hnsw_search(const sh_hnsw *h, const float *q, size_t k, size_t ef,
		   const sh_hnsw_filter *f, sh_hnsw_hit *out, size_t *nout,
		   sh_hnsw_search_stats *st)
{
	return search_impl(h, q, k, ef, f, false, out, nout, st);
}

int sh_hnsw_exact(const sh_hnsw *h, const float *q, size_t k,
		  const sh_hnsw_filter *f, sh_hnsw_hit *out, size_t *nout)
{
	/* For int8 storage with a fetch callback, rescoring every passing
	 * point gives the exact float answer. */
	size_t ef = k;
	if (h->p.storage == SH_STORAGE_INT8 && h->fetch) {
		uint64_t live = __atomic_load_n(&h->nlive, __ATOMIC_RELAXED);
		ef = live > k ? (size_t)live : k;
		if (ef > SH_HNSW_MAX_EF)
			ef = SH_HNSW_MAX_EF;
	}
	return search_impl(h, q, k, ef, f, true, out, nout, NULL);
}

int sh_hnsw_get_vector(const sh_hnsw *h, uint32_t iid, float *out)
{
	int rc = SH_ENOTFOUND;
	if (!tls_get())
		return SH_ENOMEM;
	urcu_memb_read_lock();
	const struct nodedir *d = rcu_dereference(((sh_hnsw *)h)->dir);
	uint32_t next = __atomic_load_n(&((sh_hnsw *)h)->next, __ATOMIC_ACQUIRE);
	if (iid < next && (iid >> SH_CHUNK_SHIFT) < d->nchunks) {
		const char *n = node_at(h, &d, iid);
		uint8_t fl = node_flags(n);
		if ((fl & NF_USED) && !(fl & NF_TOMB)) {
			if (h->p.storage == SH_STORAGE_INT8)
				sh_q8_decode(node_codes(h, n), node_meta(h, n),
					     h->p.dim, out);
			else
				memcpy(out, node_vec(h, n), h->vec_bytes);
			rc = SH_OK;
		}
	}
	urcu_memb_read_unlock();
	return rc;
}

/* ---- Id table (writer only) ---------------------------------------------- */

static bool map_match(const sh_hnsw *h, uint64_t e, const sh_pid *pid)
{
	sh_pid cur;
	node_pid(wnode(h, (uint32_t)e), &cur);
	return sh_pid_eq(&cur, pid);
}

/* Returns the slot holding pid, or the first free slot for it. */
static size_t map_find(const sh_hnsw *h, const sh_pid *pid, uint64_t hash,
		       bool *found)
{
	const struct idmap *m = &h->map;
	size_t mask = m->cap - 1, i = (size_t)hash & mask;
	size_t first_dead = SIZE_MAX;
	uint32_t hi = (uint32_t)(hash >> 32);
	for (;;) {
		uint64_t e = m->e[i];
		if (e == MAP_EMPTY) {
			*found = false;
			return first_dead != SIZE_MAX ? first_dead : i;
		}
		if (e == MAP_DEAD) {
			if (first_dead == SIZE_MAX)
				first_dead = i;
		} else if ((uint32_t)(e >> 32) == hi && map_match(h, e, pid)) {
			*found = true;
			return i;
		}
		i = (i + 1) & mask;
	}
}

static int map_grow(sh_hnsw *h)
{
	struct idmap *m = &h->map;
	size_t ncap = m->cap ? m->cap * 2 : 1024;
	while (m->live * 2 >= ncap)
		ncap *= 2;
	uint64_t *ne = malloc(ncap * sizeof(*ne));
	if (!ne)
		return SH_ENOMEM;
	memset(ne, 0xff, ncap * sizeof(*ne));
	for (size_t i = 0; i < m->cap; i++) {
		uint64_t e = m->e[i];
		if (e == MAP_EMPTY || e == MAP_DEAD)
			continue;
		size_t j = (size_t)(e >> 32);
		/* only 32 bits of the hash are kept: rehash from the node */
		sh_pid pid;
		node_pid(wnode(h, (uint32_t)e), &pid);
		j = (size_t)sh_pid_hash(&pid) & (ncap - 1);
		while (ne[j] != MAP_EMPTY)
			j = (j + 1) & (ncap - 1);
		ne[j] = e;
	}
	free(m->e);
	m->e = ne;
	m->cap = ncap;
	m->used = m->live;
	return SH_OK;
}

static int map_reserve(sh_hnsw *h)
{
	if ((h->map.used + 1) * 4 >= h->map.cap * 3)
		return map_grow(h);
	return SH_OK;
}

static uint32_t map_get(const sh_hnsw *h, const sh_pid *pid)
{
	if (!h->map.cap)
		return SH_IID_NONE;
	bool found;
	size_t i = map_find(h, pid, sh_pid_hash(pid), &found);
	return found ? (uint32_t)h->map.e[i] : SH_IID_NONE;
}

/* Points pid at iid (inserting or replacing). map_reserve() first. */
static void map_put(sh_hnsw *h, const sh_pid *pid, uint32_t iid)
{
	uint64_t hash = sh_pid_hash(pid);
	bool found;
	size_t i = map_find(h, pid, hash, &found);
	if (!found) {
		if (h->map.e[i] == MAP_EMPTY)
			h->map.used++;
		h->map.live++;
	}
	h->map.e[i] = ((hash >> 32) << 32) | iid;
}

static void map_del(sh_hnsw *h, const sh_pid *pid)
{
	bool found;
	if (!h->map.cap)
		return;
	size_t i = map_find(h, pid, sh_pid_hash(pid), &found);
	if (found) {
		h->map.e[i] = MAP_DEAD;
		h->map.live--;
	}
}

int sh_hnsw_lookup(const sh_hnsw *h, const sh_pid *pid, uint32_t *iid)
{
	sh_hnsw *w = (sh_hnsw *)h;
	pthread_mutex_lock(&w->wlock);
	uint32_t r = map_get(h, pid);
	pthread_mutex_unlock(&w->wlock);
	if (r == SH_IID_NONE)
		return SH_ENOTFOUND;
	*iid = r;
	return SH_OK;
}

/* ---- Change log (writer only) -------------------------------------------- */

static int chg_reserve(sh_hnsw *h, size_t n)
{
	if (n <= h->capchg)
		return SH_OK;
	size_t nc = h->capchg ? h->capchg : 64;
	while (nc < n)
		nc *= 2;
	sh_hnsw_change *c = realloc(h->chg, nc * sizeof(*c));
	if (!c)
		return SH_ENOMEM;
	h->chg = c;
	h->capchg = nc;
	return SH_OK;
}

static int chg_push(sh_hnsw *h, sh_hnsw_change c)
{
	if (!h->change_fn || h->loading)
		return SH_OK;
	int rc = chg_reserve(h, h->nchg + h->ntouched + 1);
	if (rc)
		return rc;
	h->chg[h->nchg++] = c;
	return SH_OK;
}

/* Remembers that list (iid, level) changed; reported once at flush. */
static int touch(sh_hnsw *h, uint32_t iid, uint32_t level)
{
	if (!h->change_fn || h->loading)
		return SH_OK;
	uint64_t key = ((uint64_t)iid << 8) | level;
	for (size_t i = 0; i < h->ntouched; i++)
		if (h->touched[i] == key)
			return SH_OK;
	if (h->ntouched == h->captouched) {
		size_t nc = h->captouched ? h->captouched * 2 : 64;
		uint64_t *n = realloc(h->touched, nc * sizeof(*n));
		if (!n)
			return SH_ENOMEM;
		h->touched = n;
		h->captouched = nc;
	}
	h->touched[h->ntouched++] = key;
	/* reserve now what chg_flush will need, so reporting cannot fail */
	h->chgneed += level_cap(h, level);
	if (h->chgneed > h->capchgbuf) {
		size_t nc = h->capchgbuf ? h->capchgbuf : 256;
		while (nc < h->chgneed)
			nc *= 2;
		uint32_t *nb = realloc(h->chgbuf, nc * sizeof(*nb));
		if (!nb)
			return SH_ENOMEM;
		h->chgbuf = nb;
		h->capchgbuf = nc;
	}
	return chg_reserve(h, h->nchg + h->ntouched);
}

/* Reports the pending changes: the explicit records, then one LINKS record
 * per touched list with its current content. touch() and chg_push()
 * reserved the room, so this cannot fail half-way. */
static void chg_flush(sh_hnsw *h)
{
	if (!h->change_fn || h->loading) {
		h->nchg = h->ntouched = h->chgneed = 0;
		return;
	}
	size_t used = 0;
	for (size_t i = 0; i < h->ntouched; i++) {
		uint32_t iid = (uint32_t)(h->touched[i] >> 8);
		uint32_t l = (uint32_t)(h->touched[i] & 0xff);
		char *n = wnode(h, iid);
		if (!(node_flags(n) & NF_USED))
			continue;
		uint32_t *ids, cnt = *node_list(h, n, l, &ids);
		uint32_t *dst = h->chgbuf + used;
		memcpy(dst, ids, cnt * sizeof(*ids));
		used += cnt;
		h->chg[h->nchg++] = (sh_hnsw_change){.kind = SH_CHANGE_LINKS,
						     .iid = iid,
						     .level = l,
						     .links = dst,
						     .nlinks = cnt};
	}
	if (h->nchg)
		h->change_fn(h->change_ctx, h->chg, h->nchg);
	h->nchg = h->ntouched = h->chgneed = 0;
}

/* ---- Node storage (writer only) ------------------------------------------ */

static void free_dir_cb(struct rcu_head *head)
{
	free(caa_container_of(head, struct nodedir, rcu));
}

/* Makes sure iid has a block. */
static int ensure_capacity(sh_hnsw *h, uint32_t iid)
{
	struct nodedir *d = h->dir;
	uint32_t c = iid >> SH_CHUNK_SHIFT;
	while (c >= d->nchunks) {
		if (d->nchunks == d->cap) {
			uint32_t ncap = d->cap * 2;
			struct nodedir *nd = malloc(sizeof(*nd) +
						    ncap * sizeof(char *));
			if (!nd)
				return SH_ENOMEM;
			nd->nchunks = d->nchunks;
			nd->cap = ncap;
			memcpy(nd->chunk, d->chunk, d->nchunks * sizeof(char *));
			rcu_assign_pointer(h->dir, nd);
			urcu_memb_call_rcu(&d->rcu, free_dir_cb);
			d = nd;
		}
		size_t bytes = (size_t)SH_CHUNK_NODES * h->stride;
		char *mem = NULL;
		if (posix_memalign((void **)&mem, 2u << 20, bytes))
			return SH_ENOMEM;
		/* Searches touch nodes at random: 2 MiB pages cut TLB misses
		 * (a no-op where transparent huge pages are off). */
		madvise(mem, bytes, MADV_HUGEPAGE);
		memset(mem, 0, bytes);
		d->chunk[d->nchunks] = mem;
		/* publish the chunk before any iid in it can be found */
		__atomic_store_n(&d->nchunks, d->nchunks + 1, __ATOMIC_RELEASE);
	}
	return SH_OK;
}

/* Writes a node block for iid (not yet reachable). */
static int node_init(sh_hnsw *h, uint32_t iid, const sh_pid *pid,
		     uint32_t level, bool tomb, const float *vec)
{
	char *n = wnode(h, iid);
	uint32_t *upper = NULL;
	sh_pid *spid = NULL;
	if (level > 0) {
		size_t bytes = (size_t)level * (h->p.m + 1) * sizeof(uint32_t);
		upper = calloc(1, bytes);
		if (!upper)
			return SH_ENOMEM;
		h->upper_bytes += bytes;
	}
	if (pid->kind == SH_PID_STR) {
		spid = malloc(sizeof(*spid));
		if (!spid) {
			if (upper)
				h->upper_bytes -= (size_t)level * (h->p.m + 1) * 4;
			free(upper);
			return SH_ENOMEM;
		}
		*spid = *pid;
		h->nstr++;
	}
	memset(n, 0, h->vec_off);
	*(uint8_t *)(n + OFF_LEVEL) = (uint8_t)level;
	uint64_t lab = spid ? (uint64_t)(uintptr_t)spid : pid->num;
	memcpy(n + OFF_LABEL, &lab, sizeof(lab));
	memcpy(n + OFF_UPPER, &upper, sizeof(upper));
	if (h->p.storage == SH_STORAGE_INT8)
		sh_q8_encode(vec, h->p.dim, (uint8_t *)(n + h->vec_off),
			     (sh_q8_meta *)(n + h->vec_off - sizeof(sh_q8_meta)));
	else
		memcpy(n + h->vec_off, vec, h->vec_bytes);
	uint8_t fl = NF_USED | (spid ? NF_STR : 0) | (tomb ? NF_TOMB : 0);
	node_set_flags(n, fl);
	return SH_OK;
}

/* Releases what a node block owns and marks it unused. */
static void node_release(sh_hnsw *h, uint32_t iid)
{
	char *n = wnode(h, iid);
	uint8_t fl = node_flags(n);
	uint32_t *upper = node_upper(n);
	if (upper) {
		h->upper_bytes -= (size_t)node_level(n) * (h->p.m + 1) * 4;
		free(upper);
	}
	if (fl & NF_STR) {
		free((void *)(uintptr_t)node_label(n));
		h->nstr--;
	}
	memset(n, 0, h->vec_off);
}

static uint32_t random_level(sh_hnsw *h)
{
	/* splitmix64 */
	uint64_t z = (h->rng += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z ^= z >> 31;
	double u = ((z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
	double l = -log(u) * h->level_mult;
	return l >= SH_HNSW_MAX_LEVEL ? SH_HNSW_MAX_LEVEL : (uint32_t)l;
}

static int alloc_iid(sh_hnsw *h, uint32_t *out)
{
	/* not committed here: the caller pops or bumps `next` on success */
	if (h->nfree) {
		*out = h->freelist[h->nfree - 1];
		return SH_OK;
	}
	if (h->next >= SH_HNSW_MAX_NODES)
		return SH_EFULL;
	int rc = ensure_capacity(h, h->next);
	if (rc)
		return rc;
	*out = h->next;
	return SH_OK;
}

/* ---- Neighbour selection and linking (writer only) ----------------------- */

/*
 * The paper's heuristic (algorithm 4, keepPrunedConnections off): walk the
 * candidates from the closest and keep one only if it is closer to the base
 * than to every neighbour kept so far. Spreads links in all directions, which
 * keeps the graph navigable in clustered data. c is sorted ascending and is
 * compacted in place to the kept ones; returns their count.
 */
static size_t select_heuristic(const sh_hnsw *h, cand *c, size_t n, size_t m)
{
	if (n <= m)
		return n;
	size_t kept = 0;
	for (size_t i = 0; i < n && kept < m; i++) {
		const char *ci = wnode(h, c[i].id);
		bool good = true;
		for (size_t j = 0; j < kept; j++) {
			if (dist_nodes(h, ci, wnode(h, c[j].id)) < c[i].d) {
				good = false;
				break;
			}
		}
		if (good)
			c[kept++] = c[i];
	}
	return kept;
}

/* Replaces list (iid, l) by ids: iids first, then the count, each store
 * atomic, so readers see old or new entries, all valid. */
static void write_list(sh_hnsw *h, uint32_t iid, uint32_t l,
		       const uint32_t *ids, uint32_t n)
{
	char *nd = wnode(h, iid);
	uint32_t *dst, *cnt = node_list(h, nd, l, &dst);
	uint32_t old = *cnt;
	if (n < old)
		st32(cnt, n);
	for (uint32_t i = 0; i < n; i++)
		st32(&dst[i], ids[i]);
	st32(cnt, n);
}

/* Adds `add` to the list (iid, l), shrinking with the heuristic when full. */
static int add_link(sh_hnsw *h, uint32_t iid, uint32_t l, uint32_t add,
		    float dadd, cand *scratch)
{
	char *nd = wnode(h, iid);
	uint32_t *ids, *cntp = node_list(h, nd, l, &ids);
	uint32_t cnt = *cntp, cap = level_cap(h, l);
	for (uint32_t i = 0; i < cnt; i++)
		if (ids[i] == add)
			return SH_OK;
	if (cnt < cap) {
		st32(&ids[cnt], add);
		st32(cntp, cnt + 1);
		return touch(h, iid, l);
	}
	size_t n = 0;
	scratch[n++] = (cand){dadd, add};
	for (uint32_t i = 0; i < cnt; i++) {
		const char *o = wnode(h, ids[i]);
		if (node_flags(o) & NF_TOMB)
			continue; /* drop dead neighbours first */
		scratch[n++] = (cand){dist_nodes(h, nd, o), ids[i]};
	}
	qsort(scratch, n, sizeof(*scratch), cand_cmp);
	size_t kept = select_heuristic(h, scratch, n, cap);
	uint32_t tmp[2 * SH_HNSW_MAX_M];
	for (size_t i = 0; i < kept; i++)
		tmp[i] = scratch[i].id;
	write_list(h, iid, l, tmp, (uint32_t)kept);
	return touch(h, iid, l);
}

/* Links node iid (already written, level `level`) into the graph. */
static int link_node(sh_hnsw *h, uint32_t iid, uint32_t level,
		     uint32_t exclude)
{
	uint64_t entry = h->entry;
	uint32_t ep = (uint32_t)entry, top = (uint32_t)(entry >> 32);
	if (ep == SH_IID_NONE) {
		__atomic_store_n(&h->entry, ((uint64_t)level << 32) | iid,
				 __ATOMIC_RELEASE);
		return chg_push(h, (sh_hnsw_change){.kind = SH_CHANGE_ENTRY,
						    .iid = iid,
						    .level = level});
	}
	struct tls *t = tls_get();
	if (!t)
		return SH_ENOMEM;
	const char *me = wnode(h, iid);
	struct qctx q;
	memset(&q, 0, sizeof(q));
	const float *fq = NULL;
	int8_t *codes = NULL;
	if (h->p.storage == SH_STORAGE_INT8) {
		/* query with the stored codes: shift to signed */
		codes = tls_buf(t, B_QUERY, h->p.dim * sizeof(float) + h->p.dim + 64);
		if (!codes)
			return SH_ENOMEM;
		const uint8_t *c = node_codes(h, me);
		for (uint32_t i = 0; i < h->p.dim; i++)
			codes[i] = (int8_t)((int)c[i] - 128);
		q.codes = codes;
		q.meta = *node_meta(h, me);
	} else {
		fq = node_vec(h, me);
		q.f = fq;
	}
	size_t ef = h->p.ef_construction;
	size_t capc = 4 * ef + 64;
	if (!tls_buf(t, B_CAND, capc * sizeof(cand)))
		return SH_ENOMEM;
	capc = t->bufcap[B_CAND] / sizeof(cand);
	cand *top_heap = tls_buf(t, B_TOP, (ef + 2 * h->m0 + 2) * sizeof(cand));
	cand *scratch = tls_buf(t, B_POOL, (2 * h->m0 + 2) * sizeof(cand));
	if (!top_heap || !scratch)
		return SH_ENOMEM;

	const struct nodedir *d = h->dir;
	float dep;
	size_t span = (size_t)h->dir->nchunks * SH_CHUNK_NODES;
	if (visited_begin(t, span))
		return SH_ENOMEM;
	uint32_t cur = descend(h, &d, &q, ep, top, level, &dep);
	uint32_t eps[1] = {cur};
	float deps[1] = {dep};
	cand *wset = NULL;
	size_t nwset = 0;
	int rc = SH_OK;
	/* eps for the next level: the results of this one */
	uint32_t *next_eps = malloc(ef * sizeof(uint32_t));
	float *next_deps = malloc(ef * sizeof(float));
	const uint32_t *cur_eps = eps;
	const float *cur_deps = deps;
	size_t ncur = 1;
	if (!next_eps || !next_deps) {
		rc = SH_ENOMEM;
		goto out;
	}
	for (int l = (int)(level < top ? level : top); l >= 0; l--) {
		if (visited_begin(t, span)) {
			rc = SH_ENOMEM;
			goto out;
		}
		cand *cq = t->buf[B_CAND];
		size_t nt = search_heaps(h, &d, t, &q, cur_eps, cur_deps, ncur,
					 ef, NULL, (uint32_t)l, 0, &cq, &capc,
					 top_heap);
		t->buf[B_CAND] = cq;
		t->bufcap[B_CAND] = capc * sizeof(cand);
		qsort(top_heap, nt, sizeof(cand), cand_cmp);
		for (size_t i = 0; i < nt; i++) {
			next_eps[i] = top_heap[i].id;
			next_deps[i] = top_heap[i].d;
		}
		/* neighbours: the heuristic over live candidates, not self */
		wset = top_heap;
		nwset = 0;
		for (size_t i = 0; i < nt; i++) {
			uint32_t c = top_heap[i].id;
			if (c == iid || c == exclude ||
			    (node_flags(wnode(h, c)) & NF_TOMB))
				continue;
			wset[nwset++] = top_heap[i];
		}
		uint32_t capl = level_cap(h, (uint32_t)l);
		size_t mkeep = select_heuristic(h, wset, nwset, h->p.m);
		uint32_t ids[2 * SH_HNSW_MAX_M];
		for (size_t i = 0; i < mkeep; i++)
			ids[i] = wset[i].id;
		(void)capl;
		write_list(h, iid, (uint32_t)l, ids, (uint32_t)mkeep);
		if ((rc = touch(h, iid, (uint32_t)l)))
			goto out;
		for (size_t i = 0; i < mkeep; i++) {
			rc = add_link(h, ids[i], (uint32_t)l, iid, wset[i].d,
				      scratch);
			if (rc)
				goto out;
		}
		cur_eps = next_eps;
		cur_deps = next_deps;
		ncur = nt;
		if (ncur == 0) {
			cur_eps = eps;
			cur_deps = deps;
			ncur = 1;
		}
	}
	if (level > top) {
		__atomic_store_n(&h->entry, ((uint64_t)level << 32) | iid,
				 __ATOMIC_RELEASE);
		rc = chg_push(h, (sh_hnsw_change){.kind = SH_CHANGE_ENTRY,
						  .iid = iid,
						  .level = level});
	}
out:
	free(next_eps);
	free(next_deps);
	return rc;
}

/* ---- Public writes ------------------------------------------------------- */

static void mark_tomb(sh_hnsw *h, uint32_t iid)
{
	char *n = wnode(h, iid);
	node_set_flags(n, node_flags(n) | NF_TOMB);
	__atomic_fetch_add(&h->ntomb, 1, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&h->nlive, 1, __ATOMIC_RELAXED);
}

int sh_hnsw_upsert(sh_hnsw *h, const sh_pid *pid, const float *vec,
		   uint32_t *iid_out, uint32_t *old_iid_out)
{
	int rc = check_vector(vec, h->p.dim);
	if (rc)
		return rc;
	if (pid->kind != SH_PID_U64 &&
	    (pid->kind != SH_PID_STR || pid->len == 0 ||
	     pid->len > SH_PID_MAX_STR))
		return SH_EINVAL;
	if (!tls_get())
		return SH_ENOMEM;
	pthread_mutex_lock(&h->wlock);
	const float *v = vec;
	if (h->p.metric == SH_METRIC_COSINE) {
		if ((rc = normalise(vec, h->wvec, h->p.dim)))
			goto out;
		v = h->wvec;
	}
	if ((rc = map_reserve(h)))
		goto out;
	uint32_t old = map_get(h, pid), iid;
	if ((rc = alloc_iid(h, &iid)))
		goto out;
	uint32_t level = random_level(h);
	if ((rc = node_init(h, iid, pid, level, false, v)))
		goto out;
	if (iid == h->next)
		__atomic_store_n(&h->next, h->next + 1, __ATOMIC_RELEASE);
	else
		h->nfree--; /* it came from the free list */
	rc = chg_push(h, (sh_hnsw_change){.kind = SH_CHANGE_NODE,
					  .iid = iid,
					  .level = level,
					  .pid = pid,
					  .vec = v});
	if (!rc)
		rc = link_node(h, iid, level, old);
	if (rc) {
		/* Out of memory half-way: the node may already be linked.
		 * Keep the index consistent by tombstoning it; vacuum will
		 * reclaim it. The change log still reports what changed. */
		__atomic_fetch_add(&h->nlive, 1, __ATOMIC_RELAXED);
		mark_tomb(h, iid);
		chg_push(h, (sh_hnsw_change){.kind = SH_CHANGE_TOMBSTONE,
					     .iid = iid});
		chg_flush(h);
		goto out;
	}
	__atomic_fetch_add(&h->nlive, 1, __ATOMIC_RELAXED);
	map_put(h, pid, iid);
	if (old != SH_IID_NONE) {
		mark_tomb(h, old);
		chg_push(h, (sh_hnsw_change){.kind = SH_CHANGE_TOMBSTONE,
					     .iid = old});
	}
	chg_flush(h);
	if (iid_out)
		*iid_out = iid;
	if (old_iid_out)
		*old_iid_out = old;
out:
	pthread_mutex_unlock(&h->wlock);
	return rc;
}

int sh_hnsw_delete(sh_hnsw *h, const sh_pid *pid, uint32_t *iid_out)
{
	int rc = SH_OK;
	pthread_mutex_lock(&h->wlock);
	uint32_t iid = map_get(h, pid);
	if (iid == SH_IID_NONE) {
		rc = SH_ENOTFOUND;
		goto out;
	}
	map_del(h, pid);
	mark_tomb(h, iid);
	chg_push(h, (sh_hnsw_change){.kind = SH_CHANGE_TOMBSTONE, .iid = iid});
	chg_flush(h);
	if (iid_out)
		*iid_out = iid;
out:
	pthread_mutex_unlock(&h->wlock);
	return rc;
}

/* ---- Vacuum --------------------------------------------------------------- */

static inline bool is_dead(const sh_hnsw *h, uint32_t id)
{
	uint8_t f = node_flags(wnode(h, id));
	return (f & NF_TOMB) || !(f & NF_USED);
}

static int cand_push(cand **bufp, size_t *capp, size_t *n, uint32_t id)
{
	if (*n == *capp) {
		size_t nc = *capp * 2;
		cand *nb = realloc(*bufp, nc * sizeof(cand));
		if (!nb)
			return SH_ENOMEM;
		*bufp = nb;
		*capp = nc;
	}
	(*bufp)[(*n)++] = (cand){0, id};
	return SH_OK;
}

/* Rewrites list (u, l) without dead entries: candidates are u's live
 * neighbours plus the live neighbours (at l) of its dead ones. */
static int repair_list(sh_hnsw *h, uint32_t u, uint32_t l, cand **bufp,
		       size_t *capp, uint16_t *seen, uint16_t tag)
{
	char *un = wnode(h, u);
	uint32_t *ids, cnt = *node_list(h, un, l, &ids);
	size_t n = 0;
	int rc;
	seen[u] = tag;
	for (uint32_t i = 0; i < cnt; i++) {
		uint32_t v = ids[i];
		if (is_dead(h, v) || seen[v] == tag)
			continue;
		seen[v] = tag;
		if ((rc = cand_push(bufp, capp, &n, v)))
			return rc;
	}
	for (uint32_t i = 0; i < cnt; i++) {
		const char *vn = wnode(h, ids[i]);
		if (!is_dead(h, ids[i]) || node_level(vn) < l)
			continue;
		uint32_t *vids, vcnt = *node_list(h, vn, l, &vids);
		for (uint32_t j = 0; j < vcnt; j++) {
			uint32_t w = vids[j];
			if (seen[w] == tag || is_dead(h, w) ||
			    node_level(wnode(h, w)) < l)
				continue;
			seen[w] = tag;
			if ((rc = cand_push(bufp, capp, &n, w)))
				return rc;
		}
	}
	cand *c = *bufp;
	for (size_t i = 0; i < n; i++)
		c[i].d = dist_nodes(h, un, wnode(h, c[i].id));
	qsort(c, n, sizeof(*c), cand_cmp);
	size_t kept = select_heuristic(h, c, n, level_cap(h, l));
	uint32_t tmp[2 * SH_HNSW_MAX_M];
	for (size_t i = 0; i < kept; i++)
		tmp[i] = c[i].id;
	write_list(h, u, l, tmp, (uint32_t)kept);
	return touch(h, u, l);
}

int sh_hnsw_vacuum(sh_hnsw *h, sh_hnsw_vacuum_stats *st)
{
	sh_hnsw_vacuum_stats s = {0};
	int rc = SH_OK;
	if (!tls_get())
		return SH_ENOMEM;
	pthread_mutex_lock(&h->wlock);
	uint32_t *dead = NULL;
	size_t ndead = 0, capdead = 0;
	uint16_t *seen = NULL;
	size_t capb = 256;
	cand *buf = malloc(capb * sizeof(cand));
	if (!buf) {
		rc = SH_ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < h->next; i++) {
		uint8_t f = node_flags(wnode(h, i));
		if ((f & NF_USED) && (f & NF_TOMB)) {
			if (ndead == capdead) {
				capdead = capdead ? capdead * 2 : 256;
				uint32_t *nd = realloc(dead, capdead * sizeof(*nd));
				if (!nd) {
					rc = SH_ENOMEM;
					goto out;
				}
				dead = nd;
			}
			dead[ndead++] = i;
		}
	}
	if (ndead == 0)
		goto out;
	seen = calloc(h->next, sizeof(*seen));
	if (!seen) {
		rc = SH_ENOMEM;
		goto out;
	}
	uint16_t tag = 0;
	/* 1. repair every live list that points at a dead node */
	for (uint32_t u = 0; u < h->next; u++) {
		char *un = wnode(h, u);
		if (is_dead(h, u))
			continue;
		bool rep = false;
		for (uint32_t l = 0; l <= node_level(un); l++) {
			uint32_t *ids, cnt = *node_list(h, un, l, &ids);
			bool bad = false;
			for (uint32_t i = 0; i < cnt && !bad; i++)
				bad = is_dead(h, ids[i]);
			if (!bad)
				continue;
			if (++tag == 0) {
				memset(seen, 0, h->next * sizeof(*seen));
				tag = 1;
			}
			if ((rc = repair_list(h, u, l, &buf, &capb, seen, tag)))
				goto out;
			rep = true;
		}
		s.repaired += rep;
		if (h->ntouched >= 1024)
			chg_flush(h);
	}
	/* 2. move the entry point to a live node of the highest level */
	uint32_t ep = (uint32_t)h->entry;
	if (ep != SH_IID_NONE && is_dead(h, ep)) {
		uint32_t best = SH_IID_NONE, bl = 0;
		for (uint32_t u = 0; u < h->next; u++) {
			if (is_dead(h, u))
				continue;
			uint32_t l = node_level(wnode(h, u));
			if (best == SH_IID_NONE || l > bl)
				best = u, bl = l;
		}
		uint64_t e = best == SH_IID_NONE ? (uint64_t)SH_IID_NONE
						 : ((uint64_t)bl << 32) | best;
		__atomic_store_n(&h->entry, e, __ATOMIC_RELEASE);
		chg_push(h, (sh_hnsw_change){.kind = SH_CHANGE_ENTRY,
					     .iid = best,
					     .level = bl});
	}
	chg_flush(h);
	/* 3. no live node or entry point leads to a dead one now; wait until
	 * no reader can still be standing on one, then reuse them */
	urcu_memb_synchronize_rcu();
	for (size_t i = 0; i < ndead; i++) {
		node_release(h, dead[i]);
		if (h->nfree == h->capfree) {
			size_t nc = h->capfree ? h->capfree * 2 : 256;
			uint32_t *nf = realloc(h->freelist, nc * sizeof(*nf));
			if (!nf) {
				rc = SH_ENOMEM; /* the rest stay unused */
				break;
			}
			h->freelist = nf;
			h->capfree = nc;
		}
		h->freelist[h->nfree++] = dead[i];
		__atomic_fetch_sub(&h->ntomb, 1, __ATOMIC_RELAXED);
		s.freed++;
		chg_push(h, (sh_hnsw_change){.kind = SH_CHANGE_FREE,
					     .iid = dead[i]});
		if (h->nchg >= 1024)
			chg_flush(h);
	}
	chg_flush(h);
out:
	pthread_mutex_unlock(&h->wlock);
	free(dead);
	free(seen);
	free(buf);
	if (st)
		*st = s;
	return rc;
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
}

int sh_hnsw_new(const sh_hnsw_params *p, sh_hnsw **out)
{
	if (!p || p->dim < 1 || p->dim > SH_HNSW_MAX_DIM || p->m < 2 ||
	    p->m > SH_HNSW_MAX_M || p->ef_construction < 1 ||
	    p->ef_construction > SH_HNSW_MAX_EF ||
	    p->ef_search > SH_HNSW_MAX_EF || p->metric > SH_METRIC_COSINE ||
	    p->storage > SH_STORAGE_INT8)
		return SH_EINVAL;
	sh_hnsw *h = calloc(1, sizeof(*h));
	if (!h)
		return SH_ENOMEM;
	h->p = *p;
	if (!h->p.ef_search)
		h->p.ef_search = 64;
	h->k = sh_kernels_get();
	h->m0 = 2 * p->m;
	h->vec_bytes = p->storage == SH_STORAGE_INT8 ? p->dim
						      : p->dim * sizeof(float);
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
			node_release(h, i);
	for (uint32_t c = 0; c < h->dir->nchunks; c++)
		free(h->dir->chunk[c]);
	/* directories replaced earlier may still wait in call_rcu */
	if (tls_get())
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
	out->max_level = out->entry == SH_IID_NONE ? 0 : (uint32_t)(h->entry >> 32);
	out->kernels = h->k->name;
	pthread_mutex_unlock(&w->wlock);
}

/* ---- Snapshot ------------------------------------------------------------ */

int sh_hnsw_dump(sh_hnsw *h, sh_hnsw_change_fn fn, void *ctx)
{
	int rc = SH_OK;
	float *vec = malloc(h->p.dim * sizeof(float));
	if (!vec)
		return SH_ENOMEM;
	pthread_mutex_lock(&h->wlock);
	for (uint32_t i = 0; i < h->next; i++) {
		const char *n = wnode(h, i);
		uint8_t f = node_flags(n);
		if (!(f & NF_USED))
			continue;
		sh_pid pid;
		node_pid(n, &pid);
		if (h->p.storage == SH_STORAGE_INT8)
			sh_q8_decode(node_codes(h, n), node_meta(h, n), h->p.dim,
				     vec);
		else
			memcpy(vec, node_vec(h, n), h->vec_bytes);
		sh_hnsw_change c[SH_HNSW_MAX_LEVEL + 2];
		size_t nc = 0;
		c[nc++] = (sh_hnsw_change){.kind = SH_CHANGE_NODE,
					   .iid = i,
					   .level = node_level(n),
					   .tombstone = (f & NF_TOMB) != 0,
					   .pid = &pid,
					   .vec = vec};
		for (uint32_t l = 0; l <= node_level(n); l++) {
			uint32_t *ids, cnt = *node_list(h, n, l, &ids);
			c[nc++] = (sh_hnsw_change){.kind = SH_CHANGE_LINKS,
						   .iid = i,
						   .level = l,
						   .links = ids,
						   .nlinks = cnt};
		}
		fn(ctx, c, nc);
	}
	sh_hnsw_change e = {.kind = SH_CHANGE_ENTRY,
			    .iid = (uint32_t)h->entry,
			    .level = (uint32_t)h->entry == SH_IID_NONE
					     ? 0
					     : (uint32_t)(h->entry >> 32)};
	fn(ctx, &e, 1);
	pthread_mutex_unlock(&h->wlock);
	free(vec);
	return rc;
}

/* ---- Validation ---------------------------------------------------------- */

#define FAIL(...)                                                                \
	do {                                                                     \
		if (err && errlen)                                               \
			snprintf(err, errlen, __VA_ARGS__);                      \
		rc = SH_ECORRUPT;                                                \
		goto out;                                                        \
	} while (0)

#include <stdio.h>

static int validate_locked(sh_hnsw *h, char *err, size_t errlen)
{
	int rc = SH_OK;
	uint64_t live = 0, tomb = 0;
	for (uint32_t i = 0; i < h->next; i++) {
		char *n = wnode(h, i);
		uint8_t f = node_flags(n);
		if (!(f & NF_USED))
			continue;
		if (f & NF_TOMB)
			tomb++;
		else
			live++;
		uint32_t lv = node_level(n);
		if (lv > SH_HNSW_MAX_LEVEL)
			FAIL("node %u: level %u out of range", i, lv);
		if (lv > 0 && !node_upper(n))
			FAIL("node %u: level %u without upper lists", i, lv);
		for (uint32_t l = 0; l <= lv; l++) {
			uint32_t *ids, cnt = *node_list(h, n, l, &ids);
			if (cnt > level_cap(h, l))
				FAIL("node %u level %u: %u links > cap", i, l, cnt);
			for (uint32_t j = 0; j < cnt; j++) {
				uint32_t t = ids[j];
				if (t >= h->next)
					FAIL("node %u level %u: link %u out of range", i, l, t);
				if (t == i)
					FAIL("node %u level %u: self link", i, l);
				char *tn = wnode(h, t);
				if (!(node_flags(tn) & NF_USED))
					FAIL("node %u level %u: link to free %u", i, l, t);
				if (node_level(tn) < l)
					FAIL("node %u level %u: link to %u of level %u",
					     i, l, t, node_level(tn));
				for (uint32_t k2 = 0; k2 < j; k2++)
					if (ids[k2] == t)
						FAIL("node %u level %u: duplicate link %u", i, l, t);
			}
		}
		if (!(f & NF_TOMB)) {
			sh_pid pid;
			node_pid(n, &pid);
			if (map_get(h, &pid) != i)
				FAIL("node %u: id table does not point back", i);
		}
	}
	if (live != h->nlive || tomb != h->ntomb)
		FAIL("counts: live %llu/%llu tombstones %llu/%llu",
		     (unsigned long long)live, (unsigned long long)h->nlive,
		     (unsigned long long)tomb, (unsigned long long)h->ntomb);
	if (h->map.live != live)
		FAIL("id table holds %zu points, index %llu", h->map.live,
		     (unsigned long long)live);
	uint32_t ep = (uint32_t)h->entry;
	if (ep == SH_IID_NONE) {
		if (live + tomb > 0)
			FAIL("no entry point but %llu nodes",
			     (unsigned long long)(live + tomb));
	} else {
		if (ep >= h->next || !(node_flags(wnode(h, ep)) & NF_USED))
			FAIL("entry point %u is not a node", ep);
		uint32_t el = (uint32_t)(h->entry >> 32);
		if (node_level(wnode(h, ep)) != el)
			FAIL("entry level %u != node level %u", el,
			     node_level(wnode(h, ep)));
		for (uint32_t i = 0; i < h->next; i++) {
			char *n = wnode(h, i);
			if ((node_flags(n) & NF_USED) && node_level(n) > el)
				FAIL("node %u above the entry level", i);
		}
	}
out:
	return rc;
}

int sh_hnsw_validate(sh_hnsw *h, char *err, size_t errlen)
{
	pthread_mutex_lock(&h->wlock);
	int rc = validate_locked(h, err, errlen);
	pthread_mutex_unlock(&h->wlock);
	return rc;
}

/* ---- Loader ---------------------------------------------------------------- */

int sh_hnsw_load_node(sh_hnsw *h, uint32_t iid, const sh_pid *pid,
		      uint32_t level, bool tombstone, const float *vec)
{
	int rc;
	if (iid >= SH_HNSW_MAX_NODES || level > SH_HNSW_MAX_LEVEL || !vec ||
	    !pid)
		return SH_EINVAL;
	if (check_vector(vec, h->p.dim))
		return SH_EINVAL;
	if (!tls_get()) /* call_rcu (directory growth) needs a registered thread */
		return SH_ENOMEM;
	pthread_mutex_lock(&h->wlock);
	h->loading = true;
	if ((rc = ensure_capacity(h, iid)))
		goto out;
	if (iid < h->next && (node_flags(wnode(h, iid)) & NF_USED)) {
		rc = SH_EINVAL; /* two NODE records for one iid */
		goto out;
	}
	if (!tombstone) {
		if ((rc = map_reserve(h)))
			goto out;
		if (map_get(h, pid) != SH_IID_NONE) {
			rc = SH_EINVAL;
			goto out;
		}
	}
	if ((rc = node_init(h, iid, pid, level, tombstone, vec)))
		goto out;
	if (iid >= h->next)
		__atomic_store_n(&h->next, iid + 1, __ATOMIC_RELEASE);
	if (tombstone) {
		h->ntomb++;
	} else {
		h->nlive++;
		map_put(h, pid, iid);
	}
out:
	pthread_mutex_unlock(&h->wlock);
	return rc;
}

int sh_hnsw_load_links(sh_hnsw *h, uint32_t iid, uint32_t level,
		       const uint32_t *links, uint32_t n)
{
	int rc = SH_OK;
	pthread_mutex_lock(&h->wlock);
	if (iid >= h->next || !(node_flags(wnode(h, iid)) & NF_USED) ||
	    level > node_level(wnode(h, iid)) || n > level_cap(h, level)) {
		rc = SH_EINVAL;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++)
		if (links[i] >= SH_HNSW_MAX_NODES) {
			rc = SH_EINVAL;
			goto out;
		}
	write_list(h, iid, level, links, n);
out:
	pthread_mutex_unlock(&h->wlock);
	return rc;
}

int sh_hnsw_load_entry(sh_hnsw *h, uint32_t iid, uint32_t level)
{
	if (level > SH_HNSW_MAX_LEVEL)
		return SH_EINVAL;
	pthread_mutex_lock(&h->wlock);
	h->entry = iid == SH_IID_NONE ? (uint64_t)SH_IID_NONE
				      : ((uint64_t)level << 32) | iid;
	pthread_mutex_unlock(&h->wlock);
	return SH_OK;
}

int sh_hnsw_load_finish(sh_hnsw *h)
{
	int rc = SH_OK;
	pthread_mutex_lock(&h->wlock);
	h->loading = false;
	/* every unused iid below next goes on the free list */
	h->nfree = 0;
	for (uint32_t i = h->next; i-- > 0;) {
		if (node_flags(wnode(h, i)) & NF_USED)
			continue;
		if (h->nfree == h->capfree) {
			size_t nc = h->capfree ? h->capfree * 2 : 256;
			uint32_t *nf = realloc(h->freelist, nc * sizeof(*nf));
			if (!nf) {
				rc = SH_ENOMEM;
				goto out;
			}
			h->freelist = nf;
			h->capfree = nc;
		}
		h->freelist[h->nfree++] = i;
	}
	rc = validate_locked(h, NULL, 0);
out:
	pthread_mutex_unlock(&h->wlock);
	return rc;
}
