/*
 * A shoal server's network side, shared by shoal-node and shoal-router: an
 * nng REP socket with many contexts (nng_ctx, four per worker thread, at
 * least 16), so that many requests are in progress at once; and an HTTP
 * listener (libmicrohttpd) for GET /metrics and GET /healthz.
 *
 * Requests whose operation the handler marks as short and non-blocking
 * are answered on the nng thread that received them (no hand-off between
 * threads); the rest go to a pool of worker threads. A handler that waits
 * for other nng operations (the router's fan-out) must mark none: nng's
 * own threads would then wait for themselves.
 *
 * Answers to one connection leave one at a time. An answer that waits
 * longer than send_timeout_ms behind earlier ones closes its connection:
 * a peer that sends requests but reads no answers would otherwise hold
 * every context and starve every other client.
 *
 * GET /healthz also tells whether requests are being answered: with
 * requests in progress and none answered for stall_ms it says 503
 * "stalled" (a wedged request path: every context held, a handler that
 * never returns). A prober thread sends the server a health request over
 * its own socket whenever nothing has been answered for a while, so that
 * an idle server shows it answers too; those requests count in the
 * handler's metrics like any other.
 */
#ifndef SH_SERVER_H
#define SH_SERVER_H

#include <stddef.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct sh_server sh_server;

/* What the server serves. Every function may be called from many threads
 * at once. */
typedef struct sh_server_handler {
	void *ctx;
	/* One request in, one response out (malloc'd; the server frees it).
	 * Returns SH_OK, or an error when no response could be built (the
	 * request is then dropped and the client times out). */
	int (*handle)(void *ctx, const uint8_t *req, size_t len, uint8_t **out,
		      size_t *outlen);
	/* Whether a request of this operation (Request field number, see
	 * sh_wire_peek_op) is answered on the receiving thread. NULL: none. */
	bool (*inline_op)(uint32_t op);
	/* Prometheus text for GET /metrics. */
	void (*metrics)(void *ctx, FILE *f);
	/* GET /healthz: 0 starting (503), 1 serving (200), 2 stopping (503). */
	int (*health)(void *ctx);
} sh_server_handler;

typedef struct sh_server_opts {
	const char *listen;  /* nng URL, e.g. tcp://127.0.0.1:7000 (port 0:
				any free port); NULL or "": HTTP only (no
				requests: handle, inline_op and threads are
				unused, metrics must be set) */
	const char *metrics; /* HTTP host:port, e.g. 127.0.0.1:9100; NULL or
				"" for none; port 0: any free port */
	int threads;	     /* worker threads (contexts), >= 1 */
	size_t max_message;  /* largest request the decoder accepts */
	int send_timeout_ms; /* how long an answer may wait to be handed to
				its connection; past it the connection is
				closed (a peer that takes requests but no
				answers). 0: SH_SERVER_SEND_TIMEOUT_MS */
	int stall_ms;	     /* /healthz says "stalled" after this long with
				requests in progress and none answered. 0:
				SH_SERVER_STALL_MS; < 0: never */
} sh_server_opts;

#define SH_SERVER_SEND_TIMEOUT_MS 30000
#define SH_SERVER_STALL_MS 60000

/* Starts serving h (copied). On SH_OK, the URLs actually bound (port 0
 * resolved) are readable with sh_server_listen_url / sh_server_metrics_url. */
int sh_server_start(const sh_server_handler *h, const sh_server_opts *o,
		    sh_server **out, char *err, size_t errlen);

const char *sh_server_listen_url(const sh_server *s);
const char *sh_server_metrics_url(const sh_server *s); /* "" when none */

/* Logs "serving on URL; metrics on URL" for component and, when
 * ready_file is not NULL, writes it (sh_server_write_ready; a failure is
 * logged). */
void sh_server_announce(const sh_server *s, const char *component,
			const char *ready_file);

/* Writes `listen=URL`, `metrics=URL` and `pid=N` lines to path (through a
 * temporary file and a rename, so a reader never sees half of it): how
 * scripts and tests that bind port 0 learn the addresses. 0 or -1. */
int sh_server_write_ready(const sh_server *s, const char *path);

/* Stops: the requests received before the call finish and their answers
 * are sent (waiting at most drain_ms), while the handler should answer
 * what still arrives with EBUSY (its state is the caller's); then the
 * socket, its listener and connections close and the workers are joined.
 * NULL is a no-op. */
void sh_server_stop(sh_server *s, int drain_ms);

#endif
