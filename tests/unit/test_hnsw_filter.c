/* Filtered search keeps recall whatever fraction of points passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <roaring/roaring.h>
#include <stdlib.h>

#include "error.h"
#include "hnsw.h"
#include "testutil.h"

#define DIM 32
#define N 20000
#define NQ 60

static sh_hnsw *g_h;
static float *g_v;
static uint32_t g_iid[N];
static uint32_t g_iid_inv[N + 64];

/* The value of the first coordinate above which `count` points lie. */
static float first_coord_threshold(uint32_t count)
{
	float lo = -100, hi = 100;
	for (int it = 0; it < 60; it++) {
		float mid = (lo + hi) / 2;
		uint32_t c = 0;
		for (uint32_t i = 0; i < N; i++)
			c += g_v[(size_t)i * DIM] > mid;
		if (c > count)
			lo = mid;
		else
			hi = mid;
	}
	return hi;
}

static int setup(void **s)
{
	sh_hnsw_params p;
	sh_hnsw_params_default(&p, DIM);
	p.m = 16;
	p.ef_construction = 100;
	if (sh_hnsw_new(&p, &g_h))
		return -1;
	g_v = tu_clustered(N + NQ, DIM, 30, 21);
	for (uint32_t i = 0; i < N; i++) {
		sh_pid pid = sh_pid_u64(i);
		if (sh_hnsw_upsert(g_h, &pid, g_v + (size_t)i * DIM, &g_iid[i],
				   NULL))
			return -1;
	}
	return 0;
}

static int teardown(void **s)
{
	sh_hnsw_free(g_h);
	free(g_v);
	return 0;
}

struct pass_ctx {
	uint32_t permille; /* points with hash % 1000 < permille pass */
	const uint32_t *iid_to_id;
};

static uint32_t mix(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352d;
	x ^= x >> 15;
	x *= 0x846ca68b;
	return x ^ (x >> 16);
}

/* The callback keys on the point id, so it is independent of iids. */
static bool pass_fn(void *ctx, uint32_t iid)
{
	struct pass_ctx *c = ctx;
	return mix(c->iid_to_id[iid]) % 1000 < c->permille;
}

static double filtered_recall(const sh_hnsw_filter *f, sh_hnsw_plan *plan)
{
	sh_hnsw_hit a[10], b[10];
	double sum = 0;
	for (size_t q = 0; q < NQ; q++) {
		size_t na, nb;
		sh_hnsw_search_stats st;
		const float *qv = g_v + (size_t)(N + q) * DIM;
		assert_int_equal(
		    sh_hnsw_search(g_h, qv, 10, 64, f, a, &na, &st), SH_OK);
		assert_int_equal(sh_hnsw_exact(g_h, qv, 10, f, b, &nb), SH_OK);
		*plan = st.plan;
		for (size_t i = 0; i < na; i++) {
			if (f->allow)
				assert_true(roaring_bitmap_contains(f->allow,
								    a[i].iid));
			if (f->fn)
				assert_true(f->fn(f->ctx, a[i].iid));
		}
		sum += tu_overlap(a, na, b, nb, 10);
	}
	return sum / NQ;
}

static void check(uint32_t permille, bool bitmap)
{
	static uint32_t iid_to_id[N + 64];
	for (uint32_t i = 0; i < N; i++)
		iid_to_id[g_iid[i]] = i;
	struct pass_ctx ctx = {permille, iid_to_id};
	sh_hnsw_filter f = {0};
	roaring_bitmap_t *bm = NULL;
	if (bitmap) {
		bm = roaring_bitmap_create();
		for (uint32_t i = 0; i < N; i++)
			if (mix(i) % 1000 < permille)
				roaring_bitmap_add(bm, g_iid[i]);
		f.allow = bm;
	} else {
		f.fn = pass_fn; /* no estimate: the planner must assume all */
		f.ctx = &ctx;
	}
	sh_hnsw_plan plan;
	double r = filtered_recall(&f, &plan);
	print_message("%.1f%% pass, %s: plan %s, recall@10 %.4f\n",
		      permille / 10.0, bitmap ? "bitmap" : "callback",
		      sh_hnsw_plan_name(plan), r);
	assert_true(r >= 0.95);
	if (bitmap && permille <= 10)
		assert_int_equal(plan, SH_PLAN_EXACT_SCAN);
	if (!bitmap)
		assert_int_equal(plan, SH_PLAN_FILTERED_GRAPH);
	if (bm)
		roaring_bitmap_free(bm);
}

static void test_filter_1pct_bitmap_keeps_recall(void **s)
{
	check(10, true);
}
static void test_filter_10pct_bitmap_keeps_recall(void **s)
{
	check(100, true);
}
static void test_filter_50pct_bitmap_keeps_recall(void **s)
{
	check(500, true);
}
static void test_filter_1pct_callback_graph_keeps_recall(void **s)
{
	check(10, false);
}
static void test_filter_10pct_callback_graph_keeps_recall(void **s)
{
	check(100, false);
}
static void test_filter_50pct_callback_graph_keeps_recall(void **s)
{
	check(500, false);
}

/* A filter correlated with the data: only points on the far side of the
 * space pass, and queries come from the near side. The graph walk has to
 * travel far; past the cost of a scan it must switch to one, and recall
 * must hold either way. */
static void test_filter_far_from_query_keeps_recall(void **s)
{
	roaring_bitmap_t *bm = roaring_bitmap_create();
	float *col = malloc(N * sizeof(float));
	for (uint32_t i = 0; i < N; i++)
		col[i] = g_v[(size_t)i * DIM];
	/* pass: the half of the points with the largest first coordinate */
	float thr = first_coord_threshold(N / 2);
	for (uint32_t i = 0; i < N; i++)
		if (col[i] > thr)
			roaring_bitmap_add(bm, g_iid[i]);
	sh_hnsw_filter f = {.allow = bm};
	sh_hnsw_hit a[10], b[10];
	double sum = 0;
	int nq = 0, fallbacks = 0;
	for (uint32_t i = 0; i < N && nq < NQ; i += 97) {
		if (col[i] > thr - 3.0f)
			continue; /* queries from the far side only */
		size_t na, nb;
		sh_hnsw_search_stats st;
		const float *qv = g_v + (size_t)i * DIM;
		assert_int_equal(
		    sh_hnsw_search(g_h, qv, 10, 32, &f, a, &na, &st), SH_OK);
		assert_int_equal(sh_hnsw_exact(g_h, qv, 10, &f, b, &nb), SH_OK);
		assert_true(st.plan != SH_PLAN_GRAPH);
		assert_true(!st.fallback || st.plan == SH_PLAN_EXACT_SCAN);
		fallbacks += st.fallback;
		sum += tu_overlap(a, na, b, nb, 10);
		nq++;
	}
	assert_true(nq > 10);
	print_message(
	    "far filter (%u pass): %d queries, %d fell back to a scan, "
	    "recall@10 %.4f\n",
	    (unsigned)roaring_bitmap_get_cardinality(bm), nq, fallbacks,
	    sum / nq);
	assert_true(sum / nq >= 0.95);
	roaring_bitmap_free(bm);
	free(col);
}

static bool pass_far_1pct(void *ctx, uint32_t iid)
{
	const float *thr = ctx;
	return g_v[(size_t)g_iid_inv[iid] * DIM] > *thr;
}

/* A callback whose caller over-estimates how many points pass (75%, where
 * 1% on the far side really do): the planner picks the graph, the walk runs
 * past the cost of a scan, and the search must fall back and stay exact. */
static void test_filter_underestimated_cost_falls_back_to_scan(void **s)
{
	for (uint32_t i = 0; i < N; i++)
		g_iid_inv[g_iid[i]] = i;
	float thr = first_coord_threshold(N / 100);
	sh_hnsw_filter f = {
	    .fn = pass_far_1pct, .ctx = &thr, .est_pass = N * 3 / 4};
	sh_hnsw_hit a[10], b[10];
	double sum = 0;
	int nq = 0, fallbacks = 0;
	for (uint32_t i = 0; i < N && nq < 20; i += 101) {
		if (g_v[(size_t)i * DIM] > thr - 5.0f)
			continue;
		size_t na, nb;
		sh_hnsw_search_stats st;
		const float *qv = g_v + (size_t)i * DIM;
		assert_int_equal(
		    sh_hnsw_search(g_h, qv, 10, 16, &f, a, &na, &st), SH_OK);
		assert_int_equal(sh_hnsw_exact(g_h, qv, 10, &f, b, &nb), SH_OK);
		fallbacks += st.fallback;
		sum += tu_overlap(a, na, b, nb, 10);
		nq++;
	}
	print_message("over-estimated filter: %d queries, %d fell back, "
		      "recall@10 %.4f\n",
		      nq, fallbacks, sum / nq);
	assert_true(nq >= 10);
	assert_true(fallbacks > 0);
	assert_true(sum / nq >= 0.95);
}

static void test_filter_passing_nothing_returns_nothing(void **s)
{
	roaring_bitmap_t *bm = roaring_bitmap_create();
	sh_hnsw_filter f = {.allow = bm};
	sh_hnsw_hit a[10];
	size_t na = 99;
	sh_hnsw_search_stats st;
	assert_int_equal(sh_hnsw_search(g_h, g_v, 10, 0, &f, a, &na, &st),
			 SH_OK);
	assert_int_equal(na, 0);
	assert_int_equal(st.plan, SH_PLAN_EXACT_SCAN);
	roaring_bitmap_free(bm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_filter_1pct_bitmap_keeps_recall),
	    cmocka_unit_test(test_filter_10pct_bitmap_keeps_recall),
	    cmocka_unit_test(test_filter_50pct_bitmap_keeps_recall),
	    cmocka_unit_test(test_filter_1pct_callback_graph_keeps_recall),
	    cmocka_unit_test(test_filter_10pct_callback_graph_keeps_recall),
	    cmocka_unit_test(test_filter_50pct_callback_graph_keeps_recall),
	    cmocka_unit_test(test_filter_far_from_query_keeps_recall),
	    cmocka_unit_test(
		test_filter_underestimated_cost_falls_back_to_scan),
	    cmocka_unit_test(test_filter_passing_nothing_returns_nothing),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
