/* shoal-node: the shard server. Flags and config file (common/serve/flags),
 * the libuv loop that runs the process (signals, timers), the node core
 * (node.h) and its network side (server.h). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "error.h"
#include "flags.h"
#include "log.h"
#include "node.h"
#include "server.h"
#include "stop.h"
#include "shoal_config.h"

struct cfg {
	const char *listen, *data_dir, *metrics, *config, *log_level;
	const char *ready_file;
	int fsync;
	int64_t threads, fsync_interval_ms, vacuum_interval_ms, drain_ms;
	int64_t send_timeout_ms, stall_ms, stop_timeout_ms;
	int64_t block_cache_mib;
	uint64_t max_message;
	int64_t max_batch;
	const char *vacuum_ratio;
};

struct app {
	uv_loop_t *loop;
	uv_timer_t vacuum, sync;
	uv_work_t vacuum_work, sync_work;
	bool vacuum_busy, sync_busy, stopping;
	sh_node *node;
	sh_server *server;
	int drain_ms;
};

static void vacuum_run(uv_work_t *w)
{
	struct app *a = w->data;
	sh_node_vacuum_tick(a->node);
}

static void vacuum_done(uv_work_t *w, int status)
{
	struct app *a = w->data;
	a->vacuum_busy = false;
}

static void on_vacuum_timer(uv_timer_t *t)
{
	struct app *a = t->data;
	if (a->vacuum_busy || a->stopping)
		return;
	a->vacuum_busy = true;
	a->vacuum_work.data = a;
	if (uv_queue_work(a->loop, &a->vacuum_work, vacuum_run, vacuum_done))
		a->vacuum_busy = false;
}

static void sync_run(uv_work_t *w)
{
	struct app *a = w->data;
	int rc = sh_node_sync(a->node);
	if (rc)
		sh_error("node", "periodic fsync failed: %s", sh_strerror(rc));
}

static void sync_done(uv_work_t *w, int status)
{
	struct app *a = w->data;
	a->sync_busy = false;
}

static void on_sync_timer(uv_timer_t *t)
{
	struct app *a = t->data;
	if (a->sync_busy || a->stopping)
		return;
	a->sync_busy = true;
	a->sync_work.data = a;
	if (uv_queue_work(a->loop, &a->sync_work, sync_run, sync_done))
		a->sync_busy = false;
}

/* SIGINT/SIGTERM: new requests get EBUSY, those in flight finish, close the
 * socket, stop the timers; uv_run then returns once queued work (vacuum,
 * fsync) has finished. */
static void on_stop(void *ctx)
{
	struct app *a = ctx;
	a->stopping = true;
	sh_node_set_state(a->node, SH_NODE_STOPPING);
	sh_server_stop(a->server, a->drain_ms);
	a->server = NULL;
	uv_timer_stop(&a->vacuum);
	uv_timer_stop(&a->sync);
	uv_close((uv_handle_t *)&a->vacuum, NULL);
	uv_close((uv_handle_t *)&a->sync, NULL);
}
/* The node as the server's handler. */
static bool node_inline_op(uint32_t op)
{
	/* Short reads that never block: answered where they arrive. */
	return op == SHOAL__V1__REQUEST__OP_SEARCH ||
	       op == SHOAL__V1__REQUEST__OP_GET ||
	       op == SHOAL__V1__REQUEST__OP_HEALTH ||
	       op == SHOAL__V1__REQUEST__OP_STATS ||
	       op == SHOAL__V1__REQUEST__OP_LIST_COLLECTIONS;
}

static int node_handle(void *ctx, const uint8_t *req, size_t len, uint8_t **out,
		       size_t *outlen)
{
	return sh_node_handle(ctx, req, len, out, outlen);
}

static void node_metrics(void *ctx, FILE *f)
{
	sh_node_metrics(ctx, f);
}

static int node_health(void *ctx)
{
	sh_node_state st = sh_node_get_state(ctx);
	return st == SH_NODE_SERVING ? 1 : st == SH_NODE_STOPPING ? 2 : 0;
}

int main(int argc, char **argv)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct cfg c = {
	    .listen = "tcp://127.0.0.1:7100",
	    .data_dir = "./shoal-data",
	    .metrics = "127.0.0.1:9100",
	    .log_level = "info",
	    .fsync = SH_FSYNC_ALWAYS,
	    .threads = ncpu > 2 ? ncpu : 2,
	    .fsync_interval_ms = 100,
	    .vacuum_interval_ms = 10000,
	    .drain_ms = 5000,
	    .send_timeout_ms = SH_SERVER_SEND_TIMEOUT_MS,
	    .stall_ms = SH_SERVER_STALL_MS,
	    .stop_timeout_ms = SH_STOP_TIMEOUT_MS,
	    .block_cache_mib = 256,
	    .max_message = 64u << 20,
	    .max_batch = 10000,
	    .vacuum_ratio = "0.1",
	};
	sh_flag flags[] = {
	    {"listen", SH_FLAG_STR, &c.listen,
	     "nng URL to serve requests on (port 0: any free port)", NULL, 0,
	     0},
	    {"data-dir", SH_FLAG_STR, &c.data_dir,
	     "directory of the node's RocksDB (created if missing)", NULL, 0,
	     0},
	    {"fsync", SH_FLAG_CHOICE, &c.fsync,
	     "when writes reach the disk: always (every acknowledged write, "
	     "group commit), batch (every --fsync-interval-ms), never (the "
	     "OS decides)",
	     "always|batch|never", 0, 0},
	    {"fsync-interval-ms", SH_FLAG_INT, &c.fsync_interval_ms,
	     "fsync period under --fsync batch", NULL, 1, 60000},
	    {"threads", SH_FLAG_INT, &c.threads,
	     "worker threads for writes and scans (reads run on nng's threads)",
	     NULL, 1, 1024},
	    {"max-batch", SH_FLAG_INT, &c.max_batch,
	     "most points per upsert and ids per get/delete", NULL, 1, 1000000},
	    {"vacuum-interval-ms", SH_FLAG_INT, &c.vacuum_interval_ms,
	     "how often partitions are checked for vacuum", NULL, 100, 3600000},
	    {"vacuum-ratio", SH_FLAG_STR, &c.vacuum_ratio,
	     "tombstones / all points above which a partition is vacuumed",
	     NULL, 0, 0},
	    {"block-cache-mib", SH_FLAG_INT, &c.block_cache_mib,
	     "RocksDB block cache", NULL, 8, 1 << 20},
	    SH_SERVER_FLAGS(&c.metrics, &c.max_message, &c.drain_ms,
			    &c.send_timeout_ms, &c.stall_ms, &c.stop_timeout_ms,
			    &c.ready_file, &c.log_level, &c.config),
	};
	size_t nflags = sizeof(flags) / sizeof(flags[0]);
	char err[512];
	sh_flags *fs;
	int status = sh_flags_main(flags, nflags, argc, argv, "shoal-node",
				   "The shard server of shoal " SHOAL_VERSION
				   ": serves one node's collections over nng.",
				   &c.log_level, &fs);
	if (status >= 0)
		return status;
	sh_stop_check_wait("node", "--drain-ms", c.drain_ms, c.stop_timeout_ms);
	char *end;
	double ratio = strtod(c.vacuum_ratio, &end);
	if (*end || !(ratio > 0 && ratio < 1)) {
		fprintf(stderr,
			"shoal-node: bad --vacuum-ratio %s (0 < ratio "
			"< 1)\n",
			c.vacuum_ratio);
		sh_flags_free(fs);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);

	sh_node_opts no;
	sh_node_opts_default(&no);
	no.data_dir = c.data_dir;
	no.fsync = (sh_fsync)c.fsync;
	no.block_cache_mib = (uint32_t)c.block_cache_mib;
	no.limits.max_message_bytes = c.max_message;
	no.limits.max_batch_points = (uint32_t)c.max_batch;
	no.limits.max_ids = (uint32_t)c.max_batch;
	no.vacuum_ratio = ratio;

	struct app a = {.drain_ms = (int)c.drain_ms};
	sh_info("node", "shoal-node %s starting: data dir %s, fsync %s",
		SHOAL_VERSION, c.data_dir,
		c.fsync == 0   ? "always"
		: c.fsync == 1 ? "batch"
			       : "never");
	int rc = sh_node_open(&no, &a.node, err, sizeof(err));
	if (rc) {
		sh_error("node", "cannot open %s: %s", c.data_dir, err);
		sh_flags_free(fs);
		return 1;
	}
	sh_server_opts so = {
	    .listen = c.listen,
	    .metrics = c.metrics,
	    .threads = (int)c.threads,
	    .max_message = c.max_message,
	    .send_timeout_ms = (int)c.send_timeout_ms,
	    .stall_ms = c.stall_ms > 0 ? (int)c.stall_ms : -1,
	};
	sh_server_handler h = {
	    .ctx = a.node,
	    .handle = node_handle,
	    .inline_op = node_inline_op,
	    .metrics = node_metrics,
	    .health = node_health,
	};
	rc = sh_server_start(&h, &so, &a.server, err, sizeof(err));
	if (rc) {
		sh_error("node", "%s", err);
		sh_node_close(a.node);
		sh_flags_free(fs);
		return 1;
	}
	sh_node_set_state(a.node, SH_NODE_SERVING);
	sh_server_announce(a.server, "node", c.ready_file);

	a.loop = uv_default_loop();
	uv_timer_init(a.loop, &a.vacuum);
	uv_timer_init(a.loop, &a.sync);
	a.vacuum.data = a.sync.data = &a;
	uv_timer_start(&a.vacuum, on_vacuum_timer,
		       (uint64_t)c.vacuum_interval_ms,
		       (uint64_t)c.vacuum_interval_ms);
	if (c.fsync == SH_FSYNC_BATCH)
		uv_timer_start(&a.sync, on_sync_timer,
			       (uint64_t)c.fsync_interval_ms,
			       (uint64_t)c.fsync_interval_ms);
	sh_run_until_signal(a.loop, "node", (int)c.stop_timeout_ms, on_stop,
			    &a);

	/* Everything is closed and no work is queued: flush and close. */
	sh_node_sync(a.node);
	sh_node_close(a.node);
	uv_loop_close(a.loop);
	sh_info("node", "stopped");
	sh_flags_free(fs);
	return 0;
}
