/* libshoal: scroll through and count the points passing a filter. See
 * shoal.h. */
#include <stdlib.h>
#include <string.h>

#include "client_impl.h"

int shoal_scroll(shoal_client *c, const char *collection,
		 const shoal_scroll_options *opt, shoal_points **out)
{
	int rc = client_check(c, collection, out);
	if (rc)
		return rc;
	*out = NULL;
	const shoal_scroll_options defaults = {0};
	if (!opt)
		opt = &defaults;
	if (opt->cursor_len && !opt->cursor)
		return client_fail(SHOAL_EINVAL, "scroll: cursor is NULL");
	Shoal__V1__Filter *wf;
	if ((rc = client_filter_to_wire(opt->filter, &wf)))
		return rc;
	Shoal__V1__ScrollRequest sr = SHOAL__V1__SCROLL_REQUEST__INIT;
	sr.collection = (char *)collection;
	sr.filter = wf;
	sr.cursor.data = (uint8_t *)opt->cursor;
	sr.cursor.len = opt->cursor_len;
	sr.limit = opt->limit;
	sr.with_payload = opt->with_payload;
	sr.with_vector = opt->with_vector;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_SCROLL;
	req.scroll = &sr;
	Shoal__V1__Response *resp;
	rc = client_call(c, &req, 0, SHOAL__V1__RESPONSE__RESULT_SCROLL, &resp);
	sh_wire_filter_free(wf);
	if (rc)
		return rc;
	const Shoal__V1__ScrollResult *res = resp->scroll;
	if (!res) {
		sh_wire_free_response(resp);
		return client_fail(SHOAL_EINVAL,
				   "malformed response: no scroll result");
	}
	return client_points_from_proto(resp, res->points, res->n_points,
					res->next_cursor.data,
					res->next_cursor.len, out);
}

int shoal_count(shoal_client *c, const char *collection, const shoal_filter *f,
		bool exact, uint64_t *count, bool *is_exact)
{
	int rc = client_check(c, collection, count);
	if (rc)
		return rc;
	*count = 0;
	Shoal__V1__Filter *wf;
	if ((rc = client_filter_to_wire(f, &wf)))
		return rc;
	Shoal__V1__CountRequest cr = SHOAL__V1__COUNT_REQUEST__INIT;
	cr.collection = (char *)collection;
	cr.filter = wf;
	cr.exact = exact;
	Shoal__V1__Request req = SHOAL__V1__REQUEST__INIT;
	req.op_case = SHOAL__V1__REQUEST__OP_COUNT;
	req.count = &cr;
	Shoal__V1__Response *resp;
	rc = client_call(c, &req, 0, SHOAL__V1__RESPONSE__RESULT_COUNT, &resp);
	sh_wire_filter_free(wf);
	if (rc)
		return rc;
	if (!resp->count) {
		sh_wire_free_response(resp);
		return client_fail(SHOAL_EINVAL,
				   "malformed response: no count result");
	}
	*count = resp->count->count;
	if (is_exact)
		*is_exact = resp->count->exact;
	sh_wire_free_response(resp);
	return SHOAL_OK;
}
