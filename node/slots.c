/* The node's slots: which it owns at which map epoch, and its part of the
 * slot moves in flight (importing, fenced, handed over). See node.h,
 * "Slots", and docs/rebalancing.md. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "node_impl.h"

/* Persisted under node record "slots". Version 2:
 *   [2][epoch u64][node id u32][fence move u64][import move u64]
 *   [handed to u32][owned][importing][fenced][handed]   (SH_SLOTS / 8
 *   bytes each)
 * Version 1 (before moves) is [1][epoch u64][node id u32][owned]. Integers
 * are little-endian. */
#define SLOTS_V1 1
#define SLOTS_V2 2
#define SLOT_BYTES (SH_SLOTS / 8)
#define SLOTS_V1_LEN (1 + 8 + 4 + SLOT_BYTES)
#define SLOTS_V2_LEN (1 + 8 + 4 + 8 + 8 + 4 + 4 * SLOT_BYTES)

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_bits(uint8_t *p, const uint64_t *bits)
{
	for (size_t i = 0; i < SH_SLOT_WORDS; i++)
		put_le(p + 8 * i, bits[i], 8);
}

static void get_bits(uint64_t *bits, const uint8_t *p)
{
	for (size_t i = 0; i < SH_SLOT_WORDS; i++)
		bits[i] = get_le(p + 8 * i, 8);
}

uint32_t slots_count(const uint64_t *bits)
{
	uint32_t c = 0;
	for (size_t i = 0; i < SH_SLOT_WORDS; i++)
		c += (uint32_t)__builtin_popcountll(bits[i]);
	return c;
}

bool slots_any(const uint64_t *bits)
{
	for (size_t i = 0; i < SH_SLOT_WORDS; i++)
		if (bits[i])
			return true;
	return false;
}

int node_slots_load(sh_node *n, char *err, size_t errlen)
{
	struct node_slots *s = &n->slots;
	memset(s, 0, sizeof(*s));
	void *v;
	size_t len;
	int rc = sh_store_node_get(n->st, "slots", &v, &len);
	if (rc == SH_ENOTFOUND) {
		memset(s->owned, 0xff, sizeof(s->owned));
		s->nowned = SH_SLOTS;
		return SH_OK;
	}
	if (rc)
		return sh_errf(err, errlen, rc, "reading the slot map: %s",
			       sh_store_last_error());
	const uint8_t *b = v;
	if (len == SLOTS_V1_LEN && b[0] == SLOTS_V1) {
		s->epoch = get_le(b + 1, 8);
		s->node_id = (uint32_t)get_le(b + 9, 4);
		get_bits(s->owned, b + 13);
	} else if (len == SLOTS_V2_LEN && b[0] == SLOTS_V2) {
		s->epoch = get_le(b + 1, 8);
		s->node_id = (uint32_t)get_le(b + 9, 4);
		s->fence_move = get_le(b + 13, 8);
		s->import_move = get_le(b + 21, 8);
		s->handed_to = (uint32_t)get_le(b + 29, 4);
		const uint8_t *p = b + 33;
		get_bits(s->owned, p);
		get_bits(s->importing, p + SLOT_BYTES);
		get_bits(s->fenced, p + 2 * SLOT_BYTES);
		get_bits(s->handed, p + 3 * SLOT_BYTES);
	} else {
		free(v);
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "stored slot map: bad record (%zu bytes)", len);
	}
	s->nowned = slots_count(s->owned);
	free(v);
	return SH_OK;
}

int node_slots_save_locked(sh_node *n, const struct node_slots *s)
{
	uint8_t *rec = malloc(SLOTS_V2_LEN);
	if (!rec)
		return SH_ENOMEM;
	rec[0] = SLOTS_V2;
	put_le(rec + 1, s->epoch, 8);
	put_le(rec + 9, s->node_id, 4);
	put_le(rec + 13, s->fence_move, 8);
	put_le(rec + 21, s->import_move, 8);
	put_le(rec + 29, s->handed_to, 4);
	uint8_t *p = rec + 33;
	put_bits(p, s->owned);
	put_bits(p + SLOT_BYTES, s->importing);
	put_bits(p + 2 * SLOT_BYTES, s->fenced);
	put_bits(p + 3 * SLOT_BYTES, s->handed);
	int rc = sh_store_node_put(n->st, "slots", rec, SLOTS_V2_LEN);
	free(rec);
	return rc;
}

int node_slots_change(sh_node *n, node_slots_fn fn, void *ctx, char *err,
		      size_t errlen)
{
	pthread_rwlock_wrlock(&n->wgate);
	pthread_rwlock_wrlock(&n->slock);
	struct node_slots next = n->slots;
	int rc = fn(n, &next, ctx, err, errlen);
	if (rc == SH_OK) {
		next.nowned = slots_count(next.owned);
		rc = node_slots_save_locked(n, &next);
		if (rc)
			rc = sh_errf(err, errlen, rc,
				     "persisting the slot state: %s",
				     sh_store_last_error());
		else
			n->slots = next;
	}
	pthread_rwlock_unlock(&n->slock);
	pthread_rwlock_unlock(&n->wgate);
	return rc;
}

void node_slots_get(sh_node *n, struct node_slots *out)
{
	pthread_rwlock_rdlock(&n->slock);
	*out = n->slots;
	pthread_rwlock_unlock(&n->slock);
}

uint64_t node_epoch_now(sh_node *n)
{
	pthread_rwlock_rdlock(&n->slock);
	uint64_t e = n->slots.epoch;
	pthread_rwlock_unlock(&n->slock);
	return e;
}

void node_serving(sh_node *n, const Shoal__V1__SlotSet *only, bool write,
		  uint64_t *out)
{
	uint64_t lim[SH_SLOT_WORDS];
	if (only)
		sh_wire_slots_from_set(only, lim);
	pthread_rwlock_rdlock(&n->slock);
	const struct node_slots *s = &n->slots;
	for (size_t i = 0; i < SH_SLOT_WORDS; i++) {
		uint64_t v = s->owned[i] & ~s->handed[i];
		if (write)
			v &= ~s->fenced[i];
		out[i] = only ? v & lim[i] : v;
	}
	pthread_rwlock_unlock(&n->slock);
}

/* Why slot s cannot be served (reads, or writes too): into err, EMOVED. */
static int refuse(const struct node_slots *s, uint16_t slot, const char *what,
		  size_t i, char *err, size_t errlen)
{
	if (slot_bit(s->handed, slot))
		return sh_errf(err, errlen, SH_EMOVED,
			       "%s[%zu]: slot %u was handed over by this node "
			       "(move %llu): ask the owner in the newer map",
			       what, i, slot,
			       (unsigned long long)s->fence_move);
	if (slot_bit(s->owned, slot) && slot_bit(s->fenced, slot))
		return sh_errf(err, errlen, SH_EMOVED,
			       "%s[%zu]: slot %u is being handed over (move "
			       "%llu); retry",
			       what, i, slot,
			       (unsigned long long)s->fence_move);
	return sh_errf(err, errlen, SH_EMOVED,
		       "%s[%zu]: slot %u is not owned by this node (map "
		       "epoch %llu)",
		       what, i, slot, (unsigned long long)s->epoch);
}

int node_check_slot(sh_node *n, uint16_t slot, bool write, const char *what,
		    size_t i, char *err, size_t errlen)
{
	int rc = SH_OK;
	pthread_rwlock_rdlock(&n->slock);
	const struct node_slots *s = &n->slots;
	bool ok = slot_bit(s->owned, slot) && !slot_bit(s->handed, slot) &&
		  (!write || !slot_bit(s->fenced, slot));
	if (!ok)
		rc = refuse(s, slot, what, i, err, errlen);
	pthread_rwlock_unlock(&n->slock);
	return rc;
}

int node_check_slots(sh_node *n, const Shoal__V1__SlotSet *only, bool write,
		     const char *what, char *err, size_t errlen)
{
	if (!only)
		return SH_OK;
	uint64_t want[SH_SLOT_WORDS], have[SH_SLOT_WORDS];
	sh_wire_slots_from_set(only, want);
	node_serving(n, NULL, write, have);
	for (size_t i = 0; i < SH_SLOT_WORDS; i++)
		want[i] &= ~have[i];
	uint32_t s = sh_wire_slots_next(want, 0, true);
	if (s >= SH_SLOTS)
		return SH_OK;
	pthread_rwlock_rdlock(&n->slock);
	int rc = refuse(&n->slots, (uint16_t)s, what, 0, err, errlen);
	pthread_rwlock_unlock(&n->slock);
	return rc;
}

/* ---- set_slots ------------------------------------------------------------
 */

struct set_slots_ctx {
	const Shoal__V1__SetSlotsRequest *r;
	uint64_t bits[SH_SLOT_WORDS];
};

static int apply_set_slots(sh_node *n, struct node_slots *s, void *ctx,
			   char *err, size_t errlen)
{
	struct set_slots_ctx *c = ctx;
	if (c->r->map_epoch < s->epoch)
		return sh_errf(err, errlen, SH_ESTALE,
			       "set_slots: map epoch %llu is older than the "
			       "node's %llu",
			       (unsigned long long)c->r->map_epoch,
			       (unsigned long long)s->epoch);
	s->epoch = c->r->map_epoch;
	s->node_id = c->r->node_id;
	memcpy(s->owned, c->bits, sizeof(s->owned));
	/* A slot it owns now is no longer imported: later imports of it are
	 * refused. Fences and handovers stay until the move's own commands
	 * clear them: a late push of an older map at the same epoch must
	 * never give a handed-over slot back. */
	for (size_t i = 0; i < SH_SLOT_WORDS; i++)
		s->importing[i] &= ~s->owned[i];
	return SH_OK;
}

int op_set_slots(sh_node *n, const Shoal__V1__Request *rq,
		 Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	struct set_slots_ctx c = {.r = rq->set_slots};
	if (c.r->map_epoch == 0)
		return sh_errf(err, errlen, SH_EINVAL,
			       "set_slots.map_epoch: must be > 0");
	sh_wire_slots_from_set(c.r->owned, c.bits);
	/* Under the write gate: the writes and imports in flight finish
	 * first, under the old ownership. */
	int rc = node_slots_change(n, apply_set_slots, &c, err, errlen);
	if (rc)
		return rc;
	sh_info("node", "slot map epoch %llu: node %u owns %u slots",
		(unsigned long long)c.r->map_epoch, c.r->node_id,
		slots_count(c.bits));
	Shoal__V1__SetSlotsResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__set_slots_result__init(res);
	res->map_epoch = c.r->map_epoch;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_SET_SLOTS;
	rs->set_slots = res;
	return SH_OK;
}
