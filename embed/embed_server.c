/* shoal-embed's core: models, cache, batchers, the request handler and the
 * metrics. See embed_server.h. */
#include "embed_server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "batcher.h"
#include "bert.h"
#include "cache.h"
#include "dispatch.h"
#include "error.h"
#include "log.h"
#include "metrics.h"
#include "rpc.h"
#include "shoal_config.h"

#ifndef EMBED_HAVE_CUDA_BACKEND
#define EMBED_HAVE_CUDA_BACKEND 0
#endif

/* Operations, for the request metrics. */
enum { OP_EMBED, OP_SEARCH_TEXT, OP_HEALTH, OP_INVALID, NOPS };
static const char *const op_names[NOPS] = {"embed", "search_text", "health",
					   "invalid"};
/* Codes counted one by one; anything above (a newer router's) shares the
 * last slot. */

struct embed_model {
	char name[SH_WIRE_MAX_NAME + 1];
	uint32_t index; /* in the cache's keys */
	uint32_t dim;
	struct sh_bert_model *m;
	struct sh_wordpiece *tok;
	embed_batcher *b;
	atomic_uint_fast64_t cache_hits, cache_misses;
};

struct sh_embed_server {
	sh_embed_opts o;
	struct embed_model model[SH_EMBED_MAX_MODELS];
	size_t nmodels;
	embed_cache *cache; /* NULL: off */
	sh_rpc *router;	    /* NULL: none */
	char router_url[256];
	atomic_int state;

	sh_op_metrics ops[NOPS];
	atomic_uint_fast64_t router_errors;
};

void sh_embed_opts_default(sh_embed_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->backend = SH_EMBED_BACKEND_AUTO;
	o->max_queue_delay_us = SH_EMBED_DEFAULT_DELAY_US;
	o->batching = true;
	o->max_queue = 4096;
	o->cache_entries = 100000;
	o->default_timeout_ms = 30000;
	sh_wire_limits_default(&o->limits);
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > SH_WIRE_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return false;
	}
	return true;
}

static const struct sh_bert_backend_ops *pick_backend(sh_embed_backend want,
						      char *err, size_t errlen)
{
	bool gpu = false;
#if EMBED_HAVE_CUDA_BACKEND
	gpu = sh_bert_cuda_available() != 0;
#endif
	if (want == SH_EMBED_BACKEND_CUDA && !gpu) {
		sh_errf(err, errlen, SH_EINVAL, "--backend cuda: %s",
			EMBED_HAVE_CUDA_BACKEND
			    ? "no usable GPU found"
			    : "this build has no CUDA backend");
		return NULL;
	}
#if EMBED_HAVE_CUDA_BACKEND
	if (gpu && want != SH_EMBED_BACKEND_CPU)
		return &sh_bert_cuda;
#endif
	return &sh_bert_cpu;
}

int sh_embed_server_open(const sh_embed_opts *o, sh_embed_server **out,
			 char *err, size_t errlen)
{
	*out = NULL;
	if (o->nmodels < 1 || o->nmodels > SH_EMBED_MAX_MODELS)
		return sh_errf(err, errlen, SH_EINVAL,
			       "%zu models; 1 to %d can be served", o->nmodels,
			       SH_EMBED_MAX_MODELS);
	const struct sh_bert_backend_ops *ops =
	    pick_backend(o->backend, err, errlen);
	if (!ops)
		return SH_EINVAL;
	sh_embed_server *s = calloc(1, sizeof(*s));
	if (!s)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	s->o = *o;
	s->o.models = NULL; /* not kept: names are copied */
	if (s->o.max_batch <= 0)
		s->o.max_batch = ops == &sh_bert_cpu ? 64 : 512;
	if (s->o.max_batch > SH_WIRE_MAX_TEXTS)
		s->o.max_batch = SH_WIRE_MAX_TEXTS;
	if (s->o.max_queue < (size_t)s->o.max_batch)
		s->o.max_queue = (size_t)s->o.max_batch;
	int rc = SH_OK;
	for (size_t i = 0; i < o->nmodels; i++) {
		const sh_embed_model_spec *sp = &o->models[i];
		if (!sp->name || !valid_name(sp->name) || !sp->dir) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "model name '%s': 1..64 of "
				     "[A-Za-z0-9_.-]",
				     sp->name ? sp->name : "");
			goto fail;
		}
		for (size_t k = 0; k < i; k++)
			if (!strcmp(s->model[k].name, sp->name)) {
				rc =
				    sh_errf(err, errlen, SH_EINVAL,
					    "model '%s' given twice", sp->name);
				goto fail;
			}
		struct embed_model *em = &s->model[i];
		snprintf(em->name, sizeof(em->name), "%s", sp->name);
		em->index = (uint32_t)i;
		s->nmodels = i + 1;
		char e2[400];
		if ((rc = sh_wordpiece_load(sp->dir, &em->tok, e2,
					    sizeof(e2))) != SH_OK ||
		    (rc = sh_bert_load(sp->dir, &em->m, e2, sizeof(e2))) !=
			SH_OK) {
			sh_errf(err, errlen, rc, "model '%s': %s", sp->name,
				e2);
			goto fail;
		}
		em->dim = (uint32_t)em->m->cfg.hidden;
		embed_batcher_opts bo = {
		    .ops = ops,
		    .model = em->m,
		    .max_batch = s->o.max_batch,
		    .max_delay_us = s->o.max_queue_delay_us,
		    .batching = s->o.batching,
		    .max_queue = s->o.max_queue,
		};
		if ((rc = embed_batcher_new(&bo, &em->b, e2, sizeof(e2))) !=
		    SH_OK) {
			sh_errf(err, errlen, rc, "model '%s': %s backend: %s",
				sp->name, ops->name, e2);
			goto fail;
		}
		sh_info("embed",
			"model %s from %s: %d layers, %u dims, %s backend, "
			"max batch %d",
			em->name, sp->dir, em->m->cfg.layers, em->dim,
			ops->name, s->o.max_batch);
	}
	if (s->o.cache_entries > 0 &&
	    embed_cache_new(s->o.cache_entries, s->o.cache_bytes, &s->cache) !=
		SH_OK) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory (cache)");
		goto fail;
	}
	if (o->router && *o->router) {
		snprintf(s->router_url, sizeof(s->router_url), "%s", o->router);
		char e2[300];
		rc = sh_rpc_dial(o->router, (int)s->o.default_timeout_ms,
				 s->o.limits.max_message_bytes, &s->router, e2,
				 sizeof(e2));
		if (rc != SH_OK) {
			sh_errf(err, errlen, rc, "--router %s: %s", o->router,
				e2);
			goto fail;
		}
	}
	s->o.router = NULL;
	*out = s;
	return SH_OK;
fail:
	sh_embed_server_close(s);
	return rc;
}

void sh_embed_server_close(sh_embed_server *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nmodels; i++) {
		struct embed_model *em = &s->model[i];
		embed_batcher_free(em->b);
		sh_bert_free(em->m);
		sh_wordpiece_free(em->tok);
	}
	embed_cache_free(s->cache);
	sh_rpc_close(s->router);
	free(s);
}

void sh_embed_server_set_state(sh_embed_server *s, int state)
{
	atomic_store(&s->state, state);
}

int sh_embed_server_get_state(const sh_embed_server *s)
{
	return atomic_load(&s->state);
}

static struct embed_model *find_model(sh_embed_server *s, const char *name)
{
	if (!name || !*name)
		return &s->model[0];
	for (size_t i = 0; i < s->nmodels; i++)
		if (!strcmp(s->model[i].name, name))
			return &s->model[i];
	return NULL;
}

static int unknown_model(sh_embed_server *s, const char *name, char *err,
			 size_t errlen)
{
	char list[512] = "";
	size_t off = 0;
	for (size_t i = 0; i < s->nmodels && off < sizeof(list); i++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
					i ? ", " : "", s->model[i].name);
	return sh_errf(err, errlen, SH_ENOTFOUND,
		       "model '%s' is not served here (models: %s)", name,
		       list);
}

uint32_t sh_embed_server_dim(const sh_embed_server *s, const char *model)
{
	struct embed_model *em = find_model((sh_embed_server *)s, model);
	return em ? em->dim : 0;
}

const char *sh_embed_server_backend(const sh_embed_server *s, const char *model)
{
	struct embed_model *em = find_model((sh_embed_server *)s, model);
	return em ? embed_batcher_backend(em->b) : NULL;
}

int sh_embed_server_max_batch(const sh_embed_server *s)
{
	return s->o.max_batch;
}

/* Embeds through the cache and the batcher; see sh_embed_server_embed. */
static int embed_with(sh_embed_server *s, struct embed_model *em,
		      const char *const *texts, const size_t *lens, size_t n,
		      float *out, uint32_t *cached, uint64_t deadline_us,
		      char *err, size_t errlen)
{
	size_t dim = em->dim, nmiss = 0, hits = 0;
	size_t *miss = malloc(n * sizeof(*miss));
	if (!miss)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (embed_cache_get(s->cache, em->index, texts[i], lens[i],
				    out + i * dim, (uint32_t)dim))
			hits++;
		else
			miss[nmiss++] = i;
	}
	if (s->cache) {
		atomic_fetch_add(&em->cache_hits, hits);
		atomic_fetch_add(&em->cache_misses, nmiss);
	}
	if (cached)
		*cached = (uint32_t)hits;
	int rc = SH_OK;
	int32_t *ids = NULL;
	int *len = NULL;
	float *vec = NULL;
	if (nmiss == 0)
		goto done;
	ids = malloc(nmiss * SH_BERT_MAX_TOKENS * sizeof(*ids));
	len = malloc(nmiss * sizeof(*len));
	vec = malloc(nmiss * dim * sizeof(*vec));
	if (!ids || !len || !vec) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t k = 0; k < nmiss; k++) {
		size_t i = miss[k];
		char e2[200];
		rc = sh_wordpiece_encode(
		    em->tok, texts[i], lens[i], ids + k * SH_BERT_MAX_TOKENS,
		    SH_BERT_MAX_TOKENS, &len[k], e2, sizeof(e2));
		if (rc != SH_OK) {
			sh_errf(err, errlen, rc, "texts[%zu]: %s", i, e2);
			goto done;
		}
	}
	embed_job j = {
	    .n = nmiss,
	    .ids = ids,
	    .len = len,
	    .out = vec,
	    .deadline_us = deadline_us,
	};
	rc = embed_batcher_run(em->b, &j, err, errlen);
	if (rc != SH_OK)
		goto done;
	for (size_t k = 0; k < nmiss; k++) {
		size_t i = miss[k];
		memcpy(out + i * dim, vec + k * dim, dim * sizeof(float));
		embed_cache_put(s->cache, em->index, texts[i], lens[i],
				vec + k * dim, (uint32_t)dim);
	}
done:
	free(miss);
	free(ids);
	free(len);
	free(vec);
	return rc;
}

int sh_embed_server_embed(sh_embed_server *s, const char *model,
			  const char *const *texts, const size_t *lens,
			  size_t n, float *out, uint32_t *dim, uint32_t *cached,
			  uint64_t deadline_us, char *err, size_t errlen)
{
	struct embed_model *em = find_model(s, model);
	if (!em)
		return unknown_model(s, model, err, errlen);
	if (dim)
		*dim = em->dim;
	return embed_with(s, em, texts, lens, n, out, cached, deadline_us, err,
			  errlen);
}

/* ---- Operations ---------------------------------------------------------- */

static int op_embed(sh_embed_server *s, const Shoal__V1__Request *rq,
		    uint64_t deadline, Shoal__V1__Response *rs, sh_arena *a,
		    char *err, size_t errlen)
{
	const Shoal__V1__EmbedRequest *r = rq->embed;
	struct embed_model *em = find_model(s, r->model);
	if (!em)
		return unknown_model(s, r->model, err, errlen);
	size_t n = r->n_texts, dim = em->dim;
	size_t *lens = sh_arena_alloc(a, n * sizeof(*lens));
	float *vec = sh_arena_alloc(a, n * dim * sizeof(*vec));
	Shoal__V1__Vector *vs = sh_arena_alloc(a, n * sizeof(*vs));
	Shoal__V1__Vector **vp = sh_arena_alloc(a, n * sizeof(*vp));
	Shoal__V1__EmbedResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!lens || !vec || !vs || !vp || !res)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(r->texts[i]);
	uint32_t cached = 0;
	int rc = embed_with(s, em, (const char *const *)r->texts, lens, n, vec,
			    &cached, deadline, err, errlen);
	if (rc != SH_OK)
		return rc;
	shoal__v1__embed_result__init(res);
	res->model = em->name;
	res->dim = em->dim;
	res->cached = cached;
	res->n_vectors = n;
	res->vectors = vp;
	for (size_t i = 0; i < n; i++) {
		shoal__v1__vector__init(&vs[i]);
		vs[i].n_values = dim;
		vs[i].values = vec + i * dim;
		vp[i] = &vs[i];
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_EMBED;
	rs->embed = res;
	return SH_OK;
}

static void free_response(void *p)
{
	sh_wire_free_response(p);
}

static int op_search_text(sh_embed_server *s, const Shoal__V1__Request *rq,
			  uint64_t deadline, Shoal__V1__Response *rs,
			  sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__SearchTextRequest *r = rq->search_text;
	if (!s->router)
		return sh_errf(err, errlen, SH_EUNSUPPORTED,
			       "search_text needs a router: start shoal-embed "
			       "with --router URL");
	struct embed_model *em = find_model(s, r->model);
	if (!em)
		return unknown_model(s, r->model, err, errlen);
	float *vec = sh_arena_alloc(a, em->dim * sizeof(*vec));
	if (!vec)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	size_t len = strlen(r->text);
	const char *text = r->text;
	int rc =
	    embed_with(s, em, &text, &len, 1, vec, NULL, deadline, err, errlen);
	if (rc != SH_OK)
		return rc;

	uint64_t now = sh_now_us();
	if (now >= deadline)
		return sh_errf(err, errlen, SH_ETIMEDOUT,
			       "deadline passed before the search");
	uint64_t left_ms = (deadline - now + 999) / 1000;
	Shoal__V1__Vector q = SHOAL__V1__VECTOR__INIT;
	q.n_values = em->dim;
	q.values = vec;
	Shoal__V1__Vector *qp = &q;
	Shoal__V1__SearchRequest sr = *r->search;
	sr.n_queries = 1;
	sr.queries = &qp;
	Shoal__V1__Request fw = SHOAL__V1__REQUEST__INIT;
	fw.protocol_version = SH_WIRE_PROTOCOL_VERSION;
	fw.request_id = rq->request_id;
	fw.timeout_ms = (uint32_t)(left_ms > UINT32_MAX ? UINT32_MAX : left_ms);
	fw.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
	fw.search = &sr;
	uint8_t *buf = NULL, *ans = NULL;
	size_t blen = 0, alen = 0;
	if (sh_wire_encode_request(&fw, &buf, &blen) != SH_OK)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	sh_rpc_op *op = NULL;
	char e2[300] = "";
	rc = sh_rpc_start(s->router, buf, blen, (int)fw.timeout_ms, &op);
	free(buf);
	if (rc == SH_OK)
		rc = sh_rpc_finish(op, &ans, &alen, e2, sizeof(e2));
	if (rc != SH_OK) {
		atomic_fetch_add(&s->router_errors, 1);
		return sh_errf(err, errlen, rc, "router %s: %s", s->router_url,
			       *e2 ? e2 : sh_strerror(rc));
	}
	Shoal__V1__Response *rr = NULL;
	rc = sh_wire_decode_response(ans, alen, &s->o.limits, &rr, e2,
				     sizeof(e2));
	free(ans);
	if (rc != SH_OK) {
		atomic_fetch_add(&s->router_errors, 1);
		return sh_errf(err, errlen, SH_EIO, "router %s: %s",
			       s->router_url, e2);
	}
	if (!sh_arena_defer(a, free_response, rr))
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	if (rr->code != SHOAL__V1__ERROR_CODE__OK)
		return sh_errf(err, errlen, (int)rr->code, "router: %s",
			       rr->message && *rr->message
				   ? rr->message
				   : sh_strerror((int)rr->code));
	if (rr->result_case != SHOAL__V1__RESPONSE__RESULT_SEARCH ||
	    !rr->search)
		return sh_errf(err, errlen, SH_EIO,
			       "router answered search without a result");
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_SEARCH_TEXT;
	rs->search_text = rr->search;
	return SH_OK;
}

static int op_health(sh_embed_server *s, Shoal__V1__Response *rs, sh_arena *a,
		     char *err, size_t errlen)
{
	Shoal__V1__HealthResult *h = sh_arena_alloc(a, sizeof(*h));
	if (!h)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	shoal__v1__health_result__init(h);
	int st = sh_embed_server_get_state(s);
	h->status = st == 1   ? SHOAL__V1__HEALTH__SERVING
		    : st == 2 ? SHOAL__V1__HEALTH__STOPPING
			      : SHOAL__V1__HEALTH__STARTING;
	h->version = SHOAL_VERSION;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_HEALTH;
	rs->health = h;
	return SH_OK;
}

static int e_op_index(Shoal__V1__Request__OpCase c)
{
	switch (c) {
	case SHOAL__V1__REQUEST__OP_EMBED:
		return OP_EMBED;
	case SHOAL__V1__REQUEST__OP_SEARCH_TEXT:
		return OP_SEARCH_TEXT;
	case SHOAL__V1__REQUEST__OP_HEALTH:
		return OP_HEALTH;
	default:
		return -1;
	}
}

static int e_state(void *ctx)
{
	return sh_embed_server_get_state(ctx);
}

static int e_run(void *ctx, int op, const Shoal__V1__Request *rq,
		 uint64_t t0_us, Shoal__V1__Response *rs, sh_arena *a,
		 char *err, size_t errlen)
{
	sh_embed_server *s = ctx;
	uint32_t tmo =
	    rq->timeout_ms ? rq->timeout_ms : s->o.default_timeout_ms;
	uint64_t deadline = t0_us + (uint64_t)tmo * 1000;
	if (op == OP_EMBED)
		return op_embed(s, rq, deadline, rs, a, err, errlen);
	if (op == OP_SEARCH_TEXT)
		return op_search_text(s, rq, deadline, rs, a, err, errlen);
	return op_health(s, rs, a, err, errlen);
}

static void e_observe(void *ctx, int op, int code, uint64_t us)
{
	sh_embed_server *s = ctx;
	sh_op_metrics_observe(&s->ops[op], code, us);
}

int sh_embed_server_handle(sh_embed_server *s, const uint8_t *buf, size_t len,
			   uint8_t **out, size_t *outlen)
{
	const sh_dispatch d = {
	    .ctx = s,
	    .limits = &s->o.limits,
	    .component = "shoal-embed",
	    .op_index = e_op_index,
	    .invalid_op = OP_INVALID,
	    .unsupported = "is not served by shoal-embed (data operations go "
			   "to the router)",
	    .state = e_state,
	    .run = e_run,
	    .observe = e_observe,
	    .op_names = op_names,
	};
	return sh_dispatch_handle(&d, buf, len, out, outlen);
}

/* ---- Metrics ------------------------------------------------------------- */

void sh_embed_server_metrics(sh_embed_server *s, FILE *f)
{
	sh_op_metrics_write(s->ops, NOPS, op_names, "shoal_", f);

	static const char *const counters[][2] = {
	    {"shoal_embed_texts_total",
	     "Texts run through the model (cache misses), by model and "
	     "backend."},
	    {"shoal_embed_tokens_total",
	     "Tokens of those texts, [CLS] and [SEP] included."},
	    {"shoal_embed_padded_tokens_total",
	     "Tokens computed, padding to each batch's longest text "
	     "included."},
	    {"shoal_embed_batches_total", "Forward passes."},
	    {"shoal_embed_forward_seconds_total",
	     "Time spent in forward passes."},
	    {"shoal_embed_rejected_total",
	     "Requests refused because the queue was full (EBUSY "
	     "overloaded)."},
	    {"shoal_embed_timeouts_total",
	     "Requests whose deadline passed while queued or computing."},
	    {"shoal_embed_cache_hits_total", "Texts answered from the cache."},
	    {"shoal_embed_cache_misses_total",
	     "Texts looked up in the cache and not found."},
	};
	size_t nc = sizeof(counters) / sizeof(counters[0]);
	for (size_t c = 0; c < nc; c++) {
		sh_metric_head(f, counters[c][0], "counter", counters[c][1]);
		for (size_t i = 0; i < s->nmodels; i++) {
			struct embed_model *em = &s->model[i];
			const struct embed_batcher_stats *st =
			    embed_batcher_stats(em->b);
			uint64_t v = 0;
			double d = -1;
			switch (c) {
			case 0:
				v = atomic_load(&st->texts);
				break;
			case 1:
				v = atomic_load(&st->tokens);
				break;
			case 2:
				v = atomic_load(&st->padded_tokens);
				break;
			case 3:
				v = atomic_load(&st->batches);
				break;
			case 4:
				d = (double)atomic_load(&st->forward_us) * 1e-6;
				break;
			case 5:
				v = atomic_load(&st->rejected);
				break;
			case 6:
				v = atomic_load(&st->timeouts);
				break;
			case 7:
				v = atomic_load(&em->cache_hits);
				break;
			default:
				v = atomic_load(&em->cache_misses);
				break;
			}
			if (d >= 0)
				fprintf(
				    f, "%s{model=\"%s\",backend=\"%s\"} %.6f\n",
				    counters[c][0], em->name,
				    embed_batcher_backend(em->b), d);
			else
				fprintf(
				    f, "%s{model=\"%s\",backend=\"%s\"} %llu\n",
				    counters[c][0], em->name,
				    embed_batcher_backend(em->b),
				    (unsigned long long)v);
		}
	}

	sh_metric_head(f, "shoal_embed_batch_size", "histogram",
		       "Texts per forward pass.");
	for (size_t i = 0; i < s->nmodels; i++) {
		char labels[96];
		snprintf(labels, sizeof(labels), "model=\"%s\"",
			 s->model[i].name);
		sh_size_histogram_write(
		    &embed_batcher_stats(s->model[i].b)->bsize, f,
		    "shoal_embed_batch_size", labels);
	}
	sh_metric_head(
	    f, "shoal_embed_queue_delay_seconds", "histogram",
	    "Wait of a request's texts from queueing to their batch.");
	for (size_t i = 0; i < s->nmodels; i++) {
		char labels[96];
		snprintf(labels, sizeof(labels), "model=\"%s\"",
			 s->model[i].name);
		sh_histogram_write(
		    &embed_batcher_stats(s->model[i].b)->queue_delay, f,
		    "shoal_embed_queue_delay_seconds", labels);
	}
	sh_metric_head(f, "shoal_embed_forward_duration_seconds", "histogram",
		       "One forward pass.");
	for (size_t i = 0; i < s->nmodels; i++) {
		char labels[128];
		snprintf(labels, sizeof(labels), "model=\"%s\",backend=\"%s\"",
			 s->model[i].name,
			 embed_batcher_backend(s->model[i].b));
		sh_histogram_write(&embed_batcher_stats(s->model[i].b)->forward,
				   f, "shoal_embed_forward_duration_seconds",
				   labels);
	}
	sh_metric_head(f, "shoal_embed_queue_texts", "gauge",
		       "Texts waiting for a batch now.");
	for (size_t i = 0; i < s->nmodels; i++)
		fprintf(f, "shoal_embed_queue_texts{model=\"%s\"} %zu\n",
			s->model[i].name, embed_batcher_queued(s->model[i].b));
	size_t ce = 0, cb = 0;
	embed_cache_stats(s->cache, &ce, &cb);
	sh_metric_head(f, "shoal_embed_cache_entries", "gauge",
		       "Vectors in the cache.");
	fprintf(f, "shoal_embed_cache_entries %zu\n", ce);
	sh_metric_head(f, "shoal_embed_cache_bytes", "gauge",
		       "Memory held by the cache.");
	fprintf(f, "shoal_embed_cache_bytes %zu\n", cb);
	sh_metric_head(f, "shoal_embed_router_errors_total", "counter",
		       "search_text calls the router did not answer.");
	fprintf(f, "shoal_embed_router_errors_total %llu\n",
		(unsigned long long)atomic_load(&s->router_errors));
}
