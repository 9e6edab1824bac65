/*
 * shoal-jepsen-client: the operation client of the fault-injection suite
 * (jepsen/, issue 9). The harness starts one per worker:
 *
 *	shoal-jepsen-client --router URL --collection NAME --dim D
 *			    [--timeout-ms 2000] [--margin-ms 100]
 *
 * and writes one JSON operation per line on its stdin; the client answers
 * each with exactly one JSON completion line on stdout (flushed), in
 * order, and exits 0 at EOF. Blank lines are skipped (they are no
 * operation); any other line that is not a valid operation is answered
 * {"id": <its id or null>, "type": "fail", "code": "EINVAL", "error": ...}
 * and the client goes on. Nothing on stdin can crash it (cJSON bounds the
 * nesting; lines over 1 MiB are refused).
 *
 * ## Operations (every one may carry "deadline_ms", 1..3600000)
 *
 *	{"id": N, "f": "create"}
 *	{"id": N, "f": "upsert", "key": K, "value": V, "version": X}
 *	{"id": N, "f": "delete", "key": K, "version": X}
 *	{"id": N, "f": "get", "key": K}
 *	{"id": N, "f": "search", "key": K, "k": 10, "exact": false}
 *	{"id": N, "f": "read_all"}
 *
 * Keys and versions are integers in 0..2^53, values in -2^53..2^53: JSON
 * numbers that cJSON (a double) and Python both hold exactly. K's vector is
 * key_vector(K): D floats in [0,1), the same for upserts and searches. The
 * payload of an upsert is {"v": V}. "create" makes the collection (dim D,
 * l2, f32) unless it exists.
 *
 * ## Completions
 *
 *	{"id": N, "f": F, "type": "ok" | "fail" | "info", ...,
 *	 "code": "ETIMEDOUT", "error": "message"}   (code, error: not on ok)
 *
 * - ok: it happened. upsert / delete: "stale": true when the point's status
 *   is ESTALE (ignored: a newer version is stored); "absent": true for
 *   ENOTFOUND (a delete of a point that was not live: the tombstone is
 *   written anyway). create: "exists": true for EEXIST. get: "value" (the
 *   payload's v, null when the point is absent) and "version" (null when
 *   absent). search: "value" (the keys returned, best first), "complete",
 *   "nodes_answered", "nodes_asked". read_all: "value" (every key).
 * - fail: certainly not applied. Every failed read (get, search,
 *   read_all: reads change nothing); a write refused as a whole (EINVAL,
 *   EDIM, ENAN, ETOOBIG, ENOCOLLECTION, EMOVED, EBUSY, EUNSUPPORTED); a
 *   point status with one of those codes; a write never sent (no thread
 *   for it, or no connection could be made before it: code of the
 *   connect, "error" says "connect").
 * - info: unknown outcome. A write that timed out, lost its connection
 *   (EIO), or failed with any other code (ENOMEM, EFULL, ECORRUPT, a code
 *   newer than this client...), including an EINVAL that is the SDK's
 *   "malformed response" (the server may have applied it before its answer
 *   was garbled); a point status with such a code.
 *
 * ## Deadlines
 *
 * An operation's deadline is its deadline_ms, else --timeout-ms. A search
 * passes it to the SDK (shoal_search_options.timeout_ms: the server gets it
 * and the SDK waits no longer). The other calls have no per-request
 * timeout in the SDK: they wait up to the client's --timeout-ms. The SDK
 * can overrun either: common/serve/rpc.c gives the send and then the
 * receive each the whole timeout (nng restarts an aio's timeout per
 * operation), so a request that waited for a connection may take up to
 * twice it. To keep every completion within its deadline whatever the SDK
 * does, each operation runs on a thread of its own while the main thread
 * waits at most deadline + --margin-ms; past that it answers for the call
 * ("watchdog": true, code ETIMEDOUT: info for a write, fail for a read),
 * leaves the thread to finish (bounded by twice the SDK's timeout) and
 * drops its late result. So a write whose deadline_ms is below --timeout-ms is
 * answered info by the watchdog when the server is slow; a search answered
 * by the watchdog means the SDK overran its own deadline, which the
 * search checker should count. At EOF the client waits for such threads
 * (at most twice --timeout-ms, + --margin-ms) before it closes the
 * connection.
 *
 * ## Duplicates: does nng resend a write?
 *
 * No. libshoal sends through common/serve/rpc.c, whose sh_rpc_dial sets
 * NNG_OPT_REQ_RESENDTIME to NNG_DURATION_INFINITE on the REQ socket before
 * any context is opened, and every call opens its own context, which takes
 * the socket's resend time. With resend disabled nng's req0 neither
 * resends on its timer nor re-queues a request whose connection closed
 * (req0_pipe_close, retry <= 0: the waiting receive fails with
 * NNG_ECONNRESET, which rpc.c reports as SH_EIO); a request still queued
 * for want of a connection is cancelled when its aio times out. So a
 * request reaches the server at most once. (Checked against nng 1.5.2,
 * Debian's: a REQ context whose server dropped the connection with the
 * request unanswered fails at once with "Connection reset", and the
 * restarted server receives nothing; with nng's default resend time of
 * 60 s the same request is sent again to the restarted server.) Were a
 * late duplicate to land anyway it would be harmless: it carries the
 * original version, and the harness never reuses a version for a key, so a
 * newer write wins (ESTALE) and the duplicate cannot overwrite it. (A
 * timed-out write may still be applied late by the server: that is what
 * "info" says.)
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "shoal.h"

/* Integers above 2^53 do not survive a double (cJSON's numbers). */
#define JC_MAX_EXACT 9007199254740992.0
/* A line longer than this is refused unread (no operation needs it). */
#define JC_MAX_LINE (1u << 20)
/* read_all: points per scroll page. */
#define JC_PAGE 1000
/* search: the SDK's bound on k. */
#define JC_MAX_K 10000
/* deadline_ms, --timeout-ms, --margin-ms: an hour is plenty. */
#define JC_MAX_MS 3600000

enum op_kind {
	OP_CREATE,
	OP_UPSERT,
	OP_DELETE,
	OP_GET,
	OP_SEARCH,
	OP_READ_ALL,
};

static const char *const op_names[] = {
    [OP_CREATE] = "create", [OP_UPSERT] = "upsert", [OP_DELETE] = "delete",
    [OP_GET] = "get",	    [OP_SEARCH] = "search", [OP_READ_ALL] = "read_all",
};

/* One parsed operation. Read-only once its job has started. */
struct op {
	cJSON *id; /* copy of the request's "id" (NULL: none); owned */
	int kind;  /* enum op_kind, or -1 when "f" was not understood */
	uint64_t key;
	int64_t value;
	uint64_t version;
	uint32_t k;
	bool exact;
	uint32_t deadline_ms; /* 0: none given (the client's timeout) */
};

/* An operation in flight: shared by the main thread, which waits for it,
 * and its worker thread, which runs it. Whoever drops the last reference
 * frees it, so a worker left behind by the watchdog frees its own job. */
struct job {
	struct op op;
	cJSON *out;	       /* the completion; under g.mu */
	bool done;	       /* under g.mu */
	atomic_bool abandoned; /* the watchdog answered: stop early */
	atomic_int refs;       /* 2 while both threads hold it */
};

/* Process-wide state. The configuration is set in main() before the first
 * worker starts and read-only afterwards. */
static struct {
	const char *url;
	const char *collection;
	uint32_t dim;
	int timeout_ms;
	int margin_ms;
	/* mu guards every job's out and done, and inflight; cv (on
	 * CLOCK_MONOTONIC) is signalled when a job finishes. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int inflight; /* worker threads not finished */
	/* conn_mu guards client: connected by the first operation that needs
	 * it (nng then reconnects by itself), closed in main() at exit. */
	pthread_mutex_t conn_mu;
	shoal_client *client;
} g = {
    .timeout_ms = 2000,
    .margin_ms = 100,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .conn_mu = PTHREAD_MUTEX_INITIALIZER,
};

/* ---- Vectors -----------------------------------------------------------
 */

/* splitmix64 (Steele, Lea, Flood 2014): one step of the sequence. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* The vector of key: dim floats in [0,1), a function of key alone (the
 * splitmix64 sequence seeded with key, the top 24 bits of each step over
 * 2^24, exact in a float). Upserts store it, searches ask for it. */
static void key_vector(uint64_t key, float *v, uint32_t dim)
{
	uint64_t s = key;
	for (uint32_t i = 0; i < dim; i++)
		v[i] = (float)(splitmix64(&s) >> 40) * (1.0f / 16777216.0f);
}

/* ---- Completions -------------------------------------------------------
 */

/* An exact integer as a JSON number (cJSON would print a double, 1e+16
 * for large ones, which Python reads as a float). */
static cJSON *json_u64(uint64_t v)
{
	char b[32];
	snprintf(b, sizeof(b), "%" PRIu64, v);
	return cJSON_CreateRaw(b);
}

static cJSON *json_i64(int64_t v)
{
	char b[32];
	snprintf(b, sizeof(b), "%" PRId64, v);
	return cJSON_CreateRaw(b);
}

/* A copy of a request's id for the completion: integers exactly. */
static cJSON *json_id(const cJSON *id)
{
	if (!id)
		return cJSON_CreateNull();
	if (cJSON_IsNumber(id) && fabs(id->valuedouble) <= JC_MAX_EXACT &&
	    id->valuedouble == floor(id->valuedouble))
		return json_i64((int64_t)id->valuedouble);
	return cJSON_Duplicate(id, true);
}

/* A point id as JSON: a number, or a string for a string id. */
static cJSON *json_point_id(const shoal_id *id)
{
	if (id->kind == SHOAL_ID_STR)
		return cJSON_CreateString(id->str ? id->str : "");
	return json_u64(id->num);
}

/* The envelope of op's completion: {"id", "f", "type"}. NULL when out of
 * memory (cJSON's adders ignore a NULL object, so callers may go on). */
static cJSON *completion(const struct op *op, const char *type)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	cJSON_AddItemToObject(o, "id", json_id(op->id));
	if (op->kind >= 0)
		cJSON_AddStringToObject(o, "f", op_names[op->kind]);
	cJSON_AddStringToObject(o, "type", type);
	return o;
}

static void add_error(cJSON *o, int code, const char *msg)
{
	cJSON_AddStringToObject(o, "code", shoal_errname(code));
	cJSON_AddStringToObject(o, "error",
				msg && *msg ? msg : shoal_strerror(code));
}

static cJSON *failure(const struct op *op, const char *type, int code,
		      const char *msg)
{
	cJSON *o = completion(op, type);
	add_error(o, code, msg);
	return o;
}

/* Whether a write that failed with code was refused, nothing applied. */
static bool write_refused(int code, const char *msg)
{
	switch (code) {
	case SHOAL_EINVAL:
		/* The SDK's EINVAL for an answer it could not read: the
		 * server may have applied the write before answering. */
		return strncmp(msg, "malformed response", 18) != 0;
	case SHOAL_EDIM:
	case SHOAL_ENAN:
	case SHOAL_ETOOBIG:
	case SHOAL_ENOCOLLECTION:
	case SHOAL_EMOVED:
	case SHOAL_EBUSY:
	case SHOAL_EUNSUPPORTED:
		return true;
	default: /* ETIMEDOUT, EIO, ENOMEM, and everything unknown */
		return false;
	}
}

static cJSON *write_failure(const struct op *op, int code, const char *msg)
{
	return failure(op, write_refused(code, msg) ? "fail" : "info", code,
		       msg);
}

/* The completion of a one-point upsert or delete that returned rc and r
 * (r is freed here). */
static cJSON *write_completion(const struct op *op, int rc,
			       shoal_write_result *r)
{
	if (rc) {
		shoal_write_result_free(r);
		return write_failure(op, rc, shoal_last_error());
	}
	cJSON *o;
	int code = r && r->n == 1 ? r->statuses[0].code : SHOAL_EINVAL;
	if (!r || r->n != 1) {
		/* Acknowledged, but the answer does not say how. */
		o = failure(op, "info", SHOAL_EINVAL,
			    "malformed response: no status for the point");
	} else if (code == SHOAL_OK) {
		o = completion(op, "ok");
	} else if (code == SHOAL_ESTALE) {
		o = completion(op, "ok");
		cJSON_AddTrueToObject(o, "stale");
	} else if (code == SHOAL_ENOTFOUND) {
		o = completion(op, "ok");
		cJSON_AddTrueToObject(o, "absent");
	} else {
		o = write_failure(op, code, r->statuses[0].message);
	}
	shoal_write_result_free(r);
	return o;
}

/* ---- The operations (on a worker thread) -------------------------------
 */

/* The shared client, connected on first use. Returns SHOAL_OK with *c, or
 * the connect's code (shoal_last_error() has its message). */
static int get_client(shoal_client **c)
{
	int rc = SHOAL_OK;
	pthread_mutex_lock(&g.conn_mu);
	if (!g.client)
		rc = shoal_connect(g.url, g.timeout_ms, &g.client);
	*c = g.client;
	pthread_mutex_unlock(&g.conn_mu);
	return rc;
}

static cJSON *do_create(const struct op *op, shoal_client *c)
{
	shoal_collection_config cfg = {
	    .name = g.collection,
	    .dim = g.dim,
	    .metric = SHOAL_METRIC_L2,
	    .storage = SHOAL_STORAGE_F32,
	};
	int rc = shoal_collection_create(c, &cfg);
	if (rc == SHOAL_OK)
		return completion(op, "ok");
	if (rc == SHOAL_EEXIST) {
		cJSON *o = completion(op, "ok");
		cJSON_AddTrueToObject(o, "exists");
		return o;
	}
	return write_failure(op, rc, shoal_last_error());
}

static cJSON *do_upsert(const struct op *op, shoal_client *c)
{
	float *v = malloc(g.dim * sizeof(*v));
	if (!v) /* nothing was sent */
		return failure(op, "fail", SHOAL_ENOMEM, "out of memory");
	key_vector(op->key, v, g.dim);
	char payload[48];
	snprintf(payload, sizeof(payload), "{\"v\":%" PRId64 "}", op->value);
	shoal_point p = {
	    .id = shoal_id_num(op->key),
	    .vector = v,
	    .dim = g.dim,
	    .payload_json = payload,
	    .version = op->version,
	};
	shoal_write_result *r = NULL;
	int rc = shoal_upsert(c, g.collection, &p, 1, &r);
	free(v);
	return write_completion(op, rc, r);
}

static cJSON *do_delete(const struct op *op, shoal_client *c)
{
	shoal_id id = shoal_id_num(op->key);
	shoal_write_result *r = NULL;
	int rc = shoal_delete(c, g.collection, &id, &op->version, 1, &r);
	return write_completion(op, rc, r);
}

/* The payload's "v" as JSON (integers exactly); null when the payload has
 * none. */
static cJSON *payload_value(const char *payload_json)
{
	cJSON *p = cJSON_Parse(payload_json ? payload_json : "");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, "v");
	cJSON *out;
	if (!v)
		out = cJSON_CreateNull();
	else if (cJSON_IsNumber(v) && fabs(v->valuedouble) <= JC_MAX_EXACT &&
		 v->valuedouble == floor(v->valuedouble))
		out = json_i64((int64_t)v->valuedouble);
	else
		out = cJSON_Duplicate(v, true);
	cJSON_Delete(p);
	return out;
}

static cJSON *do_get(const struct op *op, shoal_client *c)
{
	shoal_id id = shoal_id_num(op->key);
	shoal_points *pts = NULL;
	int rc = shoal_get(c, g.collection, &id, 1, true, false, &pts);
	if (rc)
		return failure(op, "fail", rc, shoal_last_error());
	cJSON *o;
	if (pts->n == 0) {
		o = completion(op, "ok");
		cJSON_AddNullToObject(o, "value");
		cJSON_AddNullToObject(o, "version");
	} else if (pts->n != 1 || pts->points[0].id.kind != SHOAL_ID_NUM ||
		   pts->points[0].id.num != op->key) {
		o = failure(op, "fail", SHOAL_EINVAL,
			    "malformed response: get answered another point");
	} else {
		o = completion(op, "ok");
		cJSON_AddItemToObject(
		    o, "value", payload_value(pts->points[0].payload_json));
		cJSON_AddItemToObject(o, "version",
				      json_u64(pts->points[0].version));
	}
	shoal_points_free(pts);
	return o;
}

static cJSON *do_search(const struct op *op, shoal_client *c)
{
	float *v = malloc(g.dim * sizeof(*v));
	if (!v)
		return failure(op, "fail", SHOAL_ENOMEM, "out of memory");
	key_vector(op->key, v, g.dim);
	shoal_search_options so = SHOAL_SEARCH_OPTIONS_INIT;
	so.k = op->k;
	so.exact = op->exact;
	so.timeout_ms = op->deadline_ms; /* 0: the client's timeout */
	so.min_coverage = 0; /* a node that does not answer fails it */
	shoal_search_result *r = NULL;
	int rc = shoal_search(c, g.collection, v, g.dim, &so, &r);
	free(v);
	if (rc)
		return failure(op, "fail", rc, shoal_last_error());
	cJSON *o = completion(op, "ok");
	cJSON *keys = cJSON_AddArrayToObject(o, "value");
	const shoal_query_result *q = r->n_queries ? &r->queries[0] : NULL;
	for (size_t i = 0; q && i < q->n_hits; i++)
		cJSON_AddItemToArray(keys, json_point_id(&q->hits[i].id));
	/* The SDK reports coverage as nodes answered / asked; the router
	 * answers only when every slot of the 16384 was covered once
	 * (min_coverage 0), so equal counts mean a complete answer. */
	cJSON_AddBoolToObject(o, "complete",
			      r->nodes_asked > 0 &&
				  r->nodes_answered == r->nodes_asked);
	cJSON_AddItemToObject(o, "nodes_answered", json_u64(r->nodes_answered));
	cJSON_AddItemToObject(o, "nodes_asked", json_u64(r->nodes_asked));
	shoal_search_result_free(r);
	return o;
}

static cJSON *do_read_all(struct job *j, shoal_client *c)
{
	const struct op *op = &j->op;
	cJSON *keys = cJSON_CreateArray();
	uint8_t *cursor = NULL;
	size_t cursor_len = 0;
	int rc = SHOAL_OK;
	char msg[512] = "";
	for (;;) {
		if (atomic_load(&j->abandoned)) {
			rc = SHOAL_ETIMEDOUT;
			snprintf(msg, sizeof(msg), "past the deadline");
			break;
		}
		shoal_scroll_options so = {
		    .cursor = cursor,
		    .cursor_len = cursor_len,
		    .limit = JC_PAGE,
		};
		shoal_points *page = NULL;
		rc = shoal_scroll(c, g.collection, &so, &page);
		if (rc) {
			snprintf(msg, sizeof(msg), "%s", shoal_last_error());
			break;
		}
		for (size_t i = 0; i < page->n; i++)
			cJSON_AddItemToArray(
			    keys, json_point_id(&page->points[i].id));
		free(cursor);
		cursor = NULL;
		cursor_len = page->next_cursor_len;
		if (cursor_len) {
			cursor = malloc(cursor_len);
			if (cursor)
				memcpy(cursor, page->next_cursor, cursor_len);
		}
		shoal_points_free(page);
		if (!cursor_len)
			break;
		if (!cursor) {
			rc = SHOAL_ENOMEM;
			snprintf(msg, sizeof(msg), "out of memory");
			break;
		}
	}
	free(cursor);
	if (rc) {
		cJSON_Delete(keys);
		return failure(op, "fail", rc, msg);
	}
	cJSON *o = completion(op, "ok");
	if (!o) {
		cJSON_Delete(keys);
		return NULL;
	}
	cJSON_AddItemToObject(o, "value", keys);
	return o;
}

static cJSON *run_op(struct job *j)
{
	const struct op *op = &j->op;
	shoal_client *c;
	int rc = get_client(&c);
	if (rc) {
		/* Only a health request was sent: the operation was not. */
		char msg[600];
		snprintf(msg, sizeof(msg), "not sent: %s", shoal_last_error());
		return failure(op, "fail", rc, msg);
	}
	switch (op->kind) {
	case OP_CREATE:
		return do_create(op, c);
	case OP_UPSERT:
		return do_upsert(op, c);
	case OP_DELETE:
		return do_delete(op, c);
	case OP_GET:
		return do_get(op, c);
	case OP_SEARCH:
		return do_search(op, c);
	case OP_READ_ALL:
		return do_read_all(j, c);
	default:
		return failure(op, "fail", SHOAL_EINVAL, "unknown operation");
	}
}

/* ---- Jobs ----------------------------------------------------------------
 */

static void job_unref(struct job *j)
{
	if (atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	cJSON_Delete(j->op.id);
	cJSON_Delete(j->out);
	free(j);
}

static void *worker(void *arg)
{
	struct job *j = arg;
	cJSON *out = run_op(j);
	pthread_mutex_lock(&g.mu);
	j->out = out;
	j->done = true;
	g.inflight--;
	pthread_cond_broadcast(&g.cv);
	pthread_mutex_unlock(&g.mu);
	job_unref(j);
	return NULL;
}

static void deadline_after(struct timespec *t, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, t);
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000L;
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

static bool is_read(int kind)
{
	return kind == OP_GET || kind == OP_SEARCH || kind == OP_READ_ALL;
}

/* Runs op (taking its id) on a worker thread and returns its completion,
 * or the watchdog's at deadline + margin. NULL only when out of memory. */
static cJSON *execute(struct op *op)
{
	long wait_ms =
	    (long)(op->deadline_ms ? op->deadline_ms : (uint32_t)g.timeout_ms) +
	    g.margin_ms;
	struct timespec until;
	deadline_after(&until, wait_ms);
	struct job *j = calloc(1, sizeof(*j));
	if (!j) {
		cJSON *o = failure(op, "fail", SHOAL_ENOMEM, "out of memory");
		cJSON_Delete(op->id);
		return o;
	}
	j->op = *op;
	op->id = NULL;
	atomic_init(&j->abandoned, false);
	atomic_init(&j->refs, 2);

	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&g.mu);
	g.inflight++;
	pthread_mutex_unlock(&g.mu);
	int err = pthread_create(&t, &attr, worker, j);
	pthread_attr_destroy(&attr);
	if (err) {
		pthread_mutex_lock(&g.mu);
		g.inflight--;
		pthread_mutex_unlock(&g.mu);
		char msg[128];
		snprintf(msg, sizeof(msg), "not sent: no thread for it: %s",
			 strerror(err));
		cJSON *o = failure(&j->op, "fail", SHOAL_ENOMEM, msg);
		atomic_store(&j->refs, 1);
		job_unref(j);
		return o;
	}

	cJSON *out = NULL;
	pthread_mutex_lock(&g.mu);
	while (!j->done &&
	       pthread_cond_timedwait(&g.cv, &g.mu, &until) != ETIMEDOUT)
		;
	if (j->done) {
		out = j->out;
		j->out = NULL;
	} else {
		atomic_store(&j->abandoned, true);
	}
	pthread_mutex_unlock(&g.mu);
	if (!out && !j->done) {
		char msg[160];
		snprintf(msg, sizeof(msg),
			 "no answer within the deadline (%ld ms with the "
			 "margin): the client stopped waiting",
			 wait_ms);
		out = failure(&j->op, is_read(j->op.kind) ? "fail" : "info",
			      SHOAL_ETIMEDOUT, msg);
		cJSON_AddTrueToObject(out, "watchdog");
	}
	job_unref(j);
	return out;
}

/* ---- Parsing -------------------------------------------------------------
 */

/* Reads integer field name of o into *out when present (else leaves it).
 * Returns false with a message in err when it is there but not an integer
 * in lo..hi, or missing and required. */
static bool get_int(const cJSON *o, const char *name, bool required, double lo,
		    double hi, double *out, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!v) {
		if (required)
			snprintf(err, errlen, "\"%s\" is missing", name);
		return !required;
	}
	double d = v->valuedouble;
	if (!cJSON_IsNumber(v) || d != floor(d) || d < lo || d > hi) {
		snprintf(err, errlen, "\"%s\" must be an integer in %.0f..%.0f",
			 name, lo, hi);
		return false;
	}
	*out = d;
	return true;
}

/* Parses one line into op. Returns true, or false with a message in err
 * (op->id and op->kind are then set as far as they could be read). */
static bool parse_op(const char *line, size_t len, struct op *op, char *err,
		     size_t errlen)
{
	memset(op, 0, sizeof(*op));
	op->kind = -1;
	op->k = 10;
	cJSON *j = cJSON_ParseWithLength(line, len);
	bool ok = false;
	if (!cJSON_IsObject(j)) {
		snprintf(err, errlen, "not a JSON object");
		goto done;
	}
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
	if (id && (cJSON_IsNumber(id) || cJSON_IsString(id)))
		op->id = cJSON_Duplicate(id, true);
	else if (id && !cJSON_IsNull(id)) {
		snprintf(err, errlen, "\"id\" must be a number or a string");
		goto done;
	}
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "f");
	if (!cJSON_IsString(f)) {
		snprintf(err, errlen, "\"f\" must be a string");
		goto done;
	}
	for (int i = 0; i < (int)(sizeof(op_names) / sizeof(op_names[0])); i++)
		if (strcmp(f->valuestring, op_names[i]) == 0)
			op->kind = i;
	if (op->kind < 0) {
		snprintf(err, errlen,
			 "unknown \"f\" (create, upsert, delete, get, "
			 "search, read_all)");
		goto done;
	}
	double d = 0;
	if (!get_int(j, "deadline_ms", false, 1, JC_MAX_MS, &d, err, errlen))
		goto done;
	op->deadline_ms = (uint32_t)d;
	bool key = op->kind != OP_CREATE && op->kind != OP_READ_ALL;
	if (key) {
		if (!get_int(j, "key", true, 0, JC_MAX_EXACT, &d, err, errlen))
			goto done;
		op->key = (uint64_t)d;
	}
	if (op->kind == OP_UPSERT) {
		if (!get_int(j, "value", true, -JC_MAX_EXACT, JC_MAX_EXACT, &d,
			     err, errlen))
			goto done;
		op->value = (int64_t)d;
	}
	if (op->kind == OP_UPSERT || op->kind == OP_DELETE) {
		if (!get_int(j, "version", true, 0, JC_MAX_EXACT, &d, err,
			     errlen))
			goto done;
		op->version = (uint64_t)d;
	}
	if (op->kind == OP_SEARCH) {
		d = op->k;
		if (!get_int(j, "k", false, 1, JC_MAX_K, &d, err, errlen))
			goto done;
		op->k = (uint32_t)d;
		const cJSON *ex = cJSON_GetObjectItemCaseSensitive(j, "exact");
		if (ex && !cJSON_IsBool(ex)) {
			snprintf(err, errlen, "\"exact\" must be a boolean");
			goto done;
		}
		op->exact = cJSON_IsTrue(ex);
	}
	ok = true;
done:
	cJSON_Delete(j);
	return ok;
}

/* ---- main ----------------------------------------------------------------
 */

/* Writes o as one line and flushes; frees o. id_text is the id as JSON,
 * for the line written when o cannot be (out of memory). False when
 * stdout failed. */
static bool emit(cJSON *o, const char *id_text)
{
	char *s = o ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (s) {
		fputs(s, stdout);
		free(s);
	} else {
		/* Still one line, with what is known; info, since a write may
		 * have happened. */
		printf("{\"id\":%s,\"type\":\"info\",\"code\":\"ENOMEM\","
		       "\"error\":\"out of memory writing the completion\"}",
		       id_text);
	}
	fputc('\n', stdout);
	return fflush(stdout) == 0 && !ferror(stdout);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shoal-jepsen-client --router URL --collection NAME "
		"--dim D [--timeout-ms MS] [--margin-ms MS]\n"
		"Reads one JSON operation per line on stdin and answers each "
		"with one JSON\ncompletion line (ok / fail / info) on stdout; "
		"see jepsen/client/jepsen_client.c.\n"
		"  --router URL       the router (or a node), e.g. "
		"tcp://127.0.0.10:7000\n"
		"  --collection NAME  the collection every operation works on\n"
		"  --dim D            its dimension (1..4096)\n"
		"  --timeout-ms MS    the SDK's timeout of every call, and the "
		"deadline of an\n"
		"                     operation without deadline_ms (default "
		"2000)\n"
		"  --margin-ms MS     how far past a deadline the client waits "
		"for the SDK\n"
		"                     before answering for it (default 100)\n");
}

static bool parse_ms(const char *s, int lo, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > JC_MAX_MS)
		return false;
	*out = (int)v;
	return true;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"router", required_argument, NULL, 'r'},
	    {"collection", required_argument, NULL, 'c'},
	    {"dim", required_argument, NULL, 'd'},
	    {"timeout-ms", required_argument, NULL, 't'},
	    {"margin-ms", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int dim = 0, ch;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'r':
			g.url = optarg;
			break;
		case 'c':
			g.collection = optarg;
			break;
		case 'd':
			if (!parse_ms(optarg, 1, &dim) || dim > 4096) {
				fprintf(stderr, "--dim: 1..4096\n");
				return 2;
			}
			break;
		case 't':
			if (!parse_ms(optarg, 1, &g.timeout_ms)) {
				fprintf(stderr, "--timeout-ms: 1..%d\n",
					JC_MAX_MS);
				return 2;
			}
			break;
		case 'm':
			if (!parse_ms(optarg, 0, &g.margin_ms)) {
				fprintf(stderr, "--margin-ms: 0..%d\n",
					JC_MAX_MS);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!g.url || !g.collection || !dim || optind != argc) {
		usage(stderr);
		return 2;
	}
	g.dim = (uint32_t)dim;
	signal(SIGPIPE, SIG_IGN);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g.cv, &ca);
	pthread_condattr_destroy(&ca);

	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int status = 0;
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		size_t len = (size_t)n;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
			       line[len - 1] == ' ' || line[len - 1] == '\t'))
			len--;
		if (!len)
			continue;
		struct op op;
		char err[160], id_text[32] = "null";
		cJSON *out;
		bool parsed = false;
		if (len > JC_MAX_LINE) {
			memset(&op, 0, sizeof(op));
			op.kind = -1;
		} else {
			parsed = parse_op(line, len, &op, err, sizeof(err));
		}
		if (op.id && cJSON_IsNumber(op.id) &&
		    fabs(op.id->valuedouble) <= JC_MAX_EXACT)
			snprintf(id_text, sizeof(id_text), "%.0f",
				 op.id->valuedouble);
		if (len > JC_MAX_LINE) {
			out = failure(&op, "fail", SHOAL_EINVAL,
				      "line over 1 MiB");
		} else if (!parsed) {
			out = failure(&op, "fail", SHOAL_EINVAL, err);
		} else {
			out = execute(&op); /* takes op.id */
		}
		bool ok = emit(out, id_text);
		cJSON_Delete(op.id);
		if (!ok) {
			fprintf(stderr, "shoal-jepsen-client: stdout: %s\n",
				strerror(errno));
			status = 1;
			break;
		}
	}
	free(line);

	/* Operations the watchdog gave up on may still be in flight: let
	 * them end (the SDK bounds them) before closing the client under
	 * them; if they do not, exit without closing. */
	struct timespec until;
	deadline_after(&until, 2L * g.timeout_ms + g.margin_ms);
	pthread_mutex_lock(&g.mu);
	while (g.inflight &&
	       pthread_cond_timedwait(&g.cv, &g.mu, &until) != ETIMEDOUT)
		;
	bool idle = g.inflight == 0;
	pthread_mutex_unlock(&g.mu);
	if (idle) {
		pthread_mutex_lock(&g.conn_mu);
		shoal_close(g.client);
		g.client = NULL;
		pthread_mutex_unlock(&g.conn_mu);
	}
	return status;
}
