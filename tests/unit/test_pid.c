/* Point ids: validation, equality, hashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "error.h"
#include "pid.h"

static void test_string_id_rejects_bad_utf8_and_lengths(void **state)
{
	sh_pid p;
	char long_id[SH_PID_MAX_STR + 1];
	memset(long_id, 'a', sizeof(long_id));
	assert_int_equal(sh_pid_str("", 0, &p), SH_EINVAL);
	assert_int_equal(sh_pid_str(long_id, sizeof(long_id), &p), SH_EINVAL);
	assert_int_equal(sh_pid_str(long_id, SH_PID_MAX_STR, &p), SH_OK);
	assert_int_equal(p.len, SH_PID_MAX_STR);
	assert_int_equal(sh_pid_str("\xff", 1, &p), SH_EINVAL);
	assert_int_equal(sh_pid_str("\xc0\x80", 2, &p),
			 SH_EINVAL); /* overlong */
	assert_int_equal(sh_pid_str("\xed\xa0\x80", 3, &p),
			 SH_EINVAL); /* surrogate */
	assert_int_equal(sh_pid_str("\xe2\x82", 2, &p),
			 SH_EINVAL); /* truncated */
	assert_int_equal(sh_pid_str("sku-\xc3\xa9", 6, &p), SH_OK);
	assert_int_equal(sh_pid_str("a\0b", 3, &p), SH_EINVAL); /* NUL */
}

static void test_int_and_string_ids_are_distinct(void **state)
{
	sh_pid a = sh_pid_u64(7), b, c;
	assert_int_equal(sh_pid_str("7", 1, &b), SH_OK);
	assert_false(sh_pid_eq(&a, &b));
	assert_int_equal(sh_pid_str("7", 1, &c), SH_OK);
	assert_true(sh_pid_eq(&b, &c));
	assert_true(sh_pid_hash(&b) == sh_pid_hash(&c));
	sh_pid d = sh_pid_u64(7);
	assert_true(sh_pid_eq(&a, &d));
	assert_true(sh_pid_hash(&a) == sh_pid_hash(&d));
	char buf[80];
	assert_string_equal(sh_pid_format(&a, buf, sizeof(buf)), "7");
	assert_string_equal(sh_pid_format(&b, buf, sizeof(buf)), "\"7\"");
}

static void test_error_names_cover_every_code(void **state)
{
	assert_string_equal(sh_errname(SH_OK), "OK");
	assert_string_equal(sh_errname(SH_ENOMEM), "ENOMEM");
	assert_string_equal(sh_strerror(SH_ENOTFOUND), "not found");
	assert_string_equal(sh_strerror(9999), "unknown error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_string_id_rejects_bad_utf8_and_lengths),
	    cmocka_unit_test(test_int_and_string_ids_are_distinct),
	    cmocka_unit_test(test_error_names_cover_every_code),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
