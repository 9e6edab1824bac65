/* libshoal: connecting, errors, and the one request path every call takes.
 * See shoal.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_impl.h"
#include "error.h"

/* The public codes are common/error.h's numbers; a mismatch is a build
 * error, not a silent wrong code. */
#define CHECK_CODE_(name, num, msg)                                            \
	_Static_assert(SHOAL_##name == SH_##name && SH_##name == num,          \
		       "SHOAL_" #name " differs from common/error.h");
SH_ERRNO_MAP(CHECK_CODE_)
#undef CHECK_CODE_

/* Per-thread: the message of the thread's last call. */
static _Thread_local char last_error[1024];

const char *shoal_strerror(int code)
{
	return sh_strerror(code);
}

const char *shoal_errname(int code)
{
	return sh_errname(code);
}

const char *shoal_last_error(void)
{
	return last_error;
}

int client_fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return code;
}

int client_ok(void)
{
	last_error[0] = 0;
	return SHOAL_OK;
}

int client_check(const shoal_client *c, const char *collection, const void *out)
{
	if (!c)
		return client_fail(SHOAL_EINVAL, "client is NULL");
	if (!collection)
		return client_fail(SHOAL_EINVAL, "collection name is NULL");
	if (!out)
		return client_fail(SHOAL_EINVAL, "out is NULL");
	return SHOAL_OK;
}

shoal_id shoal_id_num(uint64_t num)
{
	shoal_id id = {.kind = SHOAL_ID_NUM, .num = num};
	return id;
}

shoal_id shoal_id_str(const char *str)
{
	shoal_id id = {.kind = SHOAL_ID_STR, .str = str};
	return id;
}

int client_id_to_proto(const shoal_id *in, Shoal__V1__PointId *out,
		       const char *what, size_t i)
{
	shoal__v1__point_id__init(out);
	if (in->kind == SHOAL_ID_NUM) {
		out->kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		out->num = in->num;
		return SHOAL_OK;
	}
	if (in->kind == SHOAL_ID_STR && in->str) {
		out->kind_case = SHOAL__V1__POINT_ID__KIND_STR;
		out->str = (char *)in->str;
		return SHOAL_OK;
	}
	return client_fail(SHOAL_EINVAL,
			   "%s[%zu]: id kind %d is not SHOAL_ID_NUM or "
			   "SHOAL_ID_STR with a string",
			   what, i, in->kind);
}

bool client_id_from_proto(const Shoal__V1__PointId *in, shoal_id *out)
{
	memset(out, 0, sizeof(*out));
	if (!in)
		return false;
	if (in->kind_case == SHOAL__V1__POINT_ID__KIND_NUM) {
		out->kind = SHOAL_ID_NUM;
		out->num = in->num;
		return true;
	}
	if (in->kind_case == SHOAL__V1__POINT_ID__KIND_STR && in->str &&
	    in->str[0]) {
		out->kind = SHOAL_ID_STR;
		out->str = in->str;
		return true;
	}
	return false;
}

int client_filter_to_wire(const shoal_filter *f, Shoal__V1__Filter **out)
{
	char err[512];
	*out = NULL;
	if (!f)
		return SHOAL_OK;
	int rc = sh_wire_filter_from_sh(f->f, out, err, sizeof(err));
	if (rc)
		return client_fail(rc, "%s", err);
	return SHOAL_OK;
}

/* ---- Connecting --------------------------------------------------------- */

int shoal_connect(const char *url, int timeout_ms, shoal_client **out)
{
	if (!out)
		return client_fail(SHOAL_EINVAL, "out is NULL");
	*out = NULL;
	if (!url || !*url)
		return client_fail(SHOAL_EINVAL, "url is empty");
	shoal_client *c = calloc(1, sizeof(*c));
	if (!c)
		return client_fail(SHOAL_ENOMEM, "out of memory");
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
	atomic_init(&c->next_id, 1);
	char err[512];
	int rc = sh_rpc_dial(url, c->timeout_ms, 0, &c->rpc, err, sizeof(err));
	if (rc) {
		free(c);
		return client_fail(rc, "connect %s: %s", url, err);
	}
	/* One round trip, so that a wrong address fails here and not on the
	 * first real call. Any well-formed answer will do: a server that does
	 * not know health (EUNSUPPORTED) is still a shoal server; bytes that
	 * are not a Response are not (SHOAL_EINVAL). */
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	Shoal__V1__HealthRequest h = SHOAL__V1__HEALTH_REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_HEALTH;
	req.health = &h;
	Shoal__V1__Response *resp = NULL;
	rc = client_roundtrip(c, &req, 0, &resp);
	sh_wire_free_response(resp);
	if (rc) {
		char msg[sizeof(last_error)];
		snprintf(msg, sizeof(msg), "%s", last_error);
		shoal_close(c);
		return client_fail(rc, "connect %s: %s", url, msg);
	}
	*out = c;
	return client_ok();
}

void shoal_close(shoal_client *c)
{
	if (!c)
		return;
	sh_rpc_close(c->rpc);
	free(c);
}

/* ---- The request path ---------------------------------------------------- */

int client_roundtrip(shoal_client *c, Shoal__V1__Request *req,
		     uint32_t timeout_ms, Shoal__V1__Response **resp)
{
	*resp = NULL;
	req->protocol_version = SH_WIRE_PROTOCOL_VERSION;
	req->request_id = atomic_fetch_add(&c->next_id, 1);
	if (timeout_ms)
		req->timeout_ms = timeout_ms;
	uint8_t *buf = NULL, *raw = NULL;
	size_t len = 0, rawlen = 0;
	char err[512] = "";
	int rc = sh_wire_encode_request(req, &buf, &len);
	if (rc)
		return client_fail(rc, "encoding the request: %s",
				   sh_strerror(rc));
	sh_rpc_op *op;
	rc = sh_rpc_start(c->rpc, buf, len,
			  timeout_ms ? (int)timeout_ms : c->timeout_ms, &op);
	free(buf);
	if (rc)
		return client_fail(rc, "sending the request: %s",
				   sh_strerror(rc));
	rc = sh_rpc_finish(op, &raw, &rawlen, err, sizeof(err));
	if (rc)
		return client_fail(rc, "%s", err);
	Shoal__V1__Response *r = NULL;
	rc = sh_wire_decode_response(raw, rawlen, NULL, &r, err, sizeof(err));
	free(raw);
	if (rc)
		return client_fail(rc == SH_ENOMEM ? rc : SHOAL_EINVAL,
				   "malformed response: %s", err);
	if (r->request_id != req->request_id) {
		sh_wire_free_response(r);
		return client_fail(SHOAL_EINVAL,
				   "malformed response: it answers another "
				   "request");
	}
	*resp = r;
	return client_ok();
}

int client_call(shoal_client *c, Shoal__V1__Request *req, uint32_t timeout_ms,
		int want, Shoal__V1__Response **resp)
{
	Shoal__V1__Response *r;
	int rc = client_roundtrip(c, req, timeout_ms, &r);
	*resp = NULL;
	if (rc)
		return rc;
	if (r->code != SHOAL__V1__ERROR_CODE__OK) {
		int code = (int)r->code;
		const char *m = client_str(r->message);
		client_fail(code, "%s", *m ? m : sh_strerror(code));
		sh_wire_free_response(r);
		return code;
	}
	if ((int)r->result_case != want) {
		int got = (int)r->result_case;
		sh_wire_free_response(r);
		return client_fail(SHOAL_EINVAL,
				   "malformed response: result %d for an "
				   "operation %d",
				   got, want);
	}
	*resp = r;
	return client_ok();
}
