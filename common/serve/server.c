/* nng contexts, worker threads and the HTTP listener of a shoal server.
 * See server.h. */
#include "server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "metrics.h"
#include "nngfix.h"
#include "rpc.h"
#include "shoal.pb-c.h"
#include "wire.h"

/* One nng context: one request at a time, driven by its aio's callback
 * (RECV: a request arrived; SEND: its answer left). */
struct slot {
	struct sh_server *s;
	nng_ctx ctx;
	nng_aio *aio;
	enum { SLOT_RECV, SLOT_SEND } state;
	nng_msg *msg;
	bool counted;	   /* in inflight: arrived before the stop began */
	struct slot *next; /* in the work queue */
};

struct sh_server {
	sh_server_handler h;
	nng_socket sock;
	nng_listener listener;
	bool sock_open;
	struct slot *slots;
	int nslots;
	int send_timeout_ms; /* how long an answer may wait for its peer */
	/* Worker threads for requests that may block (writes wait for their
	 * fsync; scans and deletes by filter walk a collection). */
	pthread_t *workers;
	int nworkers;
	pthread_mutex_t qmu;
	pthread_cond_t qcv;
	struct slot *qhead, *qtail;
	bool qstop;
	/* Requests received before the stop began and not yet answered:
	 * what the stop drains (see slot_cb for the ordering). */
	atomic_int inflight;
	atomic_bool stopping;
	/* Set before the socket closes: a callback then starts nothing new
	 * on its aio, which the stop is about to free. */
	atomic_bool closing;
	/* Liveness (see server_stalled): requests received and not yet
	 * ended, and when one last ended (answered or dropped). The prober
	 * sends the server a health request whenever nothing has ended for
	 * a while, so that an idle server still shows it answers. */
	atomic_int busy;
	atomic_uint_fast64_t last_end_us;
	int stall_ms;
	char probe_url[300];
	pthread_t prober;
	bool prober_started;
	pthread_mutex_t pmu;
	pthread_cond_t pcv;
	bool pstop;
	struct MHD_Daemon *http;
	char listen_url[256];
	char metrics_url[128];
};

/* ---- Requests ------------------------------------------------------------
 *
 * A request is read by its context's callback, on one of nng's threads. The
 * handler's inline operations are answered right there: no hand-off between
 * threads, which is most of the latency of a small request over loopback.
 * Everything else goes to the worker threads.
 */

static void arm_recv(struct slot *sl)
{
	if (atomic_load(&sl->s->closing))
		return;
	sl->state = SLOT_RECV;
	nng_aio_set_timeout(sl->aio, NNG_DURATION_INFINITE);
	nng_ctx_recv(sl->ctx, sl->aio);
}

/* A request ended: answered, or dropped. */
static void request_ended(struct sh_server *s)
{
	atomic_store(&s->last_end_us, sh_now_us());
	atomic_fetch_sub(&s->busy, 1);
}

/* Handles sl->msg and sends the answer (or drops the request when not even
 * an error response can be built: the client times out). */
static void process(struct slot *sl)
{
	struct sh_server *s = sl->s;
	nng_msg *m = sl->msg;
	uint8_t *out = NULL;
	size_t outlen = 0;
	int rc = s->h.handle(s->h.ctx, nng_msg_body(m), nng_msg_len(m), &out,
			     &outlen);
	/* Reuse the request's message for the reply: its header holds the
	 * REP routing. */
	nng_msg_clear(m);
	if (rc != SH_OK || nng_msg_append(m, out, outlen) != 0) {
		sh_error("server", "no response: %s",
			 sh_strerror(rc ? rc : SH_ENOMEM));
		free(out);
		nng_msg_free(m);
		sl->msg = NULL;
		if (sl->counted)
			atomic_fetch_sub(&s->inflight, 1);
		request_ended(s);
		arm_recv(sl);
		return;
	}
	free(out);
	sl->state = SLOT_SEND;
	/* Bounded: answers to one connection leave one at a time, so a peer
	 * that stops reading would hold every context waiting behind it. */
	nng_aio_set_timeout(sl->aio, s->send_timeout_ms);
	nng_aio_set_msg(sl->aio, m);
	nng_ctx_send(sl->ctx, sl->aio);
}

static void slot_cb(void *arg)
{
	struct slot *sl = arg;
	struct sh_server *s = sl->s;
	int rv = nng_aio_result(sl->aio);
	if (sl->state == SLOT_SEND) {
		if (rv == NNG_ETIMEDOUT) {
			/* The peer takes requests but not answers (stuck or
			 * hostile): close its connection, which fails the
			 * answers queued behind this one and frees their
			 * contexts. A live client reconnects. */
			nng_pipe p = nng_msg_get_pipe(sl->msg);
			sh_warn("server",
				"a peer took no answer for %d ms: closing "
				"its connection",
				s->send_timeout_ms);
			if (nng_pipe_id(p) > 0)
				nng_pipe_close(p);
		}
		if (rv != 0)
			nng_msg_free(sl->msg); /* peer gone: nothing to tell */
		sl->msg = NULL;
		if (sl->counted)
			atomic_fetch_sub(&s->inflight, 1);
		request_ended(s);
		if (rv != NNG_ECLOSED && rv != NNG_ECANCELED)
			arm_recv(sl);
		return;
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return; /* shutting down */
	if (rv != 0) {
		sh_warn("server", "receive: %s", nng_strerror(rv));
		arm_recv(sl);
		return;
	}
	/* Counted first, then the flag read (both sequentially consistent;
	 * the stop sets the flag, then reads the count): either the stop
	 * sees this request and waits for it, or this request sees the stop
	 * and is not waited for (the handler answers it EBUSY). */
	atomic_fetch_add(&s->busy, 1);
	atomic_fetch_add(&s->inflight, 1);
	sl->counted = !atomic_load(&s->stopping);
	if (!sl->counted)
		atomic_fetch_sub(&s->inflight, 1);
	sl->msg = nng_aio_get_msg(sl->aio);
	if (s->h.inline_op &&
	    s->h.inline_op(
		sh_wire_peek_op(nng_msg_body(sl->msg), nng_msg_len(sl->msg)))) {
		process(sl);
		return;
	}
	pthread_mutex_lock(&s->qmu);
	sl->next = NULL;
	if (s->qtail)
		s->qtail->next = sl;
	else
		s->qhead = sl;
	s->qtail = sl;
	pthread_cond_signal(&s->qcv);
	pthread_mutex_unlock(&s->qmu);
}

static void *worker_main(void *arg)
{
	struct sh_server *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->qmu);
		while (!s->qhead && !s->qstop)
			pthread_cond_wait(&s->qcv, &s->qmu);
		struct slot *sl = s->qhead;
		if (sl) {
			s->qhead = sl->next;
			if (!s->qhead)
				s->qtail = NULL;
		}
		pthread_mutex_unlock(&s->qmu);
		if (!sl)
			return NULL; /* stopping and the queue is empty */
		process(sl);
	}
}

/* Turns tcp://host:0 into tcp://host:PORT once bound. */
static void resolve_url(char *out, size_t cap, const char *url, int port)
{
	const char *colon = strrchr(url, ':');
	if (port > 0 && colon && strncmp(url, "tcp://", 6) == 0)
		snprintf(out, cap, "%.*s:%d", (int)(colon - url), url, port);
	else
		snprintf(out, cap, "%s", url);
}

/* ---- Liveness ---------------------------------------------------------------
 *
 * A server whose request path is wedged (every context held, a handler that
 * never returns, nng itself stuck) still answers HTTP, from its own thread.
 * /healthz therefore also asks whether requests are being answered: it says
 * 503 "stalled" when requests are in progress and none has ended for
 * stall_ms. A lone long request (a delete by filter over millions of points)
 * is no stall as long as others are answered, and an idle server gets the
 * prober's health requests to answer.
 */

static bool server_stalled(struct sh_server *s, char *why, size_t cap)
{
	if (s->stall_ms <= 0 || !s->nslots)
		return false;
	int busy = atomic_load(&s->busy);
	uint64_t quiet = sh_now_us() - atomic_load(&s->last_end_us);
	if (busy <= 0 || quiet < (uint64_t)s->stall_ms * 1000)
		return false;
	snprintf(why, cap,
		 "stalled: %d requests in progress, none answered for %.1f s\n",
		 busy, (double)quiet / 1e6);
	return true;
}

/* The address this server can reach itself at: a wildcard host becomes
 * the loopback. */
static void self_url(char *out, size_t cap, const char *listen_url)
{
	static const char *const any[][2] = {
	    {"tcp://0.0.0.0:", "tcp://127.0.0.1:"},
	    {"tcp://*:", "tcp://127.0.0.1:"},
	    {"tcp://:", "tcp://127.0.0.1:"},
	    {"tcp://[::]:", "tcp://[::1]:"}};
	for (size_t i = 0; i < sizeof(any) / sizeof(any[0]); i++) {
		size_t n = strlen(any[i][0]);
		if (strncmp(listen_url, any[i][0], n) == 0) {
			snprintf(out, cap, "%s%s", any[i][1], listen_url + n);
			return;
		}
	}
	snprintf(out, cap, "%s", listen_url);
}

/*
 * The prober's calls go through sh_rpc (a context per call, the socket
 * closed only once no call is in flight): nng 1.5.2 can hang for ever in
 * nng_close of a REQ socket whose plain (context-less) request is still
 * outstanding, and with it every later close in the process (found while
 * writing this: six threads that each sent a request and closed their
 * socket at once all hung in nng_close within a second; the same calls
 * through contexts, 7,000 a second with one in seven timing out before
 * its answer, never did).
 */
static void *prober_main(void *arg)
{
	struct sh_server *s = arg;
	/* A health request, encoded once. */
	Shoal__V1__HealthRequest hr = SHOAL__V1__HEALTH_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.protocol_version = SH_WIRE_PROTOCOL_VERSION;
	rq.op_case = SHOAL__V1__REQUEST__OP_HEALTH;
	rq.health = &hr;
	uint8_t *req = NULL;
	size_t len = 0;
	if (sh_wire_encode_request(&rq, &req, &len) != SH_OK)
		return NULL;
	/* Often enough that an idle server is seen answering well within
	 * stall_ms; no more than once a second. A call gives up after at
	 * most a second (what it costs the stop): the answer does not
	 * matter, a request that ends in the server does. */
	int period_ms = s->stall_ms / 4;
	if (period_ms > 1000)
		period_ms = 1000;
	if (period_ms < 20)
		period_ms = 20;
	char err[200];
	sh_rpc *c = NULL;
	if (sh_rpc_dial(s->probe_url, period_ms, 0, &c, err, sizeof(err)) !=
	    SH_OK) {
		sh_warn("server", "no liveness prober (%s): %s", s->probe_url,
			err);
		free(req);
		return NULL;
	}
	pthread_mutex_lock(&s->pmu);
	while (!s->pstop) {
		sh_cond_wait_until(&s->pcv, &s->pmu,
				   sh_now_us() + (uint64_t)period_ms * 1000);
		if (s->pstop)
			break;
		uint64_t quiet = sh_now_us() - atomic_load(&s->last_end_us);
		if (quiet < (uint64_t)period_ms * 1000)
			continue; /* others are being answered */
		pthread_mutex_unlock(&s->pmu);
		uint8_t *out = NULL;
		size_t outlen = 0;
		if (sh_rpc_call_raw(c, req, len, &out, &outlen, err,
				    sizeof(err)) == SH_OK)
			free(out);
		pthread_mutex_lock(&s->pmu);
	}
	pthread_mutex_unlock(&s->pmu);
	sh_rpc_close(c); /* no call in flight */
	free(req);
	return NULL;
}

/* Starts the prober thread, which dials this server. Best effort: a
 * prober that cannot start is logged, and the stall rule still holds for
 * the requests that do arrive. */
static void prober_start(struct sh_server *s)
{
	self_url(s->probe_url, sizeof(s->probe_url), s->listen_url);
	if (pthread_create(&s->prober, NULL, prober_main, s) == 0)
		s->prober_started = true;
	else
		sh_warn("server", "no liveness prober: cannot start a thread");
}

static void prober_stop(struct sh_server *s)
{
	pthread_mutex_lock(&s->pmu);
	s->pstop = true;
	pthread_cond_signal(&s->pcv);
	pthread_mutex_unlock(&s->pmu);
	if (s->prober_started) /* within a call's second at most */
		pthread_join(s->prober, NULL);
	s->prober_started = false;
}

/* ---- HTTP -----------------------------------------------------------------
 */

static enum MHD_Result http_answer(void *cls, struct MHD_Connection *c,
				   const char *url, const char *method,
				   const char *version, const char *upload,
				   size_t *upload_size, void **con_cls)
{
	struct sh_server *s = cls;
	unsigned status = MHD_HTTP_OK;
	char *body = NULL;
	size_t len = 0;
	const char *ctype = "text/plain; charset=utf-8";
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
		body = strdup("method not allowed\n");
	} else if (strcmp(url, "/metrics") == 0) {
		FILE *f = open_memstream(&body, &len);
		if (f) {
			s->h.metrics(s->h.ctx, f);
			fclose(f);
		}
		ctype = "text/plain; version=0.0.4; charset=utf-8";
	} else if (strcmp(url, "/healthz") == 0) {
		int st = s->h.health(s->h.ctx);
		char why[160];
		status = st == 1 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
		if (st == 1 && server_stalled(s, why, sizeof(why))) {
			status = MHD_HTTP_SERVICE_UNAVAILABLE;
			body = strdup(why);
		} else {
			body = strdup(st == 1	? "serving\n"
				      : st == 2 ? "stopping\n"
						: "starting\n");
		}
	} else {
		status = MHD_HTTP_NOT_FOUND;
		body = strdup("not found: try /metrics or /healthz\n");
	}
	if (!body)
		return MHD_NO;
	len = strlen(body);
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", ctype);
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static int http_start(struct sh_server *s, const char *hostport, char *err,
		      size_t errlen)
{
	char host[64];
	const char *colon = strrchr(hostport, ':');
	if (!colon || (size_t)(colon - hostport) >= sizeof(host))
		return sh_errf(err, errlen, SH_EINVAL,
			       "--metrics %s: expected HOST:PORT", hostport);
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (*end || port < 0 || port > 65535 ||
	    inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return sh_errf(err, errlen, SH_EINVAL,
			       "--metrics %s: expected IPV4:PORT", hostport);
	s->http = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port,
	    NULL, NULL, http_answer, s, MHD_OPTION_SOCK_ADDR,
	    (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, 64u,
	    MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	if (!s->http)
		return sh_errf(err, errlen, SH_EIO,
			       "--metrics %s: cannot listen (port in use?)",
			       hostport);
	const union MHD_DaemonInfo *di =
	    MHD_get_daemon_info(s->http, MHD_DAEMON_INFO_BIND_PORT);
	snprintf(s->metrics_url, sizeof(s->metrics_url), "http://%s:%u", host,
		 di ? (unsigned)di->port : (unsigned)port);
	return SH_OK;
}

/* ---- Lifecycle ------------------------------------------------------------
 */

int sh_server_start(const sh_server_handler *h, const sh_server_opts *o,
		    sh_server **out, char *err, size_t errlen)
{
	*out = NULL;
	bool http_only = !o->listen || !*o->listen;
	if ((http_only && !(o->metrics && *o->metrics)) ||
	    (!http_only && o->threads < 1))
		return sh_errf(err, errlen, SH_EINVAL, "server: bad options");
	struct sh_server *s = calloc(1, sizeof(*s));
	if (!s)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	s->h = *h;
	s->send_timeout_ms = o->send_timeout_ms > 0 ? o->send_timeout_ms
						    : SH_SERVER_SEND_TIMEOUT_MS;
	s->stall_ms = o->stall_ms == 0 ? SH_SERVER_STALL_MS : o->stall_ms;
	atomic_store(&s->last_end_us, sh_now_us());
	pthread_mutex_init(&s->qmu, NULL);
	pthread_cond_init(&s->qcv, NULL);
	pthread_mutex_init(&s->pmu, NULL);
	sh_cond_init_mono(&s->pcv);
	int rv, rc = SH_OK;
	if (http_only) {
		if ((rc = http_start(s, o->metrics, err, errlen)))
			goto fail;
		*out = s;
		return SH_OK;
	}
	sh_nngfix_init();
	if ((rv = nng_rep0_open(&s->sock)) != 0) {
		rc = sh_errf(err, errlen, SH_EIO, "nng: %s", nng_strerror(rv));
		goto fail;
	}
	s->sock_open = true;
	/* Requests up to twice the limit reach the decoder, which answers
	 * ETOOBIG; beyond that the transport drops the connection rather
	 * than buffer it. */
	nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, 2 * o->max_message);
	if ((rv = nng_listener_create(&s->listener, s->sock, o->listen)) != 0 ||
	    (rv = nng_listener_set_size(s->listener, NNG_OPT_RECVMAXSZ,
					2 * o->max_message)) != 0 ||
	    (rv = nng_listener_start(s->listener, 0)) != 0) {
		rc = sh_errf(err, errlen, SH_EIO, "--listen %s: %s", o->listen,
			     nng_strerror(rv));
		goto fail;
	}
	int port = 0;
	nng_listener_get_int(s->listener, NNG_OPT_TCP_BOUND_PORT, &port);
	resolve_url(s->listen_url, sizeof(s->listen_url), o->listen, port);

	if (o->metrics && *o->metrics &&
	    (rc = http_start(s, o->metrics, err, errlen)))
		goto fail;

	s->nworkers = 0;
	s->workers = calloc((size_t)o->threads, sizeof(*s->workers));
	/* Contexts: as many requests as may be in progress at once. */
	s->nslots = o->threads * 4 < 16 ? 16 : o->threads * 4;
	s->slots = calloc((size_t)s->nslots, sizeof(*s->slots));
	if (!s->workers || !s->slots) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto fail;
	}
	for (int i = 0; i < o->threads; i++) {
		if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
			rc = sh_errf(err, errlen, SH_ENOMEM,
				     "cannot start a worker thread");
			goto fail;
		}
		s->nworkers = i + 1;
	}
	for (int i = 0; i < s->nslots; i++) {
		struct slot *sl = &s->slots[i];
		sl->s = s;
		if ((rv = nng_ctx_open(&sl->ctx, s->sock)) != 0 ||
		    (rv = nng_aio_alloc(&sl->aio, slot_cb, sl)) != 0) {
			rc = sh_errf(err, errlen, SH_EIO, "nng: %s",
				     nng_strerror(rv));
			goto fail;
		}
	}
	for (int i = 0; i < s->nslots; i++)
		arm_recv(&s->slots[i]);
	if (s->stall_ms > 0)
		prober_start(s);
	*out = s;
	return SH_OK;
fail:
	sh_server_stop(s, 0);
	return rc;
}

const char *sh_server_listen_url(const sh_server *s)
{
	return s->listen_url;
}

const char *sh_server_metrics_url(const sh_server *s)
{
	return s->metrics_url;
}

int sh_server_write_ready(const sh_server *s, const char *path)
{
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, "listen=%s\nmetrics=%s\npid=%ld\n", s->listen_url,
		s->metrics_url, (long)getpid());
	if (fclose(f) != 0)
		return -1;
	return rename(tmp, path);
}

void sh_server_announce(const sh_server *s, const char *component,
			const char *ready_file)
{
	sh_info(component, "serving on %s; metrics on %s",
		*s->listen_url ? s->listen_url : "(no requests)",
		*s->metrics_url ? s->metrics_url : "(none)");
	if (ready_file && sh_server_write_ready(s, ready_file) != 0)
		sh_warn(component, "cannot write --ready-file %s", ready_file);
}

void sh_server_stop(sh_server *s, int drain_ms)
{
	if (!s)
		return;
	/* The requests in flight finish and their answers leave; the handler
	 * answers the ones that arrive now EBUSY. The listener stays open
	 * meanwhile: closing it would close the connections it accepted,
	 * and the answers being drained with them. */
	atomic_store(&s->stopping, true);
	prober_stop(s);
	for (int waited = 0; atomic_load(&s->inflight) > 0 && waited < drain_ms;
	     waited += 5)
		sh_sleep_ms(5);
	if (s->nslots && drain_ms > 0)
		sh_sleep_ms(50); /* let the last replies leave the pipes */
	atomic_store(&s->closing, true);
	if (s->sock_open)
		nng_close(s->sock); /* every pending aio completes: ECLOSED */
	/* The workers finish what is queued (its sends fail) and exit. */
	pthread_mutex_lock(&s->qmu);
	s->qstop = true;
	pthread_cond_broadcast(&s->qcv);
	pthread_mutex_unlock(&s->qmu);
	for (int i = 0; i < s->nworkers; i++)
		pthread_join(s->workers[i], NULL);
	/* Every aio stopped (its callback done) before any is freed: a
	 * callback still running could otherwise touch an aio being freed
	 * (nng panicked so when answers were queued behind a stuck peer:
	 * their sends complete as successes when the socket closes). */
	for (int i = 0; s->slots && i < s->nslots; i++)
		if (s->slots[i].aio)
			nng_aio_stop(s->slots[i].aio);
	for (int i = 0; s->slots && i < s->nslots; i++)
		if (s->slots[i].aio)
			nng_aio_free(s->slots[i].aio);
	free(s->slots);
	free(s->workers);
	if (s->http)
		MHD_stop_daemon(s->http);
	pthread_mutex_destroy(&s->qmu);
	pthread_cond_destroy(&s->qcv);
	pthread_mutex_destroy(&s->pmu);
	pthread_cond_destroy(&s->pcv);
	free(s);
}
