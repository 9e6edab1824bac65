/* The shard node's operations: one handler per request kind. Each checks
 * what depends on the node (collection, dimension, slot ownership; the wire
 * layer has checked the rest), calls the partition, and builds the result
 * from objects of the request's arena. See node.h. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "node_impl.h"
#include "shoal_config.h"

/* ---- Helpers ------------------------------------------------------------- */

static int lookup(sh_node *n, const char *name, struct coll_entry **e,
		  char *err, size_t errlen)
{
	*e = coll_get(n, name ? name : "");
	if (!*e)
		return sh_errf(err, errlen, SH_ENOCOLLECTION,
			       "collection \"%s\" does not exist",
			       name ? name : "");
	return SH_OK;
}

static Shoal__V1__PointId *pid_out(sh_arena *a, const sh_pid *id)
{
	Shoal__V1__PointId *o = sh_arena_alloc(a, sizeof(*o));
	char *buf = sh_arena_alloc(a, SH_PID_MAX_STR + 1);
	if (!o || !buf)
		return NULL;
	sh_wire_pid_to_proto(id, o, buf);
	return o;
}

/* Every point's slot must be served (for writes: owned, not fenced, not
 * handed over): a request is refused whole otherwise. */
static int check_slot(sh_node *n, const sh_pid *id, bool write,
		      const char *what, size_t i, char *err, size_t errlen)
{
	return node_check_slot(n, sh_slot_of(id), write, what, i, err, errlen);
}

bool node_needs_slot_check(sh_node *n, struct coll_entry *e,
			   const uint64_t *allowed)
{
	pthread_rwlock_rdlock(&n->slock);
	bool imp = false;
	for (size_t i = 0; i < SH_SLOT_WORDS && !imp; i++)
		imp = (n->slots.importing[i] & ~allowed[i]) != 0;
	pthread_rwlock_unlock(&n->slock);
	return imp || sh_partition_outside_slots(e->p, allowed);
}

static Shoal__V1__WriteResult *write_result(sh_arena *a, size_t n)
{
	Shoal__V1__WriteResult *w = sh_arena_alloc(a, sizeof(*w));
	if (!w)
		return NULL;
	shoal__v1__write_result__init(w);
	w->statuses = n ? sh_arena_alloc(a, n * sizeof(*w->statuses)) : NULL;
	if (n && !w->statuses)
		return NULL;
	return w;
}

static bool add_status(sh_arena *a, Shoal__V1__WriteResult *w, const sh_pid *id,
		       int code)
{
	Shoal__V1__PointStatus *s = sh_arena_alloc(a, sizeof(*s));
	if (!s || !(s->id = pid_out(a, id)))
		return false;
	Shoal__V1__PointId *keep = s->id;
	shoal__v1__point_status__init(s);
	s->id = keep;
	s->code = (Shoal__V1__ErrorCode)code;
	w->statuses[w->n_statuses++] = s;
	if (code == SH_OK)
		w->applied++;
	else if (code == SH_ESTALE || code == SH_ENOTFOUND)
		w->ignored++;
	return true;
}

/* The wire's filter as an sh_filter (NULL when none). */
static int filter_in(const Shoal__V1__Filter *in, sh_filter **out, char *err,
		     size_t errlen)
{
	*out = NULL;
	if (!in)
		return SH_OK;
	return sh_wire_filter_to_sh(in, out, err, errlen);
}

static const char *const metric_json[] = {"l2", "ip", "cosine"};
static const char *const storage_json[] = {"f32", "int8"};
static const char *const ptype_json[] = {"", "keyword", "integer", "float",
					 "bool"};

Shoal__V1__CollectionConfig *node_config_out(sh_arena *a,
					     const sh_store_coll *c)
{
	Shoal__V1__CollectionConfig *o = sh_arena_alloc(a, sizeof(*o));
	if (!o)
		return NULL;
	shoal__v1__collection_config__init(o);
	o->name = sh_arena_strndup(a, c->name, strlen(c->name));
	o->dim = c->params.dim;
	o->metric = c->params.metric == SH_METRIC_L2 ? SHOAL__V1__METRIC__L2
		    : c->params.metric == SH_METRIC_IP
			? SHOAL__V1__METRIC__IP
			: SHOAL__V1__METRIC__COSINE;
	o->m = c->params.m;
	o->ef_construction = c->params.ef_construction;
	o->ef_search = c->params.ef_search;
	o->storage = c->params.storage == SH_STORAGE_INT8
			 ? SHOAL__V1__STORAGE__INT8
			 : SHOAL__V1__STORAGE__F32;
	o->indexes = c->nindexes
			 ? sh_arena_alloc(a, c->nindexes * sizeof(void *))
			 : NULL;
	for (uint32_t i = 0; o->indexes && i < c->nindexes; i++) {
		Shoal__V1__PayloadIndex *pi = sh_arena_alloc(a, sizeof(*pi));
		if (!pi)
			return NULL;
		shoal__v1__payload_index__init(pi);
		pi->field = sh_arena_strndup(a, c->indexes[i].field,
					     strlen(c->indexes[i].field));
		switch (c->indexes[i].type) {
		case SH_PAYLOAD_KEYWORD:
			pi->type = SHOAL__V1__PAYLOAD_TYPE__KEYWORD;
			break;
		case SH_PAYLOAD_INTEGER:
			pi->type = SHOAL__V1__PAYLOAD_TYPE__INTEGER;
			break;
		case SH_PAYLOAD_FLOAT:
			pi->type = SHOAL__V1__PAYLOAD_TYPE__FLOAT;
			break;
		default:
			pi->type = SHOAL__V1__PAYLOAD_TYPE__BOOL;
			break;
		}
		o->indexes[o->n_indexes++] = pi;
	}
	return o->name ? o : NULL;
}

/* ---- Collections --------------------------------------------------------- */

int node_config_json(const Shoal__V1__CollectionConfig *c, char **json,
		     char *err, size_t errlen)
{
	*json = NULL;
	if (c->metric < SHOAL__V1__METRIC__L2 ||
	    c->metric > SHOAL__V1__METRIC__COSINE)
		return sh_errf(err, errlen, SH_EINVAL,
			       "config.metric: must be L2, IP or COSINE");
	if (c->storage != SHOAL__V1__STORAGE__F32 &&
	    c->storage != SHOAL__V1__STORAGE__INT8)
		return sh_errf(err, errlen, SH_EINVAL,
			       "config.storage: unknown");
	cJSON *o = cJSON_CreateObject();
	cJSON *idx = cJSON_CreateObject();
	bool ok =
	    o && idx && cJSON_AddStringToObject(o, "name", c->name) &&
	    cJSON_AddNumberToObject(o, "dim", c->dim) &&
	    cJSON_AddStringToObject(o, "metric", metric_json[c->metric - 1]) &&
	    cJSON_AddStringToObject(o, "storage", storage_json[c->storage]);
	if (ok && c->m)
		ok = cJSON_AddNumberToObject(o, "m", c->m) != NULL;
	if (ok && c->ef_construction)
		ok = cJSON_AddNumberToObject(o, "ef_construction",
					     c->ef_construction) != NULL;
	if (ok && c->ef_search)
		ok = cJSON_AddNumberToObject(o, "ef_search", c->ef_search) !=
		     NULL;
	for (size_t i = 0; ok && i < c->n_indexes; i++) {
		const Shoal__V1__PayloadIndex *pi = c->indexes[i];
		if (pi->type < SHOAL__V1__PAYLOAD_TYPE__KEYWORD ||
		    pi->type > SHOAL__V1__PAYLOAD_TYPE__BOOL) {
			cJSON_Delete(o);
			cJSON_Delete(idx);
			return sh_errf(err, errlen, SH_EINVAL,
				       "config.indexes[%zu].type: unknown", i);
		}
		if (cJSON_GetObjectItemCaseSensitive(idx, pi->field)) {
			cJSON_Delete(o);
			cJSON_Delete(idx);
			return sh_errf(err, errlen, SH_EINVAL,
				       "config.indexes[%zu]: field \"%s\" "
				       "declared twice",
				       i, pi->field);
		}
		ok = cJSON_AddStringToObject(idx, pi->field,
					     ptype_json[pi->type]) != NULL;
	}
	if (ok) {
		cJSON_AddItemToObject(o, "payload_indexes", idx);
		idx = NULL;
	}
	*json = ok ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	cJSON_Delete(idx);
	if (!*json)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	return SH_OK;
}

int op_create_collection(sh_node *n, const Shoal__V1__Request *rq,
			 Shoal__V1__Response *rs, sh_arena *a, char *err,
			 size_t errlen)
{
	char *json;
	int rc =
	    node_config_json(rq->create_collection->config, &json, err, errlen);
	if (rc)
		return rc;
	rc = node_table_create(n, json, err, errlen);
	cJSON_free(json);
	if (rc)
		return rc;
	Shoal__V1__CreateCollectionResult *res =
	    sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__create_collection_result__init(res);
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_CREATE_COLLECTION;
	rs->create_collection = res;
	return SH_OK;
}

int op_drop_collection(sh_node *n, const Shoal__V1__Request *rq,
		       Shoal__V1__Response *rs, sh_arena *a, char *err,
		       size_t errlen)
{
	int rc = node_table_drop(n, rq->drop_collection->name, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__DropCollectionResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__drop_collection_result__init(res);
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_DROP_COLLECTION;
	rs->drop_collection = res;
	return SH_OK;
}

/* Calls fn for every collection (or the one named), holding a reference. */
typedef int (*each_fn)(sh_node *n, struct coll_entry *e, void *ctx);

static int each_collection(sh_node *n, const char *only, each_fn fn, void *ctx,
			   char *err, size_t errlen)
{
	if (only && *only) {
		struct coll_entry *e;
		int rc = lookup(n, only, &e, err, errlen);
		if (rc)
			return rc;
		rc = fn(n, e, ctx);
		coll_put(e);
		return rc;
	}
	pthread_rwlock_rdlock(&n->tlock);
	int rc = SH_OK;
	for (size_t i = 0; i < n->ncolls && !rc; i++) {
		struct coll_entry *e = n->colls[i];
		pthread_rwlock_rdlock(&e->use);
		rc = fn(n, e, ctx);
		pthread_rwlock_unlock(&e->use);
	}
	pthread_rwlock_unlock(&n->tlock);
	return rc;
}

struct list_ctx {
	sh_arena *a;
	Shoal__V1__CollectionInfo **out;
	size_t n, cap;
};

static int list_one(sh_node *n, struct coll_entry *e, void *ctx)
{
	struct list_ctx *lc = ctx;
	if (lc->n == lc->cap) {
		size_t cap = lc->cap ? 2 * lc->cap : 16;
		Shoal__V1__CollectionInfo **t =
		    sh_arena_alloc(lc->a, cap * sizeof(*t));
		if (!t)
			return SH_ENOMEM;
		if (lc->n)
			memcpy(t, lc->out, lc->n * sizeof(*t));
		lc->out = t;
		lc->cap = cap;
	}
	Shoal__V1__CollectionInfo *ci = sh_arena_alloc(lc->a, sizeof(*ci));
	if (!ci)
		return SH_ENOMEM;
	shoal__v1__collection_info__init(ci);
	ci->config = node_config_out(lc->a, sh_partition_coll(e->p));
	if (!ci->config)
		return SH_ENOMEM;
	sh_hnsw_info info;
	sh_partition_info(e->p, &info);
	ci->points = info.live;
	lc->out[lc->n++] = ci;
	return SH_OK;
}

int op_list_collections(sh_node *n, const Shoal__V1__Request *rq,
			Shoal__V1__Response *rs, sh_arena *a, char *err,
			size_t errlen)
{
	struct list_ctx lc = {.a = a};
	int rc = each_collection(n, NULL, list_one, &lc, err, errlen);
	if (rc)
		return rc;
	Shoal__V1__ListCollectionsResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__list_collections_result__init(res);
	res->collections = lc.out;
	res->n_collections = lc.n;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_LIST_COLLECTIONS;
	rs->list_collections = res;
	return SH_OK;
}

/* ---- Writes -------------------------------------------------------------- */

int node_points_in(sh_node *n, struct coll_entry *e, const char *what,
		   Shoal__V1__Point *const *in, size_t np, uint64_t move_id,
		   bool import, sh_partition_point *pts, char *err,
		   size_t errlen)
{
	uint32_t dim = sh_partition_coll(e->p)->params.dim;
	for (size_t i = 0; i < np; i++) {
		const Shoal__V1__Point *p = in[i];
		if (sh_wire_pid_from_proto(p->id, &pts[i].id) != SH_OK)
			return sh_errf(err, errlen, SH_EINVAL,
				       "%s[%zu].id: invalid", what, i);
		if (p->n_vector != dim)
			return sh_errf(err, errlen, SH_EDIM,
				       "%s[%zu].vector: %zu values, "
				       "collection %s has dimension %u",
				       what, i, p->n_vector, e->name, dim);
		int rc = import ? node_check_import(n, &pts[i].id, move_id,
						    what, i, err, errlen)
				: check_slot(n, &pts[i].id, true, what, i, err,
					     errlen);
		if (rc)
			return rc;
		pts[i].vec = p->vector;
		pts[i].vec_len = p->n_vector;
		size_t plen = p->payload_json ? strlen(p->payload_json) : 0;
		pts[i].payload_json = plen ? p->payload_json : NULL;
		pts[i].payload_len = plen;
		pts[i].version = p->version;
	}
	return SH_OK;
}

int op_upsert(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	      sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__UpsertRequest *r = rq->upsert;
	struct coll_entry *e;
	int rc = lookup(n, r->collection, &e, err, errlen);
	if (rc)
		return rc;
	size_t np = r->n_points;
	sh_partition_point *pts =
	    sh_arena_alloc(a, (np ? np : 1) * sizeof(*pts));
	int *st = sh_arena_alloc(a, (np ? np : 1) * sizeof(*st));
	if (!pts || !st) {
		coll_put(e);
		return SH_ENOMEM;
	}
	for (size_t i = 0; i < np; i++)
		st[i] = -1; /* not reached */
	/* From the slot check to the capture: see wgate. */
	pthread_rwlock_rdlock(&n->wgate);
	rc = node_points_in(n, e, "upsert.points", r->points, np, 0, false, pts,
			    err, errlen);
	if (rc == SH_OK) {
		rc = sh_partition_upsert(e->p, pts, np, st);
		for (size_t i = 0; i < np; i++)
			if (st[i] == SH_OK)
				node_capture(n, e->id, &pts[i].id);
	} else {
		np = 0; /* refused whole */
	}
	pthread_rwlock_unlock(&n->wgate);
	coll_put(e);
	if (np == 0)
		return rc;
	/* Nothing applied (validation), or nothing stored (the commit
	 * failed): the request failed whole. */
	if (rc != SH_OK && (st[0] == -1 || rc == SH_EIO))
		return sh_errf(
		    err, errlen, rc, "upsert into %s: %s", r->collection,
		    rc == SH_EIO ? sh_store_last_error() : sh_strerror(rc));
	Shoal__V1__WriteResult *w = write_result(a, np);
	if (!w)
		return SH_ENOMEM;
	for (size_t i = 0; i < np; i++)
		if (!add_status(a, w, &pts[i].id, st[i] == -1 ? rc : st[i]))
			return SH_ENOMEM;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_UPSERT;
	rs->upsert = w;
	return SH_OK;
}

/* Collects the ids of the points passing a filter (delete by filter). */
struct ids_ctx {
	const uint64_t *allowed; /* the slots it may delete in */
	sh_pid *ids;
	size_t n_ids, cap;
};

static int collect_id(void *ctx, const sh_pid *id, uint64_t version,
		      const char *payload, size_t len)
{
	struct ids_ctx *ic = ctx;
	if (!slot_bit(ic->allowed, sh_slot_of(id)))
		return SH_PARTITION_SCROLL_SKIP;
	if (ic->n_ids == ic->cap) {
		size_t cap = ic->cap ? 2 * ic->cap : 256;
		sh_pid *t = realloc(ic->ids, cap * sizeof(*t));
		if (!t)
			return SH_ENOMEM;
		ic->ids = t;
		ic->cap = cap;
	}
	ic->ids[ic->n_ids++] = *id;
	return 0;
}

int op_delete(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	      sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__DeleteRequest *r = rq->delete_;
	struct coll_entry *e;
	int rc = lookup(n, r->collection, &e, err, errlen);
	if (rc)
		return rc;
	sh_pid *ids = NULL;
	uint64_t *vers = NULL;
	size_t nid = 0;
	/* From the slot checks to the capture: see wgate. */
	pthread_rwlock_rdlock(&n->wgate);
	if (r->selector_case == SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS) {
		nid = r->ids->n_refs;
		ids = malloc((nid ? nid : 1) * sizeof(*ids));
		vers = malloc((nid ? nid : 1) * sizeof(*vers));
		if (!ids || !vers) {
			rc = SH_ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < nid && !rc; i++) {
			if (sh_wire_pid_from_proto(r->ids->refs[i]->id,
						   &ids[i]) != SH_OK) {
				rc = sh_errf(err, errlen, SH_EINVAL,
					     "delete.ids[%zu]: invalid", i);
				break;
			}
			vers[i] = r->ids->refs[i]->version;
			rc = check_slot(n, &ids[i], true, "delete.ids", i, err,
					errlen);
		}
	} else {
		sh_filter *f = NULL;
		uint64_t allowed[SH_SLOT_WORDS];
		rc = filter_in(r->filter, &f, err, errlen);
		if (rc == SH_OK && (!f || sh_filter_is_empty(f)))
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "delete.filter: empty (drop the "
				     "collection to delete everything)");
		/* Every slot the router asks for must be writable here, or
		 * nothing is deleted (it retries where they went). */
		if (rc == SH_OK)
			rc = node_check_slots(n, r->only_slots, true,
					      "delete.only_slots", err, errlen);
		node_serving(n, r->only_slots, true, allowed);
		struct ids_ctx ic = {.allowed = allowed};
		sh_partition_cursor cur = {0};
		while (rc == SH_OK && !cur.done)
			rc = sh_partition_scroll(e->p, f, &cur, 4096,
						 collect_id, &ic);
		sh_filter_free(f);
		ids = ic.ids;
		nid = ic.n_ids;
		if (rc == SH_OK && nid) {
			vers = malloc(nid * sizeof(*vers));
			if (!vers)
				rc = SH_ENOMEM;
			for (size_t i = 0; vers && i < nid; i++)
				vers[i] = r->filter_version;
		}
		if (rc && !*err)
			sh_errf(err, errlen, rc, "delete by filter: %s",
				sh_strerror(rc));
	}
	if (rc)
		goto out;
	int *st = sh_arena_alloc(a, (nid ? nid : 1) * sizeof(*st));
	Shoal__V1__WriteResult *w = write_result(a, nid);
	if (!st || !w) {
		rc = SH_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nid; i++)
		st[i] = -1; /* not reached */
	/* One batch per request, but a delete by filter can match more
	 * than a request may name: it commits in chunks of max_ids. */
	size_t chunk = n->o.limits.max_ids ? n->o.limits.max_ids : nid;
	for (size_t off = 0; off < nid && !rc; off += chunk) {
		size_t m = nid - off < chunk ? nid - off : chunk;
		rc = sh_partition_delete(e->p, ids + off, vers + off, m,
					 st + off);
		if (rc)
			sh_errf(err, errlen, rc, "delete from %s: %s",
				r->collection,
				rc == SH_EIO ? sh_store_last_error()
					     : sh_strerror(rc));
	}
	for (size_t i = 0; i < nid; i++)
		if (st[i] == SH_OK || st[i] == SH_ENOTFOUND)
			node_capture(n, e->id, &ids[i]);
	for (size_t i = 0; !rc && i < nid; i++)
		if (!add_status(a, w, &ids[i], st[i]))
			rc = SH_ENOMEM;
	if (!rc) {
		rs->result_case = SHOAL__V1__RESPONSE__RESULT_DELETE;
		rs->delete_ = w;
	}
out:
	pthread_rwlock_unlock(&n->wgate);
	coll_put(e);
	free(ids);
	free(vers);
	return rc;
}

/* ---- Reads --------------------------------------------------------------- */

/* A Point from a record; the record's buffers are handed to the arena. */
static Shoal__V1__Point *point_out(sh_arena *a, const sh_pid *id,
				   sh_partition_record *r, uint32_t dim,
				   bool with_payload, bool with_vector)
{
	Shoal__V1__Point *p = sh_arena_alloc(a, sizeof(*p));
	Shoal__V1__PointId *pid = pid_out(a, id);
	char *payload = r->payload;
	float *vec = r->vector;
	r->payload = NULL;
	r->vector = NULL;
	bool ok = sh_arena_own(a, payload) & sh_arena_own(a, vec);
	if (!p || !pid || !ok)
		return NULL;
	shoal__v1__point__init(p);
	p->id = pid;
	p->version = r->version;
	if (with_payload && payload)
		p->payload_json = payload;
	if (with_vector && vec) {
		p->vector = vec;
		p->n_vector = dim;
	}
	return p;
}

int op_get(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	   sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__GetRequest *r = rq->get;
	struct coll_entry *e;
	int rc = lookup(n, r->collection, &e, err, errlen);
	if (rc)
		return rc;
	uint32_t dim = sh_partition_coll(e->p)->params.dim;
	Shoal__V1__GetResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res) {
		coll_put(e);
		return SH_ENOMEM;
	}
	shoal__v1__get_result__init(res);
	res->points =
	    r->n_ids ? sh_arena_alloc(a, r->n_ids * sizeof(void *)) : NULL;
	for (size_t i = 0; i < r->n_ids && !rc; i++) {
		sh_pid id;
		if (sh_wire_pid_from_proto(r->ids[i], &id) != SH_OK) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "get.ids[%zu]: invalid", i);
			break;
		}
		if ((rc = check_slot(n, &id, false, "get.ids", i, err, errlen)))
			break;
		sh_partition_record rec;
		rc = sh_partition_get(e->p, &id, r->with_vector, &rec);
		if (rc == SH_ENOTFOUND) {
			rc = SH_OK;
			continue;
		}
		if (rc) {
			sh_errf(err, errlen, rc, "get.ids[%zu]: %s", i,
				sh_strerror(rc));
			break;
		}
		Shoal__V1__Point *p = point_out(
		    a, &id, &rec, dim, r->with_payload, r->with_vector);
		sh_partition_record_clear(&rec);
		if (!p)
			rc = SH_ENOMEM;
		else
			res->points[res->n_points++] = p;
	}
	coll_put(e);
	if (rc)
		return rc;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_GET;
	rs->get = res;
	return SH_OK;
}

static double elapsed_ms(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 +
	       (double)(t.tv_nsec - t0->tv_nsec) * 1e-6;
}

static Shoal__V1__Plan plan_out(sh_hnsw_plan p)
{
	switch (p) {
	case SH_PLAN_GRAPH:
		return SHOAL__V1__PLAN__GRAPH;
	case SH_PLAN_FILTERED_GRAPH:
		return SHOAL__V1__PLAN__FILTERED_GRAPH;
	case SH_PLAN_EXACT_SCAN:
		return SHOAL__V1__PLAN__EXACT_SCAN;
	default:
		return SHOAL__V1__PLAN__PLAN_UNSPECIFIED;
	}
}

int op_search(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	      sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__SearchRequest *r = rq->search;
	struct coll_entry *e;
	int rc = lookup(n, r->collection, &e, err, errlen);
	if (rc)
		return rc;
	const sh_store_coll *c = sh_partition_coll(e->p);
	sh_filter *f = NULL;
	sh_partition_hit *hits = NULL;
	Shoal__V1__SearchResult *res = sh_arena_alloc(a, sizeof(*res));
	size_t nq = r->n_queries;
	size_t k = r->k ? r->k : 10;
	if (!res) {
		rc = SH_ENOMEM;
		goto out;
	}
	shoal__v1__search_result__init(res);
	for (size_t q = 0; q < nq; q++)
		if (r->queries[q]->n_values != c->params.dim) {
			rc = sh_errf(err, errlen, SH_EDIM,
				     "search.queries[%zu]: %zu values, "
				     "collection %s has dimension %u",
				     q, r->queries[q]->n_values, e->name,
				     c->params.dim);
			goto out;
		}
	if ((rc = filter_in(r->filter, &f, err, errlen)))
		goto out;
	/* The slots searched: those served here, within only_slots. Points
	 * of any other slot (copies imported for a move, or left behind by
	 * one) are never returned. */
	uint64_t allowed[SH_SLOT_WORDS];
	node_serving(n, r->only_slots, false, allowed);
	const uint64_t *slots =
	    node_needs_slot_check(n, e, allowed) ? allowed : NULL;
	hits = malloc(k * sizeof(*hits));
	res->results = nq ? sh_arena_alloc(a, nq * sizeof(void *)) : NULL;
	if (!hits || (nq && !res->results)) {
		rc = SH_ENOMEM;
		goto out;
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t q = 0; q < nq && !rc; q++) {
		if (rq->timeout_ms && q > 0 &&
		    elapsed_ms(&t0) > rq->timeout_ms) {
			rc = sh_errf(err, errlen, SH_ETIMEDOUT,
				     "search: deadline of %u ms passed after "
				     "%zu of %zu queries",
				     rq->timeout_ms, q, nq);
			break;
		}
		size_t nh = 0;
		sh_hnsw_search_stats st;
		memset(&st, 0, sizeof(st));
		rc = sh_partition_search_slots(
		    e->p, r->queries[q]->values, k, r->ef, f,
		    (r->with_payload ? SH_PARTITION_WITH_PAYLOAD : 0) |
			(r->exact ? SH_PARTITION_EXACT : 0),
		    slots, hits, &nh, &st);
		if (rc) {
			sh_errf(err, errlen, rc, "search.queries[%zu]: %s", q,
				sh_strerror(rc));
			break;
		}
		Shoal__V1__QueryHits *qh = sh_arena_alloc(a, sizeof(*qh));
		Shoal__V1__SearchStats *ss = sh_arena_alloc(a, sizeof(*ss));
		if (!qh || !ss) {
			sh_partition_hits_clear(hits, nh);
			rc = SH_ENOMEM;
			break;
		}
		shoal__v1__query_hits__init(qh);
		shoal__v1__search_stats__init(ss);
		ss->plan = plan_out(f && !sh_filter_is_empty(f) &&
					    st.plan == SH_PLAN_GRAPH
					? SH_PLAN_FILTERED_GRAPH
					: st.plan);
		ss->estimated_passing = st.est_pass;
		ss->distances = st.ndist;
		ss->unindexed_filter = st.residual;
		qh->stats = ss;
		qh->hits = nh ? sh_arena_alloc(a, nh * sizeof(void *)) : NULL;
		for (size_t i = 0; i < nh; i++) {
			bool keep = slot_bit(allowed, sh_slot_of(&hits[i].id));
			char *payload = hits[i].payload;
			hits[i].payload = NULL;
			if (!sh_arena_own(a, payload) || !qh->hits) {
				rc = SH_ENOMEM;
				continue;
			}
			if (!keep || rc)
				continue;
			Shoal__V1__Hit *h = sh_arena_alloc(a, sizeof(*h));
			Shoal__V1__PointId *pid = pid_out(a, &hits[i].id);
			if (!h || !pid) {
				rc = SH_ENOMEM;
				continue;
			}
			shoal__v1__hit__init(h);
			h->id = pid;
			h->distance = hits[i].dist;
			h->version = hits[i].version;
			if (payload)
				h->payload_json = payload;
			if (r->with_vector) {
				sh_partition_record rec;
				int grc = sh_partition_get(e->p, &hits[i].id,
							   true, &rec);
				if (grc == SH_OK) {
					h->vector = rec.vector;
					h->n_vector = c->params.dim;
					h->version = rec.version;
					rec.vector = NULL;
					if (!sh_arena_own(a, h->vector))
						rc = SH_ENOMEM;
				}
				sh_partition_record_clear(&rec);
				if (grc == SH_ENOTFOUND)
					continue; /* deleted meanwhile */
				if (grc && !rc)
					rc = sh_errf(err, errlen, grc,
						     "search: reading a hit's "
						     "vector: %s",
						     sh_strerror(grc));
			}
			qh->hits[qh->n_hits++] = h;
		}
		res->results[res->n_results++] = qh;
	}
	if (rc)
		goto out;
	res->covered = sh_wire_slots_to_set(a, allowed);
	if (!res->covered) {
		rc = SH_ENOMEM;
		goto out;
	}
	res->nodes_answered = 1;
	res->nodes_asked = 1;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_SEARCH;
	rs->search = res;
out:
	coll_put(e);
	sh_filter_free(f);
	free(hits);
	return rc;
}

/* Scroll cursors: [1][slot u16 BE][id kind u8][id len u8][id bytes]; u64
 * ids as 8 big-endian bytes. Untrusted: every byte is checked. */
#define CURSOR_MAX (5 + SH_PID_MAX_STR)

static size_t cursor_encode(const sh_partition_cursor *c, uint8_t *b)
{
	b[0] = 1;
	b[1] = (uint8_t)(c->slot >> 8);
	b[2] = (uint8_t)c->slot;
	b[3] = (uint8_t)c->id.kind;
	if (c->id.kind == SH_PID_U64) {
		b[4] = 8;
		for (int i = 0; i < 8; i++)
			b[5 + i] = (uint8_t)(c->id.num >> (56 - 8 * i));
		return 13;
	}
	b[4] = (uint8_t)c->id.len;
	memcpy(b + 5, c->id.str, c->id.len);
	return 5 + c->id.len;
}

static int cursor_decode(const uint8_t *b, size_t len, sh_partition_cursor *c,
			 char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	if (len == 0)
		return SH_OK;
	if (len < 5 || b[0] != 1 || (size_t)b[4] + 5 != len)
		return sh_errf(err, errlen, SH_EINVAL, "cursor: malformed");
	c->started = true;
	c->slot = (uint16_t)(b[1] << 8 | b[2]);
	if (c->slot >= SH_SLOTS)
		return sh_errf(err, errlen, SH_EINVAL, "cursor: bad slot");
	if (b[3] == SH_PID_U64 && b[4] == 8) {
		uint64_t v = 0;
		for (int i = 0; i < 8; i++)
			v = v << 8 | b[5 + i];
		c->id = sh_pid_u64(v);
		return SH_OK;
	}
	if (b[3] == SH_PID_STR &&
	    sh_pid_str((const char *)b + 5, b[4], &c->id) == SH_OK)
		return SH_OK;
	return sh_errf(err, errlen, SH_EINVAL, "cursor: bad id");
}

struct page_ctx {
	struct coll_entry *e;
	sh_arena *a;
	const uint64_t *allowed; /* the slots it may return */
	bool with_payload, with_vector;
	Shoal__V1__Point **pts;
	size_t npts;
};

static int page_point(void *ctx, const sh_pid *id, uint64_t version,
		      const char *payload, size_t len)
{
	struct page_ctx *pc = ctx;
	if (!slot_bit(pc->allowed, sh_slot_of(id)))
		return SH_PARTITION_SCROLL_SKIP;
	sh_partition_record rec;
	memset(&rec, 0, sizeof(rec));
	rec.version = version;
	if (pc->with_vector) {
		int rc = sh_partition_get(pc->e->p, id, true, &rec);
		if (rc == SH_ENOTFOUND) /* deleted since the snapshot */
			return SH_PARTITION_SCROLL_SKIP;
		if (rc)
			return rc;
		free(rec.payload);
		rec.payload = NULL;
		rec.version = version;
	}
	if (pc->with_payload && payload) {
		rec.payload = malloc(len + 1);
		if (!rec.payload) {
			sh_partition_record_clear(&rec);
			return SH_ENOMEM;
		}
		memcpy(rec.payload, payload, len);
		rec.payload[len] = 0;
	}
	Shoal__V1__Point *p =
	    point_out(pc->a, id, &rec, sh_partition_coll(pc->e->p)->params.dim,
		      pc->with_payload, pc->with_vector);
	sh_partition_record_clear(&rec);
	if (!p)
		return SH_ENOMEM;
	pc->pts[pc->npts++] = p;
	return 0;
}

int op_scroll(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	      sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__ScrollRequest *r = rq->scroll;
	sh_partition_cursor cur;
	int rc =
	    cursor_decode(r->cursor.data, r->cursor.len, &cur, err, errlen);
	if (rc)
		return rc;
	/* Every slot the router asks for must be served here (it asks the
	 * new owner otherwise). */
	if ((rc = node_check_slots(n, r->only_slots, false, "scroll.only_slots",
				   err, errlen)))
		return rc;
	struct coll_entry *e;
	if ((rc = lookup(n, r->collection, &e, err, errlen)))
		return rc;
	size_t limit = r->limit ? r->limit : 100;
	sh_filter *f = NULL;
	Shoal__V1__ScrollResult *res = sh_arena_alloc(a, sizeof(*res));
	uint64_t allowed[SH_SLOT_WORDS];
	node_serving(n, r->only_slots, false, allowed);
	struct page_ctx pc = {
	    .e = e,
	    .a = a,
	    .allowed = allowed,
	    .with_payload = r->with_payload,
	    .with_vector = r->with_vector,
	    .pts = sh_arena_alloc(a, limit * sizeof(void *)),
	};
	if (!res || !pc.pts) {
		rc = SH_ENOMEM;
		goto out;
	}
	shoal__v1__scroll_result__init(res);
	if ((rc = filter_in(r->filter, &f, err, errlen)))
		goto out;
	/* Stop at the last slot that may be returned. */
	int last = SH_SLOTS - 1;
	while (last > 0 && !slot_bit(allowed, (uint32_t)last))
		last--;
	rc = sh_partition_scroll_to(e->p, f, &cur, (uint16_t)last, limit,
				    page_point, &pc);
	if (rc) {
		sh_errf(err, errlen, rc, "scroll %s: %s", r->collection,
			sh_strerror(rc));
		goto out;
	}
	res->points = pc.pts;
	res->n_points = pc.npts;
	if (!cur.done) {
		uint8_t *b = sh_arena_alloc(a, CURSOR_MAX);
		if (!b) {
			rc = SH_ENOMEM;
			goto out;
		}
		res->next_cursor.data = b;
		res->next_cursor.len = cursor_encode(&cur, b);
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_SCROLL;
	rs->scroll = res;
out:
	coll_put(e);
	sh_filter_free(f);
	return rc;
}

int op_count(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	     sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__CountRequest *r = rq->count;
	struct coll_entry *e;
	int rc = lookup(n, r->collection, &e, err, errlen);
	if (rc)
		return rc;
	sh_filter *f = NULL;
	uint64_t cnt = 0;
	if ((rc = filter_in(r->filter, &f, err, errlen)))
		goto out;
	uint64_t allowed[SH_SLOT_WORDS];
	node_serving(n, r->only_slots, false, allowed);
	if (node_needs_slot_check(n, e, allowed))
		rc = sh_partition_count_slots(e->p, f, allowed, &cnt);
	else
		rc = sh_partition_count(e->p, f, &cnt);
	if (rc) {
		sh_errf(err, errlen, rc, "count %s: %s", r->collection,
			sh_strerror(rc));
		goto out;
	}
	Shoal__V1__CountResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res) {
		rc = SH_ENOMEM;
		goto out;
	}
	shoal__v1__count_result__init(res);
	res->count = cnt;
	res->exact = true;
	res->covered = sh_wire_slots_to_set(a, allowed);
	if (!res->covered) {
		rc = SH_ENOMEM;
		goto out;
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_COUNT;
	rs->count = res;
out:
	coll_put(e);
	sh_filter_free(f);
	return rc;
}

/* ---- Node ---------------------------------------------------------------- */

struct stats_ctx {
	sh_arena *a;
	Shoal__V1__CollectionStats **out;
	size_t n, cap;
};

static int stats_one(sh_node *n, struct coll_entry *e, void *ctx)
{
	struct stats_ctx *sc = ctx;
	if (sc->n == sc->cap) {
		size_t cap = sc->cap ? 2 * sc->cap : 16;
		Shoal__V1__CollectionStats **t =
		    sh_arena_alloc(sc->a, cap * sizeof(*t));
		if (!t)
			return SH_ENOMEM;
		if (sc->n)
			memcpy(t, sc->out, sc->n * sizeof(*t));
		sc->out = t;
		sc->cap = cap;
	}
	Shoal__V1__CollectionStats *cs = sh_arena_alloc(sc->a, sizeof(*cs));
	Shoal__V1__CollectionConfig *cfg =
	    node_config_out(sc->a, sh_partition_coll(e->p));
	if (!cs || !cfg)
		return SH_ENOMEM;
	shoal__v1__collection_stats__init(cs);
	sh_hnsw_info info;
	sh_partition_info(e->p, &info);
	cs->name = cfg->name;
	cs->points = info.live;
	cs->tombstones = info.tombstones;
	cs->index_bytes = info.mem_bytes;
	cs->vacuums = atomic_load(&e->vacuums);
	cs->dim = cfg->dim;
	cs->metric = cfg->metric;
	cs->storage = cfg->storage;
	sc->out[sc->n++] = cs;
	return SH_OK;
}

static int add_counts(sh_node *n, struct coll_entry *e, void *ctx)
{
	uint64_t *counts = ctx;
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		counts[s] += sh_partition_slot_points(e->p, (uint16_t)s);
	return SH_OK;
}

/* Per-slot live points (over the collections asked for) into res. */
static int slot_counts_out(sh_node *n, const char *only,
			   Shoal__V1__StatsResult *res, sh_arena *a)
{
	uint64_t *counts = calloc(SH_SLOTS, sizeof(*counts));
	if (!counts)
		return SH_ENOMEM;
	int rc = each_collection(n, only, add_counts, counts, NULL, 0);
	size_t nz = 0;
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		nz += counts[s] != 0;
	res->slot_counts =
	    nz ? sh_arena_alloc(a, nz * sizeof(*res->slot_counts)) : NULL;
	for (uint32_t s = 0; rc == SH_OK && s < SH_SLOTS; s++) {
		if (!counts[s])
			continue;
		Shoal__V1__SlotCount *c = sh_arena_alloc(a, sizeof(*c));
		if (!c || !res->slot_counts) {
			rc = SH_ENOMEM;
			break;
		}
		shoal__v1__slot_count__init(c);
		c->slot = s;
		c->points = counts[s];
		res->slot_counts[res->n_slot_counts++] = c;
	}
	free(counts);
	return rc;
}

int op_stats(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	     sh_arena *a, char *err, size_t errlen)
{
	struct stats_ctx sc = {.a = a};
	int rc = each_collection(n, rq->stats->collection, stats_one, &sc, err,
				 errlen);
	if (rc)
		return rc;
	Shoal__V1__StatsResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__stats_result__init(res);
	res->collections = sc.out;
	res->n_collections = sc.n;
	struct node_slots ns;
	node_slots_get(n, &ns);
	res->owned = sh_wire_slots_to_set(a, ns.owned);
	if (rq->stats->with_slot_counts &&
	    (rc = slot_counts_out(n, rq->stats->collection, res, a)))
		return rc;
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	res->uptime_ms = (uint64_t)(t.tv_sec - n->started.tv_sec) * 1000u +
			 (uint64_t)((t.tv_nsec - n->started.tv_nsec) / 1000000);
	if (!res->owned)
		return SH_ENOMEM;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_STATS;
	rs->stats = res;
	return SH_OK;
}

int op_health(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	      sh_arena *a, char *err, size_t errlen)
{
	Shoal__V1__HealthResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__health_result__init(res);
	switch (sh_node_get_state(n)) {
	case SH_NODE_SERVING:
		res->status = SHOAL__V1__HEALTH__SERVING;
		break;
	case SH_NODE_STOPPING:
		res->status = SHOAL__V1__HEALTH__STOPPING;
		break;
	default:
		res->status = SHOAL__V1__HEALTH__STARTING;
		break;
	}
	pthread_rwlock_rdlock(&n->slock);
	res->node_id = n->slots.node_id;
	res->map_epoch = n->slots.epoch;
	pthread_rwlock_unlock(&n->slock);
	res->version = (char *)SHOAL_VERSION;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_HEALTH;
	rs->health = res;
	return SH_OK;
}

/* ---- Slot streaming ------------------------------------------------------ */

struct stream_item {
	sh_pid id;
	bool deleted;
	uint64_t version;
};

struct stream_ctx {
	const sh_partition_cursor *after;
	struct stream_item *items;
	size_t n, max; /* collects up to max + 1 to know whether more follow */
};

static int stream_point(void *ctx, uint16_t slot, const sh_pid *pid,
			const sh_store_point *p)
{
	struct stream_ctx *sc = ctx;
	(void)slot;
	if (sc->after->started) {
		/* skip up to and including the cursor's id */
		sh_partition_cursor c = *sc->after;
		uint8_t x[CURSOR_MAX], y[CURSOR_MAX];
		c.id = *pid;
		size_t lx = cursor_encode(&c, x);
		size_t ly = cursor_encode(sc->after, y);
		/* Byte order of the encodings is the store's key order for
		 * ids of one kind; kinds sort by their byte. */
		size_t m = lx < ly ? lx : ly;
		int cmp = memcmp(x + 3, y + 3, 1);
		if (!cmp) {
			cmp = memcmp(x + 5, y + 5, m - 5);
			if (!cmp)
				cmp = lx < ly ? -1 : lx > ly;
		}
		if (cmp <= 0)
			return 0;
	}
	struct stream_item *it = &sc->items[sc->n++];
	it->id = *pid;
	it->deleted = p->deleted;
	it->version = p->version;
	return sc->n > sc->max ? 1 : 0;
}

int op_stream_slot(sh_node *n, const Shoal__V1__Request *rq,
		   Shoal__V1__Response *rs, sh_arena *a, char *err,
		   size_t errlen)
{
	const Shoal__V1__StreamSlotRequest *r = rq->stream_slot;
	if (r->slot >= SH_SLOTS)
		return sh_errf(err, errlen, SH_EINVAL,
			       "stream_slot.slot: %u is not below %u", r->slot,
			       SH_SLOTS);
	sh_partition_cursor after;
	int rc =
	    cursor_decode(r->cursor.data, r->cursor.len, &after, err, errlen);
	if (rc)
		return rc;
	if (after.started && after.slot != r->slot)
		return sh_errf(err, errlen, SH_EINVAL,
			       "stream_slot.cursor: belongs to another slot");
	struct coll_entry *e;
	if ((rc = lookup(n, r->collection, &e, err, errlen)))
		return rc;
	const sh_store_coll *c = sh_partition_coll(e->p);
	size_t max = r->max_points ? r->max_points : 256;
	struct stream_ctx sc = {.after = &after, .max = max};
	sc.items = malloc((max + 1) * sizeof(*sc.items));
	Shoal__V1__StreamSlotResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!sc.items || !res) {
		rc = SH_ENOMEM;
		goto out;
	}
	shoal__v1__stream_slot_result__init(res);
	rc = sh_store_scan_points(n->st, c->id, (uint16_t)r->slot,
				  (uint16_t)r->slot, stream_point, &sc);
	if (rc == 1)
		rc = SH_OK;
	if (rc) {
		sh_errf(err, errlen, rc, "stream_slot: %s",
			sh_store_last_error());
		goto out;
	}
	bool more = sc.n > max;
	size_t take = more ? max : sc.n;
	res->points = take ? sh_arena_alloc(a, take * sizeof(void *)) : NULL;
	res->tombstones =
	    take ? sh_arena_alloc(a, take * sizeof(void *)) : NULL;
	if (take && (!res->points || !res->tombstones)) {
		rc = SH_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < take && !rc; i++) {
		struct stream_item *it = &sc.items[i];
		/* The point as it is now: a newer state than the scan's is
		 * what a migration wants, and versions make it safe. */
		sh_partition_record rec;
		int grc = it->deleted
			      ? SH_ENOTFOUND
			      : sh_partition_get(e->p, &it->id, true, &rec);
		if (grc == SH_OK) {
			Shoal__V1__Point *p = point_out(
			    a, &it->id, &rec, c->params.dim, true, true);
			sh_partition_record_clear(&rec);
			if (!p)
				rc = SH_ENOMEM;
			else
				res->points[res->n_points++] = p;
			continue;
		}
		if (grc != SH_ENOTFOUND) {
			rc = sh_errf(err, errlen, grc, "stream_slot: %s",
				     sh_strerror(grc));
			break;
		}
		sh_store_point sp;
		grc = sh_store_get_point(n->st, c->id, (uint16_t)r->slot,
					 &it->id, &sp);
		if (grc == SH_ENOTFOUND) /* collection dropped meanwhile */
			continue;
		if (grc) {
			rc = sh_errf(err, errlen, grc, "stream_slot: %s",
				     sh_store_last_error());
			break;
		}
		Shoal__V1__PointRef *ref = sh_arena_alloc(a, sizeof(*ref));
		Shoal__V1__PointId *pid = pid_out(a, &it->id);
		uint64_t ver = sp.version;
		sh_store_point_clear(&sp);
		if (!ref || !pid) {
			rc = SH_ENOMEM;
			break;
		}
		shoal__v1__point_ref__init(ref);
		ref->id = pid;
		ref->version = ver;
		res->tombstones[res->n_tombstones++] = ref;
	}
	if (rc)
		goto out;
	res->done = !more;
	if (more) {
		sh_partition_cursor next = {.started = true,
					    .slot = (uint16_t)r->slot,
					    .id = sc.items[take - 1].id};
		uint8_t *b = sh_arena_alloc(a, CURSOR_MAX);
		if (!b) {
			rc = SH_ENOMEM;
			goto out;
		}
		res->next_cursor.data = b;
		res->next_cursor.len = cursor_encode(&next, b);
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_STREAM_SLOT;
	rs->stream_slot = res;
out:
	coll_put(e);
	free(sc.items);
	return rc;
}
