/* HNSW index: writes (upsert, delete, vacuum), the id table and the change
 * log. Everything here runs with the writer mutex held. */
#include "hnsw_impl.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <urcu/urcu-memb.h>
#include <urcu/pointer.h>

#include "../error.h"

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

int hnsw_map_reserve(sh_hnsw *h)
{
	if ((h->map.used + 1) * 4 >= h->map.cap * 3)
		return map_grow(h);
	return SH_OK;
}

uint32_t hnsw_map_get(const sh_hnsw *h, const sh_pid *pid)
{
	if (!h->map.cap)
		return SH_IID_NONE;
	bool found;
	size_t i = map_find(h, pid, sh_pid_hash(pid), &found);
	return found ? (uint32_t)h->map.e[i] : SH_IID_NONE;
}

/* Points pid at iid (inserting or replacing). hnsw_map_reserve() first. */
void hnsw_map_put(sh_hnsw *h, const sh_pid *pid, uint32_t iid)
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
	uint32_t r = hnsw_map_get(h, pid);
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
	struct nodedir *d = caa_container_of(head, struct nodedir, rcu);
	SH_TSAN_ACQUIRE(d->tsan_sync);
	free(d);
}

/* Makes sure iid has a block. */
int hnsw_ensure_capacity(sh_hnsw *h, uint32_t iid)
{
	struct nodedir *d = h->dir;
	uint32_t c = iid >> SH_CHUNK_SHIFT;
	while (c >= d->nchunks) {
		if (d->nchunks == d->cap) {
			uint32_t ncap = d->cap * 2;
			struct nodedir *nd =
			    malloc(sizeof(*nd) + ncap * sizeof(char *));
			if (!nd)
				return SH_ENOMEM;
			nd->nchunks = d->nchunks;
			nd->cap = ncap;
			memcpy(nd->chunk, d->chunk,
			       d->nchunks * sizeof(char *));
			rcu_assign_pointer(h->dir, nd);
			d->tsan_sync = &h->rcu_sync;
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

/* Zeroes a node's header except its flags byte. An exact scan reads the
 * flags of every iid below `next` with atomic loads, including blocks being
 * released or reused, so the flags are only ever changed by atomic stores
 * (node_set_flags): a scan sees 0 and skips the block, or sees NF_USED
 * after the block was fully written. */
static void clear_header(const sh_hnsw *h, char *n)
{
	memset(n, 0, OFF_FLAGS);
	memset(n + OFF_FLAGS + 1, 0, h->vec_off - OFF_FLAGS - 1);
}

/* Writes a node block for iid (not yet reachable). */
int hnsw_node_init(sh_hnsw *h, uint32_t iid, const sh_pid *pid, uint32_t level,
		   bool tomb, const float *vec)
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
				h->upper_bytes -=
				    (size_t)level * (h->p.m + 1) * 4;
			free(upper);
			return SH_ENOMEM;
		}
		*spid = *pid;
		h->nstr++;
	}
	clear_header(h, n);
	*(uint8_t *)(n + OFF_LEVEL) = (uint8_t)level;
	uint64_t lab = spid ? (uint64_t)(uintptr_t)spid : pid->num;
	memcpy(n + OFF_LABEL, &lab, sizeof(lab));
	memcpy(n + OFF_UPPER, &upper, sizeof(upper));
	if (h->p.storage == SH_STORAGE_INT8)
		sh_q8_encode(
		    vec, h->p.dim, (uint8_t *)(n + h->vec_off),
		    (sh_q8_meta *)(n + h->vec_off - sizeof(sh_q8_meta)));
	else
		memcpy(n + h->vec_off, vec, h->vec_bytes);
	uint8_t fl = NF_USED | (spid ? NF_STR : 0) | (tomb ? NF_TOMB : 0);
	node_set_flags(n, fl);
	return SH_OK;
}

/* Releases what a node block owns and marks it unused. */
void hnsw_node_release(sh_hnsw *h, uint32_t iid)
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
	node_set_flags(n, 0);
	clear_header(h, n);
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
	int rc = hnsw_ensure_capacity(h, h->next);
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

/* Replaces list (iid, l) by ids, with each store atomic, while readers walk
 * it. A link the new list keeps stays where it was, or is copied below the
 * new count before the count shrinks, so a reader sees every kept link
 * whichever mix of old and new entries it reads; only links being added or
 * removed may be seen or missed. (Rewriting the list in order could move a
 * kept link from a slot the reader has not reached yet to one it has
 * passed: a search in flight then misses a path that existed before and
 * after the write.) */
void hnsw_write_list(sh_hnsw *h, uint32_t iid, uint32_t l, const uint32_t *ids,
		     uint32_t n)
{
	char *nd = wnode(h, iid);
	uint32_t *dst, *cnt = node_list(h, nd, l, &dst);
	uint32_t old = *cnt;
	bool placed[2 * SH_HNSW_MAX_M] = {false}, kept[2 * SH_HNSW_MAX_M];
	for (uint32_t i = 0; i < old; i++) {
		kept[i] = false;
		for (uint32_t j = 0; j < n && !kept[i]; j++)
			if (!placed[j] && dst[i] == ids[j])
				kept[i] = placed[j] = true;
	}
	/* what must still go below n: kept links above it, then new ones */
	uint32_t todo[2 * SH_HNSW_MAX_M], nt = 0;
	for (uint32_t i = n; i < old; i++)
		if (kept[i])
			todo[nt++] = dst[i];
	for (uint32_t j = 0; j < n; j++)
		if (!placed[j])
			todo[nt++] = ids[j];
	uint32_t t = 0;
	for (uint32_t i = 0; i < n && t < nt; i++)
		if (i >= old || !kept[i])
			st32(&dst[i], todo[t++]);
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
	hnsw_write_list(h, iid, l, tmp, (uint32_t)kept);
	return touch(h, iid, l);
}

/* Moves the entry point off a dead node: to a live node of the highest
 * level (one of the entry's old level when there is one, found by a scan
 * that stops there). With no live node left it stays where it is, unless
 * none_ok (vacuum, which frees every dead node): then there is none. Searches
 * start at the entry point, and a dead node's links are never updated again:
 * under churn (points replaced over and over) the old entry's neighbourhood
 * becomes a graveyard of dead nodes that leads nowhere live, and searches from
 * it find nothing. The scan is O(n) but runs only when the entry itself dies.
 * Writer only. */
static void move_entry_if_dead(sh_hnsw *h, bool none_ok)
{
	uint64_t entry = h->entry;
	uint32_t ep = (uint32_t)entry, top = (uint32_t)(entry >> 32);
	if (ep == SH_IID_NONE || !is_dead(h, ep))
		return;
	uint32_t best = SH_IID_NONE, bl = 0;
	for (uint32_t u = 0; u < h->next; u++) {
		if (is_dead(h, u))
			continue;
		uint32_t l = node_level(wnode(h, u));
		if (best == SH_IID_NONE || l > bl) {
			best = u;
			bl = l;
			if (bl >= top)
				break;
		}
	}
	if (best == SH_IID_NONE && !none_ok)
		return;
	uint64_t e = best == SH_IID_NONE ? (uint64_t)SH_IID_NONE
					 : ((uint64_t)bl << 32) | best;
	__atomic_store_n(&h->entry, e, __ATOMIC_RELEASE);
	chg_push(h, (sh_hnsw_change){
			.kind = SH_CHANGE_ENTRY, .iid = best, .level = bl});
}

/* Links node iid (already written, level `level`) into the graph. */
static int link_node(sh_hnsw *h, uint32_t iid, uint32_t level, uint32_t exclude)
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
	struct tls *t = hnsw_tls_get();
	if (!t)
		return SH_ENOMEM;
	const char *me = wnode(h, iid);
	struct qctx q;
	memset(&q, 0, sizeof(q));
	const float *fq = NULL;
	int8_t *codes = NULL;
	if (h->p.storage == SH_STORAGE_INT8) {
		/* query with the stored codes: shift to signed */
		codes = hnsw_tls_buf(t, B_QUERY,
				     h->p.dim * sizeof(float) + h->p.dim + 64);
		if (!codes)
			return SH_ENOMEM;
		const uint8_t *c = node_codes(h, me);
		for (uint32_t i = 0; i < h->p.dim; i++)
			codes[i] = (int8_t)((int)c[i] - 128);
		q.codes = codes;
		sh_q8_qconst_init(node_meta(h, me), h->p.dim, &q.qk);
	} else {
		fq = node_vec(h, me);
		q.f = fq;
	}
	size_t ef = h->p.ef_construction;
	size_t capc = 4 * ef + 64;
	if (!hnsw_tls_buf(t, B_CAND, capc * sizeof(cand)))
		return SH_ENOMEM;
	capc = t->bufcap[B_CAND] / sizeof(cand);
	cand *top_heap =
	    hnsw_tls_buf(t, B_TOP, (ef + 2 * h->m0 + 2) * sizeof(cand));
	cand *scratch = hnsw_tls_buf(t, B_POOL, (2 * h->m0 + 2) * sizeof(cand));
	if (!top_heap || !scratch)
		return SH_ENOMEM;

	const struct nodedir *d = h->dir;
	float dep;
	size_t span = (size_t)h->dir->nchunks * SH_CHUNK_NODES;
	uint32_t cur = hnsw_descend(h, &d, &q, ep, top, level, &dep);
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
		if (hnsw_visited_begin(t, span)) {
			rc = SH_ENOMEM;
			goto out;
		}
		cand *cq = t->buf[B_CAND];
		size_t nt = hnsw_search_heaps(h, &d, t, &q, cur_eps, cur_deps,
					      ncur, ef, NULL, (uint32_t)l, 0,
					      &cq, &capc, top_heap);
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
		size_t mkeep = select_heuristic(h, wset, nwset, h->p.m);
		uint32_t ids[2 * SH_HNSW_MAX_M];
		for (size_t i = 0; i < mkeep; i++)
			ids[i] = wset[i].id;
		hnsw_write_list(h, iid, (uint32_t)l, ids, (uint32_t)mkeep);
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
	} else {
		/* the entry stayed on a dead node while none was live */
		move_entry_if_dead(h, false);
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
	move_entry_if_dead(h, false);
}

int sh_hnsw_upsert(sh_hnsw *h, const sh_pid *pid, const float *vec,
		   uint32_t *iid_out, uint32_t *old_iid_out)
{
	int rc = hnsw_check_vector(vec, h->p.dim);
	if (rc)
		return rc;
	if (pid->kind != SH_PID_U64 &&
	    (pid->kind != SH_PID_STR || pid->len == 0 ||
	     pid->len > SH_PID_MAX_STR))
		return SH_EINVAL;
	if (!hnsw_tls_get())
		return SH_ENOMEM;
	pthread_mutex_lock(&h->wlock);
	const float *v = vec;
	if (h->p.metric == SH_METRIC_COSINE) {
		if ((rc = hnsw_normalise(vec, h->wvec, h->p.dim)))
			goto out;
		v = h->wvec;
	}
	if ((rc = hnsw_map_reserve(h)))
		goto out;
	uint32_t old = hnsw_map_get(h, pid), iid;
	if ((rc = alloc_iid(h, &iid)))
		goto out;
	uint32_t level = random_level(h);
	if ((rc = hnsw_node_init(h, iid, pid, level, false, v)))
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
	hnsw_map_put(h, pid, iid);
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
	uint32_t iid = hnsw_map_get(h, pid);
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

/* ---- Vacuum -------------------------------------------------------------- */

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
	hnsw_write_list(h, u, l, tmp, (uint32_t)kept);
	return touch(h, u, l);
}

int sh_hnsw_vacuum(sh_hnsw *h, sh_hnsw_vacuum_stats *st)
{
	sh_hnsw_vacuum_stats s = {0};
	int rc = SH_OK;
	if (!hnsw_tls_get())
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
				uint32_t *nd =
				    realloc(dead, capdead * sizeof(*nd));
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
	/* 2. the entry point is live (mark_tomb moves it off a node it
	 * kills; a tombstone loaded from storage may still hold it) */
	move_entry_if_dead(h, true);
	chg_flush(h);
	/* 3. no live node or entry point leads to a dead one now; wait until
	 * no reader can still be standing on one, then reuse them */
	urcu_memb_synchronize_rcu();
	SH_TSAN_ACQUIRE(&h->rcu_sync);
	for (size_t i = 0; i < ndead; i++) {
		hnsw_node_release(h, dead[i]);
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
