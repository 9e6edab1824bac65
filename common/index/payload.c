/* Payload indexes and the filter planner (see payload.h). */
#include "payload.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <roaring/roaring.h>
#include <xxhash.h>

#include "error.h"

/* One distinct keyword of a field. val NULL marks an empty slot. */
typedef struct kw_slot {
	char *val;
	uint64_t hash;
	roaring_bitmap_t *bm; /* never empty while val is set */
} kw_slot;

/* One numeric value of one point. Sorted by (v, iid). */
typedef struct num_entry {
	double v;
	uint32_t iid;
	uint32_t dead; /* removed; dropped at the next merge */
} num_entry;

typedef struct pfield {
	sh_payload_field decl;	   /* name owned */
	roaring_bitmap_t *present; /* iids where exists(name) holds */
	/* KEYWORD: open addressing, cap a power of two, load <= 3/4 */
	kw_slot *slots;
	size_t cap, used;
	/* BOOL */
	roaring_bitmap_t *btrue, *bfalse;
	/* INTEGER, FLOAT */
	num_entry *sorted;
	size_t nsorted, capsorted, ndead;
	num_entry *tail;
	size_t ntail, captail;
} pfield;

struct sh_payload_index {
	pfield *fields;
	size_t nfields;
	roaring_bitmap_t *all; /* every iid added and not removed */
};

static const char *const type_names[] = {"keyword", "integer", "float", "bool"};

const char *sh_payload_type_name(sh_payload_type t)
{
	return (unsigned)t < 4 ? type_names[t] : "unknown";
}

int sh_payload_type_parse(const char *name, sh_payload_type *out)
{
	for (int i = 0; name && i < 4; i++) {
		if (strcmp(name, type_names[i]) == 0) {
			*out = (sh_payload_type)i;
			return SH_OK;
		}
	}
	return SH_EINVAL;
}

static bool is_numeric(const pfield *f)
{
	return f->decl.type == SH_PAYLOAD_INTEGER ||
	       f->decl.type == SH_PAYLOAD_FLOAT;
}

/* ---- Lifecycle ----------------------------------------------------------- */

static void field_clear(pfield *f)
{
	free((char *)f->decl.name);
	roaring_bitmap_free(f->present);
	for (size_t i = 0; i < f->cap; i++) {
		if (f->slots[i].val) {
			free(f->slots[i].val);
			roaring_bitmap_free(f->slots[i].bm);
		}
	}
	free(f->slots);
	if (f->btrue)
		roaring_bitmap_free(f->btrue);
	if (f->bfalse)
		roaring_bitmap_free(f->bfalse);
	free(f->sorted);
	free(f->tail);
}

void sh_payload_index_free(sh_payload_index *idx)
{
	if (!idx)
		return;
	for (size_t i = 0; i < idx->nfields; i++)
		field_clear(&idx->fields[i]);
	free(idx->fields);
	if (idx->all)
		roaring_bitmap_free(idx->all);
	free(idx);
}

/* A field name is a filter key: reuse the filter's checks. */
static bool name_ok(const char *name)
{
	sh_filter probe = {0};
	sh_cond c = {.kind = SH_COND_EXISTS, .key = (char *)name};
	sh_cond *list = &c;
	probe.conds[SH_MUST] = list;
	probe.n[SH_MUST] = 1;
	return name && sh_filter_validate(&probe, NULL, 0) == SH_OK;
}

int sh_payload_index_new(const sh_payload_field *fields, size_t n,
			 sh_payload_index **out)
{
	sh_payload_index *idx = NULL;
	if (!out || (n && !fields) || n > SH_PAYLOAD_MAX_FIELDS)
		return SH_EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!name_ok(fields[i].name) || (unsigned)fields[i].type > 3)
			return SH_EINVAL;
		for (size_t j = 0; j < i; j++)
			if (strcmp(fields[i].name, fields[j].name) == 0)
				return SH_EINVAL;
	}
	idx = calloc(1, sizeof(*idx));
	if (!idx)
		goto nomem;
	idx->all = roaring_bitmap_create();
	if (!idx->all)
		goto nomem;
	if (n) {
		idx->fields = calloc(n, sizeof(pfield));
		if (!idx->fields)
			goto nomem;
	}
	for (size_t i = 0; i < n; i++) {
		pfield *f = &idx->fields[i];
		idx->nfields++;
		f->decl.type = fields[i].type;
		f->decl.name = strdup(fields[i].name);
		f->present = roaring_bitmap_create();
		if (!f->decl.name || !f->present)
			goto nomem;
		if (f->decl.type == SH_PAYLOAD_BOOL) {
			f->btrue = roaring_bitmap_create();
			f->bfalse = roaring_bitmap_create();
			if (!f->btrue || !f->bfalse)
				goto nomem;
		}
	}
	*out = idx;
	return SH_OK;
nomem:
	sh_payload_index_free(idx);
	return SH_ENOMEM;
}

size_t sh_payload_index_nfields(const sh_payload_index *idx)
{
	return idx->nfields;
}

const sh_payload_field *sh_payload_index_field(const sh_payload_index *idx,
					       size_t i)
{
	return i < idx->nfields ? &idx->fields[i].decl : NULL;
}

static const pfield *find_field(const sh_payload_index *idx, const char *key)
{
	for (size_t i = 0; i < idx->nfields; i++)
		if (strcmp(idx->fields[i].decl.name, key) == 0)
			return &idx->fields[i];
	return NULL;
}

/* ---- Keyword hash table -------------------------------------------------- */

static uint64_t kw_hash(const char *s)
{
	return XXH64(s, strlen(s), 0);
}

/* Slot holding s, or SIZE_MAX. */
static size_t kw_find(const pfield *f, const char *s, uint64_t h)
{
	if (!f->cap)
		return SIZE_MAX;
	size_t mask = f->cap - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		if (!f->slots[i].val)
			return SIZE_MAX;
		if (f->slots[i].hash == h && strcmp(f->slots[i].val, s) == 0)
			return i;
	}
}

static int kw_grow(pfield *f)
{
	size_t ncap = f->cap ? f->cap * 2 : 16;
	kw_slot *ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return SH_ENOMEM;
	for (size_t i = 0; i < f->cap; i++) {
		if (!f->slots[i].val)
			continue;
		size_t j = f->slots[i].hash & (ncap - 1);
		while (ns[j].val)
			j = (j + 1) & (ncap - 1);
		ns[j] = f->slots[i];
	}
	free(f->slots);
	f->slots = ns;
	f->cap = ncap;
	return SH_OK;
}

static int kw_add(pfield *f, const char *s, uint32_t iid)
{
	uint64_t h = kw_hash(s);
	size_t i = kw_find(f, s, h);
	if (i == SIZE_MAX) {
		if ((f->used + 1) * 4 > f->cap * 3 && kw_grow(f) != SH_OK)
			return SH_ENOMEM;
		kw_slot nslot = {
		    .val = strdup(s), .hash = h, .bm = roaring_bitmap_create()};
		if (!nslot.val || !nslot.bm) {
			free(nslot.val);
			if (nslot.bm)
				roaring_bitmap_free(nslot.bm);
			return SH_ENOMEM;
		}
		size_t mask = f->cap - 1;
		for (i = h & mask; f->slots[i].val; i = (i + 1) & mask)
			;
		f->slots[i] = nslot;
		f->used++;
	}
	roaring_bitmap_add(f->slots[i].bm, iid);
	return SH_OK;
}

/* Deletes slot i with backward shift: later members of its probe chain move
 * up so that no lookup ever meets a hole before its key. */
static void kw_delete_slot(pfield *f, size_t i)
{
	size_t mask = f->cap - 1;
	free(f->slots[i].val);
	roaring_bitmap_free(f->slots[i].bm);
	memset(&f->slots[i], 0, sizeof(kw_slot));
	f->used--;
	for (size_t j = (i + 1) & mask; f->slots[j].val; j = (j + 1) & mask) {
		size_t home = f->slots[j].hash & mask;
		/* j may move to i when its home is not in (i, j] cyclically */
		bool in_between =
		    i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (in_between)
			continue;
		f->slots[i] = f->slots[j];
		memset(&f->slots[j], 0, sizeof(kw_slot));
		i = j;
	}
}

static void kw_remove(pfield *f, const char *s, uint32_t iid)
{
	size_t i = kw_find(f, s, kw_hash(s));
	if (i == SIZE_MAX)
		return;
	roaring_bitmap_remove(f->slots[i].bm, iid);
	if (roaring_bitmap_is_empty(f->slots[i].bm))
		kw_delete_slot(f, i);
}

/* ---- Numeric structure --------------------------------------------------- */

static int num_cmp(const num_entry *a, double v, uint32_t iid)
{
	if (a->v < v)
		return -1;
	if (a->v > v)
		return 1;
	return a->iid < iid ? -1 : a->iid > iid ? 1 : 0;
}

static int num_qsort_cmp(const void *x, const void *y)
{
	const num_entry *b = y;
	return num_cmp(x, b->v, b->iid);
}

/* Sorts the tail into the sorted part, dropping dead entries. */
static int num_merge(pfield *f)
{
	size_t live = f->nsorted - f->ndead + f->ntail;
	size_t ncap = live > 16 ? live + live / 4 : 16;
	num_entry *out = malloc(ncap * sizeof(*out));
	if (!out)
		return SH_ENOMEM;
	qsort(f->tail, f->ntail, sizeof(num_entry), num_qsort_cmp);
	size_t a = 0, b = 0, o = 0;
	while (a < f->nsorted || b < f->ntail) {
		if (a < f->nsorted && f->sorted[a].dead) {
			a++;
			continue;
		}
		if (b >= f->ntail ||
		    (a < f->nsorted &&
		     num_cmp(&f->sorted[a], f->tail[b].v, f->tail[b].iid) <= 0))
			out[o++] = f->sorted[a++];
		else
			out[o++] = f->tail[b++];
	}
	free(f->sorted);
	f->sorted = out;
	f->nsorted = o;
	f->capsorted = ncap;
	f->ndead = 0;
	f->ntail = 0;
	return SH_OK;
}

static size_t tail_limit(const pfield *f)
{
	size_t t = f->nsorted / SH_PAYLOAD_TAIL_DIV;
	return t > SH_PAYLOAD_TAIL_MIN ? t : SH_PAYLOAD_TAIL_MIN;
}

static int num_add(pfield *f, double v, uint32_t iid)
{
	if (isnan(v))
		return SH_OK; /* in no range, matches no integer */
	if (f->ntail == f->captail) {
		size_t ncap = f->captail ? f->captail * 2 : 64;
		num_entry *nt = realloc(f->tail, ncap * sizeof(*nt));
		if (!nt)
			return SH_ENOMEM;
		f->tail = nt;
		f->captail = ncap;
	}
	f->tail[f->ntail++] = (num_entry){.v = v, .iid = iid};
	if (f->ntail >= tail_limit(f))
		return num_merge(f);
	return SH_OK;
}

/* First index in the sorted part whose entry is >= (v, iid). */
static size_t num_lower(const pfield *f, double v, uint32_t iid)
{
	size_t lo = 0, hi = f->nsorted;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (num_cmp(&f->sorted[mid], v, iid) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int num_remove(pfield *f, double v, uint32_t iid)
{
	if (isnan(v))
		return SH_OK;
	for (size_t i = 0; i < f->ntail;) {
		if (num_cmp(&f->tail[i], v, iid) == 0)
			f->tail[i] = f->tail[--f->ntail];
		else
			i++;
	}
	for (size_t i = num_lower(f, v, iid);
	     i < f->nsorted && num_cmp(&f->sorted[i], v, iid) == 0; i++) {
		if (!f->sorted[i].dead) {
			f->sorted[i].dead = 1;
			f->ndead++;
		}
	}
	if (f->ndead > SH_PAYLOAD_TAIL_MIN && f->ndead * 4 > f->nsorted)
		return num_merge(f);
	return SH_OK;
}

static bool above_lower(const sh_range *r, double d)
{
	return (!r->has_gt || d > r->gt) && (!r->has_gte || d >= r->gte);
}

static bool below_upper(const sh_range *r, double d)
{
	return (!r->has_lt || d < r->lt) && (!r->has_lte || d <= r->lte);
}

/* Adds to bm every live iid whose value is in r. */
static void num_range(const pfield *f, const sh_range *r, roaring_bitmap_t *bm)
{
	uint32_t buf[256];
	size_t nb = 0;
	/* The sorted part is ordered by value: the entries in range are one
	 * run, from the first above the lower bound to the first past the
	 * upper bound (both predicates are monotone in the value). */
	size_t lo = 0, hi = f->nsorted;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (above_lower(r, f->sorted[mid].v))
			hi = mid;
		else
			lo = mid + 1;
	}
	size_t a = lo;
	hi = f->nsorted;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (below_upper(r, f->sorted[mid].v))
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = a; i < lo; i++) {
		if (f->sorted[i].dead)
			continue;
		buf[nb++] = f->sorted[i].iid;
		if (nb == 256) {
			roaring_bitmap_add_many(bm, nb, buf);
			nb = 0;
		}
	}
	for (size_t i = 0; i < f->ntail; i++) {
		if (!sh_range_contains(r, f->tail[i].v))
			continue;
		buf[nb++] = f->tail[i].iid;
		if (nb == 256) {
			roaring_bitmap_add_many(bm, nb, buf);
			nb = 0;
		}
	}
	if (nb)
		roaring_bitmap_add_many(bm, nb, buf);
}

/* ---- Writes -------------------------------------------------------------- */

/* Indexes (add) or unindexes one scalar value of field f. */
static int field_value(pfield *f, const cJSON *v, uint32_t iid, bool add)
{
	switch (f->decl.type) {
	case SH_PAYLOAD_KEYWORD:
		if (!cJSON_IsString(v) || !v->valuestring)
			return SH_OK;
		if (add)
			return kw_add(f, v->valuestring, iid);
		kw_remove(f, v->valuestring, iid);
		return SH_OK;
	case SH_PAYLOAD_BOOL:
		if (!cJSON_IsBool(v))
			return SH_OK;
		if (add)
			roaring_bitmap_add(
			    cJSON_IsTrue(v) ? f->btrue : f->bfalse, iid);
		else
			roaring_bitmap_remove(
			    cJSON_IsTrue(v) ? f->btrue : f->bfalse, iid);
		return SH_OK;
	case SH_PAYLOAD_INTEGER:
	case SH_PAYLOAD_FLOAT:
		if (!cJSON_IsNumber(v))
			return SH_OK;
		return add ? num_add(f, v->valuedouble, iid)
			   : num_remove(f, v->valuedouble, iid);
	}
	return SH_OK;
}

static int apply(sh_payload_index *idx, uint32_t iid, const cJSON *payload,
		 bool add)
{
	int rc = SH_OK;
	if (add)
		roaring_bitmap_add(idx->all, iid);
	else
		roaring_bitmap_remove(idx->all, iid);
	if (!payload || !cJSON_IsObject(payload))
		return SH_OK;
	for (size_t i = 0; i < idx->nfields; i++) {
		pfield *f = &idx->fields[i];
		const cJSON *v = sh_filter_lookup(payload, f->decl.name);
		if (!v)
			continue;
		if (sh_filter_value_exists(v)) {
			if (add)
				roaring_bitmap_add(f->present, iid);
			else
				roaring_bitmap_remove(f->present, iid);
		}
		if (!cJSON_IsArray(v)) {
			int r = field_value(f, v, iid, add);
			rc = rc ? rc : r;
			continue;
		}
		for (const cJSON *e = v->child; e; e = e->next) {
			int r = field_value(f, e, iid, add);
			rc = rc ? rc : r;
		}
	}
	return rc;
}

int sh_payload_index_add(sh_payload_index *idx, uint32_t iid,
			 const cJSON *payload)
{
	return apply(idx, iid, payload, true);
}

int sh_payload_index_remove(sh_payload_index *idx, uint32_t iid,
			    const cJSON *payload)
{
	return apply(idx, iid, payload, false);
}

/* ---- Reads --------------------------------------------------------------- */

uint64_t sh_payload_index_count(const sh_payload_index *idx)
{
	return roaring_bitmap_get_cardinality(idx->all);
}

size_t sh_payload_index_mem(const sh_payload_index *idx)
{
	size_t m = sizeof(*idx) + roaring_bitmap_size_in_bytes(idx->all);
	for (size_t i = 0; i < idx->nfields; i++) {
		const pfield *f = &idx->fields[i];
		m += sizeof(*f) + strlen(f->decl.name) + 1 +
		     roaring_bitmap_size_in_bytes(f->present);
		m += f->cap * sizeof(kw_slot);
		for (size_t j = 0; j < f->cap; j++)
			if (f->slots[j].val)
				m += strlen(f->slots[j].val) + 1 +
				     roaring_bitmap_size_in_bytes(
					 f->slots[j].bm);
		if (f->btrue)
			m += roaring_bitmap_size_in_bytes(f->btrue) +
			     roaring_bitmap_size_in_bytes(f->bfalse);
		m += (f->capsorted + f->captail) * sizeof(num_entry);
	}
	return m;
}

/* ---- Planner ------------------------------------------------------------- */

/*
 * Each clause plans to a part: bm, a superset of the points among those
 * added that pass the clause (NULL: all of them), exact when bm is exactly
 * that set (with bm NULL: every point passes), and est, a guess of how many
 * pass.
 */
typedef struct part {
	roaring_bitmap_t *bm;
	bool exact;
	double est;
} part;

typedef struct plan_ctx {
	const sh_payload_index *idx;
	double live;
	uint32_t n_indexed, n_unindexed;
} plan_ctx;

static void part_free(part *p)
{
	if (p->bm)
		roaring_bitmap_free(p->bm);
	p->bm = NULL;
}

/* A condition no index answers: every point may pass. */
static int unindexed(plan_ctx *cx, part *out, double est)
{
	cx->n_unindexed++;
	*out = (part){.bm = NULL, .exact = false, .est = est};
	return SH_OK;
}

/* A condition on an indexed field of another type: the field's present set
 * is a superset (a value that passes exists). */
static int present_superset(plan_ctx *cx, const pfield *f, part *out)
{
	cx->n_unindexed++;
	out->bm = roaring_bitmap_copy(f->present);
	out->exact = false;
	out->est = out->bm ? (double)roaring_bitmap_get_cardinality(out->bm) *
				 SH_PAYLOAD_UNINDEXED_SELECTIVITY
			   : 0;
	return out->bm ? SH_OK : SH_ENOMEM;
}

/* 2^53: integers up to here are doubles exactly. */
#define EXACT_INT_LIMIT 9007199254740992LL

static int plan_cond(plan_ctx *cx, const sh_cond *c, part *out);

static int plan_node(plan_ctx *cx, const sh_filter *f, part *out)
{
	roaring_bitmap_t *acc = NULL;
	bool exact = true;
	double est = cx->live;
	part r = {0};
	int rc;

	for (size_t i = 0; i < f->n[SH_MUST]; i++) {
		if ((rc = plan_cond(cx, &f->conds[SH_MUST][i], &r)) != SH_OK)
			goto fail;
		exact &= r.exact;
		est = fmin(est, r.est);
		if (!r.bm)
			continue;
		if (acc) {
			roaring_bitmap_and_inplace(acc, r.bm);
			part_free(&r);
		} else {
			acc = r.bm;
			r.bm = NULL;
		}
	}
	if (f->n[SH_SHOULD]) {
		roaring_bitmap_t *u = NULL;
		bool everything = false, uexact = true;
		double usum = 0;
		for (size_t i = 0; i < f->n[SH_SHOULD]; i++) {
			rc = plan_cond(cx, &f->conds[SH_SHOULD][i], &r);
			if (rc != SH_OK) {
				if (u)
					roaring_bitmap_free(u);
				goto fail;
			}
			uexact &= r.exact;
			usum += r.est;
			if (!r.bm)
				everything = true;
			if (!r.bm || everything) {
				part_free(&r);
			} else if (u) {
				roaring_bitmap_or_inplace(u, r.bm);
				part_free(&r);
			} else {
				u = r.bm;
				r.bm = NULL;
			}
		}
		if (everything && u) {
			roaring_bitmap_free(u);
			u = NULL;
		}
		exact &= uexact;
		est = fmin(est, usum);
		if (u && acc) {
			roaring_bitmap_and_inplace(acc, u);
			roaring_bitmap_free(u);
		} else if (u) {
			acc = u;
		}
	}
	for (size_t i = 0; i < f->n[SH_MUST_NOT]; i++) {
		rc = plan_cond(cx, &f->conds[SH_MUST_NOT][i], &r);
		if (rc != SH_OK)
			goto fail;
		if (!r.exact) {
			/* Subtracting a superset could drop passing points:
			 * leave this clause to the residual check. */
			exact = false;
			est *= 1.0 - SH_PAYLOAD_UNINDEXED_SELECTIVITY;
			part_free(&r);
			continue;
		}
		if (!acc) {
			acc = roaring_bitmap_copy(cx->idx->all);
			if (!acc) {
				rc = SH_ENOMEM;
				goto fail;
			}
		}
		if (r.bm)
			roaring_bitmap_andnot_inplace(acc, r.bm);
		else
			roaring_bitmap_clear(acc); /* clause passes everyone */
		part_free(&r);
	}
	if (acc) {
		uint64_t card = roaring_bitmap_get_cardinality(acc);
		est = fmin(est, (double)card);
		if (card == 0)
			exact = true; /* nothing can pass: exactly right */
	}
	*out = (part){.bm = acc, .exact = exact, .est = est};
	return SH_OK;
fail:
	part_free(&r);
	if (acc)
		roaring_bitmap_free(acc);
	return rc;
}

static int plan_cond(plan_ctx *cx, const sh_cond *c, part *out)
{
	const pfield *f;
	*out = (part){0};
	switch (c->kind) {
	case SH_COND_NESTED:
		return plan_node(cx, c->sub, out);
	case SH_COND_HAS_ID:
		return unindexed(cx, out, fmin(cx->live, (double)c->nids));
	default:
		break;
	}
	f = find_field(cx->idx, c->key);
	if (!f)
		return unindexed(cx, out,
				 cx->live * SH_PAYLOAD_UNINDEXED_SELECTIVITY);
	bool exact = true;
	roaring_bitmap_t *bm = NULL;
	switch (c->kind) {
	case SH_COND_EXISTS:
		bm = roaring_bitmap_copy(f->present);
		break;
	case SH_COND_RANGE:
		if (!is_numeric(f))
			return present_superset(cx, f, out);
		if ((bm = roaring_bitmap_create()))
			num_range(f, &c->range, bm);
		break;
	case SH_COND_MATCH:
		if (c->mkind == SH_MATCH_KEYWORD &&
		    f->decl.type == SH_PAYLOAD_KEYWORD) {
			if (!(bm = roaring_bitmap_create()))
				break;
			for (size_t i = 0; i < c->nvals; i++) {
				const char *s = c->keywords[i];
				size_t j = kw_find(f, s, kw_hash(s));
				if (j != SIZE_MAX)
					roaring_bitmap_or_inplace(
					    bm, f->slots[j].bm);
			}
		} else if (c->mkind == SH_MATCH_BOOL &&
			   f->decl.type == SH_PAYLOAD_BOOL) {
			bm = roaring_bitmap_copy(c->boolean ? f->btrue
							    : f->bfalse);
		} else if (c->mkind == SH_MATCH_INTEGER && is_numeric(f)) {
			if (!(bm = roaring_bitmap_create()))
				break;
			for (size_t i = 0; i < c->nvals; i++) {
				int64_t v = c->integers[i];
				sh_range r = {.has_gte = true,
					      .has_lte = true,
					      .gte = (double)v,
					      .lte = (double)v};
				/* Beyond 2^53 several integers share one
				 * double: the bitmap is a superset. */
				if (v > EXACT_INT_LIMIT || v < -EXACT_INT_LIMIT)
					exact = false;
				num_range(f, &r, bm);
			}
		} else {
			return present_superset(cx, f, out);
		}
		break;
	default:
		return unindexed(cx, out, cx->live);
	}
	if (!bm)
		return SH_ENOMEM;
	if (exact)
		cx->n_indexed++;
	else
		cx->n_unindexed++;
	*out = (part){.bm = bm,
		      .exact = exact,
		      .est = (double)roaring_bitmap_get_cardinality(bm)};
	return SH_OK;
}

int sh_payload_index_plan(const sh_payload_index *idx, const sh_filter *f,
			  uint64_t live, sh_filter_plan *out)
{
	if (!idx || !f || !out)
		return SH_EINVAL;
	memset(out, 0, sizeof(*out));
	plan_ctx cx = {.idx = idx, .live = (double)live};
	part r;
	int rc = plan_node(&cx, f, &r);
	if (rc != SH_OK)
		return rc;
	out->allow = r.bm;
	out->residual = !r.exact;
	double est = fmax(0, fmin(r.est, (double)live));
	if (r.bm)
		est = fmin(est, (double)roaring_bitmap_get_cardinality(r.bm));
	/* A bitmap's count is exact; a guess never reads as "none pass". */
	if (!r.bm && est < 1 && live > 0)
		est = 1;
	out->est_pass = (uint64_t)est;
	out->n_indexed = cx.n_indexed;
	out->n_unindexed = cx.n_unindexed;
	return SH_OK;
}

void sh_filter_plan_clear(sh_filter_plan *p)
{
	if (!p)
		return;
	if (p->allow)
		roaring_bitmap_free(p->allow);
	memset(p, 0, sizeof(*p));
}

/* ---- Testing hooks ------------------------------------------------------- */

int sh_payload_index_validate(const sh_payload_index *idx, char *err,
			      size_t errlen)
{
	for (size_t i = 0; i < idx->nfields; i++) {
		const pfield *f = &idx->fields[i];
		const char *nm = f->decl.name;
		if (!roaring_bitmap_is_subset(f->present, idx->all))
			return sh_errf(err, errlen, SH_ECORRUPT,
				       "%s: present outside the "
				       "universe",
				       nm);
		size_t used = 0;
		for (size_t j = 0; j < f->cap; j++) {
			const kw_slot *s = &f->slots[j];
			if (!s->val)
				continue;
			used++;
			if (s->hash != kw_hash(s->val))
				return sh_errf(err, errlen, SH_ECORRUPT,
					       "%s: bad hash", nm);
			if (roaring_bitmap_is_empty(s->bm) ||
			    !roaring_bitmap_is_subset(s->bm, f->present))
				return sh_errf(
				    err, errlen, SH_ECORRUPT,
				    "%s: keyword \"%s\" bitmap empty or "
				    "outside present",
				    nm, s->val);
			if (kw_find(f, s->val, s->hash) != j)
				return sh_errf(
				    err, errlen, SH_ECORRUPT,
				    "%s: probe chain of \"%s\" broken", nm,
				    s->val);
		}
		if (used != f->used)
			return sh_errf(err, errlen, SH_ECORRUPT,
				       "%s: %zu keywords, counted %zu", nm,
				       f->used, used);
		if (f->btrue &&
		    (!roaring_bitmap_is_subset(f->btrue, f->present) ||
		     !roaring_bitmap_is_subset(f->bfalse, f->present)))
			return sh_errf(err, errlen, SH_ECORRUPT,
				       "%s: bool outside present", nm);
		size_t dead = 0;
		for (size_t j = 0; j < f->nsorted; j++) {
			dead += f->sorted[j].dead != 0;
			if (j && num_cmp(&f->sorted[j - 1], f->sorted[j].v,
					 f->sorted[j].iid) > 0)
				return sh_errf(err, errlen, SH_ECORRUPT,
					       "%s: not sorted at %zu", nm, j);
			if (!f->sorted[j].dead &&
			    !roaring_bitmap_contains(f->present,
						     f->sorted[j].iid))
				return sh_errf(
				    err, errlen, SH_ECORRUPT,
				    "%s: numeric entry outside present", nm);
		}
		if (dead != f->ndead)
			return sh_errf(err, errlen, SH_ECORRUPT,
				       "%s: dead count", nm);
		for (size_t j = 0; j < f->ntail; j++)
			if (!roaring_bitmap_contains(f->present,
						     f->tail[j].iid))
				return sh_errf(err, errlen, SH_ECORRUPT,
					       "%s: tail entry outside present",
					       nm);
	}
	return SH_OK;
}
