/*
 * The shard node's storage layer: one RocksDB per node, the durable truth.
 *
 * The in-memory HNSW partitions are a cache of what is stored here: every
 * client write becomes one sh_store_batch holding the point records and every
 * graph record that the index's change log reported for it, committed with
 * one rocksdb_write, so a crash can never leave graph and points
 * disagreeing. A restart reads the graph back (sh_store_load_index) and
 * never recomputes a distance.
 *
 * ## Layout (column families)
 *
 * Integers in keys are big-endian, so keys sort numerically and one
 * collection (or one slot of one collection) is one contiguous key range;
 * integers in values are little-endian. Every value starts with a format
 * byte (SH_STORE_FORMAT); a reader rejects any other with SH_ECORRUPT.
 *
 *   meta         [coll u32]                -> JSON collection config
 *                "next_collection_id"      -> [format u8][next id u32]
 *   points       [coll u32][slot u16][id kind u8][id bytes]
 *                  -> [format u8][flags u8][version u64][iid u32]
 *                     [payload len u32][payload JSON bytes]
 *                  id bytes: u64 ids as 8 big-endian bytes, string ids as
 *                  their UTF-8 bytes. flags bit 0: deleted. A deleted point
 *                  keeps this record (a tombstone, iid SH_IID_NONE, no
 *                  payload) with its version, so that a late write with a
 *                  lower version is still recognised as stale. The vector
 *                  is not here: it lives once, in the graph's NODE record.
 *   graph        [coll u32][iid u32][kind u8][level u8]
 *                  TOMB  (0) -> [format u8]      the node is tombstoned
 *                  NODE  (1) -> [format u8][level u8][tombstone u8]
 *                               [pid kind u8][pid len u8][pid bytes]
 *                               [dim u32][dim float32]
 *                  LINKS (2) -> [format u8][count u32][count x iid u32]
 *                  ENTRY (3) -> [format u8][iid u32][level u8], one per
 *                               collection, under iid 0xFFFFFFFF (sorts
 *                               last; no node has that iid)
 *                  pid bytes here are those of sh_pid_bytes() (8 LE bytes
 *                  for u64 ids).
 *   payload_idx  reserved. Payload indexes are rebuilt from the points CF
 *                when a collection is loaded (sh_store_scan_points), so
 *                nothing is written here yet and nothing reads it.
 *
 * Why a separate TOMB key rather than rewriting the NODE record's tombstone
 * byte: a tombstone is then a blind write (no read in the write path, and
 * no need to look into the uncommitted batch, where the NODE record may
 * still sit), and TOMB sorts before NODE so the loader knows the flag when
 * it reaches the node. A node is tombstoned when either says so. A NODE
 * record is only ever written for an iid that has no records (fresh, or
 * released by FREE, which deletes the iid's whole key range), so a stale
 * TOMB key can never outlive its node.
 *
 * ## Durability
 *
 * The WAL is always on. sh_store_batch_commit() syncs according to the
 * fsync policy: SH_FSYNC_ALWAYS writes with sync=1, and RocksDB's write
 * group lets concurrent committers share one fsync (group commit: the
 * leader of a write group writes and syncs the WAL for all the batches
 * queued behind it); SH_FSYNC_BATCH writes with sync=0 and the node calls
 * sh_store_sync() on a timer (a crash of the machine loses at most that
 * interval; a crash of the process loses nothing, the WAL is in the page
 * cache); SH_FSYNC_NEVER leaves syncing to the OS. Collection create and
 * drop always sync.
 *
 * ## Threads
 *
 * An sh_store may be used from any number of threads at once: RocksDB is
 * thread-safe and the collection table is guarded by the store's meta
 * mutex. An sh_store_batch belongs to one thread at a time. The caller
 * keeps one writer per collection partition (the index's own rule), so the
 * graph records of one collection are committed in the order the index
 * reported them. Nothing here blocks except on disk I/O and on the meta
 * mutex (collection create/drop, a short critical section).
 *
 * ## Errors
 *
 * Functions return SH_OK or an sh_err code. A failing call leaves a
 * message for the calling thread in sh_store_last_error(). Every byte read
 * back is treated as untrusted: a record of the wrong length, an unknown
 * format byte or an impossible value gives SH_ECORRUPT, never a crash.
 * RocksDB failures give SH_EIO.
 */
#ifndef SH_STORE_H
#define SH_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"
#include "hnsw.h"
#include "payload.h"
#include "pid.h"

/* Format byte of every value this build writes (and the only one it
 * reads). */
#define SH_STORE_FORMAT 1

/* DESIGN.md: a payload is a JSON object of at most 64 KiB. */
#define SH_STORE_MAX_PAYLOAD (64u * 1024u)
/* Collection names: short, printable, unique per node. */
#define SH_STORE_MAX_NAME 128
/* Declared payload indexes per collection, and the length of a field: the
 * payload index's own limits (payload.h, filter.h). */
#define SH_STORE_MAX_INDEXES SH_PAYLOAD_MAX_FIELDS
#define SH_STORE_MAX_FIELD SH_FILTER_MAX_KEY
/* Collection ids are 1..SH_STORE_MAX_COLL_ID (id + 1 must be a key). */
#define SH_STORE_MAX_COLL_ID (UINT32_MAX - 1)

typedef struct sh_store sh_store;
typedef struct sh_store_batch sh_store_batch;

/* ---- Opening ------------------------------------------------------------- */

typedef enum sh_fsync {
	SH_FSYNC_ALWAYS = 0, /* every commit is fsynced (group commit) */
	SH_FSYNC_BATCH = 1,  /* the node calls sh_store_sync() on a timer */
	SH_FSYNC_NEVER = 2,  /* the OS decides */
} sh_fsync;

typedef struct sh_store_opts {
	sh_fsync fsync;
	uint32_t block_cache_mib; /* shared LRU block cache; 0 = 8 MiB */
	bool create_if_missing;	  /* create dir (not its parents) and the
				     database if absent */
} sh_store_opts;

/* fsync ALWAYS, 256 MiB block cache, create_if_missing true. */
void sh_store_opts_default(sh_store_opts *o);

/* Opens (or creates) the node's database in dir and loads the collection
 * table from the meta CF. o may be NULL (defaults). Returns SH_OK with *out
 * owned by the caller (sh_store_close), or SH_EINVAL, SH_ENOTFOUND (no
 * database in dir and create_if_missing is false), SH_ECORRUPT (meta CF
 * unreadable), SH_EIO (RocksDB failed, e.g. the directory is locked by
 * another process) or SH_ENOMEM, with a message in err (optional). */
int sh_store_open(const char *dir, const sh_store_opts *o, sh_store **out,
		  char *err, size_t errlen);

/* Flushes the memtables (so the next open replays no WAL) and closes. No
 * other call on st may be running or start; batches of st must be freed
 * first. st NULL is a no-op. */
void sh_store_close(sh_store *st);

/* Makes every committed batch durable (rocksdb_flush_wal with sync): what
 * the node's timer calls under SH_FSYNC_BATCH. Any thread. Returns SH_OK or
 * SH_EIO. */
int sh_store_sync(sh_store *st);

/* Message of the last failing sh_store_* call on this thread (never NULL;
 * "" if none). Valid until the thread's next sh_store_* call. */
const char *sh_store_last_error(void);

/* ---- Collections --------------------------------------------------------- */

typedef struct sh_store_index_decl {
	char field[SH_STORE_MAX_FIELD + 1]; /* NUL-terminated */
	sh_payload_type type;
} sh_store_index_decl;

/* A collection's configuration: a plain value, copied out to callers. */
typedef struct sh_store_coll {
	uint32_t id;
	char name[SH_STORE_MAX_NAME + 1]; /* NUL-terminated */
	sh_hnsw_params params; /* dim, metric, storage, m, ef_*, seed,
				  rescore */
	uint32_t nindexes;
	sh_store_index_decl indexes[SH_STORE_MAX_INDEXES];
} sh_store_coll;

/* Creates a collection from a JSON config:
 *   {"name": "products", "dim": 128, "metric": "l2"|"ip"|"cosine",
 *    "storage": "f32"|"int8", "m": 16, "ef_construction": 200,
 *    "ef_search": 64, "seed": 42, "rescore": 3,
 *    "payload_indexes": {"brand": "keyword", "price": "float",
 *                        "stock": "integer", "active": "bool"}}
 * name and dim are required; the rest default as sh_hnsw_params_default().
 * Payload index fields must be accepted by sh_payload_index_new (dotted
 * paths allowed, no duplicates).
 * Names are 1..SH_STORE_MAX_NAME bytes of [A-Za-z0-9_.-]. The config is
 * stored normalised (every field present). Commits with sync. *id_out
 * (optional) gets the new id. Returns SH_OK, SH_EINVAL (bad JSON or
 * parameter; see sh_store_last_error), SH_EEXIST (name taken), SH_EFULL (ids
 * exhausted), SH_EIO or SH_ENOMEM. Any thread. */
int sh_store_coll_create(sh_store *st, const char *json_config,
			 uint32_t *id_out);

/* Drops a collection: one synced WriteBatch deletes its key range in every
 * CF (DeleteRange over [id, id + 1)) and its meta record. The caller must
 * have stopped the collection's writer first: a batch committed after the
 * drop would write records of a collection that no longer exists. Returns
 * SH_OK, SH_ENOTFOUND, SH_EIO or SH_ENOMEM. Ids are never reused. */
int sh_store_coll_drop(sh_store *st, uint32_t id);

/* Copies the collection named name into *out. SH_OK or SH_ENOTFOUND. */
int sh_store_coll_get(sh_store *st, const char *name, sh_store_coll *out);

/* Copies collection id into *out. SH_OK or SH_ENOTFOUND. */
int sh_store_coll_get_id(sh_store *st, uint32_t id, sh_store_coll *out);

/* Called once per collection in id order with a copy valid during the call.
 * It must not call sh_store_coll_* (the meta mutex is held: deadlock). A
 * nonzero return stops the listing and is returned by sh_store_coll_list. */
typedef int (*sh_store_coll_fn)(void *ctx, const sh_store_coll *c);

int sh_store_coll_list(sh_store *st, sh_store_coll_fn fn, void *ctx);

/* ---- Node-level records ---------------------------------------------------
 */

/* Small records of the node itself (e.g. the slots it owns), kept in the
 * meta CF under "node." + name (1..SH_STORE_MAX_NAME bytes). put writes
 * with sync; get returns a malloc'd copy (free()) and SH_ENOTFOUND when
 * there is none. Return SH_OK, SH_EINVAL, SH_ENOTFOUND, SH_EIO, SH_ENOMEM.
 * Any thread. */
int sh_store_node_put(sh_store *st, const char *name, const void *val,
		      size_t len);
int sh_store_node_get(sh_store *st, const char *name, void **val, size_t *len);

/* An integer RocksDB property (e.g. "rocksdb.total-sst-files-size",
 * "rocksdb.cur-size-all-mem-tables", "rocksdb.estimate-num-keys") summed
 * over the column families. SH_OK or SH_ENOTFOUND. Any thread. */
int sh_store_property(sh_store *st, const char *name, uint64_t *out);

/* ---- Writes: one client operation = one batch ---------------------------- */

/* A new empty batch (NULL when out of memory). Owned by the caller: free
 * with sh_store_batch_free. One thread at a time.
 *
 * Errors are sticky: the first failing add is remembered, later adds do
 * nothing, and commit returns that error without writing anything. That
 * lets an hnsw change callback (which returns void) feed a batch. */
sh_store_batch *sh_store_batch_new(sh_store *st);

/* Adds the record of a live point: version, its iid in the collection's
 * index, and its payload (len bytes of JSON, copied; NULL with len 0 for
 * none). The store does not compare versions: the caller's writer does
 * (sh_store_check_version) before it mutates the index. Returns SH_OK,
 * SH_EINVAL (slot >= SH_SLOTS, bad pid, collection id 0), SH_ETOOBIG
 * (payload over SH_STORE_MAX_PAYLOAD) or SH_ENOMEM. */
int sh_store_batch_put_point(sh_store_batch *b, uint32_t coll, uint16_t slot,
			     const sh_pid *pid, uint64_t version, uint32_t iid,
			     const char *payload, size_t len);

/* Adds the tombstone record of a deleted point: flags deleted, the delete's
 * version, no payload. Returns as sh_store_batch_put_point. */
int sh_store_batch_delete_point(sh_store_batch *b, uint32_t coll, uint16_t slot,
				const sh_pid *pid, uint64_t version);

/* Adds the removal of a point's record (live or tombstone) without leaving
 * a tombstone: for dropping the copy of a slot a node no longer owns (the
 * index change log removes the graph node). Returns as
 * sh_store_batch_put_point. */
int sh_store_batch_erase_point(sh_store_batch *b, uint32_t coll, uint16_t slot,
			       const sh_pid *pid);

/* Turns index change records into graph CF writes, in order: NODE -> put
 * (a NODE re-sent with vec NULL only sets or clears the TOMB key), LINKS ->
 * put, TOMBSTONE -> put the TOMB key, FREE -> DeleteRange over the iid's
 * keys (NODE, TOMB and every LINKS), ENTRY -> put. dim is the collection's
 * dimension (NODE vectors hold dim floats). Everything is copied. Returns
 * SH_OK, SH_EINVAL (unknown kind, level or link count out of range, bad
 * pid) or SH_ENOMEM. */
int sh_store_batch_index_changes(sh_store_batch *b, uint32_t coll, uint32_t dim,
				 const sh_hnsw_change *c, size_t n);

/* Records in the batch (RocksDB operations). */
size_t sh_store_batch_count(const sh_store_batch *b);

/* Writes the whole batch with one rocksdb_write, WAL on, synced per the
 * store's fsync policy (see Durability). Blocks for the write (and the
 * fsync). Afterwards, whatever the result, the batch is empty, its sticky
 * error cleared, and it may be reused. Returns SH_OK, the sticky error of
 * an add (nothing written), or SH_EIO. */
int sh_store_batch_commit(sh_store_batch *b);

/* Empties the batch without writing it. */
void sh_store_batch_clear(sh_store_batch *b);

/* Frees the batch (uncommitted records are dropped). NULL is a no-op. */
void sh_store_batch_free(sh_store_batch *b);

/* ---- Reads (any thread) -------------------------------------------------- */

typedef struct sh_store_point {
	uint64_t version;
	bool deleted;	    /* a tombstone record: version only */
	uint32_t iid;	    /* SH_IID_NONE when deleted */
	char *payload;	    /* see each function for who owns it */
	size_t payload_len; /* bytes, without the NUL */
} sh_store_point;

/* Reads a point's record. On SH_OK, out->payload is a NUL-terminated
 * malloc'd copy (NULL when the length is 0) that the caller frees with
 * sh_store_point_clear or free(). Returns SH_OK, SH_ENOTFOUND (never
 * written, or its collection dropped), SH_EINVAL, SH_ECORRUPT, SH_EIO or
 * SH_ENOMEM; on error *out is zeroed. */
int sh_store_get_point(sh_store *st, uint32_t coll, uint16_t slot,
		       const sh_pid *pid, sh_store_point *out);

/* Frees p->payload and zeroes *p. */
void sh_store_point_clear(sh_store_point *p);

/* The version rule of DESIGN.md: returns SH_OK when a write of `version`
 * may be applied (no record, or the stored version, of a live point or a
 * delete tombstone, is not higher), SH_ESTALE when the stored version is
 * higher (the write must be ignored), or a read error. *stored (optional)
 * gets the stored version (0 when none). */
int sh_store_check_version(sh_store *st, uint32_t coll, uint16_t slot,
			   const sh_pid *pid, uint64_t version,
			   uint64_t *stored);

/* Copies the vector of node iid (dim floats) into out, from its NODE
 * record: the only copy of the float vector (for cosine, the normalised
 * one). Tombstoned nodes still have theirs. This is what an int8
 * partition's rescoring fetch callback calls, from search threads. Returns
 * SH_OK, SH_ENOTFOUND, SH_ECORRUPT (bad record or dim mismatch) or SH_EIO. */
int sh_store_get_vector(sh_store *st, uint32_t coll, uint32_t iid, uint32_t dim,
			float *out);

/* Rebuilds collection coll's index into h, which must be new and empty,
 * created with the collection's parameters: iterates the collection's graph
 * range in key order (per iid: TOMB, NODE, LINKS by level; ENTRY last),
 * calling sh_hnsw_load_node, _links and _entry, then sh_hnsw_load_finish.
 * No distance is computed. Returns SH_OK, SH_EINVAL (collection id 0 or
 * above SH_STORE_MAX_COLL_ID), SH_ECORRUPT (a bad record, or
 * records that do not form a valid index), SH_EIO or SH_ENOMEM; on error h
 * holds part of the graph and must be freed. Runs as a writer of h. */
int sh_store_load_index(sh_store *st, uint32_t coll, sh_hnsw *h);

/* Called per point record in key order (slot, then id) with a record valid
 * only during the call: p->payload points into RocksDB's buffer and is NOT
 * NUL-terminated. Tombstone records are included (p->deleted). A nonzero
 * return stops the scan and is returned by sh_store_scan_points. */
typedef int (*sh_store_point_fn)(void *ctx, uint16_t slot, const sh_pid *pid,
				 const sh_store_point *p);

/* Iterates the point records of slots slot_lo..slot_hi (inclusive) of coll
 * from one consistent snapshot: writes committed during the scan are not
 * seen. For the payload index rebuild, scroll and count, and slot
 * streaming. Returns SH_OK, fn's nonzero value, SH_EINVAL (slot_hi <
 * slot_lo or >= SH_SLOTS, bad collection id), SH_ECORRUPT (after calling fn for
 * the good records before the bad one) or SH_EIO. */
int sh_store_scan_points(sh_store *st, uint32_t coll, uint16_t slot_lo,
			 uint16_t slot_hi, sh_store_point_fn fn, void *ctx);

/* As sh_store_point_fn, plus the point's vector (dim floats; NULL for a
 * tombstone), read from the same snapshot as the record: valid only during
 * the call. */
typedef int (*sh_store_stream_fn)(void *ctx, uint16_t slot, const sh_pid *pid,
				  const sh_store_point *p, const float *vec);

/* sh_store_scan_points with each live point's vector, every record and
 * vector from one snapshot that is held for the whole call, however long
 * fn takes (it may send them over the network): the consistent view a
 * slot migration copies. dim is the collection's dimension. Returns as
 * sh_store_scan_points, and SH_ECORRUPT for a live point without its graph
 * node. */
int sh_store_stream_points(sh_store *st, uint32_t coll, uint16_t slot_lo,
			   uint16_t slot_hi, uint32_t dim,
			   sh_store_stream_fn fn, void *ctx);

#endif
