/*
 * One collection's partition on a shard node: the glue the network server
 * calls. A partition owns an sh_hnsw (the vectors and the graph), an
 * sh_payload_index (the declared payload indexes) and a map iid -> (point
 * id, parsed payload) for filters; it uses (does not own) the node's
 * sh_store, which is the durable truth. Everything in memory is rebuilt from
 * the store by sh_partition_open.
 *
 * ## Writes
 *
 * Upsert, delete and vacuum are serialised by the partition's writer mutex.
 * One call = one store batch committed once (DESIGN.md): the point records,
 * every graph record the index's change log reported, tombstones. Inputs are
 * validated up front, so a bad point rejects the whole request before
 * anything changes. Versions (store.h): a write whose version is LOWER than
 * the stored one (of a live point or of a delete tombstone) is ignored and
 * reported SH_ESTALE; an equal version is applied (last writer wins, so
 * clients that send no versions, all 0, can still replace points).
 *
 * Commit failure: the in-memory index has already changed when the batch
 * fails to commit, and cannot be rolled back. The partition is then marked
 * failed: the call returns SH_EIO, and every later call (reads included,
 * since memory may now hold writes that were never made durable) returns
 * SH_EIO until the partition is closed and reopened from the store, which
 * holds exactly the acknowledged writes.
 *
 * ## Reads and the locking story
 *
 * get and search may run on any number of threads, concurrently with one
 * writer. The HNSW search itself is lock-free (RCU, see hnsw.h). The payload
 * index is a plain single-writer structure, so it and the iid map are guarded
 * by one pthread rwlock (writer-preferring):
 *   - a search with a filter holds it for reading only while the planner
 *     computes the allow bitmap (sh_payload_index_plan), then releases it;
 *   - when the plan needs a residual check (a clause on an unindexed field,
 *     has_id, ...), the per-candidate callback takes it for reading around
 *     one sh_filter_eval of that candidate's payload;
 *   - a writer holds it for writing only while it updates the payload index
 *     and the map for one point (remove old, add new): never across the
 *     HNSW insert, a store read or a commit.
 * This is the one place a reader can wait on a writer, and the wait is short:
 * one point's payload-index update (microseconds). The exception is
 * sh_partition_count with a residual filter, which holds the read side for
 * its whole O(n) walk: a writer waits for it, and (the lock prefers
 * writers) searches that arrive meanwhile wait behind that writer; keep
 * count off latency-critical paths or bound it. A writer never waits for
 * an RCU grace period while holding the rwlock (vacuum runs outside it), so
 * a reader inside an RCU section waiting for the rwlock cannot deadlock.
 *
 * The iid map: per iid a pointer to a small entry {sh_pid, cJSON payload},
 * set by the writer when a point gets its iid and dropped when it is
 * replaced or deleted. Memory: 8 bytes per allocated iid plus, per live
 * point, about 100 bytes of entry plus the parsed payload (cJSON costs
 * roughly 3-5 times the JSON text). Chosen over reading payloads from
 * RocksDB per candidate (a disk read and a parse for each candidate of a
 * filtered graph walk). A candidate whose entry is not (yet) in the map, a
 * point the writer is inserting right now, fails the residual check: a
 * search concurrent with an upsert may miss that point, never returns a
 * wrong one.
 *
 * The allow bitmap: a filtered search computes it and runs the graph search
 * inside one liburcu read-side section of its own (the index's sections
 * nest inside it). An iid in the bitmap was live when the bitmap was made,
 * so vacuum, which waits a grace period before it reuses a freed iid, cannot
 * hand that iid to another point while the search that holds the bitmap
 * runs (otherwise a point deleted after the plan, vacuumed, and its iid
 * reused by a point that fails the filter, could be let through). No
 * deadlock: the writer that waits for the grace period (vacuum) holds the
 * writer mutex, so no writer holds or waits for the rwlock meanwhile, and a
 * writer holding the rwlock never waits for a grace period.
 *
 * get and with_payload read the point record from the store (any thread).
 *
 * ## Return codes
 *
 * SH_OK, SH_EINVAL, SH_EDIM, SH_ENAN, SH_ETOOBIG, SH_ENOMEM, SH_EIO (store
 * failure or a failed partition), SH_ECORRUPT (open), SH_ENOTFOUND (get).
 * Per-point statuses: SH_OK or SH_ESTALE (or the index's error for the point
 * when the index itself failed, e.g. SH_EFULL / SH_ENOMEM).
 */
#ifndef SH_PARTITION_H
#define SH_PARTITION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"
#include "hnsw.h"
#include "pid.h"
#include "store.h"

typedef struct sh_partition sh_partition;

/* Opens collection coll_id's partition: creates the index with cfg->params,
 * loads it from the store (sh_store_load_index), rebuilds the payload index
 * from the points CF, and for int8 storage sets the rescoring fetch callback
 * to read float vectors from the store. cfg is the collection's config
 * (sh_store_coll_get_id); NULL: looked up in st. st must outlive the
 * partition. Returns SH_OK with *out owned by the caller
 * (sh_partition_close), or SH_EINVAL, SH_ENOCOLLECTION, SH_ECORRUPT, SH_EIO,
 * SH_ENOMEM. */
int sh_partition_open(sh_store *st, uint32_t coll_id, const sh_store_coll *cfg,
		      sh_partition **out);

/* Frees everything in memory (the store keeps the data). No other call on p
 * may be running or start. NULL is a no-op. */
void sh_partition_close(sh_partition *p);

/* The collection's config, as opened. */
const sh_store_coll *sh_partition_coll(const sh_partition *p);

/* True once a commit failed (see "Commit failure"). Any thread. */
bool sh_partition_failed(const sh_partition *p);

/* ---- Writes (serialised by the writer mutex; any thread) ----------------- */

typedef struct sh_partition_point {
	sh_pid id;
	const float *vec;	  /* vec_len floats */
	size_t vec_len;		  /* must be the collection's dim */
	const char *payload_json; /* a JSON object, or NULL: no payload */
	size_t payload_len;	  /* bytes (no NUL needed) */
	uint64_t version;
} sh_partition_point;

/* Inserts or replaces n points in one batch. status (n entries, optional)
 * gets SH_OK or SH_ESTALE per point. Validation first, for all points:
 * SH_EINVAL (NULL pointers, a bad id, a payload that is not a JSON object),
 * SH_EDIM (vec NULL or vec_len not the collection's dim), SH_ENAN (NaN or
 * infinity), SH_ETOOBIG (payload over SH_STORE_MAX_PAYLOAD): nothing changes
 * and status is untouched. Within one request points apply in order (a later
 * entry for the same id sees the earlier one). Returns SH_OK (stale points
 * included), SH_EIO (commit failed: partition failed), or an index error
 * (SH_ENOMEM, SH_EFULL, SH_EINVAL for a zero vector with cosine): the points
 * before the failing one are applied and committed, the failing one and those
 * after it get that status and are not applied. */
int sh_partition_upsert(sh_partition *p, const sh_partition_point *pts,
			size_t n, int *status);

/* Deletes n points in one batch; versions may be NULL (all 0). Each point
 * gets a tombstone record with its version (so a later write with a lower
 * version stays ignored), whether or not it was live. status (optional):
 * SH_OK (it was live), SH_ENOTFOUND (it was not; the tombstone is written
 * all the same) or SH_ESTALE (a newer version is stored; nothing written).
 * Returns SH_OK, SH_EINVAL, SH_EIO, SH_ENOMEM. */
int sh_partition_delete(sh_partition *p, const sh_pid *ids,
			const uint64_t *versions, size_t n, int *status);

/* When tombstones / (live + tombstones) exceeds ratio, runs sh_hnsw_vacuum
 * and commits its changes in one batch (one batch, because a crash between
 * two parts of a vacuum could leave links to freed nodes). Waits one RCU
 * grace period (hnsw.h). *ran (optional) tells whether it ran. Returns
 * SH_OK, SH_ENOMEM, SH_EIO. */
int sh_partition_maybe_vacuum(sh_partition *p, double ratio, bool *ran);

/* ---- Reads (any thread, concurrent with the writer) ---------------------- */

typedef struct sh_partition_record {
	uint64_t version;
	char *payload;	    /* NUL-terminated JSON, malloc'd; NULL: none */
	size_t payload_len; /* bytes without the NUL */
	float *vector;	    /* dim floats (normalised for cosine), malloc'd;
			       NULL unless asked for */
} sh_partition_record;

/* Reads a live point. Returns SH_OK with *out filled (free with
 * sh_partition_record_clear), SH_ENOTFOUND (never written or deleted),
 * SH_EINVAL, SH_EIO, SH_ECORRUPT or SH_ENOMEM; on error *out is zeroed. */
int sh_partition_get(sh_partition *p, const sh_pid *id, bool with_vector,
		     sh_partition_record *out);

void sh_partition_record_clear(sh_partition_record *r);

typedef struct sh_partition_hit {
	sh_pid id;
	float dist;	    /* see sh_metric; smaller is closer */
	char *payload;	    /* with_payload: malloc'd JSON, NULL if none */
	size_t payload_len; /* bytes without the NUL */
	uint64_t version;   /* with_payload: the point's version, else 0 */
} sh_partition_hit;

/* The k nearest live points passing f (NULL or empty: all), ascending by
 * distance. With with_payload, a hit deleted by a concurrent writer before
 * its record was read is left out (so fewer than k may come back). q has the
 * collection's dim floats (the caller checks the request's dimension). f must
 * have passed sh_filter_validate. ef 0: the collection default. out has room
 * for k hits; *nout gets the count; free the payloads with
 * sh_partition_hits_clear. st (optional) reports the plan used. Returns SH_OK,
 * SH_EINVAL, SH_EDIM (q NULL), SH_ENAN, SH_ENOMEM, SH_EIO. */
int sh_partition_search(sh_partition *p, const float *q, size_t k, size_t ef,
			const sh_filter *f, bool with_payload,
			sh_partition_hit *out, size_t *nout,
			sh_hnsw_search_stats *st);

/* The index's counters (live points, tombstones, memory). Any thread. */
void sh_partition_info(const sh_partition *p, sh_hnsw_info *out);

/* sh_partition_search with flags: SH_PARTITION_WITH_PAYLOAD, and
 * SH_PARTITION_EXACT (distances to every passing point instead of the
 * graph: the exact answer, slowly). */
#define SH_PARTITION_WITH_PAYLOAD 1u
#define SH_PARTITION_EXACT 2u
int sh_partition_search_ex(sh_partition *p, const float *q, size_t k, size_t ef,
			   const sh_filter *f, unsigned flags,
			   sh_partition_hit *out, size_t *nout,
			   sh_hnsw_search_stats *st);

/* sh_partition_search_ex restricted to the slots set in `slots` (a bitmap
 * of SH_SLOTS bits; NULL: every slot): a point of another slot is never
 * returned. Each candidate's slot is checked as part of the filter, so a
 * caller passes NULL when it knows no point outside the set can be found
 * (sh_partition_outside_slots). */
int sh_partition_search_slots(sh_partition *p, const float *q, size_t k,
			      size_t ef, const sh_filter *f, unsigned flags,
			      const uint64_t *slots, sh_partition_hit *out,
			      size_t *nout, sh_hnsw_search_stats *st);

/* Frees the payloads of n hits. */
void sh_partition_hits_clear(sh_partition_hit *hits, size_t n);

/* Number of live points passing f (NULL: all). Holds the rwlock for reading
 * while it counts (a residual check walks the candidates: O(n)). Returns
 * SH_OK, SH_ENOMEM, SH_EIO. */
int sh_partition_count(sh_partition *p, const sh_filter *f, uint64_t *out);

/* Whether p holds, or is about to hold, live points of a slot outside the
 * set `slots` (see sh_partition_slots_present). Any thread. */
bool sh_partition_outside_slots(const sh_partition *p, const uint64_t *slots);

/* sh_partition_count over the slots set in `slots` only (exact). */
int sh_partition_count_slots(sh_partition *p, const sh_filter *f,
			     const uint64_t *slots, uint64_t *out);

/* ---- Slots (any thread) -------------------------------------------------- */

/* Live points of one slot (exact once the writers are done; a relaxed
 * read). */
uint64_t sh_partition_slot_points(const sh_partition *p, uint16_t slot);

/* ORs into bits (SH_SLOTS / 64 words) every slot that holds live points,
 * or is about to: a slot's bit is set before its first point becomes
 * visible to searches and cleared when its last one is gone. */
void sh_partition_slots_present(const sh_partition *p, uint64_t *bits);

/* Erases every record of the slots set in `slots` (points and tombstones:
 * no trace is left, unlike a delete) and takes their points out of the
 * index, in batches of about a thousand records, each committed on its own
 * under the writer mutex (a crash leaves some slots partly erased: run it
 * again). For a node dropping its copy of slots it no longer owns: nothing
 * may write to those slots meanwhile. *removed (optional) gets the records
 * erased. Returns SH_OK, SH_EINVAL, SH_EIO, SH_ENOMEM. */
int sh_partition_drop_slots(sh_partition *p, const uint64_t *slots,
			    uint64_t *removed);

/* Where a scroll goes on: the first point of the next page. Zero it to
 * start from the beginning; `done` is set when nothing is left. */
typedef struct sh_partition_cursor {
	bool started; /* false: from the beginning */
	bool done;
	uint16_t slot;
	sh_pid id;
} sh_partition_cursor;

/* Called per point of a page with the point's id, version and payload (len
 * bytes of JSON, NOT NUL-terminated, NULL when none), valid only during the
 * call. SH_PARTITION_SCROLL_SKIP leaves the point out of the page (it does
 * not count towards limit); any other nonzero return stops the scroll and
 * is returned by it. */
#define SH_PARTITION_SCROLL_SKIP (-1)
typedef int (*sh_partition_scroll_fn)(void *ctx, const sh_pid *id,
				      uint64_t version, const char *payload,
				      size_t len);

/* Pages through the live points passing f (NULL: all) in store key order
 * (slot, then id), from *cur, calling fn for at most limit (>= 1) points,
 * and advances *cur. Reads the points CF from one RocksDB snapshot per call
 * (no lock); pages are not one snapshot: a point written between two calls
 * may or may not be seen. Cost: the records of the cursor's slot before the
 * cursor are skipped again. Returns SH_OK, fn's nonzero value, SH_EINVAL,
 * SH_EIO, SH_ECORRUPT, SH_ENOMEM. */
int sh_partition_scroll(sh_partition *p, const sh_filter *f,
			sh_partition_cursor *cur, size_t limit,
			sh_partition_scroll_fn fn, void *ctx);

/* sh_partition_scroll that stops after slot last_slot (the page ends, and
 * cur->done is set, once that slot has been walked). */
int sh_partition_scroll_to(sh_partition *p, const sh_filter *f,
			   sh_partition_cursor *cur, uint16_t last_slot,
			   size_t limit, sh_partition_scroll_fn fn, void *ctx);

/* ---- Testing hooks --------------------------------------------------------
 */

/* Makes the next commit fail as if RocksDB had failed (the batch is dropped,
 * not written). For tests of the commit-failure path. */
void sh_partition_test_fail_next_commit(sh_partition *p);

#endif
