/* The wire's Filter message converts to the same sh_filter as its text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <string.h>

#include "error.h"
#include "filter.h"
#include "wire.h"

/* Builders for stack-allocated messages. */
static Shoal__V1__Clause cond_clause(Shoal__V1__Condition *c)
{
	Shoal__V1__Clause k = SHOAL__V1__CLAUSE__INIT;
	k.kind_case = SHOAL__V1__CLAUSE__KIND_CONDITION;
	k.condition = c;
	return k;
}

static const char *payloads[] = {
    "{\"category\":\"shoes\",\"price\":59.5,\"in_stock\":true,\"size\":41}",
    "{\"category\":\"shoes\",\"price\":159,\"in_stock\":true,\"size\":38}",
    "{\"category\":\"hats\",\"price\":20,\"in_stock\":false}",
    "{\"category\":\"shoes\",\"price\":99.99,\"size\":[40,44]}",
    "{\"price\":5,\"rating\":4}",
    "{}",
};

/* Both filters give the same verdict on every payload and id. */
static void assert_same(const sh_filter *a, const sh_filter *b)
{
	for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
		cJSON *p = cJSON_Parse(payloads[i]);
		for (uint64_t id = 16; id <= 18; id++) {
			sh_pid pid = sh_pid_u64(id);
			assert_int_equal(sh_filter_eval(a, &pid, p),
					 sh_filter_eval(b, &pid, p));
		}
		cJSON_Delete(p);
	}
}

static void test_every_condition_converts_like_its_text(void **s)
{
	/* category = "shoes" and price < 100 and not (size in [38, 39])
	 * and (in_stock or exists(rating)) or has_id(17) */
	Shoal__V1__Match m_cat = SHOAL__V1__MATCH__INIT;
	m_cat.key = "category";
	m_cat.value_case = SHOAL__V1__MATCH__VALUE_KEYWORD;
	m_cat.keyword = "shoes";
	Shoal__V1__Condition c_cat = SHOAL__V1__CONDITION__INIT;
	c_cat.kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
	c_cat.match = &m_cat;

	Shoal__V1__Range r_price = SHOAL__V1__RANGE__INIT;
	r_price.key = "price";
	r_price.has_lt_case = SHOAL__V1__RANGE__HAS_LT_LT;
	r_price.lt = 100;
	Shoal__V1__Condition c_price = SHOAL__V1__CONDITION__INIT;
	c_price.kind_case = SHOAL__V1__CONDITION__KIND_RANGE;
	c_price.range = &r_price;

	int64_t sizes[] = {38, 39};
	Shoal__V1__IntegerSet set = SHOAL__V1__INTEGER_SET__INIT;
	set.n_values = 2;
	set.values = sizes;
	Shoal__V1__Match m_size = SHOAL__V1__MATCH__INIT;
	m_size.key = "size";
	m_size.value_case = SHOAL__V1__MATCH__VALUE_ANY_INTEGER;
	m_size.any_integer = &set;
	Shoal__V1__Condition c_size = SHOAL__V1__CONDITION__INIT;
	c_size.kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
	c_size.match = &m_size;

	Shoal__V1__Match m_stock = SHOAL__V1__MATCH__INIT;
	m_stock.key = "in_stock";
	m_stock.value_case = SHOAL__V1__MATCH__VALUE_BOOLEAN;
	m_stock.boolean = 1;
	Shoal__V1__Condition c_stock = SHOAL__V1__CONDITION__INIT;
	c_stock.kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
	c_stock.match = &m_stock;

	Shoal__V1__Exists e_rating = SHOAL__V1__EXISTS__INIT;
	e_rating.key = "rating";
	Shoal__V1__Condition c_rating = SHOAL__V1__CONDITION__INIT;
	c_rating.kind_case = SHOAL__V1__CONDITION__KIND_EXISTS;
	c_rating.exists = &e_rating;

	Shoal__V1__PointId id17 = SHOAL__V1__POINT_ID__INIT;
	id17.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	id17.num = 17;
	Shoal__V1__PointId *ids[] = {&id17};
	Shoal__V1__HasId h = SHOAL__V1__HAS_ID__INIT;
	h.n_ids = 1;
	h.ids = ids;
	Shoal__V1__Condition c_id = SHOAL__V1__CONDITION__INIT;
	c_id.kind_case = SHOAL__V1__CONDITION__KIND_HAS_ID;
	c_id.has_id = &h;

	/* inner: in_stock or exists(rating) */
	Shoal__V1__Clause k_stock = cond_clause(&c_stock),
			  k_rating = cond_clause(&c_rating);
	Shoal__V1__Clause *inner_should[] = {&k_stock, &k_rating};
	Shoal__V1__Filter inner = SHOAL__V1__FILTER__INIT;
	inner.n_should = 2;
	inner.should = inner_should;
	Shoal__V1__Clause k_inner = SHOAL__V1__CLAUSE__INIT;
	k_inner.kind_case = SHOAL__V1__CLAUSE__KIND_FILTER;
	k_inner.filter = &inner;

	/* conjunction */
	Shoal__V1__Clause k_cat = cond_clause(&c_cat),
			  k_price = cond_clause(&c_price),
			  k_size = cond_clause(&c_size);
	Shoal__V1__Clause *and_must[] = {&k_cat, &k_price, &k_inner};
	Shoal__V1__Clause *and_not[] = {&k_size};
	Shoal__V1__Filter conj = SHOAL__V1__FILTER__INIT;
	conj.n_must = 3;
	conj.must = and_must;
	conj.n_must_not = 1;
	conj.must_not = and_not;
	Shoal__V1__Clause k_conj = SHOAL__V1__CLAUSE__INIT;
	k_conj.kind_case = SHOAL__V1__CLAUSE__KIND_FILTER;
	k_conj.filter = &conj;

	Shoal__V1__Clause k_id = cond_clause(&c_id);
	Shoal__V1__Clause *top_should[] = {&k_conj, &k_id};
	Shoal__V1__Filter top = SHOAL__V1__FILTER__INIT;
	top.n_should = 2;
	top.should = top_should;

	sh_filter *fw = NULL, *ft = NULL;
	char err[256];
	assert_int_equal(sh_wire_filter_to_sh(&top, &fw, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(
	    sh_filter_parse("(category = \"shoes\" and price < 100 and not "
			    "(size in [38, 39]) and (in_stock or "
			    "exists(rating))) or has_id(17)",
			    &ft, err, sizeof(err)),
	    SH_OK);
	assert_same(fw, ft);
	sh_filter_free(fw);
	sh_filter_free(ft);
}

static void test_null_filter_passes_everything(void **s)
{
	sh_filter *f = NULL;
	assert_int_equal(sh_wire_filter_to_sh(NULL, &f, NULL, 0), SH_OK);
	assert_true(sh_filter_is_empty(f));
	sh_filter_free(f);
}

static void test_malformed_filters_are_refused(void **s)
{
	char err[256];
	sh_filter *f = NULL;
	/* a clause with no kind */
	Shoal__V1__Clause empty = SHOAL__V1__CLAUSE__INIT;
	Shoal__V1__Clause *must[] = {&empty};
	Shoal__V1__Filter top = SHOAL__V1__FILTER__INIT;
	top.n_must = 1;
	top.must = must;
	assert_int_equal(sh_wire_filter_to_sh(&top, &f, err, sizeof(err)),
			 SH_EINVAL);
	assert_null(f);
	/* a match without a value */
	Shoal__V1__Match m = SHOAL__V1__MATCH__INIT;
	m.key = "x";
	Shoal__V1__Condition c = SHOAL__V1__CONDITION__INIT;
	c.kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
	c.match = &m;
	Shoal__V1__Clause k = cond_clause(&c);
	must[0] = &k;
	assert_int_equal(sh_wire_filter_to_sh(&top, &f, err, sizeof(err)),
			 SH_EINVAL);
	assert_non_null(strstr(err, "no value"));
	/* a range without bounds (refused by validation) */
	Shoal__V1__Range r = SHOAL__V1__RANGE__INIT;
	r.key = "x";
	c.kind_case = SHOAL__V1__CONDITION__KIND_RANGE;
	c.range = &r;
	assert_int_equal(sh_wire_filter_to_sh(&top, &f, err, sizeof(err)),
			 SH_EINVAL);
	/* nesting deeper than the limit */
	Shoal__V1__Filter chain[SH_FILTER_MAX_DEPTH + 2];
	Shoal__V1__Clause links[SH_FILTER_MAX_DEPTH + 2],
	    *lp[SH_FILTER_MAX_DEPTH + 2];
	for (int i = 0; i < SH_FILTER_MAX_DEPTH + 2; i++) {
		Shoal__V1__Filter fi = SHOAL__V1__FILTER__INIT;
		chain[i] = fi;
		Shoal__V1__Clause ci = SHOAL__V1__CLAUSE__INIT;
		links[i] = ci;
	}
	for (int i = 0; i + 1 < SH_FILTER_MAX_DEPTH + 2; i++) {
		links[i].kind_case = SHOAL__V1__CLAUSE__KIND_FILTER;
		links[i].filter = &chain[i + 1];
		lp[i] = &links[i];
		chain[i].n_must = 1;
		chain[i].must = &lp[i];
	}
	assert_int_equal(sh_wire_filter_to_sh(&chain[0], &f, err, sizeof(err)),
			 SH_EINVAL);
	assert_null(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_condition_converts_like_its_text),
	    cmocka_unit_test(test_null_filter_passes_everything),
	    cmocka_unit_test(test_malformed_filters_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
