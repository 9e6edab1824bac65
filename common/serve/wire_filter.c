/* The wire's Filter message ↔ the index core's sh_filter. See wire.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filter.h"
#include "wire.h"

#define MATCH(x) SHOAL__V1__MATCH__VALUE_##x

static int add_condition(sh_filter *f, sh_occur occ,
			 const Shoal__V1__Condition *c, char *err,
			 size_t errlen)
{
	switch (c ? c->kind_case : 0) {
	case SHOAL__V1__CONDITION__KIND_MATCH: {
		const Shoal__V1__Match *m = c->match;
		switch (m->value_case) {
		case MATCH(KEYWORD):
			return sh_filter_add_match_keyword(f, occ, m->key,
							   m->keyword);
		case MATCH(INTEGER):
			return sh_filter_add_match_integer(f, occ, m->key,
							   m->integer);
		case MATCH(BOOLEAN):
			return sh_filter_add_match_bool(f, occ, m->key,
							m->boolean != 0);
		case MATCH(ANY_KEYWORD):
			return sh_filter_add_match_any_keyword(
			    f, occ, m->key,
			    (const char *const *)m->any_keyword->values,
			    m->any_keyword->n_values);
		case MATCH(ANY_INTEGER):
			return sh_filter_add_match_any_integer(
			    f, occ, m->key, m->any_integer->values,
			    m->any_integer->n_values);
		default:
			return sh_errf(err, errlen, SH_EINVAL,
				       "filter: match on '%s' has no value",
				       m->key);
		}
	}
	case SHOAL__V1__CONDITION__KIND_RANGE: {
		const Shoal__V1__Range *r = c->range;
		sh_range sr = {
		    .has_gt = r->has_gt_case == SHOAL__V1__RANGE__HAS_GT_GT,
		    .has_gte = r->has_gte_case == SHOAL__V1__RANGE__HAS_GTE_GTE,
		    .has_lt = r->has_lt_case == SHOAL__V1__RANGE__HAS_LT_LT,
		    .has_lte = r->has_lte_case == SHOAL__V1__RANGE__HAS_LTE_LTE,
		};
		sr.gt = sr.has_gt ? r->gt : 0;
		sr.gte = sr.has_gte ? r->gte : 0;
		sr.lt = sr.has_lt ? r->lt : 0;
		sr.lte = sr.has_lte ? r->lte : 0;
		return sh_filter_add_range(f, occ, r->key, &sr);
	}
	case SHOAL__V1__CONDITION__KIND_EXISTS:
		return sh_filter_add_exists(f, occ, c->exists->key);
	case SHOAL__V1__CONDITION__KIND_HAS_ID: {
		const Shoal__V1__HasId *h = c->has_id;
		sh_pid *ids = calloc(h->n_ids ? h->n_ids : 1, sizeof(*ids));
		if (!ids)
			return SH_ENOMEM;
		int rc = SH_OK;
		for (size_t i = 0; i < h->n_ids && !rc; i++)
			if (sh_wire_pid_from_proto(h->ids[i], &ids[i]) != SH_OK)
				rc = sh_errf(
				    err, errlen, SH_EINVAL,
				    "filter: has_id[%zu] is not a valid "
				    "point id",
				    i);
		if (!rc)
			rc = sh_filter_add_has_id(f, occ, ids, h->n_ids);
		free(ids);
		return rc;
	}
	default:
		return sh_errf(err, errlen, SH_EINVAL,
			       "filter: a condition has no kind");
	}
}

static int convert(const Shoal__V1__Filter *in, sh_filter *f, int depth,
		   char *err, size_t errlen)
{
	const size_t n[3] = {in->n_must, in->n_should, in->n_must_not};
	Shoal__V1__Clause **const lists[3] = {in->must, in->should,
					      in->must_not};
	const sh_occur occ[3] = {SH_MUST, SH_SHOULD, SH_MUST_NOT};
	if (depth > SH_FILTER_MAX_DEPTH)
		return sh_errf(err, errlen, SH_EINVAL,
			       "filter: nested deeper than %d",
			       SH_FILTER_MAX_DEPTH);
	for (int l = 0; l < 3; l++) {
		for (size_t i = 0; i < n[l]; i++) {
			const Shoal__V1__Clause *c = lists[l][i];
			int rc;
			if (c &&
			    c->kind_case == SHOAL__V1__CLAUSE__KIND_FILTER) {
				sh_filter *sub;
				if ((rc = sh_filter_new(&sub)))
					return rc;
				rc = convert(c->filter, sub, depth + 1, err,
					     errlen);
				if (!rc)
					rc = sh_filter_add_nested(f, occ[l],
								  sub);
				if (rc)
					sh_filter_free(sub);
			} else if (c && c->kind_case ==
					    SHOAL__V1__CLAUSE__KIND_CONDITION) {
				rc = add_condition(f, occ[l], c->condition, err,
						   errlen);
			} else {
				rc = sh_errf(err, errlen, SH_EINVAL,
					     "filter: a clause is empty");
			}
			if (rc)
				return rc;
		}
	}
	return SH_OK;
}

int sh_wire_filter_to_sh(const Shoal__V1__Filter *in, sh_filter **out,
			 char *err, size_t errlen)
{
	sh_filter *f;
	int rc = sh_filter_new(&f);
	if (rc)
		return rc;
	if (in && (rc = convert(in, f, 1, err, errlen)) == SH_OK)
		rc = sh_filter_validate(f, err, errlen);
	if (rc) {
		sh_filter_free(f);
		return rc;
	}
	*out = f;
	return SH_OK;
}

/* ---- sh_filter → the wire's Filter ------------------------------------- */

/* Every object below is allocated on its own with malloc/calloc, the way
 * protobuf-c's unpacker allocates, so that shoal__v1__filter__free_unpacked
 * (with the default allocator) frees a tree built here, and so does the
 * error path of a half-built one: an object is linked into its parent only
 * once it is complete enough to be freed that way. */

static char *dup_str(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

static Shoal__V1__PointId *pid_to_new_proto(const sh_pid *id)
{
	Shoal__V1__PointId *p = malloc(sizeof(*p));
	if (!p)
		return NULL;
	shoal__v1__point_id__init(p);
	if (id->kind == SH_PID_STR) {
		char *s = malloc((size_t)id->len + 1);
		if (!s) {
			free(p);
			return NULL;
		}
		memcpy(s, id->str, id->len);
		s[id->len] = 0;
		p->kind_case = SHOAL__V1__POINT_ID__KIND_STR;
		p->str = s;
	} else {
		p->kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		p->num = id->num;
	}
	return p;
}

/* A Match for a match condition; NULL when out of memory. */
static Shoal__V1__Match *match_from_sh(const sh_cond *c)
{
	Shoal__V1__Match *m = malloc(sizeof(*m));
	if (!m)
		return NULL;
	shoal__v1__match__init(m);
	if (!(m->key = dup_str(c->key)))
		goto fail;
	if (c->mkind == SH_MATCH_BOOL) {
		m->value_case = MATCH(BOOLEAN);
		m->boolean = c->boolean;
	} else if (c->mkind == SH_MATCH_INTEGER && c->nvals == 1) {
		m->value_case = MATCH(INTEGER);
		m->integer = c->integers[0];
	} else if (c->mkind == SH_MATCH_KEYWORD && c->nvals == 1) {
		if (!(m->keyword = dup_str(c->keywords[0])))
			goto fail;
		m->value_case = MATCH(KEYWORD);
	} else if (c->mkind == SH_MATCH_INTEGER) {
		Shoal__V1__IntegerSet *s = malloc(sizeof(*s));
		if (!s)
			goto fail;
		shoal__v1__integer_set__init(s);
		m->value_case = MATCH(ANY_INTEGER);
		m->any_integer = s;
		if (!(s->values = malloc(c->nvals * sizeof(*s->values))))
			goto fail;
		memcpy(s->values, c->integers, c->nvals * sizeof(*s->values));
		s->n_values = c->nvals;
	} else {
		Shoal__V1__KeywordSet *s = malloc(sizeof(*s));
		if (!s)
			goto fail;
		shoal__v1__keyword_set__init(s);
		m->value_case = MATCH(ANY_KEYWORD);
		m->any_keyword = s;
		if (!(s->values = calloc(c->nvals, sizeof(*s->values))))
			goto fail;
		for (size_t i = 0; i < c->nvals; i++, s->n_values++)
			if (!(s->values[i] = dup_str(c->keywords[i])))
				goto fail;
	}
	return m;
fail:
	shoal__v1__match__free_unpacked(m, NULL);
	return NULL;
}

static Shoal__V1__Condition *cond_from_sh(const sh_cond *c)
{
	Shoal__V1__Condition *co = malloc(sizeof(*co));
	if (!co)
		return NULL;
	shoal__v1__condition__init(co);
	switch (c->kind) {
	case SH_COND_MATCH:
		if (!(co->match = match_from_sh(c)))
			goto fail;
		co->kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
		break;
	case SH_COND_RANGE: {
		Shoal__V1__Range *r = malloc(sizeof(*r));
		if (!r)
			goto fail;
		shoal__v1__range__init(r);
		co->kind_case = SHOAL__V1__CONDITION__KIND_RANGE;
		co->range = r;
		if (!(r->key = dup_str(c->key)))
			goto fail;
		if (c->range.has_gt) {
			r->has_gt_case = SHOAL__V1__RANGE__HAS_GT_GT;
			r->gt = c->range.gt;
		}
		if (c->range.has_gte) {
			r->has_gte_case = SHOAL__V1__RANGE__HAS_GTE_GTE;
			r->gte = c->range.gte;
		}
		if (c->range.has_lt) {
			r->has_lt_case = SHOAL__V1__RANGE__HAS_LT_LT;
			r->lt = c->range.lt;
		}
		if (c->range.has_lte) {
			r->has_lte_case = SHOAL__V1__RANGE__HAS_LTE_LTE;
			r->lte = c->range.lte;
		}
		break;
	}
	case SH_COND_EXISTS: {
		Shoal__V1__Exists *e = malloc(sizeof(*e));
		if (!e)
			goto fail;
		shoal__v1__exists__init(e);
		co->kind_case = SHOAL__V1__CONDITION__KIND_EXISTS;
		co->exists = e;
		if (!(e->key = dup_str(c->key)))
			goto fail;
		break;
	}
	case SH_COND_HAS_ID: {
		Shoal__V1__HasId *h = malloc(sizeof(*h));
		if (!h)
			goto fail;
		shoal__v1__has_id__init(h);
		co->kind_case = SHOAL__V1__CONDITION__KIND_HAS_ID;
		co->has_id = h;
		if (!(h->ids = calloc(c->nids ? c->nids : 1, sizeof(*h->ids))))
			goto fail;
		for (size_t i = 0; i < c->nids; i++, h->n_ids++)
			if (!(h->ids[i] = pid_to_new_proto(&c->ids[i])))
				goto fail;
		break;
	}
	default:
		goto fail;
	}
	return co;
fail:
	shoal__v1__condition__free_unpacked(co, NULL);
	return NULL;
}

static Shoal__V1__Filter *filter_from_sh(const sh_filter *f);

static Shoal__V1__Clause *clause_from_sh(const sh_cond *c)
{
	Shoal__V1__Clause *k = malloc(sizeof(*k));
	if (!k)
		return NULL;
	shoal__v1__clause__init(k);
	if (c->kind == SH_COND_NESTED) {
		if (!(k->filter = filter_from_sh(c->sub)))
			goto fail;
		k->kind_case = SHOAL__V1__CLAUSE__KIND_FILTER;
	} else {
		if (!(k->condition = cond_from_sh(c)))
			goto fail;
		k->kind_case = SHOAL__V1__CLAUSE__KIND_CONDITION;
	}
	return k;
fail:
	free(k);
	return NULL;
}

/* Recursion is bounded: the caller validated the depth. */
static Shoal__V1__Filter *filter_from_sh(const sh_filter *f)
{
	Shoal__V1__Filter *w = malloc(sizeof(*w));
	if (!w)
		return NULL;
	shoal__v1__filter__init(w);
	Shoal__V1__Clause ***lists[SH_OCCUR_COUNT] = {&w->must, &w->should,
						      &w->must_not};
	size_t *counts[SH_OCCUR_COUNT] = {&w->n_must, &w->n_should,
					  &w->n_must_not};
	for (int l = 0; l < SH_OCCUR_COUNT; l++) {
		if (!f->n[l])
			continue;
		*lists[l] = calloc(f->n[l], sizeof(**lists[l]));
		if (!*lists[l])
			goto fail;
		for (size_t i = 0; i < f->n[l]; i++, (*counts[l])++)
			if (!((*lists[l])[i] = clause_from_sh(&f->conds[l][i])))
				goto fail;
	}
	return w;
fail:
	shoal__v1__filter__free_unpacked(w, NULL);
	return NULL;
}

int sh_wire_filter_from_sh(const sh_filter *in, Shoal__V1__Filter **out,
			   char *err, size_t errlen)
{
	*out = NULL;
	if (!in)
		return SH_OK;
	int rc = sh_filter_validate(in, err, errlen);
	if (rc)
		return rc;
	if (!(*out = filter_from_sh(in)))
		return sh_errf(err, errlen, SH_ENOMEM,
			       "filter: out of memory converting to the wire");
	return SH_OK;
}

void sh_wire_filter_free(Shoal__V1__Filter *f)
{
	if (f)
		shoal__v1__filter__free_unpacked(f, NULL);
}
