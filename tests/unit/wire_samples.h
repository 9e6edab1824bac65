/* A valid request of every operation, for the wire tests and as the seed
 * corpus of the wire fuzzer. Each is built on the stack and encoded. */
#ifndef SH_WIRE_SAMPLES_H
#define SH_WIRE_SAMPLES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "wire.h"

/* The operations, in Request.op field order. */
static const int ws_ops[] = {
    SHOAL__V1__REQUEST__OP_CREATE_COLLECTION,
    SHOAL__V1__REQUEST__OP_DROP_COLLECTION,
    SHOAL__V1__REQUEST__OP_LIST_COLLECTIONS,
    SHOAL__V1__REQUEST__OP_UPSERT,
    SHOAL__V1__REQUEST__OP_DELETE,
    SHOAL__V1__REQUEST__OP_GET,
    SHOAL__V1__REQUEST__OP_SEARCH,
    SHOAL__V1__REQUEST__OP_SCROLL,
    SHOAL__V1__REQUEST__OP_COUNT,
    SHOAL__V1__REQUEST__OP_STATS,
    SHOAL__V1__REQUEST__OP_HEALTH,
    SHOAL__V1__REQUEST__OP_SET_SLOTS,
    SHOAL__V1__REQUEST__OP_STREAM_SLOT,
};
#define WS_NOPS (sizeof(ws_ops) / sizeof(ws_ops[0]))
/* A second delete, by filter. */
#define WS_DELETE_BY_FILTER 1000

/* The filter of the samples: color = "red" AND (size in 1..10 OR NOT
 * exists(sold)) AND id not in {7, "sku-7"} AND tag in {"a","b"}. */
typedef struct ws_filter {
	Shoal__V1__Filter top, inner;
	Shoal__V1__Clause c[6];
	Shoal__V1__Clause *must[3], *should[2], *must_not[1], *inner_must[1];
	Shoal__V1__Condition cond[5];
	Shoal__V1__Match color, tag;
	Shoal__V1__KeywordSet tags;
	char *tagv[2];
	Shoal__V1__Range size;
	Shoal__V1__Exists sold;
	Shoal__V1__HasId has;
	Shoal__V1__PointId hid[2], *hidp[2];
} ws_filter;

static inline void ws_filter_build(ws_filter *f)
{
	memset(f, 0, sizeof(*f));
	shoal__v1__filter__init(&f->top);
	shoal__v1__filter__init(&f->inner);
	for (int i = 0; i < 6; i++)
		shoal__v1__clause__init(&f->c[i]);
	for (int i = 0; i < 5; i++)
		shoal__v1__condition__init(&f->cond[i]);
	shoal__v1__match__init(&f->color);
	f->color.key = "color";
	f->color.value_case = SHOAL__V1__MATCH__VALUE_KEYWORD;
	f->color.keyword = "red";
	shoal__v1__keyword_set__init(&f->tags);
	f->tagv[0] = "a";
	f->tagv[1] = "b";
	f->tags.n_values = 2;
	f->tags.values = f->tagv;
	shoal__v1__match__init(&f->tag);
	f->tag.key = "tag";
	f->tag.value_case = SHOAL__V1__MATCH__VALUE_ANY_KEYWORD;
	f->tag.any_keyword = &f->tags;
	shoal__v1__range__init(&f->size);
	f->size.key = "size";
	f->size.has_gte_case = SHOAL__V1__RANGE__HAS_GTE_GTE;
	f->size.gte = 1;
	f->size.has_lt_case = SHOAL__V1__RANGE__HAS_LT_LT;
	f->size.lt = 10;
	shoal__v1__exists__init(&f->sold);
	f->sold.key = "sold";
	shoal__v1__has_id__init(&f->has);
	for (int i = 0; i < 2; i++) {
		shoal__v1__point_id__init(&f->hid[i]);
		f->hidp[i] = &f->hid[i];
	}
	f->hid[0].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	f->hid[0].num = 7;
	f->hid[1].kind_case = SHOAL__V1__POINT_ID__KIND_STR;
	f->hid[1].str = "sku-7";
	f->has.n_ids = 2;
	f->has.ids = f->hidp;

	f->cond[0].kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
	f->cond[0].match = &f->color;
	f->cond[1].kind_case = SHOAL__V1__CONDITION__KIND_RANGE;
	f->cond[1].range = &f->size;
	f->cond[2].kind_case = SHOAL__V1__CONDITION__KIND_EXISTS;
	f->cond[2].exists = &f->sold;
	f->cond[3].kind_case = SHOAL__V1__CONDITION__KIND_HAS_ID;
	f->cond[3].has_id = &f->has;
	f->cond[4].kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
	f->cond[4].match = &f->tag;
	for (int i = 0; i < 5; i++) {
		f->c[i].kind_case = SHOAL__V1__CLAUSE__KIND_CONDITION;
		f->c[i].condition = &f->cond[i];
	}
	f->c[5].kind_case = SHOAL__V1__CLAUSE__KIND_FILTER;
	f->c[5].filter = &f->inner;
	/* inner: NOT exists(sold) */
	f->inner_must[0] = &f->c[2];
	f->inner.n_must_not = 1;
	f->inner.must_not = f->inner_must;
	f->must[0] = &f->c[0];
	f->must[1] = &f->c[4];
	f->top.n_must = 2;
	f->top.must = f->must;
	f->should[0] = &f->c[1];
	f->should[1] = &f->c[5];
	f->top.n_should = 2;
	f->top.should = f->should;
	f->must_not[0] = &f->c[3];
	f->top.n_must_not = 1;
	f->top.must_not = f->must_not;
}

/* Encodes a valid request of operation `op` (an op case, or
 * WS_DELETE_BY_FILTER) with request_id = op. *buf is malloc'd. */
static inline int ws_sample(int op, uint8_t **buf, size_t *len)
{
	Shoal__V1__Request r;
	ws_filter f;
	Shoal__V1__CreateCollectionRequest cc;
	Shoal__V1__CollectionConfig cfg;
	Shoal__V1__PayloadIndex pi[2], *pip[2];
	Shoal__V1__DropCollectionRequest dc;
	Shoal__V1__ListCollectionsRequest lc;
	Shoal__V1__UpsertRequest up;
	Shoal__V1__Point pt[2], *ptp[2];
	Shoal__V1__PointId id[2], *idp[2];
	float vec[2][4] = {{1, 2, 3, 4}, {-1, 0.5f, 0, 1e30f}};
	Shoal__V1__DeleteRequest del;
	Shoal__V1__PointRefs refs;
	Shoal__V1__PointRef ref[2], *refp[2];
	Shoal__V1__GetRequest get;
	Shoal__V1__SearchRequest se;
	Shoal__V1__Vector qv[2], *qvp[2];
	Shoal__V1__ScrollRequest sc;
	Shoal__V1__CountRequest co;
	Shoal__V1__StatsRequest st;
	Shoal__V1__HealthRequest he;
	Shoal__V1__SetSlotsRequest ss;
	Shoal__V1__SlotSet set;
	Shoal__V1__SlotRange rg[2], *rgp[2];
	Shoal__V1__StreamSlotRequest sr;

	shoal__v1__request__init(&r);
	r.protocol_version = SH_WIRE_PROTOCOL_VERSION;
	r.request_id = (uint64_t)op;
	r.map_epoch = 3;
	r.timeout_ms = 250;
	ws_filter_build(&f);
	for (int i = 0; i < 2; i++) {
		shoal__v1__point_id__init(&id[i]);
		idp[i] = &id[i];
		shoal__v1__point__init(&pt[i]);
		ptp[i] = &pt[i];
		pt[i].id = &id[i];
		pt[i].n_vector = 4;
		pt[i].vector = vec[i];
		pt[i].version = 10 + (uint64_t)i;
		shoal__v1__point_ref__init(&ref[i]);
		refp[i] = &ref[i];
		ref[i].id = &id[i];
		ref[i].version = 20 + (uint64_t)i;
		shoal__v1__vector__init(&qv[i]);
		qvp[i] = &qv[i];
		qv[i].n_values = 4;
		qv[i].values = vec[i];
	}
	id[0].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	id[0].num = 42;
	id[1].kind_case = SHOAL__V1__POINT_ID__KIND_STR;
	id[1].str = "sku-\xc3\xa9-1";
	pt[0].payload_json = "{\"color\":\"red\",\"size\":3,\"tag\":[\"a\"]}";

	switch (op) {
	case SHOAL__V1__REQUEST__OP_CREATE_COLLECTION:
		shoal__v1__create_collection_request__init(&cc);
		shoal__v1__collection_config__init(&cfg);
		cfg.name = "products";
		cfg.dim = 4;
		cfg.metric = SHOAL__V1__METRIC__COSINE;
		cfg.m = 16;
		cfg.ef_construction = 200;
		cfg.ef_search = 64;
		cfg.storage = SHOAL__V1__STORAGE__INT8;
		for (int i = 0; i < 2; i++) {
			shoal__v1__payload_index__init(&pi[i]);
			pip[i] = &pi[i];
		}
		pi[0].field = "color";
		pi[0].type = SHOAL__V1__PAYLOAD_TYPE__KEYWORD;
		pi[1].field = "size";
		pi[1].type = SHOAL__V1__PAYLOAD_TYPE__INTEGER;
		cfg.n_indexes = 2;
		cfg.indexes = pip;
		cc.config = &cfg;
		r.op_case = op;
		r.create_collection = &cc;
		break;
	case SHOAL__V1__REQUEST__OP_DROP_COLLECTION:
		shoal__v1__drop_collection_request__init(&dc);
		dc.name = "products";
		r.op_case = op;
		r.drop_collection = &dc;
		break;
	case SHOAL__V1__REQUEST__OP_LIST_COLLECTIONS:
		shoal__v1__list_collections_request__init(&lc);
		r.op_case = op;
		r.list_collections = &lc;
		break;
	case SHOAL__V1__REQUEST__OP_UPSERT:
		shoal__v1__upsert_request__init(&up);
		up.collection = "products";
		up.n_points = 2;
		up.points = ptp;
		r.op_case = op;
		r.upsert = &up;
		break;
	case SHOAL__V1__REQUEST__OP_DELETE:
	case WS_DELETE_BY_FILTER:
		shoal__v1__delete_request__init(&del);
		del.collection = "products";
		if (op == WS_DELETE_BY_FILTER) {
			del.selector_case =
			    SHOAL__V1__DELETE_REQUEST__SELECTOR_FILTER;
			del.filter = &f.top;
			del.filter_version = 99;
		} else {
			shoal__v1__point_refs__init(&refs);
			refs.n_refs = 2;
			refs.refs = refp;
			del.selector_case =
			    SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS;
			del.ids = &refs;
		}
		r.op_case = SHOAL__V1__REQUEST__OP_DELETE;
		r.delete_ = &del;
		break;
	case SHOAL__V1__REQUEST__OP_GET:
		shoal__v1__get_request__init(&get);
		get.collection = "products";
		get.n_ids = 2;
		get.ids = idp;
		get.with_payload = 1;
		r.op_case = op;
		r.get = &get;
		break;
	case SHOAL__V1__REQUEST__OP_SEARCH:
		shoal__v1__search_request__init(&se);
		se.collection = "products";
		se.n_queries = 2;
		se.queries = qvp;
		se.k = 10;
		se.ef = 64;
		se.filter = &f.top;
		se.with_payload = 1;
		se.with_vector = 1;
		se.min_coverage = 0.5f;
		r.op_case = op;
		r.search = &se;
		break;
	case SHOAL__V1__REQUEST__OP_SCROLL:
		shoal__v1__scroll_request__init(&sc);
		sc.collection = "products";
		sc.filter = &f.top;
		sc.cursor.data = (uint8_t *)"\x01\x02";
		sc.cursor.len = 2;
		sc.limit = 100;
		r.op_case = op;
		r.scroll = &sc;
		break;
	case SHOAL__V1__REQUEST__OP_COUNT:
		shoal__v1__count_request__init(&co);
		co.collection = "products";
		co.filter = &f.top;
		co.exact = 1;
		r.op_case = op;
		r.count = &co;
		break;
	case SHOAL__V1__REQUEST__OP_STATS:
		shoal__v1__stats_request__init(&st);
		st.collection = "products";
		r.op_case = op;
		r.stats = &st;
		break;
	case SHOAL__V1__REQUEST__OP_HEALTH:
		shoal__v1__health_request__init(&he);
		r.op_case = op;
		r.health = &he;
		break;
	case SHOAL__V1__REQUEST__OP_SET_SLOTS:
		shoal__v1__set_slots_request__init(&ss);
		shoal__v1__slot_set__init(&set);
		for (int i = 0; i < 2; i++) {
			shoal__v1__slot_range__init(&rg[i]);
			rgp[i] = &rg[i];
		}
		rg[0].first = 0;
		rg[0].last = 4095;
		rg[1].first = 8192;
		rg[1].last = 16383;
		set.n_ranges = 2;
		set.ranges = rgp;
		ss.map_epoch = 4;
		ss.node_id = 2;
		ss.owned = &set;
		r.op_case = op;
		r.set_slots = &ss;
		break;
	case SHOAL__V1__REQUEST__OP_STREAM_SLOT:
		shoal__v1__stream_slot_request__init(&sr);
		sr.collection = "products";
		sr.slot = 16383;
		sr.max_points = 500;
		r.op_case = op;
		r.stream_slot = &sr;
		break;
	default:
		return SH_EINVAL;
	}
	return sh_wire_encode_request(&r, buf, len);
}

#endif
