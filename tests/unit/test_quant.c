/* int8 quantization: encode/decode error and distances from codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "quant.h"
#include "testutil.h"

static void test_decode_error_within_half_a_step(void **state)
{
	uint64_t s = 1;
	for (size_t d = 1; d <= 1536; d = d * 3 + 1) {
		float x[1536], y[1536];
		uint8_t c[1536];
		sh_q8_meta m;
		for (size_t i = 0; i < d; i++)
			x[i] = tu_gauss(&s) * 10.0f - 3.0f;
		sh_q8_encode(x, d, c, &m);
		sh_q8_decode(c, &m, d, y);
		for (size_t i = 0; i < d; i++)
			assert_true(fabsf(x[i] - y[i]) <=
				    m.step * 0.5f + 1e-4f);
	}
}

static void test_constant_vector_is_exact(void **state)
{
	float x[5] = {2, 2, 2, 2, 2}, y[5];
	uint8_t c[5];
	sh_q8_meta m;
	sh_q8_encode(x, 5, c, &m);
	sh_q8_decode(c, &m, 5, y);
	for (int i = 0; i < 5; i++)
		assert_true(y[i] == 2.0f);
}

/* The distance formulas give the distance between the decoded vectors. */
static void test_code_dot_equals_decoded_dot(void **state)
{
	const sh_kernels *k = sh_kernels_get();
	uint64_t s = 2;
	for (size_t d = 1; d <= 1000; d = d * 2 + 3) {
		float x[1000], y[1000], dx[1000], dy[1000];
		uint8_t cx[1000], cy[1000];
		int8_t qy[1000];
		sh_q8_meta mx, my, mq;
		for (size_t i = 0; i < d; i++) {
			x[i] = tu_gauss(&s);
			y[i] = tu_unif(&s) * 255.0f;
		}
		sh_q8_encode(x, d, cx, &mx);
		sh_q8_encode(y, d, cy, &my);
		sh_q8_encode_query(y, d, qy, &mq);
		sh_q8_decode(cx, &mx, d, dx);
		sh_q8_decode(cy, &my, d, dy);
		double ref = 0, mag = 0;
		for (size_t i = 0; i < d; i++) {
			ref += (double)dx[i] * dy[i];
			mag += fabs((double)dx[i] * dy[i]);
		}
		float pair = sh_q8_dot_pair(k->dot_u8(cx, cy, d), &mx, &my, d);
		float q = sh_q8_dot_query(k->dot_u8i8(cx, qy, d), &mx, &mq, d);
		assert_true(fabs(pair - ref) <= 1e-4 * mag + 1e-4);
		assert_true(fabs(q - ref) <= 1e-4 * mag + 1e-4);
		sh_q8_qconst qc;
		sh_q8_qconst_init(&mq, d, &qc);
		float fast = sh_q8_dot_fast(k->dot_u8i8(cx, qy, d), &mx, &qc);
		assert_true(fabs(fast - ref) <= 1e-4 * mag + 1e-3);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_decode_error_within_half_a_step),
	    cmocka_unit_test(test_constant_vector_is_exact),
	    cmocka_unit_test(test_code_dot_equals_decoded_dot),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
