/* Tests of libshoal against a real shoal-node on free 127.0.0.1 ports
 * (started with tests/integration/nodeproc.c, which makes it die with the
 * test through PR_SET_PDEATHSIG): every operation, filters built and
 * parsed, errors with their codes and messages, string ids, and one client
 * shared by several threads. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <stdatomic.h>
#include <time.h>

#include "error.h"
#include "nodeproc.h"
#include "shoal.h"
#include "wire.h"

#define DIM 4
#define N 200
#define COLL "items"

static char tmp[512], ddir[600];
static nodeproc node;
static shoal_client *cli;

static const char *const colors[] = {"red", "green", "blue"};

/* Point i: vector (i, i % 7, i % 3, 1); payload color by i % 3, price
 * i * 1.5, stock i % 7, active for even i. */
static void vec_of(uint64_t i, float *v)
{
	v[0] = (float)i;
	v[1] = (float)(i % 7);
	v[2] = (float)(i % 3);
	v[3] = 1;
}

static void payload_of(uint64_t i, char *buf, size_t cap)
{
	snprintf(buf, cap,
		 "{\"color\":\"%s\",\"price\":%g,\"stock\":%llu,"
		 "\"active\":%s}",
		 colors[i % 3], (double)i * 1.5, (unsigned long long)(i % 7),
		 i % 2 ? "false" : "true");
}

/* The reference: does point i pass `color = "red" and price < 100 and
 * active`? */
static bool ref_red_cheap_active(uint64_t i)
{
	return i % 3 == 0 && (double)i * 1.5 < 100 && i % 2 == 0;
}

static int setup(void **state)
{
	np_tmpdir(tmp, sizeof(tmp));
	snprintf(ddir, sizeof(ddir), "%s/node", tmp);
	if (np_start(&node, ddir, NULL) != 0)
		return -1;
	if (shoal_connect(node.url, 5000, &cli) != SHOAL_OK) {
		print_error("connect: %s\n", shoal_last_error());
		return -1;
	}
	shoal_payload_index idx[] = {{"color", SHOAL_PAYLOAD_KEYWORD},
				     {"price", SHOAL_PAYLOAD_FLOAT},
				     {"active", SHOAL_PAYLOAD_BOOL}};
	shoal_collection_config cfg = {.name = COLL,
				       .dim = DIM,
				       .metric = SHOAL_METRIC_L2,
				       .indexes = idx,
				       .n_indexes = 3};
	if (shoal_collection_create(cli, &cfg) != SHOAL_OK)
		return -1;
	static float vecs[N][DIM];
	static char payloads[N][128];
	shoal_point pts[N];
	for (uint64_t i = 0; i < N; i++) {
		vec_of(i, vecs[i]);
		payload_of(i, payloads[i], sizeof(payloads[i]));
		pts[i] = (shoal_point){.id = shoal_id_num(i),
				       .vector = vecs[i],
				       .dim = DIM,
				       .payload_json = payloads[i],
				       .version = 1};
	}
	shoal_write_result *wr;
	if (shoal_upsert(cli, COLL, pts, N, &wr) != SHOAL_OK)
		return -1;
	int ok = wr->n == N && wr->applied == N;
	shoal_write_result_free(wr);
	return ok ? 0 : -1;
}

static int teardown(void **state)
{
	shoal_close(cli);
	np_stop(&node, SIGTERM);
	np_rmrf(tmp);
	return 0;
}

/* ---- Errors and codes ---------------------------------------------------- */

static void test_codes_are_common_error_numbers(void **s)
{
	assert_int_equal(SHOAL_ENOCOLLECTION, SH_ENOCOLLECTION);
	assert_int_equal(SHOAL_ENAN, SH_ENAN);
	assert_string_equal(shoal_errname(SHOAL_EDIM), "EDIM");
	assert_string_equal(shoal_strerror(SHOAL_ENOCOLLECTION),
			    "unknown collection");
	assert_non_null(shoal_strerror(9999));
}

static void test_unknown_collection_is_enocollection(void **s)
{
	float v[DIM] = {1, 2, 3, 4};
	shoal_search_result *r = (shoal_search_result *)&r;
	assert_int_equal(shoal_search(cli, "nope", v, DIM, NULL, &r),
			 SHOAL_ENOCOLLECTION);
	assert_null(r);
	assert_true(strlen(shoal_last_error()) > 0);
	uint64_t n;
	assert_int_equal(shoal_count(cli, "nope", NULL, true, &n, NULL),
			 SHOAL_ENOCOLLECTION);
	assert_int_equal(shoal_collection_drop(cli, "nope"),
			 SHOAL_ENOCOLLECTION);
	shoal_collections *l;
	assert_int_equal(shoal_collection_info_get(cli, "nope", &l),
			 SHOAL_ENOCOLLECTION);
	assert_non_null(strstr(shoal_last_error(), "nope"));
}

static void test_wrong_dim_and_nan_are_refused_with_a_message(void **s)
{
	float v3[3] = {1, 2, 3};
	shoal_point p = {.id = shoal_id_num(9999), .vector = v3, .dim = 3};
	shoal_write_result *wr = (shoal_write_result *)&wr;
	assert_int_equal(shoal_upsert(cli, COLL, &p, 1, &wr), SHOAL_EDIM);
	assert_null(wr);
	assert_true(strlen(shoal_last_error()) > 0);
	float vn[DIM] = {1, NAN, 3, 4};
	p.vector = vn;
	p.dim = DIM;
	assert_int_equal(shoal_upsert(cli, COLL, &p, 1, NULL), SHOAL_ENAN);
	assert_true(strlen(shoal_last_error()) > 0);
	shoal_search_result *r;
	assert_int_equal(shoal_search(cli, COLL, v3, 3, NULL, &r), SHOAL_EDIM);
	assert_int_equal(shoal_search(cli, COLL, vn, DIM, NULL, &r),
			 SHOAL_ENAN);
	/* bad payload */
	float v[DIM] = {1, 2, 3, 4};
	p.vector = v;
	p.payload_json = "[1,2]";
	assert_int_equal(shoal_upsert(cli, COLL, &p, 1, NULL), SHOAL_EINVAL);
	/* nothing of it was written */
	shoal_id id = shoal_id_num(9999);
	shoal_points *got;
	assert_int_equal(shoal_get(cli, COLL, &id, 1, true, true, &got),
			 SHOAL_OK);
	assert_int_equal(got->n, 0);
	shoal_points_free(got);
	/* a success clears the thread's last error */
	assert_string_equal(shoal_last_error(), "");
}

static void test_bad_filter_text_names_the_offset(void **s)
{
	shoal_filter *f = (shoal_filter *)&f;
	char err[256];
	assert_int_equal(shoal_filter_parse("price < ", &f, err, sizeof(err)),
			 SHOAL_EINVAL);
	assert_null(f);
	assert_true(strlen(err) > 0);
	assert_non_null(strstr(shoal_last_error(), "filter"));
	/* a built filter beyond the limits is refused when used */
	assert_int_equal(shoal_filter_new(&f), SHOAL_OK);
	assert_int_equal(shoal_filter_range(f, SHOAL_MUST, "price", 10,
					    SHOAL_NO_BOUND, 5, SHOAL_NO_BOUND),
			 SHOAL_OK);
	uint64_t n;
	assert_int_equal(shoal_count(cli, COLL, f, true, &n, NULL),
			 SHOAL_EINVAL);
	assert_int_equal(shoal_filter_range(f, SHOAL_MUST, "price",
					    SHOAL_NO_BOUND, SHOAL_NO_BOUND,
					    SHOAL_NO_BOUND, SHOAL_NO_BOUND),
			 SHOAL_EINVAL);
	assert_int_equal(shoal_filter_exists(f, 7, "x"), SHOAL_EINVAL);
	shoal_filter_free(f);
}

static void test_connect_to_nothing_times_out(void **s)
{
	shoal_client *c = (shoal_client *)&c;
	/* port 1 on loopback: nothing listens */
	assert_int_equal(shoal_connect("tcp://127.0.0.1:1", 300, &c),
			 SHOAL_ETIMEDOUT);
	assert_null(c);
	assert_non_null(strstr(shoal_last_error(), "127.0.0.1:1"));
	assert_int_equal(shoal_connect("nonsense://x", 300, &c), SHOAL_EINVAL);
	shoal_close(NULL);
}

/* ---- Collections --------------------------------------------------------- */

static void test_collections_create_list_info_drop(void **s)
{
	shoal_payload_index idx[] = {{"tag", SHOAL_PAYLOAD_KEYWORD}};
	shoal_collection_config cfg = {.name = "other",
				       .dim = 8,
				       .metric = SHOAL_METRIC_COSINE,
				       .storage = SHOAL_STORAGE_INT8,
				       .m = 8,
				       .ef_construction = 64,
				       .ef_search = 32,
				       .indexes = idx,
				       .n_indexes = 1};
	assert_int_equal(shoal_collection_create(cli, &cfg), SHOAL_OK);
	assert_int_equal(shoal_collection_create(cli, &cfg), SHOAL_EEXIST);
	shoal_collections *l;
	assert_int_equal(shoal_collection_list(cli, &l), SHOAL_OK);
	assert_int_equal(l->n, 2);
	shoal_collections_free(l);
	assert_int_equal(shoal_collection_info_get(cli, "other", &l), SHOAL_OK);
	assert_int_equal(l->n, 1);
	const shoal_collection_config *g = &l->items[0].config;
	assert_string_equal(g->name, "other");
	assert_int_equal(g->dim, 8);
	assert_int_equal(g->metric, SHOAL_METRIC_COSINE);
	assert_int_equal(g->storage, SHOAL_STORAGE_INT8);
	assert_int_equal(g->m, 8);
	assert_int_equal(g->n_indexes, 1);
	assert_string_equal(g->indexes[0].field, "tag");
	assert_int_equal(g->indexes[0].type, SHOAL_PAYLOAD_KEYWORD);
	assert_int_equal(l->items[0].points, 0);
	shoal_collections_free(l);
	assert_int_equal(shoal_collection_info_get(cli, COLL, &l), SHOAL_OK);
	assert_int_equal(l->items[0].points, N);
	shoal_collections_free(l);
	assert_int_equal(shoal_collection_drop(cli, "other"), SHOAL_OK);
	assert_int_equal(shoal_collection_drop(cli, "other"),
			 SHOAL_ENOCOLLECTION);
	cfg.name = "bad name!";
	assert_int_equal(shoal_collection_create(cli, &cfg), SHOAL_EINVAL);
	cfg.name = "zero-dim";
	cfg.dim = 0;
	assert_int_equal(shoal_collection_create(cli, &cfg), SHOAL_EINVAL);
}

/* ---- Points and search --------------------------------------------------- */

static void test_get_returns_payload_vector_and_version(void **s)
{
	shoal_id ids[] = {shoal_id_num(5), shoal_id_num(100000),
			  shoal_id_num(7)};
	shoal_points *p;
	assert_int_equal(shoal_get(cli, COLL, ids, 3, true, true, &p),
			 SHOAL_OK);
	assert_int_equal(p->n, 2); /* the absent id is left out */
	assert_int_equal(p->points[0].id.kind, SHOAL_ID_NUM);
	assert_int_equal(p->points[0].id.num, 5);
	assert_int_equal(p->points[1].id.num, 7);
	assert_int_equal(p->points[0].dim, DIM);
	float v[DIM];
	vec_of(5, v);
	assert_memory_equal(p->points[0].vector, v, sizeof(v));
	assert_non_null(strstr(p->points[0].payload_json, "\"blue\""));
	assert_int_equal(p->points[0].version, 1);
	assert_int_equal(p->next_cursor_len, 0);
	shoal_points_free(p);
	/* without payload and vector */
	assert_int_equal(shoal_get(cli, COLL, ids, 1, false, false, &p),
			 SHOAL_OK);
	assert_int_equal(p->points[0].dim, 0);
	assert_null(p->points[0].vector);
	assert_string_equal(p->points[0].payload_json, "");
	shoal_points_free(p);
}

static void test_search_finds_the_exact_point_first(void **s)
{
	float q[DIM];
	vec_of(42, q);
	shoal_search_options o = SHOAL_SEARCH_OPTIONS_INIT;
	o.k = 5;
	o.with_payload = true;
	o.with_vector = true;
	shoal_search_result *r;
	assert_int_equal(shoal_search(cli, COLL, q, DIM, &o, &r), SHOAL_OK);
	assert_int_equal(r->n_queries, 1);
	const shoal_query_result *qr = &r->queries[0];
	assert_int_equal(qr->n_hits, 5);
	assert_int_equal(qr->hits[0].id.num, 42);
	assert_true(qr->hits[0].distance == 0.0f);
	for (size_t i = 1; i < qr->n_hits; i++)
		assert_true(qr->hits[i].distance >= qr->hits[i - 1].distance);
	assert_int_equal(qr->hits[0].dim, DIM);
	assert_memory_equal(qr->hits[0].vector, q, sizeof(q));
	assert_non_null(strstr(qr->hits[0].payload_json, "\"red\""));
	assert_int_equal(qr->hits[0].version, 1);
	assert_true(qr->plan == SHOAL_PLAN_GRAPH ||
		    qr->plan == SHOAL_PLAN_EXACT_SCAN);
	shoal_search_result_free(r);
	/* NULL options: k = 10 */
	assert_int_equal(shoal_search(cli, COLL, q, DIM, NULL, &r), SHOAL_OK);
	assert_int_equal(r->queries[0].n_hits, 10);
	assert_string_equal(r->queries[0].hits[0].payload_json, "");
	shoal_search_result_free(r);
}

static void test_search_batch_answers_each_query_in_order(void **s)
{
	enum { NQ = 6 };
	float qs[NQ * DIM];
	for (int i = 0; i < NQ; i++)
		vec_of((uint64_t)i * 30, qs + i * DIM);
	shoal_search_options o = SHOAL_SEARCH_OPTIONS_INIT;
	o.k = 3;
	o.ef = 64;
	o.timeout_ms = 3000;
	shoal_search_result *r;
	assert_int_equal(shoal_search_batch(cli, COLL, qs, NQ, DIM, &o, &r),
			 SHOAL_OK);
	assert_int_equal(r->n_queries, NQ);
	for (int i = 0; i < NQ; i++) {
		assert_int_equal(r->queries[i].n_hits, 3);
		assert_int_equal(r->queries[i].hits[0].id.num,
				 (uint64_t)i * 30);
	}
	/* a single node reports no fan-out */
	assert_int_equal(r->nodes_asked, r->nodes_answered);
	shoal_search_result_free(r);
	o.min_coverage = 2;
	assert_int_equal(shoal_search_batch(cli, COLL, qs, NQ, DIM, &o, &r),
			 SHOAL_EINVAL);
}

/* The same filter built with functions and parsed from text selects the
 * same points, and the reference says which. */
static void test_filter_by_builder_and_by_text_agree(void **s)
{
	shoal_filter *b, *t;
	assert_int_equal(shoal_filter_new(&b), SHOAL_OK);
	assert_int_equal(
	    shoal_filter_match_keyword(b, SHOAL_MUST, "color", "red"),
	    SHOAL_OK);
	assert_int_equal(shoal_filter_range(b, SHOAL_MUST, "price",
					    SHOAL_NO_BOUND, SHOAL_NO_BOUND, 100,
					    SHOAL_NO_BOUND),
			 SHOAL_OK);
	assert_int_equal(shoal_filter_match_bool(b, SHOAL_MUST, "active", true),
			 SHOAL_OK);
	assert_int_equal(
	    shoal_filter_parse("color = \"red\" and price < 100 and active", &t,
			       NULL, 0),
	    SHOAL_OK);
	uint64_t want = 0;
	for (uint64_t i = 0; i < N; i++)
		want += ref_red_cheap_active(i);
	uint64_t nb, nt;
	bool exact;
	assert_int_equal(shoal_count(cli, COLL, b, true, &nb, &exact),
			 SHOAL_OK);
	assert_int_equal(shoal_count(cli, COLL, t, true, &nt, NULL), SHOAL_OK);
	assert_int_equal(nb, want);
	assert_int_equal(nt, want);
	assert_true(exact);
	float q[DIM];
	vec_of(60, q);
	shoal_search_options o = SHOAL_SEARCH_OPTIONS_INIT;
	o.k = N;
	o.filter = b;
	shoal_search_result *rb, *rt;
	assert_int_equal(shoal_search(cli, COLL, q, DIM, &o, &rb), SHOAL_OK);
	o.filter = t;
	assert_int_equal(shoal_search(cli, COLL, q, DIM, &o, &rt), SHOAL_OK);
	assert_int_equal(rb->queries[0].n_hits, want);
	assert_int_equal(rt->queries[0].n_hits, want);
	for (size_t i = 0; i < want; i++) {
		assert_true(
		    ref_red_cheap_active(rb->queries[0].hits[i].id.num));
		assert_int_equal(rb->queries[0].hits[i].id.num,
				 rt->queries[0].hits[i].id.num);
	}
	assert_int_equal(rb->queries[0].hits[0].id.num, 60);
	shoal_search_result_free(rb);
	shoal_search_result_free(rt);
	shoal_filter_free(b);
	shoal_filter_free(t);
}

/* Every builder, nested, against its text. */
static void test_every_builder_matches_its_text(void **s)
{
	const char *texts[] = {
	    "color in [\"green\", \"blue\"] and stock in [1, 2]",
	    "exists(price) and not has_id(1, 2, 3)",
	    "stock = 3 or (price >= 30 and price <= 45)",
	};
	shoal_filter *f[3];
	for (int i = 0; i < 3; i++)
		assert_int_equal(shoal_filter_new(&f[i]), SHOAL_OK);
	const char *cols[] = {"green", "blue"};
	int64_t stocks[] = {1, 2};
	assert_int_equal(
	    shoal_filter_match_any_keyword(f[0], SHOAL_MUST, "color", cols, 2),
	    SHOAL_OK);
	assert_int_equal(shoal_filter_match_any_integer(f[0], SHOAL_MUST,
							"stock", stocks, 2),
			 SHOAL_OK);
	shoal_id ids[] = {shoal_id_num(1), shoal_id_num(2), shoal_id_num(3)};
	assert_int_equal(shoal_filter_exists(f[1], SHOAL_MUST, "price"),
			 SHOAL_OK);
	assert_int_equal(shoal_filter_has_id(f[1], SHOAL_MUST_NOT, ids, 3),
			 SHOAL_OK);
	shoal_filter *sub;
	assert_int_equal(shoal_filter_new(&sub), SHOAL_OK);
	assert_int_equal(shoal_filter_range(sub, SHOAL_MUST, "price",
					    SHOAL_NO_BOUND, 30, SHOAL_NO_BOUND,
					    45),
			 SHOAL_OK);
	assert_int_equal(
	    shoal_filter_match_integer(f[2], SHOAL_SHOULD, "stock", 3),
	    SHOAL_OK);
	assert_int_equal(shoal_filter_nested(f[2], SHOAL_SHOULD, sub),
			 SHOAL_OK);
	for (int i = 0; i < 3; i++) {
		shoal_filter *t;
		assert_int_equal(shoal_filter_parse(texts[i], &t, NULL, 0),
				 SHOAL_OK);
		uint64_t a, b;
		assert_int_equal(shoal_count(cli, COLL, f[i], true, &a, NULL),
				 SHOAL_OK);
		assert_int_equal(shoal_count(cli, COLL, t, true, &b, NULL),
				 SHOAL_OK);
		assert_int_equal(a, b);
		assert_true(a > 0 && a < N);
		shoal_filter_free(t);
		shoal_filter_free(f[i]);
	}
}

static void test_scroll_pages_through_every_point_once(void **s)
{
	static bool seen[N];
	memset(seen, 0, sizeof(seen));
	shoal_scroll_options o = {.limit = 37, .with_payload = true};
	uint8_t cursor[1024];
	size_t total = 0, pages = 0;
	for (;;) {
		shoal_points *p;
		assert_int_equal(shoal_scroll(cli, COLL, &o, &p), SHOAL_OK);
		assert_true(p->n <= 37);
		for (size_t i = 0; i < p->n; i++) {
			uint64_t id = p->points[i].id.num;
			assert_true(id < N && !seen[id]);
			seen[id] = true;
			assert_non_null(
			    strstr(p->points[i].payload_json, "color"));
		}
		total += p->n;
		pages++;
		size_t cl = p->next_cursor_len;
		assert_true(cl <= sizeof(cursor));
		if (cl)
			memcpy(cursor, p->next_cursor, cl);
		shoal_points_free(p);
		if (!cl)
			break;
		o.cursor = cursor;
		o.cursor_len = cl;
	}
	assert_int_equal(total, N);
	assert_true(pages >= 6);
	/* with a filter */
	shoal_filter *f;
	assert_int_equal(shoal_filter_parse("color = \"blue\"", &f, NULL, 0),
			 SHOAL_OK);
	shoal_scroll_options fo = {.filter = f, .limit = 1000};
	shoal_points *p;
	assert_int_equal(shoal_scroll(cli, COLL, &fo, &p), SHOAL_OK);
	assert_int_equal(p->n, N / 3 + (N % 3 > 2));
	shoal_points_free(p);
	shoal_filter_free(f);
	/* a forged cursor */
	uint8_t junk[5] = {1, 2, 3, 4, 5};
	shoal_scroll_options bad = {.cursor = junk, .cursor_len = 5};
	assert_int_equal(shoal_scroll(cli, COLL, &bad, &p), SHOAL_EINVAL);
}

static void test_versions_and_deletes(void **s)
{
	/* a stale write is reported, not applied */
	float v[DIM] = {0.5f, 0.5f, 0.5f, 0.5f};
	shoal_point p = {.id = shoal_id_num(3),
			 .vector = v,
			 .dim = DIM,
			 .payload_json = "{\"color\":\"pink\"}",
			 .version = 0};
	shoal_write_result *wr;
	assert_int_equal(shoal_upsert(cli, COLL, &p, 1, &wr), SHOAL_OK);
	assert_int_equal(wr->n, 1);
	assert_int_equal(wr->statuses[0].code, SHOAL_ESTALE);
	assert_int_equal(wr->ignored, 1);
	shoal_write_result_free(wr);
	/* delete by ids */
	shoal_id ids[] = {shoal_id_num(190), shoal_id_num(191),
			  shoal_id_num(77777)};
	uint64_t vers[] = {2, 2, 2};
	assert_int_equal(shoal_delete(cli, COLL, ids, vers, 3, &wr), SHOAL_OK);
	assert_int_equal(wr->n, 3);
	assert_int_equal(wr->statuses[0].code, SHOAL_OK);
	assert_int_equal(wr->statuses[2].code, SHOAL_ENOTFOUND);
	assert_int_equal(wr->statuses[2].id.num, 77777);
	assert_int_equal(wr->applied, 2);
	shoal_write_result_free(wr);
	/* a lower version cannot bring it back */
	vec_of(190, v);
	p.id = shoal_id_num(190);
	p.vector = v;
	p.version = 1;
	assert_int_equal(shoal_upsert(cli, COLL, &p, 1, &wr), SHOAL_OK);
	assert_int_equal(wr->statuses[0].code, SHOAL_ESTALE);
	shoal_write_result_free(wr);
	shoal_search_options o = SHOAL_SEARCH_OPTIONS_INIT;
	o.k = 3;
	shoal_search_result *r;
	assert_int_equal(shoal_search(cli, COLL, v, DIM, &o, &r), SHOAL_OK);
	for (size_t i = 0; i < r->queries[0].n_hits; i++)
		assert_true(r->queries[0].hits[i].id.num != 190);
	shoal_search_result_free(r);
	/* delete by filter */
	shoal_filter *f;
	assert_int_equal(shoal_filter_parse("price >= 270", &f, NULL, 0),
			 SHOAL_OK);
	uint64_t before, after;
	assert_int_equal(shoal_count(cli, COLL, f, true, &before, NULL),
			 SHOAL_OK);
	assert_true(before > 0);
	assert_int_equal(shoal_delete_by_filter(cli, COLL, f, 5, &wr),
			 SHOAL_OK);
	assert_int_equal(wr->n, before);
	assert_int_equal(wr->applied, before);
	shoal_write_result_free(wr);
	assert_int_equal(shoal_count(cli, COLL, f, true, &after, NULL),
			 SHOAL_OK);
	assert_int_equal(after, 0);
	shoal_filter_free(f);
	shoal_filter *empty;
	assert_int_equal(shoal_filter_new(&empty), SHOAL_OK);
	assert_int_equal(shoal_delete_by_filter(cli, COLL, empty, 5, NULL),
			 SHOAL_EINVAL);
	shoal_filter_free(empty);
}

static void test_string_ids_round_trip(void **s)
{
	shoal_collection_config cfg = {
	    .name = "skus", .dim = 2, .metric = SHOAL_METRIC_IP};
	assert_int_equal(shoal_collection_create(cli, &cfg), SHOAL_OK);
	float vs[3][2] = {{1, 0}, {0, 1}, {0.7f, 0.7f}};
	shoal_point pts[3] = {
	    {.id = shoal_id_str("sku-1"), .vector = vs[0], .dim = 2},
	    {.id = shoal_id_str("sku-2"), .vector = vs[1], .dim = 2},
	    {.id = shoal_id_num(1), .vector = vs[2], .dim = 2},
	};
	assert_int_equal(shoal_upsert(cli, "skus", pts, 3, NULL), SHOAL_OK);
	shoal_search_result *r;
	assert_int_equal(shoal_search(cli, "skus", vs[0], 2, NULL, &r),
			 SHOAL_OK);
	assert_int_equal(r->queries[0].n_hits, 3);
	assert_int_equal(r->queries[0].hits[0].id.kind, SHOAL_ID_STR);
	assert_string_equal(r->queries[0].hits[0].id.str, "sku-1");
	shoal_search_result_free(r);
	shoal_id ids[] = {shoal_id_str("sku-2"), shoal_id_str("1")};
	shoal_points *p;
	assert_int_equal(shoal_get(cli, "skus", ids, 2, false, true, &p),
			 SHOAL_OK);
	assert_int_equal(p->n, 1); /* "1" is not the integer 1 */
	assert_string_equal(p->points[0].id.str, "sku-2");
	shoal_points_free(p);
	shoal_filter *f;
	assert_int_equal(
	    shoal_filter_parse("has_id(\"sku-2\", 1)", &f, NULL, 0), SHOAL_OK);
	uint64_t n;
	assert_int_equal(shoal_count(cli, "skus", f, true, &n, NULL), SHOAL_OK);
	assert_int_equal(n, 2);
	shoal_filter_free(f);
	assert_int_equal(shoal_delete(cli, "skus", ids, NULL, 1, NULL),
			 SHOAL_OK);
	assert_int_equal(shoal_count(cli, "skus", NULL, true, &n, NULL),
			 SHOAL_OK);
	assert_int_equal(n, 2);
	/* a string id over 64 bytes */
	char longid[80];
	memset(longid, 'x', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = 0;
	pts[0].id = shoal_id_str(longid);
	assert_int_equal(shoal_upsert(cli, "skus", pts, 1, NULL), SHOAL_EINVAL);
	shoal_id bad = {.kind = 7};
	assert_int_equal(shoal_get(cli, "skus", &bad, 1, false, false, &p),
			 SHOAL_EINVAL);
	assert_int_equal(shoal_collection_drop(cli, "skus"), SHOAL_OK);
}

/* ---- A server that answers badly
 * --------------------------------------------- Everything a client reads from
 * the network is untrusted: a fake server on an nng REP socket answers each
 * request the way `fake_mode` says, and every bad answer must be an error with
 * a message, never a crash or a leak. */

enum {
	FK_HEALTHY,	  /* a proper health answer (for connect) */
	FK_GARBAGE,	  /* bytes that are not a Response */
	FK_WRONG_RESULT,  /* OK with a count result to a search */
	FK_FEW_RESULTS,	  /* no query results for one query */
	FK_HIT_NO_ID,	  /* a hit without an id */
	FK_TOO_MANY_HITS, /* more hits than k */
	FK_OTHER_ID,	  /* answers another request id */
	FK_NEW_CODE,	  /* an error code newer than this build */
	FK_FEW_STATUSES,  /* an upsert answer without the point's status */
	FK_SILENT,	  /* never answers */
};

static atomic_int fake_mode;
static nng_socket fake_sock;

static void fake_answer(uint64_t rid, int mode)
{
	Shoal__V1__Response r;
	sh_wire_response_init(&r, rid, 0);
	Shoal__V1__HealthResult health = SHOAL__V1__HEALTH_RESULT__INIT;
	Shoal__V1__CountResult count = SHOAL__V1__COUNT_RESULT__INIT;
	Shoal__V1__SearchResult sr = SHOAL__V1__SEARCH_RESULT__INIT;
	Shoal__V1__QueryHits qh = SHOAL__V1__QUERY_HITS__INIT, *qhp[1] = {&qh};
	Shoal__V1__Hit hit[3] = {SHOAL__V1__HIT__INIT, SHOAL__V1__HIT__INIT,
				 SHOAL__V1__HIT__INIT};
	Shoal__V1__Hit *hitp[3] = {&hit[0], &hit[1], &hit[2]};
	Shoal__V1__PointId pid = SHOAL__V1__POINT_ID__INIT;
	pid.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	pid.num = 1;
	Shoal__V1__WriteResult wr = SHOAL__V1__WRITE_RESULT__INIT;
	switch (mode) {
	case FK_GARBAGE: {
		uint8_t junk[] = {0xff, 0xff, 0xff, 0x0f, 0x01};
		nng_send(fake_sock, junk, sizeof(junk), 0);
		return;
	}
	case FK_WRONG_RESULT:
		r.result_case = SHOAL__V1__RESPONSE__RESULT_COUNT;
		r.count = &count;
		break;
	case FK_FEW_RESULTS:
		r.result_case = SHOAL__V1__RESPONSE__RESULT_SEARCH;
		r.search = &sr;
		break;
	case FK_HIT_NO_ID:
	case FK_TOO_MANY_HITS:
		r.result_case = SHOAL__V1__RESPONSE__RESULT_SEARCH;
		r.search = &sr;
		sr.n_results = 1;
		sr.results = qhp;
		qh.hits = hitp;
		qh.n_hits = mode == FK_HIT_NO_ID ? 1 : 3;
		for (int i = 0; mode == FK_TOO_MANY_HITS && i < 3; i++)
			hit[i].id = &pid;
		break;
	case FK_OTHER_ID:
		r.request_id = rid + 1000;
		r.result_case = SHOAL__V1__RESPONSE__RESULT_HEALTH;
		r.health = &health;
		break;
	case FK_NEW_CODE:
		r.code = (Shoal__V1__ErrorCode)99;
		r.message = "a code from the future";
		break;
	case FK_FEW_STATUSES:
		r.result_case = SHOAL__V1__RESPONSE__RESULT_UPSERT;
		r.upsert = &wr;
		break;
	default:
		r.result_case = SHOAL__V1__RESPONSE__RESULT_HEALTH;
		r.health = &health;
		health.status = SHOAL__V1__HEALTH__SERVING;
		break;
	}
	uint8_t *buf;
	size_t len;
	if (sh_wire_encode_response(&r, &buf, &len) == SH_OK) {
		nng_send(fake_sock, buf, len, 0);
		free(buf);
	}
}

static void *fake_server(void *arg)
{
	for (;;) {
		nng_msg *m;
		if (nng_recvmsg(fake_sock, &m, 0) != 0)
			return NULL; /* closed */
		uint64_t rid =
		    sh_wire_peek_request_id(nng_msg_body(m), nng_msg_len(m));
		nng_msg_free(m);
		int mode = atomic_load(&fake_mode);
		if (mode != FK_SILENT)
			fake_answer(rid, mode);
	}
}

static void test_malformed_responses_are_errors_not_crashes(void **s)
{
	nng_listener l;
	assert_int_equal(nng_rep0_open(&fake_sock), 0);
	assert_int_equal(nng_listen(fake_sock, "tcp://127.0.0.1:0", &l, 0), 0);
	int port;
	assert_int_equal(nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port),
			 0);
	char url[64];
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	pthread_t th;
	atomic_store(&fake_mode, FK_GARBAGE);
	assert_int_equal(pthread_create(&th, NULL, fake_server, NULL), 0);

	/* connect refuses a server that does not speak the protocol */
	shoal_client *c;
	assert_int_equal(shoal_connect(url, 2000, &c), SHOAL_EINVAL);
	assert_non_null(strstr(shoal_last_error(), "malformed"));
	atomic_store(&fake_mode, FK_HEALTHY);
	assert_int_equal(shoal_connect(url, 2000, &c), SHOAL_OK);

	float v[DIM] = {1, 2, 3, 4};
	shoal_search_options o = SHOAL_SEARCH_OPTIONS_INIT;
	o.k = 1;
	static const int modes[] = {FK_GARBAGE,	      FK_WRONG_RESULT,
				    FK_FEW_RESULTS,   FK_HIT_NO_ID,
				    FK_TOO_MANY_HITS, FK_OTHER_ID};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		atomic_store(&fake_mode, modes[i]);
		shoal_search_result *r = (shoal_search_result *)&r;
		assert_int_equal(shoal_search(c, "x", v, DIM, &o, &r),
				 SHOAL_EINVAL);
		assert_null(r);
		assert_non_null(strstr(shoal_last_error(), "malformed"));
	}
	/* a code newer than this build arrives as it is, with its message */
	atomic_store(&fake_mode, FK_NEW_CODE);
	uint64_t n;
	assert_int_equal(shoal_count(c, "x", NULL, true, &n, NULL), 99);
	assert_string_equal(shoal_last_error(), "a code from the future");
	assert_non_null(shoal_strerror(99));
	/* an upsert answer that does not account for every point */
	atomic_store(&fake_mode, FK_FEW_STATUSES);
	shoal_point p = {.id = shoal_id_num(1), .vector = v, .dim = DIM};
	shoal_write_result *wr = (shoal_write_result *)&wr;
	assert_int_equal(shoal_upsert(c, "x", &p, 1, &wr), SHOAL_EINVAL);
	assert_null(wr);
	/* silence: a search's own deadline bounds the wait */
	atomic_store(&fake_mode, FK_SILENT);
	o.timeout_ms = 200;
	shoal_search_result *r;
	double t0 = np_now_s();
	assert_int_equal(shoal_search(c, "x", v, DIM, &o, &r), SHOAL_ETIMEDOUT);
	double took = np_now_s() - t0;
	assert_true(took >= 0.15 && took < 1.5);
	shoal_close(c);
	nng_close(fake_sock);
	pthread_join(th, NULL);
}

/* Single quotes in the text form mean what double quotes mean. */
static void test_single_quoted_strings_parse_like_double(void **s)
{
	static const char *const pairs[][2] = {
	    {"color = 'red' and price < 100",
	     "color = \"red\" and price < 100"},
	    {"color in ['green', 'blue']", "color in [\"green\", \"blue\"]"},
	    {"color != 'it\\'s' or color = \"'\"",
	     "color != \"it's\" or color = \"'\""},
	    {"has_id('sku-1', 3)", "has_id(\"sku-1\", 3)"},
	};
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		shoal_filter *a, *b;
		assert_int_equal(shoal_filter_parse(pairs[i][0], &a, NULL, 0),
				 SHOAL_OK);
		assert_int_equal(shoal_filter_parse(pairs[i][1], &b, NULL, 0),
				 SHOAL_OK);
		uint64_t na, nb;
		assert_int_equal(shoal_count(cli, COLL, a, true, &na, NULL),
				 SHOAL_OK);
		assert_int_equal(shoal_count(cli, COLL, b, true, &nb, NULL),
				 SHOAL_OK);
		assert_int_equal(na, nb);
		shoal_filter_free(a);
		shoal_filter_free(b);
	}
	shoal_filter *f = (shoal_filter *)&f;
	assert_int_equal(shoal_filter_parse("color = 'red", &f, NULL, 0),
			 SHOAL_EINVAL);
	assert_null(f);
}

/* ---- Threads
 * ------------------------------------------------------------------ */

#define THREADS 6
#define ROUNDS 40

/* Each thread writes its own points and asks questions whose answers are
 * its own (its ids; k depending on the thread), so that an answer crossing
 * over to another thread's call would be seen. */
static void *worker(void *arg)
{
	uintptr_t t = (uintptr_t)arg;
	for (int r = 0; r < ROUNDS; r++) {
		uint64_t id = 100000 + t * 1000 + (uint64_t)r;
		float v[DIM] = {(float)id, 1, 2, 3};
		shoal_point p = {.id = shoal_id_num(id),
				 .vector = v,
				 .dim = DIM,
				 .payload_json = "{}"};
		if (shoal_upsert(cli, COLL, &p, 1, NULL) != SHOAL_OK) {
			fprintf(stderr, "upsert: %s\n", shoal_last_error());
			return (void *)1;
		}
		shoal_points *got;
		if (shoal_get(cli, COLL, &p.id, 1, false, true, &got) !=
		    SHOAL_OK) {
			fprintf(stderr, "get: %s\n", shoal_last_error());
			return (void *)2;
		}
		bool ok = got->n == 1 && got->points[0].id.num == id &&
			  got->points[0].dim == DIM &&
			  got->points[0].vector[0] == (float)id;
		shoal_points_free(got);
		if (!ok)
			return (void *)3;
		shoal_search_options o = SHOAL_SEARCH_OPTIONS_INIT;
		o.k = 1 + (uint32_t)t;
		shoal_search_result *res;
		if (shoal_search(cli, COLL, v, DIM, &o, &res) != SHOAL_OK) {
			fprintf(stderr, "search: %s\n", shoal_last_error());
			return (void *)4;
		}
		/* at most k hits, closest first (not exactly k: an HNSW
		 * search racing inserts may return fewer, see the SDK
		 * report) */
		const shoal_query_result *qr = &res->queries[0];
		ok = qr->n_hits >= 1 && qr->n_hits <= o.k;
		for (size_t i = 1; ok && i < qr->n_hits; i++)
			ok = qr->hits[i].distance >= qr->hits[i - 1].distance;
		shoal_search_result_free(res);
		if (!ok)
			return (void *)5;
		/* an exact answer only this thread can expect: how many of
		 * its own points exist so far */
		shoal_filter *f;
		shoal_id mine[ROUNDS];
		for (int j = 0; j <= r; j++)
			mine[j] = shoal_id_num(100000 + t * 1000 + (uint64_t)j);
		if (shoal_filter_new(&f) != SHOAL_OK ||
		    shoal_filter_has_id(f, SHOAL_MUST, mine, (size_t)r + 1) !=
			SHOAL_OK)
			return (void *)6;
		uint64_t n = 0;
		int rc = shoal_count(cli, COLL, f, true, &n, NULL);
		shoal_filter_free(f);
		if (rc != SHOAL_OK || n != (uint64_t)r + 1)
			return (void *)7;
		/* errors are per thread */
		if (shoal_count(cli, "nope", NULL, true, &id, NULL) !=
			SHOAL_ENOCOLLECTION ||
		    !strstr(shoal_last_error(), "nope"))
			return (void *)8;
	}
	return NULL;
}

static void test_one_client_many_threads(void **s)
{
	pthread_t th[THREADS];
	for (uintptr_t i = 0; i < THREADS; i++)
		assert_int_equal(
		    pthread_create(&th[i], NULL, worker, (void *)i), 0);
	for (int i = 0; i < THREADS; i++) {
		void *rv;
		pthread_join(th[i], &rv);
		if (rv)
			fail_msg("thread %d failed at step %d: %s", i,
				 (int)(uintptr_t)rv, shoal_last_error());
	}
	shoal_filter *f;
	assert_int_equal(shoal_filter_new(&f), SHOAL_OK);
	assert_int_equal(shoal_filter_range(f, SHOAL_MUST, "x", 1,
					    SHOAL_NO_BOUND, SHOAL_NO_BOUND,
					    SHOAL_NO_BOUND),
			 SHOAL_OK);
	shoal_filter_free(f);
	shoal_id ids[THREADS * ROUNDS];
	for (int i = 0; i < THREADS * ROUNDS; i++)
		ids[i] = shoal_id_num(100000 + (uint64_t)(i / ROUNDS) * 1000 +
				      (uint64_t)(i % ROUNDS));
	shoal_points *p;
	assert_int_equal(
	    shoal_get(cli, COLL, ids, THREADS * ROUNDS, false, false, &p),
	    SHOAL_OK);
	assert_int_equal(p->n, THREADS * ROUNDS);
	shoal_points_free(p);
	assert_int_equal(
	    shoal_delete(cli, COLL, ids, NULL, THREADS * ROUNDS, NULL),
	    SHOAL_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codes_are_common_error_numbers),
	    cmocka_unit_test(test_connect_to_nothing_times_out),
	    cmocka_unit_test(test_collections_create_list_info_drop),
	    cmocka_unit_test(test_get_returns_payload_vector_and_version),
	    cmocka_unit_test(test_search_finds_the_exact_point_first),
	    cmocka_unit_test(test_search_batch_answers_each_query_in_order),
	    cmocka_unit_test(test_filter_by_builder_and_by_text_agree),
	    cmocka_unit_test(test_every_builder_matches_its_text),
	    cmocka_unit_test(test_scroll_pages_through_every_point_once),
	    cmocka_unit_test(test_unknown_collection_is_enocollection),
	    cmocka_unit_test(test_wrong_dim_and_nan_are_refused_with_a_message),
	    cmocka_unit_test(test_bad_filter_text_names_the_offset),
	    cmocka_unit_test(test_string_ids_round_trip),
	    cmocka_unit_test(test_single_quoted_strings_parse_like_double),
	    cmocka_unit_test(test_malformed_responses_are_errors_not_crashes),
	    cmocka_unit_test(test_one_client_many_threads),
	    cmocka_unit_test(test_versions_and_deletes),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
