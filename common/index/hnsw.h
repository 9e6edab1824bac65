/*
 * shoal's HNSW index (Malkov & Yashunin, "Efficient and robust approximate
 * nearest neighbor search using Hierarchical Navigable Small World graphs").
 *
 * One sh_hnsw is one partition: the vectors of one collection on one shard.
 * Points are named by sh_pid (u64 or short string); inside, each point
 * occupies a dense internal id ("iid", u32) that indexes the node array. An
 * upsert of an existing point gives it a new iid and tombstones the old one;
 * a delete tombstones. Tombstoned nodes are never returned but still route
 * searches until sh_hnsw_vacuum() repairs their neighbours and frees their
 * iids for reuse.
 *
 * ## Threads and locking (the RCU story)
 *
 * Searches (sh_hnsw_search, sh_hnsw_exact, sh_hnsw_get_vector, sh_hnsw_info)
 * may run on any number of threads at once and never take a lock: they run
 * inside a liburcu read-side critical section, which the functions enter and
 * leave themselves (a thread is registered with liburcu on its first call
 * and unregistered when it exits; callers do nothing).
 *
 * Mutations (upsert, delete, vacuum, the loader) are serialised by the
 * index's writer mutex: one writer at a time, any thread. A writer never
 * waits for readers, except vacuum, which waits for one RCU grace period
 * before it reuses iids (so that no reader can still be looking at a node
 * when its memory is rewritten).
 *
 * Why a reader needs no lock:
 * - Node memory is allocated in chunks that never move; the chunk directory
 *   is replaced copy-on-write and published with rcu_assign_pointer, the old
 *   one freed after a grace period.
 * - A node is fully written (vector, level, id, empty link lists) before its
 *   iid is stored in any neighbour list or as the entry point, with release
 *   ordering; readers load iids with acquire ordering. So every iid a reader
 *   can find points at a complete node.
 * - A link list is changed in place: its iids and its count are each stored
 *   atomically. A reader racing with the change may see a mix of the old and
 *   the new list. That is harmless: every iid in either list is a valid node,
 *   and the count never exceeds the list's capacity.
 * - A node's vector never changes while its iid is reachable: an upsert
 *   writes a new node. Vacuum unlinks dead nodes first, waits a grace period,
 *   and only then reuses their memory.
 * - Tombstones are an atomic flag read when a result is collected. During an
 *   upsert both the old and the new node may be visible for an instant;
 *   results are de-duplicated by point id, so a point appears at most once.
 *
 * ## Persistence: the change log
 *
 * Every mutation reports, through the callback set with
 * sh_hnsw_set_change_fn(), exactly the records it changed, once each, with
 * their final content, in one call at the end of the mutation: the caller
 * (the shard node) writes them with the point in one RocksDB WriteBatch. The
 * loader functions (sh_hnsw_load_*) rebuild the index from those records
 * without computing a single distance.
 *
 * Records: NODE (iid -> point id, top level, tombstone flag, the stored
 * vector), LINKS (iid, level -> neighbour iids), TOMBSTONE (iid), FREE (iid
 * no longer used: drop its NODE and LINKS records) and ENTRY (entry point and
 * top level of the graph).
 */
#ifndef SH_HNSW_H
#define SH_HNSW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "distance.h"
#include "pid.h"

typedef struct roaring_bitmap_s roaring_bitmap_t;

/* Safeguard limits: a bad parameter gets SH_EINVAL, not a huge allocation. */
#define SH_HNSW_MAX_DIM 4096 /* DESIGN.md: dimension 1..4096 */
#define SH_HNSW_MAX_M 128    /* level 0 keeps 2*M links per node */
#define SH_HNSW_MAX_LEVEL 16 /* P(level >= 16) is about M^-16: never */
#define SH_HNSW_MAX_EF 100000
#define SH_HNSW_MAX_NODES (UINT32_MAX - 1) /* iid UINT32_MAX means "none" */
#define SH_IID_NONE UINT32_MAX

typedef enum sh_metric {
	SH_METRIC_L2 = 0,     /* squared Euclidean distance */
	SH_METRIC_IP = 1,     /* 1 - dot(a, b) */
	SH_METRIC_COSINE = 2, /* 1 - cos(a, b); vectors normalised at insert */
} sh_metric;

typedef enum sh_storage {
	SH_STORAGE_F32 = 0,  /* float32 vectors in the node array */
	SH_STORAGE_INT8 = 1, /* 8-bit codes, per-vector scale (see quant.h) */
} sh_storage;

typedef struct sh_hnsw_params {
	uint32_t dim; /* 1..SH_HNSW_MAX_DIM */
	sh_metric metric;
	sh_storage storage;
	uint32_t m;		  /* links per node above level 0; 2*m at 0 */
	uint32_t ef_construction; /* candidate list size while inserting */
	uint32_t ef_search;	  /* default ef when a search passes 0 */
	uint64_t seed; /* level generator seed (reproducible builds) */
	/* int8 storage with a fetch callback: how many candidates, as a
	 * multiple of k, a search re-ranks with float vectors (0: all ef).
	 * Measured on Fashion-MNIST and on clustered 128-d data, 2 gives the
	 * same recall as re-ranking all ef; the default 3 leaves a margin. */
	uint32_t rescore;
} sh_hnsw_params;

/* M=16, ef_construction=200, ef_search=64, L2, f32, seed 42, rescore 3. */
void sh_hnsw_params_default(sh_hnsw_params *p, uint32_t dim);

typedef struct sh_hnsw sh_hnsw;

/* ---- Lifecycle ----------------------------------------------------------- */

/* Creates an empty index. Returns SH_OK, SH_EINVAL for bad parameters or
 * SH_ENOMEM. *out is owned by the caller: free with sh_hnsw_free(). */
int sh_hnsw_new(const sh_hnsw_params *p, sh_hnsw **out);

/* Frees the index. No search may be running on it, and none may start. */
void sh_hnsw_free(sh_hnsw *h);

const sh_hnsw_params *sh_hnsw_params_of(const sh_hnsw *h);

/* ---- The change log ------------------------------------------------------ */

typedef enum sh_hnsw_change_kind {
	SH_CHANGE_NODE = 1,	 /* iid, pid, level, tombstone, vec */
	SH_CHANGE_LINKS = 2,	 /* iid, level, links, nlinks */
	SH_CHANGE_TOMBSTONE = 3, /* iid */
	SH_CHANGE_FREE = 4,	 /* iid */
	SH_CHANGE_ENTRY = 5,	 /* iid (SH_IID_NONE: empty graph), level */
} sh_hnsw_change_kind;

typedef struct sh_hnsw_change {
	sh_hnsw_change_kind kind;
	uint32_t iid;
	uint32_t level;
	bool tombstone;
	const sh_pid *pid;     /* NODE */
	const float *vec;      /* NODE: dim floats, as stored (normalised for
				  cosine); NULL when a NODE record is re-sent
				  only to change its tombstone flag */
	const uint32_t *links; /* LINKS */
	uint32_t nlinks;
} sh_hnsw_change;

/* Called by the writer, inside the mutation, with the writer mutex held: it
 * must not call back into the index's mutators. The array and everything it
 * points to are valid only during the call. */
typedef void (*sh_hnsw_change_fn)(void *ctx, const sh_hnsw_change *changes,
				  size_t n);

/* Sets (or with fn NULL, clears) the change callback. Writer only. */
void sh_hnsw_set_change_fn(sh_hnsw *h, sh_hnsw_change_fn fn, void *ctx);

/* ---- Float rescoring for int8 storage ------------------------------------ */

/* Returns the float vector of a point for rescoring: either a pointer the
 * callee owns (valid until the search returns) or scratch after filling its
 * dim floats; NULL if the vector cannot be had (the hit keeps its quantized
 * distance). Called from search threads, inside the read-side section. */
typedef const float *(*sh_hnsw_fetch_fn)(void *ctx, uint32_t iid,
					 const sh_pid *pid, float *scratch);

/* int8 storage keeps no floats in the index; with a fetch callback the best
 * candidates of each search are re-ranked with exact float distances. */
void sh_hnsw_set_fetch_fn(sh_hnsw *h, sh_hnsw_fetch_fn fn, void *ctx);

/* ---- Writes (one writer at a time; see above) ---------------------------- */

/* Inserts a point, or replaces the vector of an existing one (the point gets
 * a new iid; the old iid is tombstoned). vec has dim floats, copied.
 * *iid_out (optional) gets the new iid, *old_iid_out (optional) the replaced
 * one or SH_IID_NONE. Returns SH_OK, SH_ENAN (NaN or infinity in vec),
 * SH_EINVAL (zero vector with cosine or a malformed pid), SH_EFULL or
 * SH_ENOMEM. On error the point keeps its previous vector (or stays absent).
 * The one exception to "nothing changed": memory running out after the new
 * node was partly linked leaves that node tombstoned (reported through the
 * change log like any tombstone; vacuum reclaims it). */
int sh_hnsw_upsert(sh_hnsw *h, const sh_pid *pid, const float *vec,
		   uint32_t *iid_out, uint32_t *old_iid_out);

/* Tombstones a point: it leaves every search result at once. Returns SH_OK
 * or SH_ENOTFOUND. *iid_out (optional) gets the tombstoned iid. */
int sh_hnsw_delete(sh_hnsw *h, const sh_pid *pid, uint32_t *iid_out);

typedef struct sh_hnsw_vacuum_stats {
	uint32_t freed;	   /* tombstoned nodes unlinked and freed */
	uint32_t repaired; /* live nodes whose links were rewritten */
} sh_hnsw_vacuum_stats;

/* Repairs the neighbours of every tombstoned node, moves the entry point off
 * dead nodes, waits one RCU grace period and frees the dead iids for reuse.
 * Searches keep running throughout. Returns SH_OK or SH_ENOMEM. */
int sh_hnsw_vacuum(sh_hnsw *h, sh_hnsw_vacuum_stats *st);

/* ---- Reads (any thread, lock-free) --------------------------------------- */

/* Looks a point up. Returns SH_OK with *iid set, or SH_ENOTFOUND. */
int sh_hnsw_lookup(const sh_hnsw *h, const sh_pid *pid, uint32_t *iid);

/* Copies the stored vector of a live iid into out (dim floats; dequantized
 * for int8 storage). Returns SH_OK or SH_ENOTFOUND. */
int sh_hnsw_get_vector(const sh_hnsw *h, uint32_t iid, float *out);

/* The point id of node iid (live or tombstoned). Returns SH_OK or
 * SH_ENOTFOUND (no node there). Lock-free; may be called from a filter
 * callback during a search (a string id then stays valid until the search
 * returns). */
int sh_hnsw_pid_of(const sh_hnsw *h, uint32_t iid, sh_pid *out);

typedef bool (*sh_hnsw_filter_fn)(void *ctx, uint32_t iid);

/* Which points a search may return. Both parts are optional; when both are
 * set a point must pass both. Points that fail still route the search. */
typedef struct sh_hnsw_filter {
	const roaring_bitmap_t *allow; /* iids allowed; NULL = no bitmap */
	sh_hnsw_filter_fn fn;	       /* called per candidate; NULL = none */
	void *ctx;
	/* For fn-only filters: the caller's estimate of how many points pass
	 * (0 = unknown, assume all). With a bitmap the index counts itself. */
	uint64_t est_pass;
	/* 0: the planner chooses. 1 + an sh_hnsw_plan: use that plan (for
	 * benchmarks and tests; SH_PLAN_GRAPH is taken as FILTERED_GRAPH
	 * when a filter is set). */
	uint8_t force_plan;
} sh_hnsw_filter;

typedef enum sh_hnsw_plan {
	SH_PLAN_GRAPH = 0,	    /* plain HNSW search */
	SH_PLAN_FILTERED_GRAPH = 1, /* HNSW, failing points route only */
	SH_PLAN_EXACT_SCAN = 2,	    /* brute force over the passing set */
} sh_hnsw_plan;

const char *sh_hnsw_plan_name(sh_hnsw_plan p);

typedef struct sh_hnsw_search_stats {
	sh_hnsw_plan plan;
	uint64_t est_pass;  /* estimated passing points the planner used */
	uint64_t ndist;	    /* distances computed */
	uint64_t nrescored; /* float rescoring fetches (int8 storage) */
	bool fallback;	    /* a filtered graph walk ran past the cost of an
			       exact scan and was replaced by one */
	bool residual;	    /* candidates were checked by the filter's
			       callback (a clause no index answers) */
} sh_hnsw_search_stats;

typedef struct sh_hnsw_hit {
	float dist; /* see sh_metric; smaller is closer */
	uint32_t iid;
	sh_pid pid;
} sh_hnsw_hit;

/* Finds up to k nearest live points that pass the filter (f may be NULL),
 * ascending by distance, ties by iid. ef 0 means the index default; ef below
 * k is raised to k. out has room for k hits; *nout gets the count. st is
 * optional. Returns SH_OK, SH_EINVAL (k 0 or above SH_HNSW_MAX_EF), SH_ENAN
 * or SH_ENOMEM. Never blocks on a writer. */
int sh_hnsw_search(const sh_hnsw *h, const float *q, size_t k, size_t ef,
		   const sh_hnsw_filter *f, sh_hnsw_hit *out, size_t *nout,
		   sh_hnsw_search_stats *st);

/* Exact k nearest by brute force over every live point that passes the
 * filter, with the index's own distance (exact floats for f32 storage; for
 * int8 storage, the fetch callback's floats when set, else the codes). The
 * ground truth that tests compare sh_hnsw_search against. */
int sh_hnsw_exact(const sh_hnsw *h, const float *q, size_t k,
		  const sh_hnsw_filter *f, sh_hnsw_hit *out, size_t *nout);

typedef struct sh_hnsw_info {
	uint64_t live;	     /* points that searches can return */
	uint64_t tombstones; /* dead nodes waiting for vacuum */
	uint64_t nodes;	     /* iids in use (live + tombstones) */
	uint64_t capacity;   /* iids allocated */
	uint64_t mem_bytes;  /* bytes held by the index */
	uint32_t max_level;
	uint32_t entry;	     /* SH_IID_NONE when empty */
	const char *kernels; /* distance kernel table in use */
} sh_hnsw_info;

void sh_hnsw_info_get(const sh_hnsw *h, sh_hnsw_info *out);

/* Reports every record of the index (NODE for each node, LINKS for each
 * list, ENTRY) through fn, in batches, as if all were new: a full snapshot
 * for a checkpoint, and what tests compare a replayed change log against.
 * NODE records carry the stored vector (decoded for int8 storage). Takes the
 * writer mutex. Returns SH_OK or SH_ENOMEM. */
int sh_hnsw_dump(sh_hnsw *h, sh_hnsw_change_fn fn, void *ctx);

/* Checks every structural invariant (link counts and targets in range, no
 * self links, no links to freed iids, entry point live at the top level,
 * id table and nodes agree). Returns SH_OK or SH_ECORRUPT with a message in
 * err. Takes the writer mutex: for tests and debugging. */
int sh_hnsw_validate(sh_hnsw *h, char *err, size_t errlen);

/* ---- Loading from the change log ----------------------------------------- */

/* To rebuild an index: sh_hnsw_new() with the same parameters, then
 * load_node for every NODE record, load_links for every LINKS record and
 * load_entry for the ENTRY record, in any order, then load_finish. Nothing
 * is reported to the change callback and no distance is computed. Each
 * returns SH_OK, SH_EINVAL (out of range, dimension mismatch, duplicate
 * point id), SH_ENOMEM; load_finish returns SH_ECORRUPT when the records do
 * not form a valid index (a link to a missing node, say). */
int sh_hnsw_load_node(sh_hnsw *h, uint32_t iid, const sh_pid *pid,
		      uint32_t level, bool tombstone, const float *vec);
int sh_hnsw_load_links(sh_hnsw *h, uint32_t iid, uint32_t level,
		       const uint32_t *links, uint32_t n);
int sh_hnsw_load_entry(sh_hnsw *h, uint32_t iid, uint32_t level);
int sh_hnsw_load_finish(sh_hnsw *h);

#endif
