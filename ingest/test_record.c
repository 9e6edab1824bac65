/* shoal-ingest's record parser: both forms, every rule, untrusted input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "record.h"
#include "shoal.pb-c.h"

static char err[512];

static int json(const char *v, const char *key, sh_ingest_record *r)
{
	return sh_ingest_parse(v, strlen(v), SH_INGEST_JSON, key,
			       key ? strlen(key) : 0, r, err, sizeof(err));
}

static void test_json_upsert_and_delete(void **state)
{
	sh_ingest_record r;
	assert_int_equal(
	    json("{\"op\":\"upsert\",\"collection\":\"products\",\"id\":\"sku-"
		 "1\",\"version\":7,\"vector\":[0.5,1,-2],\"payload\":{\"c\":"
		 "\"shoes\",\"price\":79}}",
		 "sku-1", &r),
	    SH_OK);
	assert_int_equal(r.op, SH_INGEST_UPSERT);
	assert_string_equal(r.collection, "products");
	assert_int_equal(r.id.kind, SH_PID_STR);
	assert_int_equal(r.version, 7);
	assert_int_equal(r.dim, 3);
	assert_true(r.vector[2] == -2.0f);
	assert_string_equal(r.payload_json, "{\"c\":\"shoes\",\"price\":79}");
	assert_null(r.text);
	sh_ingest_record_clear(&r);

	/* a delete; the version as a string keeps all 64 bits */
	assert_int_equal(json("{\"op\":\"delete\",\"collection\":\"p\",\"id\":"
			      "17,\"version\":\"18446744073709551615\"}",
			      "17", &r),
			 SH_OK);
	assert_int_equal(r.op, SH_INGEST_DELETE);
	assert_int_equal(r.id.kind, SH_PID_U64);
	assert_int_equal(r.id.num, 17);
	assert_true(r.version == UINT64_MAX);
	sh_ingest_record_clear(&r);

	/* text only: embedded later; no key is fine */
	assert_int_equal(json("{\"op\":\"upsert\",\"collection\":\"p\",\"id\":"
			      "3,\"version\":1,\"text\":\"red shoes\"}",
			      NULL, &r),
			 SH_OK);
	assert_string_equal(r.text, "red shoes");
	assert_null(r.vector);
	sh_ingest_record_clear(&r);
}

static void test_json_rules(void **state)
{
	static const struct {
		const char *v, *key;
		int code;
		const char *in_msg;
	} bad[] = {
	    {"[1,2]", NULL, SH_EINVAL, "not a JSON object"},
	    {"{\"op\":\"upsert\"", NULL, SH_EINVAL, "not a JSON object"},
	    {"{\"collection\":\"p\",\"id\":1,\"version\":1}", NULL, SH_EINVAL,
	     "op"},
	    {"{\"op\":\"put\",\"collection\":\"p\",\"id\":1,\"version\":1}",
	     NULL, SH_EINVAL, "op"},
	    {"{\"op\":\"delete\",\"id\":1,\"version\":1}", NULL, SH_EINVAL,
	     "collection"},
	    {"{\"op\":\"delete\",\"collection\":\"a b\",\"id\":1,\"version\":"
	     "1}",
	     NULL, SH_EINVAL, "collection name"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"version\":1}", NULL,
	     SH_EINVAL, "id"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"id\":-1,\"version\":1}",
	     NULL, SH_EINVAL, "id"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"id\":1.5,\"version\":"
	     "1}",
	     NULL, SH_EINVAL, "id"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"id\":\"0123456789012345"
	     "6789012345678901234567890123456789012345678901234\",\"version\":"
	     "1}",
	     NULL, SH_EINVAL, "id"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"id\":1}", NULL,
	     SH_EINVAL, "version"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"id\":1,\"version\":-3}",
	     NULL, SH_EINVAL, "version"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"id\":1,\"version\":"
	     "\"18446744073709551616\"}",
	     NULL, SH_EINVAL, "version"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"id\":1,\"version\":1}",
	     "2", SH_EINVAL, "key"},
	    {"{\"op\":\"delete\",\"collection\":\"p\",\"id\":\"x\",\"version\":"
	     "1,\"vector\":[1]}",
	     NULL, SH_EINVAL, "delete carries"},
	    {"{\"op\":\"upsert\",\"collection\":\"p\",\"id\":1,\"version\":1}",
	     NULL, SH_EINVAL, "vector or a text"},
	    {"{\"op\":\"upsert\",\"collection\":\"p\",\"id\":1,\"version\":1,"
	     "\"vector\":[]}",
	     NULL, SH_EDIM, "vector"},
	    {"{\"op\":\"upsert\",\"collection\":\"p\",\"id\":1,\"version\":1,"
	     "\"vector\":[1,\"x\"]}",
	     NULL, SH_EINVAL, "vector[1]"},
	    {"{\"op\":\"upsert\",\"collection\":\"p\",\"id\":1,\"version\":1,"
	     "\"vector\":[1,1e39]}",
	     NULL, SH_ENAN, "vector"},
	    {"{\"op\":\"upsert\",\"collection\":\"p\",\"id\":1,\"version\":1,"
	     "\"vector\":[1],\"payload\":[1]}",
	     NULL, SH_EINVAL, "payload"},
	    {"{\"op\":\"upsert\",\"collection\":\"p\",\"id\":1,\"version\":1,"
	     "\"text\":7}",
	     NULL, SH_EINVAL, "text"},
	    {"{\"op\":\"upsert\",\"collection\":\"p\",\"id\":1,\"version\":1,"
	     "\"text\":\"\"}",
	     NULL, SH_EINVAL, "text"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sh_ingest_record r;
		int rc = json(bad[i].v, bad[i].key, &r);
		if (rc != bad[i].code || !strstr(err, bad[i].in_msg))
			fail_msg("case %zu: %s (%s), want %s with \"%s\"", i,
				 sh_errname(rc), err, sh_errname(bad[i].code),
				 bad[i].in_msg);
		assert_null(r.vector);
		assert_null(r.text);
		assert_null(r.payload_json);
	}
}

static void test_json_sizes(void **state)
{
	sh_ingest_record r;
	/* a text over 64 KiB */
	enum { n = (64u << 10) + 10 };
	static char v[n + 200];
	static const char pre[] = "{\"op\":\"upsert\",\"collection\":\"p\","
				  "\"id\":1,\"version\":1,\"text\":\"";
	size_t off = sizeof(pre) - 1;
	memcpy(v, pre, off);
	memset(v + off, 'a', n);
	memcpy(v + off + n, "\"}", 3);
	assert_int_equal(json(v, NULL, &r), SH_ETOOBIG);
	/* a value over the record bound is refused unread */
	size_t big = (1u << 20) + 1;
	char *b = calloc(1, big);
	if (!b)
		fail_msg("out of memory");
	assert_int_equal(sh_ingest_parse(b, big, SH_INGEST_JSON, NULL, 0, &r,
					 err, sizeof(err)),
			 SH_ETOOBIG);
	free(b);
	/* random bytes never crash */
	uint64_t s = 99;
	for (int it = 0; it < 2000; it++) {
		uint8_t g[64];
		size_t len = (size_t)(s % 64);
		for (size_t i = 0; i < len; i++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			g[i] = (uint8_t)(s >> 56);
		}
		for (int f = 0; f < 2; f++)
			if (sh_ingest_parse(g, len, (sh_ingest_format)f, NULL,
					    0, &r, err, sizeof(err)) == SH_OK)
				sh_ingest_record_clear(&r);
	}
}

static void test_protobuf(void **state)
{
	assert_int_equal(sh_ingest_format_of("application/x-protobuf"),
			 SH_INGEST_PROTOBUF);
	assert_int_equal(sh_ingest_format_of("application/json"),
			 SH_INGEST_JSON);
	assert_int_equal(sh_ingest_format_of(NULL), SH_INGEST_JSON);

	Shoal__V1__PointId id = SHOAL__V1__POINT_ID__INIT;
	id.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	id.num = 42;
	float vec[2] = {1, 2};
	Shoal__V1__IngestRecord m = SHOAL__V1__INGEST_RECORD__INIT;
	m.op = SHOAL__V1__INGEST_OP__INGEST_UPSERT;
	m.collection = "items";
	m.id = &id;
	m.version = 9;
	m.vector = vec;
	m.n_vector = 2;
	m.payload_json = "{\"a\":1}";
	uint8_t buf[256];
	size_t len = shoal__v1__ingest_record__pack(&m, buf);
	sh_ingest_record r;
	assert_int_equal(sh_ingest_parse(buf, len, SH_INGEST_PROTOBUF, "42", 2,
					 &r, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(r.id.num, 42);
	assert_int_equal(r.version, 9);
	assert_int_equal(r.dim, 2);
	assert_string_equal(r.payload_json, "{\"a\":1}");
	sh_ingest_record_clear(&r);

	m.op = SHOAL__V1__INGEST_OP__INGEST_OP_UNSPECIFIED;
	len = shoal__v1__ingest_record__pack(&m, buf);
	assert_int_equal(sh_ingest_parse(buf, len, SH_INGEST_PROTOBUF, NULL, 0,
					 &r, err, sizeof(err)),
			 SH_EINVAL);
	assert_non_null(strstr(err, "op"));
	m.op = SHOAL__V1__INGEST_OP__INGEST_UPSERT;
	m.id = NULL;
	len = shoal__v1__ingest_record__pack(&m, buf);
	assert_int_equal(sh_ingest_parse(buf, len, SH_INGEST_PROTOBUF, NULL, 0,
					 &r, err, sizeof(err)),
			 SH_EINVAL);
	assert_non_null(strstr(err, "id"));
	/* JSON bytes under a protobuf content type */
	const char *j = "{\"op\":\"delete\"}";
	assert_int_equal(sh_ingest_parse(j, strlen(j), SH_INGEST_PROTOBUF, NULL,
					 0, &r, err, sizeof(err)),
			 SH_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_json_upsert_and_delete),
	    cmocka_unit_test(test_json_rules),
	    cmocka_unit_test(test_json_sizes),
	    cmocka_unit_test(test_protobuf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
