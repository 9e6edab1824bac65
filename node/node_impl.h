/* Private to node/: the node's state, shared by node.c (table, slots,
 * dispatch, metrics) and node_ops.c (one handler per operation). */
#ifndef SH_NODE_IMPL_H
#define SH_NODE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "arena.h"
#include "error.h"
#include "metrics.h"
#include "node.h"
#include "partition.h"
#include "slots.h"

/* ---- The node ------------------------------------------------------------ */

/* One collection served by the node. Requests hold `use` for reading while
 * they use p; drop holds it for writing before it closes p. */
struct coll_entry {
	char name[SH_STORE_MAX_NAME + 1];
	uint32_t id;
	sh_partition *p;
	pthread_rwlock_t use;
	atomic_uint_fast64_t vacuums;
};

/* Operations as metric labels: Request.op_case - 10, and one for requests
 * that could not be decoded. */
#define NODE_NOPS 14
#define NODE_OP_INVALID 13
#define NODE_NCODES 17 /* SH_OK..SH_ENOCOLLECTION */

struct sh_node {
	sh_node_opts o;
	sh_store *st;
	struct timespec started;
	atomic_int state;

	/* Collection table: tlock guards the array; ddl serialises create
	 * and drop (held across the store call, never by readers). */
	pthread_rwlock_t tlock;
	pthread_mutex_t ddl;
	struct coll_entry **colls;
	size_t ncolls, capcolls;

	/* Slots (see node.h): guarded by slock. */
	pthread_rwlock_t slock;
	uint64_t epoch; /* 0: no map, every slot owned */
	uint32_t node_id;
	uint32_t nowned;
	uint64_t owned[SH_SLOTS / 64];

	pthread_mutex_t vac_mu; /* one vacuum tick at a time */

	/* Metrics. */
	atomic_uint_fast64_t requests[NODE_NOPS][NODE_NCODES];
	sh_histogram latency[NODE_NOPS];
	atomic_uint_fast64_t bytes_in, bytes_out;
};

/* Looks up a collection and takes a reference (the entry's use lock for
 * reading). NULL when there is none. Release with coll_put. */
struct coll_entry *coll_get(sh_node *n, const char *name);
void coll_put(struct coll_entry *e);

/* Create (from the store's JSON config) and drop, serialised. */
int node_table_create(sh_node *n, const char *json, char *err, size_t errlen);
int node_table_drop(sh_node *n, const char *name, char *err, size_t errlen);

/* Slot ownership under the node's current map. */
bool node_owns(sh_node *n, uint16_t slot);
/* Whether the node owns every slot (no filtering needed); and the epoch. */
bool node_owns_all(sh_node *n, uint64_t *epoch);

/* Handlers: fill resp->result (objects from a) or return an error code
 * with a message in err. */
typedef int (*node_op_fn)(sh_node *n, const Shoal__V1__Request *rq,
			  Shoal__V1__Response *rs, sh_arena *a, char *err,
			  size_t errlen);

int op_create_collection(sh_node *, const Shoal__V1__Request *,
			 Shoal__V1__Response *, sh_arena *, char *, size_t);
int op_drop_collection(sh_node *, const Shoal__V1__Request *,
		       Shoal__V1__Response *, sh_arena *, char *, size_t);
int op_list_collections(sh_node *, const Shoal__V1__Request *,
			Shoal__V1__Response *, sh_arena *, char *, size_t);
int op_upsert(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	      sh_arena *, char *, size_t);
int op_delete(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	      sh_arena *, char *, size_t);
int op_get(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	   sh_arena *, char *, size_t);
int op_search(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	      sh_arena *, char *, size_t);
int op_scroll(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	      sh_arena *, char *, size_t);
int op_count(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	     sh_arena *, char *, size_t);
int op_stats(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	     sh_arena *, char *, size_t);
int op_health(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	      sh_arena *, char *, size_t);
int op_set_slots(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
		 sh_arena *, char *, size_t);
int op_stream_slot(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
		   sh_arena *, char *, size_t);

/* The owned set as SlotRanges (for Stats and Search). */
Shoal__V1__SlotSet *node_slot_set(sh_node *n, sh_arena *a);

#endif
