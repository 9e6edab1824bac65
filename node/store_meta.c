/* The shard node's store: collections (configs in the meta CF, and the
 * in-memory table of them). See store.h. */
#include "store_impl.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static const char next_id_key[] = "next_collection_id";
/* Node-level records (sh_store_node_put): "node." + name. */
static const char node_key_prefix[] = "node.";
#define NODE_KEY_PREFIX_LEN (sizeof(node_key_prefix) - 1)

/* ---- Collection configs (JSON) ------------------------------------------- */

static const char *const metric_names[] = {"l2", "ip", "cosine"};
static const char *const storage_names[] = {"f32", "int8"};

static int name_index(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > SH_STORE_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		      c == '.'))
			return false;
	}
	return true;
}

/* A non-negative integer field in [lo, hi]; absent keeps *out. */
static int json_uint(const cJSON *o, const char *key, uint64_t lo, uint64_t hi,
		     bool required, uint64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v) {
		if (required)
			return store_fail(SH_EINVAL,
					  "config: \"%s\" is required", key);
		return SH_OK;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble < (double)lo ||
	    v->valuedouble > (double)hi ||
	    v->valuedouble != (double)(uint64_t)v->valuedouble)
		return store_fail(
		    SH_EINVAL,
		    "config: \"%s\" must be an integer in %llu..%llu", key,
		    (unsigned long long)lo, (unsigned long long)hi);
	*out = (uint64_t)v->valuedouble;
	return SH_OK;
}

static int json_enum(const cJSON *o, const char *key, const char *const *names,
		     int n, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!v)
		return SH_OK;
	int i = cJSON_IsString(v) ? name_index(v->valuestring, names, n) : -1;
	if (i < 0)
		return store_fail(SH_EINVAL, "config: bad \"%s\"", key);
	*out = i;
	return SH_OK;
}

/* Parses and validates a config (from a client or from the meta CF) into
 * *c. Returns SH_OK or SH_EINVAL with a message. c->id is not touched. */
static int coll_parse(const char *json, size_t len, sh_store_coll *c)
{
	int rc = SH_OK;
	cJSON *o = cJSON_ParseWithLength(json, len);
	if (!o || !cJSON_IsObject(o)) {
		rc = store_fail(SH_EINVAL, "config: not a JSON object");
		goto out;
	}
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
	if (!cJSON_IsString(name) || !name_ok(name->valuestring)) {
		rc = store_fail(SH_EINVAL,
				"config: \"name\" must be 1..%d characters of "
				"[A-Za-z0-9_.-]",
				SH_STORE_MAX_NAME);
		goto out;
	}
	uint64_t dim = 0;
	if ((rc = json_uint(o, "dim", 1, SH_HNSW_MAX_DIM, true, &dim)))
		goto out;
	snprintf(c->name, sizeof(c->name), "%s", name->valuestring);
	sh_hnsw_params_default(&c->params, (uint32_t)dim);
	sh_hnsw_params *p = &c->params;
	uint64_t m = p->m, efc = p->ef_construction, efs = p->ef_search,
		 seed = p->seed, rescore = p->rescore;
	int metric = (int)p->metric, storage = (int)p->storage;
	if ((rc = json_uint(o, "m", 2, SH_HNSW_MAX_M, false, &m)) ||
	    (rc = json_uint(o, "ef_construction", 1, SH_HNSW_MAX_EF, false,
			    &efc)) ||
	    (rc = json_uint(o, "ef_search", 1, SH_HNSW_MAX_EF, false, &efs)) ||
	    (rc = json_uint(o, "seed", 0, (1ull << 53), false, &seed)) ||
	    (rc =
		 json_uint(o, "rescore", 0, SH_HNSW_MAX_EF, false, &rescore)) ||
	    (rc = json_enum(o, "metric", metric_names, 3, &metric)) ||
	    (rc = json_enum(o, "storage", storage_names, 2, &storage)))
		goto out;
	p->m = (uint32_t)m;
	p->ef_construction = (uint32_t)efc;
	p->ef_search = (uint32_t)efs;
	p->seed = seed;
	p->rescore = (uint32_t)rescore;
	p->metric = (sh_metric)metric;
	p->storage = (sh_storage)storage;
	c->nindexes = 0;
	const cJSON *idx =
	    cJSON_GetObjectItemCaseSensitive(o, "payload_indexes");
	if (idx && !cJSON_IsObject(idx)) {
		rc = store_fail(SH_EINVAL,
				"config: \"payload_indexes\" must be an "
				"object of field: type");
		goto out;
	}
	const cJSON *f;
	cJSON_ArrayForEach(f, idx)
	{
		size_t fl = f->string ? strlen(f->string) : 0;
		sh_payload_type t;
		if (fl == 0 || fl > SH_STORE_MAX_FIELD || !cJSON_IsString(f) ||
		    sh_payload_type_parse(f->valuestring, &t) != SH_OK) {
			rc = store_fail(
			    SH_EINVAL,
			    "config: payload index \"%.64s\": field of "
			    "1..%d bytes, type keyword, integer, float "
			    "or bool",
			    f->string ? f->string : "", SH_STORE_MAX_FIELD);
			goto out;
		}
		if (c->nindexes == SH_STORE_MAX_INDEXES) {
			rc = store_fail(SH_EINVAL,
					"config: more than %d payload "
					"indexes",
					SH_STORE_MAX_INDEXES);
			goto out;
		}
		for (uint32_t i = 0; i < c->nindexes; i++)
			if (strcmp(c->indexes[i].field, f->string) == 0) {
				rc = store_fail(SH_EINVAL,
						"config: payload index \"%s\" "
						"declared twice",
						f->string);
				goto out;
			}
		sh_store_index_decl *d = &c->indexes[c->nindexes++];
		memcpy(d->field, f->string, fl + 1);
		d->type = t;
	}
	/* the payload index must accept the schema (names, duplicates) */
	sh_payload_field pf[SH_STORE_MAX_INDEXES];
	for (uint32_t i = 0; i < c->nindexes; i++)
		pf[i] =
		    (sh_payload_field){c->indexes[i].field, c->indexes[i].type};
	sh_payload_index *pi = NULL;
	int prc = sh_payload_index_new(pf, c->nindexes, &pi);
	sh_payload_index_free(pi);
	if (prc == SH_ENOMEM)
		rc = store_fail(SH_ENOMEM, "out of memory");
	else if (prc)
		rc = store_fail(SH_EINVAL, "config: payload index fields "
					   "rejected by the payload index");
out:
	cJSON_Delete(o);
	return rc;
}

/* The normalised JSON of a config (malloc'd), or NULL. */
static char *coll_json(const sh_store_coll *c)
{
	cJSON *o = cJSON_CreateObject(), *idx = NULL;
	char *s = NULL;
	if (!o)
		return NULL;
	const sh_hnsw_params *p = &c->params;
	if (!cJSON_AddNumberToObject(o, "format", SH_STORE_FORMAT) ||
	    !cJSON_AddStringToObject(o, "name", c->name) ||
	    !cJSON_AddNumberToObject(o, "dim", p->dim) ||
	    !cJSON_AddStringToObject(o, "metric", metric_names[p->metric]) ||
	    !cJSON_AddStringToObject(o, "storage", storage_names[p->storage]) ||
	    !cJSON_AddNumberToObject(o, "m", p->m) ||
	    !cJSON_AddNumberToObject(o, "ef_construction",
				     p->ef_construction) ||
	    !cJSON_AddNumberToObject(o, "ef_search", p->ef_search) ||
	    !cJSON_AddNumberToObject(o, "seed", (double)p->seed) ||
	    !cJSON_AddNumberToObject(o, "rescore", p->rescore) ||
	    !(idx = cJSON_AddObjectToObject(o, "payload_indexes")))
		goto out;
	for (uint32_t i = 0; i < c->nindexes; i++)
		if (!cJSON_AddStringToObject(
			idx, c->indexes[i].field,
			sh_payload_type_name(c->indexes[i].type)))
			goto out;
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

static int coll_insert_sorted(sh_store *st, const sh_store_coll *c)
{
	if (st->ncolls == st->capcolls) {
		size_t nc = st->capcolls ? st->capcolls * 2 : 8;
		sh_store_coll *n = realloc(st->colls, nc * sizeof(*n));
		if (!n)
			return store_fail(SH_ENOMEM, "out of memory");
		st->colls = n;
		st->capcolls = nc;
	}
	size_t i = st->ncolls;
	while (i > 0 && st->colls[i - 1].id > c->id) {
		st->colls[i] = st->colls[i - 1];
		i--;
	}
	st->colls[i] = *c;
	st->ncolls++;
	return SH_OK;
}

/* Reads the meta CF into the collection table. */
int store_meta_load(sh_store *st)
{
	int rc = SH_OK;
	uint32_t max_id = 0;
	bool have_next = false;
	sh_store_coll *c = malloc(sizeof(*c));
	rocksdb_iterator_t *it =
	    rocksdb_create_iterator_cf(st->db, st->ropts, st->cf[CF_META]);
	if (!c || !it) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto out;
	}
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		if (kl == sizeof(next_id_key) - 1 &&
		    memcmp(k, next_id_key, kl) == 0) {
			if (vl != 5 || (uint8_t)v[0] != SH_STORE_FORMAT) {
				rc = store_fail(
				    SH_ECORRUPT,
				    "meta: bad next_collection_id record");
				goto out;
			}
			st->next_id = get_le32((const uint8_t *)v + 1);
			have_next = true;
			continue;
		}
		if (kl > NODE_KEY_PREFIX_LEN &&
		    memcmp(k, node_key_prefix, NODE_KEY_PREFIX_LEN) == 0)
			continue; /* sh_store_node_get reads these */
		if (kl != 4) {
			rc = store_fail(SH_ECORRUPT,
					"meta: unknown key of %zu bytes", kl);
			goto out;
		}
		memset(c, 0, sizeof(*c));
		c->id = get_be32(k);
		const cJSON *fmt;
		cJSON *o = cJSON_ParseWithLength(v, vl);
		fmt = o ? cJSON_GetObjectItemCaseSensitive(o, "format") : NULL;
		bool fmt_ok =
		    cJSON_IsNumber(fmt) && fmt->valuedouble == SH_STORE_FORMAT;
		cJSON_Delete(o);
		if (c->id == 0 || c->id > SH_STORE_MAX_COLL_ID || !fmt_ok ||
		    coll_parse(v, vl, c) != SH_OK) {
			rc = store_fail(
			    SH_ECORRUPT,
			    "meta: collection %u: bad config record", c->id);
			goto out;
		}
		for (size_t i = 0; i < st->ncolls; i++)
			if (strcmp(st->colls[i].name, c->name) == 0) {
				rc = store_fail(
				    SH_ECORRUPT,
				    "meta: collection name \"%s\" used "
				    "twice",
				    c->name);
				goto out;
			}
		if ((rc = coll_insert_sorted(st, c)))
			goto out;
		if (c->id > max_id)
			max_id = c->id;
	}
	char *rerr = NULL;
	rocksdb_iter_get_error(it, &rerr);
	if (rerr) {
		rc = store_fail_rocks(rerr, "meta: read");
		goto out;
	}
	if (!have_next)
		st->next_id = 1;
	if (st->next_id <= max_id || st->next_id == 0)
		rc = store_fail(
		    SH_ECORRUPT,
		    "meta: next_collection_id %u not above collection %u",
		    st->next_id, max_id);
out:
	if (it)
		rocksdb_iter_destroy(it);
	free(c);
	return rc;
}

/* ---- Collections --------------------------------------------------------- */

static sh_store_coll *coll_find_id(sh_store *st, uint32_t id)
{
	for (size_t i = 0; i < st->ncolls; i++)
		if (st->colls[i].id == id)
			return &st->colls[i];
	return NULL;
}

static sh_store_coll *coll_find_name(sh_store *st, const char *name)
{
	for (size_t i = 0; i < st->ncolls; i++)
		if (strcmp(st->colls[i].name, name) == 0)
			return &st->colls[i];
	return NULL;
}

int sh_store_coll_create(sh_store *st, const char *json_config,
			 uint32_t *id_out)
{
	int rc;
	char *json = NULL, *rerr = NULL;
	rocksdb_writebatch_t *wb = NULL;
	if (!json_config)
		return store_fail(SH_EINVAL, "config: NULL");
	sh_store_coll *c = calloc(1, sizeof(*c));
	if (!c)
		return store_fail(SH_ENOMEM, "out of memory");
	if ((rc = coll_parse(json_config, strlen(json_config), c)))
		goto out_nolock;
	pthread_mutex_lock(&st->meta_lock);
	if (coll_find_name(st, c->name)) {
		rc = store_fail(SH_EEXIST, "collection \"%s\" exists", c->name);
		goto out;
	}
	if (st->next_id > SH_STORE_MAX_COLL_ID) {
		rc = store_fail(SH_EFULL, "collection ids exhausted");
		goto out;
	}
	c->id = st->next_id;
	json = coll_json(c);
	wb = rocksdb_writebatch_create();
	if (!json || !wb) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto out;
	}
	uint8_t k[4], nv[5];
	put_be32(k, c->id);
	nv[0] = SH_STORE_FORMAT;
	put_le32(nv + 1, c->id + 1);
	rocksdb_writebatch_put_cf(wb, st->cf[CF_META], (const char *)k, 4, json,
				  strlen(json));
	rocksdb_writebatch_put_cf(wb, st->cf[CF_META], next_id_key,
				  sizeof(next_id_key) - 1, (const char *)nv, 5);
	if ((rc = coll_insert_sorted(st, c)))
		goto out;
	rocksdb_write(st->db, st->wopts_sync, wb, &rerr);
	if (rerr) {
		/* undo the table entry: it is the last one (highest id) */
		st->ncolls--;
		rc = store_fail_rocks(rerr, "collection create");
		goto out;
	}
	st->next_id = c->id + 1;
	if (id_out)
		*id_out = c->id;
out:
	pthread_mutex_unlock(&st->meta_lock);
out_nolock:
	if (wb)
		rocksdb_writebatch_destroy(wb);
	cJSON_free(json);
	free(c);
	return rc;
}

int sh_store_coll_drop(sh_store *st, uint32_t id)
{
	int rc = SH_OK;
	char *rerr = NULL;
	pthread_mutex_lock(&st->meta_lock);
	sh_store_coll *c = coll_find_id(st, id);
	if (!c) {
		rc = store_fail(SH_ENOTFOUND, "no collection %u", id);
		goto out;
	}
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	if (!wb) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto out;
	}
	uint8_t lo[4], hi[4];
	put_be32(lo, id);
	put_be32(hi, id + 1); /* id <= SH_STORE_MAX_COLL_ID */
	const int data_cfs[] = {CF_POINTS, CF_GRAPH, CF_PAYLOAD_IDX};
	for (size_t i = 0; i < 3; i++)
		rocksdb_writebatch_delete_range_cf(wb, st->cf[data_cfs[i]],
						   (const char *)lo, 4,
						   (const char *)hi, 4);
	rocksdb_writebatch_delete_cf(wb, st->cf[CF_META], (const char *)lo, 4);
	rocksdb_write(st->db, st->wopts_sync, wb, &rerr);
	rocksdb_writebatch_destroy(wb);
	if (rerr) {
		rc = store_fail_rocks(rerr, "collection drop");
		goto out;
	}
	size_t i = (size_t)(c - st->colls);
	memmove(&st->colls[i], &st->colls[i + 1],
		(st->ncolls - i - 1) * sizeof(*c));
	st->ncolls--;
out:
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

int sh_store_coll_get(sh_store *st, const char *name, sh_store_coll *out)
{
	int rc = SH_OK;
	pthread_mutex_lock(&st->meta_lock);
	const sh_store_coll *c = name ? coll_find_name(st, name) : NULL;
	if (c)
		*out = *c;
	else
		rc = store_fail(SH_ENOTFOUND, "no collection \"%s\"",
				name ? name : "(null)");
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

int sh_store_coll_get_id(sh_store *st, uint32_t id, sh_store_coll *out)
{
	int rc = SH_OK;
	pthread_mutex_lock(&st->meta_lock);
	const sh_store_coll *c = coll_find_id(st, id);
	if (c)
		*out = *c;
	else
		rc = store_fail(SH_ENOTFOUND, "no collection %u", id);
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

int sh_store_coll_list(sh_store *st, sh_store_coll_fn fn, void *ctx)
{
	int rc = SH_OK;
	pthread_mutex_lock(&st->meta_lock);
	for (size_t i = 0; i < st->ncolls && !rc; i++)
		rc = fn(ctx, &st->colls[i]);
	pthread_mutex_unlock(&st->meta_lock);
	return rc;
}

/* ---- Node-level records -------------------------------------------------- */

static int node_key(const char *name, char *k, size_t *kl)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > SH_STORE_MAX_NAME)
		return store_fail(SH_EINVAL, "node record: bad name");
	memcpy(k, node_key_prefix, NODE_KEY_PREFIX_LEN);
	memcpy(k + NODE_KEY_PREFIX_LEN, name, n);
	*kl = NODE_KEY_PREFIX_LEN + n;
	return SH_OK;
}

int sh_store_node_put(sh_store *st, const char *name, const void *val,
		      size_t len)
{
	char k[NODE_KEY_PREFIX_LEN + SH_STORE_MAX_NAME], *rerr = NULL;
	size_t kl = 0;
	int rc = node_key(name, k, &kl);
	if (rc)
		return rc;
	if (!val && len)
		return store_fail(SH_EINVAL, "node record: NULL value");
	rocksdb_put_cf(st->db, st->wopts_sync, st->cf[CF_META], k, kl,
		       val ? (const char *)val : "", len, &rerr);
	return rerr ? store_fail_rocks(rerr, "node record: write") : SH_OK;
}

int sh_store_node_get(sh_store *st, const char *name, void **val, size_t *len)
{
	char k[NODE_KEY_PREFIX_LEN + SH_STORE_MAX_NAME], *rerr = NULL;
	size_t kl = 0, vl = 0;
	*val = NULL;
	*len = 0;
	int rc = node_key(name, k, &kl);
	if (rc)
		return rc;
	char *v = rocksdb_get_cf(st->db, st->ropts, st->cf[CF_META], k, kl, &vl,
				 &rerr);
	if (rerr)
		return store_fail_rocks(rerr, "node record: read");
	if (!v)
		return store_fail(SH_ENOTFOUND, "node record %s: none", name);
	void *copy = malloc(vl ? vl : 1);
	if (!copy) {
		rocksdb_free(v);
		return store_fail(SH_ENOMEM, "out of memory");
	}
	memcpy(copy, v, vl);
	rocksdb_free(v);
	*val = copy;
	*len = vl;
	return SH_OK;
}

int sh_store_property(sh_store *st, const char *name, uint64_t *out)
{
	*out = 0;
	uint64_t sum = 0;
	bool any = false;
	for (int i = 0; i < NCF; i++) {
		uint64_t v;
		if (rocksdb_property_int_cf(st->db, st->cf[i], name, &v) == 0) {
			sum += v;
			any = true;
		}
	}
	if (!any)
		return store_fail(SH_ENOTFOUND, "no property %s", name);
	*out = sum;
	return SH_OK;
}
