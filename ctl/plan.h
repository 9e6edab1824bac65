/*
 * The rebalance planner: which slot ranges should move where so that every
 * node holds about the same number of points (issue #8). Pure: it reads a
 * cluster map and the nodes' point counts and returns moves; moving them
 * is another matter.
 *
 * Each slot weighs its points: the nodes' per-slot counts when they are
 * given (sh_plan_rebalance_weighted), else an even spread over the slots a
 * node owns (slot = xxh64(id) % 16384, so they are, up to noise): its
 * owner's points / its owner's slot count. An empty cluster is balanced by
 * slot counts instead. Donors (nodes above the mean, and
 * nodes being drained, which give everything) hand over slots from the
 * top of their ranges down, each to the receiver that is furthest below
 * the mean, until they are within half a slot's weight of it; consecutive
 * slots going the same way become one range.
 */
#ifndef SH_CTL_PLAN_H
#define SH_CTL_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SH_PLAN_SLOTS 16384

typedef struct sh_plan_node {
	uint32_t id;
	uint64_t points; /* live points over every collection */
	bool drain;	 /* give every slot away, take none */
} sh_plan_node;

/* A range of the map: slots first..last belong to node. */
typedef struct sh_plan_range {
	uint32_t first, last, node;
} sh_plan_range;

typedef struct sh_plan_move {
	uint32_t first, last; /* slots */
	uint32_t from, to;    /* node ids */
	uint64_t points;      /* estimated */
} sh_plan_move;

/* Plans the moves for nodes[0..nn) and the map's ranges[0..nr) (every
 * slot owned by one of the nodes). *out (free()) gets *nout moves, none
 * when the cluster is balanced. *after (nn entries, the caller's) gets
 * each node's estimated points once the moves are done. SH_OK, or
 * SH_EINVAL with a message (a slot without a known owner, no node to
 * receive, duplicate ids), or SH_ENOMEM. */
int sh_plan_rebalance(const sh_plan_node *nodes, size_t nn,
		      const sh_plan_range *ranges, size_t nr,
		      sh_plan_move **out, size_t *nout, uint64_t *after,
		      char *err, size_t errlen);

/* The same with each slot's own points (SH_PLAN_SLOTS entries, from the
 * nodes' per-slot counts) instead of the even spread: exact when ids do not
 * spread evenly (few points, skewed ids). slot_points NULL: as above. */
int sh_plan_rebalance_weighted(const sh_plan_node *nodes, size_t nn,
			       const sh_plan_range *ranges, size_t nr,
			       const uint64_t *slot_points, sh_plan_move **out,
			       size_t *nout, uint64_t *after, char *err,
			       size_t errlen);

#endif
