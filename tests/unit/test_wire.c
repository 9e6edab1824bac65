/* Wire helpers: every operation round-trips; every bad input gets its code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "testutil.h"
#include "arena.h"
#include "wire.h"
#include "wire_samples.h"

static char err[512];

/* The sample of `op`, decoded (the caller frees it). */
static Shoal__V1__Request *sample(int op)
{
	uint8_t *buf;
	size_t len;
	Shoal__V1__Request *r;
	assert_int_equal(ws_sample(op, &buf, &len), SH_OK);
	int rc = sh_wire_decode_request(buf, len, NULL, &r, err, sizeof(err));
	if (rc != SH_OK)
		fail_msg("sample %d: %s: %s", op, sh_errname(rc), err);
	free(buf);
	return r;
}

/* Encodes r and decodes it again under lim (NULL = defaults): the code the
 * receiver would answer. */
static int recode_lim(const Shoal__V1__Request *r, const sh_wire_limits *lim)
{
	uint8_t *buf;
	size_t len;
	Shoal__V1__Request *back;
	assert_int_equal(sh_wire_encode_request(r, &buf, &len), SH_OK);
	int rc = sh_wire_decode_request(buf, len, lim, &back, err, sizeof(err));
	free(buf);
	if (rc == SH_OK) {
		assert_string_equal(err, "");
		sh_wire_free_request(back);
	} else {
		assert_null(back);
		assert_true(strlen(err) > 0);
	}
	return rc;
}

static int recode(const Shoal__V1__Request *r)
{
	return recode_lim(r, NULL);
}

static void test_error_codes_mirror_error_h(void **state)
{
	size_t n = 0;
#define COUNT_(name, num, msg) n++;
	SH_ERRNO_MAP(COUNT_)
#undef COUNT_
	const ProtobufCEnumDescriptor *d = &shoal__v1__error_code__descriptor;
	assert_int_equal(d->n_values, n);
	for (size_t i = 0; i < d->n_values; i++)
		assert_string_equal(d->values[i].name,
				    sh_errname(d->values[i].value));
}

static void test_every_operation_round_trips(void **state)
{
	for (size_t i = 0; i <= WS_NOPS; i++) {
		int op = i < WS_NOPS ? ws_ops[i] : WS_DELETE_BY_FILTER;
		uint8_t *buf, *again;
		size_t len, alen;
		Shoal__V1__Request *r;
		assert_int_equal(ws_sample(op, &buf, &len), SH_OK);
		assert_int_equal(
		    sh_wire_decode_request(buf, len, NULL, &r, err, 512),
		    SH_OK);
		assert_string_equal(err, "");
		assert_int_equal(r->protocol_version, 1);
		assert_int_equal(r->request_id, (uint64_t)op);
		assert_int_equal(r->map_epoch, 3);
		assert_int_equal(r->timeout_ms, 250);
		assert_int_equal(r->op_case, op == WS_DELETE_BY_FILTER
						 ? SHOAL__V1__REQUEST__OP_DELETE
						 : op);
		/* packing is deterministic: the same bytes come back */
		assert_int_equal(sh_wire_encode_request(r, &again, &alen),
				 SH_OK);
		assert_int_equal(alen, len);
		assert_memory_equal(again, buf, len);
		free(again);
		free(buf);
		sh_wire_free_request(r);
	}
}

static void test_decoded_fields_match_what_was_sent(void **state)
{
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_UPSERT);
	sh_pid p, q;
	Shoal__V1__Point *p1 = r->upsert->points[1];
	assert_string_equal(r->upsert->collection, "products");
	assert_int_equal(r->upsert->n_points, 2);
	assert_int_equal(sh_wire_pid_from_proto(r->upsert->points[0]->id, &p),
			 SH_OK);
	assert_int_equal(p.kind, SH_PID_U64);
	assert_int_equal(p.num, 42);
	assert_int_equal(sh_wire_pid_from_proto(p1->id, &q), SH_OK);
	assert_int_equal(q.kind, SH_PID_STR);
	assert_int_equal(q.len, strlen("sku-\xc3\xa9-1"));
	assert_int_equal(p1->n_vector, 4);
	assert_true(p1->vector[3] == 1e30f);
	assert_int_equal(p1->version, 11);
	assert_string_equal(r->upsert->points[0]->payload_json,
			    "{\"color\":\"red\",\"size\":3,\"tag\":[\"a\"]}");
	sh_wire_free_request(r);

	r = sample(SHOAL__V1__REQUEST__OP_SEARCH);
	const Shoal__V1__Filter *f = r->search->filter;
	assert_int_equal(r->search->k, 10);
	assert_int_equal(r->search->n_queries, 2);
	assert_int_equal(f->n_must, 2);
	assert_int_equal(f->n_should, 2);
	assert_int_equal(f->n_must_not, 1);
	const Shoal__V1__Range *rg = f->should[0]->condition->range;
	assert_int_equal(rg->has_gte_case, SHOAL__V1__RANGE__HAS_GTE_GTE);
	assert_int_equal(rg->has_gt_case, SHOAL__V1__RANGE__HAS_GT__NOT_SET);
	assert_true(rg->gte == 1 && rg->lt == 10);
	assert_int_equal(f->should[1]->kind_case,
			 SHOAL__V1__CLAUSE__KIND_FILTER);
	assert_string_equal(
	    f->should[1]->filter->must_not[0]->condition->exists->key, "sold");
	assert_string_equal(f->must_not[0]->condition->has_id->ids[1]->str,
			    "sku-7");
	sh_wire_free_request(r);
}

static void test_pid_conversion_round_trips(void **state)
{
	sh_pid in[3], out;
	Shoal__V1__PointId pid;
	char sbuf[SH_PID_MAX_STR + 1];
	char longest[SH_PID_MAX_STR];
	memset(longest, 'x', sizeof(longest));
	in[0] = sh_pid_u64(UINT64_MAX);
	assert_int_equal(sh_pid_str("sku-1", 5, &in[1]), SH_OK);
	assert_int_equal(sh_pid_str(longest, sizeof(longest), &in[2]), SH_OK);
	for (int i = 0; i < 3; i++) {
		sh_wire_pid_to_proto(&in[i], &pid, sbuf);
		assert_int_equal(sh_wire_pid_from_proto(&pid, &out), SH_OK);
		assert_true(sh_pid_eq(&in[i], &out));
	}
	shoal__v1__point_id__init(&pid);
	assert_int_equal(sh_wire_pid_from_proto(&pid, &out), SH_EINVAL);
	assert_int_equal(sh_wire_pid_from_proto(NULL, &out), SH_EINVAL);
}

static void test_response_round_trips(void **state)
{
	Shoal__V1__Response resp, *back;
	Shoal__V1__SearchResult sr;
	Shoal__V1__QueryHits qh, *qhp = &qh;
	Shoal__V1__Hit hit[2], *hitp[2];
	Shoal__V1__SearchStats stats;
	Shoal__V1__PointId ids[2];
	Shoal__V1__SlotSet cov;
	Shoal__V1__SlotRange rg = SHOAL__V1__SLOT_RANGE__INIT, *rgp = &rg;
	char sbuf[2][SH_PID_MAX_STR + 1];
	float v[2] = {0.25f, -1};
	sh_pid p[2];
	uint8_t *buf;
	size_t len;

	p[0] = sh_pid_u64(9);
	assert_int_equal(sh_pid_str("sku-9", 5, &p[1]), SH_OK);
	sh_wire_response_init(&resp, 77, 5);
	shoal__v1__search_result__init(&sr);
	shoal__v1__query_hits__init(&qh);
	shoal__v1__search_stats__init(&stats);
	shoal__v1__slot_set__init(&cov);
	for (int i = 0; i < 2; i++) {
		shoal__v1__hit__init(&hit[i]);
		hitp[i] = &hit[i];
		sh_wire_pid_to_proto(&p[i], &ids[i], sbuf[i]);
		hit[i].id = &ids[i];
		hit[i].distance = 0.5f * (float)(i + 1);
		hit[i].version = 3;
	}
	hit[0].payload_json = "{\"a\":1}";
	hit[1].n_vector = 2;
	hit[1].vector = v;
	stats.plan = SHOAL__V1__PLAN__EXACT_SCAN;
	stats.distances = 1234;
	stats.estimated_passing = 60;
	qh.n_hits = 2;
	qh.hits = hitp;
	qh.stats = &stats;
	rg.first = 10;
	rg.last = 20;
	cov.n_ranges = 1;
	cov.ranges = &rgp;
	sr.n_results = 1;
	sr.results = &qhp;
	sr.covered = &cov;
	resp.result_case = SHOAL__V1__RESPONSE__RESULT_SEARCH;
	resp.search = &sr;

	assert_int_equal(sh_wire_encode_response(&resp, &buf, &len), SH_OK);
	assert_int_equal(
	    sh_wire_decode_response(buf, len, NULL, &back, err, sizeof(err)),
	    SH_OK);
	free(buf);
	assert_int_equal(back->protocol_version, SH_WIRE_PROTOCOL_VERSION);
	assert_int_equal(back->request_id, 77);
	assert_int_equal(back->map_epoch, 5);
	assert_int_equal(back->code, SHOAL__V1__ERROR_CODE__OK);
	assert_int_equal(back->result_case, SHOAL__V1__RESPONSE__RESULT_SEARCH);
	const Shoal__V1__QueryHits *bq = back->search->results[0];
	assert_int_equal(bq->n_hits, 2);
	assert_int_equal(bq->stats->plan, SHOAL__V1__PLAN__EXACT_SCAN);
	assert_int_equal(bq->stats->distances, 1234);
	for (int i = 0; i < 2; i++) {
		sh_pid q;
		assert_int_equal(sh_wire_pid_from_proto(bq->hits[i]->id, &q),
				 SH_OK);
		assert_true(sh_pid_eq(&q, &p[i]));
	}
	assert_string_equal(bq->hits[0]->payload_json, "{\"a\":1}");
	assert_true(bq->hits[1]->vector[0] == 0.25f);
	assert_int_equal(back->search->covered->ranges[0]->last, 20);
	sh_wire_free_response(back);

	/* an error response carries the code and the message */
	assert_int_equal(sh_wire_error_response(12, 6, SH_EMOVED,
						"slot 5 moved", &buf, &len),
			 SH_OK);
	assert_int_equal(
	    sh_wire_decode_response(buf, len, NULL, &back, err, sizeof(err)),
	    SH_OK);
	free(buf);
	assert_int_equal(back->code, SHOAL__V1__ERROR_CODE__EMOVED);
	assert_int_equal(back->request_id, 12);
	assert_int_equal(back->map_epoch, 6);
	assert_string_equal(back->message, "slot 5 moved");
	assert_int_equal(back->result_case,
			 SHOAL__V1__RESPONSE__RESULT__NOT_SET);
	sh_wire_free_response(back);
	/* without a message, sh_strerror's */
	assert_int_equal(
	    sh_wire_error_response(1, 0, SH_ENAN, NULL, &buf, &len), SH_OK);
	assert_int_equal(
	    sh_wire_decode_response(buf, len, NULL, &back, err, sizeof(err)),
	    SH_OK);
	free(buf);
	assert_string_equal(back->message, sh_strerror(SH_ENAN));
	sh_wire_free_response(back);
}

static void test_oversized_message_is_etoobig(void **state)
{
	uint8_t *buf;
	size_t len;
	Shoal__V1__Request *r;
	sh_wire_limits lim;
	sh_wire_limits_default(&lim);
	assert_int_equal(lim.max_message_bytes, 64u << 20);
	assert_int_equal(ws_sample(SHOAL__V1__REQUEST__OP_UPSERT, &buf, &len),
			 SH_OK);
	lim.max_message_bytes = len - 1;
	assert_int_equal(
	    sh_wire_decode_request(buf, len, &lim, &r, err, sizeof(err)),
	    SH_ETOOBIG);
	assert_null(r);
	assert_non_null(strstr(err, "exceeds"));
	lim.max_message_bytes = len;
	assert_int_equal(
	    sh_wire_decode_request(buf, len, &lim, &r, err, sizeof(err)),
	    SH_OK);
	sh_wire_free_request(r);
	free(buf);
	/* the default: one byte over 64 MiB is refused before it is read */
	size_t big = (64u << 20) + 1;
	buf = calloc(big, 1);
	assert_non_null(buf);
	assert_int_equal(
	    sh_wire_decode_request(buf, big, NULL, &r, err, sizeof(err)),
	    SH_ETOOBIG);
	free(buf);
}

static void test_every_prefix_of_a_valid_request_is_rejected(void **state)
{
	for (size_t i = 0; i <= WS_NOPS; i++) {
		int op = i < WS_NOPS ? ws_ops[i] : WS_DELETE_BY_FILTER;
		uint8_t *buf;
		size_t len;
		assert_int_equal(ws_sample(op, &buf, &len), SH_OK);
		for (size_t n = 0; n < len; n++) {
			Shoal__V1__Request *r = (void *)1;
			/* a copy of exactly n bytes, so ASan sees any read
			 * past the end */
			uint8_t *cut = malloc(n ? n : 1);
			memcpy(cut, buf, n);
			int rc = sh_wire_decode_request(cut, n, NULL, &r, err,
							sizeof(err));
			free(cut);
			if (rc != SH_EINVAL && rc != SH_EUNSUPPORTED)
				fail_msg("op %d prefix %zu/%zu: %s (%s)", op, n,
					 len, sh_errname(rc), err);
			assert_null(r);
			assert_true(strlen(err) > 0);
			/* the id is readable once its field is complete */
			if (n >= 2 + 2 + 1)
				assert_int_equal(
				    sh_wire_peek_request_id(buf, n),
				    (uint64_t)op);
		}
		/* and the operation, once the message is whole */
		assert_int_equal(sh_wire_peek_op(buf, len),
				 op == WS_DELETE_BY_FILTER
				     ? SHOAL__V1__REQUEST__OP_DELETE
				     : op);
		free(buf);
	}
}

static void test_garbage_bytes_are_rejected(void **state)
{
	uint64_t s = 12345;
	uint8_t *buf;
	size_t len;
	for (int it = 0; it < 20000; it++) {
		size_t n = tu_rand(&s) % 300;
		uint8_t *g = malloc(n ? n : 1);
		for (size_t i = 0; i < n; i++)
			g[i] = (uint8_t)tu_rand(&s);
		Shoal__V1__Request *r;
		int rc =
		    sh_wire_decode_request(g, n, NULL, &r, err, sizeof(err));
		assert_int_not_equal(rc, SH_OK);
		assert_null(r);
		free(g);
	}
	/* mutations of valid requests: any answer, but never a crash, a
	 * leak, an answer without a message or an accepted request that
	 * fails validation when re-encoded */
	for (size_t i = 0; i <= WS_NOPS; i++) {
		int op = i < WS_NOPS ? ws_ops[i] : WS_DELETE_BY_FILTER;
		assert_int_equal(ws_sample(op, &buf, &len), SH_OK);
		for (int it = 0; it < 2000; it++) {
			uint8_t *m = malloc(len);
			memcpy(m, buf, len);
			for (int k = 0; k < 1 + (int)(tu_rand(&s) % 3); k++)
				m[tu_rand(&s) % len] ^=
				    (uint8_t)(1u << (tu_rand(&s) % 8));
			Shoal__V1__Request *r;
			int rc = sh_wire_decode_request(m, len, NULL, &r, err,
							sizeof(err));
			if (rc == SH_OK) {
				assert_int_equal(recode(r), SH_OK);
				sh_wire_free_request(r);
			} else {
				assert_true(strlen(err) > 0);
			}
			free(m);
		}
		free(buf);
	}
}

static void test_nan_and_infinity_in_vectors_are_enan(void **state)
{
	const float bad[] = {NAN, INFINITY, -INFINITY};
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_UPSERT);
	for (int b = 0; b < 3; b++) {
		float *v = r->upsert->points[1]->vector;
		float keep = v[2];
		v[2] = bad[b];
		assert_int_equal(recode(r), SH_ENAN);
		assert_non_null(strstr(err, "upsert.points[1].vector"));
		assert_non_null(strstr(err, "index 2"));
		v[2] = keep;
	}
	sh_wire_free_request(r);

	r = sample(SHOAL__V1__REQUEST__OP_SEARCH);
	r->search->queries[1]->values[0] = NAN;
	assert_int_equal(recode(r), SH_ENAN);
	assert_non_null(strstr(err, "search.queries[1]"));
	sh_wire_free_request(r);
}

static void test_impossible_dimensions_are_edim(void **state)
{
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_UPSERT);
	Shoal__V1__Point *p = r->upsert->points[0];
	size_t keep = p->n_vector;
	float *keepv = p->vector;
	p->n_vector = 0;
	assert_int_equal(recode(r), SH_EDIM);
	float *big = calloc(SH_WIRE_MAX_DIM + 1, sizeof(float));
	p->vector = big;
	p->n_vector = SH_WIRE_MAX_DIM;
	assert_int_equal(recode(r), SH_OK);
	p->n_vector = SH_WIRE_MAX_DIM + 1;
	assert_int_equal(recode(r), SH_EDIM);
	p->vector = keepv;
	p->n_vector = keep;
	free(big);
	sh_wire_free_request(r);

	/* the queries of one search share a dimension */
	r = sample(SHOAL__V1__REQUEST__OP_SEARCH);
	r->search->queries[1]->n_values = 3;
	assert_int_equal(recode(r), SH_EDIM);
	r->search->queries[1]->n_values = 4;
	sh_wire_free_request(r);
}

static void test_bad_string_ids_are_einval(void **state)
{
	char id[SH_PID_MAX_STR + 2];
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_GET);
	Shoal__V1__PointId *pid = r->get->ids[1];
	char *keep = pid->str;
	memset(id, 'a', sizeof(id));
	id[SH_PID_MAX_STR] = 0;
	pid->str = id;
	assert_int_equal(recode(r), SH_OK); /* 64 bytes: the longest */
	id[SH_PID_MAX_STR] = 'a';
	id[SH_PID_MAX_STR + 1] = 0;
	assert_int_equal(recode(r), SH_EINVAL); /* 65 */
	assert_non_null(strstr(err, "get.ids[1]"));
	assert_non_null(strstr(err, "65 bytes"));
	strcpy(id, "bad-\xc3\x28");
	assert_int_equal(recode(r), SH_EINVAL);
	/* the validator alone also refuses it (a request built in memory) */
	assert_int_equal(sh_wire_validate_request(r, NULL, err, sizeof(err)),
			 SH_EINVAL);
	strcpy(id, "");
	assert_int_equal(recode(r), SH_EINVAL);
	pid->str = keep;
	/* an id with a NUL inside would be cut short by protobuf-c */
	strcpy(id, "sku-X");
	pid->str = id;
	uint8_t *buf;
	size_t len;
	Shoal__V1__Request *back;
	assert_int_equal(sh_wire_encode_request(r, &buf, &len), SH_OK);
	uint8_t *x = memmem(buf, len, "sku-X", 5);
	assert_non_null(x);
	x[4] = 0;
	assert_int_equal(
	    sh_wire_decode_request(buf, len, NULL, &back, err, sizeof(err)),
	    SH_EINVAL);
	assert_non_null(strstr(err, "UTF-8"));
	free(buf);
	pid->str = keep;
	/* an id with no kind */
	pid->kind_case = SHOAL__V1__POINT_ID__KIND__NOT_SET;
	assert_int_equal(recode(r), SH_EINVAL);
	pid->kind_case = SHOAL__V1__POINT_ID__KIND_STR;
	sh_wire_free_request(r);
}

static void test_payload_must_be_a_json_object_within_64k(void **state)
{
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_UPSERT);
	Shoal__V1__Point *p = r->upsert->points[0];
	char *keep = p->payload_json;
	const char *bad[] = {"[1,2]",	"42",	"\"s\"",      "null",
			     "{\"a\":", "{} x", "{\"a\":1}}", "not json"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p->payload_json = (char *)bad[i];
		if (recode(r) != SH_EINVAL)
			fail_msg("payload %s accepted", bad[i]);
		assert_non_null(strstr(err, "payload_json"));
	}
	p->payload_json = " {\"a\": [1, {\"b\": null}]} \n";
	assert_int_equal(recode(r), SH_OK);
	/* exactly 64 KiB is allowed, one byte more is not */
	char *big = malloc(SH_WIRE_MAX_PAYLOAD + 2);
	memset(big, ' ', SH_WIRE_MAX_PAYLOAD + 1);
	memcpy(big, "{\"k\":\"", 6);
	big[SH_WIRE_MAX_PAYLOAD - 2] = '"';
	big[SH_WIRE_MAX_PAYLOAD - 1] = '}';
	big[SH_WIRE_MAX_PAYLOAD] = 0;
	for (size_t i = 6; i < SH_WIRE_MAX_PAYLOAD - 2; i++)
		big[i] = 'v';
	p->payload_json = big;
	assert_int_equal(recode(r), SH_OK);
	big[SH_WIRE_MAX_PAYLOAD] = ' ';
	big[SH_WIRE_MAX_PAYLOAD + 1] = 0;
	assert_int_equal(recode(r), SH_ETOOBIG);
	p->payload_json = keep;
	free(big);
	sh_wire_free_request(r);
}

/* A chain of `depth` nested filters as the search's filter. */
static void test_filter_depth_and_size_are_bounded(void **state)
{
	enum { N = SH_WIRE_MAX_FILTER_DEPTH + 1 };
	Shoal__V1__Filter fl[N];
	Shoal__V1__Clause cl[N], *clp[N];
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_COUNT);
	Shoal__V1__Filter *keep = r->count->filter;
	for (int i = 0; i < N; i++) {
		shoal__v1__filter__init(&fl[i]);
		shoal__v1__clause__init(&cl[i]);
		clp[i] = &cl[i];
		if (i + 1 < N) {
			cl[i].kind_case = SHOAL__V1__CLAUSE__KIND_FILTER;
			cl[i].filter = &fl[i + 1];
			fl[i].n_must = 1;
			fl[i].must = &clp[i];
		}
	}
	r->count->filter = &fl[1]; /* depth 16: allowed */
	assert_int_equal(recode(r), SH_OK);
	r->count->filter = &fl[0]; /* depth 17 */
	assert_int_equal(recode(r), SH_ETOOBIG);
	assert_non_null(strstr(err, "deeper"));

	/* clauses are counted over every level */
	enum { M = SH_WIRE_MAX_FILTER_CLAUSES + 1 };
	Shoal__V1__Clause **many = calloc(M, sizeof(*many));
	Shoal__V1__Filter empty = SHOAL__V1__FILTER__INIT;
	Shoal__V1__Clause one = SHOAL__V1__CLAUSE__INIT;
	one.kind_case = SHOAL__V1__CLAUSE__KIND_FILTER;
	one.filter = &empty;
	for (int i = 0; i < M; i++)
		many[i] = &one;
	Shoal__V1__Filter wide = SHOAL__V1__FILTER__INIT;
	wide.n_should = M - 1;
	wide.should = many;
	r->count->filter = &wide;
	assert_int_equal(recode(r), SH_OK);
	wide.n_should = M;
	assert_int_equal(recode(r), SH_ETOOBIG);
	assert_non_null(strstr(err, "clauses"));
	free(many);
	r->count->filter = keep;
	sh_wire_free_request(r);
}

/* Raw bytes nesting filters 100,000 deep: protobuf-c would recurse once per
 * level; the pre-scan refuses it first. */
static void test_deep_protobuf_nesting_is_refused_before_unpacking(void **st)
{
	size_t depth = 100000, cap = depth * 8 + 64, start = cap;
	uint8_t *b = malloc(cap);
	size_t len = 0;
	/* innermost: an empty Filter; wrap Filter in Clause.filter (2) and
	 * Clause in Filter.must (1), alternately */
	for (size_t i = 0; i < depth; i++) {
		uint8_t hdr[11];
		size_t h = 0;
		hdr[h++] = (uint8_t)((i % 2 ? 1 : 2) << 3 | 2);
		uint64_t l = len;
		do {
			hdr[h++] =
			    (uint8_t)((l & 0x7F) | (l > 0x7F ? 0x80 : 0));
			l >>= 7;
		} while (l);
		start -= h;
		memcpy(b + start, hdr, h);
		len += h;
	}
	/* Request { protocol_version: 1, count (18) { filter (2) { ... } } }
	 * — close enough: the scan refuses on depth whatever the field. */
	uint8_t *msg = malloc(len + 32);
	size_t n = 0;
	msg[n++] = 1 << 3 | 0;
	msg[n++] = 1;
	msg[n++] = (18 << 3 | 2) | 0x80; /* tag 146 as a varint */
	msg[n++] = 1;
	uint64_t l = len + 1 + 5;
	for (int k = 0; k < 5; k++, l >>= 7) /* 5-byte varint, padded */
		msg[n++] = (uint8_t)((l & 0x7F) | (k < 4 ? 0x80 : 0));
	msg[n++] = 2 << 3 | 2;
	l = len;
	for (int k = 0; k < 5; k++, l >>= 7)
		msg[n++] = (uint8_t)((l & 0x7F) | (k < 4 ? 0x80 : 0));
	memcpy(msg + n, b + start, len);
	n += len;
	/* fix the outer length: count's body is the filter field */
	l = 1 + 5 + len;
	for (int k = 0; k < 5; k++, l >>= 7)
		msg[4 + k] = (uint8_t)((l & 0x7F) | (k < 4 ? 0x80 : 0));
	Shoal__V1__Request *r;
	assert_int_equal(
	    sh_wire_decode_request(msg, n, NULL, &r, err, sizeof(err)),
	    SH_ETOOBIG);
	assert_non_null(strstr(err, "nested"));
	free(msg);
	free(b);
}

static void test_malformed_filters_are_einval(void **state)
{
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_SEARCH);
	Shoal__V1__Filter *f = r->search->filter;
	Shoal__V1__Match *color = f->must[0]->condition->match;
	Shoal__V1__Range *rg = f->should[0]->condition->range;
	char *keep = color->key;

	color->key = "";
	assert_int_equal(recode(r), SH_EINVAL);
	assert_non_null(strstr(err, "search.filter.must[0].condition.match"));
	assert_non_null(strstr(err, "key required"));
	color->key = keep;

	color->value_case = SHOAL__V1__MATCH__VALUE__NOT_SET;
	assert_int_equal(recode(r), SH_EINVAL);
	color->value_case = SHOAL__V1__MATCH__VALUE_KEYWORD;

	rg->has_gte_case = SHOAL__V1__RANGE__HAS_GTE__NOT_SET;
	rg->has_lt_case = SHOAL__V1__RANGE__HAS_LT__NOT_SET;
	assert_int_equal(recode(r), SH_EINVAL);
	assert_non_null(strstr(err, "no bound"));
	rg->has_lt_case = SHOAL__V1__RANGE__HAS_LT_LT;
	rg->lt = NAN;
	assert_int_equal(recode(r), SH_EINVAL);
	rg->lt = 10;
	rg->has_gte_case = SHOAL__V1__RANGE__HAS_GTE_GTE;

	Shoal__V1__KeywordSet *tags = f->must[1]->condition->match->any_keyword;
	tags->n_values = 0;
	assert_int_equal(recode(r), SH_EINVAL);
	tags->n_values = 2;

	f->should[1]->kind_case = SHOAL__V1__CLAUSE__KIND__NOT_SET;
	assert_int_equal(recode(r), SH_EINVAL);
	f->should[1]->kind_case = SHOAL__V1__CLAUSE__KIND_FILTER;

	Shoal__V1__HasId *h = f->must_not[0]->condition->has_id;
	h->ids[0]->kind_case = SHOAL__V1__POINT_ID__KIND__NOT_SET;
	assert_int_equal(recode(r), SH_EINVAL);
	h->ids[0]->kind_case = SHOAL__V1__POINT_ID__KIND_NUM;

	assert_int_equal(recode(r), SH_OK);
	sh_wire_free_request(r);

	/* a delete by an empty filter would delete everything */
	r = sample(WS_DELETE_BY_FILTER);
	f = r->delete_->filter;
	size_t nm = f->n_must, ns = f->n_should, nn = f->n_must_not;
	f->n_must = f->n_should = f->n_must_not = 0;
	assert_int_equal(recode(r), SH_EINVAL);
	f->n_must = nm, f->n_should = ns, f->n_must_not = nn;
	sh_wire_free_request(r);
}

static void test_unknown_protocol_version_and_op(void **state)
{
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_HEALTH);
	r->protocol_version = 0;
	assert_int_equal(recode(r), SH_EUNSUPPORTED);
	r->protocol_version = 2;
	assert_int_equal(recode(r), SH_EUNSUPPORTED);
	assert_non_null(strstr(err, "protocol version 2"));
	r->protocol_version = 1;
	sh_wire_free_request(r);

	/* no operation */
	Shoal__V1__Request q = SHOAL__V1__REQUEST__INIT;
	q.protocol_version = 1;
	assert_int_equal(recode(&q), SH_EINVAL);
	assert_non_null(strstr(err, "no operation"));
	/* an operation of a newer peer: field 90 (reserved) */
	uint8_t raw[] = {1 << 3 | 0, 1, 0xD2, 0x05, 0};
	assert_int_equal(sh_wire_decode_request(raw, sizeof(raw), NULL, &r, err,
						sizeof(err)),
			 SH_EUNSUPPORTED);
}

static void test_batch_sizes_and_k_are_bounded(void **state)
{
	sh_wire_limits lim;
	sh_wire_limits_default(&lim);
	lim.max_batch_points = 1;
	lim.max_ids = 1;
	lim.max_queries = 1;
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_UPSERT);
	assert_int_equal(recode_lim(r, &lim), SH_ETOOBIG);
	assert_non_null(strstr(err, "2 points"));
	r->upsert->n_points = 0;
	assert_int_equal(recode(r), SH_EINVAL);
	r->upsert->n_points = 2;
	sh_wire_free_request(r);

	r = sample(SHOAL__V1__REQUEST__OP_GET);
	assert_int_equal(recode_lim(r, &lim), SH_ETOOBIG);
	sh_wire_free_request(r);
	r = sample(SHOAL__V1__REQUEST__OP_DELETE);
	assert_int_equal(recode_lim(r, &lim), SH_ETOOBIG);
	sh_wire_free_request(r);

	r = sample(SHOAL__V1__REQUEST__OP_SEARCH);
	assert_int_equal(recode_lim(r, &lim), SH_ETOOBIG); /* 2 queries */
	r->search->k = 0;
	assert_int_equal(recode(r), SH_EINVAL);
	r->search->k = SH_WIRE_MAX_K + 1;
	assert_int_equal(recode(r), SH_ETOOBIG);
	r->search->k = SH_WIRE_MAX_K;
	r->search->ef = SH_WIRE_MAX_EF + 1;
	assert_int_equal(recode(r), SH_ETOOBIG);
	r->search->ef = 0;
	assert_int_equal(recode(r), SH_OK);
	r->search->min_coverage = 1.5f;
	assert_int_equal(recode(r), SH_EINVAL);
	sh_wire_free_request(r);

	/* the default batch limit: 10,001 points */
	Shoal__V1__Point p = SHOAL__V1__POINT__INIT, **pp;
	Shoal__V1__PointId id = SHOAL__V1__POINT_ID__INIT;
	float v = 1;
	id.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	p.id = &id;
	p.n_vector = 1;
	p.vector = &v;
	pp = malloc((SH_WIRE_MAX_BATCH_POINTS + 1) * sizeof(*pp));
	for (int i = 0; i <= SH_WIRE_MAX_BATCH_POINTS; i++)
		pp[i] = &p;
	r = sample(SHOAL__V1__REQUEST__OP_UPSERT);
	Shoal__V1__Point **keep = r->upsert->points;
	r->upsert->points = pp;
	r->upsert->n_points = SH_WIRE_MAX_BATCH_POINTS;
	assert_int_equal(recode(r), SH_OK);
	r->upsert->n_points = SH_WIRE_MAX_BATCH_POINTS + 1;
	assert_int_equal(recode(r), SH_ETOOBIG);
	r->upsert->points = keep;
	r->upsert->n_points = 2;
	free(pp);
	sh_wire_free_request(r);
}

/* 300,000 one-byte integers cost 300 KB on the wire and 2.4 MB unpacked;
 * the item count stops such amplification before protobuf-c allocates. */
static void test_allocation_amplification_is_refused(void **state)
{
	enum { N = 300000 };
	Shoal__V1__Request *r = sample(SHOAL__V1__REQUEST__OP_COUNT);
	Shoal__V1__Match m = SHOAL__V1__MATCH__INIT;
	Shoal__V1__IntegerSet set = SHOAL__V1__INTEGER_SET__INIT;
	Shoal__V1__Condition c = SHOAL__V1__CONDITION__INIT;
	Shoal__V1__Clause cl = SHOAL__V1__CLAUSE__INIT, *clp = &cl;
	Shoal__V1__Filter f = SHOAL__V1__FILTER__INIT, *keep;
	set.values = calloc(N, sizeof(int64_t));
	set.n_values = N;
	m.key = "size";
	m.value_case = SHOAL__V1__MATCH__VALUE_ANY_INTEGER;
	m.any_integer = &set;
	c.kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
	c.match = &m;
	cl.kind_case = SHOAL__V1__CLAUSE__KIND_CONDITION;
	cl.condition = &c;
	f.n_must = 1;
	f.must = &clp;
	keep = r->count->filter;
	r->count->filter = &f;
	assert_int_equal(recode(r), SH_ETOOBIG);
	assert_non_null(strstr(err, "elements"));
	/* within the item bound, the set-size bound still applies */
	set.n_values = SH_WIRE_MAX_IDS + 1;
	assert_int_equal(recode(r), SH_ETOOBIG);
	set.n_values = SH_WIRE_MAX_IDS;
	assert_int_equal(recode(r), SH_OK);
	r->count->filter = keep;
	free(set.values);
	sh_wire_free_request(r);

	/* 300,000 repeats of one field: each costs protobuf-c a record */
	size_t n = 2 + 2 * (size_t)N;
	uint8_t *raw = malloc(n);
	raw[0] = 1 << 3 | 0;
	raw[1] = 1;
	for (size_t i = 2; i < n; i += 2) {
		raw[i] = 3 << 3 | 0; /* map_epoch */
		raw[i + 1] = 0;
	}
	assert_int_equal(
	    sh_wire_decode_request(raw, n, NULL, &r, err, sizeof(err)),
	    SH_ETOOBIG);
	free(raw);
}

static void test_bad_collections_and_slots_are_einval(void **state)
{
	Shoal__V1__Request *r =
	    sample(SHOAL__V1__REQUEST__OP_CREATE_COLLECTION);
	Shoal__V1__CollectionConfig *cfg = r->create_collection->config;
	char *keep = cfg->name;
	char longname[SH_WIRE_MAX_NAME + 2];
	memset(longname, 'n', SH_WIRE_MAX_NAME + 1);
	longname[SH_WIRE_MAX_NAME + 1] = 0;
	const char *names[] = {"", "a b", "x/y", longname};
	for (size_t i = 0; i < 4; i++) {
		cfg->name = (char *)names[i];
		assert_int_equal(recode(r), SH_EINVAL);
	}
	cfg->name = keep;
	cfg->dim = 0;
	assert_int_equal(recode(r), SH_EINVAL);
	cfg->dim = SH_WIRE_MAX_DIM + 1;
	assert_int_equal(recode(r), SH_EINVAL);
	cfg->dim = SH_WIRE_MAX_DIM;
	assert_int_equal(recode(r), SH_OK);
	cfg->metric = SHOAL__V1__METRIC__METRIC_UNSPECIFIED;
	assert_int_equal(recode(r), SH_EINVAL);
	cfg->metric = 99;
	assert_int_equal(recode(r), SH_EINVAL);
	cfg->metric = SHOAL__V1__METRIC__L2;
	cfg->m = 1;
	assert_int_equal(recode(r), SH_EINVAL);
	cfg->m = 0;
	char *kf = cfg->indexes[1]->field;
	cfg->indexes[1]->field = "color";
	assert_int_equal(recode(r), SH_EINVAL);
	assert_non_null(strstr(err, "twice"));
	cfg->indexes[1]->field = kf;
	cfg->indexes[1]->type =
	    SHOAL__V1__PAYLOAD_TYPE__PAYLOAD_TYPE_UNSPECIFIED;
	assert_int_equal(recode(r), SH_EINVAL);
	sh_wire_free_request(r);

	r = sample(SHOAL__V1__REQUEST__OP_SET_SLOTS);
	Shoal__V1__SlotRange **rg = r->set_slots->owned->ranges;
	rg[1]->first = 4095; /* overlaps the first range */
	assert_int_equal(recode(r), SH_EINVAL);
	rg[1]->first = 4096;
	rg[1]->last = SH_SLOTS;
	assert_int_equal(recode(r), SH_EINVAL);
	rg[1]->last = SH_SLOTS - 1;
	assert_int_equal(recode(r), SH_OK);
	r->set_slots->map_epoch = 0;
	assert_int_equal(recode(r), SH_EINVAL);
	sh_wire_free_request(r);

	r = sample(SHOAL__V1__REQUEST__OP_STREAM_SLOT);
	r->stream_slot->slot = SH_SLOTS;
	assert_int_equal(recode(r), SH_EINVAL);
	sh_wire_free_request(r);
}

/* Slot bitmaps and SlotSets convert both ways, exactly, whatever the
 * pattern: empty, full, single slots at the edges, word boundaries,
 * alternating bits, random runs. */
static void test_slot_sets_round_trip(void **state)
{
	static uint64_t in[SH_WIRE_SLOT_WORDS], out[SH_WIRE_SLOT_WORDS];
	uint64_t seed = 1;
	for (int pattern = 0; pattern < 40; pattern++) {
		memset(in, 0, sizeof(in));
		if (pattern == 1)
			memset(in, 0xff, sizeof(in));
		else if (pattern == 2)
			in[0] = 1, in[SH_WIRE_SLOT_WORDS - 1] = 1ull << 63;
		else if (pattern == 3)
			for (size_t w = 0; w < SH_WIRE_SLOT_WORDS; w++)
				in[w] = 0x5555555555555555ull;
		else if (pattern == 4)
			in[3] = ~0ull, in[4] = 1; /* 192..256 */
		else if (pattern > 4)
			for (uint32_t x = 0; x < SH_SLOTS;) {
				seed = seed * 6364136223846793005ull + 1;
				uint32_t len = (uint32_t)(seed >> 40) % 300 + 1;
				bool on = (seed >> 20) & 1;
				for (uint32_t y = x;
				     y < x + len && y < SH_SLOTS; y++)
					if (on)
						in[y / 64] |= 1ull << (y % 64);
				x += len;
			}
		sh_arena a = {0};
		Shoal__V1__SlotSet *set = sh_wire_slots_to_set(&a, in);
		assert_non_null(set);
		for (size_t i = 0; i < set->n_ranges; i++) {
			assert_true(set->ranges[i]->first <=
				    set->ranges[i]->last);
			if (i)
				assert_true(set->ranges[i]->first >
					    set->ranges[i - 1]->last + 1);
		}
		sh_wire_slots_from_set(set, out);
		assert_memory_equal(in, out, sizeof(in));
		sh_arena_free(&a);
	}
	assert_int_equal(sh_wire_slots_next(in, SH_SLOTS, true), SH_SLOTS);
	memset(in, 0, sizeof(in));
	assert_int_equal(sh_wire_slots_next(in, 0, true), SH_SLOTS);
	assert_int_equal(sh_wire_slots_next(in, 5, false), 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_error_codes_mirror_error_h),
	    cmocka_unit_test(test_every_operation_round_trips),
	    cmocka_unit_test(test_decoded_fields_match_what_was_sent),
	    cmocka_unit_test(test_pid_conversion_round_trips),
	    cmocka_unit_test(test_response_round_trips),
	    cmocka_unit_test(test_oversized_message_is_etoobig),
	    cmocka_unit_test(test_every_prefix_of_a_valid_request_is_rejected),
	    cmocka_unit_test(test_garbage_bytes_are_rejected),
	    cmocka_unit_test(test_nan_and_infinity_in_vectors_are_enan),
	    cmocka_unit_test(test_impossible_dimensions_are_edim),
	    cmocka_unit_test(test_bad_string_ids_are_einval),
	    cmocka_unit_test(test_payload_must_be_a_json_object_within_64k),
	    cmocka_unit_test(test_filter_depth_and_size_are_bounded),
	    cmocka_unit_test(
		test_deep_protobuf_nesting_is_refused_before_unpacking),
	    cmocka_unit_test(test_malformed_filters_are_einval),
	    cmocka_unit_test(test_unknown_protocol_version_and_op),
	    cmocka_unit_test(test_batch_sizes_and_k_are_bounded),
	    cmocka_unit_test(test_allocation_amplification_is_refused),
	    cmocka_unit_test(test_bad_collections_and_slots_are_einval),
	    cmocka_unit_test(test_slot_sets_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
