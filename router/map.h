/*
 * The cluster map: which node owns each of the 16384 hash slots, under a
 * version (the epoch) that grows with every change.
 *
 * Kept by the router in a JSON file in its data directory (written to a
 * temporary file, fsynced, renamed: a crash leaves the old map or the new
 * one, never half of each):
 *
 *   {"format": 1, "epoch": 7,
 *    "nodes": [{"id": 1, "address": "tcp://10.0.0.7:7100"}, ...],
 *    "slots": [{"first": 0, "last": 5461, "node": 1}, ...]}
 *
 * Every slot has exactly one owner, a node of the list. Node ids start at
 * 1 and are never reused. Slot moves between nodes (rebalancing) will add
 * a per-slot migration state beside the owner; the file format has room
 * for it (unknown members are refused, so an old router cannot silently
 * drop a migration it does not understand).
 *
 * An sh_map is a plain value: the router keeps one under its lock and
 * replaces it whole.
 */
#ifndef SH_MAP_H
#define SH_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "slots.h"

/* Nodes in one cluster: a bound that keeps the map small and the fan-out
 * sane; far above what one router can fan out to within a deadline. */
#define SH_MAP_MAX_NODES 256
/* Node addresses (nng URLs), in bytes. */
#define SH_MAP_MAX_ADDR 255

typedef struct sh_map_node {
	uint32_t id;
	char address[SH_MAP_MAX_ADDR + 1];
} sh_map_node;

typedef struct sh_map {
	uint64_t epoch;
	uint32_t nnodes;
	sh_map_node nodes[SH_MAP_MAX_NODES]; /* ascending by id */
	uint32_t owner[SH_SLOTS];	     /* node id of each slot */
} sh_map;

/* A map of nodes with ids 1..n at the given addresses, the slots split into
 * n contiguous ranges of (nearly) equal size, epoch 1. Returns SH_OK or
 * SH_EINVAL (n 0 or too large, an address empty, too long or repeated). */
int sh_map_init(sh_map *m, const char *const *addresses, size_t n, char *err,
		size_t errlen);

/* Reads and validates a map file. SH_OK, SH_ENOTFOUND (no file), SH_EIO,
 * SH_ECORRUPT (not a valid map: the message says why), SH_ENOMEM. */
int sh_map_load(sh_map *m, const char *path, char *err, size_t errlen);

/* Writes the map atomically (temporary file, fsync, rename, fsync of the
 * directory). SH_OK or SH_EIO. */
int sh_map_save(const sh_map *m, const char *path, char *err, size_t errlen);

/* Index of node id in m->nodes, or -1. */
int sh_map_node_index(const sh_map *m, uint32_t id);

/* Slots owned by node id, as ranges: fills up to cap (first, last) pairs
 * and returns how many there are. */
size_t sh_map_ranges(const sh_map *m, uint32_t id, uint32_t (*ranges)[2],
		     size_t cap);

/* Adds a node owning no slot: a new id (one above the highest ever used,
 * which the map remembers as the highest id present), epoch + 1. Returns
 * SH_OK with *id, SH_EEXIST (address present), SH_EFULL, SH_EINVAL. */
int sh_map_add_node(sh_map *m, const char *address, uint32_t *id, char *err,
		    size_t errlen);

#endif
