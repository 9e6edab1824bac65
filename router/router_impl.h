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
};

#define ROUTER_NOPS 16 /* Request op - 10 for 10..22, then 60, 61, invalid */
#define ROUTER_OP_INVALID 15
#define ROUTER_NCODES 17

struct sh_router {
	sh_router_opts o;
	char map_path[4096];
	atomic_int state;

	pthread_rwlock_t lock; /* guards map and nnodes */
	sh_map *map;
	struct rnode nodes[SH_MAP_MAX_NODES];
	uint32_t nnodes;
	pthread_mutex_t admin; /* serialises map changes */

	atomic_uint_fast64_t requests[ROUTER_NOPS][ROUTER_NCODES];
	sh_histogram latency[ROUTER_NOPS];
	atomic_uint_fast64_t searches_partial, searches_failed, retries;
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

#endif
