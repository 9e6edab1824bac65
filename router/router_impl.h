/* Private to router/: the router's state, shared by router.c (map, nodes,
 * fan-out, dispatch, administration, metrics) and router_ops.c (the data
 * operations). */
#ifndef SH_ROUTER_IMPL_H
#define SH_ROUTER_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "arena.h"
#include "error.h"
#include "map.h"
#include "mapstore.h"
#include "metrics.h"
#include "router.h"
#include "rpc.h"

/* A node as the router talks to it. Entries are only ever appended (the
 * index of a node never changes), so a request may keep an index without
 * holding the lock. */
struct rnode {
	uint32_t id;
	char address[SH_MAP_MAX_ADDR + 1];
	sh_rpc *rpc;
	sh_histogram latency;
	atomic_uint_fast64_t errors;
	/* sh_rpc_replaced(rpc) when last logged (see note_replaced) */
	atomic_uint_fast64_t replaced_seen;
};

/* Request op - 10 for 10..24, then 60..63, then invalid. */
#define ROUTER_NOPS 20
#define ROUTER_OP_INVALID 19
/* Connections the router keeps: nodes of the map, and of earlier maps
 * (entries are never reused, so a removed node keeps its slot). */
#define ROUTER_MAX_CONNS 1024

struct sh_router {
	sh_router_opts o;
	atomic_int state;
	sh_mapstore *ms; /* where the map lives (file or etcd) */

	pthread_rwlock_t lock; /* guards map, map_version and nnodes */
	sh_map *map;
	int64_t map_version; /* the store's version of map */
	struct rnode nodes[ROUTER_MAX_CONNS];
	uint32_t nnodes;
	/* The connection index of each slot's owner under map (-1: none),
	 * and each connection's slots as a bitmap (nnodes x SH_SLOTS / 64
	 * words, malloc'd), kept with the map: routing a slot, or a request
	 * over all slots, costs no scan of the map. */
	int16_t owner_idx[SH_SLOTS];
	uint64_t (*owned_bits)[SH_SLOTS / 64];
	/* Serialises changes of the map by this router, and the steps of
	 * slot moves (moves.c). Taken before lock, never while holding it. */
	pthread_mutex_t admin;
	/* The switched move whose grace period this router times, and since
	 * when (sh_now_us() / 1000): the monotonic clock, so that a jump of
	 * the wall clock cannot cut the grace short. Under admin. */
	uint64_t grace_move;
	uint64_t grace_since_ms;

	/* etcd: a thread that watches the map and installs changes. */
	pthread_t watcher;
	bool watching;
	atomic_bool stopping;

	sh_op_metrics ops[ROUTER_NOPS];
	atomic_uint_fast64_t searches_partial, searches_failed, retries;
	atomic_uint_fast64_t rerouted;	  /* items sent again after EMOVED */
	atomic_uint_fast64_t map_reloads; /* maps installed from the store */
	atomic_uint_fast64_t move_steps;  /* move steps run */
	atomic_uint_fast64_t move_errors; /* move steps that failed */
};

/* One call to one node, as part of a fan-out. */
struct call {
	int node;	       /* index in r->nodes */
	Shoal__V1__Request rq; /* the envelope; op set by the caller */
	sh_rpc_op *op;
	uint64_t t0;
	int rc;	       /* SH_OK: resp is set */
	char err[256]; /* when rc != SH_OK */
	Shoal__V1__Response *resp;
	bool retried;
};

/* Initialises c for node index i with the request's envelope (map epoch
 * filled in at send time). */
void call_init(struct call *c, int node, const Shoal__V1__Request *orig);

/* Sends every call at once and waits for all, with timeout_ms each (0: the
 * read or write default by `write`). Decodes the responses; retries once a
 * call answered EMOVED after resending the node its slots. Afterwards
 * each call has rc and resp (free with calls_free). */
void fanout(sh_router *r, struct call *calls, size_t n, int timeout_ms,
	    bool write);
void calls_free(struct call *calls, size_t n);

/* The first failed call (transport error, or an error code other than the
 * ones `ok_codes` allows, 0-terminated list, may be NULL), as an error
 * with a message naming the node; SH_OK when none failed. */
int calls_error(sh_router *r, const struct call *calls, size_t n,
		const int *ok_codes, char *err, size_t errlen);

/* ---- The map (router.c) ----------------------------------------------- */

/* Installs m (taking it; version: the store's) if it is newer than the
 * router's, connecting to its new nodes. Returns SH_OK or a connection
 * error. */
int router_install_map(sh_router *r, sh_map *m, int64_t version, char *err,
		       size_t errlen);
/* Re-reads the map from a shared store (etcd) and installs it when newer;
 * SH_OK at once for a file. */
int router_refresh_map(sh_router *r);
/* Changes the map: with r->admin held, fn edits a copy of the newest map
 * (re-read from a shared store first); the copy gets epoch + 1, is stored
 * by compare-and-swap and installed. An error of fn or of the store
 * changes nothing (SH_ESTALE: another router changed the map meanwhile).
 * *epoch (optional) gets the new epoch. */
typedef int (*router_map_fn)(sh_router *r, sh_map *m, void *ctx, char *err,
			     size_t errlen);
int router_change_map(sh_router *r, router_map_fn fn, void *ctx,
		      uint64_t *epoch, char *err, size_t errlen);
/* The same with r->admin already held by the caller. */
int router_change_map_locked(sh_router *r, router_map_fn fn, void *ctx,
			     uint64_t *epoch, char *err, size_t errlen);
/* A copy of the map (malloc'd; free()), or NULL. */
sh_map *router_map_copy(sh_router *r);
/* Sends node idx its slots under the current map (set_slots). */
int router_push_slots(sh_router *r, int idx, char *err, size_t errlen);
/* The connection index of node id; -1 when unknown. */
int router_node_index(sh_router *r, uint32_t id);
/* One request to one node (by id) with a deadline, as a fan-out of one.
 * SH_OK with *resp (sh_wire_free_response; its code may be an error), or
 * the transport error with a message naming the node. */
int router_node_call(sh_router *r, uint32_t id, Shoal__V1__Request *rq,
		     int timeout_ms, Shoal__V1__Response **resp, char *err,
		     size_t errlen);

/* Indices of every node that owns at least one slot (searches, scans);
 * returns how many. */
size_t router_owning_nodes(sh_router *r, int *idx);
/* Indices of every node in the map (collection create/drop). */
size_t router_all_nodes(sh_router *r, int *idx);
/* The node index owning slot; -1 when none (cannot happen in a valid map).
 * Caller holds the read lock. */
int router_owner_locked(sh_router *r, uint16_t slot);

const char *router_node_name(sh_router *r, int idx, char *buf, size_t cap);

typedef int (*router_op_fn)(sh_router *r, const Shoal__V1__Request *rq,
			    Shoal__V1__Response *rs, sh_arena *a, char *err,
			    size_t errlen);

int rop_create_collection(sh_router *, const Shoal__V1__Request *,
			  Shoal__V1__Response *, sh_arena *, char *, size_t);
int rop_drop_collection(sh_router *, const Shoal__V1__Request *,
			Shoal__V1__Response *, sh_arena *, char *, size_t);
int rop_list_collections(sh_router *, const Shoal__V1__Request *,
			 Shoal__V1__Response *, sh_arena *, char *, size_t);
int rop_upsert(sh_router *, const Shoal__V1__Request *, Shoal__V1__Response *,
	       sh_arena *, char *, size_t);
int rop_delete(sh_router *, const Shoal__V1__Request *, Shoal__V1__Response *,
	       sh_arena *, char *, size_t);
int rop_get(sh_router *, const Shoal__V1__Request *, Shoal__V1__Response *,
	    sh_arena *, char *, size_t);
int rop_search(sh_router *, const Shoal__V1__Request *, Shoal__V1__Response *,
	       sh_arena *, char *, size_t);
int rop_scroll(sh_router *, const Shoal__V1__Request *, Shoal__V1__Response *,
	       sh_arena *, char *, size_t);
int rop_count(sh_router *, const Shoal__V1__Request *, Shoal__V1__Response *,
	      sh_arena *, char *, size_t);
int rop_stats(sh_router *, const Shoal__V1__Request *, Shoal__V1__Response *,
	      sh_arena *, char *, size_t);
/* moves.c: slot move jobs. */
int rop_move_job(sh_router *, const Shoal__V1__Request *, Shoal__V1__Response *,
		 sh_arena *, char *, size_t);
/* The job of map m as the wire has it (objects from a). */
Shoal__V1__MoveJob *router_job_out(const sh_map *m, sh_arena *a);

#endif
