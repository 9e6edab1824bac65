/*
 * The core of shoal-embed, the embedding tier: the models it serves, their
 * dynamic batchers (batcher.h), the query cache (cache.h), the handler that
 * turns one request message into one response message, and its metrics.
 * No sockets here: embed/main.c feeds it from common/serve/server.c, tests
 * call sh_embed_server_handle directly.
 *
 * ## Requests
 *
 * - embed(model, texts): each text is looked up in the cache; the misses are
 *   tokenized on the request's thread, queued on the model's batcher as one
 *   job, and the request waits for its vectors; they then enter the cache.
 *   EmbedResult.cached counts the hits.
 * - search_text(model, text, search): the text is embedded the same way,
 *   then `search` with that one vector as its query goes to the router
 *   (--router); the answer is the router's SearchResult, or its error code
 *   and message (EDIM when the model's dimension is not the collection's).
 *   Without a router: EUNSUPPORTED.
 * - health: SERVING / STARTING / STOPPING and the version.
 *
 * Errors: what sh_wire_decode_request refuses (empty list or bad UTF-8:
 * EINVAL; over 1024 texts or a text over 64 KiB: ETOOBIG); an unknown
 * model: ENOTFOUND naming the models served; a full queue: EBUSY
 * ("overloaded"); past the request's timeout_ms: ETIMEDOUT; stopping:
 * EBUSY. The server is unharmed by any of them.
 *
 * ## Threads
 *
 * sh_embed_server_handle blocks (on the batcher, on the router) and may run
 * on any number of threads at once; as many requests can join one batch as
 * there are threads calling it, so the process runs at least max batch
 * worker threads.
 */
#ifndef SH_EMBED_SERVER_H
#define SH_EMBED_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "wire.h"

/* Models one server may hold. */
#define SH_EMBED_MAX_MODELS 16

typedef enum sh_embed_backend {
	SH_EMBED_BACKEND_AUTO = 0, /* CUDA when a GPU is usable, else CPU */
	SH_EMBED_BACKEND_CPU = 1,
	SH_EMBED_BACKEND_CUDA = 2,
} sh_embed_backend;

typedef struct sh_embed_model_spec {
	const char *name; /* what requests name it by: [A-Za-z0-9_.-]{1,64} */
	const char *dir;  /* sentence-transformers directory */
} sh_embed_model_spec;

typedef struct sh_embed_opts {
	const sh_embed_model_spec *models; /* the first is the default */
	size_t nmodels;			   /* 1..SH_EMBED_MAX_MODELS */
	sh_embed_backend backend;
	int max_batch;		     /* 0: 64 on the CPU, 512 on CUDA */
	uint64_t max_queue_delay_us; /* wait of the oldest text for others */
	bool batching;		     /* false: each request runs alone */
	size_t max_queue;     /* texts waiting per model, beyond: EBUSY */
	size_t cache_entries; /* 0: no cache */
	size_t cache_bytes;   /* bound on the cache's memory; 0: none */
	const char *router;   /* nng URL of a shoal-router, or NULL */
	uint32_t default_timeout_ms; /* for requests with timeout_ms 0 */
	sh_wire_limits limits;
} sh_embed_opts;

/* The default --max-queue-delay-us (see batcher.h for why it can be long). */
#define SH_EMBED_DEFAULT_DELAY_US 5000

/* Defaults: no models, auto backend, max batch 0 (per backend), 5000 µs,
 * batching on, queue 4096 texts, 100000 cache entries (no byte bound), no
 * router, 30 s. */
void sh_embed_opts_default(sh_embed_opts *o);

typedef struct sh_embed_server sh_embed_server;

/* Loads every model (tokenizer + weights), creates one backend context and
 * batcher per model and dials the router. Returns SH_OK with *out, or an
 * error naming the model and file in err (SH_EINVAL for a bad name, a
 * duplicate or a CUDA backend asked for without a GPU). The server starts
 * in state STARTING. */
int sh_embed_server_open(const sh_embed_opts *o, sh_embed_server **out,
			 char *err, size_t errlen);

/* Stops the batchers and frees everything. Requests must have finished.
 * NULL is a no-op. */
void sh_embed_server_close(sh_embed_server *s);

/* 0 starting, 1 serving, 2 stopping (requests then get EBUSY). */
void sh_embed_server_set_state(sh_embed_server *s, int state);
int sh_embed_server_get_state(const sh_embed_server *s);

/* Handles one request message: decodes and validates it, executes it and
 * encodes the response (*out malloc'd, free()). Returns SH_OK whenever a
 * response was built (errors travel in it), SH_ENOMEM otherwise. Blocks
 * until the vectors are computed (or the deadline). Any thread. */
int sh_embed_server_handle(sh_embed_server *s, const uint8_t *req, size_t len,
			   uint8_t **out, size_t *outlen);

/* Embeds texts[0..n) (lens[i] bytes each; validated by the caller as the
 * wire does) with model (NULL or "" = default) through the cache and the
 * batcher: what the handler does, for tests and benchmarks in process.
 * out: n x *dim floats (room for n x hidden of the model). *cached gets
 * the hits (may be NULL). deadline_us: sh_now_us() time, 0 = none.
 * Returns SH_OK or an error with a message. Any thread. */
int sh_embed_server_embed(sh_embed_server *s, const char *model,
			  const char *const *texts, const size_t *lens,
			  size_t n, float *out, uint32_t *dim, uint32_t *cached,
			  uint64_t deadline_us, char *err, size_t errlen);

/* A model's dimension and backend name ("cpu", "cuda"), or 0 / NULL when
 * it is not served. */
uint32_t sh_embed_server_dim(const sh_embed_server *s, const char *model);
const char *sh_embed_server_backend(const sh_embed_server *s,
				    const char *model);

/* The max batch in effect (the option, or the backend's default). */
int sh_embed_server_max_batch(const sh_embed_server *s);

/* Prometheus text exposition of the server's metrics. */
void sh_embed_server_metrics(sh_embed_server *s, FILE *f);

#endif
