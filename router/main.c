/* shoal-router: the front door of a shoal cluster. Flags and config file
 * (common/serve/flags), the libuv loop (signals), the router core
 * (router.h) and the shared server (common/serve/server.h). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "error.h"
#include "flags.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "stop.h"
#include "shoal_config.h"

struct app {
	uv_loop_t *loop;
	sh_router *router;
	sh_server *server;
	int drain_ms;
};

static int r_handle(void *ctx, const uint8_t *req, size_t len, uint8_t **out,
		    size_t *outlen)
{
	return sh_router_handle(ctx, req, len, out, outlen);
}

static void r_metrics(void *ctx, FILE *f)
{
	sh_router_metrics(ctx, f);
}

static int r_health(void *ctx)
{
	return sh_router_get_state(ctx);
}

/* SIGINT/SIGTERM: new requests get EBUSY, those in flight finish. */
static void on_stop(void *ctx)
{
	struct app *a = ctx;
	sh_router_set_state(a->router, 2);
	sh_server_stop(a->server, a->drain_ms);
	a->server = NULL;
}
/* Splits a comma-separated list in place. */
static size_t split_list(char *s, const char **out, size_t cap)
{
	size_t n = 0;
	for (char *tok = strtok(s, ","); tok && n < cap;
	     tok = strtok(NULL, ","))
		if (*tok)
			out[n++] = tok;
	return n;
}

int main(int argc, char **argv)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	const char *listen = "tcp://127.0.0.1:7000",
		   *metrics = "127.0.0.1:9000";
	const char *data_dir = "./shoal-router", *nodes = "", *config = NULL;
	const char *etcd = "", *etcd_key = "/shoal/cluster-map";
	const char *log_level = "info", *ready_file = NULL;
	int64_t threads = 4 * (ncpu > 1 ? ncpu : 1), read_ms = 1000,
		write_ms = 30000, drain_ms = 5000,
		send_timeout_ms = SH_SERVER_SEND_TIMEOUT_MS,
		stall_ms = SH_SERVER_STALL_MS,
		stop_timeout_ms = SH_STOP_TIMEOUT_MS;
	uint64_t max_message = 64u << 20;
	sh_flag flags[] = {
	    {"listen", SH_FLAG_STR, &listen,
	     "nng URL clients connect to (port 0: any free port)", NULL, 0, 0},
	    {"data-dir", SH_FLAG_STR, &data_dir,
	     "directory of the cluster map (cluster.json)", NULL, 0, 0},
	    {"etcd", SH_FLAG_STR, &etcd,
	     "etcd endpoints (http://HOST:PORT[,...]): keep the cluster map "
	     "there, shared by every router given the same key, instead of "
	     "in data-dir",
	     NULL, 0, 0},
	    {"etcd-key", SH_FLAG_STR, &etcd_key,
	     "the etcd key of the cluster map", NULL, 0, 0},
	    {"nodes", SH_FLAG_STR, &nodes,
	     "comma-separated node URLs: the first map, when data-dir has "
	     "none (slots split evenly)",
	     NULL, 0, 0},
	    {"threads", SH_FLAG_INT, &threads,
	     "worker threads (each waits for nodes while a request is in "
	     "flight)",
	     NULL, 1, 4096},
	    {"read-timeout-ms", SH_FLAG_INT, &read_ms,
	     "default deadline of a node call for searches and reads (a "
	     "request's timeout_ms overrides it)",
	     NULL, 1, 3600000},
	    {"write-timeout-ms", SH_FLAG_INT, &write_ms,
	     "default deadline of a node call for writes", NULL, 1, 3600000},
	    SH_SERVER_FLAGS(&metrics, &max_message, &drain_ms, &send_timeout_ms,
			    &stall_ms, &stop_timeout_ms, &ready_file,
			    &log_level, &config),
	};
	size_t nflags = sizeof(flags) / sizeof(flags[0]);
	char err[512];
	sh_flags *fs;
	int status =
	    sh_flags_main(flags, nflags, argc, argv, "shoal-router",
			  "The router of shoal " SHOAL_VERSION
			  ": routes writes by slot, fans searches out to "
			  "every node and merges them.",
			  &log_level, &fs);
	if (status >= 0)
		return status;
	sh_stop_check_wait("router", "--drain-ms", drain_ms, stop_timeout_ms);
	signal(SIGPIPE, SIG_IGN);

	char *nodes_copy = strdup(nodes);
	const char *addrs[256];
	sh_router_opts ro;
	sh_router_opts_default(&ro);
	ro.data_dir = data_dir;
	ro.etcd = etcd;
	ro.etcd_key = etcd_key;
	ro.bootstrap = addrs;
	ro.nbootstrap = nodes_copy ? split_list(nodes_copy, addrs, 256) : 0;
	ro.read_timeout_ms = (int)read_ms;
	ro.write_timeout_ms = (int)write_ms;
	ro.limits.max_message_bytes = max_message;
	struct app a = {.drain_ms = (int)drain_ms};
	int rc = sh_router_open(&ro, &a.router, err, sizeof(err));
	free(nodes_copy);
	if (rc) {
		sh_error("router", "%s", err);
		sh_flags_free(fs);
		return 1;
	}
	sh_server_handler h = {
	    .ctx = a.router,
	    .handle = r_handle,
	    .inline_op = NULL, /* fan-out waits on nng: never on its threads */
	    .metrics = r_metrics,
	    .health = r_health,
	};
	sh_server_opts so = {
	    .listen = listen,
	    .metrics = metrics,
	    .threads = (int)threads,
	    .max_message = max_message,
	    .send_timeout_ms = (int)send_timeout_ms,
	    .stall_ms = stall_ms > 0 ? (int)stall_ms : -1,
	};
	rc = sh_server_start(&h, &so, &a.server, err, sizeof(err));
	if (rc) {
		sh_error("router", "%s", err);
		sh_router_close(a.router);
		sh_flags_free(fs);
		return 1;
	}
	sh_router_set_state(a.router, 1);
	sh_server_announce(a.server, "router", ready_file);

	a.loop = uv_default_loop();
	sh_run_until_signal(a.loop, "router", (int)stop_timeout_ms, on_stop,
			    &a);
	sh_router_close(a.router);
	uv_loop_close(a.loop);
	sh_info("router", "stopped");
	sh_flags_free(fs);
	return 0;
}
