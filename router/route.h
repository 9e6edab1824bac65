/*
 * Sending requests to the owners of slots, again when slots move
 * (route.c). Private to router/.
 *
 * While a move is in flight a node may refuse a point (EMOVED: it is
 * fenced, handed over, or the node's map is newer or older than the
 * router's), and a search may come back without some of the slots asked
 * for. Both are transient: the router tells a node that is behind its
 * slots, re-reads a shared map that is behind a node, waits a little while
 * a hand-off completes, and asks the current owner again, until the
 * request's deadline. What is still refused or uncovered then is an
 * explicit error, never a silent loss or hole.
 */
#ifndef SH_ROUTE_H
#define SH_ROUTE_H

#include "router_impl.h"

/* ---- Items: the points of a write, the ids of a get ---------------------- */

/* The items one call carried (positions in the request). */
struct routed_group {
	struct call *c;
	size_t *items;
	size_t n;
};

struct routed {
	struct routed_group *g; /* calls that answered (any code but EMOVED) */
	size_t ng, cap;
	size_t *left; /* items still refused when the deadline passed */
	size_t nleft;
	char left_msg[300]; /* the last refusal, for them */
};

/* Fills call c (its op and sub-request, from a) with the request's items
 * items[0..n). False when out of memory. */
typedef bool (*route_sub_fn)(void *ctx, struct call *c, const size_t *items,
			     size_t n, sh_arena *a);

/* Sends the n items (ids[i] gives item i's slot) to their owners, each
 * group as one call built by make; groups answered EMOVED are sent again
 * to their items' owners after the map caught up, until the deadline
 * (the request's timeout_ms, else the router's read or write default).
 * The calls live until the arena is freed. Returns SH_OK or SH_ENOMEM. */
int route_items(sh_router *r, const Shoal__V1__Request *rq,
		Shoal__V1__PointId *const *ids, size_t n, bool write,
		route_sub_fn make, void *ctx, sh_arena *a, struct routed *out);

/* ---- Slots: searches, counts, deletes by filter ----------------------------
 */

/* What one node answered for the slots it was asked. */
struct slot_answer {
	struct call *c;
	uint64_t covered[SH_SLOTS / 64]; /* asked and covered */
};

struct slot_routed {
	struct slot_answer *ans;
	size_t nans, cap;
	uint64_t uncovered[SH_SLOTS / 64]; /* asked of answering nodes, never
					      covered by the deadline */
	uint64_t lost[SH_SLOTS / 64];	   /* slots of nodes that did not
					      answer */
	struct call *first_lost;	   /* the first such node's call */
	struct call *verdict; /* a node's own error (not EMOVED): the answer */
	size_t asked, answered; /* distinct nodes */
};

/* Sets call c's op to the request's with only_slots = only. */
typedef bool (*slot_sub_fn)(void *ctx, struct call *c, Shoal__V1__SlotSet *only,
			    sh_arena *a);
/* The slots a successful answer says it covered; NULL: all it was asked
 * (deletes by filter, which refuse whole with EMOVED instead). */
typedef const Shoal__V1__SlotSet *(*slot_covered_fn)(
    const Shoal__V1__Response *resp);

/* Asks, for every slot of want (NULL: all), its owner, with only_slots,
 * and asks again for the slots an answer did not cover (or refused with
 * EMOVED) until the deadline. A node that does not answer loses its slots
 * for this request (lost); a node's own error ends the routing (verdict).
 * Calls live until the arena is freed. SH_OK or SH_ENOMEM. */
int route_slots(sh_router *r, const Shoal__V1__Request *rq, bool write,
		const uint64_t *want, slot_sub_fn make, slot_covered_fn covered,
		void *ctx, sh_arena *a, struct slot_routed *out);

/* The first slot range set in bits, as "first-last", into buf. */
const char *route_range_str(const uint64_t *bits, char *buf, size_t cap);
bool route_any(const uint64_t *bits);
/* The slot of a wire id (validated upstream). */
uint16_t route_slot_of(const Shoal__V1__PointId *id);

/* Keeps the calls' responses until the arena is freed (they hold what the
 * answer points into). */
void route_defer_calls(sh_arena *a, struct call *calls, size_t n);
/* n zeroed calls that live (and whose responses are freed) with the
 * arena; NULL (a->oom) when out of memory. */
struct call *route_keep_calls(sh_arena *a, size_t n);

#endif
