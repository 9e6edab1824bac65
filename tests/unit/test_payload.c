/* Payload indexes and the planner: the planned bitmap plus the residual
 * check must agree with brute-force sh_filter_eval on every point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <roaring/roaring.h>

#include "error.h"
#include "filter.h"
#include "payload.h"

/* ---- A seeded generator -------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)((rng_state >> 33) % n);
}

static const char *const words[] = {"a", "b", "c", "d", "e"};

/* A random scalar, most often of the preferred kind (0 string, 1 integer,
 * 2 float, 3 bool). */
static cJSON *rand_scalar(int pref)
{
	int kind = rnd(10) < 6 ? pref : (int)rnd(5);
	switch (kind) {
	case 0:
		return cJSON_CreateString(words[rnd(5)]);
	case 1:
		return cJSON_CreateNumber((double)rnd(11) - 5);
	case 2:
		return cJSON_CreateNumber(((double)rnd(25) - 12) / 2);
	case 3:
		return cJSON_CreateBool(rnd(2));
	default:
		return cJSON_CreateNull();
	}
}

static cJSON *rand_value(int pref)
{
	uint32_t r = rnd(10);
	if (r < 7)
		return rand_scalar(pref);
	if (r < 9) {
		cJSON *a = cJSON_CreateArray();
		for (uint32_t i = rnd(4); i > 0; i--)
			cJSON_AddItemToArray(a, rand_scalar(pref));
		return a;
	}
	cJSON *o = cJSON_CreateObject();
	cJSON_AddItemToObject(o, "e", rand_scalar(1));
	return o;
}

/* Payload keys, their preferred kinds; "d" holds objects with "e". */
static const char *const keys[] = {"cat",  "tags",  "price", "qty",
				   "flag", "color", "n",     "d"};
static const int prefs[] = {0, 0, 2, 1, 3, 0, 1, 1};
#define NKEYS 8

static cJSON *rand_payload(void)
{
	if (rnd(20) == 0)
		return NULL; /* no payload at all */
	cJSON *p = cJSON_CreateObject();
	for (int k = 0; k < NKEYS; k++) {
		if (rnd(5) == 0)
			continue;
		if (k == 7 && rnd(4)) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddItemToObject(o, "e", rand_value(1));
			cJSON_AddItemToObject(p, "d", o);
		} else {
			cJSON_AddItemToObject(p, keys[k], rand_value(prefs[k]));
		}
	}
	return p;
}

/* Filter keys: indexed, unindexed, a dotted path and one never present. */
static const char *const fkeys[] = {"cat",   "tags", "price", "qty", "flag",
				    "color", "n",    "d.e",   "d",   "zzz"};
#define NFKEYS 10

static double rand_bound(void)
{
	return ((double)rnd(29) - 14) / 2;
}

static void rand_filter_into(sh_filter *f, int depth, uint32_t npoints);

static void rand_clause(sh_filter *f, sh_occur occ, int depth, uint32_t npoints)
{
	const char *key = fkeys[rnd(NFKEYS)];
	switch (rnd(depth < 3 ? 9 : 8)) {
	case 0:
		assert_int_equal(
		    sh_filter_add_match_keyword(f, occ, key, words[rnd(5)]),
		    SH_OK);
		break;
	case 1: {
		const char *v[3] = {words[rnd(5)], words[rnd(5)],
				    words[rnd(5)]};
		assert_int_equal(
		    sh_filter_add_match_any_keyword(f, occ, key, v, 1 + rnd(3)),
		    SH_OK);
		break;
	}
	case 2:
		assert_int_equal(sh_filter_add_match_integer(
				     f, occ, key, (int64_t)rnd(11) - 5),
				 SH_OK);
		break;
	case 3: {
		int64_t v[3] = {(int64_t)rnd(11) - 5, (int64_t)rnd(11) - 5,
				(int64_t)rnd(11) - 5};
		assert_int_equal(
		    sh_filter_add_match_any_integer(f, occ, key, v, 1 + rnd(3)),
		    SH_OK);
		break;
	}
	case 4:
		assert_int_equal(sh_filter_add_match_bool(f, occ, key, rnd(2)),
				 SH_OK);
		break;
	case 5: {
		sh_range r = {0};
		double a = rand_bound(), b = rand_bound();
		if (a > b) {
			double t = a;
			a = b;
			b = t;
		}
		uint32_t m = 1 + rnd(15); /* which bounds: a non-empty set */
		if (m & 1) {
			if (rnd(2))
				r.has_gt = true, r.gt = a;
			else
				r.has_gte = true, r.gte = a;
		}
		if (m & 2) {
			if (rnd(2))
				r.has_lt = true, r.lt = b;
			else
				r.has_lte = true, r.lte = b;
		}
		if (!(m & 3))
			r.has_gte = true, r.gte = a;
		assert_int_equal(sh_filter_add_range(f, occ, key, &r), SH_OK);
		break;
	}
	case 6:
		assert_int_equal(sh_filter_add_exists(f, occ, key), SH_OK);
		break;
	case 7: {
		sh_pid ids[4];
		uint32_t n = 1 + rnd(4);
		for (uint32_t i = 0; i < n; i++)
			ids[i] = sh_pid_u64(rnd(npoints + 10));
		assert_int_equal(sh_filter_add_has_id(f, occ, ids, n), SH_OK);
		break;
	}
	default: {
		sh_filter *s = NULL;
		assert_int_equal(sh_filter_new(&s), SH_OK);
		rand_filter_into(s, depth + 1, npoints);
		assert_int_equal(sh_filter_add_nested(f, occ, s), SH_OK);
	}
	}
}

static void rand_filter_into(sh_filter *f, int depth, uint32_t npoints)
{
	uint32_t n = rnd(4);
	for (uint32_t i = 0; i < n; i++)
		rand_clause(f, (sh_occur)rnd(3), depth, npoints);
}

/* ---- The property -------------------------------------------------------- */

typedef struct world {
	sh_payload_index *idx;
	uint32_t n;	 /* iids 0..n-1 */
	cJSON **payload; /* per iid */
	bool *live;
} world;

static const sh_payload_field fields[] = {
    {"cat", SH_PAYLOAD_KEYWORD}, {"tags", SH_PAYLOAD_KEYWORD},
    {"price", SH_PAYLOAD_FLOAT}, {"qty", SH_PAYLOAD_INTEGER},
    {"flag", SH_PAYLOAD_BOOL},	 {"d.e", SH_PAYLOAD_INTEGER},
};
#define NFIELDS 6

static void world_init(world *w, uint32_t n)
{
	assert_int_equal(sh_payload_index_new(fields, NFIELDS, &w->idx), SH_OK);
	w->n = n;
	w->payload = calloc(n, sizeof(cJSON *));
	w->live = calloc(n, sizeof(bool));
	assert_non_null(w->payload);
	assert_non_null(w->live);
}

static void world_free(world *w)
{
	for (uint32_t i = 0; i < w->n; i++)
		cJSON_Delete(w->payload[i]);
	free(w->payload);
	free(w->live);
	sh_payload_index_free(w->idx);
}

static void world_put(world *w, uint32_t iid, cJSON *p)
{
	assert_false(w->live[iid]);
	assert_int_equal(sh_payload_index_add(w->idx, iid, p), SH_OK);
	w->payload[iid] = p;
	w->live[iid] = true;
}

static void world_del(world *w, uint32_t iid)
{
	assert_true(w->live[iid]);
	assert_int_equal(sh_payload_index_remove(w->idx, iid, w->payload[iid]),
			 SH_OK);
	cJSON_Delete(w->payload[iid]);
	w->payload[iid] = NULL;
	w->live[iid] = false;
}

/* Checks plan(f) against brute force over every live point. */
static void check_filter(const world *w, const sh_filter *f)
{
	char err[256];
	assert_int_equal(sh_filter_validate(f, err, sizeof(err)), SH_OK);
	uint64_t live = sh_payload_index_count(w->idx);
	sh_filter_plan plan;
	assert_int_equal(sh_payload_index_plan(w->idx, f, live, &plan), SH_OK);
	uint64_t passing = 0;
	for (uint32_t iid = 0; iid < w->n; iid++) {
		bool in =
		    plan.allow && roaring_bitmap_contains(plan.allow, iid);
		if (!w->live[iid]) {
			if (in)
				fail_msg("allow holds dead iid %u", iid);
			continue;
		}
		sh_pid id = sh_pid_u64(iid);
		bool truth = sh_filter_eval(f, &id, w->payload[iid]);
		passing += truth;
		bool cand = plan.allow ? in : true;
		/* superset: the bitmap never excludes a passing point */
		if (truth && !cand)
			fail_msg("iid %u passes but the bitmap excludes it",
				 iid);
		/* exact without a residual check */
		if (!plan.residual && cand != truth)
			fail_msg("iid %u: bitmap says %d, eval %d, no residual",
				 iid, cand, truth);
		/* bitmap and residual together are the filter */
		bool planned =
		    cand &&
		    (!plan.residual || sh_filter_eval(f, &id, w->payload[iid]));
		assert_int_equal(planned, truth);
	}
	if (plan.allow && !plan.residual)
		assert_int_equal(plan.est_pass,
				 roaring_bitmap_get_cardinality(plan.allow));
	if (!plan.allow && !plan.residual)
		assert_int_equal(passing, live);
	assert_true(plan.est_pass <= live);
	sh_filter_plan_clear(&plan);
	assert_null(plan.allow);
}

static void check_random_filters(const world *w, int nfilters)
{
	int exact = 0, narrowed = 0;
	for (int i = 0; i < nfilters; i++) {
		sh_filter *f = NULL;
		assert_int_equal(sh_filter_new(&f), SH_OK);
		rand_filter_into(f, 1, w->n);
		check_filter(w, f);
		sh_filter_plan plan;
		assert_int_equal(sh_payload_index_plan(w->idx, f, 0, &plan),
				 SH_OK);
		exact += !plan.residual;
		narrowed += plan.allow != NULL;
		sh_filter_plan_clear(&plan);
		sh_filter_free(f);
	}
	/* the generator must exercise both sides of the planner */
	assert_true(exact > nfilters / 10);
	assert_true(narrowed > nfilters / 10);
	char err[256];
	if (sh_payload_index_validate(w->idx, err, sizeof(err)) != SH_OK)
		fail_msg("validate: %s", err);
}

static void test_planned_bitmap_and_residual_equal_brute_force(void **state)
{
	world w;
	rng_state = 42;
	world_init(&w, 3000);
	for (uint32_t i = 0; i < w.n; i++)
		if (rnd(10))
			world_put(&w, i, rand_payload());
	check_random_filters(&w, 400);
	world_free(&w);
}

static void test_upserts_and_deletes_keep_the_index_right(void **state)
{
	world w;
	rng_state = 7;
	world_init(&w, 2500);
	for (uint32_t i = 0; i < 2000; i++)
		world_put(&w, i, rand_payload());
	for (int round = 0; round < 6; round++) {
		for (int op = 0; op < 1500; op++) {
			uint32_t iid = rnd(w.n);
			uint32_t r = rnd(10);
			if (w.live[iid] && r < 5) {
				/* upsert in place: remove old, add new */
				world_del(&w, iid);
				world_put(&w, iid, rand_payload());
			} else if (w.live[iid] && r < 7) {
				/* upsert to a fresh iid, as HNSW does */
				uint32_t to = rnd(w.n);
				if (w.live[to])
					continue;
				cJSON *p = cJSON_Duplicate(w.payload[iid], 1);
				if (rnd(2)) {
					cJSON_Delete(p);
					p = rand_payload();
				}
				world_del(&w, iid);
				world_put(&w, to, p);
			} else if (w.live[iid]) {
				world_del(&w, iid);
			} else {
				world_put(&w, iid, rand_payload());
			}
		}
		check_random_filters(&w, 120);
	}
	/* remove everything: the index must be empty again */
	for (uint32_t i = 0; i < w.n; i++)
		if (w.live[i])
			world_del(&w, i);
	assert_int_equal(sh_payload_index_count(w.idx), 0);
	sh_filter *f = NULL;
	assert_int_equal(sh_filter_parse("cat = \"a\" or price > -100 or flag "
					 "or exists(tags) or qty in [1, 2]",
					 &f, NULL, 0),
			 SH_OK);
	sh_filter_plan plan;
	assert_int_equal(sh_payload_index_plan(w.idx, f, 0, &plan), SH_OK);
	assert_non_null(plan.allow);
	assert_int_equal(roaring_bitmap_get_cardinality(plan.allow), 0);
	assert_false(plan.residual);
	assert_int_equal(plan.est_pass, 0);
	sh_filter_plan_clear(&plan);
	sh_filter_free(f);
	world_free(&w);
}

/* Plans a text filter over w and returns the passing iids (bitmap and
 * residual applied) as a sorted list in out; returns the count. */
static size_t run(const world *w, const char *text, uint32_t *out, size_t cap,
		  bool *residual)
{
	sh_filter *f = NULL;
	char err[256];
	if (sh_filter_parse(text, &f, err, sizeof(err)) != SH_OK)
		fail_msg("%s: %s", text, err);
	check_filter(w, f);
	sh_filter_plan plan;
	assert_int_equal(sh_payload_index_plan(w->idx, f, w->n, &plan), SH_OK);
	size_t n = 0;
	for (uint32_t iid = 0; iid < w->n; iid++) {
		sh_pid id = sh_pid_u64(iid);
		if (!w->live[iid] ||
		    (plan.allow && !roaring_bitmap_contains(plan.allow, iid)))
			continue;
		if (plan.residual && !sh_filter_eval(f, &id, w->payload[iid]))
			continue;
		if (n < cap)
			out[n] = iid;
		n++;
	}
	if (residual)
		*residual = plan.residual;
	sh_filter_plan_clear(&plan);
	sh_filter_free(f);
	return n;
}

static void test_range_boundaries_on_integer_and_float_fields(void **state)
{
	world w;
	world_init(&w, 8);
	const char *docs[] = {
	    "{\"qty\": -2, \"price\": -2.5}",
	    "{\"qty\": 0, \"price\": 0}",
	    "{\"qty\": 3, \"price\": 2.999}",
	    "{\"qty\": 3.5, \"price\": 3}",
	    "{\"qty\": [1, 10], \"price\": [-1, 7.25]}",
	    "{\"qty\": \"3\", \"price\": \"3\"}",
	    "{\"qty\": null}",
	    "{}",
	};
	for (uint32_t i = 0; i < 8; i++)
		world_put(&w, i, cJSON_Parse(docs[i]));
	uint32_t got[8];
	bool res;
	assert_int_equal(run(&w, "qty > 3", got, 8, &res), 2); /* 3.5, 10 */
	assert_false(res);
	assert_int_equal(got[0], 3);
	assert_int_equal(got[1], 4);
	assert_int_equal(run(&w, "qty >= 3", got, 8, NULL), 3);
	assert_int_equal(run(&w, "qty < 0", got, 8, NULL), 1);
	assert_int_equal(got[0], 0);
	assert_int_equal(run(&w, "qty <= -2", got, 8, NULL), 1);
	assert_int_equal(run(&w, "qty < -2", got, 8, NULL), 0);
	/* two conditions, each on any element: [1, 10] passes both */
	assert_int_equal(run(&w, "qty > 1 and qty < 10", got, 8, NULL), 3);
	assert_int_equal(run(&w, "qty = 3", got, 8, &res), 1);
	assert_false(res);
	assert_int_equal(got[0], 2);
	assert_int_equal(run(&w, "qty = 3.5", got, 8, NULL), 1);
	assert_int_equal(run(&w, "price >= 3", got, 8, NULL), 2); /* 3, 7.25 */
	assert_int_equal(run(&w, "price > 2.999", got, 8, NULL), 2);
	assert_int_equal(run(&w, "price >= 2.999", got, 8, NULL), 3);
	assert_int_equal(run(&w, "price > -2.5 and price < 0", got, 8, NULL),
			 1);
	assert_int_equal(got[0], 4);
	assert_int_equal(run(&w, "price = 0", got, 8, NULL), 1);
	assert_int_equal(run(&w, "price = -0.0", got, 8, NULL), 1);
	assert_int_equal(run(&w, "exists(qty)", got, 8, &res), 6);
	assert_false(res);
	assert_int_equal(run(&w, "not exists(qty)", got, 8, &res), 2);
	assert_false(res);
	/* a keyword match on a numeric index: the present set, then eval */
	assert_int_equal(run(&w, "qty = \"3\"", got, 8, &res), 1);
	assert_true(res);
	assert_int_equal(got[0], 5);
	/* must_not of an exact set subtracts from every point */
	assert_int_equal(run(&w, "qty != 3", got, 8, &res), 7);
	assert_false(res);
	world_free(&w);

	/* beyond 2^53 integers share doubles: the bitmap is only a superset */
	world_init(&w, 1);
	world_put(&w, 0, cJSON_Parse("{\"qty\": 9007199254740992}"));
	assert_int_equal(run(&w, "qty = 9007199254740993", got, 8, &res), 0);
	assert_true(res);
	assert_int_equal(run(&w, "qty = 9007199254740992", got, 8, &res), 1);
	assert_false(res);
	world_free(&w);
}

static void test_unindexed_fields_and_has_id_need_the_residual(void **state)
{
	world w;
	world_init(&w, 100);
	for (uint32_t i = 0; i < 100; i++) {
		cJSON *p = cJSON_CreateObject();
		cJSON_AddStringToObject(p, "cat", i % 2 ? "odd" : "even");
		cJSON_AddNumberToObject(p, "n", i);
		world_put(&w, i, p);
	}
	sh_filter *f = NULL;
	sh_filter_plan plan;
	assert_int_equal(sh_filter_parse("n < 10", &f, NULL, 0), SH_OK);
	assert_int_equal(sh_payload_index_plan(w.idx, f, 100, &plan), SH_OK);
	assert_null(plan.allow);
	assert_true(plan.residual);
	assert_int_equal(plan.est_pass, 50); /* default selectivity */
	assert_int_equal(plan.n_unindexed, 1);
	assert_int_equal(plan.n_indexed, 0);
	sh_filter_plan_clear(&plan);
	sh_filter_free(f);

	assert_int_equal(
	    sh_filter_parse("cat = \"odd\" and n < 10", &f, NULL, 0), SH_OK);
	assert_int_equal(sh_payload_index_plan(w.idx, f, 100, &plan), SH_OK);
	assert_non_null(plan.allow);
	assert_int_equal(roaring_bitmap_get_cardinality(plan.allow), 50);
	assert_true(plan.residual);
	assert_int_equal(plan.n_indexed, 1);
	assert_int_equal(plan.n_unindexed, 1);
	sh_filter_plan_clear(&plan);
	sh_filter_free(f);

	assert_int_equal(sh_filter_parse("has_id(1, 2, 3)", &f, NULL, 0),
			 SH_OK);
	assert_int_equal(sh_payload_index_plan(w.idx, f, 100, &plan), SH_OK);
	assert_null(plan.allow);
	assert_true(plan.residual);
	assert_int_equal(plan.est_pass, 3);
	sh_filter_plan_clear(&plan);
	sh_filter_free(f);

	/* must_not over an inexact clause is left to the residual check */
	assert_int_equal(
	    sh_filter_parse("cat = \"odd\" and not n < 10", &f, NULL, 0),
	    SH_OK);
	check_filter(&w, f);
	assert_int_equal(sh_payload_index_plan(w.idx, f, 100, &plan), SH_OK);
	assert_int_equal(roaring_bitmap_get_cardinality(plan.allow), 50);
	assert_true(plan.residual);
	sh_filter_plan_clear(&plan);
	sh_filter_free(f);

	/* an empty filter: no bitmap, no residual, everyone */
	assert_int_equal(sh_filter_new(&f), SH_OK);
	assert_int_equal(sh_payload_index_plan(w.idx, f, 100, &plan), SH_OK);
	assert_null(plan.allow);
	assert_false(plan.residual);
	assert_int_equal(plan.est_pass, 100);
	sh_filter_plan_clear(&plan);
	sh_filter_free(f);
	world_free(&w);
}

static void test_numeric_merge_and_compaction_keep_ranges_exact(void **state)
{
	world w;
	rng_state = 99;
	uint32_t n = 20000;
	world_init(&w, n);
	for (uint32_t i = 0; i < n; i++) {
		cJSON *p = cJSON_CreateObject();
		cJSON_AddNumberToObject(p, "price", (double)rnd(1000) / 4);
		cJSON_AddNumberToObject(p, "qty", (double)(i % 97) - 48);
		world_put(&w, i, p);
	}
	size_t mem_full = sh_payload_index_mem(w.idx);
	assert_true(mem_full > n * 2 * 16);
	char err[256];
	/* delete most of them: forces compaction of dead entries */
	for (uint32_t i = 0; i < n; i++)
		if (i % 5)
			world_del(&w, i);
	if (sh_payload_index_validate(w.idx, err, sizeof(err)) != SH_OK)
		fail_msg("%s", err);
	uint32_t *got = malloc(n * sizeof(uint32_t));
	assert_non_null(got);
	bool res;
	size_t k = run(&w, "qty = 0", got, n, &res);
	assert_false(res);
	size_t expect = 0;
	for (uint32_t i = 0; i < n; i += 5)
		expect += (i % 97) == 48;
	assert_int_equal(k, expect);
	run(&w, "price >= 100 and price < 150.25", got, n, NULL);
	run(&w, "price > 249.75 or qty < -47", got, n, NULL);
	/* and bring them back */
	for (uint32_t i = 0; i < n; i++) {
		if (w.live[i])
			continue;
		cJSON *p = cJSON_CreateObject();
		cJSON_AddNumberToObject(p, "price", -(double)rnd(100));
		world_put(&w, i, p);
	}
	if (sh_payload_index_validate(w.idx, err, sizeof(err)) != SH_OK)
		fail_msg("%s", err);
	run(&w, "price < 0", got, n, NULL);
	run(&w, "price <= 0 and not qty > 0", got, n, NULL);
	free(got);
	world_free(&w);
}

static void test_keyword_table_survives_growth_and_deletes(void **state)
{
	world w;
	uint32_t n = 6000;
	world_init(&w, n);
	char buf[32];
	for (uint32_t i = 0; i < n; i++) {
		cJSON *p = cJSON_CreateObject();
		snprintf(buf, sizeof(buf), "sku-%u", i / 2);
		cJSON_AddStringToObject(p, "cat", buf);
		world_put(&w, i, p);
	}
	char err[256];
	rng_state = 5;
	for (uint32_t i = 0; i < n; i++)
		if (rnd(3) == 0)
			world_del(&w, i);
	if (sh_payload_index_validate(w.idx, err, sizeof(err)) != SH_OK)
		fail_msg("%s", err);
	for (uint32_t v = 0; v < n / 2; v += 7) {
		char text[64];
		uint32_t got[2];
		snprintf(text, sizeof(text), "cat = \"sku-%u\"", v);
		size_t k = run(&w, text, got, 2, NULL);
		assert_int_equal(k, (size_t)w.live[2 * v] + w.live[2 * v + 1]);
	}
	world_free(&w);
}

static void test_index_new_rejects_bad_declarations(void **state)
{
	sh_payload_index *idx = NULL;
	sh_payload_field dup[] = {{"a", SH_PAYLOAD_KEYWORD},
				  {"a", SH_PAYLOAD_BOOL}};
	assert_int_equal(sh_payload_index_new(dup, 2, &idx), SH_EINVAL);
	sh_payload_field bad[] = {{"a..b", SH_PAYLOAD_KEYWORD}};
	assert_int_equal(sh_payload_index_new(bad, 1, &idx), SH_EINVAL);
	sh_payload_field badtype[] = {{"a", (sh_payload_type)9}};
	assert_int_equal(sh_payload_index_new(badtype, 1, &idx), SH_EINVAL);
	sh_payload_field noname[] = {{NULL, SH_PAYLOAD_KEYWORD}};
	assert_int_equal(sh_payload_index_new(noname, 1, &idx), SH_EINVAL);
	sh_payload_field many[SH_PAYLOAD_MAX_FIELDS + 1];
	char names[SH_PAYLOAD_MAX_FIELDS + 1][8];
	for (int i = 0; i <= SH_PAYLOAD_MAX_FIELDS; i++) {
		snprintf(names[i], sizeof(names[i]), "f%d", i);
		many[i] = (sh_payload_field){names[i], SH_PAYLOAD_INTEGER};
	}
	assert_int_equal(
	    sh_payload_index_new(many, SH_PAYLOAD_MAX_FIELDS + 1, &idx),
	    SH_EINVAL);
	assert_int_equal(
	    sh_payload_index_new(many, SH_PAYLOAD_MAX_FIELDS, &idx), SH_OK);
	assert_int_equal(sh_payload_index_nfields(idx), SH_PAYLOAD_MAX_FIELDS);
	assert_string_equal(sh_payload_index_field(idx, 3)->name, "f3");
	assert_null(sh_payload_index_field(idx, SH_PAYLOAD_MAX_FIELDS));
	sh_payload_index_free(idx);
	assert_int_equal(sh_payload_index_new(NULL, 0, &idx), SH_OK);
	assert_int_equal(sh_payload_index_add(idx, 3, NULL), SH_OK);
	assert_int_equal(sh_payload_index_count(idx), 1);
	sh_payload_index_free(idx);
	sh_payload_type t;
	assert_int_equal(sh_payload_type_parse("float", &t), SH_OK);
	assert_int_equal(t, SH_PAYLOAD_FLOAT);
	assert_int_equal(sh_payload_type_parse("text", &t), SH_EINVAL);
	assert_string_equal(sh_payload_type_name(SH_PAYLOAD_BOOL), "bool");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
		test_planned_bitmap_and_residual_equal_brute_force),
	    cmocka_unit_test(test_upserts_and_deletes_keep_the_index_right),
	    cmocka_unit_test(test_range_boundaries_on_integer_and_float_fields),
	    cmocka_unit_test(
		test_unindexed_fields_and_has_id_need_the_residual),
	    cmocka_unit_test(
		test_numeric_merge_and_compaction_keep_ranges_exact),
	    cmocka_unit_test(test_keyword_table_survives_growth_and_deletes),
	    cmocka_unit_test(test_index_new_rejects_bad_declarations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
