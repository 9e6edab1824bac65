/*
 * shoal-router's core: the front door of a cluster. It speaks the same
 * protocol as a node (proto/shoal.proto), so clients cannot tell a router
 * from a single node, and adds the cluster administration messages.
 *
 * ## Routing
 *
 * slot = xxh64(id bytes) mod 16384 (common/slots.h); the cluster map
 * (map.h) names each slot's owner. Upserts, deletes by id and gets are
 * split by owner and sent to every owner at once; a write is acknowledged
 * when every owner has acknowledged its part. Searches, deletes by filter,
 * scrolls, counts, stats and collection create/drop go to every node.
 * Every forwarded request carries the map epoch; a node that answers
 * EMOVED with an older epoch than the router's is sent its slots again
 * (set_slots) and the request is retried once.
 *
 * ## Failures
 *
 * Each node call has a deadline: the request's timeout_ms, or the
 * router's default (searches and reads: --read-timeout-ms; writes:
 * --write-timeout-ms). A search fails by default when a node does not
 * answer, with an error naming the node; with min_coverage > 0 it succeeds
 * with the hits of the nodes that answered when answered/asked reaches
 * min_coverage, and reports the coverage (nodes answered / asked, slots
 * covered). A write that some owner did not acknowledge fails with that
 * owner's error, naming it; its result still lists the per-point
 * statuses, so the client knows which points were acknowledged (those are
 * durable; the others may or may not be, and a retry with the same
 * versions is harmless).
 *
 * ## Threads
 *
 * sh_router_handle may run on any number of threads at once; it blocks
 * while it waits for nodes, so the server must not call it on nng's own
 * threads. The map is read under a rwlock; changes (add_node,
 * remove_node, the steps of slot moves) are serialised and stored (file
 * or etcd, by compare-and-swap) before they take effect.
 */
#ifndef SH_ROUTER_H
#define SH_ROUTER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "wire.h"

typedef struct sh_router sh_router;

typedef struct sh_router_opts {
	const char *data_dir; /* holds cluster.json (file mode) */
	/* etcd mode: endpoints ("http://h:2379[,...]") and the key of the
	 * map; NULL endpoints: the map file in data_dir. */
	const char *etcd;
	const char *etcd_key;
	const char *const *bootstrap; /* node addresses for a new map */
	size_t nbootstrap;
	int read_timeout_ms;  /* default deadline of a node call for reads */
	int write_timeout_ms; /* ... for writes */
	sh_wire_limits limits;
} sh_router_opts;

void sh_router_opts_default(sh_router_opts *o);

/* Loads the map (data_dir/cluster.json, or the etcd key), or creates it
 * from the bootstrap addresses when there is none (an error when there are
 * none either; in etcd mode a router that loses the race to create it
 * loads the winner's), connects to every node and sends each its slots. A
 * node that cannot be reached is not an error here: it gets its slots when
 * it answers EMOVED. In etcd mode a thread watches the key and installs
 * every newer map. */
int sh_router_open(const sh_router_opts *o, sh_router **out, char *err,
		   size_t errlen);

void sh_router_close(sh_router *r);

/* 0 starting, 1 serving, 2 stopping (the server's health convention). */
void sh_router_set_state(sh_router *r, int state);
int sh_router_get_state(const sh_router *r);

/* One request in, one response out (*out malloc'd). Returns SH_ENOMEM only
 * when no response could be built. Any thread except nng's. */
int sh_router_handle(sh_router *r, const uint8_t *req, size_t len,
		     uint8_t **out, size_t *outlen);

/* Prometheus text of the router's metrics. */
void sh_router_metrics(sh_router *r, FILE *f);

#endif
