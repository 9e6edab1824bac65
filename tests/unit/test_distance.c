/*
 * Unit tests for the distance kernels (common/index/distance.h).
 *
 * Every table this build and CPU can run (scalar, avx2, avx512; the others
 * are skipped and the ones tested are named in the output) is checked
 * against the scalar table on many dimensions, including every multiple of
 * 16, 32 and 64 near the sizes the SIMD loops switch at, with data from a
 * fixed-seed PRNG: floats agree to 1e-5 of the sum of the absolute terms,
 * integers agree exactly. The scalar table is itself checked against double
 * and 64-bit references. Kernels must also accept unaligned pointers and
 * never read outside their vectors (checked with PROT_NONE guard pages), and
 * sh_kernels_get() must choose the best runnable table, or the one
 * SHOAL_KERNELS names, the same one in every thread (checked in child
 * processes, since the choice is made once per process).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "distance.h"

/* ---- helpers ------------------------------------------------------------- */

/* Dimensions every table is compared on. */
static const size_t dims[] = {
    1,	 2,   3,   4,	5,   7,	   8,	 9,    15,   16,   17,	 31,   32,
    33,	 47,  48,  49,	63,  64,   65,	 95,   96,   97,   100,	 127,  128,
    129, 191, 192, 193, 255, 256,  257,	 319,  320,  321,  511,	 512,  513,
    767, 768, 769, 784, 960, 1023, 1024, 1025, 1536, 4095, 4096, 4097,
};
#define NDIMS (sizeof(dims) / sizeof(dims[0]))
#define MAXDIM 4097

/* splitmix64: small, fixed-seed, the same sequence everywhere. */
static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
	rng_state = seed;
}

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static float rng_float(float lo, float hi)
{
	double u = (double)(rng_next() >> 11) / (double)(1ull << 53);

	return (float)(lo + (hi - lo) * u);
}

/* Ways of filling test vectors. */
enum fill {
	FILL_UNIT,  /* floats in [-1, 1]; bytes uniform over their range */
	FILL_LARGE, /* floats in [0, 255]; bytes only at their extremes */
	FILL_MIXED, /* floats of magnitudes 1e-3 .. 1e3, either sign */
	FILL_COUNT,
};

static void fill_f32(float *v, size_t n, enum fill f)
{
	for (size_t i = 0; i < n; i++) {
		switch (f) {
		case FILL_UNIT:
			v[i] = rng_float(-1.0f, 1.0f);
			break;
		case FILL_LARGE:
			v[i] = rng_float(0.0f, 255.0f);
			break;
		default:
			v[i] = powf(10.0f, rng_float(-3.0f, 3.0f)) *
			       (rng_next() & 1 ? 1.0f : -1.0f);
			break;
		}
	}
}

/* Bytes over the whole 0..255 range (-128..127 read as int8_t), or only the
 * extremes 0, 255 (as int8_t: 0, -1) and 127, 128 (127, -128). */
static void fill_bytes(uint8_t *v, size_t n, enum fill f)
{
	static const uint8_t extremes[] = {0, 127, 128, 255};

	for (size_t i = 0; i < n; i++)
		v[i] = f == FILL_LARGE ? extremes[rng_next() & 3]
				       : (uint8_t)rng_next();
}

struct table {
	const char *name;
	const sh_kernels *(*get)(void);
};

static const struct table tables[] = {
    {"scalar", sh_kernels_scalar},
    {"avx2", sh_kernels_avx2},
    {"avx512", sh_kernels_avx512},
};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))

/* Sum of the absolute values of the terms of l2sq (is_dot false) or dot. */
static double abs_terms(const float *a, const float *b, size_t n, int is_dot)
{
	double s = 0.0;

	for (size_t i = 0; i < n; i++) {
		double t = is_dot
			       ? (double)a[i] * b[i]
			       : ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		s += fabs(t);
	}
	return s;
}

static void assert_float_close(float got, double want, double abs_sum,
			       const char *what, const char *table, size_t n)
{
	double tol = 1e-5 * abs_sum;

	if (fabs((double)got - want) > tol) {
		print_error(
		    "%s %s n=%zu: got %.9g, want %.9g (tolerance %.3g)\n",
		    table, what, n, (double)got, want, tol);
		fail();
	}
}

static void assert_int_equal_at(int64_t got, int64_t want, const char *what,
				const char *table, size_t n)
{
	if (got != want) {
		print_error("%s %s n=%zu: got %lld, want %lld\n", table, what,
			    n, (long long)got, (long long)want);
		fail();
	}
}

/*
 * Compare every kernel of k with the scalar table on a, b (floats) and x, y
 * (bytes), n elements each.
 */
static void compare_with_scalar(const sh_kernels *k, const float *a,
				const float *b, const uint8_t *x,
				const uint8_t *y, size_t n)
{
	const sh_kernels *s = sh_kernels_scalar();
	const int8_t *xs = (const int8_t *)x, *ys = (const int8_t *)y;

	assert_float_close(k->l2sq_f32(a, b, n), s->l2sq_f32(a, b, n),
			   abs_terms(a, b, n, 0), "l2sq_f32", k->name, n);
	assert_float_close(k->dot_f32(a, b, n), s->dot_f32(a, b, n),
			   abs_terms(a, b, n, 1), "dot_f32", k->name, n);
	assert_int_equal_at(k->dot_i8(xs, ys, n), s->dot_i8(xs, ys, n),
			    "dot_i8", k->name, n);
	assert_int_equal_at(k->l2sq_i8(xs, ys, n), s->l2sq_i8(xs, ys, n),
			    "l2sq_i8", k->name, n);
	assert_int_equal_at(k->dot_u8i8(x, ys, n), s->dot_u8i8(x, ys, n),
			    "dot_u8i8", k->name, n);
	assert_int_equal_at(k->dot_u8(x, y, n), s->dot_u8(x, y, n), "dot_u8",
			    k->name, n);
}

/* Test vectors, with room to offset them. */
struct bufs {
	float a[MAXDIM + 16], b[MAXDIM + 16];
	uint8_t x[MAXDIM + 64], y[MAXDIM + 64];
};

static struct bufs *bufs_new(void)
{
	/* aligned_alloc wants a multiple of the alignment. */
	struct bufs *v = aligned_alloc(64, (sizeof(*v) + 63) / 64 * 64);

	assert_non_null(v);
	return v;
}

/* Compare table t with the scalar one on every dimension and fill, with the
 * vectors offset from 64-byte alignment by off elements. */
static void check_table(const char *name, size_t off)
{
	const sh_kernels *k = NULL;
	struct bufs *v;

	for (size_t t = 0; t < NTABLES; t++)
		if (strcmp(tables[t].name, name) == 0)
			k = tables[t].get();
	if (k == NULL) {
		print_message("[ SKIP     ] %s: not compiled in or not "
			      "supported by this CPU\n",
			      name);
		skip();
	}
	assert_string_equal(k->name, name);

	v = bufs_new();
	rng_seed(0x5eed0000u + off);
	for (size_t d = 0; d < NDIMS; d++) {
		size_t n = dims[d];

		for (int f = 0; f < FILL_COUNT; f++) {
			/* Garbage around the vectors, so that a kernel that
			 * reads an element too many gets a wrong answer. */
			fill_f32(v->a, MAXDIM + 16, FILL_LARGE);
			fill_f32(v->b, MAXDIM + 16, FILL_MIXED);
			fill_bytes(v->x, MAXDIM + 64, FILL_UNIT);
			fill_bytes(v->y, MAXDIM + 64, FILL_UNIT);
			fill_f32(v->a + off, n, (enum fill)f);
			fill_f32(v->b + off, n, (enum fill)f);
			fill_bytes(v->x + off, n, (enum fill)f);
			fill_bytes(v->y + off, n, (enum fill)f);
			compare_with_scalar(k, v->a + off, v->b + off,
					    v->x + off, v->y + off, n);
		}
	}
	free(v);
}

/* ---- the scalar reference ------------------------------------------------ */

static void test_scalar_float_kernels_match_double_reference(void **state)
{
	const sh_kernels *s = sh_kernels_scalar();
	struct bufs *v = bufs_new();

	(void)state;
	assert_non_null(s);
	assert_string_equal(s->name, "scalar");
	rng_seed(1);
	for (size_t d = 0; d < NDIMS; d++) {
		size_t n = dims[d];

		for (int f = 0; f < FILL_COUNT; f++) {
			double l2 = 0.0, dot = 0.0;

			fill_f32(v->a, n, (enum fill)f);
			fill_f32(v->b, n, (enum fill)f);
			for (size_t i = 0; i < n; i++) {
				double dd = (double)v->a[i] - v->b[i];

				l2 += dd * dd;
				dot += (double)v->a[i] * v->b[i];
			}
			assert_float_close(s->l2sq_f32(v->a, v->b, n), l2,
					   abs_terms(v->a, v->b, n, 0),
					   "l2sq_f32", "scalar", n);
			assert_float_close(s->dot_f32(v->a, v->b, n), dot,
					   abs_terms(v->a, v->b, n, 1),
					   "dot_f32", "scalar", n);
		}
	}
	free(v);
}

static void test_scalar_integer_kernels_match_exact_reference(void **state)
{
	const sh_kernels *s = sh_kernels_scalar();
	struct bufs *v = bufs_new();

	(void)state;
	rng_seed(2);
	for (size_t d = 0; d < NDIMS; d++) {
		size_t n = dims[d];

		for (int f = 0; f < FILL_COUNT; f++) {
			const int8_t *xs = (const int8_t *)v->x;
			const int8_t *ys = (const int8_t *)v->y;
			int64_t di8 = 0, l2i8 = 0, dui8 = 0, du8 = 0;

			fill_bytes(v->x, n, (enum fill)f);
			fill_bytes(v->y, n, (enum fill)f);
			for (size_t i = 0; i < n; i++) {
				di8 += (int64_t)xs[i] * ys[i];
				l2i8 += ((int64_t)xs[i] - ys[i]) *
					((int64_t)xs[i] - ys[i]);
				dui8 += (int64_t)v->x[i] * ys[i];
				du8 += (int64_t)v->x[i] * v->y[i];
			}
			assert_int_equal_at(s->dot_i8(xs, ys, n), di8, "dot_i8",
					    "scalar", n);
			assert_int_equal_at(s->l2sq_i8(xs, ys, n), l2i8,
					    "l2sq_i8", "scalar", n);
			assert_int_equal_at(s->dot_u8i8(v->x, ys, n), dui8,
					    "dot_u8i8", "scalar", n);
			assert_int_equal_at(s->dot_u8(v->x, v->y, n), du8,
					    "dot_u8", "scalar", n);
		}
	}
	free(v);
}

/* ---- each table against the scalar one ----------------------------------- */

static void test_avx2_matches_scalar_on_every_dim(void **state)
{
	(void)state;
	check_table("avx2", 0);
}

static void test_avx512_matches_scalar_on_every_dim(void **state)
{
	(void)state;
	check_table("avx512", 0);
}

static void test_avx2_matches_scalar_on_unaligned_pointers(void **state)
{
	(void)state;
	check_table("avx2", 1);
}

static void test_avx512_matches_scalar_on_unaligned_pointers(void **state)
{
	(void)state;
	check_table("avx512", 1);
	check_table("avx512", 7);
}

/*
 * Every table is exact at the extremes of the byte ranges, up to the largest
 * n distance.h promises exactness for, where the sums come within a hair of
 * the 32-bit limits.
 */
static void
test_integer_kernels_exact_at_byte_extremes_up_to_max_n(void **state)
{
	const size_t max_n = 1u << 17;
	int8_t *p = malloc(max_n), *q = malloc(max_n);
	uint8_t *u = malloc(max_n);

	(void)state;
	assert_non_null(p);
	assert_non_null(q);
	assert_non_null(u);
	memset(p, -128, max_n);
	memset(q, 127, max_n);
	memset(u, 255, max_n);
	for (size_t t = 0; t < NTABLES; t++) {
		const sh_kernels *k = tables[t].get();
		/* n = 2^17 - 1 for dot_i8, n = 2^16 or 2^15 for the others;
		 * the -1 and -3 exercise the tails. */
		size_t ns[] = {1, 63, 4096, (1u << 15) - 3, 1u << 15};

		if (k == NULL)
			continue;
		for (size_t j = 0; j < sizeof(ns) / sizeof(ns[0]); j++) {
			int64_t n = (int64_t)ns[j];

			assert_int_equal_at(k->l2sq_i8(p, q, ns[j]),
					    n * 255 * 255, "l2sq_i8", k->name,
					    ns[j]);
		}
		for (size_t n = (1u << 16) - 1; n <= (1u << 16); n++) {
			assert_int_equal_at(k->dot_u8i8(u, p, n),
					    (int64_t)n * 255 * -128, "dot_u8i8",
					    k->name, n);
			assert_int_equal_at(k->dot_u8(u, u, n),
					    (int64_t)n * 255 * 255, "dot_u8",
					    k->name, n);
		}
		for (size_t n = (1u << 17) - 2; n < (1u << 17); n++)
			assert_int_equal_at(k->dot_i8(p, p, n),
					    (int64_t)n * 128 * 128, "dot_i8",
					    k->name, n);
	}
	free(p);
	free(q);
	free(u);
}

/* ---- memory safety ------------------------------------------------------- */

/*
 * A mapping with PROT_NONE guard pages on both sides of a data area of at
 * least `bytes` bytes: a vector placed flush against either guard faults on
 * the first byte read outside it.
 */
struct guarded {
	uint8_t *map, *data;
	size_t map_len, data_len;
};

static void guarded_map(struct guarded *g, size_t bytes)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	g->data_len = (bytes + page - 1) / page * page;
	g->map_len = g->data_len + 2 * page;
	g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g->map != MAP_FAILED);
	assert_int_equal(mprotect(g->map, page, PROT_NONE), 0);
	assert_int_equal(mprotect(g->map + page + g->data_len, page, PROT_NONE),
			 0);
	g->data = g->map + page;
}

static void guarded_unmap(struct guarded *g)
{
	assert_int_equal(munmap(g->map, g->map_len), 0);
}

/* Where an n-element vector of `size`-byte elements sits flush against the
 * guard after (at_end) or before the data area. */
static void *guarded_place(struct guarded *g, size_t n, size_t size, int at_end)
{
	return at_end ? g->data + g->data_len - n * size : g->data;
}

static void check_guarded(int at_end)
{
	static const size_t extra[] = {100, 127, 128, 129, 255,	 256, 257,
				       511, 513, 784, 960, 1025, 1536};
	struct guarded ga, gb;
	const size_t max_n = 1536;

	guarded_map(&ga, max_n * sizeof(float));
	guarded_map(&gb, max_n * sizeof(float));
	memset(ga.data, 1, ga.data_len);
	memset(gb.data, 2, gb.data_len);
	for (size_t t = 0; t < NTABLES; t++) {
		const sh_kernels *k = tables[t].get();

		if (k == NULL)
			continue;
		for (size_t j = 0; j < 70 + sizeof(extra) / sizeof(extra[0]);
		     j++) {
			size_t n = j < 70 ? j + 1 : extra[j - 70];
			const float *fa = guarded_place(&ga, n, 4, at_end);
			const float *fb = guarded_place(&gb, n, 4, at_end);
			const uint8_t *ua = guarded_place(&ga, n, 1, at_end);
			const uint8_t *ub = guarded_place(&gb, n, 1, at_end);

			/* A stray read faults; the results are only kept
			 * alive. */
			volatile float sink_f;
			volatile uint32_t sink_i;

			sink_f = k->l2sq_f32(fa, fb, n);
			sink_f = k->dot_f32(fa, fb, n);
			sink_i = (uint32_t)k->dot_i8((const int8_t *)ua,
						     (const int8_t *)ub, n);
			sink_i = (uint32_t)k->l2sq_i8((const int8_t *)ua,
						      (const int8_t *)ub, n);
			sink_i =
			    (uint32_t)k->dot_u8i8(ua, (const int8_t *)ub, n);
			sink_i = k->dot_u8(ua, ub, n);
			(void)sink_f;
			(void)sink_i;
		}
	}
	guarded_unmap(&ga);
	guarded_unmap(&gb);
}

static void test_kernels_never_read_past_end(void **state)
{
	(void)state;
	check_guarded(1);
}

static void test_kernels_never_read_before_start(void **state)
{
	(void)state;
	check_guarded(0);
}

/* ---- choosing a table ---------------------------------------------------- */

static const sh_kernels *best_runnable(void)
{
	if (sh_kernels_avx512() != NULL)
		return sh_kernels_avx512();
	if (sh_kernels_avx2() != NULL)
		return sh_kernels_avx2();
	return sh_kernels_scalar();
}

/* What sh_kernels_get() must return with SHOAL_KERNELS set to want (or unset,
 * for NULL). */
static const sh_kernels *expected_choice(const char *want)
{
	for (size_t t = 0; want != NULL && t < NTABLES; t++)
		if (strcmp(want, tables[t].name) == 0 &&
		    tables[t].get() != NULL)
			return tables[t].get();
	return best_runnable();
}

static void test_sh_kernels_returns_best_runnable_table(void **state)
{
	const sh_kernels *k = sh_kernels_get();
	const sh_kernels *want = expected_choice(getenv("SHOAL_KERNELS"));

	(void)state;
	assert_non_null(k);
	assert_true(strcmp(k->name, "scalar") == 0 ||
		    strcmp(k->name, "avx2") == 0 ||
		    strcmp(k->name, "avx512") == 0);
	assert_ptr_equal(k, want);
	assert_ptr_equal(sh_kernels_get(), k);
	assert_non_null(k->l2sq_f32);
	assert_non_null(k->dot_f32);
	assert_non_null(k->dot_i8);
	assert_non_null(k->l2sq_i8);
	assert_non_null(k->dot_u8i8);
	assert_non_null(k->dot_u8);
}

/* Child mode (--print-kernels): call sh_kernels_get() from several threads at
 * once, check they all got the same table and print its name. */
#define CHILD_THREADS 8

static pthread_barrier_t child_barrier;

static void *child_thread(void *arg)
{
	const sh_kernels **out = arg;

	pthread_barrier_wait(&child_barrier);
	*out = sh_kernels_get();
	return NULL;
}

static int child_print_kernels(void)
{
	pthread_t th[CHILD_THREADS];
	const sh_kernels *got[CHILD_THREADS];

	pthread_barrier_init(&child_barrier, NULL, CHILD_THREADS);
	for (int i = 0; i < CHILD_THREADS; i++)
		if (pthread_create(&th[i], NULL, child_thread, &got[i]) != 0)
			return 2;
	for (int i = 0; i < CHILD_THREADS; i++)
		pthread_join(th[i], NULL);
	for (int i = 1; i < CHILD_THREADS; i++)
		if (got[i] != got[0])
			return 3;
	printf("%s\n", got[0]->name);
	return 0;
}

/* Run this program with --print-kernels and SHOAL_KERNELS=want (unset for
 * NULL); return what it printed. */
static void run_child(const char *want, char *out, size_t out_len)
{
	int fds[2], status;
	pid_t pid;
	ssize_t got;
	size_t len = 0;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *argv[] = {"test_distance", "--print-kernels", NULL};

		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		if (want != NULL)
			setenv("SHOAL_KERNELS", want, 1);
		else
			unsetenv("SHOAL_KERNELS");
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(fds[1]);
	while (len + 1 < out_len &&
	       (got = read(fds[0], out + len, out_len - 1 - len)) > 0)
		len += (size_t)got;
	out[len] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	if (len > 0 && out[len - 1] == '\n')
		out[len - 1] = '\0';
}

static void test_shoal_kernels_env_forces_table_in_every_thread(void **state)
{
	static const char *wants[] = {NULL,	"scalar", "avx2",
				      "avx512", "sse9",	  ""};
	char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++) {
		const char *want = expected_choice(wants[i])->name;

		run_child(wants[i], out, sizeof(out));
		print_message("[          ] SHOAL_KERNELS=%s -> %s\n",
			      wants[i] ? wants[i] : "(unset)", out);
		assert_string_equal(out, want);
	}
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scalar_float_kernels_match_double_reference),
	    cmocka_unit_test(test_scalar_integer_kernels_match_exact_reference),
	    cmocka_unit_test(test_avx2_matches_scalar_on_every_dim),
	    cmocka_unit_test(test_avx512_matches_scalar_on_every_dim),
	    cmocka_unit_test(test_avx2_matches_scalar_on_unaligned_pointers),
	    cmocka_unit_test(test_avx512_matches_scalar_on_unaligned_pointers),
	    cmocka_unit_test(
		test_integer_kernels_exact_at_byte_extremes_up_to_max_n),
	    cmocka_unit_test(test_kernels_never_read_past_end),
	    cmocka_unit_test(test_kernels_never_read_before_start),
	    cmocka_unit_test(test_sh_kernels_returns_best_runnable_table),
	    cmocka_unit_test(
		test_shoal_kernels_env_forces_table_in_every_thread),
	};

	if (argc == 2 && strcmp(argv[1], "--print-kernels") == 0)
		return child_print_kernels();

	print_message("[          ] tables tested:");
	for (size_t t = 0; t < NTABLES; t++)
		if (tables[t].get() != NULL)
			print_message(" %s", tables[t].name);
	print_message(" (sh_kernels_get() chose %s)\n", sh_kernels_get()->name);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
