/* shoal-embed's server core, in process (requests encoded as on the wire,
 * handed to sh_embed_server_handle) and as a real process over nng.
 * Skips (77) when the model is not installed. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "bert.h"
#include "error.h"
#include "metrics.h"
#include "embed_server.h"
#include "wire.h"
#if EMBED_TEST_PROCESS
#include "nodeproc.h"
#include "rpc.h"
#endif

static const char *model_dir;

static const char *const texts[] = {
    "red running shoes",
    "waterproof hiking boots for men",
    "a leather handbag",
    "wooden dining table with four chairs",
    "wool winter coat",
    "cotton t-shirt, size M",
    "stainless steel kitchen knife set",
    "children's backpack with zipper",
    "ergonomic office chair",
    "silk scarf",
    "noise cancelling headphones",
    "linen bed sheets, queen size",
    "ceramic coffee mug",
    "denim jacket",
    "folding camping stool",
    "a small bookshelf of pine",
};
#define NTEXTS (sizeof(texts) / sizeof(texts[0]))

/* Reference vectors: the CPU backend run directly, one text at a time. */
static float ref[NTEXTS][384];
static uint32_t ref_dim;

static void compute_refs(void)
{
	char err[512];
	struct sh_bert_model *m = NULL;
	struct sh_wordpiece *t = NULL;
	void *ctx = NULL;
	if (sh_bert_load(model_dir, &m, err, sizeof(err)) ||
	    sh_wordpiece_load(model_dir, &t, err, sizeof(err)) ||
	    sh_bert_cpu.create(m, 1, SH_BERT_MAX_TOKENS, &ctx, err,
			       sizeof(err))) {
		fprintf(stderr, "reference: %s\n", err);
		exit(1);
	}
	ref_dim = (uint32_t)m->cfg.hidden;
	if (ref_dim != 384) {
		fprintf(stderr, "reference: dim %u\n", ref_dim);
		exit(1);
	}
	for (size_t i = 0; i < NTEXTS; i++) {
		int32_t ids[SH_BERT_MAX_TOKENS];
		int n = 0;
		if (sh_wordpiece_encode(t, texts[i], strlen(texts[i]), ids,
					SH_BERT_MAX_TOKENS, &n, err,
					sizeof(err))) {
			fprintf(stderr, "reference: %s\n", err);
			exit(1);
		}
		struct sh_bert_batch b = {
		    .n = 1, .seq = n, .ids = ids, .len = &n};
		if (sh_bert_cpu.forward(ctx, &b, ref[i], err, sizeof(err))) {
			fprintf(stderr, "reference: %s\n", err);
			exit(1);
		}
	}
	sh_bert_cpu.destroy(ctx);
	sh_wordpiece_free(t);
	sh_bert_free(m);
}

static double cosine(const float *a, const float *b, size_t n)
{
	double d = 0, na = 0, nb = 0;
	for (size_t i = 0; i < n; i++) {
		d += (double)a[i] * b[i];
		na += (double)a[i] * a[i];
		nb += (double)b[i] * b[i];
	}
	return d / (sqrt(na) * sqrt(nb) + 1e-30);
}

static sh_embed_server *open_server(int max_batch, uint64_t delay_us,
				    size_t max_queue, size_t cache,
				    bool batching)
{
	sh_embed_model_spec spec = {.name = "minilm", .dir = model_dir};
	sh_embed_opts o;
	sh_embed_opts_default(&o);
	o.models = &spec;
	o.nmodels = 1;
	o.backend = SH_EMBED_BACKEND_CPU;
	o.max_batch = max_batch;
	o.max_queue_delay_us = delay_us;
	o.max_queue = max_queue;
	o.cache_entries = cache;
	o.batching = batching;
	sh_embed_server *s = NULL;
	char err[512];
	int rc = sh_embed_server_open(&o, &s, err, sizeof(err));
	if (rc)
		fail_msg("open: %s", err);
	sh_embed_server_set_state(s, 1);
	return s;
}

/* Sends an embed request of texts[0..n) to s; returns the response. */
static Shoal__V1__Response *call(sh_embed_server *s, Shoal__V1__Request *rq)
{
	uint8_t *buf = NULL, *out = NULL;
	size_t len = 0, outlen = 0;
	rq->protocol_version = SH_WIRE_PROTOCOL_VERSION;
	assert_int_equal(sh_wire_encode_request(rq, &buf, &len), SH_OK);
	assert_int_equal(sh_embed_server_handle(s, buf, len, &out, &outlen),
			 SH_OK);
	free(buf);
	Shoal__V1__Response *rs = NULL;
	char err[256];
	assert_int_equal(
	    sh_wire_decode_response(out, outlen, NULL, &rs, err, sizeof(err)),
	    SH_OK);
	free(out);
	return rs;
}

static Shoal__V1__Response *embed(sh_embed_server *s, const char *model,
				  const char *const *t, size_t n,
				  uint32_t timeout_ms)
{
	Shoal__V1__EmbedRequest er = SHOAL__V1__EMBED_REQUEST__INIT;
	er.model = (char *)(model ? model : "");
	er.n_texts = n;
	er.texts = (char **)t;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.request_id = 7;
	rq.timeout_ms = timeout_ms;
	rq.op_case = SHOAL__V1__REQUEST__OP_EMBED;
	rq.embed = &er;
	return call(s, &rq);
}

/* Checks an EmbedResult of texts[idx[0..n)] against the references. */
static void check_vectors(const Shoal__V1__Response *rs, const size_t *idx,
			  size_t n)
{
	if (rs->code != 0)
		fail_msg("code %d: %s", rs->code, rs->message);
	assert_int_equal(rs->result_case, SHOAL__V1__RESPONSE__RESULT_EMBED);
	assert_int_equal(rs->embed->dim, ref_dim);
	assert_int_equal(rs->embed->n_vectors, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(rs->embed->vectors[i]->n_values, ref_dim);
		double c =
		    cosine(rs->embed->vectors[i]->values, ref[idx[i]], ref_dim);
		if (c < 0.9999)
			fail_msg("text %zu: cosine %.6f", idx[i], c);
	}
}

/* The value of a metric line that starts with prefix, or -1. */
static double metric(sh_embed_server *s, const char *prefix)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	sh_embed_server_metrics(s, f);
	fclose(f);
	double v = -1;
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');
		if (!strncmp(line, prefix, strlen(prefix)))
			v = strtod(line + strlen(prefix), NULL);
		line = nl ? nl + 1 : NULL;
	}
	free(text);
	return v;
}

static void test_embed_one_text_equals_backend(void **st)
{
	(void)st;
	sh_embed_server *s = open_server(8, 2000, 4096, 1000, true);
	size_t idx = 1;
	Shoal__V1__Response *rs = embed(s, NULL, &texts[1], 1, 0);
	check_vectors(rs, &idx, 1);
	assert_string_equal(rs->embed->model, "minilm");
	assert_int_equal(rs->embed->cached, 0);
	sh_wire_free_response(rs);
	sh_embed_server_close(s);
}

static void test_embed_many_texts_span_several_batches(void **st)
{
	(void)st;
	sh_embed_server *s = open_server(4, 1000, 4096, 1000, true);
	size_t idx[NTEXTS];
	for (size_t i = 0; i < NTEXTS; i++)
		idx[i] = i;
	Shoal__V1__Response *rs = embed(s, "minilm", texts, NTEXTS, 0);
	check_vectors(rs, idx, NTEXTS);
	sh_wire_free_response(rs);
	double batches = metric(s, "shoal_embed_batches_total{model=\"minilm\""
				   ",backend=\"cpu\"} ");
	assert_true(batches >= (double)(NTEXTS / 4));
	assert_true(metric(s, "shoal_embed_texts_total{model=\"minilm\","
			      "backend=\"cpu\"} ") == (double)NTEXTS);
	sh_embed_server_close(s);
}

static void test_repeated_texts_come_from_cache(void **st)
{
	(void)st;
	sh_embed_server *s = open_server(8, 1000, 4096, 1000, true);
	size_t idx[3] = {2, 3, 4};
	Shoal__V1__Response *rs = embed(s, NULL, texts + 2, 3, 0);
	check_vectors(rs, idx, 3);
	assert_int_equal(rs->embed->cached, 0);
	sh_wire_free_response(rs);
	rs = embed(s, NULL, texts + 2, 3, 0);
	check_vectors(rs, idx, 3);
	assert_int_equal(rs->embed->cached, 3);
	sh_wire_free_response(rs);
	assert_true(metric(s, "shoal_embed_cache_hits_total{model=\"minilm\""
			      ",backend=\"cpu\"} ") == 3.0);
	assert_true(metric(s, "shoal_embed_texts_total{model=\"minilm\","
			      "backend=\"cpu\"} ") == 3.0);
	assert_true(metric(s, "shoal_embed_cache_entries ") == 3.0);
	assert_true(
	    metric(s, "shoal_requests_total{op=\"embed\",code=\"OK\"} ") ==
	    2.0);
	assert_true(metric(s, "shoal_request_duration_seconds_count"
			      "{op=\"embed\"} ") == 2.0);
	sh_embed_server_close(s);
}

static void test_cache_byte_bound_evicts(void **st)
{
	(void)st;
	sh_embed_model_spec spec = {.name = "minilm", .dir = model_dir};
	sh_embed_opts o;
	sh_embed_opts_default(&o);
	o.models = &spec;
	o.nmodels = 1;
	o.backend = SH_EMBED_BACKEND_CPU;
	o.max_batch = 16;
	o.cache_entries = 1000;
	/* 2000 bytes per shard: one 384-float vector (1.5 KiB) and its key
	 * fit, two do not. */
	o.cache_bytes = 16 * 2000;
	sh_embed_server *s = NULL;
	char err[512];
	if (sh_embed_server_open(&o, &s, err, sizeof(err)))
		fail_msg("open: %s", err);
	sh_embed_server_set_state(s, 1);
	size_t idx[NTEXTS];
	for (size_t i = 0; i < NTEXTS; i++)
		idx[i] = i;
	Shoal__V1__Response *rs = embed(s, NULL, texts, NTEXTS, 0);
	check_vectors(rs, idx, NTEXTS);
	sh_wire_free_response(rs);
	double n = metric(s, "shoal_embed_cache_entries ");
	/* 16 texts over 16 shards: some shard got two and kept one. */
	assert_true(n >= 1.0 && n < (double)NTEXTS);
	sh_embed_server_close(s);
}

static void expect_code(sh_embed_server *s, Shoal__V1__Request *rq, int code,
			const char *needle)
{
	Shoal__V1__Response *rs = call(s, rq);
	if ((int)rs->code != code)
		fail_msg("expected %s, got %s: %s", sh_errname(code),
			 sh_errname((int)rs->code), rs->message);
	if (needle && !strstr(rs->message, needle))
		fail_msg("message '%s' lacks '%s'", rs->message, needle);
	sh_wire_free_response(rs);
}

static void test_bad_input_gets_its_code_and_server_keeps_working(void **st)
{
	(void)st;
	sh_embed_server *s = open_server(8, 1000, 4096, 0, true);
	Shoal__V1__EmbedRequest er = SHOAL__V1__EMBED_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_EMBED;
	rq.embed = &er;
	er.model = "";

	/* empty list */
	er.n_texts = 0;
	expect_code(s, &rq, SH_EINVAL, "at least one text");

	/* 1025 texts */
	char **many = calloc(SH_WIRE_MAX_TEXTS + 1, sizeof(*many));
	for (size_t i = 0; i <= SH_WIRE_MAX_TEXTS; i++)
		many[i] = "a";
	er.n_texts = SH_WIRE_MAX_TEXTS + 1;
	er.texts = many;
	expect_code(s, &rq, SH_ETOOBIG, "texts");
	free(many);

	/* a text over 64 KiB */
	char *big = malloc(SH_WIRE_MAX_TEXT + 2);
	memset(big, 'x', SH_WIRE_MAX_TEXT + 1);
	big[SH_WIRE_MAX_TEXT + 1] = 0;
	char *one[1] = {big};
	er.n_texts = 1;
	er.texts = one;
	expect_code(s, &rq, SH_ETOOBIG, "texts[0]");
	free(big);

	/* invalid UTF-8 */
	char bad[] = "caf\xc3 \xff\xfe";
	one[0] = bad;
	expect_code(s, &rq, SH_EINVAL, "UTF-8");

	/* unknown model */
	one[0] = "red shoes";
	er.model = "nosuchmodel";
	expect_code(s, &rq, SH_ENOTFOUND, "minilm");
	er.model = "";

	/* search_text without a router */
	Shoal__V1__SearchRequest sr = SHOAL__V1__SEARCH_REQUEST__INIT;
	sr.collection = "products";
	sr.k = 5;
	Shoal__V1__SearchTextRequest str = SHOAL__V1__SEARCH_TEXT_REQUEST__INIT;
	str.model = "";
	str.text = "red shoes";
	str.search = &sr;
	Shoal__V1__Request rq2 = SHOAL__V1__REQUEST__INIT;
	rq2.op_case = SHOAL__V1__REQUEST__OP_SEARCH_TEXT;
	rq2.search_text = &str;
	expect_code(s, &rq2, SH_EUNSUPPORTED, "--router");

	/* a data operation */
	Shoal__V1__CountRequest cr = SHOAL__V1__COUNT_REQUEST__INIT;
	cr.collection = "products";
	Shoal__V1__Request rq3 = SHOAL__V1__REQUEST__INIT;
	rq3.op_case = SHOAL__V1__REQUEST__OP_COUNT;
	rq3.count = &cr;
	expect_code(s, &rq3, SH_EUNSUPPORTED, "router");

	/* garbage bytes */
	uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0x02};
	uint8_t *out = NULL;
	size_t outlen = 0;
	assert_int_equal(
	    sh_embed_server_handle(s, junk, sizeof(junk), &out, &outlen),
	    SH_OK);
	free(out);

	/* and a good request still works */
	size_t idx = 0;
	Shoal__V1__Response *rs = embed(s, NULL, texts, 1, 0);
	check_vectors(rs, &idx, 1);
	sh_wire_free_response(rs);
	sh_embed_server_close(s);
}

struct worker {
	sh_embed_server *s;
	int id;
	int bad;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < 50; i++) {
		size_t k = (size_t)(w->id * 7 + i) % NTEXTS;
		Shoal__V1__Response *rs = embed(w->s, NULL, &texts[k], 1, 0);
		if (rs->code != 0 || rs->embed->n_vectors != 1 ||
		    cosine(rs->embed->vectors[0]->values, ref[k], ref_dim) <
			0.9999)
			w->bad++;
		sh_wire_free_response(rs);
	}
	return NULL;
}

static void test_concurrent_requests_each_get_their_vectors(void **st)
{
	(void)st;
	/* No cache: every request goes through the batcher. */
	sh_embed_server *s = open_server(16, 2000, 4096, 0, true);
	pthread_t th[8];
	struct worker w[8];
	for (int i = 0; i < 8; i++) {
		w[i] = (struct worker){.s = s, .id = i};
		assert_int_equal(
		    pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].bad, 0);
	}
	double texts_done = metric(
	    s, "shoal_embed_texts_total{model=\"minilm\",backend=\"cpu\"} ");
	double batches = metric(
	    s, "shoal_embed_batches_total{model=\"minilm\",backend=\"cpu\"} ");
	assert_true(texts_done == 400.0);
	/* Concurrent single-text requests were batched together. */
	assert_true(batches < 400.0);
	print_message("400 requests in %.0f forward passes\n", batches);
	sh_embed_server_close(s);
}

struct slow {
	sh_embed_server *s;
	int code;
};

static void *slow_main(void *arg)
{
	struct slow *w = arg;
	Shoal__V1__Response *rs = embed(w->s, NULL, texts, 3, 0);
	w->code = (int)rs->code;
	sh_wire_free_response(rs);
	return NULL;
}

static void test_full_queue_is_ebusy_and_deadline_is_etimedout(void **st)
{
	(void)st;
	/* A batch of 4 waits up to 600 ms for its fourth text, so the 3
	 * texts of the first request stay queued meanwhile. */
	sh_embed_server *s = open_server(4, 600000, 4, 0, true);
	struct slow w = {.s = s};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, slow_main, &w), 0);
	usleep(150000);
	Shoal__V1__Response *rs = embed(s, NULL, texts + 3, 2, 0);
	if ((int)rs->code != SH_EBUSY)
		fail_msg("expected EBUSY, got %s: %s",
			 sh_errname((int)rs->code), rs->message);
	assert_non_null(strstr(rs->message, "overloaded"));
	sh_wire_free_response(rs);
	pthread_join(th, NULL);
	assert_int_equal(w.code, 0);
	assert_true(metric(s, "shoal_embed_rejected_total{model=\"minilm\","
			      "backend=\"cpu\"} ") == 1.0);

	sh_embed_server_close(s);

	/* Alone in the queue of a new server (no pass yet has told the
	 * batcher who comes back, so it waits the delay for company), a
	 * 50 ms deadline passes before the batch. */
	s = open_server(4, 600000, 4, 0, true);
	rs = embed(s, NULL, texts, 1, 50);
	assert_int_equal(rs->code, SH_ETIMEDOUT);
	sh_wire_free_response(rs);
	/* The server is unharmed. */
	rs = embed(s, NULL, texts, 4, 0);
	assert_int_equal(rs->code, 0);
	sh_wire_free_response(rs);
	sh_embed_server_close(s);
}

static void test_no_batching_runs_each_request_alone(void **st)
{
	(void)st;
	sh_embed_server *s = open_server(16, 2000, 4096, 0, false);
	pthread_t th[4];
	struct worker w[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){.s = s, .id = i};
		assert_int_equal(
		    pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].bad, 0);
	}
	assert_true(metric(s, "shoal_embed_batches_total{model=\"minilm\","
			      "backend=\"cpu\"} ") == 200.0);
	sh_embed_server_close(s);
}

/* A stand-in router on inproc: answers the first search with one hit and
 * the second with EDIM, and checks what shoal-embed sent. */
struct fake_router {
	nng_socket sock;
	int searches_ok; /* well-formed searches received */
	float first;	 /* queries[0].values[0] of the first */
};

static void *fake_router_main(void *arg)
{
	struct fake_router *fr = arg;
	for (int i = 0; i < 2; i++) {
		char *buf = NULL;
		size_t len = 0;
		if (nng_recv(fr->sock, &buf, &len, NNG_FLAG_ALLOC) != 0)
			return NULL;
		Shoal__V1__Request *rq = NULL;
		char err[256];
		int rc = sh_wire_decode_request((uint8_t *)buf, len, NULL, &rq,
						err, sizeof(err));
		nng_free(buf, len);
		if (rc == SH_OK &&
		    rq->op_case == SHOAL__V1__REQUEST__OP_SEARCH &&
		    rq->search->n_queries == 1 &&
		    rq->search->queries[0]->n_values == 384 &&
		    rq->search->k == 5 &&
		    !strcmp(rq->search->collection, "products") &&
		    rq->timeout_ms > 0) {
			fr->searches_ok++;
			if (i == 0)
				fr->first = rq->search->queries[0]->values[0];
		}
		uint8_t *out = NULL;
		size_t outlen = 0;
		if (i == 0) {
			Shoal__V1__Response rs;
			sh_wire_response_init(&rs, rq ? rq->request_id : 0, 1);
			Shoal__V1__PointId id = SHOAL__V1__POINT_ID__INIT;
			id.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
			id.num = 42;
			Shoal__V1__Hit hit = SHOAL__V1__HIT__INIT;
			hit.id = &id;
			hit.distance = 0.25f;
			Shoal__V1__Hit *hp = &hit;
			Shoal__V1__QueryHits qh = SHOAL__V1__QUERY_HITS__INIT;
			qh.n_hits = 1;
			qh.hits = &hp;
			Shoal__V1__QueryHits *qp = &qh;
			Shoal__V1__SearchResult sr =
			    SHOAL__V1__SEARCH_RESULT__INIT;
			sr.n_results = 1;
			sr.results = &qp;
			rs.result_case = SHOAL__V1__RESPONSE__RESULT_SEARCH;
			rs.search = &sr;
			sh_wire_encode_response(&rs, &out, &outlen);
		} else {
			sh_wire_error_response(rq ? rq->request_id : 0, 1,
					       SH_EDIM,
					       "384 dimensions; collection "
					       "products has 128",
					       &out, &outlen);
		}
		sh_wire_free_request(rq);
		nng_send(fr->sock, out, outlen, 0);
		free(out);
	}
	return NULL;
}

static void test_search_text_goes_through_the_router(void **st)
{
	(void)st;
	struct fake_router fr = {0};
	assert_int_equal(nng_rep0_open(&fr.sock), 0);
	assert_int_equal(
	    nng_listen(fr.sock, "inproc://embed-test-router", NULL, 0), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, fake_router_main, &fr), 0);

	sh_embed_model_spec spec = {.name = "minilm", .dir = model_dir};
	sh_embed_opts o;
	sh_embed_opts_default(&o);
	o.models = &spec;
	o.nmodels = 1;
	o.backend = SH_EMBED_BACKEND_CPU;
	o.max_batch = 8;
	o.router = "inproc://embed-test-router";
	sh_embed_server *s = NULL;
	char err[512];
	if (sh_embed_server_open(&o, &s, err, sizeof(err)))
		fail_msg("open: %s", err);
	sh_embed_server_set_state(s, 1);

	Shoal__V1__SearchRequest sr = SHOAL__V1__SEARCH_REQUEST__INIT;
	sr.collection = "products";
	sr.k = 5;
	Shoal__V1__SearchTextRequest str = SHOAL__V1__SEARCH_TEXT_REQUEST__INIT;
	str.model = "minilm";
	str.text = (char *)texts[0];
	str.search = &sr;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_SEARCH_TEXT;
	rq.search_text = &str;
	Shoal__V1__Response *rs = call(s, &rq);
	if (rs->code != 0)
		fail_msg("search_text: %s", rs->message);
	assert_int_equal(rs->result_case,
			 SHOAL__V1__RESPONSE__RESULT_SEARCH_TEXT);
	assert_int_equal(rs->search_text->n_results, 1);
	assert_int_equal(rs->search_text->results[0]->n_hits, 1);
	assert_int_equal(rs->search_text->results[0]->hits[0]->id->num, 42);
	sh_wire_free_response(rs);
	/* The router's error comes back as is (the text is cached now). */
	rs = call(s, &rq);
	assert_int_equal(rs->code, SH_EDIM);
	assert_non_null(strstr(rs->message, "has 128"));
	sh_wire_free_response(rs);
	pthread_join(th, NULL);
	assert_int_equal(fr.searches_ok, 2);
	assert_true(fabsf(fr.first - ref[0][0]) < 1e-4f);
	sh_embed_server_close(s);
	nng_close(fr.sock);
}

#if EMBED_TEST_PROCESS
static void test_process_embeds_over_nng(void **st)
{
	(void)st;
	char dir[512], data[600], model[700];
	np_tmpdir(dir, sizeof(dir));
	snprintf(data, sizeof(data), "%s/embed", dir);
	snprintf(model, sizeof(model), "minilm=%s", model_dir);
	const char *extra[] = {"--model",     model, "--backend", "cpu",
			       "--max-batch", "8",   NULL};
	nodeproc p;
	if (np_start_bin(&p, "SHOAL_EMBED_BIN", data, extra) != 0)
		fail_msg("shoal-embed did not start");
	sh_rpc *c = NULL;
	char err[256];
	assert_int_equal(sh_rpc_dial(p.url, 20000, 0, &c, err, sizeof(err)),
			 SH_OK);
	Shoal__V1__EmbedRequest er = SHOAL__V1__EMBED_REQUEST__INIT;
	er.model = "minilm";
	er.n_texts = 2;
	er.texts = (char **)texts + 5;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_EMBED;
	rq.embed = &er;
	for (int round = 0; round < 2; round++) {
		Shoal__V1__Response *rs = np_call(c, &rq);
		size_t idx[2] = {5, 6};
		check_vectors(rs, idx, 2);
		assert_int_equal(rs->embed->cached, round ? 2 : 0);
		sh_wire_free_response(rs);
	}
	int status = 0;
	char *body = np_http_get(&p, "/metrics", &status);
	assert_non_null(body);
	assert_non_null(strstr(body, "shoal_embed_cache_hits_total{model="
				     "\"minilm\",backend=\"cpu\"} 2"));
	free(body);
	body = np_http_get(&p, "/healthz", &status);
	assert_int_equal(status, 200);
	free(body);
	sh_rpc_close(c);
	int ws = np_stop(&p, SIGTERM);
	assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	np_rmrf(dir);
}
#endif

int main(void)
{
	model_dir = getenv("SHOAL_MODEL_DIR");
	struct stat sb;
	char cfg[1024];
	snprintf(cfg, sizeof(cfg), "%s/config.json",
		 model_dir ? model_dir : "");
	if (!model_dir || stat(cfg, &sb) != 0) {
		printf("SKIP: no model at %s (deploy/fetch-model.sh)\n",
		       model_dir ? model_dir : "$SHOAL_MODEL_DIR");
		return 77;
	}
	compute_refs();
	const struct CMUnitTest tests[] =
	{ cmocka_unit_test(test_embed_one_text_equals_backend),
	  cmocka_unit_test(test_embed_many_texts_span_several_batches),
	  cmocka_unit_test(test_repeated_texts_come_from_cache),
	  cmocka_unit_test(test_cache_byte_bound_evicts),
	  cmocka_unit_test(
	      test_bad_input_gets_its_code_and_server_keeps_working),
	  cmocka_unit_test(test_concurrent_requests_each_get_their_vectors),
	  cmocka_unit_test(test_full_queue_is_ebusy_and_deadline_is_etimedout),
	  cmocka_unit_test(test_no_batching_runs_each_request_alone),
	  cmocka_unit_test(test_search_text_goes_through_the_router),
#if EMBED_TEST_PROCESS
	  cmocka_unit_test(test_process_embeds_over_nng),
#endif
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
