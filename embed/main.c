/* shoal-embed: the embedding tier. Flags and config file
 * (common/serve/flags), the libuv loop (signals), the embedding core
 * (embed_server.h) and the shared network side (common/serve/server.h). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "bert.h"
#include "error.h"
#include "flags.h"
#include "embed_server.h"
#include "log.h"
#include "server.h"
#include "stop.h"
#include "shoal_config.h"

#ifndef SHOAL_MODELS_DIR
#define SHOAL_MODELS_DIR "models"
#endif

struct cfg {
	const char *listen, *metrics, *config, *log_level, *ready_file;
	const char *router, *data_dir;
	sh_strlist model;
	int backend;
	bool batching;
	int64_t max_batch, max_queue_delay_us, max_queue, cache_entries;
	int64_t threads, drain_ms, send_timeout_ms, stall_ms, timeout_ms;
	int64_t stop_timeout_ms;
	uint64_t max_message, cache_bytes;
};

struct app {
	uv_loop_t *loop;
	sh_embed_server *es;
	sh_server *server;
	int drain_ms;
};

static int e_handle(void *ctx, const uint8_t *req, size_t len, uint8_t **out,
		    size_t *outlen)
{
	return sh_embed_server_handle(ctx, req, len, out, outlen);
}

static void e_metrics(void *ctx, FILE *f)
{
	sh_embed_server_metrics(ctx, f);
}

static int e_health(void *ctx)
{
	return sh_embed_server_get_state(ctx);
}

/* SIGINT/SIGTERM: new requests get EBUSY, those in flight finish. */
static void on_stop(void *ctx)
{
	struct app *a = ctx;
	sh_embed_server_set_state(a->es, 2);
	sh_server_stop(a->server, a->drain_ms);
	a->server = NULL;
}
/* The values of every --model joined with commas (each may itself be a
 * NAME=DIR,NAME=DIR list): malloc'd, or NULL when there are none. */
static char *joined_models(const sh_strlist *l)
{
	size_t cap = 1;
	for (size_t i = 0; i < l->n; i++)
		cap += strlen(l->v[i]) + 1;
	if (!l->n)
		return NULL;
	char *s = calloc(1, cap);
	for (size_t i = 0; s && i < l->n; i++) {
		if (i)
			strcat(s, ",");
		strcat(s, l->v[i]);
	}
	return s;
}

/* Splits "name=dir,name=dir" in place into specs. Returns the count, or
 * -1 with a message. */
static int parse_models(char *list, sh_embed_model_spec *specs, int max,
			char *err, size_t errlen)
{
	int n = 0;
	char *save = NULL;
	for (char *tok = strtok_r(list, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq || eq == tok || !eq[1]) {
			snprintf(err, errlen, "--model %s: expected NAME=DIR",
				 tok);
			return -1;
		}
		if (n == max) {
			snprintf(err, errlen, "more than %d models", max);
			return -1;
		}
		*eq = 0;
		specs[n].name = tok;
		specs[n].dir = eq + 1;
		n++;
	}
	if (n == 0)
		snprintf(err, errlen, "--model: expected NAME=DIR");
	return n ? n : -1;
}

int main(int argc, char **argv)
{
	/* OpenBLAS on its generic kernels (a CPU model it does not know):
	 * start again with the core type the CPU's features allow. */
	if (!getenv("OPENBLAS_CORETYPE")) {
		const char *ct = sh_bert_cpu_blas_coretype();
		if (ct && setenv("OPENBLAS_CORETYPE", ct, 1) == 0)
			execv("/proc/self/exe", argv); /* failing: go on */
	}
	struct cfg c = {
	    .listen = "tcp://127.0.0.1:7200",
	    .metrics = "127.0.0.1:9200",
	    .log_level = "info",
	    .batching = true,
	    .max_batch = 0,
	    .max_queue_delay_us = SH_EMBED_DEFAULT_DELAY_US,
	    .max_queue = 4096,
	    .cache_entries = 100000,
	    .threads = 0,
	    .drain_ms = 5000,
	    .send_timeout_ms = SH_SERVER_SEND_TIMEOUT_MS,
	    .stall_ms = SH_SERVER_STALL_MS,
	    .stop_timeout_ms = SH_STOP_TIMEOUT_MS,
	    .timeout_ms = 30000,
	    .max_message = 64u << 20,
	};
	sh_flag flags[] = {
	    {"listen", SH_FLAG_STR, &c.listen,
	     "nng URL to serve requests on (port 0: any free port)", NULL, 0,
	     0},
	    {"model", SH_FLAG_LIST, &c.model,
	     "NAME=DIR of a sentence-transformers model; repeat the flag (or "
	     "give NAME=DIR,NAME=DIR) for several; the first is the default. "
	     "Unset: minilm=" SHOAL_MODELS_DIR "/all-MiniLM-L6-v2",
	     NULL, 0, 0},
	    {"backend", SH_FLAG_CHOICE, &c.backend,
	     "auto (CUDA when a GPU is usable, else CPU), cpu or cuda",
	     "auto|cpu|cuda", 0, 0},
	    {"max-batch", SH_FLAG_INT, &c.max_batch,
	     "texts per forward pass (0: 64 on the CPU, 512 on CUDA)", NULL, 0,
	     1024},
	    {"max-queue-delay-us", SH_FLAG_INT, &c.max_queue_delay_us,
	     "longest wait of the oldest queued text for others to batch with "
	     "(a batch leaves sooner once the clients the last pass answered "
	     "are back)",
	     NULL, 0, 10000000},
	    {"batching", SH_FLAG_BOOL, &c.batching,
	     "dynamic batching (--no-batching: each request runs alone)", NULL,
	     0, 0},
	    {"max-queue", SH_FLAG_INT, &c.max_queue,
	     "texts waiting per model; beyond, requests get EBUSY "
	     "\"overloaded\" (at least --max-batch)",
	     NULL, 1, 100000000},
	    {"cache-entries", SH_FLAG_INT, &c.cache_entries,
	     "query cache size in vectors (0: no cache)", NULL, 0, 1000000000},
	    {"cache-bytes", SH_FLAG_SIZE, &c.cache_bytes,
	     "bound on the cache's memory (keys, vectors, bookkeeping; 0: "
	     "--cache-entries alone bounds it)",
	     NULL, 0, 0},
	    {"router", SH_FLAG_STR, &c.router,
	     "nng URL of the shoal-router that search_text searches through",
	     NULL, 0, 0},
	    {"timeout-ms", SH_FLAG_INT, &c.timeout_ms,
	     "deadline of requests that set none (timeout_ms 0)", NULL, 1,
	     3600000},
	    {"threads", SH_FLAG_INT, &c.threads,
	     "worker threads, each holding one request while it waits for its "
	     "batch (0: 2 x max batch, at least 64)",
	     NULL, 0, 4096},
	    {"data-dir", SH_FLAG_STR, &c.data_dir,
	     "unused (shoal-embed keeps no data); accepted so that scripts "
	     "start every shoal server alike",
	     NULL, 0, 0},
	    SH_SERVER_FLAGS(&c.metrics, &c.max_message, &c.drain_ms,
			    &c.send_timeout_ms, &c.stall_ms, &c.stop_timeout_ms,
			    &c.ready_file, &c.log_level, &c.config),
	};
	size_t nflags = sizeof(flags) / sizeof(flags[0]);
	char err[512];
	sh_flags *fs;
	int status =
	    sh_flags_main(flags, nflags, argc, argv, "shoal-embed",
			  "The embedding tier of shoal " SHOAL_VERSION
			  ": turns texts into vectors with dynamic batching "
			  "and a cache, and searches by text through a router.",
			  &c.log_level, &fs);
	if (status >= 0)
		return status;
	sh_stop_check_wait("embed", "--drain-ms", c.drain_ms,
			   c.stop_timeout_ms);
	signal(SIGPIPE, SIG_IGN);

	char *models = joined_models(&c.model);
	if (!models) {
		const char *def = SHOAL_MODELS_DIR "/all-MiniLM-L6-v2";
		struct stat st;
		if (stat(def, &st) != 0 || !S_ISDIR(st.st_mode)) {
			fprintf(stderr,
				"shoal-embed: no --model given and the default "
				"model %s is not installed "
				"(deploy/fetch-model.sh)\n",
				def);
			sh_flags_free(fs);
			return 2;
		}
		size_t n = strlen(def) + 8;
		models = malloc(n);
		if (models)
			snprintf(models, n, "minilm=%s", def);
	}
	sh_embed_model_spec specs[SH_EMBED_MAX_MODELS];
	int nspecs = models ? parse_models(models, specs, SH_EMBED_MAX_MODELS,
					   err, sizeof(err))
			    : -1;
	if (nspecs < 0) {
		fprintf(stderr, "shoal-embed: %s\n",
			models ? err : "out of memory");
		free(models);
		sh_flags_free(fs);
		return 2;
	}

	sh_embed_opts eo;
	sh_embed_opts_default(&eo);
	eo.models = specs;
	eo.nmodels = (size_t)nspecs;
	eo.backend = (sh_embed_backend)c.backend;
	eo.max_batch = (int)c.max_batch;
	eo.max_queue_delay_us = (uint64_t)c.max_queue_delay_us;
	eo.batching = c.batching;
	eo.max_queue = (size_t)c.max_queue;
	eo.cache_entries = (size_t)c.cache_entries;
	eo.cache_bytes = (size_t)c.cache_bytes;
	eo.router = c.router && *c.router ? c.router : NULL;
	eo.default_timeout_ms = (uint32_t)c.timeout_ms;
	eo.limits.max_message_bytes = c.max_message;

	struct app a = {.drain_ms = (int)c.drain_ms};
	sh_info("embed", "shoal-embed %s starting (OpenBLAS kernels: %s%s)",
		SHOAL_VERSION, sh_bert_cpu_blas_kernels(),
		getenv("OPENBLAS_CORETYPE") ? ", from OPENBLAS_CORETYPE" : "");
	int rc = sh_embed_server_open(&eo, &a.es, err, sizeof(err));
	free(models);
	if (rc) {
		sh_error("embed", "%s", err);
		sh_flags_free(fs);
		return 1;
	}
	int mb = sh_embed_server_max_batch(a.es);
	int64_t threads = c.threads;
	if (threads == 0)
		threads = 2 * (int64_t)mb < 64 ? 64 : 2 * (int64_t)mb;
	sh_server_opts so = {
	    .listen = c.listen,
	    .metrics = c.metrics,
	    .threads = (int)threads,
	    .max_message = c.max_message,
	    .send_timeout_ms = (int)c.send_timeout_ms,
	    .stall_ms = c.stall_ms > 0 ? (int)c.stall_ms : -1,
	};
	sh_server_handler h = {
	    .ctx = a.es,
	    .handle = e_handle,
	    .inline_op = NULL, /* every operation waits for a batch */
	    .metrics = e_metrics,
	    .health = e_health,
	};
	rc = sh_server_start(&h, &so, &a.server, err, sizeof(err));
	if (rc) {
		sh_error("embed", "%s", err);
		sh_embed_server_close(a.es);
		sh_flags_free(fs);
		return 1;
	}
	sh_embed_server_set_state(a.es, 1);
	sh_info(
	    "embed",
	    "%lld threads, batching %s (max batch %d, delay %lld us), cache "
	    "%lld entries",
	    (long long)threads, c.batching ? "on" : "off", mb,
	    (long long)c.max_queue_delay_us, (long long)c.cache_entries);
	sh_server_announce(a.server, "embed", c.ready_file);

	a.loop = uv_default_loop();
	sh_run_until_signal(a.loop, "embed", (int)c.stop_timeout_ms, on_stop,
			    &a);

	sh_embed_server_close(a.es);
	uv_loop_close(a.loop);
	sh_info("embed", "stopped");
	sh_flags_free(fs);
	return 0;
}
