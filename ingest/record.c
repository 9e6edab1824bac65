/* shoal-ingest's records: parse and check one message value. See record.h.
 * The checks shared with every other request (collection name, id, vector,
 * payload) are the wire layer's: the record is shaped into the request it
 * becomes and validated by sh_wire_validate_request. */
#include "record.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <strings.h>

#include "error.h"
#include "wire.h"

/* A value far larger than a maximal record (4096 floats, 64 KiB of text,
 * 64 KiB of payload) is refused before it is parsed. */
#define MAX_VALUE (1u << 20)

void sh_ingest_record_clear(sh_ingest_record *r)
{
	if (!r)
		return;
	free(r->vector);
	free(r->text);
	free(r->payload_json);
	memset(r, 0, sizeof(*r));
}

sh_ingest_format sh_ingest_format_of(const char *ct)
{
	if (ct && (!strncasecmp(ct, "application/x-protobuf", 22) ||
		   !strncasecmp(ct, "application/protobuf", 20)))
		return SH_INGEST_PROTOBUF;
	return SH_INGEST_JSON;
}

/* ---- Checks shared by both forms ------------------------------------------
 */

static int check(sh_ingest_record *r, const void *key, size_t keylen, char *err,
		 size_t errlen)
{
	/* the key is the id's text */
	if (key && keylen) {
		char num[24];
		const char *want;
		size_t wl;
		if (r->id.kind == SH_PID_U64) {
			wl = (size_t)snprintf(num, sizeof(num), "%llu",
					      (unsigned long long)r->id.num);
			want = num;
		} else {
			want = r->id.str;
			wl = r->id.len;
		}
		if (keylen != wl || memcmp(key, want, wl) != 0)
			return sh_errf(err, errlen, SH_EINVAL,
				       "the message key is not the record's "
				       "id: changes of one point must share a "
				       "key (and so a partition)");
	}
	/* the request it becomes, checked as every request is */
	Shoal__V1__PointId pid = SHOAL__V1__POINT_ID__INIT;
	char idbuf[SH_PID_MAX_STR + 1];
	sh_wire_pid_to_proto(&r->id, &pid, idbuf);
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.protocol_version = SH_WIRE_PROTOCOL_VERSION;
	Shoal__V1__Point pt = SHOAL__V1__POINT__INIT, *pp = &pt;
	Shoal__V1__UpsertRequest up = SHOAL__V1__UPSERT_REQUEST__INIT;
	Shoal__V1__PointRef ref = SHOAL__V1__POINT_REF__INIT, *rp = &ref;
	Shoal__V1__PointRefs refs = SHOAL__V1__POINT_REFS__INIT;
	Shoal__V1__DeleteRequest del = SHOAL__V1__DELETE_REQUEST__INIT;
	if (r->op == SH_INGEST_UPSERT && r->vector) {
		pt.id = &pid;
		pt.vector = r->vector;
		pt.n_vector = r->dim;
		pt.payload_json = r->payload_json ? r->payload_json : "";
		pt.version = r->version;
		up.collection = r->collection;
		up.points = &pp;
		up.n_points = 1;
		rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
		rq.upsert = &up;
	} else {
		/* a delete, or an upsert still to be embedded: the name and
		 * the id are checked here, the text and payload below */
		ref.id = &pid;
		ref.version = r->version;
		refs.refs = &rp;
		refs.n_refs = 1;
		del.collection = r->collection;
		del.selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS;
		del.ids = &refs;
		rq.op_case = SHOAL__V1__REQUEST__OP_DELETE;
		rq.delete_ = &del;
	}
	int rc = sh_wire_validate_request(&rq, NULL, err, errlen);
	if (rc)
		return rc;
	if (r->op == SH_INGEST_UPSERT && !r->vector) {
		if (!r->text)
			return sh_errf(err, errlen, SH_EINVAL,
				       "an upsert needs a vector or a text");
		size_t n = strlen(r->text);
		if (n == 0 || n > SH_WIRE_MAX_TEXT)
			return sh_errf(err, errlen, n ? SH_ETOOBIG : SH_EINVAL,
				       "text: 1..%u bytes", SH_WIRE_MAX_TEXT);
		if (!sh_utf8_valid(r->text, n))
			return sh_errf(err, errlen, SH_EINVAL,
				       "text: not valid UTF-8");
		if (r->payload_json) {
			size_t pl = strlen(r->payload_json);
			cJSON *o = cJSON_ParseWithLength(r->payload_json, pl);
			bool obj = cJSON_IsObject(o);
			cJSON_Delete(o);
			if (pl > SH_WIRE_MAX_PAYLOAD)
				return sh_errf(err, errlen, SH_ETOOBIG,
					       "payload: %zu bytes; at most %u",
					       pl, SH_WIRE_MAX_PAYLOAD);
			if (!obj)
				return sh_errf(err, errlen, SH_EINVAL,
					       "payload: not a JSON object");
		}
	}
	if (r->op == SH_INGEST_DELETE &&
	    (r->vector || r->text || r->payload_json))
		return sh_errf(err, errlen, SH_EINVAL,
			       "a delete carries no vector, text or payload");
	return SH_OK;
}

/* ---- JSON
 * -------------------------------------------------------------------- */

static bool json_u64(const cJSON *v, uint64_t *out)
{
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;
		if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d))
			return false;
		*out = (uint64_t)d;
		return true;
	}
	if (cJSON_IsString(v) && v->valuestring[0]) {
		char *end;
		const char *s = v->valuestring;
		if (s[0] < '0' || s[0] > '9')
			return false;
		unsigned long long x = strtoull(s, &end, 10);
		if (*end ||
		    (x == ULLONG_MAX && strcmp(s, "18446744073709551615")))
			return false;
		*out = x;
		return true;
	}
	return false;
}

static int parse_json(const char *v, size_t len, sh_ingest_record *r, char *err,
		      size_t errlen)
{
	cJSON *o = cJSON_ParseWithLength(v, len);
	int rc = SH_OK;
	if (!cJSON_IsObject(o)) {
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "the value is not a JSON object");
		goto out;
	}
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "op");
	const cJSON *coll = cJSON_GetObjectItemCaseSensitive(o, "collection");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
	const cJSON *ver = cJSON_GetObjectItemCaseSensitive(o, "version");
	const cJSON *vec = cJSON_GetObjectItemCaseSensitive(o, "vector");
	const cJSON *txt = cJSON_GetObjectItemCaseSensitive(o, "text");
	const cJSON *pl = cJSON_GetObjectItemCaseSensitive(o, "payload");
	if (cJSON_IsString(op) && !strcmp(op->valuestring, "upsert"))
		r->op = SH_INGEST_UPSERT;
	else if (cJSON_IsString(op) && !strcmp(op->valuestring, "delete"))
		r->op = SH_INGEST_DELETE;
	else {
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "op: \"upsert\" or \"delete\"");
		goto out;
	}
	if (!cJSON_IsString(coll) ||
	    strlen(coll->valuestring) >= sizeof(r->collection)) {
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "collection: a name of 1..64 characters");
		goto out;
	}
	snprintf(r->collection, sizeof(r->collection), "%s", coll->valuestring);
	uint64_t num;
	if (cJSON_IsString(id)) {
		if (sh_pid_str(id->valuestring, strlen(id->valuestring),
			       &r->id) != SH_OK) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "id: a string of 1..%d bytes of UTF-8",
				     SH_PID_MAX_STR);
			goto out;
		}
	} else if (cJSON_IsNumber(id) && json_u64(id, &num)) {
		r->id = sh_pid_u64(num);
	} else {
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "id: an integer 0..2^53 or a string");
		goto out;
	}
	if (!json_u64(ver, &r->version)) {
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "version: required, a non-negative integer (a "
			     "decimal string above 2^53)");
		goto out;
	}
	if (vec && !cJSON_IsNull(vec)) {
		int n = cJSON_GetArraySize(vec);
		if (!cJSON_IsArray(vec) || n <= 0 || n > SH_WIRE_MAX_DIM) {
			rc = sh_errf(err, errlen, SH_EDIM,
				     "vector: an array of 1..%d numbers",
				     SH_WIRE_MAX_DIM);
			goto out;
		}
		r->vector = malloc((size_t)n * sizeof(float));
		if (!r->vector) {
			rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
			goto out;
		}
		const cJSON *x;
		size_t i = 0;
		cJSON_ArrayForEach(x, vec)
		{
			if (!cJSON_IsNumber(x)) {
				rc = sh_errf(err, errlen, SH_EINVAL,
					     "vector[%zu]: not a number", i);
				goto out;
			}
			r->vector[i++] = (float)x->valuedouble;
		}
		r->dim = (size_t)n;
	}
	if (txt && !cJSON_IsNull(txt)) {
		if (!cJSON_IsString(txt)) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "text: must be a string");
			goto out;
		}
		if (!(r->text = strdup(txt->valuestring))) {
			rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
			goto out;
		}
	}
	if (pl && !cJSON_IsNull(pl)) {
		if (!cJSON_IsObject(pl)) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "payload: must be a JSON object");
			goto out;
		}
		if (!(r->payload_json = cJSON_PrintUnformatted(pl))) {
			rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
			goto out;
		}
	}
out:
	cJSON_Delete(o);
	return rc;
}

/* ---- Protobuf
 * ------------------------------------------------------------------ */

static int parse_proto(const uint8_t *v, size_t len, sh_ingest_record *r,
		       char *err, size_t errlen)
{
	Shoal__V1__IngestRecord *m =
	    shoal__v1__ingest_record__unpack(NULL, len, v);
	if (!m)
		return sh_errf(err, errlen, SH_EINVAL,
			       "the value is not a protobuf IngestRecord");
	int rc = SH_OK;
	if (m->op == SHOAL__V1__INGEST_OP__INGEST_UPSERT)
		r->op = SH_INGEST_UPSERT;
	else if (m->op == SHOAL__V1__INGEST_OP__INGEST_DELETE)
		r->op = SH_INGEST_DELETE;
	else
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "op: INGEST_UPSERT or INGEST_DELETE");
	if (!rc &&
	    (!m->collection || strlen(m->collection) >= sizeof(r->collection)))
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "collection: a name of 1..64 characters");
	if (!rc) {
		snprintf(r->collection, sizeof(r->collection), "%s",
			 m->collection);
		if (sh_wire_pid_from_proto(m->id, &r->id) != SH_OK)
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "id: required, an integer or a string "
				     "of 1..%d bytes of UTF-8",
				     SH_PID_MAX_STR);
	}
	r->version = m->version;
	if (!rc && m->n_vector) {
		if (m->n_vector > SH_WIRE_MAX_DIM)
			rc = sh_errf(err, errlen, SH_EDIM,
				     "vector: %zu values; at most %d",
				     m->n_vector, SH_WIRE_MAX_DIM);
		else if (!(r->vector = malloc(m->n_vector * sizeof(float))))
			rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		else {
			memcpy(r->vector, m->vector,
			       m->n_vector * sizeof(float));
			r->dim = m->n_vector;
		}
	}
	if (!rc && m->text && m->text[0] && !(r->text = strdup(m->text)))
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	if (!rc && m->payload_json && m->payload_json[0] &&
	    !(r->payload_json = strdup(m->payload_json)))
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	shoal__v1__ingest_record__free_unpacked(m, NULL);
	return rc;
}

int sh_ingest_parse(const void *value, size_t len, sh_ingest_format fmt,
		    const void *key, size_t keylen, sh_ingest_record *out,
		    char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = 0;
	if (len > MAX_VALUE)
		return sh_errf(err, errlen, SH_ETOOBIG,
			       "value of %zu bytes; a record is at most %u",
			       len, MAX_VALUE);
	if (!value && len)
		return sh_errf(err, errlen, SH_EINVAL, "no value");
	int rc = fmt == SH_INGEST_PROTOBUF
		     ? parse_proto(value, len, out, err, errlen)
		     : parse_json(value, len, out, err, errlen);
	if (rc == SH_OK)
		rc = check(out, key, keylen, err, errlen);
	if (rc)
		sh_ingest_record_clear(out);
	return rc;
}
