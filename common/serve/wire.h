/*
 * Wire helpers: decoding, validating and encoding shoal protocol messages
 * (proto/shoal.proto).
 *
 * Every server reads a request the same way:
 *
 *	Shoal__V1__Request *req;
 *	char err[256];
 *	int rc = sh_wire_decode_request(buf, len, &lim, &req, err, sizeof(err));
 *	if (rc != SH_OK)
 *		answer with sh_wire_error_response(sh_wire_peek_request_id(buf,
 *		    len), epoch, rc, err, &out, &outlen);
 *	...
 *	sh_wire_free_request(req);
 *
 * A request that sh_wire_decode_request() accepts is safe to act on without
 * further bounds checks: sizes are within the limits below, every id is a
 * valid sh_pid, every vector is finite and of a possible dimension, every
 * payload is a JSON object within 64 KiB, every filter is well formed and
 * within its depth and size limits. What depends on a collection (the
 * vector's dimension matches, the collection exists, the slot is owned) is
 * the node's to check.
 *
 * Error codes: a limit below exceeded → SH_ETOOBIG; bytes that are not a
 * protobuf Request → SH_EINVAL ("malformed request: ..."); a field with a
 * bad value → SH_EINVAL, SH_ENAN (NaN/infinity in a vector) or SH_EDIM
 * (vector of length 0 or above 4096, or queries of different lengths); a
 * protocol version other than SH_WIRE_PROTOCOL_VERSION → SH_EUNSUPPORTED.
 * The message names the field ("upsert.points[3].vector[17]: NaN or
 * infinity").
 *
 * All functions may be called from any thread at once and none blocks.
 * They keep no state, except that cJSON (which checks payloads) records its
 * last parse error in a global that nothing here reads.
 */
#ifndef SH_WIRE_H
#define SH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"
#include "pid.h"
#include "slots.h"
#include "shoal.pb-c.h"

/* The protocol version this build speaks (Request.protocol_version). */
#define SH_WIRE_PROTOCOL_VERSION 1

/* ---- Limits ------------------------------------------------------------ */

/* Default largest message, in bytes. Large enough for a batch of 10,000
 * points of 768 floats with small payloads (~31 MiB); small enough that a
 * handful of concurrent maximal requests cannot exhaust a node. Configurable
 * (sh_wire_limits.max_message_bytes). */
#define SH_WIRE_MAX_MESSAGE (64u << 20)
/* Points per upsert, stream chunk or scroll page: bounds the size of one
 * RocksDB WriteBatch and the time one writer holds a partition. */
#define SH_WIRE_MAX_BATCH_POINTS 10000
/* Ids per get or delete, and values per has_id / any_keyword / any_integer
 * set: the same bound as a batch, for the same reasons. */
#define SH_WIRE_MAX_IDS 10000
/* Query vectors per search: each runs its own graph search; a larger batch
 * would hold a worker thread past any sensible deadline. */
#define SH_WIRE_MAX_QUERIES 1024
/* Results per query. Beyond this, scroll is the tool; it also bounds the
 * response (k hits × queries). */
#define SH_WIRE_MAX_K 10000
/* Candidate list size: per-thread search scratch grows with ef. */
#define SH_WIRE_MAX_EF 10000
/* Vector dimension (DESIGN.md), the same as SH_HNSW_MAX_DIM. Not
 * configurable: it is a property of the data model. */
#define SH_WIRE_MAX_DIM 4096
/* Payload JSON, in bytes (DESIGN.md). Not configurable. */
#define SH_WIRE_MAX_PAYLOAD (64u << 10)
/* Nesting of filters (the top-level filter is depth 1). Real filters are a
 * few levels deep; the bound keeps the evaluator's recursion shallow. */
#define SH_WIRE_MAX_FILTER_DEPTH 16
/* Clauses in one filter, counted over every level: bounds evaluation cost
 * per candidate point. */
#define SH_WIRE_MAX_FILTER_CLAUSES 1024
/* Protobuf nesting of a whole message. protobuf-c unpacks nested messages
 * recursively with no limit of its own, so a 64 MiB message of nested
 * filters would overflow the stack; the decoder scans the raw bytes first
 * and refuses anything deeper (ETOOBIG). A request at the filter limit
 * nests about 2 × 16 + 5 levels; when max_filter_depth is raised, the bound
 * becomes 2 × max_filter_depth + 16. */
#define SH_WIRE_MAX_NESTING 48
/* Fields in one message, counted at every level: each field occurrence,
 * and each element of a packed varint field. protobuf-c keeps a ~40-byte
 * record per occurrence while it unpacks and allocates every sub-message
 * and string, so without this bound a 64 MiB message of 2-byte fields
 * would make it allocate over a gigabyte. A maximal upsert (10,000 points,
 * packed vectors) uses about 60,000. Repeated scalars must be packed (the
 * proto3 default of every protobuf library): unpacked, each element counts.
 */
#define SH_WIRE_MAX_ITEMS (1u << 18)
/* Payload keys and indexed field names, in bytes. */
#define SH_WIRE_MAX_KEY 256
/* Collection names: 1..64 bytes of [A-Za-z0-9_.-]. */
#define SH_WIRE_MAX_NAME 64
/* Declared payload indexes per collection. */
#define SH_WIRE_MAX_PAYLOAD_INDEXES 64
/* Texts per embed request: one batch of the embedding server at most. */
#define SH_WIRE_MAX_TEXTS 1024
/* One text, in bytes (DESIGN.md: 64 KiB, like a payload). Not
 * configurable. */
#define SH_WIRE_MAX_TEXT (64u << 10)
/* Scroll and stream cursors, in bytes (they are opaque positions: a key). */
#define SH_WIRE_MAX_CURSOR 1024

/* Limits a decoder enforces. Start from sh_wire_limits_default() and
 * change what a flag configures. Values above the SH_WIRE_MAX_* constants
 * are allowed except where the constant says "not configurable" (those
 * fields are absent here). */
typedef struct sh_wire_limits {
	size_t max_message_bytes;    /* SH_WIRE_MAX_MESSAGE */
	uint32_t max_batch_points;   /* SH_WIRE_MAX_BATCH_POINTS */
	uint32_t max_ids;	     /* SH_WIRE_MAX_IDS */
	uint32_t max_queries;	     /* SH_WIRE_MAX_QUERIES */
	uint32_t max_k;		     /* SH_WIRE_MAX_K */
	uint32_t max_ef;	     /* SH_WIRE_MAX_EF */
	uint32_t max_filter_depth;   /* SH_WIRE_MAX_FILTER_DEPTH */
	uint32_t max_filter_clauses; /* SH_WIRE_MAX_FILTER_CLAUSES */
	uint32_t max_items;	     /* SH_WIRE_MAX_ITEMS */
} sh_wire_limits;

/* Fills *lim with the defaults above. */
void sh_wire_limits_default(sh_wire_limits *lim);

/* ---- Requests ------------------------------------------------------------ */

/* Decodes and validates one request.
 *
 * buf/len: the received bytes (borrowed; not kept after return).
 * lim: the limits to enforce, or NULL for the defaults.
 * out: on SH_OK, set to a new request that the caller frees with
 *      sh_wire_free_request(); on failure, set to NULL.
 * err/errlen: on failure, a NUL-terminated message for the error response
 *      (truncated to errlen; may be NULL/0). On SH_OK, err[0] = 0.
 *
 * Returns SH_OK; SH_ETOOBIG (message, batch, ids, k, ef, payload, filter or
 * nesting over a limit); SH_EINVAL (not a protobuf Request, no operation,
 * bad id, string not UTF-8 or with NUL, payload not a JSON object, bad
 * filter, bad enum, missing field); SH_ENAN; SH_EDIM; SH_EUNSUPPORTED
 * (protocol version); SH_ENOMEM. */
int sh_wire_decode_request(const uint8_t *buf, size_t len,
			   const sh_wire_limits *lim, Shoal__V1__Request **out,
			   char *err, size_t errlen);

/* Validates an already-unpacked request (what sh_wire_decode_request does
 * after unpacking): for a request built in memory, e.g. by a router before
 * it forwards. Same returns and err convention; never changes req. */
int sh_wire_validate_request(const Shoal__V1__Request *req,
			     const sh_wire_limits *lim, char *err,
			     size_t errlen);

/* Frees a request returned by sh_wire_decode_request(). NULL is a no-op. */
void sh_wire_free_request(Shoal__V1__Request *req);

/* The request_id of a message that may be malformed, so that even an error
 * response can name its request: the last top-level field 2 varint found
 * before the bytes stop parsing, or 0. Never fails. */
uint64_t sh_wire_peek_request_id(const uint8_t *buf, size_t len);

/* The operation of a message that may be malformed, as its field number
 * in Request (SHOAL__V1__REQUEST__OP_*), or 0: found by the same scan. A
 * server uses it to route a request before decoding it; the decoder still
 * has the last word. Never fails. */
uint32_t sh_wire_peek_op(const uint8_t *buf, size_t len);

/* Encodes a request (a client's or a router's). *buf is malloc'd and the
 * caller frees it with free(). Returns SH_OK or SH_ENOMEM. Does not
 * validate (see sh_wire_validate_request). */
int sh_wire_encode_request(const Shoal__V1__Request *req, uint8_t **buf,
			   size_t *len);

/* ---- Responses ----------------------------------------------------------- */

/* Initialises a response on the stack: protocol version, request_id,
 * map_epoch, code OK, no result. The caller points its result at its own
 * objects and encodes it; nothing is allocated. */
void sh_wire_response_init(Shoal__V1__Response *resp, uint64_t request_id,
			   uint64_t map_epoch);

/* Encodes a response. *buf is malloc'd and the caller frees it with
 * free(); resp is not changed. Returns SH_OK or SH_ENOMEM. */
int sh_wire_encode_response(const Shoal__V1__Response *resp, uint8_t **buf,
			    size_t *len);

/* Encodes the response to a failed request: code (an sh_err, not SH_OK),
 * message (NULL or "" = sh_strerror(code)), no result. *buf is malloc'd;
 * the caller frees it with free(). Returns SH_OK or SH_ENOMEM. */
int sh_wire_error_response(uint64_t request_id, uint64_t map_epoch, int code,
			   const char *message, uint8_t **buf, size_t *len);

/* Decodes a response (a client's or a router's view). Only the size and
 * nesting limits of lim (NULL = defaults) are enforced: a response comes
 * from a peer that validated what it answers. *out is freed with
 * sh_wire_free_response(). Returns SH_OK, SH_ETOOBIG, SH_EINVAL or
 * SH_ENOMEM, with err as for requests. */
int sh_wire_decode_response(const uint8_t *buf, size_t len,
			    const sh_wire_limits *lim,
			    Shoal__V1__Response **out, char *err,
			    size_t errlen);

/* Frees a response returned by sh_wire_decode_response(). NULL is a
 * no-op. */
void sh_wire_free_response(Shoal__V1__Response *resp);

/* ---- Point ids ------------------------------------------------------- */

/* PointId → sh_pid. Returns SH_OK, or SH_EINVAL when no kind is set or the
 * string is empty, longer than SH_PID_MAX_STR bytes or not UTF-8 (*out is
 * then untouched). */
int sh_wire_pid_from_proto(const Shoal__V1__PointId *in, sh_pid *out);

/* ---- Filters ---------------------------------------------------------- */

/* The wire's Filter message → an sh_filter for the index core and the
 * payload planner (in may be NULL: a filter that passes everything).
 * Returns SH_OK with *out set (the caller's: sh_filter_free), or SH_EINVAL
 * with a message (an empty clause or condition, a match without a value, a
 * bad id in has_id, anything sh_filter_validate refuses), or SH_ENOMEM. A
 * request that passed sh_wire_decode_request converts without EINVAL. */
int sh_wire_filter_to_sh(const Shoal__V1__Filter *in, sh_filter **out,
			 char *err, size_t errlen);

/* An sh_filter → the wire's Filter message (what a client sends): the
 * inverse of sh_wire_filter_to_sh, so that to_sh(from_sh(f)) passes exactly
 * the points f passes. A match of one value becomes a single-value Match,
 * of several values an any_keyword / any_integer set. in is checked with
 * sh_filter_validate first. in NULL → *out NULL (no filter: passes every
 * point). On SH_OK, *out (may be NULL as said) is a new tree that the
 * caller frees with sh_wire_filter_free(); it copies every string, so it
 * does not borrow from in. Returns SH_OK, SH_EINVAL (validation, with a
 * message in err) or SH_ENOMEM; *out is NULL on failure. Any thread. */
int sh_wire_filter_from_sh(const sh_filter *in, Shoal__V1__Filter **out,
			   char *err, size_t errlen);

/* Frees a Filter built by sh_wire_filter_from_sh (NULL is a no-op). */
void sh_wire_filter_free(Shoal__V1__Filter *f);

/* ---- Slot sets --------------------------------------------------------- */

/* Words of a slot bitmap (bit s of word s / 64 is slot s). */
#define SH_WIRE_SLOT_WORDS (SH_SLOTS / 64)

/* A SlotSet (validated: ascending ranges within 0..SH_SLOTS-1; NULL: none)
 * as a bitmap of SH_WIRE_SLOT_WORDS words. */
void sh_wire_slots_from_set(const Shoal__V1__SlotSet *set, uint64_t *bits);

/* A bitmap as a SlotSet of ascending ranges, every object from a; NULL when
 * out of memory. Word at a time: a few ranges cost a few hundred word
 * reads, not one test per slot. */
struct sh_arena;
Shoal__V1__SlotSet *sh_wire_slots_to_set(struct sh_arena *a,
					 const uint64_t *bits);

/* The first slot at or after `from` whose bit is `set` in bits, or
 * SH_SLOTS when there is none. */
uint32_t sh_wire_slots_next(const uint64_t *bits, uint32_t from, bool set);

/* sh_pid → PointId, without allocating: *out is initialised and its str (for
 * string ids) points into strbuf, which must outlive *out's use (encoding).
 */
void sh_wire_pid_to_proto(const sh_pid *in, Shoal__V1__PointId *out,
			  char strbuf[SH_PID_MAX_STR + 1]);

#endif
