/* Blocking nng REQ client. See rpc.h. */
#include "rpc.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "nngfix.h"

struct sh_rpc {
	nng_socket sock;
	int timeout_ms;
	sh_wire_limits lim;
	atomic_uint_fast64_t next_id;
	/* A connection that answers nothing is replaced (see stale): the
	 * current pipe, when an answer last arrived, the last replacement. */
	atomic_uint pipe;
	atomic_uint_fast64_t answer_ms, reset_ms;
	atomic_uint_fast64_t replaced; /* connections closed by stale() */
	uint64_t dialed_ms;
};

/* How long a connection may answer nothing, while calls on it time out,
 * before it is closed and dialled again. A TCP connection that lost
 * packets for a few seconds (a partition that healed) waits out its
 * retransmission backoff, tens of seconds after a long enough outage,
 * while a new connection gets through at once. */
#define RPC_STALE_MS 5000

/* nng 1.5.2 leaks a connection's objects (about 4 KiB, 14 allocations)
 * when its socket is closed just as a dial connects, before the pipe is
 * up; a socket closed while no connect is completing leaks nothing. A
 * client closed within this long of its dial waits for its connection
 * first (a dial that is refused or unanswered costs the close this wait,
 * once). A reconnect that races a close later can still leak one such
 * connection: nothing outside nng can see it in progress. */
#define RPC_CLOSE_WAIT_MS 200

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	sh_rpc *c = arg;
	unsigned id = (unsigned)nng_pipe_id(p);
	if (ev == NNG_PIPE_EV_ADD_POST) {
		atomic_store(&c->pipe, id);
	} else {
		unsigned cur = id;
		atomic_compare_exchange_strong(&c->pipe, &cur, 0u);
	}
}

/* A call timed out: when nothing has come back on the connection for
 * RPC_STALE_MS (and it was not just replaced), close it; the dialer
 * connects again at once (its calls in flight fail as they would have). */
static void stale(sh_rpc *c)
{
	uint64_t now = nng_clock();
	uint64_t quiet = now - atomic_load(&c->answer_ms);
	uint64_t since = now - atomic_load(&c->reset_ms);
	unsigned id = atomic_load(&c->pipe);
	if (quiet < RPC_STALE_MS || since < RPC_STALE_MS || id == 0)
		return;
	atomic_store(&c->reset_ms, now);
	atomic_fetch_add(&c->replaced, 1);
	nng_pipe p = NNG_PIPE_INITIALIZER;
	p.id = id;
	nng_pipe_close(p);
}

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
	atomic_init(&c->pipe, 0u);
	atomic_init(&c->answer_ms, nng_clock());
	atomic_init(&c->reset_ms, 0);
	atomic_init(&c->replaced, 0);
	sh_nngfix_init();
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
	nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, on_pipe, c);
	nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, on_pipe, c);
	c->dialed_ms = nng_clock();
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
	while (atomic_load(&c->pipe) == 0 &&
	       nng_clock() < c->dialed_ms + RPC_CLOSE_WAIT_MS)
		nng_msleep(1);
	nng_close(c->sock);
	free(c);
}

uint64_t sh_rpc_replaced(sh_rpc *c)
{
	return atomic_load(&c->replaced);
}

static int nng_to_sh(int rv)
{
	return rv == NNG_ETIMEDOUT ? SH_ETIMEDOUT
	       : rv == NNG_ENOMEM  ? SH_ENOMEM
				   : SH_EIO;
}

/* One call in flight: send, then receive on the same context, driven by
 * the aio's callback; the caller waits on `cv`. */
struct sh_rpc_op {
	sh_rpc *c;
	nng_ctx ctx;
	nng_aio *aio;
	bool ctx_open;
	enum { OP_SEND, OP_RECV } state;
	nng_time expire; /* one deadline for the send and the receive */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	int rv;
	nng_msg *reply;
};

static void op_cb(void *arg)
{
	sh_rpc_op *op = arg;
	int rv = nng_aio_result(op->aio);
	if (op->state == OP_SEND && rv == 0) {
		/* The receive gets what is left of the call's deadline, not a
		 * new one: a send that waited for a connection must not
		 * stretch the call to twice its timeout. */
		nng_time now = nng_clock();
		op->state = OP_RECV;
		if (now >= op->expire) {
			rv = NNG_ETIMEDOUT;
		} else {
			nng_aio_set_timeout(op->aio,
					    (nng_duration)(op->expire - now));
			nng_ctx_recv(op->ctx, op->aio);
			return;
		}
	}
	if (op->state == OP_SEND) /* the message is still ours */
		nng_msg_free(nng_aio_get_msg(op->aio));
	if (rv == 0)
		atomic_store(&op->c->answer_ms, nng_clock());
	pthread_mutex_lock(&op->mu);
	op->rv = rv;
	op->reply = rv == 0 ? nng_aio_get_msg(op->aio) : NULL;
	op->done = true;
	pthread_cond_signal(&op->cv);
	pthread_mutex_unlock(&op->mu);
}

static void op_free(sh_rpc_op *op)
{
	if (op->aio)
		nng_aio_free(op->aio); /* waits for a running callback */
	if (op->ctx_open)
		nng_ctx_close(op->ctx);
	if (op->reply)
		nng_msg_free(op->reply);
	pthread_mutex_destroy(&op->mu);
	pthread_cond_destroy(&op->cv);
	free(op);
}

int sh_rpc_start(sh_rpc *c, const uint8_t *buf, size_t len, int timeout_ms,
		 sh_rpc_op **out)
{
	*out = NULL;
	sh_rpc_op *op = calloc(1, sizeof(*op));
	if (!op)
		return SH_ENOMEM;
	op->c = c;
	pthread_mutex_init(&op->mu, NULL);
	pthread_cond_init(&op->cv, NULL);
	nng_msg *m = NULL;
	int rv = nng_ctx_open(&op->ctx, c->sock);
	if (rv == 0) {
		op->ctx_open = true;
		rv = nng_aio_alloc(&op->aio, op_cb, op);
	}
	if (rv == 0)
		rv = nng_msg_alloc(&m, len);
	if (rv) {
		op_free(op);
		return nng_to_sh(rv);
	}
	if (len)
		memcpy(nng_msg_body(m), buf, len);
	int ms = timeout_ms > 0 ? timeout_ms : c->timeout_ms;
	op->expire = nng_clock() + (nng_time)ms;
	nng_aio_set_timeout(op->aio, ms);
	nng_aio_set_msg(op->aio, m);
	op->state = OP_SEND;
	nng_ctx_send(op->ctx, op->aio);
	*out = op;
	return SH_OK;
}

int sh_rpc_finish(sh_rpc_op *op, uint8_t **out, size_t *outlen, char *err,
		  size_t errlen)
{
	*out = NULL;
	*outlen = 0;
	pthread_mutex_lock(&op->mu);
	while (!op->done)
		pthread_cond_wait(&op->cv, &op->mu);
	pthread_mutex_unlock(&op->mu);
	int rc = SH_OK;
	if (op->rv == NNG_ETIMEDOUT)
		stale(op->c);
	if (op->rv) {
		rc = sh_errf(err, errlen, nng_to_sh(op->rv), "request: %s",
			     nng_strerror(op->rv));
	} else {
		size_t n = nng_msg_len(op->reply);
		*out = malloc(n ? n : 1);
		if (!*out) {
			rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		} else {
			memcpy(*out, nng_msg_body(op->reply), n);
			*outlen = n;
		}
	}
	op_free(op);
	return rc;
}

int sh_rpc_call_raw(sh_rpc *c, const uint8_t *buf, size_t len, uint8_t **out,
		    size_t *outlen, char *err, size_t errlen)
{
	sh_rpc_op *op;
	*out = NULL;
	*outlen = 0;
	int rc = sh_rpc_start(c, buf, len, 0, &op);
	if (rc)
		return sh_errf(err, errlen, rc, "request: %s", sh_strerror(rc));
	return sh_rpc_finish(op, out, outlen, err, errlen);
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
