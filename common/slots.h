/*
 * Hash slots: how points are spread over shard nodes.
 *
 * DESIGN.md: slot = xxh64(id bytes) mod 16384. The id bytes are those of
 * sh_pid_bytes() (8 little-endian bytes for an integer id, the UTF-8 bytes
 * for a string id), hashed with seed 0 by sh_pid_hash(). Every process
 * (router, node, ingest, ctl) computes the slot with this one function, so
 * they can never disagree on where a point lives.
 *
 * 16384 slots (Redis Cluster's number) are enough to move load between
 * nodes in small steps and few enough that the owner table (2 bytes a slot)
 * travels in every cluster map.
 */
#ifndef SH_SLOTS_H
#define SH_SLOTS_H

#include <stdint.h>

#include "index/pid.h"

/* Number of hash slots; part of the on-disk and wire formats. */
#define SH_SLOTS 16384

/* The slot of a point id, 0..SH_SLOTS-1. Pure; any thread. */
static inline uint16_t sh_slot_of(const sh_pid *p)
{
	return (uint16_t)(sh_pid_hash(p) % SH_SLOTS);
}

#endif
