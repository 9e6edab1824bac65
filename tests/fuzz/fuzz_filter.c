/*
 * libFuzzer target: filter parsing, evaluation and planning.
 *
 * An input is "FILTER TEXT\0PAYLOAD JSON" (without a NUL, all of it is the
 * filter and the payload is empty). For any bytes: sh_filter_parse returns
 * an error with a message, or a filter that validates; evaluation on the
 * payload never crashes; and the payload index planner agrees with the
 * evaluator: a point that passes is never left out of the planned bitmap,
 * and when the plan needs no residual check, the bitmap holds exactly the
 * passing point. Sanitizers (ASan, UBSan, LeakSanitizer) catch the rest.
 *
 * With SHOAL_FUZZ_SEEDS=DIR set, LLVMFuzzerInitialize writes seed inputs
 * into DIR (tests/fuzz/run-fuzz.sh does this in a run with -runs=0).
 */
#include <cjson/cJSON.h>
#include <roaring/roaring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filter.h"
#include "payload.h"

#define CHECK(x)                                                               \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "fuzz_filter: check failed: %s\n",     \
				#x);                                           \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const seeds[][2] = {
    {"category = \"shoes\" and price < 100 and in_stock",
     "{\"category\":\"shoes\",\"price\":59.5,\"in_stock\":true}"},
    {"(brand = \"acme\" or brand = \"globex\") and not discontinued",
     "{\"brand\":\"acme\",\"discontinued\":false}"},
    {"size in [40, 41, 42] and exists(rating) and color != \"red\"",
     "{\"size\":[39,41],\"rating\":4,\"color\":\"blue\"}"},
    {"has_id(17, \"sku-9\") or tags = \"sale\"",
     "{\"tags\":[\"new\",\"sale\"]}"},
    {"a.b >= -3.5e2 and a.c not in [\"x\", \"y\"]",
     "{\"a\":{\"b\":1,\"c\":\"z\"}}"},
    {"k = 1 or k = 2.5 or k = true or k = \"s\"", "{\"k\":2.5}"},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const char *dir = getenv("SHOAL_FUZZ_SEEDS");
	if (!dir)
		return 0;
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/seed-%zu", dir, i);
		FILE *f = fopen(path, "wb");
		if (!f)
			continue;
		fwrite(seeds[i][0], 1, strlen(seeds[i][0]), f);
		fputc(0, f);
		fwrite(seeds[i][1], 1, strlen(seeds[i][1]), f);
		fclose(f);
	}
	return 0;
}

/* The indexed fields: the seeds' fields, under every index type. */
static const sh_payload_field fields[] = {
    {"category", SH_PAYLOAD_KEYWORD}, {"brand", SH_PAYLOAD_KEYWORD},
    {"tags", SH_PAYLOAD_KEYWORD},     {"price", SH_PAYLOAD_FLOAT},
    {"size", SH_PAYLOAD_INTEGER},     {"a.b", SH_PAYLOAD_INTEGER},
    {"in_stock", SH_PAYLOAD_BOOL},    {"k", SH_PAYLOAD_FLOAT},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t flen = nul ? (size_t)(nul - data) : size;
	char *text = malloc(flen + 1);
	CHECK(text);
	memcpy(text, data, flen);
	text[flen] = 0;
	const char *pj = nul ? (const char *)nul + 1 : "";
	size_t plen = nul ? size - flen - 1 : 0;

	sh_filter *f = NULL;
	char err[256];
	int rc = sh_filter_parse(text, &f, err, sizeof(err));
	free(text);
	if (rc != SH_OK) {
		CHECK(f == NULL || rc == SH_OK);
		return 0;
	}
	CHECK(sh_filter_validate(f, err, sizeof(err)) == SH_OK);

	cJSON *payload = cJSON_ParseWithLength(pj, plen);
	sh_pid id = sh_pid_u64(17);
	bool pass = sh_filter_eval(f, &id, payload);

	sh_payload_index *idx = NULL;
	if (sh_payload_index_new(fields, sizeof(fields) / sizeof(fields[0]),
				 &idx) == SH_OK) {
		const cJSON *obj = cJSON_IsObject(payload) ? payload : NULL;
		if (sh_payload_index_add(idx, 0, obj) == SH_OK) {
			sh_filter_plan plan;
			memset(&plan, 0, sizeof(plan));
			if (sh_payload_index_plan(idx, f, 1, &plan) == SH_OK) {
				bool in =
				    !plan.allow ||
				    roaring_bitmap_contains(plan.allow, 0);
				/* never leaves out a point that passes */
				if (pass)
					CHECK(in);
				/* exact when no residual check follows */
				if (!plan.residual)
					CHECK(in == pass);
				sh_filter_plan_clear(&plan);
			}
		}
		sh_payload_index_free(idx);
	}
	cJSON_Delete(payload);
	sh_filter_free(f);
	return 0;
}
