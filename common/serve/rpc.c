/* Blocking nng REQ client. See rpc.h. */
#include "rpc.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

struct sh_rpc {
	nng_socket sock;
	int timeout_ms;
	sh_wire_limits lim;
	atomic_uint_fast64_t next_id;
};

int sh_rpc_dial(const char *url, int timeout_ms, size_t max_message,
		sh_rpc **out, char *err, size_t errlen)
{
	*out = NULL;
	sh_rpc *c = calloc(1, sizeof(*c));
	if (!c)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
	sh_wire_limits_default(&c->lim);
	if (max_message)
		c->lim.max_message_bytes = max_message;
	atomic_init(&c->next_id, 1);
	int rv = nng_req0_open(&c->sock);
	if (rv) {
		free(c);
		return sh_errf(err, errlen, SH_ENOMEM, "nng: %s",
			       nng_strerror(rv));
	}
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME,
			  NNG_DURATION_INFINITE);
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ,
			    c->lim.max_message_bytes);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 20);
	nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 500);
	rv = nng_dial(c->sock, url, NULL, NNG_FLAG_NONBLOCK);
	if (rv) {
		nng_close(c->sock);
		free(c);
		return sh_errf(err, errlen, SH_EINVAL, "dial %s: %s", url,
			       nng_strerror(rv));
	}
	*out = c;
	return SH_OK;
}

void sh_rpc_close(sh_rpc *c)
{
	if (!c)
		return;
	nng_close(c->sock);
	free(c);
}

static int nng_to_sh(int rv)
{
	return rv == NNG_ETIMEDOUT ? SH_ETIMEDOUT
	       : rv == NNG_ENOMEM  ? SH_ENOMEM
				   : SH_EIO;
}

int sh_rpc_call_raw(sh_rpc *c, const uint8_t *buf, size_t len, uint8_t **out,
		    size_t *outlen, char *err, size_t errlen)
{
	*out = NULL;
	*outlen = 0;
	nng_ctx ctx;
	nng_aio *aio = NULL;
	nng_msg *m = NULL;
	int rv = nng_ctx_open(&ctx, c->sock);
	if (rv)
		return sh_errf(err, errlen, nng_to_sh(rv), "nng: %s",
			       nng_strerror(rv));
	if ((rv = nng_aio_alloc(&aio, NULL, NULL)) ||
	    (rv = nng_msg_alloc(&m, len))) {
		nng_aio_free(aio);
		nng_ctx_close(ctx);
		return sh_errf(err, errlen, SH_ENOMEM, "nng: %s",
			       nng_strerror(rv));
	}
	if (len)
		memcpy(nng_msg_body(m), buf, len);
	nng_aio_set_timeout(aio, c->timeout_ms);
	nng_aio_set_msg(aio, m);
	nng_ctx_send(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio))) {
		nng_msg_free(m);
		goto fail;
	}
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)))
		goto fail;
	m = nng_aio_get_msg(aio);
	*outlen = nng_msg_len(m);
	*out = malloc(*outlen ? *outlen : 1);
	if (!*out) {
		nng_msg_free(m);
		nng_aio_free(aio);
		nng_ctx_close(ctx);
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	}
	memcpy(*out, nng_msg_body(m), *outlen);
	nng_msg_free(m);
	nng_aio_free(aio);
	nng_ctx_close(ctx);
	return SH_OK;
fail:
	nng_aio_free(aio);
	nng_ctx_close(ctx);
	return sh_errf(err, errlen, nng_to_sh(rv), "request: %s",
		       nng_strerror(rv));
}

int sh_rpc_call(sh_rpc *c, Shoal__V1__Request *req, Shoal__V1__Response **resp,
		char *err, size_t errlen)
{
	*resp = NULL;
	if (!req->protocol_version)
		req->protocol_version = SH_WIRE_PROTOCOL_VERSION;
	if (!req->request_id)
		req->request_id = atomic_fetch_add(&c->next_id, 1);
	uint8_t *buf, *out;
	size_t len, outlen;
	int rc = sh_wire_encode_request(req, &buf, &len);
	if (rc)
		return sh_errf(err, errlen, rc, "encoding the request");
	rc = sh_rpc_call_raw(c, buf, len, &out, &outlen, err, errlen);
	free(buf);
	if (rc)
		return rc;
	rc = sh_wire_decode_response(out, outlen, &c->lim, resp, err, errlen);
	free(out);
	return rc;
}
