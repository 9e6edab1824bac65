/*
 * One request message in, one response message out: the part every shoal
 * server shares (shoal-node, shoal-router, shoal-embed). Decodes and
 * validates the request (wire.h), refuses what the server does not serve
 * or while it is not serving, runs the operation, encodes its result or an
 * error response naming the request id, logs failures at debug level and
 * records the request for the metrics. Each server describes itself with
 * an sh_dispatch.
 */
#ifndef SH_DISPATCH_H
#define SH_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "wire.h"

typedef struct sh_dispatch {
	void *ctx;
	const sh_wire_limits *limits;
	const char *component; /* in log lines: "node", "router", "embed" */
	/* The metrics index of an operation, or -1 when this server does not
	 * serve it: answered EUNSUPPORTED with `unsupported` as the message. */
	int (*op_index)(Shoal__V1__Request__OpCase op);
	int invalid_op;		 /* the index of requests that did not decode */
	const char *unsupported; /* "... is not served by ..." */
	/* 1 while serving; otherwise every request but health is answered
	 * EBUSY "<component> is starting|shutting down". */
	int (*state)(void *ctx);
	/* The map epoch responses carry (NULL: 0); asked again for an error
	 * response, so that EMOVED carries the newest. */
	uint64_t (*epoch)(void *ctx);
	/* Runs operation `op` (its index): fills rs->result from a, or
	 * returns an error with a message in err. A failed operation may
	 * still set a result (a write that some owner did not acknowledge
	 * keeps its per-point statuses): it is then sent with the code. */
	int (*run)(void *ctx, int op, const Shoal__V1__Request *rq,
		   uint64_t t0_us, Shoal__V1__Response *rs, sh_arena *a,
		   char *err, size_t errlen);
	/* Records one request (op index, result code, microseconds). */
	void (*observe)(void *ctx, int op, int code, uint64_t us);
	/* Codes too ordinary for a debug line (NULL: none), e.g. ESTALE. */
	bool (*quiet)(int code);
	const char *const *op_names; /* for the debug lines */
} sh_dispatch;

/* Handles one request; *out is malloc'd (free()). Returns SH_OK, or
 * SH_ENOMEM when not even an error response could be built. Any thread. */
int sh_dispatch_handle(const sh_dispatch *d, const uint8_t *buf, size_t len,
		       uint8_t **out, size_t *outlen);

#endif
