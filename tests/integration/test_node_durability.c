/* Durability under kill -9: a client upserts and deletes continuously
 * (single points and batches, each write with a newer version) while a
 * killer thread sends SIGKILL to shoal-node at a random moment. After each
 * restart every acknowledged upsert must be there with its latest
 * acknowledged vector and payload, every acknowledged delete must stay
 * deleted, and the one write in flight at the kill must have been applied
 * whole or not at all.
 *
 * SHOAL_DURABILITY_KILLS sets the number of kills (default 20); the seed is
 * printed, and SHOAL_DURABILITY_SEED replays one run. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "nodeproc.h"

#define DIM 8
#define IDS 300
#define MAXB 16

struct state {
	bool live;
	uint64_t version; /* 0: never written */
};

static struct state acked[IDS];

/* The write in flight when the node died. */
static struct {
	bool any, is_delete;
	size_t n;
	uint64_t ids[MAXB], version;
} pending;

static uint64_t rng;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void vec_of(uint64_t id, uint64_t version, float *v)
{
	for (int j = 0; j < DIM; j++)
		v[j] =
		    (float)sin((double)(id * 13 + version * 7 + (uint64_t)j));
}

static char tmp[512], ddir[600];
static nodeproc node;

struct killer {
	pthread_t t;
	int delay_ms;
	pid_t pid;
};

static void *killer_main(void *arg)
{
	struct killer *k = arg;
	struct timespec ts = {k->delay_ms / 1000,
			      (long)(k->delay_ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
	kill(k->pid, SIGKILL);
	return NULL;
}

/* One write; returns true when acknowledged, false when the connection
 * failed (the node died). Any other outcome fails the test. */
static bool write_op(sh_rpc *c, bool del, const uint64_t *ids, size_t n,
		     uint64_t version)
{
	Shoal__V1__PointId pid[MAXB];
	Shoal__V1__Point pts[MAXB], *pp[MAXB];
	Shoal__V1__PointRef refs[MAXB], *pr[MAXB];
	float vecs[MAXB][DIM];
	char payloads[MAXB][64];
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	Shoal__V1__UpsertRequest up = SHOAL__V1__UPSERT_REQUEST__INIT;
	Shoal__V1__DeleteRequest d = SHOAL__V1__DELETE_REQUEST__INIT;
	Shoal__V1__PointRefs prs = SHOAL__V1__POINT_REFS__INIT;
	for (size_t i = 0; i < n; i++) {
		shoal__v1__point_id__init(&pid[i]);
		pid[i].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		pid[i].num = ids[i];
		if (del) {
			shoal__v1__point_ref__init(&refs[i]);
			refs[i].id = &pid[i];
			refs[i].version = version;
			pr[i] = &refs[i];
		} else {
			shoal__v1__point__init(&pts[i]);
			pts[i].id = &pid[i];
			vec_of(ids[i], version, vecs[i]);
			pts[i].vector = vecs[i];
			pts[i].n_vector = DIM;
			snprintf(payloads[i], sizeof(payloads[i]),
				 "{\"id\":%llu,\"v\":%llu}",
				 (unsigned long long)ids[i],
				 (unsigned long long)version);
			pts[i].payload_json = payloads[i];
			pts[i].version = version;
			pp[i] = &pts[i];
		}
	}
	if (del) {
		prs.refs = pr;
		prs.n_refs = n;
		d.collection = "d";
		d.selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS;
		d.ids = &prs;
		rq.op_case = SHOAL__V1__REQUEST__OP_DELETE;
		rq.delete_ = &d;
	} else {
		up.collection = "d";
		up.points = pp;
		up.n_points = n;
		rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
		rq.upsert = &up;
	}
	Shoal__V1__Response *rs = NULL;
	char err[256];
	int rc = sh_rpc_call(c, &rq, &rs, err, sizeof(err));
	if (rc == SH_ETIMEDOUT || rc == SH_EIO)
		return false;
	if (rc)
		fail_msg("rpc: %s", err);
	if (rs->code != 0)
		fail_msg("write refused: %s: %s", sh_errname((int)rs->code),
			 rs->message);
	Shoal__V1__WriteResult *w = del ? rs->delete_ : rs->upsert;
	assert_int_equal(w->n_statuses, n);
	for (size_t i = 0; i < n; i++) {
		int st = w->statuses[i]->code;
		assert_true(st == SH_OK || (del && st == SH_ENOTFOUND));
	}
	sh_wire_free_response(rs);
	return true;
}

static void apply(bool del, const uint64_t *ids, size_t n, uint64_t version)
{
	for (size_t i = 0; i < n; i++) {
		acked[ids[i]].live = !del;
		acked[ids[i]].version = version;
	}
}

/* Reads every id back and compares with the model; resolves the pending
 * write (all applied or none). */
static void verify(sh_rpc *c)
{
	Shoal__V1__PointId pid[IDS], *pp[IDS];
	for (size_t i = 0; i < IDS; i++) {
		shoal__v1__point_id__init(&pid[i]);
		pid[i].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		pid[i].num = i;
		pp[i] = &pid[i];
	}
	Shoal__V1__GetRequest g = SHOAL__V1__GET_REQUEST__INIT;
	g.collection = "d";
	g.ids = pp;
	g.n_ids = IDS;
	g.with_payload = 1;
	g.with_vector = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET;
	rq.get = &g;
	Shoal__V1__Response *rs = np_call(c, &rq);
	assert_int_equal(rs->code, 0);
	struct state seen[IDS];
	memset(seen, 0, sizeof(seen));
	for (size_t i = 0; i < rs->get->n_points; i++) {
		Shoal__V1__Point *p = rs->get->points[i];
		uint64_t id = p->id->num;
		assert_true(id < IDS);
		seen[id].live = true;
		seen[id].version = p->version;
		float v[DIM];
		vec_of(id, p->version, v);
		assert_int_equal(p->n_vector, DIM);
		assert_memory_equal(p->vector, v, sizeof(v));
		char want[64];
		snprintf(want, sizeof(want), "{\"id\":%llu,\"v\":%llu}",
			 (unsigned long long)id,
			 (unsigned long long)p->version);
		assert_string_equal(p->payload_json, want);
	}
	sh_wire_free_response(rs);

	/* the pending write: applied to all its ids or to none */
	int applied = -1;
	for (size_t i = 0; pending.any && i < pending.n; i++) {
		uint64_t id = pending.ids[i];
		bool as_new =
		    seen[id].live == !pending.is_delete &&
		    (pending.is_delete || seen[id].version == pending.version);
		bool as_old =
		    seen[id].live == acked[id].live &&
		    (!acked[id].live || seen[id].version == acked[id].version);
		if (as_new && !as_old) {
			if (applied == 0)
				fail_msg("write of version %llu applied in "
					 "part",
					 (unsigned long long)pending.version);
			applied = 1;
		} else if (as_old && !as_new) {
			if (applied == 1)
				fail_msg("write of version %llu applied in "
					 "part",
					 (unsigned long long)pending.version);
			applied = 0;
		} else if (!as_new && !as_old) {
			fail_msg("id %llu: neither its acknowledged state nor "
				 "the write in flight",
				 (unsigned long long)id);
		}
	}
	if (applied == 1)
		apply(pending.is_delete, pending.ids, pending.n,
		      pending.version);
	pending.any = false;
	for (size_t id = 0; id < IDS; id++) {
		if (acked[id].live != seen[id].live)
			fail_msg("id %zu: acknowledged %s (version %llu) but "
				 "%s after restart",
				 id, acked[id].live ? "upsert" : "delete",
				 (unsigned long long)acked[id].version,
				 seen[id].live ? "present" : "absent");
		if (acked[id].live)
			assert_int_equal(seen[id].version, acked[id].version);
	}
}

static void test_kill9_loop(void **state)
{
	const char *e = getenv("SHOAL_DURABILITY_KILLS");
	int kills = e ? atoi(e) : 20;
	e = getenv("SHOAL_DURABILITY_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
	printf("durability: %d kills, seed %llu\n", kills,
	       (unsigned long long)seed);
	rng = seed * 2654435761u + 1;
	uint64_t version = 1, acked_writes = 0;
	char err[256];
	for (int round = 0; round <= kills; round++) {
		assert_int_equal(np_start(&node, ddir, NULL), 0);
		sh_rpc *c;
		assert_int_equal(
		    sh_rpc_dial(node.url, 1000, 0, &c, err, sizeof(err)), 0);
		if (round == 0) {
			assert_int_equal(
			    np_create(c, "d", DIM, SHOAL__V1__METRIC__L2, NULL),
			    0);
		} else {
			verify(c);
		}
		if (round == kills) {
			sh_rpc_close(c);
			break;
		}
		struct killer k = {.delay_ms = 30 + (int)(next_rand() % 400),
				   .pid = node.pid};
		pthread_create(&k.t, NULL, killer_main, &k);
		for (;;) {
			bool del = next_rand() % 4 == 0;
			size_t n =
			    next_rand() % 3 == 0 ? 1 + next_rand() % MAXB : 1;
			uint64_t ids[MAXB];
			for (size_t i = 0; i < n; i++) {
			again:
				ids[i] = next_rand() % IDS;
				for (size_t j = 0; j < i; j++)
					if (ids[j] == ids[i])
						goto again;
			}
			uint64_t ver = version++;
			if (!write_op(c, del, ids, n, ver)) {
				pending.any = true;
				pending.is_delete = del;
				pending.n = n;
				memcpy(pending.ids, ids, n * sizeof(ids[0]));
				pending.version = ver;
				break;
			}
			apply(del, ids, n, ver);
			acked_writes++;
		}
		pthread_join(k.t, NULL);
		sh_rpc_close(c);
		np_stop(&node, SIGKILL);
	}
	printf("durability: %llu acknowledged writes checked over %d kills\n",
	       (unsigned long long)acked_writes, kills);
}

static int setup(void **state)
{
	np_tmpdir(tmp, sizeof(tmp));
	snprintf(ddir, sizeof(ddir), "%s/node", tmp);
	return 0;
}

static int teardown(void **state)
{
	np_stop(&node, SIGKILL);
	np_rmrf(tmp);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kill9_loop),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
