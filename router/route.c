/* Sending to owners, again when slots move. See route.h. */
#include "route.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "pid.h"
#include "slots.h"

#define WORDS (SH_SLOTS / 64)
/* Pauses between rounds: a hand-off completes within a few milliseconds
 * of the fence's drain. */
#define BACKOFF_MIN_MS 2
#define BACKOFF_MAX_MS 50
/* A new round starts only with this much of the deadline left: a node
 * given less would look dead for want of time, not of health. */
#define MIN_ROUND_MS 20

static uint64_t deadline_of(sh_router *r, const Shoal__V1__Request *rq,
			    bool write)
{
	uint64_t ms = rq->timeout_ms ? rq->timeout_ms
		      : write	     ? (uint64_t)r->o.write_timeout_ms
				     : (uint64_t)r->o.read_timeout_ms;
	return sh_now_us() + ms * 1000;
}

/* Milliseconds left until deadline (at least 1). */
static int left_ms(uint64_t deadline)
{
	uint64_t now = sh_now_us();
	return now >= deadline ? 1 : (int)((deadline - now + 999) / 1000);
}

static void free_kept(void *p)
{
	struct call *c = p;
	size_t n = (size_t)c[0].node; /* the count, see route_defer_calls */
	calls_free(c + 1, n);
	free(c);
}

void route_defer_calls(sh_arena *a, struct call *calls, size_t n)
{
	struct call *keep = calloc(n + 1, sizeof(*keep));
	if (!keep) {
		calls_free(calls, n);
		free(calls);
		a->oom = true;
		return;
	}
	keep[0].node = (int)n;
	memcpy(keep + 1, calls, n * sizeof(*calls));
	free(calls);
	sh_arena_defer(a, free_kept, keep);
}

/* Where the calls of a round live once kept: the arena's copy. The caller
 * keeps pointers into it, so it is made before anything points at it. */
struct call *route_keep_calls(sh_arena *a, size_t n)
{
	struct call *keep = calloc(n + 1, sizeof(*keep));
	if (!keep) {
		a->oom = true;
		return NULL;
	}
	keep[0].node = (int)n;
	if (!sh_arena_defer(a, free_kept, keep))
		return NULL;
	return keep + 1;
}

uint16_t route_slot_of(const Shoal__V1__PointId *id)
{
	sh_pid pid;
	if (sh_wire_pid_from_proto(id, &pid) != SH_OK)
		return 0;
	return sh_slot_of(&pid);
}

bool route_any(const uint64_t *bits)
{
	for (size_t i = 0; i < WORDS; i++)
		if (bits[i])
			return true;
	return false;
}

const char *route_range_str(const uint64_t *bits, char *buf, size_t cap)
{
	buf[0] = 0;
	uint32_t s = sh_wire_slots_next(bits, 0, true);
	if (s < SH_SLOTS)
		snprintf(buf, cap, "%u-%u", s,
			 sh_wire_slots_next(bits, s, false) - 1);
	return buf;
}

/* After a round with refusals: catch the map up with the nodes. A node
 * behind the router was sent its slots by the fan-out already; a node
 * ahead means the router's (shared) map is old. False when too little of
 * the deadline is left for another round. */
static bool catch_up(sh_router *r, bool ahead, int *backoff, uint64_t deadline)
{
	if (ahead)
		router_refresh_map(r);
	if (left_ms(deadline) < *backoff + MIN_ROUND_MS)
		return false;
	sh_sleep_ms(*backoff);
	*backoff =
	    *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
	return true;
}

/* ---- Items ------------------------------------------------------------------
 */

static bool add_group(struct routed *out, struct call *c, size_t *items,
		      size_t n)
{
	if (out->ng == out->cap) {
		size_t cap = out->cap ? 2 * out->cap : 8;
		struct routed_group *g = realloc(out->g, cap * sizeof(*g));
		if (!g)
			return false;
		out->g = g;
		out->cap = cap;
	}
	out->g[out->ng++] = (struct routed_group){c, items, n};
	return true;
}

static void free_groups(void *p)
{
	free(p);
}

int route_items(sh_router *r, const Shoal__V1__Request *rq,
		Shoal__V1__PointId *const *ids, size_t n, bool write,
		route_sub_fn make, void *ctx, sh_arena *a, struct routed *out)
{
	memset(out, 0, sizeof(*out));
	uint64_t deadline = deadline_of(r, rq, write);
	uint16_t *slot = sh_arena_alloc(a, (n ? n : 1) * sizeof(*slot));
	size_t *pending = sh_arena_alloc(a, (n ? n : 1) * sizeof(*pending));
	int *owner = sh_arena_alloc(a, (n ? n : 1) * sizeof(*owner));
	if (!slot || !pending || !owner)
		return SH_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		slot[i] = route_slot_of(ids[i]);
		pending[i] = i;
	}
	size_t np = n;
	int backoff = BACKOFF_MIN_MS;
	int rc = SH_OK;
	while (np) {
		/* Group the pending items by their owner now. */
		size_t count[ROUTER_MAX_CONNS];
		pthread_rwlock_rdlock(&r->lock);
		uint32_t nn = r->nnodes;
		memset(count, 0, nn * sizeof(count[0]));
		for (size_t i = 0; i < np; i++) {
			owner[i] = router_owner_locked(r, slot[pending[i]]);
			if (owner[i] >= 0)
				count[owner[i]]++;
		}
		pthread_rwlock_unlock(&r->lock);
		size_t ng = 0;
		for (uint32_t j = 0; j < nn; j++)
			ng += count[j] > 0;
		struct call *calls = route_keep_calls(a, ng);
		size_t **items =
		    sh_arena_alloc(a, (ng ? ng : 1) * sizeof(*items));
		size_t *nitems =
		    sh_arena_alloc(a, (ng ? ng : 1) * sizeof(size_t));
		if (!calls || !items || !nitems)
			return SH_ENOMEM;
		size_t k = 0;
		for (uint32_t j = 0; j < nn; j++) {
			if (!count[j])
				continue;
			items[k] = sh_arena_alloc(a, count[j] * sizeof(size_t));
			if (!items[k])
				return SH_ENOMEM;
			nitems[k] = 0;
			for (size_t i = 0; i < np; i++)
				if (owner[i] == (int)j)
					items[k][nitems[k]++] = pending[i];
			call_init(&calls[k], (int)j, rq);
			if (!make(ctx, &calls[k], items[k], nitems[k], a))
				return SH_ENOMEM;
			k++;
		}
		fanout(r, calls, ng, left_ms(deadline), write);
		/* Keep the answers; refused groups go round again. */
		size_t nnext = 0;
		bool ahead = false;
		for (k = 0; k < ng; k++) {
			struct call *c = &calls[k];
			if (!c->rc && (int)c->resp->code == SH_EMOVED) {
				ahead |= c->resp->map_epoch > c->rq.map_epoch;
				snprintf(
				    out->left_msg, sizeof(out->left_msg), "%s",
				    c->resp->message ? c->resp->message : "");
				memcpy(pending + nnext, items[k],
				       nitems[k] * sizeof(size_t));
				nnext += nitems[k];
				continue;
			}
			if (!add_group(out, c, items[k], nitems[k])) {
				rc = SH_ENOMEM;
				break;
			}
		}
		np = nnext;
		if (rc || !np)
			break;
		if (!catch_up(r, ahead, &backoff, deadline)) {
			out->left = pending;
			out->nleft = np;
			break;
		}
		atomic_fetch_add(&r->rerouted, np);
	}
	if (out->g && !sh_arena_defer(a, free_groups, out->g)) {
		out->g = NULL;
		out->ng = 0;
		return SH_ENOMEM;
	}
	return rc;
}

/* ---- Slots ------------------------------------------------------------------
 */

static bool add_answer(struct slot_routed *out, struct call *c,
		       const uint64_t *covered)
{
	if (out->nans == out->cap) {
		size_t cap = out->cap ? 2 * out->cap : 8;
		struct slot_answer *x = realloc(out->ans, cap * sizeof(*x));
		if (!x)
			return false;
		out->ans = x;
		out->cap = cap;
	}
	out->ans[out->nans].c = c;
	memcpy(out->ans[out->nans].covered, covered, WORDS * sizeof(uint64_t));
	out->nans++;
	return true;
}

int route_slots(sh_router *r, const Shoal__V1__Request *rq, bool write,
		const uint64_t *want_in, slot_sub_fn make,
		slot_covered_fn covered, void *ctx, sh_arena *a,
		struct slot_routed *out)
{
	memset(out, 0, sizeof(*out));
	uint64_t deadline = deadline_of(r, rq, write);
	uint64_t want[WORDS];
	if (want_in)
		memcpy(want, want_in, sizeof(want));
	else
		memset(want, 0xff, sizeof(want));
	bool asked[ROUTER_MAX_CONNS] = {false},
	     answered[ROUTER_MAX_CONNS] = {false};
	int backoff = BACKOFF_MIN_MS;
	int rc = SH_OK;
	uint64_t(*ask)[WORDS] = NULL;
	uint32_t cap = 0;
	while (route_any(want)) {
		/* Each wanted slot, of its owner now. */
		pthread_rwlock_rdlock(&r->lock);
		uint32_t nn = r->nnodes;
		if (nn > cap) {
			void *grown = realloc(ask, nn * sizeof(*ask));
			if (!grown) {
				pthread_rwlock_unlock(&r->lock);
				rc = SH_ENOMEM;
				break;
			}
			ask = grown;
			cap = nn;
		}
		for (uint32_t j = 0; j < nn; j++)
			for (size_t w = 0; w < WORDS; w++)
				ask[j][w] = r->owned_bits[j][w] & want[w];
		pthread_rwlock_unlock(&r->lock);
		size_t ng = 0;
		for (uint32_t j = 0; j < nn; j++)
			ng += route_any(ask[j]);
		if (ng == 0)
			break; /* no owner: cannot happen in a valid map */
		struct call *calls = route_keep_calls(a, ng);
		int *node = sh_arena_alloc(a, ng * sizeof(int));
		if (!calls || !node) {
			rc = SH_ENOMEM;
			break;
		}
		size_t k = 0;
		for (uint32_t j = 0; j < nn; j++) {
			if (!route_any(ask[j]))
				continue;
			Shoal__V1__SlotSet *only =
			    sh_wire_slots_to_set(a, ask[j]);
			call_init(&calls[k], (int)j, rq);
			if (!only || !make(ctx, &calls[k], only, a)) {
				rc = SH_ENOMEM;
				break;
			}
			node[k] = (int)j;
			asked[j] = true;
			k++;
		}
		if (rc)
			break;
		fanout(r, calls, ng, left_ms(deadline), write);
		bool ahead = false, again = false;
		for (k = 0; k < ng; k++) {
			struct call *c = &calls[k];
			const uint64_t *asked_k = ask[node[k]];
			if (c->rc) { /* no answer: its slots are lost */
				for (size_t w = 0; w < WORDS; w++) {
					out->lost[w] |= asked_k[w];
					want[w] &= ~asked_k[w];
				}
				if (!out->first_lost)
					out->first_lost = c;
				continue;
			}
			answered[node[k]] = true;
			int code = (int)c->resp->code;
			ahead |= c->resp->map_epoch > c->rq.map_epoch;
			if (code == SH_EMOVED) {
				again = true;
				continue;
			}
			if (code != SH_OK) {
				out->verdict = c;
				goto done;
			}
			uint64_t got[WORDS];
			const Shoal__V1__SlotSet *cs =
			    covered ? covered(c->resp) : NULL;
			if (covered && cs) {
				memset(got, 0, sizeof(got));
				for (size_t i = 0; i < cs->n_ranges; i++)
					for (uint32_t s = cs->ranges[i]->first;
					     s <= cs->ranges[i]->last &&
					     s < SH_SLOTS;
					     s++)
						got[s / 64] |= 1ull << (s % 64);
			} else if (covered) {
				memset(got, 0, sizeof(got)); /* none */
			} else {
				memset(got, 0xff, sizeof(got)); /* all asked */
			}
			bool some = false;
			for (size_t w = 0; w < WORDS; w++) {
				got[w] &= asked_k[w] & want[w];
				want[w] &= ~got[w];
				some |= got[w] != 0;
				again |= (asked_k[w] & ~got[w]) != 0;
			}
			if (some && !add_answer(out, c, got)) {
				rc = SH_ENOMEM;
				goto done;
			}
		}
		if (!again || !route_any(want))
			break;
		if (!catch_up(r, ahead, &backoff, deadline))
			break;
		uint32_t left = 0;
		for (size_t w = 0; w < WORDS; w++)
			left += (uint32_t)__builtin_popcountll(want[w]);
		atomic_fetch_add(&r->rerouted, left);
	}
	memcpy(out->uncovered, want, sizeof(want));
done:
	free(ask);
	for (size_t j = 0; j < ROUTER_MAX_CONNS; j++) {
		out->asked += asked[j];
		out->answered += answered[j];
	}
	if (out->ans && !sh_arena_defer(a, free_groups, out->ans)) {
		out->ans = NULL;
		out->nans = 0;
		return SH_ENOMEM;
	}
	return rc;
}
