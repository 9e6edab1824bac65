/*
 * The node's network side: an nng REP socket with many contexts (nng_ctx,
 * four per worker thread, at least 16), so that many requests are in
 * progress at once; and an HTTP listener (libmicrohttpd) for GET /metrics
 * and GET /healthz.
 *
 * Short reads (search, get, health, stats, list) are answered on the nng
 * thread that received them; requests that may block (writes wait for
 * their fsync, scans walk a collection) go to a pool of worker threads.
 *
 * Shutdown (sh_server_stop): the listener closes (no new connections), the
 * node answers requests that still arrive with EBUSY, the requests in
 * flight finish and their answers are sent, then the socket closes and the
 * workers are joined.
 */
#ifndef SH_SERVER_H
#define SH_SERVER_H

#include <stddef.h>

#include "node.h"

typedef struct sh_server sh_server;

typedef struct sh_server_opts {
	const char *listen;  /* nng URL, e.g. tcp://127.0.0.1:7000 (port 0:
				any free port) */
	const char *metrics; /* HTTP host:port, e.g. 127.0.0.1:9100; NULL or
				"" for none; port 0: any free port */
	int threads;	     /* worker threads (contexts), >= 1 */
	size_t max_message;  /* largest request the decoder accepts */
} sh_server_opts;

/* Starts serving n. On SH_OK, the URLs actually bound (port 0 resolved)
 * are readable with sh_server_listen_url / sh_server_metrics_url. */
int sh_server_start(sh_node *n, const sh_server_opts *o, sh_server **out,
		    char *err, size_t errlen);

const char *sh_server_listen_url(const sh_server *s);
const char *sh_server_metrics_url(const sh_server *s); /* "" when none */

/* Stops as described above; waits at most drain_ms for requests in flight.
 * NULL is a no-op. */
void sh_server_stop(sh_server *s, int drain_ms);

#endif
