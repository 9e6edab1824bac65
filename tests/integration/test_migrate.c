/* Slot moves between two real shoal-node processes, driven by hand with
 * MigrateRequests (what the router does for shoalctl): a move under a
 * continuous writer loses no acknowledged write and resurrects no delete;
 * an abort leaves the target without a trace; a source restarted mid-copy
 * must start again, and its fence survives a restart. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "error.h"
#include "nodeproc.h"
#include "pid.h"
#include "slots.h"

#define DIM 8
#define NIDS 3000
#define COLL "items"

static char tmp[512], dir_a[600], dir_b[600];
static nodeproc na, nb;
static sh_rpc *ca, *cb;

static void vec_of(uint64_t id, uint64_t version, float *v)
{
	for (int d = 0; d < DIM; d++)
		v[d] =
		    (float)((id * 31 + version * 7 + (uint64_t)d * 13) % 97) /
		    97.0f;
}

static uint16_t slot_of(uint64_t id)
{
	sh_pid p = sh_pid_u64(id);
	return sh_slot_of(&p);
}

static void start_node(nodeproc *p, const char *dir)
{
	static const char *const extra[] = {"--fsync", "never", NULL};
	assert_int_equal(np_start(p, dir, extra), 0);
}

static void dial(sh_rpc **c, const nodeproc *p)
{
	char err[256];
	assert_int_equal(sh_rpc_dial(p->url, 20000, 0, c, err, sizeof(err)),
			 SH_OK);
}

/* ---- Requests --------------------------------------------------------------
 */

static int set_slots(sh_rpc *c, uint64_t epoch, uint32_t node_id, uint32_t lo,
		     uint32_t hi, bool none)
{
	Shoal__V1__SlotRange r = SHOAL__V1__SLOT_RANGE__INIT, *rp = &r;
	r.first = lo;
	r.last = hi;
	Shoal__V1__SlotSet set = SHOAL__V1__SLOT_SET__INIT;
	set.ranges = &rp;
	set.n_ranges = none ? 0 : 1;
	Shoal__V1__SetSlotsRequest ss = SHOAL__V1__SET_SLOTS_REQUEST__INIT;
	ss.map_epoch = epoch;
	ss.node_id = node_id;
	ss.owned = &set;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_SET_SLOTS;
	rq.set_slots = &ss;
	Shoal__V1__Response *rs = np_call(c, &rq);
	int code = rs->code;
	sh_wire_free_response(rs);
	return code;
}

/* Sends one MigrateRequest for slots lo..hi; the response is the
 * caller's. */
static Shoal__V1__Response *migrate(sh_rpc *c, Shoal__V1__MigrateAction act,
				    uint64_t move, uint32_t lo, uint32_t hi,
				    uint32_t peer, const char *addr)
{
	Shoal__V1__SlotRange r = SHOAL__V1__SLOT_RANGE__INIT, *rp = &r;
	r.first = lo;
	r.last = hi;
	Shoal__V1__SlotSet set = SHOAL__V1__SLOT_SET__INIT;
	set.ranges = &rp;
	set.n_ranges = 1;
	Shoal__V1__MigrateRequest m = SHOAL__V1__MIGRATE_REQUEST__INIT;
	m.action = act;
	m.move_id = move;
	m.slots = &set;
	m.peer_node_id = peer;
	m.peer_address = (char *)(addr ? addr : "");
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_MIGRATE;
	rq.migrate = &m;
	rq.timeout_ms = 20000;
	return np_call(c, &rq);
}

static int migrate_code(sh_rpc *c, Shoal__V1__MigrateAction act, uint64_t move,
			uint32_t lo, uint32_t hi, uint32_t peer,
			const char *addr)
{
	Shoal__V1__Response *rs = migrate(c, act, move, lo, hi, peer, addr);
	int code = rs->code;
	if (code)
		print_message("migrate %d: %s\n", act, rs->message);
	sh_wire_free_response(rs);
	return code;
}

/* Polls STATUS until the copy is READY (fails the test after 120 s). */
static void wait_ready(sh_rpc *c, uint64_t move, uint32_t lo, uint32_t hi)
{
	double t0 = np_now_s();
	for (;;) {
		Shoal__V1__Response *rs =
		    migrate(c, SHOAL__V1__MIGRATE_ACTION__STATUS, move, lo, hi,
			    0, NULL);
		assert_int_equal(rs->code, SH_OK);
		Shoal__V1__MigrateState st = rs->migrate->state;
		if (st == SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED)
			fail_msg("copy failed: %s", rs->migrate->error);
		sh_wire_free_response(rs);
		if (st == SHOAL__V1__MIGRATE_STATE__MIGRATE_READY)
			return;
		assert_true(np_now_s() - t0 < 120);
		np_sleep_ms(20);
	}
}

/* The node's record of id: 1 live (version in *ver, vector checked), 0
 * absent. */
static int get_one(sh_rpc *c, uint64_t id, uint64_t *ver, int *code)
{
	Shoal__V1__PointId pid = SHOAL__V1__POINT_ID__INIT, *pp = &pid;
	pid.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	pid.num = id;
	Shoal__V1__GetRequest g = SHOAL__V1__GET_REQUEST__INIT;
	g.collection = COLL;
	g.ids = &pp;
	g.n_ids = 1;
	g.with_vector = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET;
	rq.get = &g;
	Shoal__V1__Response *rs = np_call(c, &rq);
	*code = rs->code;
	int live = 0;
	if (rs->code == 0 && rs->get->n_points == 1) {
		Shoal__V1__Point *p = rs->get->points[0];
		*ver = p->version;
		float v[DIM];
		vec_of(id, p->version, v);
		assert_int_equal(p->n_vector, DIM);
		for (int d = 0; d < DIM; d++)
			assert_true(p->vector[d] == v[d]);
		live = 1;
	}
	sh_wire_free_response(rs);
	return live;
}

/* Live points of slots lo..hi that the node holds (its stats). */
static uint64_t held(sh_rpc *c, uint32_t lo, uint32_t hi)
{
	Shoal__V1__StatsRequest sr = SHOAL__V1__STATS_REQUEST__INIT;
	sr.with_slot_counts = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_STATS;
	rq.stats = &sr;
	Shoal__V1__Response *rs = np_call(c, &rq);
	assert_int_equal(rs->code, SH_OK);
	uint64_t n = 0;
	for (size_t i = 0; i < rs->stats->n_slot_counts; i++) {
		const Shoal__V1__SlotCount *sc = rs->stats->slot_counts[i];
		if (sc->slot >= lo && sc->slot <= hi)
			n += sc->points;
	}
	sh_wire_free_response(rs);
	return n;
}

/* Exact k=NIDS search on the node: how many hits, and whether any lies in
 * slots lo..hi. */
static size_t search_all(sh_rpc *c, uint32_t lo, uint32_t hi, bool *inside)
{
	float q[DIM] = {0};
	Shoal__V1__Vector v = SHOAL__V1__VECTOR__INIT, *vp = &v;
	v.values = q;
	v.n_values = DIM;
	Shoal__V1__SearchRequest s = SHOAL__V1__SEARCH_REQUEST__INIT;
	s.collection = COLL;
	s.queries = &vp;
	s.n_queries = 1;
	s.k = NIDS;
	s.exact = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
	rq.search = &s;
	Shoal__V1__Response *rs = np_call(c, &rq);
	assert_int_equal(rs->code, SH_OK);
	const Shoal__V1__QueryHits *h = rs->search->results[0];
	*inside = false;
	for (size_t i = 0; i < h->n_hits; i++) {
		uint16_t sl = slot_of(h->hits[i]->id->num);
		if (sl >= lo && sl <= hi)
			*inside = true;
	}
	size_t n = h->n_hits;
	sh_wire_free_response(rs);
	return n;
}

/* ---- The writer
 * -------------------------------------------------------------- Upserts and
 * deletes random ids with rising versions, routed as a router would: slots
 * below `cut` go to the target once `switched` is set, to the source before;
 * EMOVED (fenced, handed over) is retried after a pause. Records, per id, the
 * last acknowledged operation. */

struct acked {
	uint64_t version; /* 0: never acknowledged */
	bool live;
};

static struct acked acked[NIDS];
static atomic_bool writer_stop, switched;
static atomic_uint_fast64_t writes_ok, writes_moved;
static uint32_t cut_lo, cut_hi;
static uint64_t next_version[NIDS];

static int write_one(sh_rpc *c, uint64_t id, uint64_t ver, bool del)
{
	float v[DIM];
	vec_of(id, ver, v);
	return np_write_point(c, COLL, id, del ? NULL : v, DIM, ver, 0);
}

static void *writer(void *arg)
{
	(void)arg;
	sh_rpc *a, *b;
	char err[256];
	if (sh_rpc_dial(na.url, 20000, 0, &a, err, sizeof(err)) ||
	    sh_rpc_dial(nb.url, 20000, 0, &b, err, sizeof(err)))
		return (void *)1;
	uint64_t seed = 12345;
	while (!atomic_load(&writer_stop)) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t id = (seed >> 33) % NIDS;
		bool del = ((seed >> 20) % 4) == 0;
		uint64_t ver = ++next_version[id];
		for (;;) {
			uint16_t sl = slot_of(id);
			bool moving = sl >= cut_lo && sl <= cut_hi;
			sh_rpc *c = moving && atomic_load(&switched) ? b : a;
			int rc = write_one(c, id, ver, del);
			if (rc == SH_OK) {
				acked[id].version = ver;
				acked[id].live = !del;
				atomic_fetch_add(&writes_ok, 1);
				break;
			}
			if (rc != SH_EMOVED) /* no answer: unknown outcome */
				return (void *)2;
			atomic_fetch_add(&writes_moved, 1);
			np_sleep_ms(2);
			if (atomic_load(&writer_stop))
				break;
		}
	}
	sh_rpc_close(a);
	sh_rpc_close(b);
	return NULL;
}

/* Every id's state on its owner equals its last acknowledged write. */
static void check_acked(void)
{
	for (uint64_t id = 0; id < NIDS; id++) {
		uint16_t sl = slot_of(id);
		bool moving = sl >= cut_lo && sl <= cut_hi;
		sh_rpc *c = moving && atomic_load(&switched) ? cb : ca;
		uint64_t ver = 0;
		int code;
		int live = get_one(c, id, &ver, &code);
		assert_int_equal(code, SH_OK);
		if (acked[id].live != (live == 1))
			fail_msg("id %llu (slot %u): acknowledged %s v%llu, "
				 "found %s v%llu",
				 (unsigned long long)id, sl,
				 acked[id].live ? "upsert" : "delete",
				 (unsigned long long)acked[id].version,
				 live ? "live" : "absent",
				 (unsigned long long)ver);
		if (live)
			assert_int_equal(ver, acked[id].version);
	}
}

/* ---- Fixture
 * -----------------------------------------------------------------
 */

static int setup(void **state)
{
	np_tmpdir(tmp, sizeof(tmp));
	snprintf(dir_a, sizeof(dir_a), "%s/a", tmp);
	snprintf(dir_b, sizeof(dir_b), "%s/b", tmp);
	start_node(&na, dir_a);
	start_node(&nb, dir_b);
	dial(&ca, &na);
	dial(&cb, &nb);
	/* A owns every slot, B none, at epoch 1. */
	assert_int_equal(set_slots(ca, 1, 1, 0, SH_SLOTS - 1, false), SH_OK);
	assert_int_equal(set_slots(cb, 1, 2, 0, 0, true), SH_OK);
	assert_int_equal(np_create(ca, COLL, DIM, SHOAL__V1__METRIC__L2, NULL),
			 SH_OK);
	memset(acked, 0, sizeof(acked));
	for (uint64_t id = 0; id < NIDS; id++) {
		float v[DIM];
		next_version[id] = 1;
		vec_of(id, 1, v);
		assert_int_equal(
		    np_upsert1(ca, COLL, id, v, DIM, NULL, 1, NULL), SH_OK);
		acked[id].version = 1;
		acked[id].live = true;
	}
	/* a few tombstones, so that deletes travel too */
	for (uint64_t id = 0; id < NIDS; id += 17) {
		uint64_t ver = ++next_version[id];
		assert_int_equal(np_delete(ca, COLL, &id, 1, ver, NULL), SH_OK);
		acked[id].version = ver;
		acked[id].live = false;
	}
	return 0;
}

static int teardown(void **state)
{
	sh_rpc_close(ca);
	sh_rpc_close(cb);
	ca = cb = NULL;
	np_stop(&na, SIGTERM);
	np_stop(&nb, SIGTERM);
	np_rmrf(tmp);
	return 0;
}

/* ---- Tests
 * -------------------------------------------------------------------
 */

/* The whole move of half the slots under a writer: copy, replay, fence,
 * hand-off, switch, finish. */
static void test_move_loses_no_acknowledged_write(void **state)
{
	cut_lo = 0;
	cut_hi = SH_SLOTS / 2 - 1;
	atomic_store(&switched, false);
	atomic_store(&writer_stop, false);
	assert_int_equal(migrate_code(cb,
				      SHOAL__V1__MIGRATE_ACTION__PREPARE_IMPORT,
				      1, cut_lo, cut_hi, 1, NULL),
			 SH_OK);
	pthread_t w;
	assert_int_equal(pthread_create(&w, NULL, writer, NULL), 0);
	np_sleep_ms(100);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__START, 1,
				      cut_lo, cut_hi, 2, nb.url),
			 SH_OK);
	/* START again is harmless */
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__START, 1,
				      cut_lo, cut_hi, 2, nb.url),
			 SH_OK);
	wait_ready(ca, 1, cut_lo, cut_hi);
	/* the target holds copies, and never returns them */
	bool inside;
	search_all(cb, cut_lo, cut_hi, &inside);
	assert_false(inside);
	assert_true(held(cb, cut_lo, cut_hi) > 0);
	np_sleep_ms(300); /* writes keep coming and are replayed */
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__FENCE, 1,
				      cut_lo, cut_hi, 0, NULL),
			 SH_OK);
	uint64_t moved0 = atomic_load(&writes_moved);
	np_sleep_ms(100);
	assert_true(atomic_load(&writes_moved) > moved0); /* fenced */
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__HANDOFF, 1,
				      cut_lo, cut_hi, 0, NULL),
			 SH_OK);
	/* the source serves those slots no more, not even for reads */
	search_all(ca, cut_lo, cut_hi, &inside);
	assert_false(inside);
	uint64_t moved_id = 0, ver;
	while (slot_of(moved_id) > cut_hi)
		moved_id++;
	int code;
	get_one(ca, moved_id, &ver, &code);
	assert_int_equal(code, SH_EMOVED);
	/* the switch: epoch 2 */
	assert_int_equal(set_slots(ca, 2, 1, cut_hi + 1, SH_SLOTS - 1, false),
			 SH_OK);
	assert_int_equal(set_slots(cb, 2, 2, cut_lo, cut_hi, false), SH_OK);
	atomic_store(&switched, true);
	np_sleep_ms(300);
	atomic_store(&writer_stop, true);
	void *wr;
	pthread_join(w, &wr);
	assert_null(wr);
	print_message("writes: %llu acknowledged, %llu refused while moving\n",
		      (unsigned long long)atomic_load(&writes_ok),
		      (unsigned long long)atomic_load(&writes_moved));
	check_acked();
	/* the target now serves them */
	search_all(cb, cut_lo, cut_hi, &inside);
	assert_true(inside);
	/* imports are refused once the target owns the slots */
	assert_int_equal(migrate_code(ca,
				      SHOAL__V1__MIGRATE_ACTION__FINISH_SOURCE,
				      1, cut_lo, cut_hi, 0, NULL),
			 SH_OK);
	assert_int_equal(held(ca, cut_lo, cut_hi), 0);
	assert_int_equal(migrate_code(cb,
				      SHOAL__V1__MIGRATE_ACTION__FINISH_IMPORT,
				      1, cut_lo, cut_hi, 0, NULL),
			 SH_OK);
	/* FINISH again is harmless */
	assert_int_equal(migrate_code(ca,
				      SHOAL__V1__MIGRATE_ACTION__FINISH_SOURCE,
				      1, cut_lo, cut_hi, 0, NULL),
			 SH_OK);
	/* and the two together hold every live point once */
	int64_t na_ = np_count(ca, COLL, NULL), nb_ = np_count(cb, COLL, NULL);
	int64_t live = 0;
	for (uint64_t id = 0; id < NIDS; id++)
		live += acked[id].live;
	assert_int_equal(na_ + nb_, live);
}

/* An abort half way: the source serves the slots again, the target keeps
 * nothing of them. */
static void test_abort_leaves_no_trace(void **state)
{
	uint32_t lo = 0, hi = SH_SLOTS / 4 - 1;
	assert_int_equal(migrate_code(cb,
				      SHOAL__V1__MIGRATE_ACTION__PREPARE_IMPORT,
				      7, lo, hi, 1, NULL),
			 SH_OK);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__START, 7,
				      lo, hi, 2, nb.url),
			 SH_OK);
	wait_ready(ca, 7, lo, hi);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__FENCE, 7,
				      lo, hi, 0, NULL),
			 SH_OK);
	assert_true(held(cb, lo, hi) > 0);
	assert_int_equal(migrate_code(ca,
				      SHOAL__V1__MIGRATE_ACTION__ABORT_SOURCE,
				      7, lo, hi, 0, NULL),
			 SH_OK);
	assert_int_equal(migrate_code(cb,
				      SHOAL__V1__MIGRATE_ACTION__ABORT_IMPORT,
				      7, lo, hi, 0, NULL),
			 SH_OK);
	assert_int_equal(held(cb, lo, hi), 0);
	/* the source takes writes again */
	uint64_t id = 0;
	while (slot_of(id) > hi)
		id++;
	float v[DIM];
	uint64_t ver = ++next_version[id];
	vec_of(id, ver, v);
	assert_int_equal(np_upsert1(ca, COLL, id, v, DIM, NULL, ver, NULL),
			 SH_OK);
	/* and an import for slots not being imported is refused */
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__START, 8,
				      lo, hi, 2, nb.url),
			 SH_OK);
	double t0 = np_now_s();
	for (;;) {
		Shoal__V1__Response *rs = migrate(
		    ca, SHOAL__V1__MIGRATE_ACTION__STATUS, 8, lo, hi, 0, NULL);
		Shoal__V1__MigrateState st = rs->migrate->state;
		bool refused = st == SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED &&
			       strstr(rs->migrate->error, "not being imported");
		sh_wire_free_response(rs);
		if (refused)
			break;
		assert_true(np_now_s() - t0 < 30);
		np_sleep_ms(20);
	}
	assert_int_equal(held(cb, lo, hi), 0);
	assert_int_equal(migrate_code(ca,
				      SHOAL__V1__MIGRATE_ACTION__ABORT_SOURCE,
				      8, lo, hi, 0, NULL),
			 SH_OK);
}

/* A source killed mid-copy has no job when it comes back: FENCE says so,
 * and the copy starts again and completes. A fence survives a restart. */
static void test_source_restart_starts_over(void **state)
{
	uint32_t lo = SH_SLOTS / 2, hi = SH_SLOTS - 1;
	cut_lo = lo;
	cut_hi = hi;
	atomic_store(&switched, false);
	assert_int_equal(migrate_code(cb,
				      SHOAL__V1__MIGRATE_ACTION__PREPARE_IMPORT,
				      3, lo, hi, 1, NULL),
			 SH_OK);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__START, 3,
				      lo, hi, 2, nb.url),
			 SH_OK);
	np_sleep_ms(5);
	sh_rpc_close(ca);
	np_stop(&na, SIGKILL);
	start_node(&na, dir_a);
	dial(&ca, &na);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__FENCE, 3,
				      lo, hi, 0, NULL),
			 SH_ENOTFOUND);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__START, 3,
				      lo, hi, 2, nb.url),
			 SH_OK);
	wait_ready(ca, 3, lo, hi);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__FENCE, 3,
				      lo, hi, 0, NULL),
			 SH_OK);
	/* killed again after the fence: writes stay refused */
	sh_rpc_close(ca);
	np_stop(&na, SIGKILL);
	start_node(&na, dir_a);
	dial(&ca, &na);
	uint64_t id = 0;
	while (slot_of(id) < lo)
		id++;
	float v[DIM];
	vec_of(id, 99, v);
	assert_int_equal(np_upsert1(ca, COLL, id, v, DIM, NULL, 99, NULL),
			 SH_EMOVED);
	/* and the hand-off needs a drained copy again */
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__HANDOFF, 3,
				      lo, hi, 0, NULL),
			 SH_ENOTFOUND);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__START, 3,
				      lo, hi, 2, nb.url),
			 SH_OK);
	wait_ready(ca, 3, lo, hi);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__FENCE, 3,
				      lo, hi, 0, NULL),
			 SH_OK);
	assert_int_equal(migrate_code(ca, SHOAL__V1__MIGRATE_ACTION__HANDOFF, 3,
				      lo, hi, 0, NULL),
			 SH_OK);
	assert_int_equal(set_slots(ca, 2, 1, 0, lo - 1, false), SH_OK);
	assert_int_equal(set_slots(cb, 2, 2, lo, hi, false), SH_OK);
	atomic_store(&switched, true);
	check_acked();
}

int main(void)
{
	if (!getenv("SHOAL_NODE_BIN")) {
		fprintf(stderr, "SHOAL_NODE_BIN not set\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
		test_move_loses_no_acknowledged_write, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abort_leaves_no_trace, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_source_restart_starts_over,
					    setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
