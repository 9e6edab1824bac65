/* libshoal: the embedding tier (shoal-embed): texts to vectors, and search
 * by text. See shoal.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "client_impl.h"

struct shoal_embedder {
	size_t n;
	shoal_client **c;
	char **urls;
	uint64_t *seed; /* xxh64 of each URL: the rendezvous key */
};

void shoal_embedder_close(shoal_embedder *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n; i++) {
		shoal_close(e->c[i]);
		free(e->urls[i]);
	}
	free(e->c);
	free(e->urls);
	free(e->seed);
	free(e);
}

int shoal_embedder_connect(const char *const *urls, size_t n, int timeout_ms,
			   shoal_embedder **out)
{
	if (!out)
		return client_fail(SHOAL_EINVAL, "out is NULL");
	*out = NULL;
	if (!urls || n == 0 || n > 1024)
		return client_fail(SHOAL_EINVAL,
				   "embedder: 1..1024 server URLs needed");
	shoal_embedder *e = calloc(1, sizeof(*e));
	if (e) {
		e->c = calloc(n, sizeof(*e->c));
		e->urls = calloc(n, sizeof(*e->urls));
		e->seed = calloc(n, sizeof(*e->seed));
	}
	if (!e || !e->c || !e->urls || !e->seed) {
		shoal_embedder_close(e);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		if (!urls[i] || !(e->urls[i] = strdup(urls[i]))) {
			e->n = i;
			shoal_embedder_close(e);
			return client_fail(urls[i] ? SHOAL_ENOMEM
						   : SHOAL_EINVAL,
					   "embedder: bad URL %zu", i);
		}
		e->seed[i] = XXH64(urls[i], strlen(urls[i]), 0);
		int rc = shoal_connect(urls[i], timeout_ms, &e->c[i]);
		e->n = i + 1;
		if (rc) {
			shoal_embedder_close(e);
			return rc; /* shoal_connect set the message */
		}
	}
	*out = e;
	return client_ok();
}

/* Rendezvous (highest random weight) hashing: every server scores the
 * model's name with its own seed and the highest wins, so a model stays on
 * one server, and adding a server moves only the models it now wins. */
static size_t server_index(const shoal_embedder *e, const char *model)
{
	size_t best = 0;
	uint64_t top = 0;
	size_t len = strlen(model);
	for (size_t i = 0; i < e->n; i++) {
		uint64_t h = XXH64(model, len, e->seed[i]);
		if (i == 0 || h > top) {
			top = h;
			best = i;
		}
	}
	return best;
}

const char *shoal_embedder_server_for(const shoal_embedder *e,
				      const char *model)
{
	return e && e->n ? e->urls[server_index(e, model ? model : "")] : NULL;
}

void shoal_embeddings_free(shoal_embeddings *r)
{
	if (!r)
		return;
	free(r->vectors);
	free(r);
}

int shoal_embed(shoal_embedder *e, const char *model, const char *const *texts,
		size_t n, shoal_embeddings **out)
{
	if (!e || !out || (n && !texts))
		return client_fail(SHOAL_EINVAL, "embed: NULL argument");
	*out = NULL;
	model = model ? model : "";
	for (size_t i = 0; i < n; i++)
		if (!texts[i])
			return client_fail(SHOAL_EINVAL,
					   "embed: texts[%zu] is "
					   "NULL",
					   i);
	Shoal__V1__EmbedRequest er = SHOAL__V1__EMBED_REQUEST__INIT;
	er.model = (char *)model;
	er.texts = (char **)texts;
	er.n_texts = n;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_EMBED;
	req.embed = &er;
	Shoal__V1__Response *resp;
	int rc = client_call(e->c[server_index(e, model)], &req, 0,
			     SHOAL__V1__RESPONSE__RESULT_EMBED, &resp);
	if (rc)
		return rc;
	const Shoal__V1__EmbedResult *res = resp->embed;
	if (!res || res->n_vectors != n || res->dim == 0 ||
	    res->dim > SH_WIRE_MAX_DIM) {
		sh_wire_free_response(resp);
		return client_fail(SHOAL_EINVAL,
				   "malformed response: %zu "
				   "vectors for %zu texts",
				   res ? res->n_vectors : 0, n);
	}
	shoal_embeddings *r = calloc(1, sizeof(*r));
	float *v = malloc((n ? n : 1) * res->dim * sizeof(float));
	if (!r || !v) {
		free(r);
		free(v);
		sh_wire_free_response(resp);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		if (!res->vectors[i] || res->vectors[i]->n_values != res->dim) {
			free(r);
			free(v);
			sh_wire_free_response(resp);
			return client_fail(SHOAL_EINVAL,
					   "malformed response: vector %zu "
					   "is not of dimension %u",
					   i, res->dim);
		}
		memcpy(v + i * res->dim, res->vectors[i]->values,
		       res->dim * sizeof(float));
	}
	r->vectors = v;
	r->n = n;
	r->dim = res->dim;
	r->cached = res->cached;
	snprintf(r->model, sizeof(r->model), "%s", client_str(res->model));
	sh_wire_free_response(resp);
	*out = r;
	return client_ok();
}

int shoal_search_text(shoal_embedder *e, const char *model,
		      const char *collection, const char *text,
		      const shoal_search_options *opt,
		      shoal_search_result **out)
{
	if (!e || !collection || !text || !out)
		return client_fail(SHOAL_EINVAL, "search_text: NULL argument");
	*out = NULL;
	model = model ? model : "";
	const shoal_search_options defaults = SHOAL_SEARCH_OPTIONS_INIT;
	if (!opt)
		opt = &defaults;
	uint32_t k = opt->k ? opt->k : 10;
	Shoal__V1__Filter *wf = NULL;
	int rc = client_filter_to_wire(opt->filter, &wf);
	if (rc)
		return rc;
	Shoal__V1__SearchRequest sr = SHOAL__V1__SEARCH_REQUEST__INIT;
	sr.collection = (char *)collection;
	sr.k = k;
	sr.ef = opt->ef;
	sr.filter = wf;
	sr.with_payload = opt->with_payload;
	sr.with_vector = opt->with_vector;
	sr.min_coverage = opt->min_coverage;
	sr.exact = opt->exact;
	Shoal__V1__SearchTextRequest st = SHOAL__V1__SEARCH_TEXT_REQUEST__INIT;
	st.model = (char *)model;
	st.text = (char *)text;
	st.search = &sr;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_SEARCH_TEXT;
	req.search_text = &st;
	req.timeout_ms = opt->timeout_ms;
	Shoal__V1__Response *resp;
	rc = client_call(e->c[server_index(e, model)], &req, opt->timeout_ms,
			 SHOAL__V1__RESPONSE__RESULT_SEARCH_TEXT, &resp);
	if (rc == SHOAL_OK)
		rc = client_search_result_from_proto(resp, resp->search_text, 1,
						     k, out);
	sh_wire_filter_free(wf);
	return rc;
}
