/* libshoal: upsert, delete and get points. See shoal.h. */
#include <stdlib.h>
#include <string.h>

#include "client_impl.h"

void shoal_write_result_free(shoal_write_result *r)
{
	if (!r)
		return;
	free(r->statuses);
	sh_wire_free_response(r->internal_);
	free(r);
}

void shoal_points_free(shoal_points *p)
{
	if (!p)
		return;
	free(p->points);
	sh_wire_free_response(p->internal_);
	free(p);
}

/* The WriteResult of resp → *out (or just frees resp when out is NULL). */
static int write_result(Shoal__V1__Response *resp,
			const Shoal__V1__WriteResult *wr,
			shoal_write_result **out)
{
	if (!out) {
		sh_wire_free_response(resp);
		return SHOAL_OK;
	}
	shoal_write_result *r = calloc(1, sizeof(*r));
	if (!r) {
		sh_wire_free_response(resp);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	r->internal_ = resp;
	r->applied = wr->applied;
	r->ignored = wr->ignored;
	r->statuses =
	    calloc(wr->n_statuses ? wr->n_statuses : 1, sizeof(*r->statuses));
	if (!r->statuses) {
		shoal_write_result_free(r);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < wr->n_statuses; i++) {
		const Shoal__V1__PointStatus *s = wr->statuses[i];
		if (!client_id_from_proto(s->id, &r->statuses[i].id)) {
			shoal_write_result_free(r);
			return client_fail(SHOAL_EINVAL,
					   "malformed response: statuses[%zu] "
					   "has no valid id",
					   i);
		}
		r->statuses[i].code = (int)s->code;
		r->statuses[i].message = client_str(s->message);
	}
	r->n = wr->n_statuses;
	*out = r;
	return SHOAL_OK;
}

/* A write request whose result is a WriteResult; its point count (n) must
 * match the statuses when by_ids. */
static int write_call(shoal_client *c, Shoal__V1__Request *req, int want,
		      size_t n, bool by_ids, shoal_write_result **out)
{
	Shoal__V1__Response *resp;
	int rc = client_call(c, req, 0, want, &resp);
	if (rc)
		return rc;
	const Shoal__V1__WriteResult *wr =
	    want == SHOAL__V1__RESPONSE__RESULT_UPSERT ? resp->upsert
						       : resp->delete_;
	if (!wr || (by_ids && wr->n_statuses != n)) {
		size_t got = wr ? wr->n_statuses : 0;
		sh_wire_free_response(resp);
		return client_fail(SHOAL_EINVAL,
				   "malformed response: %zu statuses for %zu "
				   "points",
				   got, n);
	}
	return write_result(resp, wr, out);
}

int shoal_upsert(shoal_client *c, const char *collection,
		 const shoal_point *points, size_t n, shoal_write_result **out)
{
	int rc = client_check(c, collection, (const void *)1);
	if (out)
		*out = NULL;
	if (rc)
		return rc;
	if (n && !points)
		return client_fail(SHOAL_EINVAL, "points is NULL");
	Shoal__V1__Point *pts = calloc(n ? n : 1, sizeof(*pts));
	Shoal__V1__PointId *ids = calloc(n ? n : 1, sizeof(*ids));
	Shoal__V1__Point **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	if (!pts || !ids || !ptrs) {
		rc = client_fail(SHOAL_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		const shoal_point *p = &points[i];
		if ((rc = client_id_to_proto(&p->id, &ids[i], "points", i)))
			goto done;
		if (p->dim && !p->vector) {
			rc = client_fail(SHOAL_EINVAL,
					 "points[%zu].vector is NULL with dim "
					 "%zu",
					 i, p->dim);
			goto done;
		}
		shoal__v1__point__init(&pts[i]);
		pts[i].id = &ids[i];
		pts[i].vector = (float *)p->vector;
		pts[i].n_vector = p->dim;
		pts[i].payload_json =
		    (char *)(p->payload_json ? p->payload_json : "");
		pts[i].version = p->version;
		ptrs[i] = &pts[i];
	}
	Shoal__V1__UpsertRequest ur = SHOAL__V1__UPSERT_REQUEST__INIT;
	ur.collection = (char *)collection;
	ur.points = ptrs;
	ur.n_points = n;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
	req.upsert = &ur;
	rc = write_call(c, &req, SHOAL__V1__RESPONSE__RESULT_UPSERT, n, true,
			out);
done:
	free(pts);
	free(ids);
	free(ptrs);
	return rc;
}

int shoal_delete(shoal_client *c, const char *collection, const shoal_id *ids,
		 const uint64_t *versions, size_t n, shoal_write_result **out)
{
	int rc = client_check(c, collection, (const void *)1);
	if (out)
		*out = NULL;
	if (rc)
		return rc;
	if (n && !ids)
		return client_fail(SHOAL_EINVAL, "ids is NULL");
	Shoal__V1__PointRef *refs = calloc(n ? n : 1, sizeof(*refs));
	Shoal__V1__PointId *pids = calloc(n ? n : 1, sizeof(*pids));
	Shoal__V1__PointRef **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	if (!refs || !pids || !ptrs) {
		rc = client_fail(SHOAL_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		if ((rc = client_id_to_proto(&ids[i], &pids[i], "ids", i)))
			goto done;
		shoal__v1__point_ref__init(&refs[i]);
		refs[i].id = &pids[i];
		refs[i].version = versions ? versions[i] : 0;
		ptrs[i] = &refs[i];
	}
	Shoal__V1__PointRefs prefs = SHOAL__V1__POINT_REFS__INIT;
	prefs.refs = ptrs;
	prefs.n_refs = n;
	Shoal__V1__DeleteRequest dr = SHOAL__V1__DELETE_REQUEST__INIT;
	dr.collection = (char *)collection;
	dr.selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS;
	dr.ids = &prefs;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_DELETE;
	req.delete_ = &dr;
	rc = write_call(c, &req, SHOAL__V1__RESPONSE__RESULT_DELETE, n, true,
			out);
done:
	free(refs);
	free(pids);
	free(ptrs);
	return rc;
}

int shoal_delete_by_filter(shoal_client *c, const char *collection,
			   const shoal_filter *f, uint64_t version,
			   shoal_write_result **out)
{
	int rc = client_check(c, collection, (const void *)1);
	if (out)
		*out = NULL;
	if (rc)
		return rc;
	if (!f || sh_filter_is_empty(f->f))
		return client_fail(SHOAL_EINVAL,
				   "delete by filter needs a non-empty filter "
				   "(to delete everything, drop the "
				   "collection)");
	Shoal__V1__Filter *wf;
	if ((rc = client_filter_to_wire(f, &wf)))
		return rc;
	Shoal__V1__DeleteRequest dr = SHOAL__V1__DELETE_REQUEST__INIT;
	dr.collection = (char *)collection;
	dr.selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_FILTER;
	dr.filter = wf;
	dr.filter_version = version;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_DELETE;
	req.delete_ = &dr;
	rc = write_call(c, &req, SHOAL__V1__RESPONSE__RESULT_DELETE, 0, false,
			out);
	sh_wire_filter_free(wf);
	return rc;
}

int client_points_from_proto(Shoal__V1__Response *resp, Shoal__V1__Point **pts,
			     size_t n, const uint8_t *cursor, size_t cursor_len,
			     shoal_points **out)
{
	shoal_points *p = calloc(1, sizeof(*p));
	if (!p) {
		sh_wire_free_response(resp);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	p->internal_ = resp;
	p->points = calloc(n ? n : 1, sizeof(*p->points));
	if (!p->points) {
		shoal_points_free(p);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		shoal_point *d = &p->points[i];
		if (!client_id_from_proto(pts[i]->id, &d->id)) {
			shoal_points_free(p);
			return client_fail(SHOAL_EINVAL,
					   "malformed response: points[%zu] "
					   "has no valid id",
					   i);
		}
		d->vector = pts[i]->n_vector ? pts[i]->vector : NULL;
		d->dim = pts[i]->vector ? pts[i]->n_vector : 0;
		d->payload_json = client_str(pts[i]->payload_json);
		d->version = pts[i]->version;
	}
	p->n = n;
	p->next_cursor = cursor_len ? cursor : NULL;
	p->next_cursor_len = cursor ? cursor_len : 0;
	*out = p;
	return client_ok();
}

int shoal_get(shoal_client *c, const char *collection, const shoal_id *ids,
	      size_t n, bool with_payload, bool with_vector, shoal_points **out)
{
	int rc = client_check(c, collection, out);
	if (rc)
		return rc;
	*out = NULL;
	if (n && !ids)
		return client_fail(SHOAL_EINVAL, "ids is NULL");
	Shoal__V1__PointId *pids = calloc(n ? n : 1, sizeof(*pids));
	Shoal__V1__PointId **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	if (!pids || !ptrs) {
		rc = client_fail(SHOAL_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		if ((rc = client_id_to_proto(&ids[i], &pids[i], "ids", i)))
			goto done;
		ptrs[i] = &pids[i];
	}
	Shoal__V1__GetRequest gr = SHOAL__V1__GET_REQUEST__INIT;
	gr.collection = (char *)collection;
	gr.ids = ptrs;
	gr.n_ids = n;
	gr.with_payload = with_payload;
	gr.with_vector = with_vector;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_GET;
	req.get = &gr;
	Shoal__V1__Response *resp;
	if ((rc = client_call(c, &req, 0, SHOAL__V1__RESPONSE__RESULT_GET,
			      &resp)))
		goto done;
	if (!resp->get || resp->get->n_points > n) {
		sh_wire_free_response(resp);
		rc = client_fail(SHOAL_EINVAL,
				 "malformed response: more points than ids");
		goto done;
	}
	rc = client_points_from_proto(resp, resp->get->points,
				      resp->get->n_points, NULL, 0, out);
done:
	free(pids);
	free(ptrs);
	return rc;
}
