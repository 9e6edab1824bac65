/* libshoal: building and parsing filters, a thin box around the index
 * core's sh_filter (common/index/filter.h). See shoal.h. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_impl.h"
#include "error.h"

int shoal_filter_new(shoal_filter **out)
{
	if (!out)
		return client_fail(SHOAL_EINVAL, "out is NULL");
	*out = NULL;
	shoal_filter *f = calloc(1, sizeof(*f));
	if (!f || sh_filter_new(&f->f) != SH_OK) {
		free(f);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	*out = f;
	return client_ok();
}

void shoal_filter_free(shoal_filter *f)
{
	if (!f)
		return;
	sh_filter_free(f->f);
	free(f);
}

/* Common checks of every builder, then the core's answer. */
static int check(const shoal_filter *f, int occ, const void *key)
{
	if (!f || !f->f)
		return client_fail(SHOAL_EINVAL, "filter is NULL");
	if (occ < SHOAL_MUST || occ > SHOAL_MUST_NOT)
		return client_fail(SHOAL_EINVAL,
				   "occur %d is not SHOAL_MUST, SHOAL_SHOULD "
				   "or SHOAL_MUST_NOT",
				   occ);
	if (!key)
		return client_fail(SHOAL_EINVAL, "key is NULL");
	return SHOAL_OK;
}

static int done(int rc, const char *what)
{
	if (rc == SH_ENOMEM)
		return client_fail(rc, "out of memory");
	if (rc)
		return client_fail(rc, "filter: invalid %s", what);
	return client_ok();
}

int shoal_filter_match_keyword(shoal_filter *f, int occ, const char *key,
			       const char *value)
{
	int rc = check(f, occ, key);
	if (rc)
		return rc;
	if (!value)
		return client_fail(SHOAL_EINVAL, "value is NULL");
	return done(
	    sh_filter_add_match_keyword(f->f, (sh_occur)occ, key, value),
	    "match");
}

int shoal_filter_match_integer(shoal_filter *f, int occ, const char *key,
			       int64_t value)
{
	int rc = check(f, occ, key);
	if (rc)
		return rc;
	return done(
	    sh_filter_add_match_integer(f->f, (sh_occur)occ, key, value),
	    "match");
}

int shoal_filter_match_bool(shoal_filter *f, int occ, const char *key,
			    bool value)
{
	int rc = check(f, occ, key);
	if (rc)
		return rc;
	return done(sh_filter_add_match_bool(f->f, (sh_occur)occ, key, value),
		    "match");
}

int shoal_filter_match_any_keyword(shoal_filter *f, int occ, const char *key,
				   const char *const *values, size_t n)
{
	int rc = check(f, occ, key);
	if (rc)
		return rc;
	if (!values || !n)
		return client_fail(SHOAL_EINVAL, "match any: no values");
	for (size_t i = 0; i < n; i++)
		if (!values[i])
			return client_fail(SHOAL_EINVAL,
					   "match any: values[%zu] is NULL", i);
	return done(sh_filter_add_match_any_keyword(f->f, (sh_occur)occ, key,
						    values, n),
		    "match any");
}

int shoal_filter_match_any_integer(shoal_filter *f, int occ, const char *key,
				   const int64_t *values, size_t n)
{
	int rc = check(f, occ, key);
	if (rc)
		return rc;
	if (!values || !n)
		return client_fail(SHOAL_EINVAL, "match any: no values");
	return done(sh_filter_add_match_any_integer(f->f, (sh_occur)occ, key,
						    values, n),
		    "match any");
}

int shoal_filter_range(shoal_filter *f, int occ, const char *key, double gt,
		       double gte, double lt, double lte)
{
	int rc = check(f, occ, key);
	if (rc)
		return rc;
	sh_range r = {
	    .has_gt = !isnan(gt),
	    .has_gte = !isnan(gte),
	    .has_lt = !isnan(lt),
	    .has_lte = !isnan(lte),
	};
	if (!r.has_gt && !r.has_gte && !r.has_lt && !r.has_lte)
		return client_fail(SHOAL_EINVAL, "range on '%s' has no bound",
				   key);
	r.gt = r.has_gt ? gt : 0;
	r.gte = r.has_gte ? gte : 0;
	r.lt = r.has_lt ? lt : 0;
	r.lte = r.has_lte ? lte : 0;
	return done(sh_filter_add_range(f->f, (sh_occur)occ, key, &r), "range");
}

int shoal_filter_exists(shoal_filter *f, int occ, const char *key)
{
	int rc = check(f, occ, key);
	if (rc)
		return rc;
	return done(sh_filter_add_exists(f->f, (sh_occur)occ, key), "exists");
}

int shoal_filter_has_id(shoal_filter *f, int occ, const shoal_id *ids, size_t n)
{
	int rc = check(f, occ, "");
	if (rc)
		return rc;
	if (!ids || !n)
		return client_fail(SHOAL_EINVAL, "has_id: no ids");
	sh_pid *p = calloc(n, sizeof(*p));
	if (!p)
		return client_fail(SHOAL_ENOMEM, "out of memory");
	for (size_t i = 0; i < n && !rc; i++) {
		if (ids[i].kind == SHOAL_ID_NUM)
			p[i] = sh_pid_u64(ids[i].num);
		else if (ids[i].kind != SHOAL_ID_STR || !ids[i].str ||
			 sh_pid_str(ids[i].str, strlen(ids[i].str), &p[i]))
			rc = client_fail(SHOAL_EINVAL,
					 "has_id: ids[%zu] is not a valid id "
					 "(an integer, or a string of 1..64 "
					 "bytes of UTF-8)",
					 i);
	}
	if (!rc)
		rc = done(sh_filter_add_has_id(f->f, (sh_occur)occ, p, n),
			  "has_id");
	free(p);
	return rc;
}

int shoal_filter_nested(shoal_filter *f, int occ, shoal_filter *sub)
{
	int rc = check(f, occ, "");
	if (rc)
		return rc;
	if (!sub || !sub->f || sub == f)
		return client_fail(SHOAL_EINVAL,
				   "nested: sub is NULL or the filter itself");
	if ((rc = sh_filter_add_nested(f->f, (sh_occur)occ, sub->f)))
		return done(rc, "nested filter");
	free(sub); /* its tree now belongs to f */
	return client_ok();
}

/* The index core's text form quotes strings with '"' only; the SDK also
 * takes 'single quotes' (what Python and SQL users type), rewritten here to
 * the double-quoted form: \' inside becomes ', a '"' inside becomes \",
 * other escapes are kept. Double-quoted strings are copied untouched (a '
 * inside them is a plain character). Byte offsets in error messages are
 * those of the rewritten text, the same as the caller's unless a single-
 * quoted string held \' or '"'. Returns a malloc'd string or NULL. */
static char *requote(const char *text)
{
	size_t n = strlen(text);
	char *out = malloc(2 * n + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		char c = text[i];
		if (c == '"') {
			*o++ = text[i++];
			while (i < n && text[i] != '"') {
				if (text[i] == '\\' && i + 1 < n)
					*o++ = text[i++];
				*o++ = text[i++];
			}
			if (i < n)
				*o++ = text[i++];
		} else if (c == '\'') {
			*o++ = '"';
			i++;
			while (i < n && text[i] != '\'') {
				if (text[i] == '\\' && i + 1 < n &&
				    text[i + 1] == '\'') {
					*o++ = '\'';
					i += 2;
				} else if (text[i] == '\\' && i + 1 < n) {
					*o++ = text[i++];
					*o++ = text[i++];
				} else if (text[i] == '"') {
					*o++ = '\\';
					*o++ = text[i++];
				} else {
					*o++ = text[i++];
				}
			}
			if (i < n) { /* unterminated: the parser says so */
				*o++ = '"';
				i++;
			}
		} else {
			*o++ = text[i++];
		}
	}
	*o = 0;
	return out;
}

int shoal_filter_parse(const char *text, shoal_filter **out, char *err,
		       size_t errlen)
{
	if (err && errlen)
		err[0] = 0;
	if (!out)
		return client_fail(SHOAL_EINVAL, "out is NULL");
	*out = NULL;
	if (!text)
		return client_fail(SHOAL_EINVAL, "filter text is NULL");
	char *requoted = NULL;
	if (strchr(text, '\'') && strlen(text) <= SH_FILTER_MAX_TEXT) {
		if (!(requoted = requote(text)))
			return client_fail(SHOAL_ENOMEM, "out of memory");
		text = requoted;
	}
	shoal_filter *f = calloc(1, sizeof(*f));
	if (!f) {
		free(requoted);
		return client_fail(SHOAL_ENOMEM, "out of memory");
	}
	char msg[512];
	int rc = sh_filter_parse(text, &f->f, msg, sizeof(msg));
	free(requoted);
	if (rc) {
		free(f);
		client_fail(rc, "filter: %s", msg);
		if (err && errlen)
			snprintf(err, errlen, "%s", shoal_last_error());
		return rc;
	}
	*out = f;
	return client_ok();
}
