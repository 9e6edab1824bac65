/* The router's data operations: split by owner or fan out to every node,
 * then merge. See router.h. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pid.h"
#include "router_impl.h"
#include "slots.h"

/* ---- Splitting by owner ---------------------------------------------------
 */

/* Items of a request grouped by the node that owns their slot. */
struct group {
	int node;    /* index in r->nodes */
	size_t n;    /* items in this group */
	size_t *pos; /* their positions in the request */
};

/* Groups n ids by owner; groups and their positions come from a. Returns
 * the number of groups, or 0 with a->oom when out of memory (n > 0). */
static size_t split(sh_router *r, Shoal__V1__PointId *const *ids, size_t n,
		    sh_arena *a, struct group **out)
{
	int *owner = sh_arena_alloc(a, (n ? n : 1) * sizeof(int));
	size_t count[SH_MAP_MAX_NODES] = {0};
	if (!owner)
		return 0;
	pthread_rwlock_rdlock(&r->lock);
	for (size_t i = 0; i < n; i++) {
		sh_pid pid;
		sh_wire_pid_from_proto(ids[i], &pid); /* validated */
		owner[i] = router_owner_locked(r, sh_slot_of(&pid));
		if (owner[i] >= 0)
			count[owner[i]]++;
	}
	uint32_t nn = r->nnodes;
	pthread_rwlock_unlock(&r->lock);
	size_t ng = 0;
	for (uint32_t j = 0; j < nn; j++)
		ng += count[j] > 0;
	struct group *g = sh_arena_alloc(a, (ng ? ng : 1) * sizeof(*g));
	if (!g)
		return 0;
	size_t k = 0;
	for (uint32_t j = 0; j < nn; j++) {
		if (!count[j])
			continue;
		g[k].node = (int)j;
		g[k].pos = sh_arena_alloc(a, count[j] * sizeof(size_t));
		if (!g[k].pos)
			return 0;
		for (size_t i = 0; i < n; i++)
			if (owner[i] == (int)j)
				g[k].pos[g[k].n++] = i;
		k++;
	}
	*out = g;
	return ng;
}

/* Fills the per-point statuses of a write in request order: from the
 * owner's answer, or the owner's failure. Returns the first failure. */
static int merge_statuses(sh_router *r, struct call *calls,
			  const struct group *g, size_t ng,
			  Shoal__V1__PointId *const *ids, size_t n,
			  bool is_delete, sh_arena *a,
			  Shoal__V1__WriteResult **out, char *err,
			  size_t errlen)
{
	Shoal__V1__WriteResult *w = sh_arena_alloc(a, sizeof(*w));
	Shoal__V1__PointStatus **st =
	    sh_arena_alloc(a, (n ? n : 1) * sizeof(*st));
	if (!w || !st)
		return SH_ENOMEM;
	shoal__v1__write_result__init(w);
	w->statuses = st;
	w->n_statuses = n;
	int rc = calls_error(r, calls, ng, NULL, err, errlen);
	for (size_t k = 0; k < ng; k++) {
		struct call *c = &calls[k];
		Shoal__V1__WriteResult *nw =
		    c->rc || c->resp->code
			? NULL
			: (is_delete ? c->resp->delete_ : c->resp->upsert);
		char name[300];
		const char *why = NULL;
		if (!nw) {
			char msg[600];
			snprintf(
			    msg, sizeof(msg), "%s: %s",
			    router_node_name(r, c->node, name, sizeof(name)),
			    c->rc ? c->err
				  : (c->resp->message ? c->resp->message : ""));
			why = sh_arena_strndup(a, msg, strlen(msg));
		}
		for (size_t i = 0; i < g[k].n; i++) {
			size_t p = g[k].pos[i];
			if (nw && i < nw->n_statuses) {
				st[p] = nw->statuses[i];
			} else {
				Shoal__V1__PointStatus *s =
				    sh_arena_alloc(a, sizeof(*s));
				if (!s)
					return SH_ENOMEM;
				shoal__v1__point_status__init(s);
				s->id = ids[p];
				s->code =
				    (Shoal__V1__ErrorCode)(c->rc
							       ? c->rc
							       : (nw ? SH_EIO
								     : (int)c
									   ->resp
									   ->code));
				s->message = (char *)(why ? why : "");
				st[p] = s;
			}
			if (st[p]->code == SHOAL__V1__ERROR_CODE__OK)
				w->applied++;
			else if (st[p]->code == SHOAL__V1__ERROR_CODE__ESTALE ||
				 st[p]->code ==
				     SHOAL__V1__ERROR_CODE__ENOTFOUND)
				w->ignored++;
		}
	}
	*out = w;
	return rc;
}

static void defer_calls(sh_arena *a, struct call *calls, size_t n);

int rop_upsert(sh_router *r, const Shoal__V1__Request *rq,
	       Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__UpsertRequest *u = rq->upsert;
	size_t n = u->n_points;
	Shoal__V1__PointId **ids =
	    sh_arena_alloc(a, (n ? n : 1) * sizeof(*ids));
	if (!ids)
		return SH_ENOMEM;
	for (size_t i = 0; i < n; i++)
		ids[i] = u->points[i]->id;
	struct group *g = NULL;
	size_t ng = split(r, ids, n, a, &g);
	if (a->oom)
		return SH_ENOMEM;
	struct call *calls = calloc(ng ? ng : 1, sizeof(*calls));
	if (!calls)
		return SH_ENOMEM;
	for (size_t k = 0; k < ng; k++) {
		Shoal__V1__UpsertRequest *sub = sh_arena_alloc(a, sizeof(*sub));
		Shoal__V1__Point **pts =
		    sh_arena_alloc(a, g[k].n * sizeof(*pts));
		if (!sub || !pts) {
			free(calls);
			return SH_ENOMEM;
		}
		shoal__v1__upsert_request__init(sub);
		sub->collection = u->collection;
		for (size_t i = 0; i < g[k].n; i++)
			pts[i] = u->points[g[k].pos[i]];
		sub->points = pts;
		sub->n_points = g[k].n;
		call_init(&calls[k], g[k].node, rq);
		calls[k].rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
		calls[k].rq.upsert = sub;
	}
	fanout(r, calls, ng, (int)rq->timeout_ms, true);
	Shoal__V1__WriteResult *w = NULL;
	int rc =
	    merge_statuses(r, calls, g, ng, ids, n, false, a, &w, err, errlen);
	defer_calls(a, calls, ng);
	if (!w)
		return rc ? rc : SH_ENOMEM;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_UPSERT;
	rs->upsert = w;
	return rc;
}

/* The points of `sub` requests are the original request's; the calls'
 * responses are freed with the arena (the result points into them). */
static void free_calls(void *p)
{
	struct call *c = p;
	size_t n = c[0].node; /* stored count, see defer_calls */
	calls_free(c + 1, n);
	free(c);
}

static void defer_calls(sh_arena *a, struct call *calls, size_t n)
{
	/* Keep the responses alive until the arena is freed: move them into
	 * a block whose first element records the count. */
	struct call *keep = calloc(n + 1, sizeof(*keep));
	if (!keep) {
		calls_free(calls, n);
		free(calls);
		a->oom = true;
		return;
	}
	keep[0].node = (int)n;
	memcpy(keep + 1, calls, n * sizeof(*calls));
	free(calls);
	sh_arena_defer(a, free_calls, keep);
}

/* Fans one request out to every node that owns a slot (reads) and keeps
 * the answers until the arena is freed. Returns the calls and their
 * count. */
static struct call *to_owners(sh_router *r, const Shoal__V1__Request *rq,
			      sh_arena *a, size_t *n, bool all, bool write)
{
	int idx[SH_MAP_MAX_NODES];
	*n = all ? router_all_nodes(r, idx) : router_owning_nodes(r, idx);
	/* keep[0] records the count for free_calls; the calls follow */
	struct call *keep = calloc(*n + 1, sizeof(*keep));
	if (!keep) {
		a->oom = true;
		return NULL;
	}
	keep[0].node = (int)*n;
	struct call *calls = keep + 1;
	for (size_t i = 0; i < *n; i++) {
		call_init(&calls[i], idx[i], rq);
		calls[i].rq.op_case = rq->op_case;
		/* the op union: every member is a pointer at one place */
		calls[i].rq.search = rq->search;
	}
	fanout(r, calls, *n, (int)rq->timeout_ms, write);
	sh_arena_defer(a, free_calls, keep);
	return a->oom ? NULL : calls;
}

int rop_delete(sh_router *r, const Shoal__V1__Request *rq,
	       Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__DeleteRequest *d = rq->delete_;
	if (d->selector_case == SHOAL__V1__DELETE_REQUEST__SELECTOR_FILTER) {
		size_t n;
		struct call *calls = to_owners(r, rq, a, &n, false, true);
		if (!calls)
			return SH_ENOMEM;
		int rc = calls_error(r, calls, n, NULL, err, errlen);
		Shoal__V1__WriteResult *w = sh_arena_alloc(a, sizeof(*w));
		if (!w)
			return SH_ENOMEM;
		shoal__v1__write_result__init(w);
		size_t total = 0;
		for (size_t i = 0; i < n; i++)
			if (!calls[i].rc && !calls[i].resp->code &&
			    calls[i].resp->delete_)
				total += calls[i].resp->delete_->n_statuses;
		w->statuses = sh_arena_alloc(a, (total ? total : 1) *
						    sizeof(*w->statuses));
		if (!w->statuses)
			return SH_ENOMEM;
		for (size_t i = 0; i < n; i++) {
			if (calls[i].rc || calls[i].resp->code ||
			    !calls[i].resp->delete_)
				continue;
			Shoal__V1__WriteResult *nw = calls[i].resp->delete_;
			for (size_t j = 0; j < nw->n_statuses; j++)
				w->statuses[w->n_statuses++] = nw->statuses[j];
			w->applied += nw->applied;
			w->ignored += nw->ignored;
		}
		rs->result_case = SHOAL__V1__RESPONSE__RESULT_DELETE;
		rs->delete_ = w;
		return rc;
	}
	const Shoal__V1__PointRefs *refs = d->ids;
	size_t n = refs->n_refs;
	Shoal__V1__PointId **ids =
	    sh_arena_alloc(a, (n ? n : 1) * sizeof(*ids));
	if (!ids)
		return SH_ENOMEM;
	for (size_t i = 0; i < n; i++)
		ids[i] = refs->refs[i]->id;
	struct group *g = NULL;
	size_t ng = split(r, ids, n, a, &g);
	if (a->oom)
		return SH_ENOMEM;
	struct call *calls = calloc(ng ? ng : 1, sizeof(*calls));
	if (!calls)
		return SH_ENOMEM;
	for (size_t k = 0; k < ng; k++) {
		Shoal__V1__DeleteRequest *sub = sh_arena_alloc(a, sizeof(*sub));
		Shoal__V1__PointRefs *sr = sh_arena_alloc(a, sizeof(*sr));
		Shoal__V1__PointRef **pr =
		    sh_arena_alloc(a, g[k].n * sizeof(*pr));
		if (!sub || !sr || !pr) {
			free(calls);
			return SH_ENOMEM;
		}
		shoal__v1__delete_request__init(sub);
		shoal__v1__point_refs__init(sr);
		for (size_t i = 0; i < g[k].n; i++)
			pr[i] = refs->refs[g[k].pos[i]];
		sr->refs = pr;
		sr->n_refs = g[k].n;
		sub->collection = d->collection;
		sub->selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS;
		sub->ids = sr;
		call_init(&calls[k], g[k].node, rq);
		calls[k].rq.op_case = SHOAL__V1__REQUEST__OP_DELETE;
		calls[k].rq.delete_ = sub;
	}
	fanout(r, calls, ng, (int)rq->timeout_ms, true);
	Shoal__V1__WriteResult *w = NULL;
	int rc =
	    merge_statuses(r, calls, g, ng, ids, n, true, a, &w, err, errlen);
	defer_calls(a, calls, ng);
	if (!w)
		return rc ? rc : SH_ENOMEM;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_DELETE;
	rs->delete_ = w;
	return rc;
}

static int id_cmp(const Shoal__V1__PointId *x, const Shoal__V1__PointId *y);

int rop_get(sh_router *r, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	    sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__GetRequest *gr = rq->get;
	struct group *g = NULL;
	size_t ng = split(r, gr->ids, gr->n_ids, a, &g);
	if (a->oom)
		return SH_ENOMEM;
	struct call *calls = calloc(ng ? ng : 1, sizeof(*calls));
	if (!calls)
		return SH_ENOMEM;
	for (size_t k = 0; k < ng; k++) {
		Shoal__V1__GetRequest *sub = sh_arena_alloc(a, sizeof(*sub));
		Shoal__V1__PointId **ids =
		    sh_arena_alloc(a, g[k].n * sizeof(*ids));
		if (!sub || !ids) {
			free(calls);
			return SH_ENOMEM;
		}
		*sub = *gr;
		for (size_t i = 0; i < g[k].n; i++)
			ids[i] = gr->ids[g[k].pos[i]];
		sub->ids = ids;
		sub->n_ids = g[k].n;
		call_init(&calls[k], g[k].node, rq);
		calls[k].rq.op_case = SHOAL__V1__REQUEST__OP_GET;
		calls[k].rq.get = sub;
	}
	fanout(r, calls, ng, (int)rq->timeout_ms, false);
	int rc = calls_error(r, calls, ng, NULL, err, errlen);
	Shoal__V1__GetResult *res = sh_arena_alloc(a, sizeof(*res));
	size_t total = 0;
	for (size_t k = 0; !rc && k < ng; k++)
		total += calls[k].resp->get ? calls[k].resp->get->n_points : 0;
	Shoal__V1__Point **pts =
	    sh_arena_alloc(a, (total ? total : 1) * sizeof(*pts));
	/* Each node answers its ids in the order asked, leaving out the
	 * missing ones: put them back in the request's order. */
	Shoal__V1__Point **at =
	    sh_arena_alloc(a, (gr->n_ids ? gr->n_ids : 1) * sizeof(*at));
	if (res && pts && at && !rc) {
		memset(at, 0, (gr->n_ids ? gr->n_ids : 1) * sizeof(*at));
		for (size_t k = 0; k < ng; k++) {
			const Shoal__V1__GetResult *gk = calls[k].resp->get;
			size_t j = 0;
			for (size_t i = 0; gk && i < g[k].n && j < gk->n_points;
			     i++) {
				size_t p = g[k].pos[i];
				if (gk->points[j]->id &&
				    !id_cmp(gk->points[j]->id, gr->ids[p]))
					at[p] = gk->points[j++];
			}
		}
		shoal__v1__get_result__init(res);
		res->points = pts;
		for (size_t p = 0; p < gr->n_ids; p++)
			if (at[p])
				pts[res->n_points++] = at[p];
		rs->result_case = SHOAL__V1__RESPONSE__RESULT_GET;
		rs->get = res;
	}
	defer_calls(a, calls, ng);
	return rc ? rc : (res && pts && at ? SH_OK : SH_ENOMEM);
}

/* ---- Search ---------------------------------------------------------------
 */

static int id_cmp(const Shoal__V1__PointId *x, const Shoal__V1__PointId *y)
{
	if (x->kind_case != y->kind_case)
		return x->kind_case < y->kind_case ? -1 : 1;
	if (x->kind_case == SHOAL__V1__POINT_ID__KIND_NUM)
		return x->num < y->num ? -1 : x->num > y->num;
	return strcmp(x->str, y->str);
}

static int hit_cmp(const void *pa, const void *pb)
{
	const Shoal__V1__Hit *x = *(Shoal__V1__Hit *const *)pa;
	const Shoal__V1__Hit *y = *(Shoal__V1__Hit *const *)pb;
	if (x->distance != y->distance)
		return x->distance < y->distance ? -1 : 1;
	return id_cmp(x->id, y->id);
}

/* How many of the answering nodes covered each slot (saturating at 2). */
static uint8_t *coverage_counts(struct call *calls, size_t n, sh_arena *a)
{
	uint8_t *cnt = sh_arena_alloc(a, SH_SLOTS);
	if (!cnt)
		return NULL;
	memset(cnt, 0, SH_SLOTS);
	for (size_t i = 0; i < n; i++) {
		if (calls[i].rc || calls[i].resp->code ||
		    !calls[i].resp->search || !calls[i].resp->search->covered)
			continue;
		const Shoal__V1__SlotSet *cs = calls[i].resp->search->covered;
		for (size_t j = 0; j < cs->n_ranges; j++)
			for (uint32_t s = cs->ranges[j]->first;
			     s <= cs->ranges[j]->last && s < SH_SLOTS; s++)
				cnt[s] += cnt[s] < 2;
	}
	return cnt;
}

/* A search's coverage must be exact: a slot two nodes searched could give
 * a point twice, and a slot none searched (while every node answered) is
 * a silent hole; both are errors (nodes whose slots disagree with the map,
 * e.g. mid-move), never a quiet answer. A partial answer (min_coverage)
 * may leave holes, which its covered set shows. */
static int check_coverage(const uint8_t *cnt, bool whole, char *err,
			  size_t errlen)
{
	for (uint32_t s = 0; s < SH_SLOTS; s++) {
		if (cnt[s] == 1 || (cnt[s] == 0 && !whole))
			continue;
		uint32_t e = s;
		while (e + 1 < SH_SLOTS && cnt[e + 1] == cnt[s])
			e++;
		return sh_errf(err, errlen, SH_EIO,
			       "slots %u-%u were searched by %s: the nodes' "
			       "slots disagree with the cluster map; retry",
			       s, e, cnt[s] ? "more than one node" : "no node");
	}
	return SH_OK;
}

/* The set of the slots counted at least once. */
static Shoal__V1__SlotSet *covered_union(const uint8_t *bits, sh_arena *a)
{
	Shoal__V1__SlotSet *set = sh_arena_alloc(a, sizeof(*set));
	if (!set)
		return NULL;
	shoal__v1__slot_set__init(set);
	size_t runs = 0;
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		runs += bits[s] && (s == 0 || !bits[s - 1]);
	set->ranges = sh_arena_alloc(a, (runs ? runs : 1) * sizeof(void *));
	if (!set->ranges)
		return NULL;
	for (uint32_t s = 0; s < SH_SLOTS; s++) {
		if (!bits[s])
			continue;
		uint32_t e = s;
		while (e + 1 < SH_SLOTS && bits[e + 1])
			e++;
		Shoal__V1__SlotRange *sr = sh_arena_alloc(a, sizeof(*sr));
		if (!sr)
			return NULL;
		shoal__v1__slot_range__init(sr);
		sr->first = s;
		sr->last = e;
		set->ranges[set->n_ranges++] = sr;
		s = e;
	}
	return set;
}

int rop_search(sh_router *r, const Shoal__V1__Request *rq,
	       Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__SearchRequest *s = rq->search;
	size_t n;
	struct call *calls = to_owners(r, rq, a, &n, false, false);
	if (!calls)
		return SH_ENOMEM;
	/* A node's own verdict on the request (unknown collection, wrong
	 * dimension, bad filter) is the answer; a node that did not answer
	 * is a matter of coverage. */
	size_t answered = 0;
	int first_fail = -1;
	for (size_t i = 0; i < n; i++) {
		if (calls[i].rc) {
			if (first_fail < 0)
				first_fail = (int)i;
			continue;
		}
		if (calls[i].resp->code)
			return calls_error(r, &calls[i], 1, NULL, err, errlen);
		answered++;
	}
	if (answered < n) {
		double need = s->min_coverage;
		char name[300];
		if (need <= 0 || (double)answered < need * (double)n) {
			atomic_fetch_add(&r->searches_failed, 1);
			return sh_errf(
			    err, errlen, calls[first_fail].rc,
			    "%s did not answer: %s (%zu of %zu nodes "
			    "answered%s)",
			    router_node_name(r, calls[first_fail].node, name,
					     sizeof(name)),
			    calls[first_fail].err, answered, n,
			    need > 0 ? ", below min_coverage" : "");
		}
		atomic_fetch_add(&r->searches_partial, 1);
	}
	uint8_t *cnt = coverage_counts(calls, n, a);
	if (!cnt)
		return SH_ENOMEM;
	int crc = check_coverage(cnt, answered == n, err, errlen);
	if (crc != SH_OK) {
		atomic_fetch_add(&r->searches_failed, 1);
		return crc;
	}
	Shoal__V1__SearchResult *res = sh_arena_alloc(a, sizeof(*res));
	size_t nq = s->n_queries, k = s->k ? s->k : 10;
	if (!res)
		return SH_ENOMEM;
	shoal__v1__search_result__init(res);
	res->results = sh_arena_alloc(a, (nq ? nq : 1) * sizeof(void *));
	if (!res->results)
		return SH_ENOMEM;
	for (size_t q = 0; q < nq; q++) {
		size_t total = 0;
		for (size_t i = 0; i < n; i++)
			if (!calls[i].rc &&
			    q < calls[i].resp->search->n_results)
				total +=
				    calls[i].resp->search->results[q]->n_hits;
		Shoal__V1__QueryHits *qh = sh_arena_alloc(a, sizeof(*qh));
		Shoal__V1__SearchStats *st = sh_arena_alloc(a, sizeof(*st));
		Shoal__V1__Hit **all =
		    sh_arena_alloc(a, (total ? total : 1) * sizeof(*all));
		if (!qh || !st || !all)
			return SH_ENOMEM;
		shoal__v1__query_hits__init(qh);
		shoal__v1__search_stats__init(st);
		size_t m = 0;
		for (size_t i = 0; i < n; i++) {
			if (calls[i].rc ||
			    q >= calls[i].resp->search->n_results)
				continue;
			Shoal__V1__QueryHits *nq_ =
			    calls[i].resp->search->results[q];
			for (size_t h = 0; h < nq_->n_hits; h++)
				all[m++] = nq_->hits[h];
			if (nq_->stats) {
				if (st->plan ==
				    SHOAL__V1__PLAN__PLAN_UNSPECIFIED)
					st->plan = nq_->stats->plan;
				st->estimated_passing +=
				    nq_->stats->estimated_passing;
				st->distances += nq_->stats->distances;
				st->unindexed_filter |=
				    nq_->stats->unindexed_filter;
			}
		}
		qsort(all, m, sizeof(*all), hit_cmp);
		qh->hits = all;
		qh->n_hits = m < k ? m : k;
		qh->stats = st;
		res->results[res->n_results++] = qh;
	}
	res->covered = covered_union(cnt, a);
	if (!res->covered)
		return SH_ENOMEM;
	res->nodes_answered = (uint32_t)answered;
	res->nodes_asked = (uint32_t)n;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_SEARCH;
	rs->search = res;
	return SH_OK;
}

/* ---- Scroll, count, stats, collections ------------------------------------
 */

/* Router scroll cursors: [1][node id u32 BE][the node's cursor]. */
int rop_scroll(sh_router *r, const Shoal__V1__Request *rq,
	       Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__ScrollRequest *s = rq->scroll;
	int idx[SH_MAP_MAX_NODES];
	size_t n = router_owning_nodes(r, idx);
	size_t at = 0;
	ProtobufCBinaryData ncur = {0, NULL};
	if (s->cursor.len) {
		if (s->cursor.len < 5 || s->cursor.data[0] != 1)
			return sh_errf(err, errlen, SH_EINVAL,
				       "scroll.cursor: malformed");
		uint32_t id = (uint32_t)s->cursor.data[1] << 24 |
			      (uint32_t)s->cursor.data[2] << 16 |
			      (uint32_t)s->cursor.data[3] << 8 |
			      s->cursor.data[4];
		while (at < n && r->nodes[idx[at]].id != id)
			at++;
		if (at == n)
			return sh_errf(err, errlen, SH_EINVAL,
				       "scroll.cursor: node %u is not in the "
				       "map",
				       id);
		ncur.data = s->cursor.data + 5;
		ncur.len = s->cursor.len - 5;
	}
	size_t limit = s->limit ? s->limit : 100;
	Shoal__V1__ScrollResult *res = sh_arena_alloc(a, sizeof(*res));
	Shoal__V1__Point **pts = sh_arena_alloc(a, limit * sizeof(*pts));
	if (!res || !pts)
		return SH_ENOMEM;
	shoal__v1__scroll_result__init(res);
	res->points = pts;
	while (at < n && res->n_points < limit) {
		Shoal__V1__ScrollRequest *sub = sh_arena_alloc(a, sizeof(*sub));
		struct call *c = calloc(1, sizeof(*c));
		if (!sub || !c) {
			free(c);
			return SH_ENOMEM;
		}
		*sub = *s;
		sub->cursor = ncur;
		sub->limit = (uint32_t)(limit - res->n_points);
		call_init(c, idx[at], rq);
		c->rq.op_case = SHOAL__V1__REQUEST__OP_SCROLL;
		c->rq.scroll = sub;
		fanout(r, c, 1, (int)rq->timeout_ms, false);
		int rc = calls_error(r, c, 1, NULL, err, errlen);
		Shoal__V1__ScrollResult *nr = rc ? NULL : c->resp->scroll;
		defer_calls(a, c, 1);
		if (rc)
			return rc;
		for (size_t i = 0; nr && i < nr->n_points; i++)
			pts[res->n_points++] = nr->points[i];
		if (nr && nr->next_cursor.len) {
			ncur = nr->next_cursor;
			break;
		}
		at++;
		ncur.data = NULL;
		ncur.len = 0;
	}
	if (at < n) {
		uint8_t *b = sh_arena_alloc(a, 5 + ncur.len);
		if (!b)
			return SH_ENOMEM;
		uint32_t id = r->nodes[idx[at]].id;
		b[0] = 1;
		b[1] = (uint8_t)(id >> 24);
		b[2] = (uint8_t)(id >> 16);
		b[3] = (uint8_t)(id >> 8);
		b[4] = (uint8_t)id;
		if (ncur.len)
			memcpy(b + 5, ncur.data, ncur.len);
		res->next_cursor.data = b;
		res->next_cursor.len = 5 + ncur.len;
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_SCROLL;
	rs->scroll = res;
	return SH_OK;
}

int rop_count(sh_router *r, const Shoal__V1__Request *rq,
	      Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	size_t n;
	struct call *calls = to_owners(r, rq, a, &n, false, false);
	if (!calls)
		return SH_ENOMEM;
	int rc = calls_error(r, calls, n, NULL, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__CountResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__count_result__init(res);
	res->exact = true;
	for (size_t i = 0; i < n; i++) {
		res->count += calls[i].resp->count->count;
		res->exact &= calls[i].resp->count->exact;
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_COUNT;
	rs->count = res;
	return SH_OK;
}

int rop_stats(sh_router *r, const Shoal__V1__Request *rq,
	      Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	size_t n;
	struct call *calls = to_owners(r, rq, a, &n, true, false);
	if (!calls)
		return SH_ENOMEM;
	int rc = calls_error(r, calls, n, NULL, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__StatsResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__stats_result__init(res);
	size_t cap = 0;
	for (size_t i = 0; i < n; i++)
		cap += calls[i].resp->stats->n_collections;
	res->collections = sh_arena_alloc(a, (cap ? cap : 1) * sizeof(void *));
	if (!res->collections)
		return SH_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const Shoal__V1__StatsResult *ns = calls[i].resp->stats;
		if (ns->uptime_ms > res->uptime_ms)
			res->uptime_ms = ns->uptime_ms;
		for (size_t c = 0; c < ns->n_collections; c++) {
			Shoal__V1__CollectionStats *x = ns->collections[c],
						   *y = NULL;
			for (size_t j = 0; j < res->n_collections && !y; j++)
				if (!strcmp(res->collections[j]->name, x->name))
					y = res->collections[j];
			if (!y) {
				y = sh_arena_alloc(a, sizeof(*y));
				if (!y)
					return SH_ENOMEM;
				*y = *x;
				y->points = y->tombstones = y->index_bytes =
				    y->vacuums = 0;
				res->collections[res->n_collections++] = y;
			}
			y->points += x->points;
			y->tombstones += x->tombstones;
			y->index_bytes += x->index_bytes;
			y->vacuums += x->vacuums;
		}
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_STATS;
	rs->stats = res;
	return SH_OK;
}

int rop_list_collections(sh_router *r, const Shoal__V1__Request *rq,
			 Shoal__V1__Response *rs, sh_arena *a, char *err,
			 size_t errlen)
{
	size_t n;
	struct call *calls = to_owners(r, rq, a, &n, true, false);
	if (!calls)
		return SH_ENOMEM;
	int rc = calls_error(r, calls, n, NULL, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__ListCollectionsResult *res = sh_arena_alloc(a, sizeof(*res));
	size_t cap = 0;
	for (size_t i = 0; i < n; i++)
		cap += calls[i].resp->list_collections->n_collections;
	if (!res)
		return SH_ENOMEM;
	shoal__v1__list_collections_result__init(res);
	res->collections = sh_arena_alloc(a, (cap ? cap : 1) * sizeof(void *));
	if (!res->collections)
		return SH_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const Shoal__V1__ListCollectionsResult *nl =
		    calls[i].resp->list_collections;
		for (size_t c = 0; c < nl->n_collections; c++) {
			Shoal__V1__CollectionInfo *x = nl->collections[c],
						  *y = NULL;
			for (size_t j = 0; j < res->n_collections && !y; j++)
				if (!strcmp(res->collections[j]->config->name,
					    x->config->name))
					y = res->collections[j];
			if (!y) {
				y = sh_arena_alloc(a, sizeof(*y));
				if (!y)
					return SH_ENOMEM;
				*y = *x;
				y->points = 0;
				res->collections[res->n_collections++] = y;
			}
			y->points += x->points;
		}
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_LIST_COLLECTIONS;
	rs->list_collections = res;
	return SH_OK;
}

/* Create and drop go to every node of the map. A node that already has
 * (create) or no longer has (drop) the collection counts as done, so a
 * retry completes a half-done change; when every node says so, that is the
 * answer. */
static int all_nodes_ddl(sh_router *r, const Shoal__V1__Request *rq,
			 sh_arena *a, int done_code, char *err, size_t errlen)
{
	size_t n;
	struct call *calls = to_owners(r, rq, a, &n, true, true);
	if (!calls)
		return SH_ENOMEM;
	int ok_codes[] = {done_code, 0};
	int rc = calls_error(r, calls, n, ok_codes, err, errlen);
	if (rc)
		return rc;
	size_t done = 0;
	for (size_t i = 0; i < n; i++)
		done += (int)calls[i].resp->code == done_code;
	if (n && done == n)
		return calls_error(r, calls, 1, NULL, err, errlen);
	return SH_OK;
}

int rop_create_collection(sh_router *r, const Shoal__V1__Request *rq,
			  Shoal__V1__Response *rs, sh_arena *a, char *err,
			  size_t errlen)
{
	int rc = all_nodes_ddl(r, rq, a, SH_EEXIST, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__CreateCollectionResult *res =
	    sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__create_collection_result__init(res);
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_CREATE_COLLECTION;
	rs->create_collection = res;
	sh_info("router", "collection %s created on every node",
		rq->create_collection->config->name);
	return SH_OK;
}

int rop_drop_collection(sh_router *r, const Shoal__V1__Request *rq,
			Shoal__V1__Response *rs, sh_arena *a, char *err,
			size_t errlen)
{
	int rc = all_nodes_ddl(r, rq, a, SH_ENOCOLLECTION, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__DropCollectionResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__drop_collection_result__init(res);
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_DROP_COLLECTION;
	rs->drop_collection = res;
	sh_info("router", "collection %s dropped on every node",
		rq->drop_collection->name);
	return SH_OK;
}
