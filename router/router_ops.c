/* The router's data operations: split by owner or fan out to every node,
 * then merge. See router.h. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pid.h"
#include "route.h"
#include "router_impl.h"
#include "slots.h"

/* ---- Writes and gets: items by owner -------------------------------------
 */

/* The per-point statuses of a write in request order, from the owners'
 * answers; points still refused at the deadline get EMOVED. Returns the
 * first failure (SH_OK when every owner acknowledged its part). */
static int merge_statuses(sh_router *r, const struct routed *rt,
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
	int rc = SH_OK;
	for (size_t k = 0; k < rt->ng; k++) {
		struct call *c = rt->g[k].c;
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
			if (rc == SH_OK)
				rc = calls_error(r, c, 1, NULL, err, errlen);
		}
		for (size_t i = 0; i < rt->g[k].n; i++) {
			size_t p = rt->g[k].items[i];
			if (nw && i < nw->n_statuses) {
				st[p] = nw->statuses[i];
				continue;
			}
			Shoal__V1__PointStatus *s =
			    sh_arena_alloc(a, sizeof(*s));
			if (!s)
				return SH_ENOMEM;
			shoal__v1__point_status__init(s);
			s->id = ids[p];
			s->code =
			    (Shoal__V1__ErrorCode)(c->rc ? c->rc
						   : nw	 ? SH_EIO
							 : (int)c->resp->code);
			s->message = (char *)(why ? why : "");
			st[p] = s;
		}
	}
	if (rt->nleft) {
		const char *why =
		    sh_arena_strndup(a, rt->left_msg, strlen(rt->left_msg));
		for (size_t i = 0; i < rt->nleft; i++) {
			size_t p = rt->left[i];
			Shoal__V1__PointStatus *s =
			    sh_arena_alloc(a, sizeof(*s));
			if (!s)
				return SH_ENOMEM;
			shoal__v1__point_status__init(s);
			s->id = ids[p];
			s->code = SHOAL__V1__ERROR_CODE__EMOVED;
			s->message = (char *)(why ? why : "");
			st[p] = s;
		}
		if (rc == SH_OK)
			rc = sh_errf(err, errlen, SH_EMOVED,
				     "%zu points were refused until the "
				     "deadline while their slots move (%s); "
				     "retry",
				     rt->nleft, rt->left_msg);
	}
	for (size_t p = 0; p < n; p++) {
		if (!st[p])
			return SH_ENOMEM;
		if (st[p]->code == SHOAL__V1__ERROR_CODE__OK)
			w->applied++;
		else if (st[p]->code == SHOAL__V1__ERROR_CODE__ESTALE ||
			 st[p]->code == SHOAL__V1__ERROR_CODE__ENOTFOUND)
			w->ignored++;
	}
	*out = w;
	return rc;
}

/* A write of n points (ids[i] the i-th's id): routed by id, each node's
 * share built by build(ctx, ...), the per-point statuses merged into *w in
 * the request's order. Returns the merge's code; *w is NULL only when
 * there is no result at all (the code says why). */
static int route_write(sh_router *r, const Shoal__V1__Request *rq,
		       Shoal__V1__PointId **ids, size_t n, bool deletes,
		       route_sub_fn build, void *ctx, sh_arena *a,
		       Shoal__V1__WriteResult **w, char *err, size_t errlen)
{
	struct routed rt;
	*w = NULL;
	if (route_items(r, rq, ids, n, true, build, ctx, a, &rt))
		return SH_ENOMEM;
	int rc = merge_statuses(r, &rt, ids, n, deletes, a, w, err, errlen);
	return *w || rc ? rc : SH_ENOMEM;
}

static bool upsert_sub(void *ctx, struct call *c, const size_t *items, size_t n,
		       sh_arena *a)
{
	const Shoal__V1__UpsertRequest *u = ctx;
	Shoal__V1__UpsertRequest *sub = sh_arena_alloc(a, sizeof(*sub));
	Shoal__V1__Point **pts = sh_arena_alloc(a, n * sizeof(*pts));
	if (!sub || !pts)
		return false;
	shoal__v1__upsert_request__init(sub);
	sub->collection = u->collection;
	for (size_t i = 0; i < n; i++)
		pts[i] = u->points[items[i]];
	sub->points = pts;
	sub->n_points = n;
	c->rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
	c->rq.upsert = sub;
	return true;
}

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
	Shoal__V1__WriteResult *w = NULL;
	int rc = route_write(r, rq, ids, n, false, upsert_sub, (void *)u, a, &w,
			     err, errlen);
	if (!w)
		return rc;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_UPSERT;
	rs->upsert = w;
	return rc;
}

static bool delete_sub(void *ctx, struct call *c, const size_t *items, size_t n,
		       sh_arena *a)
{
	const Shoal__V1__DeleteRequest *d = ctx;
	Shoal__V1__DeleteRequest *sub = sh_arena_alloc(a, sizeof(*sub));
	Shoal__V1__PointRefs *sr = sh_arena_alloc(a, sizeof(*sr));
	Shoal__V1__PointRef **pr = sh_arena_alloc(a, n * sizeof(*pr));
	if (!sub || !sr || !pr)
		return false;
	shoal__v1__delete_request__init(sub);
	shoal__v1__point_refs__init(sr);
	for (size_t i = 0; i < n; i++)
		pr[i] = d->ids->refs[items[i]];
	sr->refs = pr;
	sr->n_refs = n;
	sub->collection = d->collection;
	sub->selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS;
	sub->ids = sr;
	c->rq.op_case = SHOAL__V1__REQUEST__OP_DELETE;
	c->rq.delete_ = sub;
	return true;
}

static int delete_by_filter(sh_router *r, const Shoal__V1__Request *rq,
			    Shoal__V1__Response *rs, sh_arena *a, char *err,
			    size_t errlen);

int rop_delete(sh_router *r, const Shoal__V1__Request *rq,
	       Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__DeleteRequest *d = rq->delete_;
	if (d->selector_case == SHOAL__V1__DELETE_REQUEST__SELECTOR_FILTER)
		return delete_by_filter(r, rq, rs, a, err, errlen);
	const Shoal__V1__PointRefs *refs = d->ids;
	size_t n = refs->n_refs;
	Shoal__V1__PointId **ids =
	    sh_arena_alloc(a, (n ? n : 1) * sizeof(*ids));
	if (!ids)
		return SH_ENOMEM;
	for (size_t i = 0; i < n; i++)
		ids[i] = refs->refs[i]->id;
	Shoal__V1__WriteResult *w = NULL;
	int rc = route_write(r, rq, ids, n, true, delete_sub, (void *)d, a, &w,
			     err, errlen);
	if (!w)
		return rc;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_DELETE;
	rs->delete_ = w;
	return rc;
}

static int id_cmp(const Shoal__V1__PointId *x, const Shoal__V1__PointId *y);

static bool get_sub(void *ctx, struct call *c, const size_t *items, size_t n,
		    sh_arena *a)
{
	const Shoal__V1__GetRequest *gr = ctx;
	Shoal__V1__GetRequest *sub = sh_arena_alloc(a, sizeof(*sub));
	Shoal__V1__PointId **ids = sh_arena_alloc(a, n * sizeof(*ids));
	if (!sub || !ids)
		return false;
	*sub = *gr;
	for (size_t i = 0; i < n; i++)
		ids[i] = gr->ids[items[i]];
	sub->ids = ids;
	sub->n_ids = n;
	c->rq.op_case = SHOAL__V1__REQUEST__OP_GET;
	c->rq.get = sub;
	return true;
}

int rop_get(sh_router *r, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	    sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__GetRequest *gr = rq->get;
	struct routed rt;
	if (route_items(r, rq, gr->ids, gr->n_ids, false, get_sub, (void *)gr,
			a, &rt))
		return SH_ENOMEM;
	for (size_t k = 0; k < rt.ng; k++) {
		int rc = calls_error(r, rt.g[k].c, 1, NULL, err, errlen);
		if (rc)
			return rc;
	}
	if (rt.nleft)
		return sh_errf(err, errlen, SH_EMOVED,
			       "%zu ids were refused until the deadline while "
			       "their slots move (%s); retry",
			       rt.nleft, rt.left_msg);
	size_t total = 0;
	for (size_t k = 0; k < rt.ng; k++)
		total +=
		    rt.g[k].c->resp->get ? rt.g[k].c->resp->get->n_points : 0;
	Shoal__V1__GetResult *res = sh_arena_alloc(a, sizeof(*res));
	Shoal__V1__Point **pts =
	    sh_arena_alloc(a, (total ? total : 1) * sizeof(*pts));
	/* Each node answers its ids in the order asked, leaving out the
	 * missing ones: put them back in the request's order. */
	Shoal__V1__Point **at =
	    sh_arena_alloc(a, (gr->n_ids ? gr->n_ids : 1) * sizeof(*at));
	if (!res || !pts || !at)
		return SH_ENOMEM;
	memset(at, 0, (gr->n_ids ? gr->n_ids : 1) * sizeof(*at));
	for (size_t k = 0; k < rt.ng; k++) {
		const Shoal__V1__GetResult *gk = rt.g[k].c->resp->get;
		size_t j = 0;
		for (size_t i = 0; gk && i < rt.g[k].n && j < gk->n_points;
		     i++) {
			size_t p = rt.g[k].items[i];
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
	return SH_OK;
}

/* Fans one request out to every node (all: of the map; else those that own
 * a slot) and keeps the answers until the arena is freed. */
static struct call *to_owners(sh_router *r, const Shoal__V1__Request *rq,
			      sh_arena *a, size_t *n, bool all, bool write)
{
	int idx[SH_MAP_MAX_NODES];
	*n = all ? router_all_nodes(r, idx) : router_owning_nodes(r, idx);
	struct call *calls = route_keep_calls(a, *n);
	if (!calls)
		return NULL;
	for (size_t i = 0; i < *n; i++) {
		call_init(&calls[i], idx[i], rq);
		calls[i].rq.op_case = rq->op_case;
		/* the op union: every member is a pointer at one place */
		calls[i].rq.search = rq->search;
	}
	fanout(r, calls, *n, (int)rq->timeout_ms, write);
	return a->oom ? NULL : calls;
}

/* ---- Searches and counts: slots by owner, with exact coverage -------------
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

static bool search_sub(void *ctx, struct call *c, Shoal__V1__SlotSet *only,
		       sh_arena *a)
{
	const Shoal__V1__SearchRequest *s = ctx;
	Shoal__V1__SearchRequest *sub = sh_arena_alloc(a, sizeof(*sub));
	if (!sub)
		return false;
	*sub = *s;
	sub->only_slots = only;
	c->rq.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
	c->rq.search = sub;
	return true;
}

static const Shoal__V1__SlotSet *search_covered(const Shoal__V1__Response *rs)
{
	return rs->search ? rs->search->covered : NULL;
}

static bool count_sub(void *ctx, struct call *c, Shoal__V1__SlotSet *only,
		      sh_arena *a)
{
	const Shoal__V1__CountRequest *s = ctx;
	Shoal__V1__CountRequest *sub = sh_arena_alloc(a, sizeof(*sub));
	if (!sub)
		return false;
	*sub = *s;
	sub->only_slots = only;
	c->rq.op_case = SHOAL__V1__REQUEST__OP_COUNT;
	c->rq.count = sub;
	return true;
}

static const Shoal__V1__SlotSet *count_covered(const Shoal__V1__Response *rs)
{
	return rs->count ? rs->count->covered : NULL;
}

/* Whether a slot-routed read may answer: every slot covered exactly once
 * (each slot is asked of one node at a time, and a node answers only for
 * slots it was asked), or, when nodes did not answer, enough of them for
 * min_coverage. Otherwise an error naming what is missing. */
static int coverage_verdict(sh_router *r, const struct slot_routed *sr,
			    double min_coverage, bool *partial, char *err,
			    size_t errlen)
{
	char range[32], name[300];
	*partial = false;
	if (sr->verdict)
		return calls_error(r, sr->verdict, 1, NULL, err, errlen);
	if (route_any(sr->uncovered)) {
		atomic_fetch_add(&r->searches_failed, 1);
		return sh_errf(
		    err, errlen, SH_EIO,
		    "slots %s were covered by no node before the "
		    "deadline (a slot move in flight?); retry",
		    route_range_str(sr->uncovered, range, sizeof(range)));
	}
	if (route_any(sr->lost)) {
		size_t asked = sr->asked ? sr->asked : 1;
		if (min_coverage <= 0 ||
		    (double)sr->answered < min_coverage * (double)asked) {
			atomic_fetch_add(&r->searches_failed, 1);
			const struct call *c = sr->first_lost;
			return sh_errf(
			    err, errlen, c->rc,
			    "%s did not answer: %s (%zu of %zu nodes "
			    "answered%s)",
			    router_node_name(r, c->node, name, sizeof(name)),
			    c->err, sr->answered, sr->asked,
			    min_coverage > 0 ? ", below min_coverage" : "");
		}
		atomic_fetch_add(&r->searches_partial, 1);
		*partial = true;
	}
	return SH_OK;
}

int rop_search(sh_router *r, const Shoal__V1__Request *rq,
	       Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__SearchRequest *s = rq->search;
	const uint64_t *want = NULL;
	uint64_t only[SH_SLOTS / 64];
	if (s->only_slots) { /* a router behind a router */
		sh_wire_slots_from_set(s->only_slots, only);
		want = only;
	}
	struct slot_routed sr;
	if (route_slots(r, rq, false, want, search_sub, search_covered,
			(void *)s, a, &sr))
		return SH_ENOMEM;
	bool partial;
	int rc =
	    coverage_verdict(r, &sr, s->min_coverage, &partial, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__SearchResult *res = sh_arena_alloc(a, sizeof(*res));
	size_t nq = s->n_queries, k = s->k ? s->k : 10;
	if (!res)
		return SH_ENOMEM;
	shoal__v1__search_result__init(res);
	res->results = sh_arena_alloc(a, (nq ? nq : 1) * sizeof(void *));
	if (!res->results)
		return SH_ENOMEM;
	uint64_t all[SH_SLOTS / 64];
	memset(all, 0, sizeof(all));
	for (size_t i = 0; i < sr.nans; i++)
		for (size_t w = 0; w < SH_SLOTS / 64; w++)
			all[w] |= sr.ans[i].covered[w];
	for (size_t q = 0; q < nq; q++) {
		size_t total = 0;
		for (size_t i = 0; i < sr.nans; i++) {
			const Shoal__V1__SearchResult *ns =
			    sr.ans[i].c->resp->search;
			if (ns && q < ns->n_results)
				total += ns->results[q]->n_hits;
		}
		Shoal__V1__QueryHits *qh = sh_arena_alloc(a, sizeof(*qh));
		Shoal__V1__SearchStats *st = sh_arena_alloc(a, sizeof(*st));
		Shoal__V1__Hit **hits =
		    sh_arena_alloc(a, (total ? total : 1) * sizeof(*hits));
		if (!qh || !st || !hits)
			return SH_ENOMEM;
		shoal__v1__query_hits__init(qh);
		shoal__v1__search_stats__init(st);
		size_t m = 0;
		for (size_t i = 0; i < sr.nans; i++) {
			const Shoal__V1__SearchResult *ns =
			    sr.ans[i].c->resp->search;
			if (!ns || q >= ns->n_results)
				continue;
			Shoal__V1__QueryHits *nq_ = ns->results[q];
			/* A hit counts only for a slot this node answered
			 * for in this request: nothing twice, nothing from a
			 * copy. */
			for (size_t h = 0; h < nq_->n_hits; h++) {
				uint16_t sl = route_slot_of(nq_->hits[h]->id);
				if ((sr.ans[i].covered[sl / 64] >> (sl % 64)) &
				    1)
					hits[m++] = nq_->hits[h];
			}
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
		qsort(hits, m, sizeof(*hits), hit_cmp);
		qh->hits = hits;
		qh->n_hits = m < k ? m : k;
		qh->stats = st;
		res->results[res->n_results++] = qh;
	}
	res->covered = sh_wire_slots_to_set(a, all);
	if (!res->covered)
		return SH_ENOMEM;
	res->nodes_answered = (uint32_t)sr.answered;
	res->nodes_asked = (uint32_t)sr.asked;
	(void)partial;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_SEARCH;
	rs->search = res;
	return SH_OK;
}

int rop_count(sh_router *r, const Shoal__V1__Request *rq,
	      Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	struct slot_routed sr;
	if (route_slots(r, rq, false, NULL, count_sub, count_covered,
			(void *)rq->count, a, &sr))
		return SH_ENOMEM;
	bool partial;
	int rc = coverage_verdict(r, &sr, 0, &partial, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__CountResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__count_result__init(res);
	res->exact = true;
	uint64_t all[SH_SLOTS / 64];
	memset(all, 0, sizeof(all));
	for (size_t i = 0; i < sr.nans; i++) {
		const Shoal__V1__CountResult *nc = sr.ans[i].c->resp->count;
		res->count += nc->count;
		res->exact &= nc->exact;
		for (size_t w = 0; w < SH_SLOTS / 64; w++)
			all[w] |= sr.ans[i].covered[w];
	}
	res->covered = sh_wire_slots_to_set(a, all);
	if (!res->covered)
		return SH_ENOMEM;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_COUNT;
	rs->count = res;
	return SH_OK;
}

/* ---- Deletes by filter: every slot by its owner ---------------------------
 */

static bool dbf_sub(void *ctx, struct call *c, Shoal__V1__SlotSet *only,
		    sh_arena *a)
{
	const Shoal__V1__DeleteRequest *d = ctx;
	Shoal__V1__DeleteRequest *sub = sh_arena_alloc(a, sizeof(*sub));
	if (!sub)
		return false;
	*sub = *d;
	sub->only_slots = only;
	c->rq.op_case = SHOAL__V1__REQUEST__OP_DELETE;
	c->rq.delete_ = sub;
	return true;
}

static int delete_by_filter(sh_router *r, const Shoal__V1__Request *rq,
			    Shoal__V1__Response *rs, sh_arena *a, char *err,
			    size_t errlen)
{
	struct slot_routed sr;
	if (route_slots(r, rq, true, NULL, dbf_sub, NULL, (void *)rq->delete_,
			a, &sr))
		return SH_ENOMEM;
	int rc = SH_OK;
	char range[32];
	if (sr.verdict)
		rc = calls_error(r, sr.verdict, 1, NULL, err, errlen);
	else if (sr.first_lost)
		rc = calls_error(r, sr.first_lost, 1, NULL, err, errlen);
	else if (route_any(sr.uncovered))
		rc = sh_errf(
		    err, errlen, SH_EMOVED,
		    "slots %s were refused until the deadline while "
		    "they move; retry (deleting again is harmless)",
		    route_range_str(sr.uncovered, range, sizeof(range)));
	Shoal__V1__WriteResult *w = sh_arena_alloc(a, sizeof(*w));
	if (!w)
		return SH_ENOMEM;
	shoal__v1__write_result__init(w);
	size_t total = 0;
	for (size_t i = 0; i < sr.nans; i++)
		if (sr.ans[i].c->resp->delete_)
			total += sr.ans[i].c->resp->delete_->n_statuses;
	w->statuses =
	    sh_arena_alloc(a, (total ? total : 1) * sizeof(*w->statuses));
	if (!w->statuses)
		return SH_ENOMEM;
	for (size_t i = 0; i < sr.nans; i++) {
		Shoal__V1__WriteResult *nw = sr.ans[i].c->resp->delete_;
		if (!nw)
			continue;
		for (size_t j = 0; j < nw->n_statuses; j++)
			w->statuses[w->n_statuses++] = nw->statuses[j];
		w->applied += nw->applied;
		w->ignored += nw->ignored;
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_DELETE;
	rs->delete_ = w;
	return rc;
}

/* ---- Scroll: in slot order, page by page from each slot's owner ----------
 */

/* Router scroll cursors: [2][slot u16 BE][the owner's cursor]. A node's
 * cursor starts [1][slot u16 BE] (node_ops.c), so the router knows where
 * a page stopped and asks that slot's owner for the next, whoever it is
 * by then: a slot that moved between two pages goes on at its new owner,
 * from the same point id (ids are in the same order on every node). */
#define RCURSOR_V 2

static bool scroll_sub(void *ctx, struct call *c, Shoal__V1__SlotSet *only,
		       sh_arena *a)
{
	Shoal__V1__ScrollRequest *sub = ctx; /* prepared by the caller */
	Shoal__V1__ScrollRequest *copy = sh_arena_alloc(a, sizeof(*copy));
	if (!copy)
		return false;
	*copy = *sub;
	copy->only_slots = only;
	c->rq.op_case = SHOAL__V1__REQUEST__OP_SCROLL;
	c->rq.scroll = copy;
	return true;
}

int rop_scroll(sh_router *r, const Shoal__V1__Request *rq,
	       Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__ScrollRequest *s = rq->scroll;
	uint32_t pos = 0; /* the slot the scroll is in */
	ProtobufCBinaryData ncur = {0, NULL};
	if (s->cursor.len) {
		const uint8_t *b = s->cursor.data;
		if (s->cursor.len < 3 || b[0] != RCURSOR_V)
			return sh_errf(err, errlen, SH_EINVAL,
				       "scroll.cursor: malformed");
		pos = (uint32_t)b[1] << 8 | b[2];
		if (pos >= SH_SLOTS)
			return sh_errf(err, errlen, SH_EINVAL,
				       "scroll.cursor: bad slot");
		ncur.data = (uint8_t *)b + 3;
		ncur.len = s->cursor.len - 3;
		if (ncur.len &&
		    (ncur.len < 3 || ncur.data[0] != 1 ||
		     ((uint32_t)ncur.data[1] << 8 | ncur.data[2]) != pos))
			return sh_errf(err, errlen, SH_EINVAL,
				       "scroll.cursor: malformed");
	}
	size_t limit = s->limit ? s->limit : 100;
	Shoal__V1__ScrollResult *res = sh_arena_alloc(a, sizeof(*res));
	Shoal__V1__Point **pts = sh_arena_alloc(a, limit * sizeof(*pts));
	if (!res || !pts)
		return SH_ENOMEM;
	shoal__v1__scroll_result__init(res);
	res->points = pts;
	while (pos < SH_SLOTS && res->n_points < limit) {
		/* The run of slots from pos that one node owns now. */
		pthread_rwlock_rdlock(&r->lock);
		uint32_t owner = r->map->owner[pos], end = pos;
		while (end + 1 < SH_SLOTS && r->map->owner[end + 1] == owner)
			end++;
		pthread_rwlock_unlock(&r->lock);
		uint64_t want[SH_SLOTS / 64];
		memset(want, 0, sizeof(want));
		for (uint32_t x = pos; x <= end; x++)
			want[x / 64] |= 1ull << (x % 64);
		Shoal__V1__ScrollRequest sub = *s;
		sub.cursor = ncur;
		sub.limit = (uint32_t)(limit - res->n_points);
		struct slot_routed sr;
		if (route_slots(r, rq, false, want, scroll_sub, NULL, &sub, a,
				&sr))
			return SH_ENOMEM;
		char range[32];
		if (sr.verdict)
			return calls_error(r, sr.verdict, 1, NULL, err, errlen);
		if (sr.first_lost)
			return calls_error(r, sr.first_lost, 1, NULL, err,
					   errlen);
		if (route_any(sr.uncovered) || sr.nans == 0)
			return sh_errf(
			    err, errlen, SH_EMOVED,
			    "scroll: slots %s were refused until "
			    "the deadline while they move; retry "
			    "with the same cursor",
			    route_range_str(want, range, sizeof(range)));
		/* A run that moved to several owners meanwhile was asked
		 * of each in one round: take the first answer, the rest
		 * comes with the next page (same cursor, same order). */
		const Shoal__V1__ScrollResult *nr = NULL;
		for (size_t i = 0; i < sr.nans && !nr; i++)
			if ((sr.ans[i].covered[pos / 64] >> (pos % 64)) & 1)
				nr = sr.ans[i].c->resp->scroll;
		if (!nr)
			return sh_errf(err, errlen, SH_EIO,
				       "scroll: no page for slot %u", pos);
		for (size_t i = 0; i < nr->n_points && res->n_points < limit;
		     i++)
			pts[res->n_points++] = nr->points[i];
		if (nr->next_cursor.len >= 3 && nr->next_cursor.data[0] == 1) {
			ncur = nr->next_cursor;
			pos = (uint32_t)ncur.data[1] << 8 | ncur.data[2];
			break;
		}
		if (sr.nans > 1)
			break; /* see above: go on from pos next page */
		pos = end + 1;
		ncur.data = NULL;
		ncur.len = 0;
	}
	if (pos < SH_SLOTS) {
		uint8_t *b = sh_arena_alloc(a, 3 + ncur.len);
		if (!b)
			return SH_ENOMEM;
		b[0] = RCURSOR_V;
		b[1] = (uint8_t)(pos >> 8);
		b[2] = (uint8_t)pos;
		if (ncur.len)
			memcpy(b + 3, ncur.data, ncur.len);
		res->next_cursor.data = b;
		res->next_cursor.len = 3 + ncur.len;
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_SCROLL;
	rs->scroll = res;
	return SH_OK;
}

/* ---- Stats, collections ---------------------------------------------------
 */

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
	if (rq->stats->with_slot_counts) {
		/* Each slot as its owner in the map counts it (another node
		 * may hold a copy mid-move). */
		uint64_t *cnt = sh_arena_alloc(a, SH_SLOTS * sizeof(*cnt));
		if (!cnt)
			return SH_ENOMEM;
		pthread_rwlock_rdlock(&r->lock);
		for (size_t i = 0; i < n; i++) {
			const Shoal__V1__StatsResult *ns = calls[i].resp->stats;
			uint32_t id = r->nodes[calls[i].node].id;
			for (size_t j = 0; j < ns->n_slot_counts; j++) {
				const Shoal__V1__SlotCount *sc =
				    ns->slot_counts[j];
				if (sc->slot < SH_SLOTS &&
				    r->map->owner[sc->slot] == id)
					cnt[sc->slot] += sc->points;
			}
		}
		pthread_rwlock_unlock(&r->lock);
		size_t nz = 0;
		for (uint32_t x = 0; x < SH_SLOTS; x++)
			nz += cnt[x] != 0;
		res->slot_counts =
		    sh_arena_alloc(a, (nz ? nz : 1) * sizeof(void *));
		if (!res->slot_counts)
			return SH_ENOMEM;
		for (uint32_t x = 0; x < SH_SLOTS; x++) {
			if (!cnt[x])
				continue;
			Shoal__V1__SlotCount *sc =
			    sh_arena_alloc(a, sizeof(*sc));
			if (!sc)
				return SH_ENOMEM;
			shoal__v1__slot_count__init(sc);
			sc->slot = x;
			sc->points = cnt[x];
			res->slot_counts[res->n_slot_counts++] = sc;
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
