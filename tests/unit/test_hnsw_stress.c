/*
 * Readers never see a torn or stale index: several threads search while one
 * writer inserts, upserts, deletes and vacuums. Every hit must be
 *   - a point that was not deleted before the search began,
 *   - at the exact distance of one of the vectors the point held during the
 *     search (so never a half-written or recycled node),
 *   - in ascending order, and at most once.
 * SHOAL_STRESS_OPS sets the writer's operation count (default 20000).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "hnsw.h"
#include "testutil.h"

#define DIM 16
#define NPTS 3000
#define NREADERS 3
#define K 10

static sh_hnsw *g_h;
static _Atomic uint32_t g_ver[NPTS];   /* current version, 0 = never */
static _Atomic uint64_t g_state[NPTS]; /* DELETED_BIT | seq of the delete */
static _Atomic uint64_t g_seq;
static _Atomic int g_done;
static _Atomic uint64_t g_checked, g_searches;
#define DELETED_BIT (1ull << 63)

/* cmocka's assertions longjmp and must stay on the main thread: worker
 * threads record the first failure here and stop everyone. */
static pthread_mutex_t g_fail_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_fail[512];

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			pthread_mutex_lock(&g_fail_lock);                      \
			if (!g_fail[0])                                        \
				snprintf(g_fail, sizeof(g_fail), __VA_ARGS__); \
			pthread_mutex_unlock(&g_fail_lock);                    \
			atomic_store(&g_done, 1);                              \
			return NULL;                                           \
		}                                                              \
	} while (0)

static void gen(uint32_t id, uint32_t ver, float *out)
{
	uint64_t s = ((uint64_t)id << 32) ^ ver ^ 0xabcdefull;
	/* a few clusters so the graph has structure */
	float base = (float)(id % 7);
	for (int i = 0; i < DIM; i++)
		out[i] = base + tu_gauss(&s) * 0.5f;
}

static float l2(const float *a, const float *b)
{
	float s = 0;
	for (int i = 0; i < DIM; i++)
		s += (a[i] - b[i]) * (a[i] - b[i]);
	return s;
}

static void *writer(void *arg)
{
	long ops = (long)(intptr_t)arg;
	uint64_t rs = 99;
	float v[DIM];
	for (long op = 0; op < ops && !atomic_load(&g_done); op++) {
		uint32_t id = (uint32_t)(tu_rand(&rs) % NPTS);
		uint32_t r = (uint32_t)(tu_rand(&rs) % 1000);
		sh_pid pid = sh_pid_u64(id);
		if (r < 700) {
			uint32_t nv = atomic_load(&g_ver[id]) + 1;
			gen(id, nv, v);
			/* announce before the point can be seen */
			atomic_store(&g_ver[id], nv);
			atomic_store(&g_state[id], 0);
			int rc = sh_hnsw_upsert(g_h, &pid, v, NULL, NULL);
			CHECK(rc == SH_OK, "upsert: %s", sh_strerror(rc));
		} else if (r < 995) {
			if (sh_hnsw_delete(g_h, &pid, NULL) == SH_OK)
				atomic_store(
				    &g_state[id],
				    DELETED_BIT |
					(atomic_fetch_add(&g_seq, 1) + 1));
		} else {
			int rc = sh_hnsw_vacuum(g_h, NULL);
			CHECK(rc == SH_OK, "vacuum: %s", sh_strerror(rc));
		}
	}
	atomic_store(&g_done, 1);
	return NULL;
}

static void *reader(void *arg)
{
	uint64_t rs = (uint64_t)(intptr_t)arg;
	static _Thread_local uint32_t v0[NPTS];
	sh_hnsw_hit hits[K];
	float q[DIM], v[DIM];
	while (!atomic_load(&g_done)) {
		uint32_t qid = (uint32_t)(tu_rand(&rs) % NPTS);
		gen(qid, (uint32_t)tu_rand(&rs), q);
		uint64_t s0 = atomic_load(&g_seq);
		for (int i = 0; i < NPTS; i++)
			v0[i] = atomic_load(&g_ver[i]);
		size_t n;
		int rc = sh_hnsw_search(g_h, q, K, 40, NULL, hits, &n, NULL);
		CHECK(rc == SH_OK, "search: %s", sh_strerror(rc));
		for (size_t i = 0; i < n; i++) {
			uint32_t id = (uint32_t)hits[i].pid.num;
			CHECK(id < NPTS, "unknown point %u", id);
			CHECK(i == 0 || hits[i - 1].dist <= hits[i].dist,
			      "hits out of order at %zu", i);
			for (size_t j = 0; j < i; j++)
				CHECK(hits[j].pid.num != id, "point %u twice",
				      id);
			uint64_t st = atomic_load(&g_state[id]);
			CHECK(
			    !((st & DELETED_BIT) && (st & ~DELETED_BIT) <= s0),
			    "point %u deleted at %llu returned by a "
			    "search that began at %llu",
			    id, (unsigned long long)(st & ~DELETED_BIT),
			    (unsigned long long)s0);
			uint32_t v1 = atomic_load(&g_ver[id]);
			uint32_t lo = v0[id] > 1 ? v0[id] - 1 : 1;
			bool match = false;
			for (uint32_t ver = lo; ver <= v1 && !match; ver++) {
				gen(id, ver, v);
				float d = l2(q, v);
				match = fabsf(d - hits[i].dist) <=
					1e-4f * (d + 1.0f);
			}
			CHECK(match,
			      "point %u at distance %f matches none of "
			      "its versions %u..%u",
			      id, hits[i].dist, lo, v1);
			atomic_fetch_add(&g_checked, 1);
		}
		atomic_fetch_add(&g_searches, 1);
	}
	return NULL;
}

static void test_readers_see_only_live_correctly_ranked_points(void **s)
{
	sh_hnsw_params p;
	sh_hnsw_params_default(&p, DIM);
	p.m = 8;
	p.ef_construction = 64;
	assert_int_equal(sh_hnsw_new(&p, &g_h), SH_OK);
	long ops = 20000;
	const char *e = getenv("SHOAL_STRESS_OPS");
	if (e && atol(e) > 0)
		ops = atol(e);
	pthread_t w, r[NREADERS];
	for (intptr_t i = 0; i < NREADERS; i++)
		assert_int_equal(
		    pthread_create(&r[i], NULL, reader, (void *)(i + 1)), 0);
	assert_int_equal(
	    pthread_create(&w, NULL, writer, (void *)(intptr_t)ops), 0);
	pthread_join(w, NULL);
	for (int i = 0; i < NREADERS; i++)
		pthread_join(r[i], NULL);
	if (g_fail[0])
		fail_msg("%s", g_fail);
	print_message("%llu searches, %llu hits checked during %ld writes\n",
		      (unsigned long long)g_searches,
		      (unsigned long long)g_checked, ops);
	assert_true(g_searches > 0);
	char err[256];
	assert_int_equal(sh_hnsw_validate(g_h, err, sizeof(err)), SH_OK);

	/* quiescent: search agrees with brute force */
	sh_hnsw_hit a[K], b[K];
	double sum = 0;
	float q[DIM];
	uint64_t rs = 5;
	for (int i = 0; i < 200; i++) {
		size_t na, nb;
		gen((uint32_t)(tu_rand(&rs) % NPTS), 7777, q);
		assert_int_equal(
		    sh_hnsw_search(g_h, q, K, 80, NULL, a, &na, NULL), SH_OK);
		assert_int_equal(sh_hnsw_exact(g_h, q, K, NULL, b, &nb), SH_OK);
		sum += tu_overlap(a, na, b, nb, K);
	}
	print_message("recall@10 after the storm: %.4f\n", sum / 200);
	assert_true(sum / 200 >= 0.9);
	sh_hnsw_free(g_h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(
		test_readers_see_only_live_correctly_ranked_points),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
