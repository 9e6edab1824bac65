/* nng workers and the HTTP listener of a node. See server.h. */
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

#include "error.h"
#include "log.h"

struct worker {
	struct sh_server *s;
	pthread_t tid;
	nng_ctx ctx;
	nng_aio *aio;
	bool started;
};

struct sh_server {
	sh_node *node;
	nng_socket sock;
	nng_listener listener;
	bool sock_open, listening;
	struct worker *w;
	int nw;
	atomic_int inflight;
	struct MHD_Daemon *http;
	char listen_url[256];
	char metrics_url[128];
};

/* ---- nng workers ----------------------------------------------------------
 */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct sh_server *s = w->s;
	for (;;) {
		nng_ctx_recv(w->ctx, w->aio);
		nng_aio_wait(w->aio);
		int rv = nng_aio_result(w->aio);
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
			break;
		if (rv) {
			sh_warn("server", "receive: %s", nng_strerror(rv));
			continue;
		}
		atomic_fetch_add(&s->inflight, 1);
		nng_msg *m = nng_aio_get_msg(w->aio);
		uint8_t *out = NULL;
		size_t outlen = 0;
		int rc = sh_node_handle(s->node, nng_msg_body(m),
					nng_msg_len(m), &out, &outlen);
		if (rc != SH_OK) {
			/* Not even an error response could be built: the
			 * client's request times out. */
			sh_error("server", "no response: %s", sh_strerror(rc));
			nng_msg_free(m);
			atomic_fetch_sub(&s->inflight, 1);
			continue;
		}
		/* Reuse the request's message for the reply (its header
		 * holds the REP routing). */
		nng_msg_clear(m);
		if (nng_msg_append(m, out, outlen) != 0) {
			free(out);
			nng_msg_free(m);
			atomic_fetch_sub(&s->inflight, 1);
			continue;
		}
		free(out);
		nng_aio_set_msg(w->aio, m);
		nng_ctx_send(w->ctx, w->aio);
		nng_aio_wait(w->aio);
		if (nng_aio_result(w->aio) != 0)
			nng_msg_free(m); /* peer gone: nothing to tell */
		atomic_fetch_sub(&s->inflight, 1);
	}
	return NULL;
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
			sh_node_metrics(s->node, f);
			fclose(f);
		}
		ctype = "text/plain; version=0.0.4; charset=utf-8";
	} else if (strcmp(url, "/healthz") == 0) {
		sh_node_state st = sh_node_get_state(s->node);
		status = st == SH_NODE_SERVING ? MHD_HTTP_OK
					       : MHD_HTTP_SERVICE_UNAVAILABLE;
		body = strdup(st == SH_NODE_SERVING    ? "serving\n"
			      : st == SH_NODE_STOPPING ? "stopping\n"
						       : "starting\n");
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

int sh_server_start(sh_node *n, const sh_server_opts *o, sh_server **out,
		    char *err, size_t errlen)
{
	*out = NULL;
	if (!o->listen || o->threads < 1)
		return sh_errf(err, errlen, SH_EINVAL, "server: bad options");
	struct sh_server *s = calloc(1, sizeof(*s));
	if (!s)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	s->node = n;
	int rv, rc = SH_OK;
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
	s->listening = true;
	int port = 0;
	nng_listener_get_int(s->listener, NNG_OPT_TCP_BOUND_PORT, &port);
	resolve_url(s->listen_url, sizeof(s->listen_url), o->listen, port);

	if (o->metrics && *o->metrics &&
	    (rc = http_start(s, o->metrics, err, errlen)))
		goto fail;

	s->w = calloc((size_t)o->threads, sizeof(*s->w));
	if (!s->w) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto fail;
	}
	for (int i = 0; i < o->threads; i++) {
		struct worker *w = &s->w[i];
		w->s = s;
		if ((rv = nng_ctx_open(&w->ctx, s->sock)) != 0 ||
		    (rv = nng_aio_alloc(&w->aio, NULL, NULL)) != 0) {
			rc = sh_errf(err, errlen, SH_EIO, "nng: %s",
				     nng_strerror(rv));
			goto fail;
		}
		s->nw = i + 1;
		if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
			rc = sh_errf(err, errlen, SH_ENOMEM,
				     "cannot start a worker thread");
			goto fail;
		}
		w->started = true;
	}
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

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

void sh_server_stop(sh_server *s, int drain_ms)
{
	if (!s)
		return;
	if (s->listening)
		nng_listener_close(s->listener);
	/* In-flight requests finish; new ones get EBUSY from the node. */
	for (int waited = 0; atomic_load(&s->inflight) > 0 && waited < drain_ms;
	     waited += 5)
		sleep_ms(5);
	if (s->nw && drain_ms > 0)
		sleep_ms(50); /* let the last replies leave the pipes */
	if (s->sock_open)
		nng_close(s->sock); /* wakes every worker with ECLOSED */
	for (int i = 0; i < s->nw; i++) {
		struct worker *w = &s->w[i];
		if (w->started)
			pthread_join(w->tid, NULL);
		if (w->aio)
			nng_aio_free(w->aio);
	}
	free(s->w);
	if (s->http)
		MHD_stop_daemon(s->http);
	free(s);
}
