/* The request → response skeleton every server shares. See dispatch.h. */
#include "dispatch.h"

#include "error.h"
#include "log.h"
#include "metrics.h"

int sh_dispatch_handle(const sh_dispatch *d, const uint8_t *buf, size_t len,
		       uint8_t **out, size_t *outlen)
{
	uint64_t t0 = sh_now_us();
	char err[512];
	err[0] = 0;
	uint64_t epoch = d->epoch ? d->epoch(d->ctx) : 0;
	Shoal__V1__Request *rq = NULL;
	int op = d->invalid_op;
	int rc =
	    sh_wire_decode_request(buf, len, d->limits, &rq, err, sizeof(err));
	uint64_t rid = rq ? rq->request_id : sh_wire_peek_request_id(buf, len);
	sh_arena a = {0};
	Shoal__V1__Response rs;
	sh_wire_response_init(&rs, rid, epoch);
	if (rc == SH_OK) {
		int i = d->op_index(rq->op_case);
		int state = d->state ? d->state(d->ctx) : 1;
		if (i < 0) {
			rc = sh_errf(err, sizeof(err), SH_EUNSUPPORTED,
				     "operation %d %s", (int)rq->op_case,
				     d->unsupported);
		} else if (state != 1 &&
			   rq->op_case != SHOAL__V1__REQUEST__OP_HEALTH) {
			op = i;
			rc = sh_errf(err, sizeof(err), SH_EBUSY, "%s is %s",
				     d->component,
				     state == 2 ? "shutting down" : "starting");
		} else {
			op = i;
			rc = d->run(d->ctx, op, rq, t0, &rs, &a, err,
				    sizeof(err));
			if (rc == SH_OK && a.oom)
				rc = sh_errf(err, sizeof(err), SH_ENOMEM,
					     "out of memory");
		}
	}
	int enc;
	if (rc == SH_OK ||
	    rs.result_case != SHOAL__V1__RESPONSE__RESULT__NOT_SET) {
		rs.code = (Shoal__V1__ErrorCode)rc;
		rs.message = rc ? err : (char *)"";
		if (rc && d->epoch)
			rs.map_epoch = d->epoch(d->ctx);
		enc = sh_wire_encode_response(&rs, out, outlen);
	} else {
		if (d->epoch)
			epoch = d->epoch(d->ctx);
		enc = sh_wire_error_response(rid, epoch, rc, err, out, outlen);
	}
	if (rc && !(d->quiet && d->quiet(rc)))
		sh_debug(d->component, "%s: %s: %s",
			 d->op_names ? d->op_names[op] : "request",
			 sh_errname(rc), err);
	sh_arena_free(&a);
	sh_wire_free_request(rq);
	if (d->observe)
		d->observe(d->ctx, op, rc, sh_now_us() - t0);
	return enc;
}
