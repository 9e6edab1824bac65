/*
 * Payload indexes of one partition, and the filter planner's use of them.
 *
 * A collection declares some payload fields as indexed, each with a type:
 *
 *   KEYWORD  value → roaring bitmap of iids, in an open-addressing hash
 *            table keyed by xxh64 of the string (linear probing, backward
 *            shift on delete, so a value whose last point left takes no
 *            room). Lookup O(1); add/remove O(1) plus the bitmap update.
 *   BOOL     two bitmaps, true and false.
 *   INTEGER, FLOAT
 *            one numeric structure for both: entries (value as double, iid)
 *            in a sorted array, plus an unsorted tail where adds land. A
 *            range is two binary searches over the sorted part and a scan
 *            of the tail: O(log n + tail + matches). When the tail reaches
 *            max(SH_PAYLOAD_TAIL_MIN, n / SH_PAYLOAD_TAIL_DIV) entries it is
 *            sorted and merged in (O(n + t log t), so an add costs
 *            O(SH_PAYLOAD_TAIL_DIV) moves amortised). A remove searches the
 *            tail, then the sorted part, and marks the entry dead; dead
 *            entries are dropped at the next merge, which a remove forces
 *            once a quarter of the sorted part is dead. Every JSON number is
 *            a double in cJSON, so keying both types by double is exact: the
 *            declared type says which conditions the field is meant for and
 *            is reported back; both answer ranges and integer matches.
 *
 * Every indexed field also keeps a "present" bitmap (the iids for which
 * exists(field) holds), so exists on an indexed field is exact, and the
 * index keeps the set of all iids it was given, the universe that must_not
 * subtracts from. The node must therefore call sh_payload_index_add for
 * EVERY live point, with a NULL payload when it has none.
 *
 * Fields are read from the payload exactly as sh_filter_eval reads them
 * (sh_filter_lookup: dotted paths into nested objects; an array indexes each
 * scalar element); a value whose JSON type does not fit the field's type
 * (a string in an INTEGER field) is not indexed but still counts as present.
 *
 * ## Threads
 *
 * A plain data structure with no locks of its own: one writer at a time,
 * and no reader (plan, mem, count) may run during a write. Readers may run
 * concurrently with each other (they change nothing, merges happen only in
 * writes). The shard node wraps it for its RCU readers (e.g. a copy
 * published per batch, or its own lock); this module knows nothing of that.
 *
 * ## Updates
 *
 * An upsert is remove(old iid, old payload) then add(new iid, new payload):
 * the index keeps no copy of payloads, so remove must be given the payload
 * the point was added with. Adding an iid twice without a remove in between
 * is a caller error (harmless for bitmaps; numeric entries are duplicated
 * and removed together).
 */
#ifndef SH_PAYLOAD_H
#define SH_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"

typedef struct cJSON cJSON;
typedef struct roaring_bitmap_s roaring_bitmap_t;

/* Declared fields per partition: a schema, not a data store. */
#define SH_PAYLOAD_MAX_FIELDS 64
/* Numeric tail merge threshold: max(TAIL_MIN, n / TAIL_DIV) entries. */
#define SH_PAYLOAD_TAIL_MIN 1024
#define SH_PAYLOAD_TAIL_DIV 64
/* Fraction of points assumed to pass a condition no index can answer (the
 * planner's guess when it cannot count; a high guess errs towards filtered
 * graph search, which stays correct, rather than a scan that is too big). */
#define SH_PAYLOAD_UNINDEXED_SELECTIVITY 0.5

typedef enum sh_payload_type {
	SH_PAYLOAD_KEYWORD = 0,
	SH_PAYLOAD_INTEGER = 1,
	SH_PAYLOAD_FLOAT = 2,
	SH_PAYLOAD_BOOL = 3,
} sh_payload_type;

/* "keyword", "integer", "float", "bool"; "unknown" otherwise. */
const char *sh_payload_type_name(sh_payload_type t);

/* Parses the names above; returns SH_OK or SH_EINVAL. */
int sh_payload_type_parse(const char *name, sh_payload_type *out);

typedef struct sh_payload_field {
	const char *name; /* key as in filters: 1..SH_FILTER_MAX_KEY bytes,
			     dotted path allowed */
	sh_payload_type type;
} sh_payload_field;

typedef struct sh_payload_index sh_payload_index;

/* ---- Lifecycle ----------------------------------------------------------- */

/* Creates an empty index of n declared fields (names copied; n may be 0).
 * Returns SH_OK, SH_EINVAL (a bad or duplicate name, a bad type, more than
 * SH_PAYLOAD_MAX_FIELDS) or SH_ENOMEM. *out is the caller's: free with
 * sh_payload_index_free(). */
int sh_payload_index_new(const sh_payload_field *fields, size_t n,
			 sh_payload_index **out);

/* Frees everything. NULL is fine. */
void sh_payload_index_free(sh_payload_index *idx);

/* The declared fields, in declaration order (the index's storage). */
size_t sh_payload_index_nfields(const sh_payload_index *idx);
const sh_payload_field *sh_payload_index_field(const sh_payload_index *idx,
					       size_t i);

/* ---- Writes (single writer, no concurrent readers) ----------------------- */

/* Indexes one point: iid joins the universe and, for each declared field
 * present in payload (NULL or a non-object: none), its values. Returns SH_OK
 * or SH_ENOMEM; after SH_ENOMEM the point may be partly indexed: call
 * sh_payload_index_remove with the same arguments before retrying. */
int sh_payload_index_add(sh_payload_index *idx, uint32_t iid,
			 const cJSON *payload);

/* Undoes sh_payload_index_add(idx, iid, payload): payload must be what the
 * point was added with. Entries that are not there are ignored. Returns
 * SH_OK or SH_ENOMEM (only when a forced merge cannot allocate; the entries
 * are removed all the same). */
int sh_payload_index_remove(sh_payload_index *idx, uint32_t iid,
			    const cJSON *payload);

/* ---- Reads (any number of readers, no writer) ---------------------------- */

/* Points added and not removed. */
uint64_t sh_payload_index_count(const sh_payload_index *idx);

/* Bytes held (structures, bitmaps, strings), approximately. */
size_t sh_payload_index_mem(const sh_payload_index *idx);

/* What the planner makes of a filter against this index. */
typedef struct sh_filter_plan {
	/* iids that may pass: a superset of the passing points among those
	 * added (never excludes one), exactly them when !residual. Owned by
	 * the plan: sh_filter_plan_clear() frees it. NULL when no index
	 * narrows the filter: every point is a candidate. */
	roaring_bitmap_t *allow;
	/* true when a candidate must still be checked with sh_filter_eval
	 * on its payload: some clause is on an unindexed field, is has_id,
	 * compares a field with a value of another type than its index, or
	 * sits under a should / must_not the bitmap cannot express exactly. */
	bool residual;
	/* Estimated passing points, at most live: exactly the bitmap's
	 * cardinality when !residual; with a residual check, at most that
	 * cardinality, scaled down by SH_PAYLOAD_UNINDEXED_SELECTIVITY for
	 * the unindexed clauses under must (has_id: its number of ids).
	 * Without a bitmap it is a guess and at least 1 when live > 0; 0
	 * only when nothing can pass. */
	uint64_t est_pass;
	/* Conditions the indexes answered exactly, and those left to the
	 * residual check, for reporting ("filter on an unindexed field is
	 * evaluated per candidate"). */
	uint32_t n_indexed;
	uint32_t n_unindexed;
} sh_filter_plan;

/*
 * Plans filter f (which must have passed sh_filter_validate) over the
 * index. live is the number of live points the caller holds (normally
 * sh_payload_index_count). On SH_OK *out is filled; the caller frees it with
 * sh_filter_plan_clear. The node turns it into an sh_hnsw_filter: allow =
 * out->allow, fn = a callback that runs sh_filter_eval on the candidate's
 * payload when out->residual (NULL otherwise), est_pass = out->est_pass.
 * Returns SH_OK, SH_EINVAL (NULL arguments) or SH_ENOMEM (*out then holds
 * nothing to free).
 *
 * Rules: must → intersection; should → union; must_not → the universe minus
 * the clause's set, only when that set is exact (otherwise the clause is
 * left to the residual check); nested filters recursively. A clause the
 * indexes cannot answer contributes "every point" (or, for a condition on an
 * indexed field with a value of the wrong type, the field's present set)
 * and sets residual.
 */
int sh_payload_index_plan(const sh_payload_index *idx, const sh_filter *f,
			  uint64_t live, sh_filter_plan *out);

/* Frees the plan's bitmap and zeroes it. NULL is fine. */
void sh_filter_plan_clear(sh_filter_plan *p);

/* ---- Testing hooks --------------------------------------------------------
 */

/* Checks internal invariants (sorted part sorted, counts agree, hash table
 * probe chains intact, bitmaps within the universe). Returns SH_OK or
 * SH_ECORRUPT with a message in err. For tests. */
int sh_payload_index_validate(const sh_payload_index *idx, char *err,
			      size_t errlen);

#endif
