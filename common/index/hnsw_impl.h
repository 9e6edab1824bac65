/*
 * Internals of the HNSW index, shared by hnsw.c (lifecycle, thread state),
 * hnsw_search.c (reads), hnsw_write.c (writes, vacuum, change log) and
 * hnsw_load.c (loader, snapshot, validation). Not part of the API: the
 * contract, including the RCU story, is in hnsw.h.
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
#ifndef SH_HNSW_IMPL_H
#define SH_HNSW_IMPL_H

#include "hnsw.h"

#include <math.h>
#include <pthread.h>
#include <roaring/roaring.h>
#include <stdlib.h>
#include <string.h>
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

/*
 * ThreadSanitizer cannot see the ordering an RCU grace period gives (liburcu
 * uses membarrier): to it, a reader's last look at a node and the writer's
 * reuse of that node after synchronize_rcu() look unordered. Under TSan
 * only, every read-side section ends with a release on the index's
 * `rcu_sync` word and the writer acquires it after each grace period, which
 * states exactly the ordering RCU guarantees. Elsewhere these are no-ops.
 */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define SH_TSAN_RELEASE(p) __tsan_release((void *)(p))
#define SH_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define SH_TSAN_RELEASE(p) ((void)(p))
#define SH_TSAN_ACQUIRE(p) ((void)(p))
#endif

/* Leaves a read-side critical section on h (see SH_TSAN_RELEASE). */
#define SH_READ_UNLOCK(h)                                                      \
	do {                                                                   \
		SH_TSAN_RELEASE(&(h)->rcu_sync);                               \
		urcu_memb_read_unlock();                                       \
	} while (0)

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Chunk directory: replaced copy-on-write when it fills (rare), so readers
 * index it without a lock. A reader whose copy is too short for an iid it
 * found reloads the pointer: the iid was published after the longer copy. */
struct nodedir {
	struct rcu_head rcu;
	int *tsan_sync; /* the index's rcu_sync, for the call_rcu callback */
	uint32_t nchunks; /* chunks in use */
	uint32_t cap;	  /* slots in chunk[] */
	char *chunk[];
};

/* Open-addressing table point id -> iid, owned by the writer (lookups take
 * the writer mutex). An entry packs iid (low 32 bits) and 32 bits of the
 * point id's hash (high) for a cheap first compare. */
#define MAP_EMPTY UINT64_MAX
#define MAP_DEAD (UINT64_MAX - 1)

struct idmap {
	uint64_t *e;
	size_t cap;  /* power of two */
	size_t used; /* live + dead entries */
	size_t live;
};

struct sh_hnsw {
	sh_hnsw_params p;
	const sh_kernels *k;
	uint32_t m0;	   /* level-0 capacity: 2M */
	size_t stride;	   /* bytes per node block */
	size_t vec_off;	   /* offset of the vector or codes */
	size_t vec_bytes;  /* 4 * dim or dim */
	double level_mult; /* 1 / ln(M) */

	/* Published to readers. */
	struct nodedir *dir; /* rcu_assign_pointer / rcu_dereference */
	uint64_t entry;	     /* (level << 32) | iid, atomic */
	uint64_t ntomb;	     /* tombstoned nodes, atomic */
	uint64_t nlive;	     /* atomic */
	int rcu_sync;               /* TSan annotation target only */
	sh_hnsw_fetch_fn fetch;
	void *fetch_ctx;

	/* Writer state: everything below is owned by whoever holds wlock. */
	pthread_mutex_t wlock;
	uint32_t next;	    /* iids [0, next) have been handed out */
	uint32_t *freelist; /* iids ready for reuse */
	size_t nfree, capfree;
	struct idmap map;
	uint64_t rng;
	uint64_t upper_bytes; /* heap bytes of upper link lists */
	uint64_t nstr;	      /* nodes holding a heap string id */
	sh_hnsw_change_fn change_fn;
	void *change_ctx;
	bool loading;
	/* Change log of the mutation in progress. */
	sh_hnsw_change *chg;
	size_t nchg, capchg;
	uint32_t *chgbuf; /* link copies the LINKS records point into */
	size_t chgneed, capchgbuf;
	uint64_t *touched; /* (iid << 8 | level) touched, deduplicated */
	size_t ntouched, captouched;
	float *wvec; /* writer scratch: normalised vector */
};

/* ---- Node access --------------------------------------------------------- */

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

static inline const char *node_at(const sh_hnsw *h, const struct nodedir **dp,
				  uint32_t iid)
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

static inline void node_pid(const char *n, sh_pid *out)
{
	uint64_t lab = node_label(n);
	if (node_flags(n) & NF_STR)
		*out = *(const sh_pid *)(uintptr_t)lab;
	else
		*out = sh_pid_u64(lab);
}

/* Most bytes of one vector a search prefetches ahead of use; the hardware
 * prefetcher follows the rest of a longer one. */
#define PF_VEC_MAX 4096

/*
 * Prefetches (the first PF_VEC_MAX bytes of) a vector into the L2 cache
 * (locality hint 1). A graph
 * search is bound by memory traffic, not arithmetic: at 784 float
 * dimensions a vector is 49 cache lines. Asking for every vector of an
 * expansion at once keeps many misses in flight; aiming at L2 rather than L1
 * keeps the ~15 vectors of an expansion (about 47 KiB) from evicting each
 * other from the small L1. Measured on Fashion-MNIST: +20% queries/s over
 * prefetching one or two vectors ahead into L1.
 */
static inline void prefetch_l2(const void *p, size_t bytes)
{
	const char *c = p;
	bytes = bytes < PF_VEC_MAX ? bytes : PF_VEC_MAX;
	for (size_t o = 0; o < bytes; o += 64)
		__builtin_prefetch(c + o, 0, 1);
}

static inline void prefetch_vector(const sh_hnsw *h, const char *node)
{
	prefetch_l2(node + h->vec_off, h->vec_bytes);
}

/* Marks the not-yet-visited iids of a link list visited, collects them in
 * out (room for cnt) and prefetches their vectors. Iids beyond the visited
 * set (nodes linked after the search began) are skipped. Returns how many. */
static inline size_t gather_unvisited(const sh_hnsw *h,
				      const struct nodedir **dp, uint16_t *tags,
				      size_t ntags, uint16_t tag,
				      const uint32_t *ids, uint32_t cnt,
				      uint32_t *out)
{
	size_t nu = 0;
	for (uint32_t i = 0; i < cnt; i++) {
		uint32_t id = ld32(&ids[i]);
		if (unlikely(id >= ntags) || tags[id] == tag)
			continue;
		tags[id] = tag;
		out[nu++] = id;
	}
	for (size_t i = 0; i < nu; i++)
		prefetch_vector(h, node_at(h, dp, out[i]));
	return nu;
}

/* ---- Thread state: RCU registration, visited tags, scratch --------------- */

/* The scratch buffers of a thread, by use: query copy and codes, the
 * fast path's pool, the candidate heap, the result heap, rescoring. */
enum { B_QUERY, B_POOL, B_CAND, B_TOP, B_RES, B_COUNT };

/* Everything one thread needs to search, grown on demand and kept for the
 * thread's lifetime, so a warm thread allocates nothing per query. Visited
 * marks are u16 tags compared with a per-query epoch: reset is O(1) except
 * once every 65535 queries. */
struct tls {
	bool registered;
	uint16_t epoch;
	uint16_t *tags;
	size_t ntags;
	void *buf[B_COUNT];
	size_t bufcap[B_COUNT];
};

/* ---- Distances ----------------------------------------------------------- */

/* A prepared query: the normalised floats (cosine) or the quantized codes. */
struct qctx {
	const float *f;
	const int8_t *codes;
	sh_q8_qconst qk; /* int8: the query's folded constants */
	uint64_t ndist;
};

static inline float dist_q(const sh_hnsw *h, struct qctx *q, const char *n)
{
	q->ndist++;
	size_t d = h->p.dim;
	if (h->p.storage == SH_STORAGE_INT8) {
		const sh_q8_meta *m = node_meta(h, n);
		int32_t raw = h->k->dot_u8i8(node_codes(h, n), q->codes, d);
		float dot = sh_q8_dot_fast(raw, m, &q->qk);
		if (h->p.metric == SH_METRIC_L2) {
			float r = m->norm2 + q->qk.norm2 - 2.0f * dot;
			return r > 0 ? r : 0;
		}
		return 1.0f - dot;
	}
	if (h->p.metric == SH_METRIC_L2)
		return h->k->l2sq_f32(node_vec(h, n), q->f, d);
	return 1.0f - h->k->dot_f32(node_vec(h, n), q->f, d);
}

/* Distance between two stored nodes (the writer's neighbour selection). */
static inline float dist_nodes(const sh_hnsw *h, const char *a, const char *b)
{
	size_t d = h->p.dim;
	if (h->p.storage == SH_STORAGE_INT8) {
		const sh_q8_meta *ma = node_meta(h, a), *mb = node_meta(h, b);
		uint32_t raw =
		    h->k->dot_u8(node_codes(h, a), node_codes(h, b), d);
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
static inline float dist_f32(const sh_hnsw *h, const float *q, const float *v)
{
	if (h->p.metric == SH_METRIC_L2)
		return h->k->l2sq_f32(v, q, h->p.dim);
	return 1.0f - h->k->dot_f32(v, q, h->p.dim);
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

static inline int cand_cmp(const void *a, const void *b)
{
	const cand *x = a, *y = b;
	if (x->d < y->d)
		return -1;
	if (x->d > y->d)
		return 1;
	return (x->id > y->id) - (x->id < y->id);
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

static inline bool filter_set(const sh_hnsw_filter *f)
{
	return f && (f->allow || f->fn);
}

static inline bool is_dead(const sh_hnsw *h, uint32_t id)
{
	uint8_t f = node_flags(wnode(h, id));
	return (f & NF_TOMB) || !(f & NF_USED);
}

/* ---- Shared internals (defined in the file named) ------------------------ */

/* hnsw.c */
struct tls *hnsw_tls_get(void);
void *hnsw_tls_buf(struct tls *t, int which, size_t bytes);
int hnsw_visited_begin(struct tls *t, size_t n);
int hnsw_check_vector(const float *v, uint32_t dim);
int hnsw_normalise(const float *in, float *out, uint32_t dim);

/* hnsw_search.c */
uint32_t hnsw_descend(const sh_hnsw *h, const struct nodedir **dp,
		      struct qctx *q, uint32_t ep, uint32_t top, uint32_t stop,
		      float *dep);
size_t hnsw_search_heaps(const sh_hnsw *h, const struct nodedir **dp,
			 struct tls *t, struct qctx *q, const uint32_t *eps,
			 const float *deps, size_t neps, size_t ef,
			 const struct elig *el, uint32_t level, uint64_t budget,
			 cand **candp, size_t *candcap, cand *top);

/* hnsw_write.c */
uint32_t hnsw_map_get(const sh_hnsw *h, const sh_pid *pid);
void hnsw_map_put(sh_hnsw *h, const sh_pid *pid, uint32_t iid);
int hnsw_map_reserve(sh_hnsw *h);
int hnsw_ensure_capacity(sh_hnsw *h, uint32_t iid);
int hnsw_node_init(sh_hnsw *h, uint32_t iid, const sh_pid *pid, uint32_t level,
		   bool tomb, const float *vec);
void hnsw_node_release(sh_hnsw *h, uint32_t iid);
void hnsw_write_list(sh_hnsw *h, uint32_t iid, uint32_t l, const uint32_t *ids,
		     uint32_t n);

/* hnsw_load.c */
int hnsw_validate_locked(sh_hnsw *h, char *err, size_t errlen);

#endif
