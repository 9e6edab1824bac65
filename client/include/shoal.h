/*
 * libshoal: the C client of shoal, a sharded vector database.
 *
 * This header is the manual. A client talks to a shoal-router (or, for
 * tests and single-node setups, straight to a shoal-node: they speak the same
 * protocol, proto/shoal.proto) over nng.
 *
 *	shoal_client *c;
 *	shoal_filter *f;
 *	shoal_search_result *r;
 *	if (shoal_connect("tcp://127.0.0.1:7000", 2000, &c) != SHOAL_OK) {
 *		fprintf(stderr, "connect: %s\n", shoal_last_error());
 *		return 1;
 *	}
 *	shoal_filter_parse("category = 'shoes' and price < 100", &f, NULL, 0);
 *	shoal_search_options o = SHOAL_SEARCH_OPTIONS_INIT;
 *	o.k = 10;
 *	o.filter = f;
 *	if (shoal_search(c, "products", query, 128, &o, &r) == SHOAL_OK) {
 *		for (size_t i = 0; i < r->queries[0].n_hits; i++)
 *			printf("%llu %f\n", r->queries[0].hits[i].id.num,
 *			       r->queries[0].hits[i].distance);
 *		shoal_search_result_free(r);
 *	} else {
 *		fprintf(stderr, "search: %s\n", shoal_last_error());
 *	}
 *	shoal_filter_free(f);
 *	shoal_close(c);
 *
 * ## Conventions (they hold for every function below)
 *
 * - Errors. Every fallible function returns an int: SHOAL_OK (0) or one of
 *   the SHOAL_E* codes, the numbers of shoal's common/error.h, which are
 *   also the numbers the server sends. A server may send a code newer than
 *   this header: treat any non-zero code as a failure. shoal_strerror()
 *   and shoal_errname() describe a code; shoal_last_error() returns the
 *   message of the last call made by the calling thread (the server's
 *   message, e.g. "upsert.points[3].vector[17]: NaN or infinity", or the
 *   SDK's). A request that fails as a whole changed nothing on the server,
 *   except SHOAL_ETIMEDOUT of a write, which may or may not have been
 *   applied: retry with the same versions, which is idempotent.
 * - Ownership. Pointers passed in are borrowed for the duration of the
 *   call and never kept. Every result is allocated by the call, belongs to
 *   the caller and is freed with the one function named beside it, which
 *   frees every string and array inside it too (pointers into a result are
 *   valid until it is freed). Out-pointers are set to NULL on failure.
 * - Blocking. Calls that take a shoal_client send one request and block
 *   until the answer arrives or the client's timeout passes
 *   (SHOAL_ETIMEDOUT). Nothing else blocks.
 * - Threads. A shoal_client may be used by any number of threads at once;
 *   each call is its own request on its own nng context. Results and
 *   filters are plain data: any thread may read them, one thread at a time
 *   may build or free them. shoal_close() must not race calls on the same
 *   client.
 * - Distances: smaller is closer, for every metric (l2: squared Euclidean;
 *   ip and cosine: 1 - dot product).
 */
#ifndef SHOAL_H
#define SHOAL_H

#include <math.h> /* NAN, for SHOAL_NO_BOUND */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_VERSION_STRING "0.1.0"

/* ---- Errors --------------------------------------------------------------
 * The same numbers as common/error.h and the wire's ErrorCode (a test
 * checks every one). */
#define SHOAL_OK 0
#define SHOAL_ENOMEM 1	       /* out of memory */
#define SHOAL_EINVAL 2	       /* invalid argument; malformed response */
#define SHOAL_ENOTFOUND 3      /* not found */
#define SHOAL_EIO 4	       /* no connection, storage error on the server */
#define SHOAL_ETIMEDOUT 5      /* no answer within the timeout */
#define SHOAL_EEXIST 6	       /* collection name taken */
#define SHOAL_EFULL 7	       /* capacity exhausted */
#define SHOAL_ECORRUPT 8       /* corrupt or inconsistent data */
#define SHOAL_EDIM 9	       /* vector dimension does not match */
#define SHOAL_ENAN 10	       /* vector holds NaN or infinity */
#define SHOAL_ETOOBIG 11       /* input exceeds a size limit */
#define SHOAL_ESTALE 12	       /* write ignored: a newer version is stored */
#define SHOAL_EUNSUPPORTED 13  /* operation or protocol not supported */
#define SHOAL_EBUSY 14	       /* server busy or shutting down */
#define SHOAL_EMOVED 15	       /* slot moved (routers retry this) */
#define SHOAL_ENOCOLLECTION 16 /* unknown collection */

/* A sentence for a code ("unknown collection"); never NULL, also for codes
 * this build does not know. Static storage; any thread. */
const char *shoal_strerror(int code);

/* The symbolic name ("ENOCOLLECTION", "OK"); never NULL ("UNKNOWN").
 * Static storage; any thread. */
const char *shoal_errname(int code);

/* The message of the last call made by the calling thread: "" after a
 * success, the reason after a failure. Thread-local storage, valid until
 * the thread's next shoal_* call; never NULL. */
const char *shoal_last_error(void);

/* ---- Client -------------------------------------------------------------- */

typedef struct shoal_client shoal_client;

/* Connects to a router or node at url ("tcp://host:port", any nng URL) and
 * checks that it answers: blocks until the server answers a health request
 * or timeout_ms passes. timeout_ms (<= 0: 5000) also bounds every later
 * call on the client. *out is freed with shoal_close(). Returns SHOAL_OK,
 * SHOAL_EINVAL (bad URL, or the peer answered with something that is not
 * a shoal Response), SHOAL_ETIMEDOUT (nothing answered), SHOAL_EIO,
 * SHOAL_ENOMEM. nng reconnects on its own if the server restarts later. */
int shoal_connect(const char *url, int timeout_ms, shoal_client **out);

/* Closes the connection and frees the client. NULL is a no-op. No call on
 * c may be in flight or start afterwards. */
void shoal_close(shoal_client *c);

/* ---- Point ids ----------------------------------------------------------- */

/* A point's id: an unsigned 64-bit integer or a UTF-8 string of 1..64 bytes
 * (a SKU). The integer 7 and the string "7" are different points. */
typedef enum shoal_id_kind {
	SHOAL_ID_NUM = 0,
	SHOAL_ID_STR = 1,
} shoal_id_kind;

typedef struct shoal_id {
	int kind;	 /* shoal_id_kind */
	uint64_t num;	 /* SHOAL_ID_NUM */
	const char *str; /* SHOAL_ID_STR: NUL-terminated; in results it
			    points into the result */
} shoal_id;

/* Id builders (str is borrowed, not copied: it must outlive the id). */
shoal_id shoal_id_num(uint64_t num);
shoal_id shoal_id_str(const char *str);

/* ---- Collections --------------------------------------------------------- */

typedef enum shoal_metric {
	SHOAL_METRIC_L2 = 1,	 /* squared Euclidean */
	SHOAL_METRIC_IP = 2,	 /* 1 - dot product */
	SHOAL_METRIC_COSINE = 3, /* normalised at insert, then 1 - dot */
} shoal_metric;

typedef enum shoal_storage {
	SHOAL_STORAGE_F32 = 0,	/* 32-bit floats */
	SHOAL_STORAGE_INT8 = 1, /* 8-bit codes, rescored with floats */
} shoal_storage;

typedef enum shoal_payload_type {
	SHOAL_PAYLOAD_KEYWORD = 1, /* strings */
	SHOAL_PAYLOAD_INTEGER = 2, /* int64, answers ranges */
	SHOAL_PAYLOAD_FLOAT = 3,   /* double, answers ranges */
	SHOAL_PAYLOAD_BOOL = 4,	   /* true / false */
} shoal_payload_type;

/* A declared payload index: filters on field are answered from an index. */
typedef struct shoal_payload_index {
	const char *field; /* top-level payload key, 1..256 bytes */
	int type;	   /* shoal_payload_type */
} shoal_payload_index;

/* Everything that defines a collection; fixed at creation. As input every
 * pointer is borrowed; in a shoal_collection_info it points into the
 * result. */
typedef struct shoal_collection_config {
	const char *name; /* 1..64 bytes of [A-Za-z0-9_.-] */
	uint32_t dim;	  /* 1..4096 */
	int metric;	  /* shoal_metric (required) */
	int storage;	  /* shoal_storage (default f32) */
	uint32_t m;	  /* HNSW links per node; 0 = server default (16) */
	uint32_t ef_construction;	    /* 0 = server default (200) */
	uint32_t ef_search;		    /* default ef; 0 = server default */
	const shoal_payload_index *indexes; /* n_indexes entries (or NULL) */
	size_t n_indexes;
} shoal_collection_config;

/* Creates a collection. Returns SHOAL_OK, SHOAL_EEXIST (name taken, even
 * with the same config), SHOAL_EINVAL (bad name, dim, metric, index), or a
 * transport error. Blocks. */
int shoal_collection_create(shoal_client *c,
			    const shoal_collection_config *config);

/* Drops a collection and all its points. SHOAL_ENOCOLLECTION if unknown.
 * Blocks. */
int shoal_collection_drop(shoal_client *c, const char *name);

/* A collection as the server reports it. */
typedef struct shoal_collection_info {
	shoal_collection_config config; /* strings point into the result */
	uint64_t points;		/* live points (summed by a router) */
} shoal_collection_info;

typedef struct shoal_collections {
	shoal_collection_info *items; /* n items, in the server's order */
	size_t n;
	void *internal_; /* the SDK's; do not touch */
} shoal_collections;

/* Lists every collection. *out is freed with shoal_collections_free().
 * Blocks. */
int shoal_collection_list(shoal_client *c, shoal_collections **out);
void shoal_collections_free(shoal_collections *l);

/* One collection's config and size: a list with one item (n == 1), freed
 * with shoal_collections_free(). SHOAL_ENOCOLLECTION if unknown.
 * Blocks. */
int shoal_collection_info_get(shoal_client *c, const char *name,
			      shoal_collections **out);

/* ---- Filters ------------------------------------------------------------- */

/* A filter on the points' payloads (JSON objects) and ids, with Qdrant's
 * semantics: a point passes when it passes every MUST clause, at least one
 * SHOULD clause (when there are any) and no MUST_NOT clause; a clause is a
 * condition or a nested filter; an empty filter passes every point. Keys
 * are field names or dotted paths ("brand.name"); a condition on an array
 * passes when any element does; types never convert ("5" is not 5); a
 * missing key passes no condition. See docs/filters.md.
 *
 * A filter is built by one thread, then may be used by any number of calls
 * and threads at once (it is only read). Limits (depth 16, 1,024 clauses,
 * 4,096 values per set, keys of 1..256 bytes) are checked when it is used:
 * a call with a filter beyond them fails with SHOAL_EINVAL. */
typedef struct shoal_filter shoal_filter;

typedef enum shoal_occur {
	SHOAL_MUST = 0,
	SHOAL_SHOULD = 1,
	SHOAL_MUST_NOT = 2,
} shoal_occur;

/* An empty filter; free with shoal_filter_free(). SHOAL_OK or ENOMEM. */
int shoal_filter_new(shoal_filter **out);
/* Frees f and every filter nested in it. NULL is a no-op. */
void shoal_filter_free(shoal_filter *f);

/* Each builder appends one clause to list occ of f, copying key and values
 * (strings are NUL-terminated UTF-8). They return SHOAL_OK, SHOAL_ENOMEM,
 * or SHOAL_EINVAL (NULL pointer, occ out of range, empty set, no bound);
 * on error f is unchanged. */
int shoal_filter_match_keyword(shoal_filter *f, int occ, const char *key,
			       const char *value);
int shoal_filter_match_integer(shoal_filter *f, int occ, const char *key,
			       int64_t value);
int shoal_filter_match_bool(shoal_filter *f, int occ, const char *key,
			    bool value);
/* key equals any of the n values (1..4096). */
int shoal_filter_match_any_keyword(shoal_filter *f, int occ, const char *key,
				   const char *const *values, size_t n);
int shoal_filter_match_any_integer(shoal_filter *f, int occ, const char *key,
				   const int64_t *values, size_t n);
/* A numeric range on key (integers and floats alike): pass NAN (or
 * SHOAL_NO_BOUND) for each bound that does not apply; at least one must. */
#define SHOAL_NO_BOUND NAN
int shoal_filter_range(shoal_filter *f, int occ, const char *key, double gt,
		       double gte, double lt, double lte);
/* key is present, not null and not [] / [null]. */
int shoal_filter_exists(shoal_filter *f, int occ, const char *key);
/* The point's id is one of the n ids (string ids are copied). */
int shoal_filter_has_id(shoal_filter *f, int occ, const shoal_id *ids,
			size_t n);
/* Appends sub as a nested filter. On SHOAL_OK f owns sub (free f only);
 * on error sub stays the caller's. sub must not be f or contain f. */
int shoal_filter_nested(shoal_filter *f, int occ, shoal_filter *sub);

/* Parses the text form:
 *
 *	category = "shoes" and price < 100 and in_stock
 *	(color in ["red", "blue"] or not exists(color)) and qty >= 1
 *	has_id(17, "sku-9") or tags = "sale"
 *
 * and/or/not, parentheses, = != < <= > >=, in [...], not in [...],
 * exists(field), has_id(...), a bare field meaning field = true; strings in
 * double quotes with JSON escapes, or in single quotes ('shoes', with \'
 * for a quote inside). The full grammar is in docs/filters.md.
 * On SHOAL_OK *out is the caller's (shoal_filter_free). On SHOAL_EINVAL the
 * message (with the byte offset of the error) is in err (optional:
 * NUL-terminated, truncated to errlen) and in shoal_last_error(). */
int shoal_filter_parse(const char *text, shoal_filter **out, char *err,
		       size_t errlen);

/* ---- Points -------------------------------------------------------------- */

/* A point. As input (upsert) every pointer is borrowed; in results
 * (get, scroll) they point into the result. */
typedef struct shoal_point {
	shoal_id id;
	const float *vector; /* dim floats; in results NULL/0 unless
				with_vector */
	size_t dim;
	const char *payload_json; /* a JSON object, or NULL / "" for none;
				     in results "" unless with_payload */
	uint64_t version;	  /* a write with a lower version than the
				     stored one is ignored (ESTALE); equal
				     replaces. 0 is fine if you never use
				     versions. */
} shoal_point;

/* The outcome of one point of a write. */
typedef struct shoal_point_status {
	shoal_id id;
	int code;	     /* SHOAL_OK, SHOAL_ESTALE, SHOAL_ENOTFOUND, ... */
	const char *message; /* detail; usually "" */
} shoal_point_status;

typedef struct shoal_write_result {
	/* upsert / delete by ids: one per point, in request order; delete
	 * by filter: the points deleted, in no particular order. */
	shoal_point_status *statuses;
	size_t n;
	uint64_t applied; /* statuses that are SHOAL_OK */
	uint64_t ignored; /* ESTALE or ENOTFOUND */
	void *internal_;  /* the SDK's; do not touch */
} shoal_write_result;

void shoal_write_result_free(shoal_write_result *r);

/* Inserts or replaces n points (1..10000) of collection. All or nothing:
 * when any point is invalid (SHOAL_EDIM wrong dimension, SHOAL_ENAN NaN or
 * infinity, SHOAL_EINVAL bad id or payload not a JSON object,
 * SHOAL_ETOOBIG payload over 64 KiB) the call fails with that code, a
 * message naming the point, and nothing is written. Otherwise each point is
 * applied (OK) or ignored (ESTALE, a newer version is stored), and when out
 * is not NULL *out (shoal_write_result_free) says which. Acknowledged
 * means durable. Blocks. */
int shoal_upsert(shoal_client *c, const char *collection,
		 const shoal_point *points, size_t n, shoal_write_result **out);

/* Deletes n ids (1..10000); versions[i] is the version of the delete of
 * ids[i] (the tombstone keeps it, so a later write with a lower version
 * stays dead), or versions NULL for version 0 everywhere. Statuses: OK,
 * ENOTFOUND (was not live; the tombstone is written anyway), ESTALE. out
 * may be NULL. Blocks. */
int shoal_delete(shoal_client *c, const char *collection, const shoal_id *ids,
		 const uint64_t *versions, size_t n, shoal_write_result **out);

/* Deletes every point passing the non-empty filter f, with tombstones of
 * the given version. out (may be NULL) lists the points deleted. Blocks. */
int shoal_delete_by_filter(shoal_client *c, const char *collection,
			   const shoal_filter *f, uint64_t version,
			   shoal_write_result **out);

/* Points returned by get and scroll. */
typedef struct shoal_points {
	shoal_point *points; /* n points */
	size_t n;
	/* scroll: the position to pass back for the next page; len 0 when
	 * there are no more points. get: empty. */
	const uint8_t *next_cursor;
	size_t next_cursor_len;
	void *internal_; /* the SDK's; do not touch */
} shoal_points;

void shoal_points_free(shoal_points *p);

/* Fetches n ids (1..10000) in request order; ids that are not stored are
 * left out (so (*out)->n may be less than n). Blocks. */
int shoal_get(shoal_client *c, const char *collection, const shoal_id *ids,
	      size_t n, bool with_payload, bool with_vector,
	      shoal_points **out);

/* ---- Search -------------------------------------------------------------- */

typedef struct shoal_search_options {
	uint32_t k;		    /* results per query, 1..10000 (0: 10) */
	uint32_t ef;		    /* candidate list; 0 = the collection's */
	const shoal_filter *filter; /* NULL = every point */
	bool with_payload;	    /* fill hits' payload_json */
	bool with_vector;	    /* fill hits' vector */
	/* Deadline of this request in ms (0: the client's timeout): sent to
	 * the server, and the client waits no longer than it. */
	uint32_t timeout_ms;
	/* Router: the fraction (0..1] of nodes that must answer for partial
	 * results to be accepted; 0 = every node must answer (the default;
	 * a missing node fails the search). */
	float min_coverage;
	/* Exact search: distances to every point that passes the filter,
	 * no graph. Slow; for ground truth and small collections. */
	bool exact;
} shoal_search_options;

#define SHOAL_SEARCH_OPTIONS_INIT                                              \
	{                                                                      \
		10, 0, NULL, false, false, 0, 0.0f, false                      \
	}

typedef enum shoal_plan {
	SHOAL_PLAN_UNSPECIFIED = 0,
	SHOAL_PLAN_GRAPH = 1,	       /* plain HNSW search */
	SHOAL_PLAN_FILTERED_GRAPH = 2, /* HNSW skipping filtered-out points */
	SHOAL_PLAN_EXACT_SCAN = 3,     /* every passing point: exact */
} shoal_plan;

typedef struct shoal_hit {
	shoal_id id;
	float distance;		  /* smaller is closer */
	const char *payload_json; /* "" unless with_payload */
	const float *vector;	  /* dim floats; NULL/0 unless with_vector */
	size_t dim;
	uint64_t version; /* the stored version, when the server reports it (a
			    shoal-node does with with_vector; else 0) */
} shoal_hit;

/* The hits of one query, closest first, and how it was answered. */
typedef struct shoal_query_result {
	shoal_hit *hits;
	size_t n_hits; /* at most k; fewer when fewer points pass */
	int plan;      /* shoal_plan the server used */
	uint64_t estimated_passing; /* points the planner expected to pass */
	uint64_t distances;	    /* distance computations */
	bool unindexed_filter;	    /* a filter field had no payload index */
} shoal_query_result;

typedef struct shoal_search_result {
	shoal_query_result *queries; /* one per query, in request order */
	size_t n_queries;
	/* Coverage as the router reports it: nodes that answered / nodes
	 * asked (equal unless min_coverage allowed a partial answer). A
	 * single shoal-node spoken to directly reports 1 / 1. */
	uint32_t nodes_answered;
	uint32_t nodes_asked;
	void *internal_; /* the SDK's; do not touch */
} shoal_search_result;

void shoal_search_result_free(shoal_search_result *r);

/* The k nearest neighbours of one vector of dim floats (the collection's
 * dimension, else SHOAL_EDIM; finite, else SHOAL_ENAN). opt may be NULL
 * (SHOAL_SEARCH_OPTIONS_INIT). *out has one query result. Blocks. */
int shoal_search(shoal_client *c, const char *collection, const float *vector,
		 size_t dim, const shoal_search_options *opt,
		 shoal_search_result **out);

/* The same for nq queries (1..1024) at once: vectors holds nq * dim
 * floats, query after query. *out has nq query results. Blocks. */
int shoal_search_batch(shoal_client *c, const char *collection,
		       const float *vectors, size_t nq, size_t dim,
		       const shoal_search_options *opt,
		       shoal_search_result **out);

/* ---- Scroll and count ---------------------------------------------------- */

typedef struct shoal_scroll_options {
	const shoal_filter *filter; /* NULL = every point */
	const uint8_t *cursor;	    /* from the previous page; NULL = start */
	size_t cursor_len;
	uint32_t limit; /* points per page; 0 = 100; at most 10000 */
	bool with_payload;
	bool with_vector;
} shoal_scroll_options;

/* One page of the points passing the filter, in storage order. Continue
 * with opt->cursor = (*out)->next_cursor until next_cursor_len is 0 (copy
 * the cursor, or free the page only after the next call). opt may be NULL
 * (first page of everything). A forged cursor is SHOAL_EINVAL. Blocks. */
int shoal_scroll(shoal_client *c, const char *collection,
		 const shoal_scroll_options *opt, shoal_points **out);

/* Counts the points passing f (NULL = all) into *count. exact: false lets
 * the server answer an estimate from its payload indexes; *is_exact (may be
 * NULL) says which it gave. Blocks. */
int shoal_count(shoal_client *c, const char *collection, const shoal_filter *f,
		bool exact, uint64_t *count, bool *is_exact);

/* ---- Embedding (shoal-embed) ------------------------------------------- */

/* The embedding tier: shoal-embed servers turn texts into vectors with a
 * sentence model and search a collection by text (through their router).
 * An embedder knows n servers; each model is served by the one that
 * rendezvous hashing of the model's name over their URLs picks (the highest
 * xxh64(name) seeded by each URL), so a model always goes to the same
 * server and adding a server moves only the models that now hash to it.
 * Thread-safe like shoal_client. */
typedef struct shoal_embedder shoal_embedder;

/* Connects to every server (a health round trip each). timeout_ms as in
 * shoal_connect. *out is freed with shoal_embedder_close(). Returns
 * SHOAL_OK, SHOAL_EINVAL, or the first server's connection error. */
int shoal_embedder_connect(const char *const *urls, size_t n, int timeout_ms,
			   shoal_embedder **out);
void shoal_embedder_close(shoal_embedder *e);

/* The URL of the server that serves model ("" or NULL: the servers'
 * default model). Points into e. */
const char *shoal_embedder_server_for(const shoal_embedder *e,
				      const char *model);

/* Vectors of texts, in order: n rows of dim floats (L2-normalised). */
typedef struct shoal_embeddings {
	float *vectors; /* n * dim floats */
	size_t n;
	size_t dim;
	uint32_t cached; /* how many the server answered from its cache */
	char model[65];	 /* the model that made them */
} shoal_embeddings;

void shoal_embeddings_free(shoal_embeddings *r);

/* Embeds n texts (1..1024, each valid UTF-8 of at most 64 KiB) with model
 * (NULL or "": the server's default). Texts longer than the model's token
 * limit are truncated. Returns SHOAL_OK with *out, or SHOAL_EINVAL (bad
 * text), SHOAL_ETOOBIG, SHOAL_ENOTFOUND (unknown model), SHOAL_EBUSY (the
 * server is overloaded), a transport error. Blocks. */
int shoal_embed(shoal_embedder *e, const char *model, const char *const *texts,
		size_t n, shoal_embeddings **out);

/* Searches collection with the embedding of text (the server embeds it
 * and asks its router): as shoal_search with one query. Besides
 * shoal_search's errors: SHOAL_EDIM when the model's dimension is not the
 * collection's. Blocks. */
int shoal_search_text(shoal_embedder *e, const char *model,
		      const char *collection, const char *text,
		      const shoal_search_options *opt,
		      shoal_search_result **out);

#ifdef __cplusplus
}
#endif

#endif
