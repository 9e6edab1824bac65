/* Payload filters: building, validation and evaluation (see filter.h). */
#include "filter.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "error.h"

/* ---- Building ------------------------------------------------------------ */

int sh_filter_new(sh_filter **out)
{
	if (!out)
		return SH_EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? SH_OK : SH_ENOMEM;
}

static void cond_clear(sh_cond *c)
{
	free(c->key);
	if (c->keywords) {
		for (size_t i = 0; i < c->nvals; i++)
			free(c->keywords[i]);
		free(c->keywords);
	}
	free(c->integers);
	free(c->ids);
	sh_filter_free(c->sub);
	memset(c, 0, sizeof(*c));
}

void sh_filter_free(sh_filter *f)
{
	if (!f)
		return;
	for (int o = 0; o < SH_OCCUR_COUNT; o++) {
		for (size_t i = 0; i < f->n[o]; i++)
			cond_clear(&f->conds[o][i]);
		free(f->conds[o]);
	}
	free(f);
}

/* Appends c (whose allocations f takes over) to list occ. On failure c is
 * cleared (its allocations freed), except a nested filter, which stays the
 * caller's as sh_filter_add_nested promises. */
static int push(sh_filter *f, sh_occur occ, sh_cond *c)
{
	if (f->n[occ] == f->cap[occ]) {
		size_t ncap = f->cap[occ] ? f->cap[occ] * 2 : 4;
		sh_cond *nc = realloc(f->conds[occ], ncap * sizeof(*nc));
		if (!nc) {
			c->sub = NULL;
			cond_clear(c);
			return SH_ENOMEM;
		}
		f->conds[occ] = nc;
		f->cap[occ] = ncap;
	}
	f->conds[occ][f->n[occ]++] = *c;
	return SH_OK;
}

static bool occ_ok(const sh_filter *f, sh_occur occ)
{
	return f && (unsigned)occ < SH_OCCUR_COUNT;
}

/* Starts a keyed condition: checks the common arguments, copies the key. */
static int keyed(sh_filter *f, sh_occur occ, const char *key, sh_cond_kind k,
		 sh_cond *c)
{
	memset(c, 0, sizeof(*c));
	if (!occ_ok(f, occ) || !key)
		return SH_EINVAL;
	c->kind = k;
	c->key = strdup(key);
	return c->key ? SH_OK : SH_ENOMEM;
}

int sh_filter_add_match_any_keyword(sh_filter *f, sh_occur occ, const char *key,
				    const char *const *values, size_t n)
{
	sh_cond c;
	if (!values || n == 0)
		return SH_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!values[i])
			return SH_EINVAL;
	int rc = keyed(f, occ, key, SH_COND_MATCH, &c);
	if (rc != SH_OK)
		goto fail;
	c.mkind = SH_MATCH_KEYWORD;
	c.keywords = calloc(n, sizeof(char *));
	if (!c.keywords)
		goto nomem;
	c.nvals = n;
	for (size_t i = 0; i < n; i++)
		if (!(c.keywords[i] = strdup(values[i])))
			goto nomem;
	return push(f, occ, &c);
nomem:
	rc = SH_ENOMEM;
fail:
	cond_clear(&c);
	return rc;
}

int sh_filter_add_match_keyword(sh_filter *f, sh_occur occ, const char *key,
				const char *value)
{
	return sh_filter_add_match_any_keyword(f, occ, key, &value, 1);
}

int sh_filter_add_match_any_integer(sh_filter *f, sh_occur occ, const char *key,
				    const int64_t *values, size_t n)
{
	sh_cond c;
	if (!values || n == 0)
		return SH_EINVAL;
	int rc = keyed(f, occ, key, SH_COND_MATCH, &c);
	if (rc != SH_OK)
		goto fail;
	c.mkind = SH_MATCH_INTEGER;
	c.integers = malloc(n * sizeof(int64_t));
	if (!c.integers) {
		rc = SH_ENOMEM;
		goto fail;
	}
	memcpy(c.integers, values, n * sizeof(int64_t));
	c.nvals = n;
	return push(f, occ, &c);
fail:
	cond_clear(&c);
	return rc;
}

int sh_filter_add_match_integer(sh_filter *f, sh_occur occ, const char *key,
				int64_t value)
{
	return sh_filter_add_match_any_integer(f, occ, key, &value, 1);
}

int sh_filter_add_match_bool(sh_filter *f, sh_occur occ, const char *key,
			     bool value)
{
	sh_cond c;
	int rc = keyed(f, occ, key, SH_COND_MATCH, &c);
	if (rc != SH_OK) {
		cond_clear(&c);
		return rc;
	}
	c.mkind = SH_MATCH_BOOL;
	c.boolean = value;
	c.nvals = 1;
	return push(f, occ, &c);
}

int sh_filter_add_range(sh_filter *f, sh_occur occ, const char *key,
			const sh_range *r)
{
	sh_cond c;
	if (!r)
		return SH_EINVAL;
	int rc = keyed(f, occ, key, SH_COND_RANGE, &c);
	if (rc != SH_OK) {
		cond_clear(&c);
		return rc;
	}
	c.range = *r;
	return push(f, occ, &c);
}

int sh_filter_add_exists(sh_filter *f, sh_occur occ, const char *key)
{
	sh_cond c;
	int rc = keyed(f, occ, key, SH_COND_EXISTS, &c);
	if (rc != SH_OK) {
		cond_clear(&c);
		return rc;
	}
	return push(f, occ, &c);
}

int sh_filter_add_has_id(sh_filter *f, sh_occur occ, const sh_pid *ids,
			 size_t n)
{
	sh_cond c;
	memset(&c, 0, sizeof(c));
	if (!occ_ok(f, occ) || !ids || n == 0)
		return SH_EINVAL;
	c.kind = SH_COND_HAS_ID;
	c.ids = malloc(n * sizeof(sh_pid));
	if (!c.ids)
		return SH_ENOMEM;
	memcpy(c.ids, ids, n * sizeof(sh_pid));
	c.nids = n;
	return push(f, occ, &c);
}

int sh_filter_add_nested(sh_filter *f, sh_occur occ, sh_filter *sub)
{
	sh_cond c;
	memset(&c, 0, sizeof(c));
	if (!occ_ok(f, occ) || !sub || sub == f)
		return SH_EINVAL;
	c.kind = SH_COND_NESTED;
	c.sub = sub;
	return push(f, occ, &c);
}

size_t sh_filter_count(const sh_filter *f)
{
	size_t n = 0;
	for (int o = 0; o < SH_OCCUR_COUNT; o++) {
		n += f->n[o];
		for (size_t i = 0; i < f->n[o]; i++)
			if (f->conds[o][i].kind == SH_COND_NESTED)
				n += sh_filter_count(f->conds[o][i].sub);
	}
	return n;
}

bool sh_filter_is_empty(const sh_filter *f)
{
	return f->n[SH_MUST] + f->n[SH_SHOULD] + f->n[SH_MUST_NOT] == 0;
}

/* ---- Validation ---------------------------------------------------------- */

/* A message for the caller; the code is returned separately. */
#define seterr(err, errlen, ...) ((void)sh_errf(err, errlen, 0, __VA_ARGS__))

static int check_key(const char *key, char *err, size_t errlen)
{
	size_t n = strlen(key);
	if (n == 0 || n > SH_FILTER_MAX_KEY) {
		seterr(err, errlen, "key must be 1..%d bytes",
		       SH_FILTER_MAX_KEY);
		return SH_EINVAL;
	}
	if (key[0] == '.' || key[n - 1] == '.' || strstr(key, "..")) {
		seterr(err, errlen, "key \"%s\" has an empty path segment",
		       key);
		return SH_EINVAL;
	}
	if (!sh_utf8_valid(key, n)) {
		seterr(err, errlen, "key is not valid UTF-8");
		return SH_EINVAL;
	}
	return SH_OK;
}

static int check_range(const sh_cond *c, char *err, size_t errlen)
{
	const sh_range *r = &c->range;
	if (!r->has_gt && !r->has_gte && !r->has_lt && !r->has_lte) {
		seterr(err, errlen, "range on \"%s\" has no bound", c->key);
		return SH_EINVAL;
	}
	if ((r->has_gt && isnan(r->gt)) || (r->has_gte && isnan(r->gte)) ||
	    (r->has_lt && isnan(r->lt)) || (r->has_lte && isnan(r->lte))) {
		seterr(err, errlen, "range on \"%s\" has a NaN bound", c->key);
		return SH_EINVAL;
	}
	double lo = -INFINITY, hi = INFINITY;
	if (r->has_gt)
		lo = r->gt;
	if (r->has_gte && r->gte > lo)
		lo = r->gte;
	if (r->has_lt)
		hi = r->lt;
	if (r->has_lte && r->lte < hi)
		hi = r->lte;
	if (lo > hi) {
		seterr(err, errlen,
		       "range on \"%s\": lower bound %g above upper "
		       "bound %g",
		       c->key, lo, hi);
		return SH_EINVAL;
	}
	return SH_OK;
}

static int validate_node(const sh_filter *f, int depth, size_t *count,
			 char *err, size_t errlen)
{
	if (depth > SH_FILTER_MAX_DEPTH) {
		seterr(err, errlen, "filter nested deeper than %d levels",
		       SH_FILTER_MAX_DEPTH);
		return SH_EINVAL;
	}
	for (int o = 0; o < SH_OCCUR_COUNT; o++) {
		for (size_t i = 0; i < f->n[o]; i++) {
			const sh_cond *c = &f->conds[o][i];
			int rc = SH_OK;
			if (++*count > SH_FILTER_MAX_CONDITIONS) {
				seterr(err, errlen,
				       "filter has more than %d conditions",
				       SH_FILTER_MAX_CONDITIONS);
				return SH_EINVAL;
			}
			if (c->kind == SH_COND_MATCH ||
			    c->kind == SH_COND_RANGE ||
			    c->kind == SH_COND_EXISTS) {
				if (!c->key) {
					seterr(err, errlen,
					       "condition without a key");
					return SH_EINVAL;
				}
				if ((rc = check_key(c->key, err, errlen)) !=
				    SH_OK)
					return rc;
			}
			switch (c->kind) {
			case SH_COND_MATCH:
				if (c->nvals == 0 ||
				    c->nvals > SH_FILTER_MAX_SET) {
					seterr(err, errlen,
					       "match on \"%s\" needs 1..%d "
					       "values",
					       c->key, SH_FILTER_MAX_SET);
					return SH_EINVAL;
				}
				if (c->mkind == SH_MATCH_KEYWORD) {
					for (size_t j = 0; j < c->nvals; j++) {
						size_t n =
						    strlen(c->keywords[j]);
						if (n > SH_FILTER_MAX_KEYWORD ||
						    !sh_utf8_valid(
							c->keywords[j], n)) {
							seterr(
							    err, errlen,
							    "match on \"%s\": "
							    "keyword "
							    "too long or not "
							    "UTF-8",
							    c->key);
							return SH_EINVAL;
						}
					}
				} else if (c->mkind != SH_MATCH_INTEGER &&
					   c->mkind != SH_MATCH_BOOL) {
					seterr(err, errlen,
					       "unknown match kind");
					return SH_EINVAL;
				}
				break;
			case SH_COND_RANGE:
				rc = check_range(c, err, errlen);
				break;
			case SH_COND_EXISTS:
				break;
			case SH_COND_HAS_ID:
				if (c->nids == 0 ||
				    c->nids > SH_FILTER_MAX_SET) {
					seterr(err, errlen,
					       "has_id needs 1..%d ids",
					       SH_FILTER_MAX_SET);
					return SH_EINVAL;
				}
				break;
			case SH_COND_NESTED:
				if (!c->sub) {
					seterr(err, errlen,
					       "empty nested clause");
					return SH_EINVAL;
				}
				rc = validate_node(c->sub, depth + 1, count,
						   err, errlen);
				break;
			default:
				seterr(err, errlen, "unknown condition kind %d",
				       (int)c->kind);
				return SH_EINVAL;
			}
			if (rc != SH_OK)
				return rc;
		}
	}
	return SH_OK;
}

int sh_filter_validate(const sh_filter *f, char *err, size_t errlen)
{
	size_t count = 0;
	if (!f) {
		seterr(err, errlen, "no filter");
		return SH_EINVAL;
	}
	return validate_node(f, 1, &count, err, errlen);
}

/* ---- Evaluation ---------------------------------------------------------- */

const cJSON *sh_filter_lookup(const cJSON *payload, const char *key)
{
	const cJSON *cur = payload;
	const char *seg = key;
	for (;;) {
		if (!cur || !cJSON_IsObject(cur))
			return NULL;
		const char *dot = strchr(seg, '.');
		size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
		const cJSON *next = NULL;
		for (const cJSON *ch = cur->child; ch; ch = ch->next) {
			if (ch->string && strncmp(ch->string, seg, len) == 0 &&
			    ch->string[len] == '\0') {
				next = ch;
				break;
			}
		}
		if (!dot)
			return next;
		cur = next;
		seg = dot + 1;
	}
}

bool sh_filter_value_exists(const cJSON *v)
{
	if (!v || cJSON_IsNull(v))
		return false;
	if (!cJSON_IsArray(v))
		return true;
	for (const cJSON *e = v->child; e; e = e->next)
		if (!cJSON_IsNull(e))
			return true;
	return false;
}

bool sh_filter_number_as_int64(double d, int64_t *out)
{
	/* -2^63 is a double exactly; 2^63 is the first value out of range. */
	if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
		return false;
	if (d != trunc(d))
		return false;
	*out = (int64_t)d;
	return true;
}

bool sh_range_contains(const sh_range *r, double d)
{
	if (isnan(d))
		return false;
	if (r->has_gt && !(d > r->gt))
		return false;
	if (r->has_gte && !(d >= r->gte))
		return false;
	if (r->has_lt && !(d < r->lt))
		return false;
	if (r->has_lte && !(d <= r->lte))
		return false;
	return true;
}

/* One scalar (not an array) against a match or range condition. */
static bool scalar_passes(const sh_cond *c, const cJSON *v)
{
	if (c->kind == SH_COND_RANGE)
		return cJSON_IsNumber(v) &&
		       sh_range_contains(&c->range, v->valuedouble);
	switch (c->mkind) {
	case SH_MATCH_KEYWORD:
		if (!cJSON_IsString(v) || !v->valuestring)
			return false;
		for (size_t i = 0; i < c->nvals; i++)
			if (strcmp(v->valuestring, c->keywords[i]) == 0)
				return true;
		return false;
	case SH_MATCH_INTEGER: {
		int64_t x;
		if (!cJSON_IsNumber(v) ||
		    !sh_filter_number_as_int64(v->valuedouble, &x))
			return false;
		for (size_t i = 0; i < c->nvals; i++)
			if (c->integers[i] == x)
				return true;
		return false;
	}
	case SH_MATCH_BOOL:
		return cJSON_IsBool(v) && (cJSON_IsTrue(v) != 0) == c->boolean;
	}
	return false;
}

static bool cond_passes(const sh_cond *c, const sh_pid *id,
			const cJSON *payload)
{
	switch (c->kind) {
	case SH_COND_MATCH:
	case SH_COND_RANGE: {
		const cJSON *v = sh_filter_lookup(payload, c->key);
		if (!v)
			return false;
		if (!cJSON_IsArray(v))
			return scalar_passes(c, v);
		for (const cJSON *e = v->child; e; e = e->next)
			if (scalar_passes(c, e))
				return true;
		return false;
	}
	case SH_COND_EXISTS:
		return sh_filter_value_exists(
		    sh_filter_lookup(payload, c->key));
	case SH_COND_HAS_ID:
		if (!id)
			return false;
		for (size_t i = 0; i < c->nids; i++)
			if (sh_pid_eq(id, &c->ids[i]))
				return true;
		return false;
	case SH_COND_NESTED:
		return sh_filter_eval(c->sub, id, payload);
	}
	return false;
}

bool sh_filter_eval(const sh_filter *f, const sh_pid *id, const cJSON *payload)
{
	for (size_t i = 0; i < f->n[SH_MUST]; i++)
		if (!cond_passes(&f->conds[SH_MUST][i], id, payload))
			return false;
	for (size_t i = 0; i < f->n[SH_MUST_NOT]; i++)
		if (cond_passes(&f->conds[SH_MUST_NOT][i], id, payload))
			return false;
	if (f->n[SH_SHOULD] == 0)
		return true;
	for (size_t i = 0; i < f->n[SH_SHOULD]; i++)
		if (cond_passes(&f->conds[SH_SHOULD][i], id, payload))
			return true;
	return false;
}
