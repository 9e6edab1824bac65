/* libshoal: k-nearest-neighbour search, one query or a batch. See
 * shoal.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client_impl.h"

void shoal_search_result_free(shoal_search_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_queries; i++)
		free(r->queries[i].hits);
	free(r->queries);
	sh_wire_free_response(r->internal_);
	free(r);
}

/* Fills one query's hits from the response (untrusted: at most k hits). */
static int query_from_proto(const Shoal__V1__QueryHits *in, uint32_t k,
			    shoal_query_result *out, size_t q)
{
	if (in->n_hits > k)
		return client_fail(SHOAL_EINVAL,
				   "malformed response: %zu hits for k %u in "
				   "results[%zu]",
				   in->n_hits, k, q);
	if (in->stats) {
		out->plan = (int)in->stats->plan;
		out->estimated_passing = in->stats->estimated_passing;
		out->distances = in->stats->distances;
		out->unindexed_filter = in->stats->unindexed_filter;
	}
	out->hits = calloc(in->n_hits ? in->n_hits : 1, sizeof(*out->hits));
	if (!out->hits)
		return client_fail(SHOAL_ENOMEM, "out of memory");
	for (size_t i = 0; i < in->n_hits; i++) {
		const Shoal__V1__Hit *h = in->hits[i];
		shoal_hit *d = &out->hits[i];
		if (!client_id_from_proto(h->id, &d->id))
			return client_fail(SHOAL_EINVAL,
					   "malformed response: results[%zu]."
					   "hits[%zu] has no valid id",
					   q, i);
		d->distance = h->distance;
		d->payload_json = client_str(h->payload_json);
		d->vector = h->n_vector ? h->vector : NULL;
		d->dim = h->vector ? h->n_vector : 0;
		d->version = h->version;
	}
	out->n_hits = in->n_hits;
	return SHOAL_OK;
}

int client_search_result_from_proto(Shoal__V1__Response *resp,
				    const Shoal__V1__SearchResult *res,
				    size_t nq, uint32_t k,
				    shoal_search_result **out)
{
	if (!res || res->n_results != nq) {
		size_t got = res ? res->n_results : 0;
		sh_wire_free_response(resp);
		return client_fail(SHOAL_EINVAL,
				   "malformed response: %zu results for %zu "
				   "queries",
				   got, nq);
	}
	shoal_search_result *r = calloc(1, sizeof(*r));
	if (!r) {
		sh_wire_free_response(resp);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	r->internal_ = resp;
	r->nodes_answered = res->nodes_answered;
	r->nodes_asked = res->nodes_asked;
	r->queries = calloc(nq ? nq : 1, sizeof(*r->queries));
	if (!r->queries) {
		shoal_search_result_free(r);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	r->n_queries = nq;
	int rc = SHOAL_OK;
	for (size_t q = 0; q < nq && !rc; q++)
		rc = query_from_proto(res->results[q], k, &r->queries[q], q);
	if (rc) {
		shoal_search_result_free(r);
		return rc;
	}
	*out = r;
	return client_ok();
}

int shoal_search_batch(shoal_client *c, const char *collection,
		       const float *vectors, size_t nq, size_t dim,
		       const shoal_search_options *opt,
		       shoal_search_result **out)
{
	int rc = client_check(c, collection, out);
	if (rc)
		return rc;
	*out = NULL;
	const shoal_search_options defaults = SHOAL_SEARCH_OPTIONS_INIT;
	if (!opt)
		opt = &defaults;
	if (nq && dim && !vectors)
		return client_fail(SHOAL_EINVAL, "vectors is NULL");
	if (nq > SH_WIRE_MAX_QUERIES)
		return client_fail(SHOAL_ETOOBIG,
				   "search: %zu queries, at most %d", nq,
				   SH_WIRE_MAX_QUERIES);
	if (!(opt->min_coverage >= 0 && opt->min_coverage <= 1))
		return client_fail(SHOAL_EINVAL,
				   "search: min_coverage %g is not in 0..1",
				   (double)opt->min_coverage);
	uint32_t k = opt->k ? opt->k : 10;
	Shoal__V1__Filter *wf = NULL;
	if ((rc = client_filter_to_wire(opt->filter, &wf)))
		return rc;
	Shoal__V1__Vector *qs = calloc(nq ? nq : 1, sizeof(*qs));
	Shoal__V1__Vector **qp = calloc(nq ? nq : 1, sizeof(*qp));
	if (!qs || !qp) {
		rc = client_fail(SHOAL_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < nq; i++) {
		shoal__v1__vector__init(&qs[i]);
		qs[i].values = (float *)(dim ? vectors + i * dim : NULL);
		qs[i].n_values = dim;
		qp[i] = &qs[i];
	}
	Shoal__V1__SearchRequest sr = SHOAL__V1__SEARCH_REQUEST__INIT;
	sr.collection = (char *)collection;
	sr.queries = qp;
	sr.n_queries = nq;
	sr.k = k;
	sr.ef = opt->ef;
	sr.filter = wf;
	sr.with_payload = opt->with_payload;
	sr.with_vector = opt->with_vector;
	sr.min_coverage = opt->min_coverage;
	sr.exact = opt->exact;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
	req.search = &sr;
	Shoal__V1__Response *resp;
	if ((rc = client_call(c, &req, opt->timeout_ms,
			      SHOAL__V1__RESPONSE__RESULT_SEARCH, &resp)))
		goto done;
	rc = client_search_result_from_proto(resp, resp->search, nq, k, out);
done:
	free(qs);
	free(qp);
	sh_wire_filter_free(wf);
	return rc;
}

int shoal_search(shoal_client *c, const char *collection, const float *vector,
		 size_t dim, const shoal_search_options *opt,
		 shoal_search_result **out)
{
	return shoal_search_batch(c, collection, vector, 1, dim, opt, out);
}
