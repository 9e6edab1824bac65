/* The wire's Filter message → the index core's sh_filter. See wire.h. */
#include <stdio.h>
#include <stdlib.h>

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
