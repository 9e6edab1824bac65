/*
 * The shard node's core: one sh_store, one sh_partition per collection, the
 * slots the node owns, and the handler that turns one request message into
 * one response message. No sockets here: node/server.c feeds it from nng,
 * tests and the fuzzer call sh_node_handle directly.
 *
 * ## Collections
 *
 * The node keeps a table name -> partition. A request takes a reference to
 * its collection's entry (a read lock on the entry) for its whole duration;
 * drop removes the entry from the table, then waits for the requests that
 * hold it before it closes the partition and deletes the data. Create and
 * drop are serialised with each other.
 *
 * ## Slots
 *
 * A node that was never told its slots (map epoch 0) owns all of them: a
 * single node serves everything without a router. SetSlots replaces the set
 * with the one of a newer map epoch, persisted in the store (so a restart
 * keeps refusing what it handed over). Writes and gets for a point whose
 * slot is not owned are refused whole with EMOVED and the node's epoch.
 * Searches, scrolls and counts leave out points of slots the node does not
 * own (their copies may linger after a move until they are dropped), and a
 * search reports the owned set as covered.
 *
 * ## Threads
 *
 * sh_node_handle may run on any number of threads at once. Writes to one
 * collection are serialised by its partition; reads run in parallel with
 * them (see partition.h).
 */
#ifndef SH_NODE_H
#define SH_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "store.h"
#include "wire.h"

typedef struct sh_node sh_node;

typedef struct sh_node_opts {
	const char *data_dir;
	sh_fsync fsync;
	uint32_t block_cache_mib; /* 0: the store's default */
	sh_wire_limits limits;	  /* what requests are held to */
	double vacuum_ratio;	  /* tombstones / all above which the vacuum
				     timer compacts a partition; e.g. 0.1 */
} sh_node_opts;

/* Defaults: fsync always, default limits, vacuum ratio 0.1. */
void sh_node_opts_default(sh_node_opts *o);

/* Opens the store in o->data_dir (created if missing) and every collection
 * in it (their indexes are read back without computing distances). Returns
 * SH_OK with *out, or an error with a message in err. */
int sh_node_open(const sh_node_opts *o, sh_node **out, char *err,
		 size_t errlen);

/* Closes every partition and the store (which flushes). Nothing else may
 * run on n. NULL is a no-op. */
void sh_node_close(sh_node *n);

/* Serving state reported by Health and /healthz. */
typedef enum sh_node_state {
	SH_NODE_STARTING = 0,
	SH_NODE_SERVING = 1,
	SH_NODE_STOPPING = 2,
} sh_node_state;

void sh_node_set_state(sh_node *n, sh_node_state s);
sh_node_state sh_node_get_state(const sh_node *n);

/* Handles one request: decodes and validates it, executes it, and encodes
 * the response, which always exists on SH_OK: *out (malloc'd; free()) and
 * *outlen. A bad request gets an error response, never a crash. Returns
 * SH_ENOMEM only when no response at all could be built. Any thread. */
int sh_node_handle(sh_node *n, const uint8_t *req, size_t len, uint8_t **out,
		   size_t *outlen);

/* Background work, called from a timer: vacuums every partition whose
 * tombstone ratio is above the configured one. Returns the number of
 * partitions vacuumed. Any thread; at most one call at a time. */
int sh_node_vacuum_tick(sh_node *n);

/* Makes committed writes durable (the --fsync batch timer). */
int sh_node_sync(sh_node *n);

/* Writes the Prometheus text exposition of the node's metrics to f. */
void sh_node_metrics(sh_node *n, FILE *f);

#endif
