/* Private to node/: the node's state, shared by node.c (table, slots,
 * dispatch, metrics) and node_ops.c (one handler per operation). */
#ifndef SH_NODE_IMPL_H
#define SH_NODE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
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
	atomic_bool dropping; /* drop waits for the holders to let go */
};

/* Operations as metric labels: Request.op_case - 10, and one for requests
 * that could not be decoded. */
#define NODE_NOPS 16
#define NODE_OP_INVALID 15

/* ---- Slots (slots.c) ------------------------------------------------------
 */

#define SH_SLOT_WORDS (SH_SLOTS / 64)

static inline bool slot_bit(const uint64_t *bits, uint32_t s)
{
	return (bits[s / 64] >> (s % 64)) & 1;
}

/* The node's view of the slots, persisted whole (slots.c) before any
 * change takes effect. A slot is
 *   served for reads   when owned and not handed over,
 *   served for writes  when owned, not fenced and not handed over,
 *   imported           when importing and not owned (a move's target).
 * fenced and handed are the source's side of a move (MigrateRequest FENCE
 * and HANDOFF); only the move's own commands (ABORT_SOURCE, FINISH_SOURCE)
 * clear them, never a set_slots, so a late push of a map cannot give a
 * handed-over slot back. */
struct node_slots {
	uint64_t epoch;	      /* 0: no map, every slot owned */
	uint32_t node_id;     /* in the cluster map */
	uint64_t fence_move;  /* the move that fenced / handed slots */
	uint64_t import_move; /* the move the node imports for */
	uint32_t handed_to;   /* the node the handed-over slots went to */
	uint32_t nowned;      /* slots in owned */
	uint64_t owned[SH_SLOT_WORDS];
	uint64_t importing[SH_SLOT_WORDS];
	uint64_t fenced[SH_SLOT_WORDS];
	uint64_t handed[SH_SLOT_WORDS];
};

struct mig_job; /* migrate.c */

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

	/* The write gate. Every write (upsert, delete, import) holds it for
	 * reading from the check of its slots until it is applied and
	 * captured; whatever changes the slot state or the capture holds it
	 * for writing, so that it waits for the writes in flight and none
	 * starts meanwhile (a fence is then exact: nothing acknowledged
	 * after it, nothing in flight missed). Writer-preferring, so a fence
	 * is not starved. Taken before slock, never while holding it. */
	pthread_rwlock_t wgate;
	/* The slots (node_slots): guarded by slock, held only for short
	 * copies and checks. */
	pthread_rwlock_t slock;
	struct node_slots slots;

	/* Slot moves (migrate.c). capture: slots whose writes the source's
	 * job replays to the target; changed under wgate held for writing,
	 * read by writers under wgate for reading. job: the source's copy
	 * job (one at a time), guarded by mig_mu. */
	uint64_t capture[SH_SLOT_WORDS];
	pthread_mutex_t mig_mu;
	struct mig_job *job;
	atomic_uint_fast64_t mig_copied, mig_bytes, mig_replayed;
	atomic_uint_fast64_t mig_imported, mig_dropped;

	pthread_mutex_t vac_mu; /* one vacuum tick at a time */

	/* Metrics. */
	sh_op_metrics ops[NODE_NOPS];
	atomic_uint_fast64_t bytes_in, bytes_out;
};

/* Looks up a collection and takes a reference (the entry's use lock for
 * reading). NULL when there is none. Release with coll_put. */
struct coll_entry *coll_get(sh_node *n, const char *name);
void coll_put(struct coll_entry *e);

/* Create (from the store's JSON config) and drop, serialised. */
int node_table_create(sh_node *n, const char *json, char *err, size_t errlen);
int node_table_drop(sh_node *n, const char *name, char *err, size_t errlen);

/* Loads the persisted slot state at open (none: every slot owned). */
int node_slots_load(sh_node *n, char *err, size_t errlen);
/* Persists s (the caller holds wgate and slock for writing). */
int node_slots_save_locked(sh_node *n, const struct node_slots *s);
/* Changes the slot state: with wgate and slock held for writing, fn edits
 * a copy, which is persisted and then takes effect; an error from fn or
 * the store changes nothing. */
typedef int (*node_slots_fn)(sh_node *n, struct node_slots *s, void *ctx,
			     char *err, size_t errlen);
int node_slots_change(sh_node *n, node_slots_fn fn, void *ctx, char *err,
		      size_t errlen);
/* A copy of the slot state; the node's map epoch. */
void node_slots_get(sh_node *n, struct node_slots *out);
uint64_t node_epoch_now(sh_node *n);
/* The slots served for reads (write false) or writes, limited to `only`
 * when it is set. out: SH_SLOT_WORDS words. */
void node_serving(sh_node *n, const Shoal__V1__SlotSet *only, bool write,
		  uint64_t *out);
/* SH_OK when slot is served for reads (write false) or writes, else
 * SH_EMOVED with a message "what[i]: slot ... (why)". */
int node_check_slot(sh_node *n, uint16_t slot, bool write, const char *what,
		    size_t i, char *err, size_t errlen);
/* The same for every slot of `only` (NULL passes). */
int node_check_slots(sh_node *n, const Shoal__V1__SlotSet *only, bool write,
		     const char *what, char *err, size_t errlen);
/* Popcount and emptiness of slot bitmaps (SlotSets: sh_wire_slots_*). */
uint32_t slots_count(const uint64_t *bits);
bool slots_any(const uint64_t *bits);

/* Whether a search or count over `allowed` must check each point's slot:
 * some collection holds (or is about to hold) points outside it, or the
 * node imports slots outside it. */
bool node_needs_slot_check(sh_node *n, struct coll_entry *e,
			   const uint64_t *allowed);

/* ---- Slot moves (migrate.c) -----------------------------------------------
 */

/* Converts the points of an upsert (import false: every slot writable
 * here) or of an import (import true: every slot imported for move_id)
 * into pts; the first refused point refuses them all (EMOVED, EDIM,
 * EINVAL, with a message naming `what`). The caller holds wgate for
 * reading. */
int node_points_in(sh_node *n, struct coll_entry *e, const char *what,
		   Shoal__V1__Point *const *in, size_t np, uint64_t move_id,
		   bool import, sh_partition_point *pts, char *err,
		   size_t errlen);
/* SH_OK when the node imports id's slot for move_id, else SH_EMOVED. */
int node_check_import(sh_node *n, const sh_pid *id, uint64_t move_id,
		      const char *what, size_t i, char *err, size_t errlen);

/* Records a write of point id in collection coll for the source's job when
 * its slot is captured. The caller holds wgate for reading and calls it
 * after the write was applied, before it is acknowledged. */
void node_capture(sh_node *n, uint32_t coll, const sh_pid *id);
/* Stops and frees the job (at close). */
void node_migrate_close(sh_node *n);
/* Writes the migration metrics. */
void node_migrate_metrics(sh_node *n, FILE *f);
/* A collection by its store id, with a reference (coll_put); NULL if none. */
struct coll_entry *coll_get_id(sh_node *n, uint32_t id);
/* The collection's config as the wire has it (objects from a). */
Shoal__V1__CollectionConfig *node_config_out(sh_arena *a,
					     const sh_store_coll *c);
/* A CollectionConfig as the store's JSON (cJSON_free it). */
int node_config_json(const Shoal__V1__CollectionConfig *c, char **json,
		     char *err, size_t errlen);

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
int op_migrate(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	       sh_arena *, char *, size_t);
int op_import(sh_node *, const Shoal__V1__Request *, Shoal__V1__Response *,
	      sh_arena *, char *, size_t);

#endif
