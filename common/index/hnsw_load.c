/* HNSW index: snapshot (dump), validation and the loader. */
#include "hnsw_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"

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
			sh_q8_decode(node_codes(h, n), node_meta(h, n),
				     h->p.dim, vec);
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

#define FAIL(...)                                                              \
	do {                                                                   \
		if (err && errlen)                                             \
			snprintf(err, errlen, __VA_ARGS__);                    \
		rc = SH_ECORRUPT;                                              \
		goto out;                                                      \
	} while (0)

int hnsw_validate_locked(sh_hnsw *h, char *err, size_t errlen)
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
				FAIL("node %u level %u: %u links > cap", i, l,
				     cnt);
			for (uint32_t j = 0; j < cnt; j++) {
				uint32_t t = ids[j];
				if (t >= h->next)
					FAIL("node %u level %u: link %u out of "
					     "range",
					     i, l, t);
				if (t == i)
					FAIL("node %u level %u: self link", i,
					     l);
				char *tn = wnode(h, t);
				if (!(node_flags(tn) & NF_USED))
					FAIL(
					    "node %u level %u: link to free %u",
					    i, l, t);
				if (node_level(tn) < l)
					FAIL("node %u level %u: link to %u of "
					     "level %u",
					     i, l, t, node_level(tn));
				for (uint32_t k2 = 0; k2 < j; k2++)
					if (ids[k2] == t)
						FAIL("node %u level %u: "
						     "duplicate link %u",
						     i, l, t);
			}
		}
		if (!(f & NF_TOMB)) {
			sh_pid pid;
			node_pid(n, &pid);
			if (hnsw_map_get(h, &pid) != i)
				FAIL("node %u: id table does not point back",
				     i);
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
		/* A dead node may sit above it: the entry moves to a live
		 * node when its own dies (hnsw_write.c, move_entry_if_dead). */
		for (uint32_t i = 0; i < h->next; i++) {
			char *n = wnode(h, i);
			if ((node_flags(n) & NF_USED) &&
			    !(node_flags(n) & NF_TOMB) && node_level(n) > el)
				FAIL("live node %u above the entry level", i);
		}
	}
out:
	return rc;
}

int sh_hnsw_validate(sh_hnsw *h, char *err, size_t errlen)
{
	pthread_mutex_lock(&h->wlock);
	int rc = hnsw_validate_locked(h, err, errlen);
	pthread_mutex_unlock(&h->wlock);
	return rc;
}

/* ---- Loader -------------------------------------------------------------- */

int sh_hnsw_load_node(sh_hnsw *h, uint32_t iid, const sh_pid *pid,
		      uint32_t level, bool tombstone, const float *vec)
{
	int rc;
	if (iid >= SH_HNSW_MAX_NODES || level > SH_HNSW_MAX_LEVEL || !vec ||
	    !pid)
		return SH_EINVAL;
	if (hnsw_check_vector(vec, h->p.dim))
		return SH_EINVAL;
	if (!hnsw_tls_get()) /* call_rcu (directory growth) needs a registered
				thread */
		return SH_ENOMEM;
	pthread_mutex_lock(&h->wlock);
	h->loading = true;
	if ((rc = hnsw_ensure_capacity(h, iid)))
		goto out;
	if (iid < h->next && (node_flags(wnode(h, iid)) & NF_USED)) {
		rc = SH_EINVAL; /* two NODE records for one iid */
		goto out;
	}
	if (!tombstone) {
		if ((rc = hnsw_map_reserve(h)))
			goto out;
		if (hnsw_map_get(h, pid) != SH_IID_NONE) {
			rc = SH_EINVAL;
			goto out;
		}
	}
	if ((rc = hnsw_node_init(h, iid, pid, level, tombstone, vec)))
		goto out;
	if (iid >= h->next)
		__atomic_store_n(&h->next, iid + 1, __ATOMIC_RELEASE);
	if (tombstone) {
		h->ntomb++;
	} else {
		h->nlive++;
		hnsw_map_put(h, pid, iid);
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
	hnsw_write_list(h, iid, level, links, n);
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
	rc = hnsw_validate_locked(h, NULL, 0);
out:
	pthread_mutex_unlock(&h->wlock);
	return rc;
}
