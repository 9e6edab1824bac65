/* HNSW index: searches (lock-free readers), the planner and exact scans. */
#include "hnsw_impl.h"

#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>
#include <urcu/pointer.h>

#include "../error.h"

/* ---- Search -------------------------------------------------------------- */

/* Prepares q for searching: normalises for cosine, quantizes for int8.
 * *fq gets the float query the distances use (for rescoring). */
static int prepare_query(const sh_hnsw *h, struct tls *t, const float *q,
			 struct qctx *qc, const float **fq)
{
	size_t d = h->p.dim;
	memset(qc, 0, sizeof(*qc));
	qc->f = q;
	/* one buffer: [normalised floats | codes] */
	char *b = hnsw_tls_buf(t, B_QUERY, d * sizeof(float) + d + 64);
	if (!b)
		return SH_ENOMEM;
	if (h->p.metric == SH_METRIC_COSINE) {
		if (hnsw_normalise(q, (float *)b, (uint32_t)d) != SH_OK)
			return SH_EINVAL;
		qc->f = (const float *)b;
	}
	if (h->p.storage == SH_STORAGE_INT8) {
		int8_t *codes = (int8_t *)(b + d * sizeof(float));
		sh_q8_meta meta;
		sh_q8_encode_query(qc->f, d, codes, &meta);
		sh_q8_qconst_init(&meta, d, &qc->qk);
		qc->codes = codes;
	}
	*fq = qc->f;
	return SH_OK;
}

/* Greedy descent through the upper levels down to level `stop`+1. */
uint32_t hnsw_descend(const sh_hnsw *h, const struct nodedir **dp,
		      struct qctx *q, uint32_t ep, uint32_t top, uint32_t stop,
		      float *dep)
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

/*
 * Level-0 search, fast path: a sorted array of at most ef candidates that
 * are both the expansion frontier and the result (as in the "linear pool"
 * of fast graph indexes). Used when no filter is set and there are no
 * tombstones. Returns the pool size; pool[0..n) ascending.
 */
static size_t search_pool(const sh_hnsw *h, const struct nodedir **dp,
			  struct tls *t, struct qctx *q, uint32_t ep, float dep,
			  size_t ef, cand *pool, uint8_t *checked)
{
	uint32_t unvis[2 * SH_HNSW_MAX_M];
	size_t n = 0, cur = 0;
	uint16_t ep_tag = t->epoch;
	uint16_t *tags = t->tags;
	size_t ntags = t->ntags;

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
		size_t nu = gather_unvisited(h, dp, tags, ntags, ep_tag, ids,
					     cnt, unvis);
		size_t lowest = n;
		for (size_t i = 0; i < nu; i++) {
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
size_t hnsw_search_heaps(const sh_hnsw *h, const struct nodedir **dp,
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
		uint32_t unvis[2 * SH_HNSW_MAX_M];
		size_t nu =
		    gather_unvisited(h, dp, tags, ntags, tag, ids, cnt, unvis);
		for (size_t i = 0; i < nu; i++) {
			uint32_t id = unvis[i];
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

/* ---- Planner and public search ------------------------------------------- */

/* Whether a graph search's n results are fewer than the points that
 * certainly pass: every live point without a filter, the allow bitmap's
 * when that is the whole filter (a callback's count is unknown: never). */
static bool short_result(const sh_hnsw *h, const sh_hnsw_filter *f, size_t n,
			 size_t k)
{
	if (n >= k || (f && f->fn))
		return false;
	uint64_t pass = __atomic_load_n(&h->nlive, __ATOMIC_RELAXED);
	if (f && f->allow) {
		uint64_t c = roaring_bitmap_get_cardinality(f->allow);
		pass = c < pass ? c : pass;
	}
	return n < (pass < k ? pass : k);
}

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
			   const cand *c, size_t nc, size_t k, sh_hnsw_hit *out)
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
	size_t dim = h->p.dim;
	/* nc vector pointers, then nc vectors of scratch for the callback */
	size_t ptrs = (nc * sizeof(float *) + 63) / 64 * 64;
	char *buf = hnsw_tls_buf(t, B_RES, ptrs + nc * dim * sizeof(float));
	if (!buf)
		return nc;
	const float **vp = (const float **)buf;
	float *scratch = (float *)(buf + ptrs);
	/* Fetch every vector first and prefetch it, so that the misses of all
	 * candidates overlap instead of being paid one after another. */
	for (size_t i = 0; i < nc; i++) {
		const char *nn = node_at(h, dp, c[i].id);
		uint8_t fl = node_flags(nn);
		vp[i] = NULL;
		if (!(fl & NF_USED) || (fl & NF_TOMB))
			continue;
		sh_pid pid;
		node_pid(nn, &pid);
		vp[i] =
		    h->fetch(h->fetch_ctx, c[i].id, &pid, scratch + i * dim);
		if (vp[i])
			prefetch_l2(vp[i], dim * sizeof(float));
	}
	for (size_t i = 0; i < nc; i++) {
		const float *v = vp[i];
		if (!v)
			continue;
		(*nres)++;
		if (h->p.metric == SH_METRIC_COSINE) {
			/* the stored codes are of the normalised vector; the
			 * fetched one may not be normalised */
			float nv = h->k->dot_f32(v, v, dim);
			float dot = h->k->dot_f32(v, fq, dim);
			c[i].d = nv > 0 ? 1.0f - dot / sqrtf(nv) : 1.0f;
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
#define SCAN_AHEAD 8
#define SCAN_BATCH 256

static size_t exact_scan(const sh_hnsw *h, const struct nodedir **dp,
			 struct qctx *q, const sh_hnsw_filter *f, size_t keep,
			 cand *top)
{
	struct elig el = {f, filter_set(f)};
	size_t nt = 0;
	uint32_t next =
	    __atomic_load_n(&((sh_hnsw *)h)->next, __ATOMIC_ACQUIRE);
	if (f && f->allow) {
		roaring_uint32_iterator_t it;
		uint32_t ids[SCAN_BATCH];
		roaring_init_iterator(f->allow, &it);
		for (;;) {
			uint32_t n =
			    roaring_read_uint32_iterator(&it, ids, SCAN_BATCH);
			while (n > 0 && ids[n - 1] >= next)
				n--; /* iids not handed out yet */
			if (n == 0)
				break;
			for (uint32_t i = 0; i < n && i < SCAN_AHEAD; i++)
				prefetch_vector(h, node_at(h, dp, ids[i]));
			for (uint32_t i = 0; i < n; i++) {
				if (i + SCAN_AHEAD < n)
					prefetch_vector(
					    h, node_at(h, dp,
						       ids[i + SCAN_AHEAD]));
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
		       sh_hnsw_hit *out, size_t *nout, sh_hnsw_search_stats *st)
{
	*nout = 0;
	if (k == 0 || k > SH_HNSW_MAX_EF || ef > SH_HNSW_MAX_EF)
		return SH_EINVAL;
	int rc = hnsw_check_vector(qv, h->p.dim);
	if (rc)
		return rc;
	if (ef == 0)
		ef = h->p.ef_search;
	if (ef < k)
		ef = k;
	struct tls *t = hnsw_tls_get();
	if (!t)
		return SH_ENOMEM;
	struct qctx q;
	const float *fq;
	rc = prepare_query(h, t, qv, &q, &fq);
	if (rc)
		return rc;
	sh_hnsw_search_stats s = {0};
	s.residual = f && f->fn;
	s.plan = force_exact ? SH_PLAN_EXACT_SCAN
			     : plan_search(h, f, ef, &s.est_pass);
	bool quant = h->p.storage == SH_STORAGE_INT8;
	bool resc = quant && h->fetch;
	/* With rescoring the exact scan keeps ef candidates for re-ranking. */
	size_t keep = (s.plan == SH_PLAN_EXACT_SCAN && !resc) ? k : ef;

	cand *top = hnsw_tls_buf(t, B_TOP, (keep + 1) * sizeof(cand));
	if (!top)
		return SH_ENOMEM;
	size_t candcap = t->bufcap[B_CAND] / sizeof(cand);
	if (candcap < 4 * ef + 64) {
		if (!hnsw_tls_buf(t, B_CAND, (4 * ef + 64) * sizeof(cand)))
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
		if (hnsw_visited_begin(t, span) != SH_OK) {
			SH_READ_UNLOCK(h);
			return SH_ENOMEM;
		}
		float dep;
		ep = hnsw_descend(h, &d, &q, ep, top_level, 0, &dep);
		bool fast = s.plan == SH_PLAN_GRAPH &&
			    __atomic_load_n(&h->ntomb, __ATOMIC_RELAXED) == 0;
		if (fast) {
			cand *pool = hnsw_tls_buf(t, B_POOL,
						  ef * (sizeof(cand) + 1) + 64);
			if (!pool) {
				SH_READ_UNLOCK(h);
				return SH_ENOMEM;
			}
			uint8_t *checked = (uint8_t *)(pool + ef);
			nres = search_pool(h, &d, t, &q, ep, dep, ef, pool,
					   checked);
			res = pool;
		} else {
			struct elig el = {f, filter_set(f)};
			cand *cq = t->buf[B_CAND];
			/* A filter that passes points far from the query (one
			 * correlated with the data) can send the graph walk
			 * much further than its selectivity suggests: past the
			 * cost of scanning the passing set, scan instead. */
			uint64_t budget =
			    s.plan == SH_PLAN_FILTERED_GRAPH && !f->force_plan
				? q.ndist + s.est_pass + 1
				: 0;
			nres = hnsw_search_heaps(h, &d, t, &q, &ep, &dep, 1, ef,
						 &el, 0, budget, &cq, &candcap,
						 top);
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
	if (resc) {
		/* Re-rank the best k * rescore by quantized distance (all of
		 * them for an exact search); the rest cannot enter the top k
		 * unless quantization moved them past that many others. */
		size_t nr = nres;
		if (!force_exact && h->p.rescore && k * h->p.rescore < nr)
			nr = k * h->p.rescore;
		nres = rescore(h, &d, t, fq, res, nr, &s.nrescored);
	}
	*nout = collect_hits(h, &d, res, nres, k, out);
	if (s.plan != SH_PLAN_EXACT_SCAN && short_result(h, f, *nout, k)) {
		/* The walk found fewer points than certainly exist: it started
		 * among dead nodes whose links lead nowhere live (points
		 * replaced over and over since the last vacuum). The scan
		 * is exact; vacuum repairs the graph. */
		s.plan = SH_PLAN_EXACT_SCAN;
		s.fallback = true;
		nres = exact_scan(h, &d, &q, f, resc ? ef : k, top);
		qsort(top, nres, sizeof(*top), cand_cmp);
		if (resc)
			nres = rescore(h, &d, t, fq, top, nres, &s.nrescored);
		*nout = collect_hits(h, &d, top, nres, k, out);
	}
	SH_READ_UNLOCK(h);

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

/* The node of IID when it has been allocated, else NULL; the caller holds
 * the read lock. */
static const char *node_if_used(const sh_hnsw *h, uint32_t iid)
{
	const struct nodedir *d = rcu_dereference(((sh_hnsw *)h)->dir);
	uint32_t next =
	    __atomic_load_n(&((sh_hnsw *)h)->next, __ATOMIC_ACQUIRE);
	if (iid >= next || (iid >> SH_CHUNK_SHIFT) >= d->nchunks)
		return NULL;
	const char *n = node_at(h, &d, iid);
	return (node_flags(n) & NF_USED) ? n : NULL;
}

int sh_hnsw_get_vector(const sh_hnsw *h, uint32_t iid, float *out)
{
	int rc = SH_ENOTFOUND;
	if (!hnsw_tls_get())
		return SH_ENOMEM;
	urcu_memb_read_lock();
	const char *n = node_if_used(h, iid);
	if (n && !(node_flags(n) & NF_TOMB)) {
		if (h->p.storage == SH_STORAGE_INT8)
			sh_q8_decode(node_codes(h, n), node_meta(h, n),
				     h->p.dim, out);
		else
			memcpy(out, node_vec(h, n), h->vec_bytes);
		rc = SH_OK;
	}
	SH_READ_UNLOCK(h);
	return rc;
}

int sh_hnsw_pid_of(const sh_hnsw *h, uint32_t iid, sh_pid *out)
{
	int rc = SH_ENOTFOUND;
	if (!hnsw_tls_get())
		return SH_ENOMEM;
	/* Nests inside the caller's section when called from a filter. */
	urcu_memb_read_lock();
	const char *n = node_if_used(h, iid);
	if (n) {
		node_pid(n, out);
		rc = SH_OK;
	}
	SH_READ_UNLOCK(h);
	return rc;
}
