/* HNSW: recall, upserts, deletes, vacuum, change log and loader, bad input. */
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
#include "hnsw.h"
#include "testutil.h"

#define DIM 24

static sh_hnsw *new_index(sh_metric metric, sh_storage st, uint32_t dim)
{
	sh_hnsw_params p;
	sh_hnsw_params_default(&p, dim);
	p.metric = metric;
	p.storage = st;
	p.m = 12;
	p.ef_construction = 100;
	sh_hnsw *h = NULL;
	assert_int_equal(sh_hnsw_new(&p, &h), SH_OK);
	return h;
}

/* Inserts vectors 0..n-1 of v as points 0..n-1. */
static void insert_all(sh_hnsw *h, const float *v, size_t n, size_t dim)
{
	for (size_t i = 0; i < n; i++) {
		sh_pid p = sh_pid_u64(i);
		assert_int_equal(sh_hnsw_upsert(h, &p, v + i * dim, NULL, NULL),
				 SH_OK);
	}
}

static void assert_valid(sh_hnsw *h)
{
	char err[256] = "";
	int rc = sh_hnsw_validate(h, err, sizeof(err));
	if (rc != SH_OK)
		fail_msg("invalid index: %s", err);
}

/* Mean recall@k of search at ef against sh_hnsw_exact over nq queries. */
static double recall(sh_hnsw *h, const float *qs, size_t nq, size_t dim,
		     size_t k, size_t ef)
{
	sh_hnsw_hit *a = calloc(k, sizeof(*a)), *b = calloc(k, sizeof(*b));
	double sum = 0;
	for (size_t i = 0; i < nq; i++) {
		size_t na, nb;
		assert_int_equal(
		    sh_hnsw_search(h, qs + i * dim, k, ef, NULL, a, &na, NULL),
		    SH_OK);
		assert_int_equal(
		    sh_hnsw_exact(h, qs + i * dim, k, NULL, b, &nb), SH_OK);
		for (size_t j = 1; j < na; j++)
			assert_true(a[j - 1].dist <= a[j].dist);
		sum += tu_overlap(a, na, b, nb, k);
	}
	free(a);
	free(b);
	return sum / (double)nq;
}

static const float *fetch_from(void *ctx, uint32_t iid, const sh_pid *pid,
			       float *scratch)
{
	const float *base = ctx;
	return base + pid->num * DIM;
}

static void check_recall(sh_metric metric, sh_storage st)
{
	size_t n = 4000, nq = 50;
	float *v = tu_clustered(n + nq, DIM, 20, 7 + metric);
	sh_hnsw *h = new_index(metric, st, DIM);
	if (st == SH_STORAGE_INT8)
		sh_hnsw_set_fetch_fn(h, fetch_from, v);
	insert_all(h, v, n, DIM);
	assert_valid(h);
	double r = recall(h, v + n * DIM, nq, DIM, 10, 80);
	print_message("metric %d storage %d recall@10 %.4f\n", metric, st, r);
	assert_true(r >= 0.95);
	sh_hnsw_free(h);
	free(v);
}

static void test_recall_l2_f32(void **s)
{
	check_recall(SH_METRIC_L2, SH_STORAGE_F32);
}
static void test_recall_ip_f32(void **s)
{
	check_recall(SH_METRIC_IP, SH_STORAGE_F32);
}
static void test_recall_cosine_f32(void **s)
{
	check_recall(SH_METRIC_COSINE, SH_STORAGE_F32);
}
static void test_recall_l2_int8_rescored(void **s)
{
	check_recall(SH_METRIC_L2, SH_STORAGE_INT8);
}
static void test_recall_cosine_int8_rescored(void **s)
{
	check_recall(SH_METRIC_COSINE, SH_STORAGE_INT8);
}

static void test_empty_index_returns_nothing(void **s)
{
	sh_hnsw *h = new_index(SH_METRIC_L2, SH_STORAGE_F32, 4);
	float q[4] = {1, 2, 3, 4};
	sh_hnsw_hit hits[5];
	size_t n = 99;
	assert_int_equal(sh_hnsw_search(h, q, 5, 0, NULL, hits, &n, NULL),
			 SH_OK);
	assert_int_equal(n, 0);
	assert_valid(h);
	sh_hnsw_free(h);
}

static void test_bad_input_changes_nothing(void **s)
{
	sh_hnsw_params p;
	sh_hnsw *h = NULL;
	sh_hnsw_params_default(&p, 0);
	assert_int_equal(sh_hnsw_new(&p, &h), SH_EINVAL);
	sh_hnsw_params_default(&p, SH_HNSW_MAX_DIM + 1);
	assert_int_equal(sh_hnsw_new(&p, &h), SH_EINVAL);
	sh_hnsw_params_default(&p, 4);
	p.m = 1;
	assert_int_equal(sh_hnsw_new(&p, &h), SH_EINVAL);

	h = new_index(SH_METRIC_COSINE, SH_STORAGE_F32, 4);
	sh_pid id = sh_pid_u64(1);
	float nan_v[4] = {1, NAN, 0, 0}, inf_v[4] = {1, INFINITY, 0, 0};
	float zero[4] = {0}, ok[4] = {1, 0, 0, 0};
	assert_int_equal(sh_hnsw_upsert(h, &id, nan_v, NULL, NULL), SH_ENAN);
	assert_int_equal(sh_hnsw_upsert(h, &id, inf_v, NULL, NULL), SH_ENAN);
	assert_int_equal(sh_hnsw_upsert(h, &id, zero, NULL, NULL), SH_EINVAL);
	sh_hnsw_info info;
	sh_hnsw_info_get(h, &info);
	assert_int_equal(info.live, 0);
	assert_int_equal(info.nodes, 0);
	assert_int_equal(sh_hnsw_upsert(h, &id, ok, NULL, NULL), SH_OK);
	sh_hnsw_hit hit[2];
	size_t n;
	assert_int_equal(sh_hnsw_search(h, ok, 0, 0, NULL, hit, &n, NULL),
			 SH_EINVAL);
	assert_int_equal(sh_hnsw_search(h, nan_v, 1, 0, NULL, hit, &n, NULL),
			 SH_ENAN);
	assert_int_equal(sh_hnsw_search(h, zero, 1, 0, NULL, hit, &n, NULL),
			 SH_EINVAL);
	assert_int_equal(
	    sh_hnsw_delete(h, &(sh_pid){.kind = SH_PID_U64, .num = 5}, NULL),
	    SH_ENOTFOUND);
	sh_pid bad = {.kind = 9};
	assert_int_equal(sh_hnsw_upsert(h, &bad, ok, NULL, NULL), SH_EINVAL);
	assert_valid(h);
	sh_hnsw_free(h);
}

static void test_upsert_moves_point_and_never_duplicates(void **s)
{
	size_t n = 2000;
	float *v = tu_clustered(n, DIM, 10, 3);
	sh_hnsw *h = new_index(SH_METRIC_L2, SH_STORAGE_F32, DIM);
	insert_all(h, v, n, DIM);
	/* move point 5 onto point 1000's position */
	sh_pid p5 = sh_pid_u64(5);
	uint32_t iid, old;
	assert_int_equal(sh_hnsw_upsert(h, &p5, v + 1000 * DIM, &iid, &old),
			 SH_OK);
	assert_int_not_equal(old, SH_IID_NONE);
	assert_int_not_equal(iid, old);
	sh_hnsw_hit hits[20];
	size_t nh;
	assert_int_equal(
	    sh_hnsw_search(h, v + 1000 * DIM, 20, 100, NULL, hits, &nh, NULL),
	    SH_OK);
	int seen5 = 0;
	for (size_t i = 0; i < nh; i++) {
		if (hits[i].pid.num == 5) {
			seen5++;
			assert_true(hits[i].dist == 0.0f);
			assert_int_equal(hits[i].iid, iid);
		}
		for (size_t j = 0; j < i; j++)
			assert_false(sh_pid_eq(&hits[i].pid, &hits[j].pid));
	}
	assert_int_equal(seen5, 1);
	/* and it is gone from its old place */
	assert_int_equal(
	    sh_hnsw_search(h, v + 5 * DIM, 1, 100, NULL, hits, &nh, NULL),
	    SH_OK);
	assert_true(nh == 1 && hits[0].pid.num != 5);
	sh_hnsw_info info;
	sh_hnsw_info_get(h, &info);
	assert_int_equal(info.live, n);
	assert_int_equal(info.tombstones, 1);
	assert_valid(h);
	sh_hnsw_free(h);
	free(v);
}

static void test_deleted_point_never_returned(void **s)
{
	size_t n = 3000;
	float *v = tu_clustered(n, DIM, 10, 4);
	sh_hnsw *h = new_index(SH_METRIC_L2, SH_STORAGE_F32, DIM);
	insert_all(h, v, n, DIM);
	for (size_t i = 0; i < n; i += 3) {
		sh_pid p = sh_pid_u64(i);
		assert_int_equal(sh_hnsw_delete(h, &p, NULL), SH_OK);
		assert_int_equal(sh_hnsw_delete(h, &p, NULL), SH_ENOTFOUND);
	}
	sh_hnsw_hit hits[50];
	size_t nh;
	for (size_t i = 0; i < n; i += 7) {
		assert_int_equal(sh_hnsw_search(h, v + i * DIM, 50, 100, NULL,
						hits, &nh, NULL),
				 SH_OK);
		assert_true(nh == 50);
		for (size_t j = 0; j < nh; j++)
			assert_true(hits[j].pid.num % 3 != 0);
	}
	/* recall still holds among the survivors, before and after vacuum */
	double r = recall(h, v, 100, DIM, 10, 100);
	assert_true(r >= 0.95);
	sh_hnsw_vacuum_stats vs;
	assert_int_equal(sh_hnsw_vacuum(h, &vs), SH_OK);
	assert_int_equal(vs.freed, (n + 2) / 3);
	assert_valid(h);
	r = recall(h, v, 100, DIM, 10, 100);
	print_message("recall after deleting a third and vacuum: %.4f\n", r);
	assert_true(r >= 0.95);
	sh_hnsw_free(h);
	free(v);
}

static void test_vacuum_bounds_memory_under_churn(void **s)
{
	size_t n = 1500, rounds = 12;
	float *v = tu_clustered(n * 2, DIM, 10, 5);
	sh_hnsw *h = new_index(SH_METRIC_L2, SH_STORAGE_F32, DIM);
	insert_all(h, v, n, DIM);
	uint64_t s0 = 11, maxnodes = 0, cap0 = 0;
	for (size_t r = 0; r < rounds; r++) {
		/* replace a third of the points, delete a tenth, re-add */
		for (size_t j = 0; j < n / 3; j++) {
			size_t id = tu_rand(&s0) % n;
			sh_pid p = sh_pid_u64(id);
			const float *nv = v + (tu_rand(&s0) % (2 * n)) * DIM;
			assert_int_equal(sh_hnsw_upsert(h, &p, nv, NULL, NULL),
					 SH_OK);
		}
		for (size_t j = 0; j < n / 10; j++) {
			sh_pid p = sh_pid_u64(tu_rand(&s0) % n);
			int rc = sh_hnsw_delete(h, &p, NULL);
			assert_true(rc == SH_OK || rc == SH_ENOTFOUND);
		}
		assert_int_equal(sh_hnsw_vacuum(h, NULL), SH_OK);
		assert_valid(h);
		for (size_t id = 0; id < n; id++) {
			sh_pid p = sh_pid_u64(id);
			uint32_t iid;
			if (sh_hnsw_lookup(h, &p, &iid) == SH_ENOTFOUND)
				assert_int_equal(sh_hnsw_upsert(h, &p,
								v + id * DIM,
								NULL, NULL),
						 SH_OK);
		}
		sh_hnsw_info info;
		sh_hnsw_info_get(h, &info);
		assert_int_equal(info.live, n);
		if (r == 0)
			cap0 = info.capacity;
		if (info.nodes > maxnodes)
			maxnodes = info.nodes;
		/* ids are reused: never more than live + one round's churn */
		assert_true(info.nodes <= n + n / 3 + n / 10);
		assert_true(info.capacity <= cap0 * 2);
	}
	double r = recall(h, v, 100, DIM, 10, 100);
	print_message("after churn: max nodes %llu for %zu live, recall %.4f\n",
		      (unsigned long long)maxnodes, n, r);
	assert_true(r >= 0.9);
	sh_hnsw_free(h);
	free(v);
}

/* Points replaced over and over with no vacuum: the old nodes die, their
 * links are never updated again, and the first entry point's neighbourhood
 * turns into dead nodes that lead nowhere live. Every search must still
 * return k points: the entry point moves to a live node when its own dies,
 * and a walk that comes back short falls back to the exact scan. */
static void test_search_stays_whole_under_churn_without_vacuum(void **s)
{
	size_t n = 200, k = 10;
	float *v = tu_clustered(n * 4, DIM, 10, 9);
	sh_hnsw *h = new_index(SH_METRIC_L2, SH_STORAGE_F32, DIM);
	insert_all(h, v, n, DIM);
	uint64_t s0 = 5;
	size_t fallbacks = 0, searches = 0;
	for (size_t r = 0; r < 40; r++) {
		for (size_t j = 0; j < n; j++) {
			sh_pid p = sh_pid_u64(tu_rand(&s0) % n);
			const float *nv = v + (tu_rand(&s0) % (4 * n)) * DIM;
			assert_int_equal(sh_hnsw_upsert(h, &p, nv, NULL, NULL),
					 SH_OK);
		}
		for (size_t q = 0; q < 20; q++) {
			sh_hnsw_hit hits[10];
			size_t nh = 0;
			sh_hnsw_search_stats st;
			const float *qv = v + (tu_rand(&s0) % (4 * n)) * DIM;
			assert_int_equal(
			    sh_hnsw_search(h, qv, k, 0, NULL, hits, &nh, &st),
			    SH_OK);
			assert_int_equal(nh, k);
			fallbacks += st.fallback;
			searches++;
		}
	}
	sh_hnsw_info info;
	sh_hnsw_info_get(h, &info);
	print_message("churn without vacuum: %llu tombstones for %llu live; "
		      "%zu of %zu searches fell back to the scan\n",
		      (unsigned long long)info.tombstones,
		      (unsigned long long)info.live, fallbacks, searches);
	assert_valid(h);
	sh_hnsw_free(h);
	free(v);
}

static void test_string_ids(void **s)
{
	sh_hnsw *h = new_index(SH_METRIC_L2, SH_STORAGE_F32, 3);
	const char *names[] = {"sku-1", "sku-2", "\xc3\xa9t\xc3\xa9", "x"};
	for (int i = 0; i < 4; i++) {
		sh_pid p;
		assert_int_equal(sh_pid_str(names[i], strlen(names[i]), &p),
				 SH_OK);
		float vec[3] = {(float)i, 0, 0};
		assert_int_equal(sh_hnsw_upsert(h, &p, vec, NULL, NULL), SH_OK);
	}
	sh_pid num2 = sh_pid_u64(2);
	float vnum[3] = {2, 0.1f, 0};
	assert_int_equal(sh_hnsw_upsert(h, &num2, vnum, NULL, NULL), SH_OK);
	float q[3] = {2, 0, 0};
	sh_hnsw_hit hits[5];
	size_t nh;
	assert_int_equal(sh_hnsw_search(h, q, 2, 10, NULL, hits, &nh, NULL),
			 SH_OK);
	assert_int_equal(nh, 2);
	assert_int_equal(hits[0].pid.kind, SH_PID_STR);
	assert_memory_equal(hits[0].pid.str, names[2], strlen(names[2]));
	assert_int_equal(hits[1].pid.kind, SH_PID_U64);
	assert_int_equal(hits[1].pid.num, 2);
	sh_pid p;
	sh_pid_str(names[2], strlen(names[2]), &p);
	assert_int_equal(sh_hnsw_delete(h, &p, NULL), SH_OK);
	assert_int_equal(sh_hnsw_vacuum(h, NULL), SH_OK);
	assert_int_equal(sh_hnsw_search(h, q, 1, 10, NULL, hits, &nh, NULL),
			 SH_OK);
	assert_int_equal(hits[0].pid.kind, SH_PID_U64);
	assert_valid(h);
	sh_hnsw_free(h);
}

/* ---- Change log ---------------------------------------------------------- */

/* A mirror of the persisted records, as the shard node would keep them. */
#define MAXN 4096
#define MAXL (SH_HNSW_MAX_LEVEL + 1)
struct rec {
	bool used, tomb;
	sh_pid pid;
	uint32_t level;
	float vec[DIM];
	uint32_t nl[MAXL];
	uint32_t links[MAXL][2 * 16];
	bool haslinks[MAXL];
};
struct store {
	struct rec *r;
	uint32_t entry, entry_level;
	bool has_entry;
	size_t nbatches;
};

static void apply(void *ctx, const sh_hnsw_change *c, size_t n)
{
	struct store *st = ctx;
	st->nbatches++;
	for (size_t i = 0; i < n; i++) {
		assert_true(c[i].iid < MAXN || c[i].kind == SH_CHANGE_ENTRY);
		struct rec *r = c[i].iid < MAXN ? &st->r[c[i].iid] : NULL;
		switch (c[i].kind) {
		case SH_CHANGE_NODE:
			memset(r, 0, sizeof(*r));
			r->used = true;
			r->tomb = c[i].tombstone;
			r->pid = *c[i].pid;
			r->level = c[i].level;
			memcpy(r->vec, c[i].vec, sizeof(r->vec));
			break;
		case SH_CHANGE_LINKS:
			assert_true(r->used);
			assert_true(c[i].level <= r->level);
			r->nl[c[i].level] = c[i].nlinks;
			r->haslinks[c[i].level] = true;
			memcpy(r->links[c[i].level], c[i].links,
			       c[i].nlinks * sizeof(uint32_t));
			break;
		case SH_CHANGE_TOMBSTONE:
			assert_true(r->used);
			r->tomb = true;
			break;
		case SH_CHANGE_FREE:
			assert_true(r->used);
			memset(r, 0, sizeof(*r));
			break;
		case SH_CHANGE_ENTRY:
			st->entry = c[i].iid;
			st->entry_level = c[i].level;
			st->has_entry = true;
			break;
		}
	}
}

static void assert_same_store(const struct store *a, const struct store *b)
{
	for (uint32_t i = 0; i < MAXN; i++) {
		const struct rec *x = &a->r[i], *y = &b->r[i];
		assert_int_equal(x->used, y->used);
		if (!x->used)
			continue;
		assert_int_equal(x->tomb, y->tomb);
		assert_true(sh_pid_eq(&x->pid, &y->pid));
		assert_int_equal(x->level, y->level);
		assert_memory_equal(x->vec, y->vec, sizeof(x->vec));
		for (uint32_t l = 0; l <= x->level; l++) {
			uint32_t nx = x->haslinks[l] ? x->nl[l] : 0;
			uint32_t ny = y->haslinks[l] ? y->nl[l] : 0;
			if (nx != ny)
				fail_msg(
				    "iid %u level %u: %u links logged, %u in "
				    "the index",
				    i, l, nx, ny);
			assert_memory_equal(x->links[l], y->links[l],
					    nx * sizeof(uint32_t));
		}
	}
	assert_int_equal(a->entry, b->entry);
	if (a->entry != SH_IID_NONE)
		assert_int_equal(a->entry_level, b->entry_level);
}

static void test_change_log_reports_exactly_what_changed(void **s)
{
	size_t n = 1200;
	float *v = tu_clustered(n * 2, DIM, 8, 9);
	sh_hnsw_params p;
	sh_hnsw_params_default(&p, DIM);
	p.m = 16;
	p.ef_construction = 60;
	sh_hnsw *h;
	assert_int_equal(sh_hnsw_new(&p, &h), SH_OK);
	struct store log = {calloc(MAXN, sizeof(struct rec)), SH_IID_NONE, 0,
			    false, 0};
	struct store snap = {calloc(MAXN, sizeof(struct rec)), SH_IID_NONE, 0,
			     false, 0};
	sh_hnsw_set_change_fn(h, apply, &log);
	uint64_t rs = 3;
	for (size_t op = 0; op < 3 * n; op++) {
		size_t id = tu_rand(&rs) % n;
		sh_pid pid = sh_pid_u64(id);
		uint32_t r = (uint32_t)(tu_rand(&rs) % 100);
		size_t before = log.nbatches;
		if (r < 80) {
			assert_int_equal(
			    sh_hnsw_upsert(h, &pid,
					   v + (tu_rand(&rs) % (2 * n)) * DIM,
					   NULL, NULL),
			    SH_OK);
			assert_int_equal(log.nbatches, before + 1);
		} else if (r < 97) {
			int rc = sh_hnsw_delete(h, &pid, NULL);
			assert_int_equal(log.nbatches, before + (rc == SH_OK));
		} else {
			assert_int_equal(sh_hnsw_vacuum(h, NULL), SH_OK);
		}
		if (op % 97 == 0 || op == 3 * n - 1) {
			memset(snap.r, 0, MAXN * sizeof(struct rec));
			assert_int_equal(sh_hnsw_dump(h, apply, &snap), SH_OK);
			assert_same_store(&log, &snap);
		}
	}
	assert_valid(h);

	/* the loader rebuilds the same index from the records alone */
	sh_hnsw *h2;
	assert_int_equal(sh_hnsw_new(&p, &h2), SH_OK);
	for (uint32_t i = 0; i < MAXN; i++) {
		struct rec *r = &log.r[i];
		if (!r->used)
			continue;
		assert_int_equal(sh_hnsw_load_node(h2, i, &r->pid, r->level,
						   r->tomb, r->vec),
				 SH_OK);
	}
	for (uint32_t i = 0; i < MAXN; i++) {
		struct rec *r = &log.r[i];
		for (uint32_t l = 0; r->used && l <= r->level; l++)
			assert_int_equal(
			    sh_hnsw_load_links(h2, i, l, r->links[l], r->nl[l]),
			    SH_OK);
	}
	assert_int_equal(sh_hnsw_load_entry(h2, log.entry, log.entry_level),
			 SH_OK);
	assert_int_equal(sh_hnsw_load_finish(h2), SH_OK);
	assert_valid(h2);
	sh_hnsw_hit a[10], b[10];
	size_t na, nb;
	sh_hnsw_search_stats s1, s2;
	for (size_t i = 0; i < 100; i++) {
		const float *q = v + i * 7 * DIM;
		assert_int_equal(
		    sh_hnsw_search(h, q, 10, 50, NULL, a, &na, &s1), SH_OK);
		assert_int_equal(
		    sh_hnsw_search(h2, q, 10, 50, NULL, b, &nb, &s2), SH_OK);
		assert_int_equal(na, nb);
		for (size_t j = 0; j < na; j++) {
			assert_int_equal(a[j].iid, b[j].iid);
			assert_true(a[j].dist == b[j].dist);
		}
		assert_int_equal(s1.ndist, s2.ndist);
	}
	/* and keeps working: inserts into the loaded index reuse freed iids */
	sh_hnsw_info i1, i2;
	sh_hnsw_info_get(h, &i1);
	sh_hnsw_info_get(h2, &i2);
	assert_int_equal(i1.live, i2.live);
	assert_int_equal(i1.nodes, i2.nodes);
	for (size_t i = 0; i < 50; i++) {
		sh_pid pid = sh_pid_u64(n + i);
		assert_int_equal(
		    sh_hnsw_upsert(h2, &pid, v + i * DIM, NULL, NULL), SH_OK);
	}
	assert_valid(h2);
	sh_hnsw_free(h2);
	sh_hnsw_free(h);
	free(log.r);
	free(snap.r);
	free(v);
}

static void test_loader_rejects_inconsistent_records(void **s)
{
	sh_hnsw *h = new_index(SH_METRIC_L2, SH_STORAGE_F32, 2);
	sh_pid a = sh_pid_u64(1), b = sh_pid_u64(2);
	float va[2] = {0, 0}, vb[2] = {1, 1};
	assert_int_equal(sh_hnsw_load_node(h, 0, &a, 0, false, va), SH_OK);
	assert_int_equal(sh_hnsw_load_node(h, 0, &b, 0, false, vb), SH_EINVAL);
	assert_int_equal(sh_hnsw_load_node(h, 1, &a, 0, false, vb), SH_EINVAL);
	assert_int_equal(sh_hnsw_load_node(h, 1, &b, 0, false, vb), SH_OK);
	uint32_t too_many[64] = {0};
	assert_int_equal(sh_hnsw_load_links(h, 0, 0, too_many, 64), SH_EINVAL);
	assert_int_equal(sh_hnsw_load_links(h, 0, 1, too_many, 1), SH_EINVAL);
	uint32_t to_missing[1] = {7};
	assert_int_equal(sh_hnsw_load_links(h, 0, 0, to_missing, 1), SH_OK);
	assert_int_equal(sh_hnsw_load_entry(h, 0, 0), SH_OK);
	assert_int_equal(sh_hnsw_load_finish(h), SH_ECORRUPT);
	sh_hnsw_free(h);
}

static void test_int8_index_is_small(void **s)
{
	size_t n = 3000, dim = 784;
	float *v = malloc(n * dim * sizeof(float));
	uint64_t rs = 1;
	for (size_t i = 0; i < n * dim; i++)
		v[i] = tu_unif(&rs);
	uint64_t mem[2];
	for (int st = 0; st < 2; st++) {
		sh_hnsw *h =
		    new_index(SH_METRIC_L2, (sh_storage)st, (uint32_t)dim);
		insert_all(h, v, n, dim);
		sh_hnsw_info info;
		sh_hnsw_info_get(h, &info);
		mem[st] = info.mem_bytes;
		sh_hnsw_free(h);
	}
	print_message("784-d: f32 %llu bytes, int8 %llu bytes (%.3f)\n",
		      (unsigned long long)mem[0], (unsigned long long)mem[1],
		      (double)mem[1] / (double)mem[0]);
	assert_true((double)mem[1] <= 0.4 * (double)mem[0]);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_index_returns_nothing),
	    cmocka_unit_test(test_bad_input_changes_nothing),
	    cmocka_unit_test(test_recall_l2_f32),
	    cmocka_unit_test(test_recall_ip_f32),
	    cmocka_unit_test(test_recall_cosine_f32),
	    cmocka_unit_test(test_recall_l2_int8_rescored),
	    cmocka_unit_test(test_recall_cosine_int8_rescored),
	    cmocka_unit_test(test_upsert_moves_point_and_never_duplicates),
	    cmocka_unit_test(test_deleted_point_never_returned),
	    cmocka_unit_test(test_vacuum_bounds_memory_under_churn),
	    cmocka_unit_test(
		test_search_stays_whole_under_churn_without_vacuum),
	    cmocka_unit_test(test_string_ids),
	    cmocka_unit_test(test_change_log_reports_exactly_what_changed),
	    cmocka_unit_test(test_loader_rejects_inconsistent_records),
	    cmocka_unit_test(test_int8_index_is_small),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
