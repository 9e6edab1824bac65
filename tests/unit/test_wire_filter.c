/* The wire's Filter message converts to the same sh_filter as its text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
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

/* text → sh_filter → wire Filter → bytes → wire Filter → sh_filter passes
 * exactly the points the parsed text passes, for every kind of clause. */
static void test_filter_from_sh_round_trips_through_the_wire(void **s)
{
	static const char *const texts[] = {
	    "category = \"shoes\"",
	    "category = \"shoes\" and price < 100 and in_stock",
	    "price >= 59.5 and price <= 159",
	    "price > 20 or rating = 4",
	    "size in [38, 39, 40]",
	    "category in [\"shoes\", \"hats\"]",
	    "category not in [\"shoes\"]",
	    "size = 41",
	    "in_stock = false",
	    "price = 20.0",
	    "exists(rating) or not exists(category)",
	    "has_id(16, 18) and not has_id(\"sku-1\")",
	    "(category = \"shoes\" or category = \"hats\") and "
	    "not (price > 100 or (size in [38] and exists(in_stock)))",
	    "category != \"hats\" and (price < 10 or (price > 50 and "
	    "(in_stock or (size = 44))))",
	};
	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		char err[256];
		sh_filter *a = NULL, *b = NULL;
		assert_int_equal(
		    sh_filter_parse(texts[t], &a, err, sizeof(err)), SH_OK);
		Shoal__V1__Filter *w = NULL;
		assert_int_equal(
		    sh_wire_filter_from_sh(a, &w, err, sizeof(err)), SH_OK);
		assert_non_null(w);
		size_t len = shoal__v1__filter__get_packed_size(w);
		uint8_t *buf = malloc(len ? len : 1);
		assert_non_null(buf);
		shoal__v1__filter__pack(w, buf);
		Shoal__V1__Filter *back =
		    shoal__v1__filter__unpack(NULL, len, buf);
		assert_non_null(back);
		assert_int_equal(
		    sh_wire_filter_to_sh(back, &b, err, sizeof(err)), SH_OK);
		assert_int_equal(sh_filter_count(a), sh_filter_count(b));
		assert_same(a, b);
		/* and directly, without the bytes */
		sh_filter *c = NULL;
		assert_int_equal(sh_wire_filter_to_sh(w, &c, err, sizeof(err)),
				 SH_OK);
		assert_same(a, c);
		sh_filter_free(c);
		shoal__v1__filter__free_unpacked(back, NULL);
		free(buf);
		sh_wire_filter_free(w);
		sh_filter_free(a);
		sh_filter_free(b);
	}
}

/* String ids, int sets and one-sided ranges keep their exact values. */
static void test_filter_from_sh_keeps_values(void **s)
{
	sh_filter *f;
	assert_int_equal(sh_filter_new(&f), SH_OK);
	sh_pid ids[2] = {sh_pid_u64(7)};
	assert_int_equal(sh_pid_str("sku-9", 5, &ids[1]), SH_OK);
	assert_int_equal(sh_filter_add_has_id(f, SH_SHOULD, ids, 2), SH_OK);
	int64_t ints[] = {-3, INT64_MAX};
	assert_int_equal(
	    sh_filter_add_match_any_integer(f, SH_MUST, "n", ints, 2), SH_OK);
	sh_range r = {.has_gte = true, .gte = 0.0};
	assert_int_equal(sh_filter_add_range(f, SH_MUST_NOT, "p", &r), SH_OK);
	Shoal__V1__Filter *w;
	assert_int_equal(sh_wire_filter_from_sh(f, &w, NULL, 0), SH_OK);
	assert_int_equal(w->n_should, 1);
	const Shoal__V1__HasId *h = w->should[0]->condition->has_id;
	assert_int_equal(h->n_ids, 2);
	assert_int_equal(h->ids[0]->kind_case, SHOAL__V1__POINT_ID__KIND_NUM);
	assert_int_equal(h->ids[0]->num, 7);
	assert_int_equal(h->ids[1]->kind_case, SHOAL__V1__POINT_ID__KIND_STR);
	assert_string_equal(h->ids[1]->str, "sku-9");
	const Shoal__V1__Match *m = w->must[0]->condition->match;
	assert_int_equal(m->value_case, SHOAL__V1__MATCH__VALUE_ANY_INTEGER);
	assert_int_equal(m->any_integer->values[1], INT64_MAX);
	const Shoal__V1__Range *rg = w->must_not[0]->condition->range;
	/* a bound of 0 is present, the others absent */
	assert_int_equal(rg->has_gte_case, SHOAL__V1__RANGE__HAS_GTE_GTE);
	assert_int_equal(rg->has_gt_case, SHOAL__V1__RANGE__HAS_GT__NOT_SET);
	assert_int_equal(rg->has_lt_case, SHOAL__V1__RANGE__HAS_LT__NOT_SET);
	sh_wire_filter_free(w);
	sh_filter_free(f);
}

/* No filter → no message; an invalid built filter is refused, not sent. */
static void test_filter_from_sh_null_and_invalid(void **s)
{
	Shoal__V1__Filter *w = (Shoal__V1__Filter *)&w;
	assert_int_equal(sh_wire_filter_from_sh(NULL, &w, NULL, 0), SH_OK);
	assert_null(w);
	sh_filter *f;
	assert_int_equal(sh_filter_new(&f), SH_OK);
	sh_range r = {.has_gt = true, .gt = 5, .has_lt = true, .lt = 1};
	assert_int_equal(sh_filter_add_range(f, SH_MUST, "p", &r), SH_OK);
	char err[256] = "";
	assert_int_equal(sh_wire_filter_from_sh(f, &w, err, sizeof(err)),
			 SH_EINVAL);
	assert_null(w);
	assert_true(err[0] != 0);
	sh_filter_free(f);
	sh_wire_filter_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_condition_converts_like_its_text),
	    cmocka_unit_test(test_null_filter_passes_everything),
	    cmocka_unit_test(test_malformed_filters_are_refused),
	    cmocka_unit_test(test_filter_from_sh_round_trips_through_the_wire),
	    cmocka_unit_test(test_filter_from_sh_keeps_values),
	    cmocka_unit_test(test_filter_from_sh_null_and_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
