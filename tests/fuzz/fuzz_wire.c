/*
 * libFuzzer target: request decoding and validation, and the response path.
 *
 * For any bytes: sh_wire_decode_response() accepts or refuses them without
 * harm, and sh_wire_decode_request() returns a code with a message and
 * no request, or a request that (1) re-encodes to bytes that decode and
 * validate again, (2) packs to the same bytes the second time, and whose
 * ids convert to sh_pid and back. Either way a response is built, encoded
 * and decoded back with the same id and code. Sanitizers (ASan, UBSan,
 * LeakSanitizer) catch the rest.
 *
 * With SHOAL_FUZZ_SEEDS=DIR set, LLVMFuzzerInitialize writes the valid
 * sample requests of tests/unit/wire_samples.h into DIR as a seed corpus
 * (tests/fuzz/run-fuzz.sh does this in a run with -runs=0).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "wire.h"
#include "../unit/wire_samples.h"

#define CHECK(x)                                                               \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "fuzz_wire: check failed: %s\n", #x);  \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("SHOAL_FUZZ_SEEDS");
	if (!dir)
		return 0;
	for (size_t i = 0; i <= WS_NOPS; i++) {
		int op = i < WS_NOPS ? ws_ops[i] : WS_DELETE_BY_FILTER;
		uint8_t *buf;
		size_t len;
		char path[4096];
		CHECK(ws_sample(op, &buf, &len) == SH_OK);
		snprintf(path, sizeof(path), "%s/op-%d", dir, op);
		FILE *f = fopen(path, "wb");
		CHECK(f && fwrite(buf, 1, len, f) == len);
		fclose(f);
		free(buf);
	}
	return 0;
}

/* Answers a valid request with a result that echoes its ids, as a node
 * would, and checks that it survives encoding. */
static void answer(const Shoal__V1__Request *req)
{
	Shoal__V1__Response resp, *back;
	Shoal__V1__GetResult get = SHOAL__V1__GET_RESULT__INIT;
	Shoal__V1__Point pts[16], *ptp[16];
	Shoal__V1__PointId ids[16];
	char sbuf[16][SH_PID_MAX_STR + 1];
	size_t n = 0;
	uint8_t *buf;
	size_t len;
	char err[256];

	sh_wire_response_init(&resp, req->request_id, req->map_epoch);
	if (req->op_case == SHOAL__V1__REQUEST__OP_GET) {
		for (size_t i = 0; i < req->get->n_ids && n < 16; i++, n++) {
			sh_pid p, q;
			CHECK(sh_wire_pid_from_proto(req->get->ids[i], &p) ==
			      SH_OK);
			sh_wire_pid_to_proto(&p, &ids[n], sbuf[n]);
			CHECK(sh_wire_pid_from_proto(&ids[n], &q) == SH_OK);
			CHECK(sh_pid_eq(&p, &q));
			shoal__v1__point__init(&pts[n]);
			pts[n].id = &ids[n];
			ptp[n] = &pts[n];
		}
		get.n_points = n;
		get.points = ptp;
		resp.result_case = SHOAL__V1__RESPONSE__RESULT_GET;
		resp.get = &get;
	}
	CHECK(sh_wire_encode_response(&resp, &buf, &len) == SH_OK);
	CHECK(sh_wire_decode_response(buf, len, NULL, &back, err,
				      sizeof(err)) == SH_OK);
	CHECK(back->request_id == req->request_id);
	CHECK(back->code == SHOAL__V1__ERROR_CODE__OK);
	if (n) {
		CHECK(back->get->n_points == n);
		for (size_t i = 0; i < n; i++) {
			sh_pid a, b;
			CHECK(sh_wire_pid_from_proto(&ids[i], &a) == SH_OK);
			CHECK(sh_wire_pid_from_proto(back->get->points[i]->id,
						     &b) == SH_OK);
			CHECK(sh_pid_eq(&a, &b));
		}
	}
	sh_wire_free_response(back);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Shoal__V1__Request *req = NULL, *again = NULL;
	Shoal__V1__Response *resp = NULL;
	char err[256];
	uint8_t *buf, *buf2;
	size_t len, len2;

	/* the same bytes as a response (what a client or router reads) */
	if (sh_wire_decode_response(data, size, NULL, &resp, err,
				    sizeof(err)) == SH_OK) {
		CHECK(sh_wire_encode_response(resp, &buf, &len) == SH_OK);
		free(buf);
		sh_wire_free_response(resp);
	} else {
		CHECK(resp == NULL && err[0] != 0);
	}

	int rc =
	    sh_wire_decode_request(data, size, NULL, &req, err, sizeof(err));
	if (rc != SH_OK) {
		Shoal__V1__Response *back;
		uint64_t id = sh_wire_peek_request_id(data, size);
		CHECK(req == NULL);
		CHECK(err[0] != 0);
		CHECK(sh_wire_error_response(id, 1, rc, err, &buf, &len) ==
		      SH_OK);
		CHECK(sh_wire_decode_response(buf, len, NULL, &back, err,
					      sizeof(err)) == SH_OK);
		CHECK(back->request_id == id);
		CHECK((int)back->code == rc);
		sh_wire_free_response(back);
		free(buf);
		return 0;
	}
	CHECK(err[0] == 0);
	CHECK(sh_wire_encode_request(req, &buf, &len) == SH_OK);
	rc = sh_wire_decode_request(buf, len, NULL, &again, err, sizeof(err));
	if (rc != SH_OK) {
		fprintf(stderr, "re-encoded request refused: %s: %s\n",
			sh_errname(rc), err);
		abort();
	}
	CHECK(sh_wire_encode_request(again, &buf2, &len2) == SH_OK);
	CHECK(len2 == len && memcmp(buf, buf2, len) == 0);
	answer(again);
	free(buf);
	free(buf2);
	sh_wire_free_request(again);
	sh_wire_free_request(req);
	return 0;
}
