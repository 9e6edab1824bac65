/* Flags and config files: values, ranges, choices, files, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "flags.h"
#include "log.h"

struct cfg {
	const char *listen, *config;
	int64_t threads;
	bool verbose;
	uint64_t max_msg;
	int fsync;
};

static void table(struct cfg *c, sh_flag *f)
{
	c->listen = "tcp://127.0.0.1:7000";
	c->config = NULL;
	c->threads = 4;
	c->verbose = false;
	c->max_msg = 64u << 20;
	c->fsync = 0;
	sh_flag t[] = {
	    {"listen", SH_FLAG_STR, &c->listen, "address", NULL, 0, 0},
	    {"config", SH_FLAG_STR, &c->config, "file", NULL, 0, 0},
	    {"threads", SH_FLAG_INT, &c->threads, "workers", NULL, 1, 256},
	    {"verbose", SH_FLAG_BOOL, &c->verbose, "chatty", NULL, 0, 0},
	    {"max-message", SH_FLAG_SIZE, &c->max_msg, "bytes", NULL, 1024,
	     1ll << 32},
	    {"fsync", SH_FLAG_CHOICE, &c->fsync, "policy", "always|batch|never",
	     0, 0},
	};
	memcpy(f, t, sizeof(t));
}

static int parse(struct cfg *c, int argc, char **argv, char *err)
{
	sh_flag f[6];
	table(c, f);
	sh_flags *st = NULL;
	bool help;
	int first;
	int rc = sh_flags_parse(f, 6, argc, argv, "config", &st, &first, &help,
				err, 256);
	if (rc == SH_OK) {
		/* copy strings out before freeing */
		static char keep[256];
		snprintf(keep, sizeof(keep), "%s", c->listen);
		c->listen = keep;
		c->config = NULL;
		sh_flags_free(st);
	}
	return rc;
}

static void test_flags_set_every_type(void **s)
{
	struct cfg c;
	char err[256];
	char *argv[] = {"prog",	     "--listen=tcp://127.0.0.1:9",
			"--threads", "8",
			"--verbose", "--max-message",
			"2M",	     "--fsync=never",
			"rest"};
	assert_int_equal(parse(&c, 9, argv, err), SH_OK);
	assert_string_equal(c.listen, "tcp://127.0.0.1:9");
	assert_int_equal(c.threads, 8);
	assert_true(c.verbose);
	assert_int_equal(c.max_msg, 2u << 20);
	assert_int_equal(c.fsync, 2);
}

static void test_bad_values_are_errors_naming_the_flag(void **s)
{
	struct cfg c;
	char err[256];
	char *a1[] = {"p", "--threads", "0"};
	assert_int_equal(parse(&c, 3, a1, err), SH_EINVAL);
	assert_non_null(strstr(err, "--threads"));
	char *a2[] = {"p", "--threads", "8x"};
	assert_int_equal(parse(&c, 3, a2, err), SH_EINVAL);
	char *a3[] = {"p", "--fsync", "sometimes"};
	assert_int_equal(parse(&c, 3, a3, err), SH_EINVAL);
	assert_non_null(strstr(err, "always|batch|never"));
	char *a4[] = {"p", "--nope"};
	assert_int_equal(parse(&c, 2, a4, err), SH_EINVAL);
	assert_non_null(strstr(err, "--nope"));
	char *a5[] = {"p", "--listen"};
	assert_int_equal(parse(&c, 2, a5, err), SH_EINVAL);
	char *a6[] = {"p", "--max-message", "-5"};
	assert_int_equal(parse(&c, 3, a6, err), SH_EINVAL);
	char *a7[] = {"p", "--max-message", "99999999T"};
	assert_int_equal(parse(&c, 3, a7, err), SH_EINVAL);
	char *a8[] = {"p", "--verbose=maybe"};
	assert_int_equal(parse(&c, 2, a8, err), SH_EINVAL);
}

static void test_config_file_then_command_line(void **s)
{
	char path[] = "/tmp/shoal-flags-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text =
	    "# a comment\n\nthreads = 16\nfsync = batch  # trailing\n"
	    "listen = tcp://127.0.0.1:1234\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	struct cfg c;
	char err[256];
	char *argv[] = {"p", "--config", path, "--threads", "2"};
	assert_int_equal(parse(&c, 5, argv, err), SH_OK);
	assert_int_equal(c.threads, 2); /* the command line wins */
	assert_int_equal(c.fsync, 1);
	assert_string_equal(c.listen, "tcp://127.0.0.1:1234");

	FILE *f = fopen(path, "w");
	fputs("threads 3\n", f);
	fclose(f);
	assert_int_equal(parse(&c, 3, argv, err), SH_EINVAL);
	assert_non_null(strstr(err, ":1:"));
	f = fopen(path, "w");
	fputs("bogus = 1\n", f);
	fclose(f);
	assert_int_equal(parse(&c, 3, argv, err), SH_EINVAL);
	assert_non_null(strstr(err, "bogus"));
	unlink(path);
	assert_int_equal(parse(&c, 3, argv, err), SH_EINVAL); /* missing file */
}

/* A repeatable flag keeps every value: the file's first, then the
 * command line's; the default is replaced, not appended to. */
static void test_list_flags_collect_every_value(void **s)
{
	char path[] = "/tmp/shoal-flags-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "topic = from-file\nkafka = a=b\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	static const char *defaults[] = {"default"};
	sh_strlist topics = {defaults, 1}, props = {NULL, 0};
	const char *config = NULL;
	sh_flag f[] = {
	    {"topic", SH_FLAG_LIST, &topics, "topics", NULL, 0, 0},
	    {"kafka", SH_FLAG_LIST, &props, "properties", NULL, 0, 0},
	    {"config", SH_FLAG_STR, &config, "file", NULL, 0, 0},
	};
	char *argv[] = {"p",   "--config",    path,	 "--topic",
			"one", "--topic=two", "--kafka", "x=y=z"};
	sh_flags *st = NULL;
	bool help;
	int first;
	char err[256];
	assert_int_equal(sh_flags_parse(f, 3, 8, argv, "config", &st, &first,
					&help, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(topics.n, 3);
	assert_string_equal(topics.v[0], "from-file");
	assert_string_equal(topics.v[1], "one");
	assert_string_equal(topics.v[2], "two");
	assert_int_equal(props.n, 2);
	assert_string_equal(props.v[0], "a=b");
	assert_string_equal(props.v[1], "x=y=z");
	sh_flags_free(st);
	assert_int_equal(topics.n, 0);
	assert_null(topics.v);

	/* untouched: the default stays */
	topics.v = defaults;
	topics.n = 1;
	char *argv2[] = {"p", "--kafka", "k=v"};
	assert_int_equal(sh_flags_parse(f, 3, 3, argv2, "config", &st, &first,
					&help, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(topics.n, 1);
	assert_string_equal(topics.v[0], "default");
	sh_flags_free(st);
	unlink(path);
}

static void test_help_stops_parsing(void **s)
{
	struct cfg c;
	sh_flag f[6];
	table(&c, f);
	sh_flags *st;
	bool help;
	char err[64];
	char *argv[] = {"p", "--help", "--threads", "0"};
	assert_int_equal(sh_flags_parse(f, 6, 4, argv, NULL, &st, NULL, &help,
					err, sizeof(err)),
			 SH_OK);
	assert_true(help);
	sh_flags_free(st);
	FILE *out = fopen("/dev/null", "w");
	sh_flags_usage(out, "p [flags]", "A program.", f, 6);
	fclose(out);
}

static void test_log_levels_parse(void **s)
{
	sh_log_level l;
	assert_int_equal(sh_log_level_parse("warn", &l), SH_OK);
	assert_int_equal(l, SH_LOG_WARN);
	assert_int_equal(sh_log_level_parse("loud", &l), SH_EINVAL);
	sh_log_set_level(SH_LOG_ERROR);
	sh_info("test", "dropped %d", 1);
	sh_log_set_level(SH_LOG_INFO);
	char big[4096];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	sh_info("test", "long line %s", big); /* truncated, not overflowed */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_flags_set_every_type),
	    cmocka_unit_test(test_bad_values_are_errors_naming_the_flag),
	    cmocka_unit_test(test_config_file_then_command_line),
	    cmocka_unit_test(test_list_flags_collect_every_value),
	    cmocka_unit_test(test_help_stops_parsing),
	    cmocka_unit_test(test_log_levels_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
