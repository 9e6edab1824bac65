/* libshoal: create, drop, list and describe collections. See shoal.h. */
#include <stdlib.h>
#include <string.h>

#include "client_impl.h"

int shoal_collection_create(shoal_client *c,
			    const shoal_collection_config *config)
{
	int rc = client_check(c, config ? config->name : NULL, config);
	if (rc)
		return rc;
	if (config->n_indexes && !config->indexes)
		return client_fail(SHOAL_EINVAL,
				   "config.indexes is NULL with n_indexes %zu",
				   config->n_indexes);
	if (config->n_indexes > SH_WIRE_MAX_PAYLOAD_INDEXES)
		return client_fail(
		    SHOAL_ETOOBIG, "config.indexes: %zu indexes, at most %d",
		    config->n_indexes, SH_WIRE_MAX_PAYLOAD_INDEXES);
	Shoal__V1__PayloadIndex idx[SH_WIRE_MAX_PAYLOAD_INDEXES];
	Shoal__V1__PayloadIndex *idxp[SH_WIRE_MAX_PAYLOAD_INDEXES];
	for (size_t i = 0; i < config->n_indexes; i++) {
		if (!config->indexes[i].field)
			return client_fail(SHOAL_EINVAL,
					   "config.indexes[%zu].field is NULL",
					   i);
		shoal__v1__payload_index__init(&idx[i]);
		idx[i].field = (char *)config->indexes[i].field;
		idx[i].type = (Shoal__V1__PayloadType)config->indexes[i].type;
		idxp[i] = &idx[i];
	}
	Shoal__V1__CollectionConfig cfg = SHOAL__V1__COLLECTION_CONFIG__INIT;
	cfg.name = (char *)config->name;
	cfg.dim = config->dim;
	cfg.metric = (Shoal__V1__Metric)config->metric;
	cfg.storage = (Shoal__V1__Storage)config->storage;
	cfg.m = config->m;
	cfg.ef_construction = config->ef_construction;
	cfg.ef_search = config->ef_search;
	cfg.n_indexes = config->n_indexes;
	cfg.indexes = config->n_indexes ? idxp : NULL;
	Shoal__V1__CreateCollectionRequest cr =
	    SHOAL__V1__CREATE_COLLECTION_REQUEST__INIT;
	cr.config = &cfg;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_CREATE_COLLECTION;
	req.create_collection = &cr;
	Shoal__V1__Response *resp;
	rc = client_call(c, &req, 0,
			 SHOAL__V1__RESPONSE__RESULT_CREATE_COLLECTION, &resp);
	sh_wire_free_response(resp);
	return rc;
}

int shoal_collection_drop(shoal_client *c, const char *name)
{
	int rc = client_check(c, name, name);
	if (rc)
		return rc;
	Shoal__V1__DropCollectionRequest dr =
	    SHOAL__V1__DROP_COLLECTION_REQUEST__INIT;
	dr.name = (char *)name;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_DROP_COLLECTION;
	req.drop_collection = &dr;
	Shoal__V1__Response *resp;
	rc = client_call(c, &req, 0,
			 SHOAL__V1__RESPONSE__RESULT_DROP_COLLECTION, &resp);
	sh_wire_free_response(resp);
	return rc;
}

void shoal_collections_free(shoal_collections *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		free((void *)l->items[i].config.indexes);
	free(l->items);
	sh_wire_free_response(l->internal_);
	free(l);
}

/* Fills one info from a CollectionInfo of the response. */
static int info_from_proto(const Shoal__V1__CollectionInfo *in,
			   shoal_collection_info *out, size_t i)
{
	const Shoal__V1__CollectionConfig *cfg = in ? in->config : NULL;
	if (!cfg)
		return client_fail(SHOAL_EINVAL,
				   "malformed response: collections[%zu] has "
				   "no config",
				   i);
	out->points = in->points;
	out->config.name = client_str(cfg->name);
	out->config.dim = cfg->dim;
	out->config.metric = (int)cfg->metric;
	out->config.storage = (int)cfg->storage;
	out->config.m = cfg->m;
	out->config.ef_construction = cfg->ef_construction;
	out->config.ef_search = cfg->ef_search;
	if (cfg->n_indexes) {
		shoal_payload_index *idx = calloc(cfg->n_indexes, sizeof(*idx));
		if (!idx)
			return client_fail(SHOAL_ENOMEM, "out of memory");
		for (size_t j = 0; j < cfg->n_indexes; j++) {
			idx[j].field = client_str(cfg->indexes[j]->field);
			idx[j].type = (int)cfg->indexes[j]->type;
		}
		out->config.indexes = idx;
		out->config.n_indexes = cfg->n_indexes;
	}
	return SHOAL_OK;
}

/* name NULL: every collection; else only that one (ENOCOLLECTION when
 * absent). */
static int list(shoal_client *c, const char *name, shoal_collections **out)
{
	Shoal__V1__ListCollectionsRequest lr =
	    SHOAL__V1__LIST_COLLECTIONS_REQUEST__INIT;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_LIST_COLLECTIONS;
	req.list_collections = &lr;
	Shoal__V1__Response *resp;
	int rc = client_call(
	    c, &req, 0, SHOAL__V1__RESPONSE__RESULT_LIST_COLLECTIONS, &resp);
	if (rc)
		return rc;
	const Shoal__V1__ListCollectionsResult *res = resp->list_collections;
	shoal_collections *l = calloc(1, sizeof(*l));
	if (!l) {
		sh_wire_free_response(resp);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	l->internal_ = resp;
	l->items = calloc(res->n_collections ? res->n_collections : 1,
			  sizeof(*l->items));
	if (!l->items) {
		shoal_collections_free(l);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < res->n_collections; i++) {
		const Shoal__V1__CollectionInfo *ci = res->collections[i];
		if (name && (!ci || !ci->config ||
			     strcmp(client_str(ci->config->name), name) != 0))
			continue;
		if ((rc = info_from_proto(ci, &l->items[l->n], i))) {
			shoal_collections_free(l);
			return rc;
		}
		l->n++;
	}
	if (name && l->n == 0) {
		shoal_collections_free(l);
		return client_fail(SHOAL_ENOCOLLECTION,
				   "unknown collection '%s'", name);
	}
	*out = l;
	return client_ok();
}

int shoal_collection_list(shoal_client *c, shoal_collections **out)
{
	int rc = client_check(c, "", out);
	if (rc)
		return rc;
	*out = NULL;
	return list(c, NULL, out);
}

int shoal_collection_info_get(shoal_client *c, const char *name,
			      shoal_collections **out)
{
	int rc = client_check(c, name, out);
	if (rc)
		return rc;
	*out = NULL;
	return list(c, name, out);
}
