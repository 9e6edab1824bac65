/* End to end through the C SDK: three shoal-node processes and a router on
 * free 127.0.0.1 ports next to a reference node. Writes, reads and deletes
 * through the router; searches with filters (by builder and by text)
 * identical, ids and order, to the reference's; coverage when a node is
 * down (fails by default naming the node, partial when asked) and routing
 * after it restarts. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nodeproc.h"
#include "shoal.h"

#define DIM 8
#define N 500
#define NN 3

static char tmp[512];
static nodeproc nodes[NN], ref, router;
static shoal_client *rc_, *refc;

static void vec_of(uint64_t i, float *v)
{
	for (int j = 0; j < DIM; j++)
		v[j] = (float)cos((double)(i * 17 + (uint64_t)j * 3));
}

static int setup(void **state)
{
	np_tmpdir(tmp, sizeof(tmp));
	char dir[600], list[2048] = "";
	for (int i = 0; i < NN; i++) {
		snprintf(dir, sizeof(dir), "%s/node%d", tmp, i + 1);
		if (np_start(&nodes[i], dir, NULL))
			return -1;
		strcat(list, i ? "," : "");
		strcat(list, nodes[i].url);
	}
	snprintf(dir, sizeof(dir), "%s/ref", tmp);
	if (np_start(&ref, dir, NULL))
		return -1;
	snprintf(dir, sizeof(dir), "%s/router", tmp);
	const char *extra[] = {"--nodes", list, "--read-timeout-ms", "1000",
			       NULL};
	if (np_start_bin(&router, "SHOAL_ROUTER_BIN", dir, extra))
		return -1;
	if (shoal_connect(router.url, 10000, &rc_) ||
	    shoal_connect(ref.url, 10000, &refc))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	shoal_close(rc_);
	shoal_close(refc);
	np_stop(&router, SIGKILL);
	for (int i = 0; i < NN; i++)
		np_stop(&nodes[i], SIGKILL);
	np_stop(&ref, SIGKILL);
	np_rmrf(tmp);
	return 0;
}

static void load(shoal_client *c)
{
	shoal_payload_index ix[2] = {{"color", SHOAL_PAYLOAD_KEYWORD},
				     {"size", SHOAL_PAYLOAD_INTEGER}};
	shoal_collection_config cfg = {.name = "items",
				       .dim = DIM,
				       .metric = SHOAL_METRIC_L2,
				       .indexes = ix,
				       .n_indexes = 2};
	assert_int_equal(shoal_collection_create(c, &cfg), SHOAL_OK);
	static float v[N][DIM];
	static char pl[N][64];
	shoal_point pts[N];
	for (uint64_t i = 0; i < N; i++) {
		vec_of(i, v[i]);
		snprintf(pl[i], sizeof(pl[i]), "{\"color\":\"%s\",\"size\":%d}",
			 i % 3 ? "red" : "blue", (int)(i % 10));
		pts[i] = (shoal_point){.id = shoal_id_num(i),
				       .vector = v[i],
				       .dim = DIM,
				       .payload_json = pl[i],
				       .version = 1};
	}
	shoal_write_result *wr;
	assert_int_equal(shoal_upsert(c, "items", pts, N, &wr), SHOAL_OK);
	assert_int_equal(wr->applied, N);
	shoal_write_result_free(wr);
}

static void test_same_answers_as_one_node(void **state)
{
	load(rc_);
	load(refc);
	uint64_t n;
	assert_int_equal(shoal_count(rc_, "items", NULL, true, &n, NULL),
			 SHOAL_OK);
	assert_int_equal(n, N);
	/* get across nodes, in request order, absent ids left out */
	shoal_id ids[4] = {shoal_id_num(499), shoal_id_num(7),
			   shoal_id_num(123456), shoal_id_num(0)};
	shoal_points *got;
	assert_int_equal(shoal_get(rc_, "items", ids, 4, true, true, &got),
			 SHOAL_OK);
	assert_int_equal(got->n, 3);
	shoal_points_free(got);
	/* delete through the router, on both */
	shoal_id del[2] = {shoal_id_num(3), shoal_id_num(4)};
	uint64_t vers[2] = {2, 2}; /* above the upserts' 1 */
	shoal_write_result *wr;
	assert_int_equal(shoal_delete(rc_, "items", del, vers, 2, &wr),
			 SHOAL_OK);
	assert_int_equal(wr->applied, 2);
	shoal_write_result_free(wr);
	assert_int_equal(shoal_delete(refc, "items", del, vers, 2, NULL),
			 SHOAL_OK);

	shoal_filter *fb;
	assert_int_equal(shoal_filter_new(&fb), SHOAL_OK);
	assert_int_equal(
	    shoal_filter_match_keyword(fb, SHOAL_MUST, "color", "red"),
	    SHOAL_OK);
	assert_int_equal(shoal_filter_range(fb, SHOAL_MUST, "size",
					    SHOAL_NO_BOUND, 2, 8,
					    SHOAL_NO_BOUND),
			 SHOAL_OK);
	shoal_filter *ft;
	char err[256];
	assert_int_equal(shoal_filter_parse("color = 'blue' or size >= 9", &ft,
					    err, sizeof(err)),
			 SHOAL_OK);
	const shoal_filter *fs[3] = {NULL, fb, ft};
	for (int t = 0; t < 8; t++) {
		float q[DIM];
		vec_of(9000 + (uint64_t)t, q);
		for (int f = 0; f < 3; f++) {
			shoal_search_options so = SHOAL_SEARCH_OPTIONS_INIT;
			so.k = 12;
			so.ef = 2000; /* above the size: exact on every node */
			so.filter = fs[f];
			shoal_search_result *a, *b;
			assert_int_equal(
			    shoal_search(rc_, "items", q, DIM, &so, &a),
			    SHOAL_OK);
			assert_int_equal(
			    shoal_search(refc, "items", q, DIM, &so, &b),
			    SHOAL_OK);
			assert_int_equal(a->queries[0].n_hits,
					 b->queries[0].n_hits);
			for (size_t h = 0; h < a->queries[0].n_hits; h++)
				assert_int_equal(a->queries[0].hits[h].id.num,
						 b->queries[0].hits[h].id.num);
			assert_int_equal(a->nodes_answered, NN);
			assert_int_equal(a->nodes_asked, NN);
			shoal_search_result_free(a);
			shoal_search_result_free(b);
		}
	}
	shoal_filter_free(fb);
	shoal_filter_free(ft);
}

static void test_coverage_and_restart(void **state)
{
	float q[DIM];
	vec_of(42, q);
	char dir[600], url[600];
	snprintf(dir, sizeof(dir), "%s/node3", tmp);
	snprintf(url, sizeof(url), "%s", nodes[2].url);
	np_stop(&nodes[2], SIGKILL);

	shoal_search_options so = SHOAL_SEARCH_OPTIONS_INIT;
	shoal_search_result *r = NULL;
	int rc = shoal_search(rc_, "items", q, DIM, &so, &r);
	assert_true(rc == SHOAL_ETIMEDOUT || rc == SHOAL_EIO);
	assert_non_null(strstr(shoal_last_error(), "node 3"));
	so.min_coverage = 0.6f;
	assert_int_equal(shoal_search(rc_, "items", q, DIM, &so, &r), SHOAL_OK);
	assert_int_equal(r->nodes_answered, NN - 1);
	assert_int_equal(r->nodes_asked, NN);
	shoal_search_result_free(r);

	const char *extra[] = {"--listen", url, NULL};
	assert_int_equal(np_start(&nodes[2], dir, extra), 0);
	so.min_coverage = 0;
	for (int tries = 0; tries < 100; tries++) {
		if (shoal_search(rc_, "items", q, DIM, &so, &r) == SHOAL_OK)
			break;
		r = NULL;
	}
	assert_non_null(r);
	assert_int_equal(r->nodes_answered, NN);
	shoal_search_result_free(r);
	uint64_t n;
	assert_int_equal(shoal_count(rc_, "items", NULL, true, &n, NULL),
			 SHOAL_OK);
	assert_int_equal(n, N - 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_same_answers_as_one_node),
	    cmocka_unit_test(test_coverage_and_restart),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
