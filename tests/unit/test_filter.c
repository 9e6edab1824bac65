/* Payload filters: semantics of every condition, validation, the text form. */
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

#include "error.h"
#include "filter.h"

static sh_filter *fnew(void)
{
	sh_filter *f = NULL;
	assert_int_equal(sh_filter_new(&f), SH_OK);
	return f;
}

/* Evaluates f against a JSON text payload (NULL: no payload). */
static bool ev(const sh_filter *f, const char *json)
{
	cJSON *p = json ? cJSON_Parse(json) : NULL;
	if (json)
		assert_non_null(p);
	sh_pid id = sh_pid_u64(7);
	bool r = sh_filter_eval(f, &id, p);
	cJSON_Delete(p);
	return r;
}

/* Parses text (must succeed) and evaluates it. */
static bool pev(const char *text, const char *json)
{
	sh_filter *f = NULL;
	char err[256];
	int rc = sh_filter_parse(text, &f, err, sizeof(err));
	if (rc != SH_OK)
		fail_msg("parse of '%s' failed: %s", text, err);
	bool r = ev(f, json);
	sh_filter_free(f);
	return r;
}

static void test_empty_filter_passes_everything(void **state)
{
	sh_filter *f = fnew();
	assert_true(sh_filter_is_empty(f));
	assert_true(ev(f, NULL));
	assert_true(ev(f, "{}"));
	assert_true(ev(f, "{\"a\": 1}"));
	assert_true(ev(f, "[1, 2]")); /* not an object: treated as empty */
	assert_int_equal(sh_filter_validate(f, NULL, 0), SH_OK);
	sh_filter_free(f);
}

static void test_match_keyword_integer_bool(void **state)
{
	sh_filter *f = fnew();
	assert_int_equal(
	    sh_filter_add_match_keyword(f, SH_MUST, "cat", "shoes"), SH_OK);
	assert_true(ev(f, "{\"cat\": \"shoes\"}"));
	assert_false(ev(f, "{\"cat\": \"Shoes\"}"));
	assert_false(ev(f, "{\"cat\": \"shoes \"}"));
	assert_false(ev(f, "{}"));
	assert_false(ev(f, NULL));
	assert_false(ev(f, "{\"cat\": null}"));
	sh_filter_free(f);

	f = fnew();
	assert_int_equal(sh_filter_add_match_integer(f, SH_MUST, "n", -3),
			 SH_OK);
	assert_true(ev(f, "{\"n\": -3}"));
	assert_true(ev(f, "{\"n\": -3.0}"));
	assert_false(ev(f, "{\"n\": -3.5}"));
	assert_false(ev(f, "{\"n\": 3}"));
	sh_filter_free(f);

	f = fnew();
	assert_int_equal(sh_filter_add_match_bool(f, SH_MUST, "ok", false),
			 SH_OK);
	assert_true(ev(f, "{\"ok\": false}"));
	assert_false(ev(f, "{\"ok\": true}"));
	assert_false(ev(f, "{\"ok\": 0}"));
	assert_false(ev(f, "{}"));
	sh_filter_free(f);
}

static void test_type_mismatch_never_passes(void **state)
{
	sh_filter *f = fnew();
	assert_int_equal(sh_filter_add_match_keyword(f, SH_MUST, "a", "5"),
			 SH_OK);
	assert_false(ev(f, "{\"a\": 5}"));
	sh_filter_free(f);
	f = fnew();
	assert_int_equal(sh_filter_add_match_integer(f, SH_MUST, "a", 5),
			 SH_OK);
	assert_false(ev(f, "{\"a\": \"5\"}"));
	assert_false(ev(f, "{\"a\": true}"));
	sh_filter_free(f);
	f = fnew();
	assert_int_equal(sh_filter_add_match_integer(f, SH_MUST, "a", 1),
			 SH_OK);
	assert_false(ev(f, "{\"a\": true}"));
	sh_filter_free(f);
	f = fnew();
	assert_int_equal(sh_filter_add_match_bool(f, SH_MUST, "a", true),
			 SH_OK);
	assert_false(ev(f, "{\"a\": 1}"));
	assert_false(ev(f, "{\"a\": \"true\"}"));
	sh_filter_free(f);
	f = fnew();
	sh_range r = {.has_gt = true, .gt = 0};
	assert_int_equal(sh_filter_add_range(f, SH_MUST, "a", &r), SH_OK);
	assert_false(ev(f, "{\"a\": \"7\"}"));
	assert_false(ev(f, "{\"a\": {\"b\": 7}}"));
	assert_true(ev(f, "{\"a\": 7}"));
	sh_filter_free(f);
}

static void test_match_any_and_arrays(void **state)
{
	sh_filter *f = fnew();
	const char *vals[] = {"red", "blue"};
	assert_int_equal(
	    sh_filter_add_match_any_keyword(f, SH_MUST, "color", vals, 2),
	    SH_OK);
	assert_true(ev(f, "{\"color\": \"blue\"}"));
	assert_false(ev(f, "{\"color\": \"green\"}"));
	assert_true(ev(f, "{\"color\": [\"green\", \"red\"]}"));
	assert_false(ev(f, "{\"color\": [\"green\", 1, null]}"));
	assert_false(ev(f, "{\"color\": [[\"red\"]]}")); /* one level only */
	assert_false(ev(f, "{\"color\": []}"));
	sh_filter_free(f);

	f = fnew();
	int64_t iv[] = {1, 10, 100};
	assert_int_equal(
	    sh_filter_add_match_any_integer(f, SH_MUST, "n", iv, 3), SH_OK);
	assert_true(ev(f, "{\"n\": [5, 10]}"));
	assert_false(ev(f, "{\"n\": [5, 11]}"));
	sh_filter_free(f);

	/* A range holds element by element, not across elements. */
	f = fnew();
	sh_range r = {.has_gt = true, .gt = 10, .has_lt = true, .lt = 20};
	assert_int_equal(sh_filter_add_range(f, SH_MUST, "n", &r), SH_OK);
	assert_false(ev(f, "{\"n\": [3, 50]}"));
	assert_true(ev(f, "{\"n\": [3, 15]}"));
	sh_filter_free(f);
}

static void test_range_bounds_are_strict_or_not(void **state)
{
	struct {
		sh_range r;
		double v;
		bool pass;
	} cases[] = {
	    {{.has_gt = true, .gt = 5}, 5, false},
	    {{.has_gte = true, .gte = 5}, 5, true},
	    {{.has_lt = true, .lt = 5}, 5, false},
	    {{.has_lte = true, .lte = 5}, 5, true},
	    {{.has_gt = true, .gt = -1.5}, -1.25, true},
	    {{.has_gt = true, .gt = -1.5}, -1.5, false},
	    {{.has_gte = true, .gte = -2, .has_lte = true, .lte = -2},
	     -2,
	     true},
	    {{.has_gt = true, .gt = 1, .has_gte = true, .gte = 0}, 1, false},
	    {{.has_lt = true, .lt = 1e300}, -1e300, true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sh_filter *f = fnew();
		assert_int_equal(
		    sh_filter_add_range(f, SH_MUST, "x", &cases[i].r), SH_OK);
		assert_int_equal(sh_filter_validate(f, NULL, 0), SH_OK);
		cJSON *p = cJSON_CreateObject();
		cJSON_AddNumberToObject(p, "x", cases[i].v);
		if (sh_filter_eval(f, NULL, p) != cases[i].pass)
			fail_msg("case %zu", i);
		cJSON_Delete(p);
		sh_filter_free(f);
	}
	/* NaN is in no range */
	sh_filter *f = fnew();
	sh_range r = {.has_lt = true, .lt = INFINITY};
	assert_int_equal(sh_filter_add_range(f, SH_MUST, "x", &r), SH_OK);
	cJSON *p = cJSON_CreateObject();
	cJSON_AddNumberToObject(p, "x", NAN);
	assert_false(sh_filter_eval(f, NULL, p));
	cJSON_Delete(p);
	sh_filter_free(f);
}

static void test_exists_and_missing_fields(void **state)
{
	sh_filter *f = fnew();
	assert_int_equal(sh_filter_add_exists(f, SH_MUST, "a"), SH_OK);
	assert_true(ev(f, "{\"a\": 0}"));
	assert_true(ev(f, "{\"a\": false}"));
	assert_true(ev(f, "{\"a\": \"\"}"));
	assert_true(ev(f, "{\"a\": {}}"));
	assert_true(ev(f, "{\"a\": [null, 1]}"));
	assert_false(ev(f, "{\"a\": null}"));
	assert_false(ev(f, "{\"a\": []}"));
	assert_false(ev(f, "{\"a\": [null]}"));
	assert_false(ev(f, "{\"b\": 1}"));
	assert_false(ev(f, NULL));
	sh_filter_free(f);
}

static void test_dotted_paths_walk_objects(void **state)
{
	sh_filter *f = fnew();
	assert_int_equal(sh_filter_add_match_keyword(f, SH_MUST, "a.b.c", "x"),
			 SH_OK);
	assert_true(ev(f, "{\"a\": {\"b\": {\"c\": \"x\"}}}"));
	assert_true(ev(f, "{\"a\": {\"b\": {\"c\": [\"y\", \"x\"]}}}"));
	assert_false(ev(f, "{\"a\": {\"b\": [{\"c\": \"x\"}]}}"));
	assert_false(ev(f, "{\"a.b.c\": \"x\"}"));
	assert_false(ev(f, "{\"a\": {\"b\": \"x\"}}"));
	assert_false(ev(f, "{\"a\": 1}"));
	sh_filter_free(f);
}

static void test_has_id(void **state)
{
	sh_filter *f = fnew();
	sh_pid ids[2];
	ids[0] = sh_pid_u64(7);
	assert_int_equal(sh_pid_str("sku-1", 5, &ids[1]), SH_OK);
	assert_int_equal(sh_filter_add_has_id(f, SH_MUST, ids, 2), SH_OK);
	sh_pid a = sh_pid_u64(7), b = sh_pid_u64(8), c;
	assert_int_equal(sh_pid_str("sku-1", 5, &c), SH_OK);
	assert_true(sh_filter_eval(f, &a, NULL));
	assert_false(sh_filter_eval(f, &b, NULL));
	assert_true(sh_filter_eval(f, &c, NULL));
	assert_false(sh_filter_eval(f, NULL, NULL));
	sh_filter_free(f);
}

static void test_must_should_must_not_combine(void **state)
{
	sh_filter *f = fnew();
	/* cat = shoes AND (color = red OR color = blue) AND NOT sale */
	assert_int_equal(
	    sh_filter_add_match_keyword(f, SH_MUST, "cat", "shoes"), SH_OK);
	assert_int_equal(
	    sh_filter_add_match_keyword(f, SH_SHOULD, "color", "red"), SH_OK);
	assert_int_equal(
	    sh_filter_add_match_keyword(f, SH_SHOULD, "color", "blue"), SH_OK);
	assert_int_equal(sh_filter_add_match_bool(f, SH_MUST_NOT, "sale", true),
			 SH_OK);
	assert_true(ev(f, "{\"cat\":\"shoes\",\"color\":\"red\"}"));
	assert_true(
	    ev(f, "{\"cat\":\"shoes\",\"color\":\"blue\",\"sale\":false}"));
	assert_false(
	    ev(f, "{\"cat\":\"shoes\",\"color\":\"red\",\"sale\":true}"));
	assert_false(ev(f, "{\"cat\":\"shoes\",\"color\":\"green\"}"));
	assert_false(ev(f, "{\"cat\":\"shoes\"}"));
	assert_false(ev(f, "{\"cat\":\"hats\",\"color\":\"red\"}"));
	assert_int_equal(sh_filter_count(f), 4);
	sh_filter_free(f);

	/* only should: one must pass; only must_not: missing fields pass */
	f = fnew();
	assert_int_equal(sh_filter_add_exists(f, SH_MUST_NOT, "x"), SH_OK);
	assert_true(ev(f, "{}"));
	assert_false(ev(f, "{\"x\": 1}"));
	sh_filter_free(f);
}

static void test_nested_filters(void **state)
{
	/* (a = 1 AND b = 2) OR NOT (c exists) */
	sh_filter *f = fnew(), *g = fnew(), *h = fnew();
	assert_int_equal(sh_filter_add_match_integer(g, SH_MUST, "a", 1),
			 SH_OK);
	assert_int_equal(sh_filter_add_match_integer(g, SH_MUST, "b", 2),
			 SH_OK);
	assert_int_equal(sh_filter_add_exists(h, SH_MUST_NOT, "c"), SH_OK);
	assert_int_equal(sh_filter_add_nested(f, SH_SHOULD, g), SH_OK);
	assert_int_equal(sh_filter_add_nested(f, SH_SHOULD, h), SH_OK);
	assert_true(ev(f, "{\"a\":1,\"b\":2,\"c\":0}"));
	assert_true(ev(f, "{\"a\":1}"));
	assert_false(ev(f, "{\"a\":1,\"c\":0}"));
	assert_int_equal(sh_filter_count(f), 5);
	assert_int_equal(sh_filter_validate(f, NULL, 0), SH_OK);
	/* builder argument checks leave f unchanged */
	assert_int_equal(sh_filter_add_nested(f, SH_MUST, f), SH_EINVAL);
	assert_int_equal(sh_filter_add_nested(f, SH_MUST, NULL), SH_EINVAL);
	assert_int_equal(sh_filter_add_exists(f, (sh_occur)3, "x"), SH_EINVAL);
	assert_int_equal(
	    sh_filter_add_match_any_integer(f, SH_MUST, "x", NULL, 0),
	    SH_EINVAL);
	assert_int_equal(sh_filter_add_has_id(f, SH_MUST, NULL, 0), SH_EINVAL);
	assert_int_equal(sh_filter_count(f), 5);
	sh_filter_free(f);
}

static void test_validate_limits(void **state)
{
	char err[200];
	/* depth */
	sh_filter *root = fnew(), *cur = root;
	for (int d = 1; d < SH_FILTER_MAX_DEPTH; d++) {
		sh_filter *s = fnew();
		assert_int_equal(sh_filter_add_nested(cur, SH_MUST, s), SH_OK);
		cur = s;
	}
	assert_int_equal(sh_filter_validate(root, err, sizeof(err)), SH_OK);
	sh_filter *s = fnew();
	assert_int_equal(sh_filter_add_nested(cur, SH_MUST, s), SH_OK);
	assert_int_equal(sh_filter_validate(root, err, sizeof(err)), SH_EINVAL);
	assert_non_null(strstr(err, "deeper"));
	sh_filter_free(root);

	/* number of conditions */
	sh_filter *f = fnew();
	for (int i = 0; i < SH_FILTER_MAX_CONDITIONS; i++)
		assert_int_equal(sh_filter_add_exists(f, SH_SHOULD, "k"),
				 SH_OK);
	assert_int_equal(sh_filter_validate(f, NULL, 0), SH_OK);
	assert_int_equal(sh_filter_add_exists(f, SH_SHOULD, "k"), SH_OK);
	assert_int_equal(sh_filter_validate(f, err, sizeof(err)), SH_EINVAL);
	sh_filter_free(f);

	/* keys */
	char longkey[SH_FILTER_MAX_KEY + 2];
	memset(longkey, 'k', sizeof(longkey));
	longkey[SH_FILTER_MAX_KEY] = '\0';
	const char *bad_keys[] = {"", ".a", "a.", "a..b", "\xff", longkey};
	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
		f = fnew();
		assert_int_equal(sh_filter_add_exists(f, SH_MUST, bad_keys[i]),
				 SH_OK);
		if (i + 1 == sizeof(bad_keys) / sizeof(bad_keys[0]))
			assert_int_equal(sh_filter_validate(f, NULL, 0), SH_OK);
		else
			assert_int_equal(sh_filter_validate(f, NULL, 0),
					 SH_EINVAL);
		sh_filter_free(f);
	}
	longkey[SH_FILTER_MAX_KEY] = 'k';
	longkey[SH_FILTER_MAX_KEY + 1] = '\0';
	f = fnew();
	assert_int_equal(sh_filter_add_exists(f, SH_MUST, longkey), SH_OK);
	assert_int_equal(sh_filter_validate(f, NULL, 0), SH_EINVAL);
	sh_filter_free(f);

	/* ranges */
	sh_range none = {0};
	sh_range inverted = {.has_gt = true, .gt = 5, .has_lt = true, .lt = 4};
	sh_range point = {.has_gte = true, .gte = 5, .has_lte = true, .lte = 5};
	sh_range nan = {.has_gte = true, .gte = NAN};
	sh_range mixed = {.has_gte = true,
			  .gte = 1,
			  .has_gt = true,
			  .gt = 9,
			  .has_lt = true,
			  .lt = 8};
	const sh_range *bad[] = {&none, &inverted, &nan, &mixed};
	for (size_t i = 0; i < 4; i++) {
		f = fnew();
		assert_int_equal(sh_filter_add_range(f, SH_MUST, "x", bad[i]),
				 SH_OK);
		assert_int_equal(sh_filter_validate(f, err, sizeof(err)),
				 SH_EINVAL);
		sh_filter_free(f);
	}
	f = fnew();
	assert_int_equal(sh_filter_add_range(f, SH_MUST, "x", &point), SH_OK);
	assert_int_equal(sh_filter_validate(f, NULL, 0), SH_OK);
	sh_filter_free(f);

	/* set size and keyword validity */
	int64_t *many = calloc(SH_FILTER_MAX_SET + 1, sizeof(int64_t));
	assert_non_null(many);
	f = fnew();
	assert_int_equal(sh_filter_add_match_any_integer(f, SH_MUST, "x", many,
							 SH_FILTER_MAX_SET + 1),
			 SH_OK);
	assert_int_equal(sh_filter_validate(f, NULL, 0), SH_EINVAL);
	sh_filter_free(f);
	free(many);
	f = fnew();
	assert_int_equal(
	    sh_filter_add_match_keyword(f, SH_MUST, "x", "\xc0\x80"), SH_OK);
	assert_int_equal(sh_filter_validate(f, NULL, 0), SH_EINVAL);
	sh_filter_free(f);
	assert_int_equal(sh_filter_validate(NULL, NULL, 0), SH_EINVAL);
}

static void test_parse_valid_forms(void **state)
{
	const char *doc =
	    "{\"category\":\"shoes\",\"price\":80,\"in_stock\":true,"
	    "\"tags\":[\"a\",\"b\"],\"w\":1.5,\"d\":{\"e\":3}}";
	assert_true(
	    pev("category = \"shoes\" and price < 100 and in_stock", doc));
	assert_false(pev("category = \"shoes\" and price < 80", doc));
	assert_true(pev("price <= 80 AND price >= 80 AND price > 79.5", doc));
	assert_true(pev("price == 80", doc));
	assert_true(pev("price = 80.0", doc));
	assert_true(pev("w = 1.5 and w != 2 and w > 1", doc));
	assert_true(pev("category != \"hats\"", doc));
	assert_true(pev("missing != \"hats\"", doc)); /* not (missing = x) */
	assert_false(pev("missing", doc));
	assert_true(pev("not missing", doc));
	assert_true(pev("tags in [\"x\", \"b\"]", doc));
	assert_false(pev("tags not in [\"x\", \"b\"]", doc));
	assert_true(pev("price in [1, 80, 3]", doc));
	assert_true(pev("w in [1.5, true, \"x\"]", doc));
	assert_true(pev("exists(category) and not exists(nothing)", doc));
	assert_true(pev("d.e = 3", doc));
	assert_true(pev(
	    "(category = \"x\" or price > 50) and (in_stock or w < 0)", doc));
	assert_false(pev("(category = \"x\" or price > 90) and in_stock", doc));
	assert_true(pev("not not in_stock", doc));
	assert_true(pev("in_stock = true and in_stock != false", doc));
	assert_true(pev("category = \"sh\\u006fes\"", doc));
	assert_true(pev("price > -1e3 and price < 1E3", doc));
	assert_true(pev("has_id(7, \"x\")", doc)); /* ev uses id 7 */
	assert_false(pev("has_id(8)", doc));
	assert_true(pev("  ((( in_stock )))  ", doc));
	assert_true(pev("a = 1 or b = 2 or in_stock", doc));

	/* flattening: a chain of and is one node */
	sh_filter *f = NULL;
	assert_int_equal(
	    sh_filter_parse("a = 1 and (b = 2 and c = 3) and d = 4", &f, NULL,
			    0),
	    SH_OK);
	assert_int_equal(f->n[SH_MUST], 4);
	assert_int_equal(sh_filter_count(f), 4);
	sh_filter_free(f);
	assert_int_equal(sh_filter_parse("not (a = 1 or b = 2)", &f, NULL, 0),
			 SH_OK);
	assert_int_equal(f->n[SH_MUST_NOT], 1);
	assert_true(ev(f, "{\"a\": 3}"));
	assert_false(ev(f, "{\"b\": 2}"));
	sh_filter_free(f);
}

static void expect_parse_error(const char *text)
{
	sh_filter *f = (sh_filter *)0x1;
	char err[256] = "";
	int rc = sh_filter_parse(text, &f, err, sizeof(err));
	if (rc != SH_EINVAL)
		fail_msg("'%s' parsed (rc %d)", text, rc);
	assert_null(f);
	assert_true(strlen(err) > 0);
}

static void test_parse_rejects_malformed_input(void **state)
{
	const char *bad[] = {
	    "",
	    "   ",
	    "(",
	    ")",
	    "(a = 1",
	    "a = 1)",
	    "((a = 1)",
	    "a =",
	    "a = = 1",
	    "= 1",
	    "a < \"x\"",
	    "a < true",
	    "a = 1 b = 2",
	    "a = 1 and",
	    "and a = 1",
	    "a = 1 or or b = 2",
	    "a = \"unterminated",
	    "a = \"bad escape \\q\"",
	    "a = \"\\u12\"",
	    "a = \"\\ud800\"",
	    "a = \"\\u0000\"",
	    "a = \"\xff\"",
	    "a = 1.",
	    "a = .5",
	    "a = 1e",
	    "a = 1e999",
	    "a = 99999999999999999999",
	    "a = 12abc",
	    "a = -",
	    "a in []",
	    "a in [1, ]",
	    "a in [1 2]",
	    "a in 1",
	    "a in [1",
	    "a not 1",
	    "a ! = 1",
	    "exists(a",
	    "exists()",
	    "exists(1)",
	    "has_id()",
	    "has_id(-1)",
	    "has_id(1.5)",
	    "has_id(\"\")",
	    "a.",
	    "a..b = 1",
	    ".a = 1",
	    "a = 1 $",
	    "a = 1 ; drop",
	    "not",
	    "a = 1 and not",
	    "@",
	    "a = \"x\" \x01",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_parse_error(bad[i]);

	/* the message names the offset */
	sh_filter *f = NULL;
	char err[256];
	assert_int_equal(sh_filter_parse("a = 1 and b >", &f, err, sizeof(err)),
			 SH_EINVAL);
	assert_non_null(strstr(err, "offset 13"));
	assert_int_equal(sh_filter_parse(NULL, &f, err, sizeof(err)),
			 SH_EINVAL);
	/* tiny error buffers are fine */
	assert_int_equal(sh_filter_parse("(", &f, err, 3), SH_EINVAL);
	assert_int_equal(sh_filter_parse("(", &f, NULL, 0), SH_EINVAL);
}

static void append(char *buf, size_t *o, const char *s)
{
	size_t n = strlen(s);
	memcpy(buf + *o, s, n);
	*o += n;
}

static void test_parse_huge_and_deep_inputs_fail_cleanly(void **state)
{
	static char buf[(1 << 20) + 1];
	size_t n = 1 << 20;

	/* deep parentheses and deep not, within the length limit */
	size_t deep = SH_FILTER_MAX_TEXT - 8;
	memset(buf, '(', deep);
	buf[deep] = '\0';
	expect_parse_error(buf);
	for (size_t i = 0; i + 4 <= deep; i += 4)
		memcpy(buf + i, "not ", 4);
	buf[deep - 1] = 'x';
	expect_parse_error(buf);
	/* a modest depth of not is fine (double negations cancel) */
	assert_true(pev("not not not not not not not not x", "{\"x\": true}"));
	/* too long */
	memset(buf, ' ', n);
	memcpy(buf, "a = 1", 5);
	expect_parse_error(buf);
	/* within the length limit, too many conditions */
	size_t o = 0;
	for (int i = 0; o + 16 < SH_FILTER_MAX_TEXT; i++)
		o += (size_t)snprintf(buf + o, 16, "%sa = %d", i ? " or " : "",
				      i % 10);
	buf[o] = '\0';
	expect_parse_error(buf);
	/* nesting that parses but exceeds the filter depth limit */
	o = 0;
	for (int i = 0; i < 40; i++)
		append(buf, &o, "(a = 1 or ");
	append(buf, &o, "b = 2");
	for (int i = 0; i < 40; i++)
		buf[o++] = ')';
	buf[o] = '\0';
	/* or chains flatten, so this is shallow and valid */
	sh_filter *f = NULL;
	assert_int_equal(sh_filter_parse(buf, &f, NULL, 0), SH_OK);
	sh_filter_free(f);
	o = 0;
	for (int i = 0; i < 40; i++)
		append(buf, &o, "(a = 1 or b = 1) and (c = 1 or ");
	append(buf, &o, "d = 2");
	for (int i = 0; i < 40; i++)
		buf[o++] = ')';
	buf[o] = '\0';
	expect_parse_error(buf);
}

/* Cheap fuzzing: random token soup and random bytes must never crash, and
 * whatever parses must validate. */
static void test_parse_random_input_never_crashes(void **state)
{
	static const char *const toks[] = {
	    "a",      "b.c", "=",  "!=",  "<",	   "<=",   ">",	    ">=",
	    "(",      ")",   "[",  "]",	  ",",	   "and",  "or",    "not",
	    "in",     "1",   "-2", "3.5", "\"s\"", "true", "false", "exists",
	    "has_id", "\"",  "\\", "1e5", "x",
	};
	uint64_t s = 12345;
	char buf[512];
	int ok = 0;
	for (int iter = 0; iter < 20000; iter++) {
		size_t o = 0;
		int nt = 1 + (int)((s >> 33) % 12);
		for (int t = 0; t < nt; t++) {
			s = s * 6364136223846793005ULL + 1442695040888963407ULL;
			const char *w;
			char raw[2] = {0, 0};
			if ((s >> 60) == 0) {
				raw[0] = (char)(1 + ((s >> 40) % 255));
				w = raw;
			} else {
				w = toks[(s >> 33) %
					 (sizeof(toks) / sizeof(toks[0]))];
			}
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s ",
					      w);
		}
		sh_filter *f = NULL;
		char err[128];
		if (sh_filter_parse(buf, &f, err, sizeof(err)) == SH_OK) {
			ok++;
			assert_int_equal(sh_filter_validate(f, NULL, 0), SH_OK);
			(void)ev(f, "{\"a\": true, \"b\": {\"c\": 1}}");
			sh_filter_free(f);
		} else {
			assert_null(f);
		}
	}
	assert_true(ok > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_filter_passes_everything),
	    cmocka_unit_test(test_match_keyword_integer_bool),
	    cmocka_unit_test(test_type_mismatch_never_passes),
	    cmocka_unit_test(test_match_any_and_arrays),
	    cmocka_unit_test(test_range_bounds_are_strict_or_not),
	    cmocka_unit_test(test_exists_and_missing_fields),
	    cmocka_unit_test(test_dotted_paths_walk_objects),
	    cmocka_unit_test(test_has_id),
	    cmocka_unit_test(test_must_should_must_not_combine),
	    cmocka_unit_test(test_nested_filters),
	    cmocka_unit_test(test_validate_limits),
	    cmocka_unit_test(test_parse_valid_forms),
	    cmocka_unit_test(test_parse_rejects_malformed_input),
	    cmocka_unit_test(test_parse_huge_and_deep_inputs_fail_cleanly),
	    cmocka_unit_test(test_parse_random_input_never_crashes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
