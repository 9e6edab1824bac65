/* Wire helpers: decode, validate, encode. See wire.h. */
#include "wire.h"

#include "arena.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "hnsw.h"

/* The ErrorCode enum of shoal.proto must mirror SH_ERRNO_MAP number for
 * number; a code added to one and not the other fails the build here. */
#define SH_WIRE_CHECK_CODE_(name, num, msg)                                    \
	_Static_assert((int)SHOAL__V1__ERROR_CODE__##name == (num),            \
		       "shoal.proto ErrorCode " #name                          \
		       " differs from error.h");
SH_ERRNO_MAP(SH_WIRE_CHECK_CODE_)
#undef SH_WIRE_CHECK_CODE_

_Static_assert(SH_WIRE_MAX_DIM == SH_HNSW_MAX_DIM, "dimension limits differ");

void sh_wire_limits_default(sh_wire_limits *lim)
{
	lim->max_message_bytes = SH_WIRE_MAX_MESSAGE;
	lim->max_batch_points = SH_WIRE_MAX_BATCH_POINTS;
	lim->max_ids = SH_WIRE_MAX_IDS;
	lim->max_queries = SH_WIRE_MAX_QUERIES;
	lim->max_k = SH_WIRE_MAX_K;
	lim->max_ef = SH_WIRE_MAX_EF;
	lim->max_filter_depth = SH_WIRE_MAX_FILTER_DEPTH;
	lim->max_filter_clauses = SH_WIRE_MAX_FILTER_CLAUSES;
	lim->max_items = SH_WIRE_MAX_ITEMS;
}

/* A message for the caller; the code is returned separately. */
#define set_err(err, errlen, ...) ((void)sh_errf(err, errlen, 0, __VA_ARGS__))

/* ---- The raw pre-scan ---------------------------------------------------- */

/*
 * Before protobuf-c unpacks a message, one pass over the raw bytes, guided
 * by the descriptors, checks what protobuf-c does not:
 *
 * - nesting depth: protobuf-c recurses once per nested message with no
 *   limit, so deep nesting would overflow the stack;
 * - allocation count: protobuf-c keeps a record of ~40 bytes per field
 *   occurrence while it unpacks, and every sub-message, string and element
 *   of a packed varint field becomes an allocation or an array slot far
 *   larger than its bytes on the wire;
 * - strings: UTF-8 without NUL (proto3 requires UTF-8; NUL would truncate).
 *
 * The scan is not a full parser: bytes it cannot walk are reported
 * malformed, and anything it lets through is still parsed by protobuf-c,
 * which has the last word on well-formedness (a wire type that does not fit
 * its field, say).
 */
typedef struct scan_state {
	uint32_t max_depth;
	uint64_t items;
	uint64_t max_items; /* UINT64_MAX: not counted */
	const char *what;   /* "request" or "response", for messages */
	char *err;
	size_t errlen;
} scan_state;

/* Reads a varint at *pos; false when it runs past n or over 10 bytes. */
static bool read_varint(const uint8_t *p, size_t n, size_t *pos, uint64_t *v)
{
	uint64_t r = 0;
	for (unsigned shift = 0; shift < 70; shift += 7) {
		if (*pos >= n)
			return false;
		uint8_t b = p[(*pos)++];
		if (shift == 63 && b > 1)
			return false;
		r |= (uint64_t)(b & 0x7F) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return true;
		}
	}
	return false;
}

static bool is_varint_type(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_BOOL:
	case PROTOBUF_C_TYPE_ENUM:
		return true;
	default:
		return false;
	}
}

static int scan_count(scan_state *st, uint64_t n)
{
	st->items += n;
	if (st->items > st->max_items) {
		set_err(st->err, st->errlen,
			"message holds more than %llu fields and elements",
			(unsigned long long)st->max_items);
		return SH_ETOOBIG;
	}
	return SH_OK;
}

static int scan(scan_state *st, const uint8_t *p, size_t n,
		const ProtobufCMessageDescriptor *d, uint32_t depth)
{
	size_t pos = 0;
	int rc;
	if (depth > st->max_depth) {
		set_err(st->err, st->errlen,
			"message nested deeper than %u levels", st->max_depth);
		return SH_ETOOBIG;
	}
	while (pos < n) {
		uint64_t tag, v;
		if (!read_varint(p, n, &pos, &tag) || (tag >> 3) == 0 ||
		    (tag >> 3) > UINT32_MAX)
			goto malformed;
		const ProtobufCFieldDescriptor *f =
		    protobuf_c_message_descriptor_get_field(
			d, (unsigned)(tag >> 3));
		/* protobuf-c keeps a record per field occurrence while it
		 * unpacks, known or not */
		if ((rc = scan_count(st, 1)) != SH_OK)
			return rc;
		switch (tag & 7) {
		case 0:
			if (!read_varint(p, n, &pos, &v))
				goto malformed;
			break;
		case 1:
			if (n - pos < 8)
				goto malformed;
			pos += 8;
			break;
		case 5:
			if (n - pos < 4)
				goto malformed;
			pos += 4;
			break;
		case 2:
			if (!read_varint(p, n, &pos, &v) || v > n - pos)
				goto malformed;
			const uint8_t *sub = p + pos;
			size_t len = (size_t)v;
			pos += len;
			if (!f)
				break;
			if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
				if ((rc = scan(st, sub, len, f->descriptor,
					       depth + 1)) != SH_OK)
					return rc;
			} else if (f->type == PROTOBUF_C_TYPE_STRING) {
				if (!sh_utf8_valid(sub, len)) {
					set_err(st->err, st->errlen,
						"field '%s' is not UTF-8 "
						"without NUL bytes",
						f->name);
					return SH_EINVAL;
				}
			} else if (f->label == PROTOBUF_C_LABEL_REPEATED &&
				   is_varint_type(f->type)) {
				/* packed varints: one element per last byte */
				uint64_t k = 0;
				for (size_t i = 0; i < len; i++)
					k += !(sub[i] & 0x80);
				if ((rc = scan_count(st, k)) != SH_OK)
					return rc;
			}
			break;
		default: /* groups (3, 4) are not proto3; 6, 7 do not exist */
			goto malformed;
		}
	}
	return SH_OK;
malformed:
	set_err(st->err, st->errlen, "malformed %s: bad bytes in a %s",
		st->what, d->short_name);
	return SH_EINVAL;
}

/* One pass over the top-level fields of a message that may be malformed:
 * the last request_id (field 2, varint) and the last operation (a
 * length-delimited field numbered 10 or above) seen before the bytes stop
 * parsing. */
static void peek(const uint8_t *buf, size_t len, uint64_t *id, uint32_t *op)
{
	size_t pos = 0;
	uint64_t tag, v;
	*id = 0;
	*op = 0;
	while (buf && pos < len && read_varint(buf, len, &pos, &tag)) {
		switch (tag & 7) {
		case 0:
			if (!read_varint(buf, len, &pos, &v))
				return;
			if (tag == ((2u << 3) | 0))
				*id = v;
			break;
		case 1:
			if (len - pos < 8)
				return;
			pos += 8;
			break;
		case 5:
			if (len - pos < 4)
				return;
			pos += 4;
			break;
		case 2:
			if (!read_varint(buf, len, &pos, &v) || v > len - pos)
				return;
			pos += (size_t)v;
			if ((tag >> 3) >= 10 && (tag >> 3) <= UINT32_MAX)
				*op = (uint32_t)(tag >> 3);
			break;
		default:
			return;
		}
	}
}

uint64_t sh_wire_peek_request_id(const uint8_t *buf, size_t len)
{
	uint64_t id;
	uint32_t op;
	peek(buf, len, &id, &op);
	return id;
}

uint32_t sh_wire_peek_op(const uint8_t *buf, size_t len)
{
	uint64_t id;
	uint32_t op;
	peek(buf, len, &id, &op);
	return op;
}

/* Size, pre-scan and unpack: shared by requests and responses. */
static int decode(const uint8_t *buf, size_t len, const sh_wire_limits *lim,
		  const ProtobufCMessageDescriptor *d, bool count_items,
		  ProtobufCMessage **out, char *err, size_t errlen)
{
	const char *what =
	    d == &shoal__v1__response__descriptor ? "response" : "request";
	int rc;
	*out = NULL;
	if (len > lim->max_message_bytes) {
		set_err(err, errlen, "%s of %zu bytes exceeds the limit of %zu",
			what, len, lim->max_message_bytes);
		return SH_ETOOBIG;
	}
	if (!buf && len > 0) {
		set_err(err, errlen, "malformed %s: no bytes", what);
		return SH_EINVAL;
	}
	uint32_t depth = 2 * lim->max_filter_depth + 16;
	scan_state st = {
	    .max_depth =
		depth > SH_WIRE_MAX_NESTING ? depth : SH_WIRE_MAX_NESTING,
	    .max_items = count_items ? lim->max_items : UINT64_MAX,
	    .err = err,
	    .errlen = errlen,
	    .what = what,
	};
	if ((rc = scan(&st, buf, len, d, 1)) != SH_OK)
		return rc;
	*out = protobuf_c_message_unpack(d, NULL, len, buf);
	if (!*out) {
		/* protobuf-c does not tell a bad message from a failed
		 * allocation; after the pre-scan, the first is far likelier. */
		set_err(err, errlen, "malformed %s: not a valid protobuf %s",
			what, d->short_name);
		return SH_EINVAL;
	}
	return SH_OK;
}

/* ---- Validation ---------------------------------------------------------- */

/* Validation context: limits, the error buffer, and the path of the field
 * being checked ("upsert.points[3].vector"), so every message names it. */
typedef struct vctx {
	const sh_wire_limits *lim;
	char *err;
	size_t errlen;
	char path[192];
	size_t plen;
	uint32_t clauses;    /* filter clauses seen, over all levels */
	uint32_t set_values; /* values in match sets and has_id, all levels */
} vctx;

static size_t path_push(vctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static size_t path_push(vctx *c, const char *fmt, ...)
{
	size_t old = c->plen;
	if (old < sizeof(c->path) - 1) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->path + old, sizeof(c->path) - old, fmt, ap);
		va_end(ap);
		c->plen = strlen(c->path);
	}
	return old;
}

static void path_pop(vctx *c, size_t old)
{
	c->plen = old;
	c->path[old] = 0;
}

static int fail(vctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(vctx *c, int code, const char *fmt, ...)
{
	if (c->err && c->errlen > 0) {
		int n = snprintf(c->err, c->errlen, "%s%s", c->path,
				 c->plen ? ": " : "");
		if (n >= 0 && (size_t)n < c->errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return code;
}

static const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

static int check_name(vctx *c, const char *field, const char *name)
{
	size_t old = path_push(c, ".%s", field);
	size_t n = strlen(str_or_empty(name));
	int rc = SH_OK;
	if (n == 0)
		rc = fail(c, SH_EINVAL, "collection name required");
	else if (n > SH_WIRE_MAX_NAME)
		rc = fail(c, SH_EINVAL, "collection name longer than %d bytes",
			  SH_WIRE_MAX_NAME);
	for (size_t i = 0; rc == SH_OK && i < n; i++) {
		char ch = name[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
		      ch == '.'))
			rc = fail(c, SH_EINVAL,
				  "collection name may hold only A-Z a-z 0-9 "
				  "_ . -");
	}
	path_pop(c, old);
	return rc;
}

static int check_key(vctx *c, const char *key)
{
	size_t n = strlen(str_or_empty(key));
	if (n == 0)
		return fail(c, SH_EINVAL, "key required");
	if (n > SH_WIRE_MAX_KEY)
		return fail(c, SH_ETOOBIG, "key longer than %d bytes",
			    SH_WIRE_MAX_KEY);
	if (!sh_utf8_valid(key, n))
		return fail(c, SH_EINVAL, "key is not UTF-8");
	return SH_OK;
}

int sh_wire_pid_from_proto(const Shoal__V1__PointId *in, sh_pid *out)
{
	if (!in)
		return SH_EINVAL;
	switch (in->kind_case) {
	case SHOAL__V1__POINT_ID__KIND_NUM:
		*out = sh_pid_u64(in->num);
		return SH_OK;
	case SHOAL__V1__POINT_ID__KIND_STR:
		if (!in->str)
			return SH_EINVAL;
		return sh_pid_str(in->str, strlen(in->str), out);
	default:
		return SH_EINVAL;
	}
}

void sh_wire_pid_to_proto(const sh_pid *in, Shoal__V1__PointId *out,
			  char strbuf[SH_PID_MAX_STR + 1])
{
	shoal__v1__point_id__init(out);
	if (in->kind == SH_PID_STR) {
		memcpy(strbuf, in->str, in->len);
		strbuf[in->len] = 0;
		out->kind_case = SHOAL__V1__POINT_ID__KIND_STR;
		out->str = strbuf;
	} else {
		out->kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		out->num = in->num;
	}
}

static int check_id(vctx *c, const Shoal__V1__PointId *id)
{
	sh_pid p;
	if (!id || id->kind_case == SHOAL__V1__POINT_ID__KIND__NOT_SET)
		return fail(c, SH_EINVAL, "id required");
	if (sh_wire_pid_from_proto(id, &p) == SH_OK)
		return SH_OK;
	size_t n = strlen(str_or_empty(id->str));
	if (n == 0)
		return fail(c, SH_EINVAL, "string id is empty");
	if (n > SH_PID_MAX_STR)
		return fail(c, SH_EINVAL, "string id of %zu bytes; at most %d",
			    n, SH_PID_MAX_STR);
	return fail(c, SH_EINVAL, "string id is not UTF-8");
}

static int check_ids(vctx *c, const char *field, Shoal__V1__PointId **ids,
		     size_t n)
{
	size_t old = path_push(c, ".%s", field);
	int rc = SH_OK;
	if (n == 0)
		rc = fail(c, SH_EINVAL, "at least one id required");
	else if (n > c->lim->max_ids)
		rc = fail(c, SH_ETOOBIG, "%zu ids; at most %u", n,
			  c->lim->max_ids);
	for (size_t i = 0; rc == SH_OK && i < n; i++) {
		size_t o = path_push(c, "[%zu]", i);
		rc = check_id(c, ids[i]);
		path_pop(c, o);
	}
	path_pop(c, old);
	return rc;
}

static int check_vector(vctx *c, const char *field, const float *v, size_t n)
{
	size_t old = path_push(c, ".%s", field);
	int rc = SH_OK;
	if (n == 0)
		rc = fail(c, SH_EDIM, "vector required");
	else if (n > SH_WIRE_MAX_DIM)
		rc = fail(c, SH_EDIM, "%zu dimensions; at most %d", n,
			  SH_WIRE_MAX_DIM);
	for (size_t i = 0; rc == SH_OK && i < n; i++)
		if (!isfinite(v[i]))
			rc =
			    fail(c, SH_ENAN, "NaN or infinity at index %zu", i);
	path_pop(c, old);
	return rc;
}

static int check_payload(vctx *c, const char *s)
{
	size_t n = strlen(str_or_empty(s));
	if (n == 0)
		return SH_OK; /* no payload */
	size_t old = path_push(c, ".payload_json");
	int rc = SH_OK;
	if (n > SH_WIRE_MAX_PAYLOAD) {
		rc = fail(c, SH_ETOOBIG, "payload of %zu bytes; at most %u", n,
			  SH_WIRE_MAX_PAYLOAD);
		goto out;
	}
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, false);
	if (!j) {
		rc = fail(c, SH_EINVAL, "payload is not valid JSON");
		goto out;
	}
	bool obj = cJSON_IsObject(j);
	cJSON_Delete(j);
	while (end && end < s + n &&
	       (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
		end++;
	if (!end || end != s + n)
		rc = fail(c, SH_EINVAL,
			  "payload has bytes after its JSON value");
	else if (!obj)
		rc = fail(c, SH_EINVAL, "payload is not a JSON object");
out:
	path_pop(c, old);
	return rc;
}

static int check_filter(vctx *c, const Shoal__V1__Filter *f, uint32_t depth);

static int check_set_size(vctx *c, size_t n)
{
	if (n == 0)
		return fail(c, SH_EINVAL, "empty set");
	if (n > c->lim->max_ids - c->set_values)
		return fail(c, SH_ETOOBIG, "filter sets hold over %u values",
			    c->lim->max_ids);
	c->set_values += (uint32_t)n;
	return SH_OK;
}

static int check_match(vctx *c, const Shoal__V1__Match *m)
{
	int rc;
	if ((rc = check_key(c, m->key)) != SH_OK)
		return rc;
	switch (m->value_case) {
	case SHOAL__V1__MATCH__VALUE_KEYWORD:
		if (!sh_utf8_valid(str_or_empty(m->keyword),
				   strlen(str_or_empty(m->keyword))))
			return fail(c, SH_EINVAL, "keyword is not UTF-8");
		return SH_OK;
	case SHOAL__V1__MATCH__VALUE_INTEGER:
	case SHOAL__V1__MATCH__VALUE_BOOLEAN:
		return SH_OK;
	case SHOAL__V1__MATCH__VALUE_ANY_KEYWORD:
		if (!m->any_keyword)
			return fail(c, SH_EINVAL, "empty set");
		if ((rc = check_set_size(c, m->any_keyword->n_values)) != SH_OK)
			return rc;
		for (size_t i = 0; i < m->any_keyword->n_values; i++) {
			const char *s = str_or_empty(m->any_keyword->values[i]);
			if (!sh_utf8_valid(s, strlen(s)))
				return fail(c, SH_EINVAL,
					    "keyword %zu is not UTF-8", i);
		}
		return SH_OK;
	case SHOAL__V1__MATCH__VALUE_ANY_INTEGER:
		if (!m->any_integer)
			return fail(c, SH_EINVAL, "empty set");
		return check_set_size(c, m->any_integer->n_values);
	default:
		return fail(c, SH_EINVAL, "match has no value");
	}
}

static int check_range(vctx *c, const Shoal__V1__Range *r)
{
	int rc;
	if ((rc = check_key(c, r->key)) != SH_OK)
		return rc;
	bool gt = r->has_gt_case == SHOAL__V1__RANGE__HAS_GT_GT;
	bool gte = r->has_gte_case == SHOAL__V1__RANGE__HAS_GTE_GTE;
	bool lt = r->has_lt_case == SHOAL__V1__RANGE__HAS_LT_LT;
	bool lte = r->has_lte_case == SHOAL__V1__RANGE__HAS_LTE_LTE;
	if (!gt && !gte && !lt && !lte)
		return fail(c, SH_EINVAL, "range has no bound");
	if ((gt && isnan(r->gt)) || (gte && isnan(r->gte)) ||
	    (lt && isnan(r->lt)) || (lte && isnan(r->lte)))
		return fail(c, SH_EINVAL, "range bound is NaN");
	return SH_OK;
}

static int check_condition(vctx *c, const Shoal__V1__Condition *cond)
{
	size_t old;
	int rc;
	if (!cond)
		return fail(c, SH_EINVAL, "condition required");
	switch (cond->kind_case) {
	case SHOAL__V1__CONDITION__KIND_MATCH:
		old = path_push(c, ".match");
		rc = cond->match ? check_match(c, cond->match)
				 : fail(c, SH_EINVAL, "key required");
		break;
	case SHOAL__V1__CONDITION__KIND_RANGE:
		old = path_push(c, ".range");
		rc = cond->range ? check_range(c, cond->range)
				 : fail(c, SH_EINVAL, "key required");
		break;
	case SHOAL__V1__CONDITION__KIND_EXISTS:
		old = path_push(c, ".exists");
		rc = check_key(c, cond->exists ? cond->exists->key : NULL);
		break;
	case SHOAL__V1__CONDITION__KIND_HAS_ID:
		old = path_push(c, ".has_id");
		if (!cond->has_id) {
			rc = fail(c, SH_EINVAL, "empty set");
			break;
		}
		rc = check_set_size(c, cond->has_id->n_ids);
		if (rc == SH_OK)
			rc = check_ids(c, "ids", cond->has_id->ids,
				       cond->has_id->n_ids);
		break;
	default:
		return fail(c, SH_EINVAL, "condition has no kind");
	}
	path_pop(c, old);
	return rc;
}

static int check_clauses(vctx *c, const char *field, Shoal__V1__Clause **cl,
			 size_t n, uint32_t depth)
{
	int rc = SH_OK;
	for (size_t i = 0; rc == SH_OK && i < n; i++) {
		size_t old = path_push(c, ".%s[%zu]", field, i);
		if (++c->clauses > c->lim->max_filter_clauses) {
			rc = fail(c, SH_ETOOBIG, "filter has over %u clauses",
				  c->lim->max_filter_clauses);
		} else if (!cl[i]) {
			rc = fail(c, SH_EINVAL, "clause is empty");
		} else if (cl[i]->kind_case ==
			   SHOAL__V1__CLAUSE__KIND_CONDITION) {
			size_t o = path_push(c, ".condition");
			rc = check_condition(c, cl[i]->condition);
			path_pop(c, o);
		} else if (cl[i]->kind_case == SHOAL__V1__CLAUSE__KIND_FILTER) {
			size_t o = path_push(c, ".filter");
			rc = check_filter(c, cl[i]->filter, depth + 1);
			path_pop(c, o);
		} else {
			rc = fail(c, SH_EINVAL,
				  "clause has neither condition nor filter");
		}
		path_pop(c, old);
	}
	return rc;
}

/* depth: 1 for a top-level filter. A NULL filter passes every point. */
static int check_filter(vctx *c, const Shoal__V1__Filter *f, uint32_t depth)
{
	int rc;
	if (depth > c->lim->max_filter_depth)
		return fail(c, SH_ETOOBIG,
			    "filter nested deeper than %u levels",
			    c->lim->max_filter_depth);
	if (!f)
		return SH_OK;
	if ((rc = check_clauses(c, "must", f->must, f->n_must, depth)) !=
		SH_OK ||
	    (rc = check_clauses(c, "should", f->should, f->n_should, depth)) !=
		SH_OK ||
	    (rc = check_clauses(c, "must_not", f->must_not, f->n_must_not,
				depth)) != SH_OK)
		return rc;
	return SH_OK;
}

static int check_filter_field(vctx *c, const Shoal__V1__Filter *f)
{
	size_t old = path_push(c, ".filter");
	int rc = check_filter(c, f, 1);
	path_pop(c, old);
	return rc;
}

static int check_cursor(vctx *c, ProtobufCBinaryData cur)
{
	if (cur.len > SH_WIRE_MAX_CURSOR)
		return fail(c, SH_ETOOBIG, "cursor of %zu bytes; at most %d",
			    cur.len, SH_WIRE_MAX_CURSOR);
	return SH_OK;
}

static int check_batch_limit(vctx *c, const char *field, uint32_t v)
{
	if (v > c->lim->max_batch_points)
		return fail(c, SH_ETOOBIG, "%s %u; at most %u", field, v,
			    c->lim->max_batch_points);
	return SH_OK;
}

static int check_config(vctx *c, const Shoal__V1__CollectionConfig *cfg)
{
	int rc;
	if (!cfg)
		return fail(c, SH_EINVAL, "config required");
	path_push(c, ".config");
	if ((rc = check_name(c, "name", cfg->name)) != SH_OK)
		return rc;
	if (cfg->dim < 1 || cfg->dim > SH_WIRE_MAX_DIM)
		return fail(c, SH_EINVAL, "dim %u outside 1..%d", cfg->dim,
			    SH_WIRE_MAX_DIM);
	if (cfg->metric != SHOAL__V1__METRIC__L2 &&
	    cfg->metric != SHOAL__V1__METRIC__IP &&
	    cfg->metric != SHOAL__V1__METRIC__COSINE)
		return fail(c, SH_EINVAL, "metric must be L2, IP or COSINE");
	if (cfg->m != 0 && (cfg->m < 2 || cfg->m > SH_HNSW_MAX_M))
		return fail(c, SH_EINVAL, "m %u outside 2..%d (0 = default)",
			    cfg->m, SH_HNSW_MAX_M);
	if (cfg->ef_construction > c->lim->max_ef)
		return fail(c, SH_ETOOBIG, "ef_construction %u; at most %u",
			    cfg->ef_construction, c->lim->max_ef);
	if (cfg->ef_search > c->lim->max_ef)
		return fail(c, SH_ETOOBIG, "ef_search %u; at most %u",
			    cfg->ef_search, c->lim->max_ef);
	if (cfg->storage != SHOAL__V1__STORAGE__F32 &&
	    cfg->storage != SHOAL__V1__STORAGE__INT8)
		return fail(c, SH_EINVAL, "storage must be F32 or INT8");
	if (cfg->n_indexes > SH_WIRE_MAX_PAYLOAD_INDEXES)
		return fail(c, SH_ETOOBIG, "%zu payload indexes; at most %d",
			    cfg->n_indexes, SH_WIRE_MAX_PAYLOAD_INDEXES);
	for (size_t i = 0; i < cfg->n_indexes; i++) {
		const Shoal__V1__PayloadIndex *pi = cfg->indexes[i];
		size_t old = path_push(c, ".indexes[%zu]", i);
		if (!pi)
			return fail(c, SH_EINVAL, "field required");
		if ((rc = check_key(c, pi->field)) != SH_OK)
			return rc;
		if (pi->type < SHOAL__V1__PAYLOAD_TYPE__KEYWORD ||
		    pi->type > SHOAL__V1__PAYLOAD_TYPE__BOOL)
			return fail(c, SH_EINVAL,
				    "type must be KEYWORD, INTEGER, FLOAT or "
				    "BOOL");
		for (size_t j = 0; j < i; j++)
			if (cfg->indexes[j] &&
			    strcmp(str_or_empty(cfg->indexes[j]->field),
				   str_or_empty(pi->field)) == 0)
				return fail(c, SH_EINVAL,
					    "field '%s' declared twice",
					    pi->field);
		path_pop(c, old);
	}
	return SH_OK;
}

static int check_create(vctx *c, const Shoal__V1__CreateCollectionRequest *r)
{
	return check_config(c, r->config);
}

/* Points of an upsert or an import: ids, vectors, payloads. */
static int check_points(vctx *c, Shoal__V1__Point *const *pts, size_t n)
{
	int rc;
	for (size_t i = 0; i < n; i++) {
		const Shoal__V1__Point *p = pts[i];
		size_t old = path_push(c, ".points[%zu]", i);
		if (!p)
			return fail(c, SH_EINVAL, "id required");
		size_t o = path_push(c, ".id");
		if ((rc = check_id(c, p->id)) != SH_OK)
			return rc;
		path_pop(c, o);
		if ((rc = check_vector(c, "vector", p->vector, p->n_vector)) !=
			SH_OK ||
		    (rc = check_payload(c, p->payload_json)) != SH_OK)
			return rc;
		path_pop(c, old);
	}
	return SH_OK;
}

/* Ids of PointRefs (deletes, tombstones). */
static int check_refs(vctx *c, const char *field,
		      Shoal__V1__PointRef *const *refs, size_t n)
{
	int rc;
	for (size_t i = 0; i < n; i++) {
		size_t old = path_push(c, ".%s[%zu].id", field, i);
		if ((rc = check_id(c, refs[i] ? refs[i]->id : NULL)) != SH_OK)
			return rc;
		path_pop(c, old);
	}
	return SH_OK;
}

static int check_upsert(vctx *c, const Shoal__V1__UpsertRequest *r)
{
	int rc;
	if ((rc = check_name(c, "collection", r->collection)) != SH_OK)
		return rc;
	if (r->n_points == 0)
		return fail(c, SH_EINVAL, "at least one point required");
	if (r->n_points > c->lim->max_batch_points)
		return fail(c, SH_ETOOBIG, "%zu points; at most %u",
			    r->n_points, c->lim->max_batch_points);
	return check_points(c, r->points, r->n_points);
}

/* A SlotSet: ascending ranges without overlap, each first <= last <
 * SH_SLOTS. `required`: at least one range. NULL passes unless required. */
static int check_slot_set(vctx *c, const char *field,
			  const Shoal__V1__SlotSet *set, bool required)
{
	size_t n = set ? set->n_ranges : 0;
	if (n == 0)
		return required ? fail(c, SH_EINVAL,
				       ".%s: at least one slot "
				       "range required",
				       field)
				: SH_OK;
	if (n > SH_SLOTS)
		return fail(c, SH_ETOOBIG, ".%s: %zu ranges; at most %d", field,
			    n, SH_SLOTS);
	for (size_t i = 0; i < n; i++) {
		const Shoal__V1__SlotRange *s = set->ranges[i];
		size_t old = path_push(c, ".%s.ranges[%zu]", field, i);
		if (!s || s->first > s->last || s->last >= SH_SLOTS)
			return fail(c, SH_EINVAL,
				    "range must have first <= last < %d",
				    SH_SLOTS);
		if (i > 0 && s->first <= set->ranges[i - 1]->last)
			return fail(c, SH_EINVAL,
				    "ranges must ascend without overlap");
		path_pop(c, old);
	}
	return SH_OK;
}

static int check_delete(vctx *c, const Shoal__V1__DeleteRequest *r)
{
	int rc;
	if ((rc = check_name(c, "collection", r->collection)) != SH_OK)
		return rc;
	if (r->selector_case == SHOAL__V1__DELETE_REQUEST__SELECTOR_FILTER) {
		const Shoal__V1__Filter *f = r->filter;
		if (!f || f->n_must + f->n_should + f->n_must_not == 0)
			return fail(c, SH_EINVAL,
				    "delete by an empty filter (to delete "
				    "everything, drop the collection)");
		if ((rc = check_slot_set(c, "only_slots", r->only_slots,
					 false)) != SH_OK)
			return rc;
		return check_filter_field(c, f);
	}
	if (r->selector_case != SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS)
		return fail(c, SH_EINVAL, "ids or filter required");
	size_t n = r->ids ? r->ids->n_refs : 0;
	path_push(c, ".ids.refs");
	if (n == 0)
		return fail(c, SH_EINVAL, "at least one id required");
	if (n > c->lim->max_ids)
		return fail(c, SH_ETOOBIG, "%zu ids; at most %u", n,
			    c->lim->max_ids);
	for (size_t i = 0; i < n; i++) {
		size_t old = path_push(c, "[%zu].id", i);
		const Shoal__V1__PointRef *ref = r->ids->refs[i];
		if ((rc = check_id(c, ref ? ref->id : NULL)) != SH_OK)
			return rc;
		path_pop(c, old);
	}
	return SH_OK;
}

static int check_migrate(vctx *c, const Shoal__V1__MigrateRequest *r)
{
	int rc;
	if (r->action < SHOAL__V1__MIGRATE_ACTION__PREPARE_IMPORT ||
	    r->action > SHOAL__V1__MIGRATE_ACTION__FINISH_IMPORT)
		return fail(c, SH_EINVAL, ".action: unknown");
	if (r->move_id == 0)
		return fail(c, SH_EINVAL, ".move_id: must be above 0");
	if ((rc = check_slot_set(c, "slots", r->slots, true)) != SH_OK)
		return rc;
	if (r->action == SHOAL__V1__MIGRATE_ACTION__START) {
		const char *a = str_or_empty(r->peer_address);
		size_t n = strlen(a);
		if (n == 0 || n > 255 || !sh_utf8_valid(a, n))
			return fail(c, SH_EINVAL,
				    ".peer_address: 1..255 bytes of UTF-8");
	}
	if ((r->action == SHOAL__V1__MIGRATE_ACTION__START ||
	     r->action == SHOAL__V1__MIGRATE_ACTION__PREPARE_IMPORT) &&
	    r->peer_node_id == 0)
		return fail(c, SH_EINVAL, ".peer_node_id: must be above 0");
	return SH_OK;
}

static int check_import(vctx *c, const Shoal__V1__ImportRequest *r)
{
	int rc;
	if (r->move_id == 0)
		return fail(c, SH_EINVAL, ".move_id: must be above 0");
	size_t old = c->plen;
	if ((rc = check_config(c, r->config)) != SH_OK)
		return rc;
	path_pop(c, old);
	size_t n = r->n_points + r->n_tombstones;
	if (n == 0)
		return fail(c, SH_EINVAL,
			    "at least one point or tombstone required");
	if (n > c->lim->max_batch_points)
		return fail(c, SH_ETOOBIG,
			    "%zu points and tombstones; at most %u", n,
			    c->lim->max_batch_points);
	if ((rc = check_points(c, r->points, r->n_points)) != SH_OK)
		return rc;
	return check_refs(c, "tombstones", r->tombstones, r->n_tombstones);
}

static int check_move_job(vctx *c, const Shoal__V1__MoveJobRequest *r)
{
	if (r->action < SHOAL__V1__MOVE_JOB_ACTION__JOB_START ||
	    r->action > SHOAL__V1__MOVE_JOB_ACTION__JOB_CLEAR)
		return fail(c, SH_EINVAL, ".action: unknown");
	if (r->action == SHOAL__V1__MOVE_JOB_ACTION__JOB_ADVANCE &&
	    (r->move_id == 0 ||
	     r->from_state < SHOAL__V1__MOVE_STATE__MOVE_PENDING ||
	     r->from_state > SHOAL__V1__MOVE_STATE__MOVE_ABORTED))
		return fail(c, SH_EINVAL,
			    "advance: move_id and from_state required");
	if (r->action != SHOAL__V1__MOVE_JOB_ACTION__JOB_START)
		return SH_OK;
	const Shoal__V1__MoveJob *j = r->job;
	if (!j || j->n_moves == 0)
		return fail(c, SH_EINVAL, ".job: at least one move required");
	if (j->n_moves > SH_SLOTS)
		return fail(c, SH_ETOOBIG, ".job: %zu moves; at most %d",
			    j->n_moves, SH_SLOTS);
	size_t dn = strlen(str_or_empty(j->description));
	if (dn > 256 || !sh_utf8_valid(str_or_empty(j->description), dn))
		return fail(c, SH_EINVAL,
			    ".job.description: at most 256 bytes of UTF-8");
	for (size_t i = 0; i < j->n_moves; i++) {
		const Shoal__V1__Move *m = j->moves[i];
		if (!m || m->first > m->last || m->last >= SH_SLOTS ||
		    m->from == 0 || m->to == 0 || m->from == m->to)
			return fail(c, SH_EINVAL,
				    ".job.moves[%zu]: first <= last < %d and "
				    "two different nodes required",
				    i, SH_SLOTS);
	}
	return SH_OK;
}

/* A search's fields; the queries only when `with_queries` (a search by
 * text carries none: the embedding server adds the one vector). */
static int check_search_fields(vctx *c, const Shoal__V1__SearchRequest *r,
			       bool with_queries)
{
	int rc;
	if ((rc = check_name(c, "collection", r->collection)) != SH_OK)
		return rc;
	if (!with_queries) {
		if (r->n_queries)
			return fail(c, SH_EINVAL,
				    "a search by text takes no query vector");
		goto params;
	}
	if (r->n_queries == 0)
		return fail(c, SH_EINVAL, "at least one query vector required");
	if (r->n_queries > c->lim->max_queries)
		return fail(c, SH_ETOOBIG, "%zu queries; at most %u",
			    r->n_queries, c->lim->max_queries);
	size_t dim = r->queries[0] ? r->queries[0]->n_values : 0;
	for (size_t i = 0; i < r->n_queries; i++) {
		const Shoal__V1__Vector *q = r->queries[i];
		size_t old = path_push(c, ".queries[%zu]", i);
		if ((rc = check_vector(c, "values", q ? q->values : NULL,
				       q ? q->n_values : 0)) != SH_OK)
			return rc;
		if (q->n_values != dim)
			return fail(c, SH_EDIM,
				    "%zu dimensions; queries[0] has %zu",
				    q->n_values, dim);
		path_pop(c, old);
	}
params:
	if (r->k == 0)
		return fail(c, SH_EINVAL, "k must be at least 1");
	if (r->k > c->lim->max_k)
		return fail(c, SH_ETOOBIG, "k %u; at most %u", r->k,
			    c->lim->max_k);
	if (r->ef > c->lim->max_ef)
		return fail(c, SH_ETOOBIG, "ef %u; at most %u", r->ef,
			    c->lim->max_ef);
	if (!(r->min_coverage >= 0.0f && r->min_coverage <= 1.0f))
		return fail(c, SH_EINVAL, "min_coverage outside 0..1");
	if ((rc = check_slot_set(c, "only_slots", r->only_slots, false)) !=
	    SH_OK)
		return rc;
	return check_filter_field(c, r->filter);
}

static int check_search(vctx *c, const Shoal__V1__SearchRequest *r)
{
	return check_search_fields(c, r, true);
}

/* Model names: like collection names, or "" for the server's default. */
static int check_model(vctx *c, const char *m)
{
	if (str_or_empty(m)[0] == 0)
		return SH_OK;
	return check_name(c, "model", m);
}

static int check_text(vctx *c, const char *what, const char *t)
{
	size_t n = strlen(str_or_empty(t));
	if (n > SH_WIRE_MAX_TEXT)
		return fail(c, SH_ETOOBIG, "%s: %zu bytes; at most %u", what, n,
			    SH_WIRE_MAX_TEXT);
	if (!sh_utf8_valid(str_or_empty(t), n))
		return fail(c, SH_EINVAL, "%s: not valid UTF-8", what);
	return SH_OK;
}

static int check_embed(vctx *c, const Shoal__V1__EmbedRequest *r)
{
	int rc;
	if ((rc = check_model(c, r->model)) != SH_OK)
		return rc;
	if (r->n_texts == 0)
		return fail(c, SH_EINVAL, "at least one text required");
	if (r->n_texts > SH_WIRE_MAX_TEXTS)
		return fail(c, SH_ETOOBIG, "%zu texts; at most %d", r->n_texts,
			    SH_WIRE_MAX_TEXTS);
	for (size_t i = 0; i < r->n_texts; i++) {
		char what[32];
		snprintf(what, sizeof(what), "texts[%zu]", i);
		if ((rc = check_text(c, what, r->texts[i])) != SH_OK)
			return rc;
	}
	return SH_OK;
}

static int check_search_text(vctx *c, const Shoal__V1__SearchTextRequest *r)
{
	int rc;
	if ((rc = check_model(c, r->model)) != SH_OK ||
	    (rc = check_text(c, "text", r->text)) != SH_OK)
		return rc;
	if (!r->search)
		return fail(c, SH_EINVAL, "search: required");
	path_push(c, ".search");
	return check_search_fields(c, r->search, false);
}

static int check_set_slots(vctx *c, const Shoal__V1__SetSlotsRequest *r)
{
	if (r->map_epoch == 0)
		return fail(c, SH_EINVAL, "map_epoch must be above 0");
	return check_slot_set(c, "owned", r->owned, false); /* may own none */
}

static int check_op(vctx *c, const Shoal__V1__Request *q)
{
	int rc;
	/* After unpacking, protobuf-c sets op_case only together with its
	 * message; a request built in memory may not have. */
	const ProtobufCFieldDescriptor *f =
	    q->op_case == SHOAL__V1__REQUEST__OP__NOT_SET
		? NULL
		: protobuf_c_message_descriptor_get_field(
		      &shoal__v1__request__descriptor, (unsigned)q->op_case);
	if (f && !*(void *const *)((const char *)q + f->offset))
		return fail(c, SH_EINVAL, "%s: operation is empty", f->name);
	switch (q->op_case) {
	case SHOAL__V1__REQUEST__OP_CREATE_COLLECTION:
		path_push(c, "create_collection");
		return check_create(c, q->create_collection);
	case SHOAL__V1__REQUEST__OP_DROP_COLLECTION:
		path_push(c, "drop_collection");
		return check_name(c, "name", q->drop_collection->name);
	case SHOAL__V1__REQUEST__OP_LIST_COLLECTIONS:
	case SHOAL__V1__REQUEST__OP_HEALTH:
		return SH_OK;
	case SHOAL__V1__REQUEST__OP_UPSERT:
		path_push(c, "upsert");
		return check_upsert(c, q->upsert);
	case SHOAL__V1__REQUEST__OP_DELETE:
		path_push(c, "delete");
		return check_delete(c, q->delete_);
	case SHOAL__V1__REQUEST__OP_GET:
		path_push(c, "get");
		if ((rc = check_name(c, "collection", q->get->collection)) !=
		    SH_OK)
			return rc;
		return check_ids(c, "ids", q->get->ids, q->get->n_ids);
	case SHOAL__V1__REQUEST__OP_SEARCH:
		path_push(c, "search");
		return check_search(c, q->search);
	case SHOAL__V1__REQUEST__OP_SCROLL:
		path_push(c, "scroll");
		if ((rc = check_name(c, "collection", q->scroll->collection)) !=
			SH_OK ||
		    (rc = check_cursor(c, q->scroll->cursor)) != SH_OK ||
		    (rc = check_batch_limit(c, "limit", q->scroll->limit)) !=
			SH_OK ||
		    (rc = check_slot_set(c, "only_slots", q->scroll->only_slots,
					 false)) != SH_OK)
			return rc;
		return check_filter_field(c, q->scroll->filter);
	case SHOAL__V1__REQUEST__OP_COUNT:
		path_push(c, "count");
		if ((rc = check_name(c, "collection", q->count->collection)) !=
			SH_OK ||
		    (rc = check_slot_set(c, "only_slots", q->count->only_slots,
					 false)) != SH_OK)
			return rc;
		return check_filter_field(c, q->count->filter);
	case SHOAL__V1__REQUEST__OP_STATS:
		path_push(c, "stats");
		if (str_or_empty(q->stats->collection)[0] == 0)
			return SH_OK; /* every collection */
		return check_name(c, "collection", q->stats->collection);
	case SHOAL__V1__REQUEST__OP_SET_SLOTS:
		path_push(c, "set_slots");
		return check_set_slots(c, q->set_slots);
	case SHOAL__V1__REQUEST__OP_STREAM_SLOT:
		path_push(c, "stream_slot");
		if ((rc = check_name(c, "collection",
				     q->stream_slot->collection)) != SH_OK ||
		    (rc = check_cursor(c, q->stream_slot->cursor)) != SH_OK ||
		    (rc = check_batch_limit(
			 c, "max_points", q->stream_slot->max_points)) != SH_OK)
			return rc;
		if (q->stream_slot->slot >= SH_SLOTS)
			return fail(c, SH_EINVAL, "slot %u; at most %d",
				    q->stream_slot->slot, SH_SLOTS - 1);
		return SH_OK;
	case SHOAL__V1__REQUEST__OP_MIGRATE:
		path_push(c, "migrate");
		return check_migrate(c, q->migrate);
	case SHOAL__V1__REQUEST__OP_IMPORT_POINTS:
		path_push(c, "import_points");
		return check_import(c, q->import_points);
	case SHOAL__V1__REQUEST__OP_MOVE_JOB:
		path_push(c, "move_job");
		return check_move_job(c, q->move_job);
	case SHOAL__V1__REQUEST__OP_REMOVE_NODE:
		path_push(c, "remove_node");
		if (q->remove_node->node_id == 0)
			return fail(c, SH_EINVAL, ".node_id: must be above 0");
		return SH_OK;
	case SHOAL__V1__REQUEST__OP_EMBED:
		path_push(c, "embed");
		return check_embed(c, q->embed);
	case SHOAL__V1__REQUEST__OP_SEARCH_TEXT:
		path_push(c, "search_text");
		return check_search_text(c, q->search_text);
	case SHOAL__V1__REQUEST__OP_GET_MAP:
		return SH_OK;
	case SHOAL__V1__REQUEST__OP_ADD_NODE: {
		path_push(c, "add_node");
		const char *a = str_or_empty(q->add_node->address);
		size_t n = strlen(a);
		if (n == 0 || n > 255 || !sh_utf8_valid(a, n))
			return fail(c, SH_EINVAL,
				    "address: 1..255 bytes of UTF-8");
		return SH_OK;
	}
	default:
		break;
	}
	/* An op field this build does not know lands among the unknown
	 * fields: a newer peer's operation, not a malformed request. */
	for (size_t i = 0; i < q->base.n_unknown_fields; i++)
		if (q->base.unknown_fields[i].tag >= 10 &&
		    q->base.unknown_fields[i].tag <= 99)
			return fail(c, SH_EUNSUPPORTED,
				    "unknown operation (field %u)",
				    q->base.unknown_fields[i].tag);
	return fail(c, SH_EINVAL, "no operation");
}

int sh_wire_validate_request(const Shoal__V1__Request *req,
			     const sh_wire_limits *lim, char *err,
			     size_t errlen)
{
	sh_wire_limits def;
	if (!lim) {
		sh_wire_limits_default(&def);
		lim = &def;
	}
	vctx c = {.lim = lim, .err = err, .errlen = errlen};
	strcpy(c.path, "request");
	c.plen = strlen(c.path);
	if (err && errlen)
		err[0] = 0;
	if (!req)
		return fail(&c, SH_EINVAL, "no request");
	if (req->protocol_version != SH_WIRE_PROTOCOL_VERSION)
		return fail(&c, SH_EUNSUPPORTED,
			    "protocol version %u not supported (this peer "
			    "speaks %d)",
			    req->protocol_version, SH_WIRE_PROTOCOL_VERSION);
	/* The op's own path replaces "request" ("upsert.points[3]..."). */
	c.plen = 0;
	c.path[0] = 0;
	return check_op(&c, req);
}

int sh_wire_decode_request(const uint8_t *buf, size_t len,
			   const sh_wire_limits *lim, Shoal__V1__Request **out,
			   char *err, size_t errlen)
{
	sh_wire_limits def;
	ProtobufCMessage *m;
	int rc;
	if (!lim) {
		sh_wire_limits_default(&def);
		lim = &def;
	}
	if (err && errlen)
		err[0] = 0;
	*out = NULL;
	rc = decode(buf, len, lim, &shoal__v1__request__descriptor, true, &m,
		    err, errlen);
	if (rc != SH_OK)
		return rc;
	Shoal__V1__Request *req = (Shoal__V1__Request *)m;
	rc = sh_wire_validate_request(req, lim, err, errlen);
	if (rc != SH_OK) {
		sh_wire_free_request(req);
		return rc;
	}
	*out = req;
	return SH_OK;
}

void sh_wire_free_request(Shoal__V1__Request *req)
{
	if (req)
		shoal__v1__request__free_unpacked(req, NULL);
}

static int encode(const ProtobufCMessage *m, uint8_t **buf, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(n ? n : 1);
	if (!b)
		return SH_ENOMEM;
	*len = protobuf_c_message_pack(m, b);
	*buf = b;
	return SH_OK;
}

int sh_wire_encode_request(const Shoal__V1__Request *req, uint8_t **buf,
			   size_t *len)
{
	return encode(&req->base, buf, len);
}

void sh_wire_response_init(Shoal__V1__Response *resp, uint64_t request_id,
			   uint64_t map_epoch)
{
	shoal__v1__response__init(resp);
	resp->protocol_version = SH_WIRE_PROTOCOL_VERSION;
	resp->request_id = request_id;
	resp->map_epoch = map_epoch;
	resp->code = SHOAL__V1__ERROR_CODE__OK;
}

int sh_wire_encode_response(const Shoal__V1__Response *resp, uint8_t **buf,
			    size_t *len)
{
	return encode(&resp->base, buf, len);
}

int sh_wire_error_response(uint64_t request_id, uint64_t map_epoch, int code,
			   const char *message, uint8_t **buf, size_t *len)
{
	Shoal__V1__Response r;
	sh_wire_response_init(&r, request_id, map_epoch);
	r.code = (Shoal__V1__ErrorCode)code;
	/* protobuf-c never writes through the pointer while packing */
	r.message = (char *)(message && *message ? message : sh_strerror(code));
	return encode(&r.base, buf, len);
}

int sh_wire_decode_response(const uint8_t *buf, size_t len,
			    const sh_wire_limits *lim,
			    Shoal__V1__Response **out, char *err, size_t errlen)
{
	sh_wire_limits def;
	ProtobufCMessage *m;
	if (!lim) {
		sh_wire_limits_default(&def);
		lim = &def;
	}
	if (err && errlen)
		err[0] = 0;
	int rc = decode(buf, len, lim, &shoal__v1__response__descriptor, false,
			&m, err, errlen);
	*out = rc == SH_OK ? (Shoal__V1__Response *)m : NULL;
	return rc;
}

void sh_wire_free_response(Shoal__V1__Response *resp)
{
	if (resp)
		shoal__v1__response__free_unpacked(resp, NULL);
}

/* ---- Slot sets ------------------------------------------------------- */

void sh_wire_slots_from_set(const Shoal__V1__SlotSet *set, uint64_t *bits)
{
	memset(bits, 0, SH_WIRE_SLOT_WORDS * sizeof(uint64_t));
	for (size_t i = 0; set && i < set->n_ranges; i++) {
		uint32_t lo = set->ranges[i]->first, hi = set->ranges[i]->last;
		if (hi >= SH_SLOTS)
			hi = SH_SLOTS - 1;
		for (uint32_t x = lo; x <= hi;) {
			if (x % 64 == 0 && hi - x >= 63) {
				bits[x / 64] = ~0ull; /* a whole word */
				x += 64;
			} else {
				bits[x / 64] |= 1ull << (x % 64);
				x++;
			}
		}
	}
}

uint32_t sh_wire_slots_next(const uint64_t *bits, uint32_t from, bool set)
{
	if (from >= SH_SLOTS)
		return SH_SLOTS;
	uint32_t w = from / 64;
	uint64_t x = (set ? bits[w] : ~bits[w]) & (~0ull << (from % 64));
	while (!x) {
		if (++w == SH_WIRE_SLOT_WORDS)
			return SH_SLOTS;
		x = set ? bits[w] : ~bits[w];
	}
	return w * 64 + (uint32_t)__builtin_ctzll(x);
}

Shoal__V1__SlotSet *sh_wire_slots_to_set(struct sh_arena *a,
					 const uint64_t *bits)
{
	Shoal__V1__SlotSet *set = sh_arena_alloc(a, sizeof(*set));
	if (!set)
		return NULL;
	shoal__v1__slot_set__init(set);
	size_t runs = 0;
	for (uint32_t s = sh_wire_slots_next(bits, 0, true); s < SH_SLOTS;
	     s = sh_wire_slots_next(bits, sh_wire_slots_next(bits, s, false),
				    true))
		runs++;
	set->ranges = sh_arena_alloc(a, (runs ? runs : 1) * sizeof(void *));
	if (!set->ranges)
		return NULL;
	for (uint32_t s = sh_wire_slots_next(bits, 0, true); s < SH_SLOTS;) {
		uint32_t end = sh_wire_slots_next(bits, s, false);
		Shoal__V1__SlotRange *r = sh_arena_alloc(a, sizeof(*r));
		if (!r)
			return NULL;
		shoal__v1__slot_range__init(r);
		r->first = s;
		r->last = end - 1;
		set->ranges[set->n_ranges++] = r;
		s = sh_wire_slots_next(bits, end, true);
	}
	return set;
}
