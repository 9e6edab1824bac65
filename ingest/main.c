/* shoal-ingest: Kafka-fed ingestion workers. Flags and config file
 * (common/serve/flags), the libuv loop (signals), the worker (worker.h) on
 * its own thread and the HTTP side of common/serve/server.h for /metrics
 * and /healthz. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "error.h"
#include "flags.h"
#include "log.h"
#include "server.h"
#include "shoal_config.h"
#include "stop.h"
#include "worker.h"

struct cfg {
	const char *brokers, *group, *router, *model, *dlq_topic;
	const char *metrics, *config, *log_level, *ready_file;
	sh_strlist topics, props, embed;
	int64_t batch_size, linger_ms, max_inflight, max_pending, timeout_ms;
	int64_t backoff_ms, backoff_max_ms, revoke_timeout_ms, commit_ms;
	int64_t stop_timeout_ms;
};

struct app {
	sh_ingest *w;
	sh_server *server;
	atomic_bool stopping; /* a signal asked for the stop */
	int rc;
	char err[512];
};

static void i_metrics(void *ctx, FILE *f)
{
	sh_ingest_metrics(ctx, f);
}

static int i_health(void *ctx)
{
	return sh_ingest_health(ctx);
}

static void on_stop(void *ctx)
{
	struct app *a = ctx;
	atomic_store(&a->stopping, true);
	sh_ingest_stop(a->w);
}

static void *run_main(void *arg)
{
	struct app *a = arg;
	a->rc = sh_ingest_run(a->w, a->err, sizeof(a->err));
	/* Stopped by itself (a fatal error): end the signal loop too. After
	 * a signal's stop the loop no longer handles SIGTERM: raising it
	 * then would kill the process. */
	if (!atomic_load(&a->stopping))
		kill(getpid(), SIGTERM);
	return NULL;
}

/* kcat's -X key=value becomes --kafka key=value (flags take "--" only). */
static char **rewrite_args(int argc, char **argv)
{
	char **v = calloc((size_t)argc + 1, sizeof(*v));
	if (!v)
		return NULL;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		v[i] = !strcmp(argv[i], "-X") ? "--kafka" : argv[i];
	}
	for (int i = 0; i < argc; i++)
		if (!v[i])
			v[i] = argv[i];
	return v;
}

int main(int argc, char **argv)
{
	struct cfg c = {
	    .group = "shoal-ingest",
	    .router = "tcp://127.0.0.1:7000",
	    .metrics = "127.0.0.1:9300",
	    .log_level = "info",
	};
	sh_ingest_opts d;
	sh_ingest_opts_default(&d);
	c.batch_size = d.batch_size;
	c.linger_ms = d.linger_ms;
	c.max_inflight = d.max_inflight;
	c.max_pending = d.max_pending;
	c.timeout_ms = d.timeout_ms;
	c.backoff_ms = d.backoff_ms;
	c.backoff_max_ms = d.backoff_max_ms;
	c.revoke_timeout_ms = d.revoke_timeout_ms;
	c.commit_ms = d.commit_interval_ms;
	c.stop_timeout_ms = SH_STOP_TIMEOUT_MS;
	sh_flag flags[] = {
	    {"brokers", SH_FLAG_STR, &c.brokers,
	     "Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]", NULL, 0, 0},
	    {"topic", SH_FLAG_LIST, &c.topics,
	     "topic to consume; repeat for several", NULL, 0, 0},
	    {"group", SH_FLAG_STR, &c.group,
	     "consumer group: workers of one group share the partitions", NULL,
	     0, 0},
	    {"kafka", SH_FLAG_LIST, &c.props,
	     "a librdkafka property key=value, over shoal's own settings "
	     "(also -X key=value, as kcat takes it); repeat for several",
	     NULL, 0, 0},
	    {"dlq-topic", SH_FLAG_STR, &c.dlq_topic,
	     "dead-letter topic of every consumed topic (unset: TOPIC.dlq)",
	     NULL, 0, 0},
	    {"router", SH_FLAG_STR, &c.router,
	     "nng URL of the shoal-router writes go through", NULL, 0, 0},
	    {"embed", SH_FLAG_LIST, &c.embed,
	     "nng URL of a shoal-embed server that embeds records with a "
	     "text and no vector; repeat for several (unset: such records "
	     "are dead letters)",
	     NULL, 0, 0},
	    {"model", SH_FLAG_STR, &c.model,
	     "embedding model (unset: the servers' default)", NULL, 0, 0},
	    {"batch-size", SH_FLAG_INT, &c.batch_size,
	     "records per batch (one write per collection and op)", NULL, 1,
	     10000},
	    {"linger-ms", SH_FLAG_INT, &c.linger_ms,
	     "longest wait of a record for its batch to fill", NULL, 0, 60000},
	    {"max-inflight", SH_FLAG_INT, &c.max_inflight,
	     "batches written at once (a partition has one at a time)", NULL, 1,
	     256},
	    {"max-pending", SH_FLAG_INT, &c.max_pending,
	     "records queued per partition before it is paused (resumed at "
	     "half)",
	     NULL, 1, 10000000},
	    {"timeout-ms", SH_FLAG_INT, &c.timeout_ms,
	     "deadline of one write or embedding call", NULL, 1, 600000},
	    {"backoff-ms", SH_FLAG_INT, &c.backoff_ms,
	     "first delay before retrying a failed write (doubled each time)",
	     NULL, 1, 600000},
	    {"backoff-max-ms", SH_FLAG_INT, &c.backoff_max_ms,
	     "longest delay between retries", NULL, 1, 3600000},
	    {"revoke-timeout-ms", SH_FLAG_INT, &c.revoke_timeout_ms,
	     "on revoke or stop, how long batches in flight may take before "
	     "they are abandoned (their records are read again by the next "
	     "owner)",
	     NULL, 0, 3600000},
	    {"commit-interval-ms", SH_FLAG_INT, &c.commit_ms,
	     "how often written offsets are committed", NULL, 1, 3600000},
	    SH_STOP_TIMEOUT_FLAG(&c.stop_timeout_ms),
	    {"metrics", SH_FLAG_STR, &c.metrics,
	     "IPV4:PORT of the HTTP listener for /metrics and /healthz (port "
	     "0: any free port)",
	     NULL, 0, 0},
	    {"ready-file", SH_FLAG_STR, &c.ready_file,
	     "once consuming, write metrics=URL and pid=N lines here", NULL, 0,
	     0},
	    {"log-level", SH_FLAG_STR, &c.log_level,
	     "debug, info, warn or error", NULL, 0, 0},
	    {"config", SH_FLAG_STR, &c.config,
	     "file of 'name = value' lines (flag names; 'kafka = key=value' "
	     "for librdkafka properties), read before the command line",
	     NULL, 0, 0},
	};
	char **args = rewrite_args(argc, argv);
	if (!args) {
		fprintf(stderr, "shoal-ingest: out of memory\n");
		return 1;
	}
	sh_flags *fs;
	int ret = sh_flags_main(
	    flags, sizeof(flags) / sizeof(flags[0]), argc, args, "shoal-ingest",
	    "shoal-ingest: consumes product changes from Kafka topics and "
	    "writes them through a shoal-router, committing offsets only "
	    "after the writes are acknowledged (docs/ingest.md).",
	    &c.log_level, &fs);
	free(args);
	if (ret >= 0)
		return ret;
	sh_stop_check_wait("ingest", "--revoke-timeout-ms", c.revoke_timeout_ms,
			   c.stop_timeout_ms);
	if (!c.brokers || !*c.brokers || !c.topics.n || !c.metrics ||
	    !*c.metrics) {
		fprintf(stderr,
			"shoal-ingest: --brokers, --topic and --metrics "
			"are required (see --help)\n");
		sh_flags_free(fs);
		return 2;
	}

	sh_ingest_opts o = d;
	o.brokers = c.brokers;
	o.group = c.group;
	o.topics = c.topics.v;
	o.ntopics = c.topics.n;
	o.kafka_props = c.props.v;
	o.nprops = c.props.n;
	o.dlq_topic = c.dlq_topic;
	o.router = c.router;
	o.embed_urls = c.embed.v;
	o.nembed = c.embed.n;
	o.model = c.model;
	o.batch_size = (int)c.batch_size;
	o.linger_ms = (int)c.linger_ms;
	o.max_inflight = (int)c.max_inflight;
	o.max_pending = (int)c.max_pending;
	o.timeout_ms = (int)c.timeout_ms;
	o.backoff_ms = (int)c.backoff_ms;
	o.backoff_max_ms = (int)c.backoff_max_ms;
	o.revoke_timeout_ms = (int)c.revoke_timeout_ms;
	o.commit_interval_ms = (int)c.commit_ms;

	struct app a = {0};
	char err[512];
	sh_info("ingest", "shoal-ingest %s starting", SHOAL_VERSION);
	int rc = sh_ingest_open(&o, &a.w, err, sizeof(err));
	if (rc) {
		sh_error("ingest", "%s", err);
		sh_flags_free(fs);
		return 1;
	}
	sh_server_handler h = {
	    .ctx = a.w, .metrics = i_metrics, .health = i_health};
	sh_server_opts so = {.listen = NULL, .metrics = c.metrics};
	if ((rc = sh_server_start(&h, &so, &a.server, err, sizeof(err)))) {
		sh_error("ingest", "%s", err);
		sh_ingest_close(a.w);
		sh_flags_free(fs);
		return 1;
	}
	pthread_t th;
	if (pthread_create(&th, NULL, run_main, &a)) {
		sh_error("ingest", "cannot start the consumer thread");
		sh_server_stop(a.server, 0);
		sh_ingest_close(a.w);
		sh_flags_free(fs);
		return 1;
	}
	sh_info("ingest", "consuming %zu topic(s) from %s as group %s into %s",
		c.topics.n, c.brokers, c.group, c.router);
	sh_server_announce(a.server, "ingest", c.ready_file);

	uv_loop_t *loop = uv_default_loop();
	sh_run_until_signal(loop, "ingest", (int)c.stop_timeout_ms, on_stop,
			    &a);
	pthread_join(th, NULL);
	sh_server_stop(a.server, 0);
	sh_ingest_close(a.w);
	uv_loop_close(loop);
	sh_flags_free(fs);
	if (a.rc) {
		sh_error("ingest", "%s", a.err);
		return 1;
	}
	sh_info("ingest", "stopped");
	return 0;
}
