/*
 * Online rebalancing end to end (issue #8): real shoal-node processes, a
 * shoal-router and shoalctl, with a continuous writer (upserts and deletes
 * with versions, every acknowledgement recorded), a continuous searcher
 * and exact probes, while the cluster grows 3 -> 4 nodes, drains back to
 * 3, aborts a move half way, and while the source, the target, the router
 * and the coordinator are killed at every step of a move.
 *
 * What must hold at the end (and does, or a test fails naming the id):
 *   - every acknowledged upsert is present with its latest acknowledged
 *     version, and no acknowledged delete is back;
 *   - no search result held an id twice, and every search either covered
 *     every slot or failed with an explicit error;
 *   - an exact probe for a point written once (and never since) found it,
 *     whenever the probe did not fail with an explicit error;
 *   - the nodes together hold each live point once, each on its owner.
 *
 * SHOAL_REBALANCE_ROUNDS (default 1) repeats the kill matrix for a longer
 * soak.
 */
#include <errno.h>
#include <fcntl.h>
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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "nodeproc.h"
#include "pid.h"
#include "slots.h"

#define DIM 8
#define NCHURN 6000	 /* ids written again and again */
#define NSTABLE 300	 /* ids written once, then only probed */
#define STABLE0 1000000u /* the first stable id */
#define NWRITERS 2
#define COLL "items"
#define MAXN 5

static char tmp[512];
static nodeproc nodes[MAXN], router, router2, etcd;
static char node_url[MAXN][512], router_url[512], router2_url[512];
static int nnodes;
static bool use_etcd;

static void vec_of(uint64_t id, uint64_t version, float *v)
{
	uint64_t x =
	    id * 0x9E3779B97F4A7C15ull + version * 0xBF58476D1CE4E5B9ull;
	for (int d = 0; d < DIM; d++) {
		x ^= x >> 31;
		x *= 0x94D049BB133111EBull;
		v[d] = (float)((x >> 40) % 10000) / 10000.0f;
	}
}

static uint16_t slot_of(uint64_t id)
{
	sh_pid p = sh_pid_u64(id);
	return sh_slot_of(&p);
}

/* ---- Processes --------------------------------------------------------------
 */

static void start_node(int i)
{
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/node%d", tmp, i + 1);
	const char *extra[] = {"--fsync", "never",
			       node_url[i][0] ? "--listen" : NULL, node_url[i],
			       NULL};
	assert_int_equal(np_start(&nodes[i], dir, extra), 0);
	snprintf(node_url[i], sizeof(node_url[i]), "%s", nodes[i].url);
}

/* A router (the second one, when which is 2) on its old address when it
 * had one; in etcd mode with the shared map. */
static void start_router_n(int which, const char *bootstrap)
{
	nodeproc *p = which == 2 ? &router2 : &router;
	char *url = which == 2 ? router2_url : router_url;
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/router%d", tmp, which);
	const char *args[16];
	int a = 0;
	args[a++] = "--listen";
	args[a++] = url[0] ? url : "tcp://127.0.0.1:0";
	args[a++] = "--data-dir";
	args[a++] = dir;
	args[a++] = "--write-timeout-ms";
	args[a++] = "5000";
	if (use_etcd) {
		args[a++] = "--etcd";
		args[a++] = etcd.url;
	}
	if (bootstrap) {
		args[a++] = "--nodes";
		args[a++] = bootstrap;
	}
	args[a] = NULL;
	assert_int_equal(np_spawn(p, "SHOAL_ROUTER_BIN", dir, args), 0);
	snprintf(url, 512, "%s", p->url);
}

static void start_router(const char *bootstrap)
{
	start_router_n(1, bootstrap);
}

/* The router shoalctl talks to. */
static const char *ctl_router = router_url;

/* Runs shoalctl with args (NULL-terminated) against the router; returns
 * its exit status (waits), or with background, 0 and *pid. */
static int shoalctl(pid_t *bg, const char *first, ...)
{
	const char *bin = getenv("SHOALCTL_BIN");
	assert_non_null(bin);
	const char *argv[32];
	int a = 0;
	argv[a++] = bin;
	argv[a++] = "--router";
	argv[a++] = ctl_router;
	argv[a++] = "--timeout";
	argv[a++] = "30000";
	va_list ap;
	va_start(ap, first);
	for (const char *s = first; s && a < 31; s = va_arg(ap, const char *))
		argv[a++] = s;
	va_end(ap);
	argv[a] = NULL;
	char log[600];
	snprintf(log, sizeof(log), "%s/shoalctl.log", tmp);
	pid_t parent = getpid();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	if (bg) {
		*bg = pid;
		return 0;
	}
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- The router, spoken to directly ---------------------------------------
 */

static sh_rpc *dial_url(const char *url, int timeout_ms)
{
	sh_rpc *c;
	char err[256];
	assert_int_equal(sh_rpc_dial(url, timeout_ms, 0, &c, err, sizeof(err)),
			 0);
	return c;
}

static sh_rpc *dial_router(int timeout_ms)
{
	return dial_url(router_url, timeout_ms);
}

/* One call; NULL when no answer (the caller decides). */
static Shoal__V1__Response *call(sh_rpc *c, Shoal__V1__Request *rq)
{
	Shoal__V1__Response *rs = NULL;
	char err[256];
	if (sh_rpc_call(c, rq, &rs, err, sizeof(err)) != SH_OK)
		return NULL;
	return rs;
}

/* The job as the router has it (or NULL when there is none, or no
 * answer). */
static Shoal__V1__Response *job_status(sh_rpc *c)
{
	Shoal__V1__MoveJobRequest jr = SHOAL__V1__MOVE_JOB_REQUEST__INIT;
	jr.action = SHOAL__V1__MOVE_JOB_ACTION__JOB_STATUS;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_MOVE_JOB;
	rq.move_job = &jr;
	return call(c, &rq);
}

static int job_simple(sh_rpc *c, Shoal__V1__MoveJobAction act, uint64_t move_id,
		      int from_state, char *msg, size_t cap)
{
	Shoal__V1__MoveJobRequest jr = SHOAL__V1__MOVE_JOB_REQUEST__INIT;
	jr.action = act;
	jr.move_id = move_id;
	jr.from_state = (Shoal__V1__MoveState)from_state;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_MOVE_JOB;
	rq.move_job = &jr;
	rq.timeout_ms = 60000;
	Shoal__V1__Response *rs = call(c, &rq);
	if (!rs) {
		snprintf(msg, cap, "no answer");
		return SH_EIO;
	}
	int code = rs->code;
	snprintf(msg, cap, "%s", rs->message ? rs->message : "");
	sh_wire_free_response(rs);
	return code;
}

/* The grace period of the jobs job_start puts in the map. */
static uint32_t job_grace_ms = 200;

/* Puts a job of one move in the map (the test coordinates it). */
static void job_start(sh_rpc *c, uint32_t first, uint32_t last, uint32_t from,
		      uint32_t to, uint64_t max_bps)
{
	Shoal__V1__Move m = SHOAL__V1__MOVE__INIT, *mp = &m;
	m.first = first;
	m.last = last;
	m.from = from;
	m.to = to;
	Shoal__V1__MoveJob j = SHOAL__V1__MOVE_JOB__INIT;
	j.description = "test";
	j.moves = &mp;
	j.n_moves = 1;
	j.max_bytes_per_sec = max_bps;
	j.grace_ms = job_grace_ms;
	Shoal__V1__MoveJobRequest jr = SHOAL__V1__MOVE_JOB_REQUEST__INIT;
	jr.action = SHOAL__V1__MOVE_JOB_ACTION__JOB_START;
	jr.job = &j;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_MOVE_JOB;
	rq.move_job = &jr;
	Shoal__V1__Response *rs = call(c, &rq);
	assert_non_null(rs);
	if (rs->code)
		fail_msg("starting a move: %s", rs->message);
	sh_wire_free_response(rs);
}

/* The state of the move in flight (0: none) and its id. */
static int current_move(sh_rpc *c, uint64_t *id, uint32_t *from, uint32_t *to,
			int *copy_state)
{
	Shoal__V1__Response *rs = job_status(c);
	if (!rs)
		return -1;
	int st = 0;
	const Shoal__V1__MoveJob *j = rs->code ? NULL : rs->move_job->job;
	for (size_t i = 0; j && i < j->n_moves && !st; i++) {
		const Shoal__V1__Move *m = j->moves[i];
		if (m->state != SHOAL__V1__MOVE_STATE__MOVE_DONE &&
		    m->state != SHOAL__V1__MOVE_STATE__MOVE_ABORTED) {
			st = m->state;
			*id = m->id;
			if (from)
				*from = m->from;
			if (to)
				*to = m->to;
			if (copy_state)
				*copy_state =
				    m->progress ? (int)m->progress->state : 0;
		}
	}
	sh_wire_free_response(rs);
	return st;
}

/* The owner of every slot in the router's map. */
static void map_owners(sh_rpc *c, uint32_t *owner)
{
	Shoal__V1__GetMapRequest gm = SHOAL__V1__GET_MAP_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	Shoal__V1__Response *rs = call(c, &rq);
	assert_non_null(rs);
	assert_int_equal(rs->code, 0);
	for (size_t i = 0; i < rs->get_map->n_slots; i++)
		for (uint32_t s = rs->get_map->slots[i]->first;
		     s <= rs->get_map->slots[i]->last; s++)
			owner[s] = rs->get_map->slots[i]->node_id;
	sh_wire_free_response(rs);
}

/* ---- The workload -----------------------------------------------------------
 */

struct idstate {
	uint64_t acked;	  /* version of the last acknowledged write, 0 none */
	bool acked_live;  /* it was an upsert */
	uint64_t unknown; /* version of a later write with no clear answer */
	bool unknown_live;
	uint64_t next; /* the next version to write */
};

static struct idstate ids[NCHURN];
static atomic_bool stop_load;
static atomic_uint_fast64_t n_acked, n_refused, n_unknown;
static atomic_uint_fast64_t n_search, n_search_err, n_dups, n_holes;
static atomic_uint_fast64_t n_probe, n_probe_err, n_probe_miss;
static char first_problem[512];
static pthread_mutex_t problem_mu = PTHREAD_MUTEX_INITIALIZER;

static void problem(const char *fmt, ...)
{
	pthread_mutex_lock(&problem_mu);
	if (!first_problem[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(first_problem, sizeof(first_problem), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&problem_mu);
}

/* One write of one point; the router's code (or SH_ETIMEDOUT when it did
 * not answer). */
static int write_point(sh_rpc *c, uint64_t id, uint64_t ver, bool del)
{
	float v[DIM];
	vec_of(id, ver, v);
	return np_write_point(c, COLL, id, del ? NULL : v, DIM, ver, 3000);
}

static void *writer(void *arg)
{
	int w = (int)(intptr_t)arg;
	sh_rpc *c = dial_router(8000);
	uint64_t seed = 0x1234567ull + (uint64_t)w;
	while (!atomic_load(&stop_load)) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t id = ((seed >> 33) % (NCHURN / NWRITERS)) * NWRITERS +
			      (uint64_t)w;
		bool del = ((seed >> 17) % 4) == 0;
		struct idstate *s = &ids[id];
		uint64_t ver = ++s->next;
		int code = write_point(c, id, ver, del);
		np_sleep_ms(1); /* a steady load, not a flood of the 2 cores */
		if (code == SH_OK) {
			s->acked = ver;
			s->acked_live = !del;
			atomic_fetch_add(&n_acked, 1);
		} else if (code == SH_EMOVED || code == SH_ENOCOLLECTION ||
			   code == SH_EINVAL) {
			atomic_fetch_add(&n_refused, 1); /* not applied */
		} else {
			/* no answer, or the owner failed: it may or may
			 * not have been applied */
			s->unknown = ver;
			s->unknown_live = !del;
			atomic_fetch_add(&n_unknown, 1);
			np_sleep_ms(20);
		}
	}
	sh_rpc_close(c);
	return NULL;
}

static Shoal__V1__Response *search(sh_rpc *c, const float *q, uint32_t k,
				   bool exact)
{
	Shoal__V1__Vector v = SHOAL__V1__VECTOR__INIT, *vp = &v;
	v.values = (float *)q;
	v.n_values = DIM;
	Shoal__V1__SearchRequest s = SHOAL__V1__SEARCH_REQUEST__INIT;
	s.collection = COLL;
	s.queries = &vp;
	s.n_queries = 1;
	s.k = k;
	s.ef = 64;
	s.exact = exact;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
	rq.search = &s;
	rq.timeout_ms = 3000;
	return call(c, &rq);
}

static bool covers_all(const Shoal__V1__SearchResult *r)
{
	return r->covered && r->covered->n_ranges == 1 &&
	       r->covered->ranges[0]->first == 0 &&
	       r->covered->ranges[0]->last == SH_SLOTS - 1;
}

static void *searcher(void *arg)
{
	(void)arg;
	sh_rpc *c = dial_router(8000);
	uint64_t seed = 99;
	while (!atomic_load(&stop_load)) {
		float q[DIM];
		seed = seed * 6364136223846793005ull + 1;
		vec_of(seed >> 20, 0, q);
		Shoal__V1__Response *rs = search(c, q, 20, false);
		atomic_fetch_add(&n_search, 1);
		if (!rs || rs->code) {
			atomic_fetch_add(&n_search_err, 1);
			sh_wire_free_response(rs);
			np_sleep_ms(10);
			continue;
		}
		if (!covers_all(rs->search)) {
			atomic_fetch_add(&n_holes, 1);
			problem("a search succeeded without covering every "
				"slot");
		}
		const Shoal__V1__QueryHits *h = rs->search->results[0];
		for (size_t i = 0; i < h->n_hits; i++)
			for (size_t j = 0; j < i; j++)
				if (h->hits[i]->id->num ==
				    h->hits[j]->id->num) {
					atomic_fetch_add(&n_dups, 1);
					problem("id %llu returned twice by one "
						"search",
						(unsigned long long)h->hits[i]
						    ->id->num);
				}
		sh_wire_free_response(rs);
		np_sleep_ms(3);
	}
	sh_rpc_close(c);
	return NULL;
}

/* Exact probes: a stable point's own vector finds it first. */
static void *prober(void *arg)
{
	(void)arg;
	sh_rpc *c = dial_router(8000);
	uint64_t i = 0;
	while (!atomic_load(&stop_load)) {
		uint64_t id = STABLE0 + (i++ % NSTABLE);
		float q[DIM];
		vec_of(id, 1, q);
		Shoal__V1__Response *rs = search(c, q, 1, true);
		atomic_fetch_add(&n_probe, 1);
		if (!rs || rs->code) {
			atomic_fetch_add(&n_probe_err, 1);
			sh_wire_free_response(rs);
			np_sleep_ms(10);
			continue;
		}
		const Shoal__V1__QueryHits *h = rs->search->results[0];
		if (h->n_hits < 1 || h->hits[0]->id->num != id ||
		    h->hits[0]->distance > 1e-6f) {
			atomic_fetch_add(&n_probe_miss, 1);
			problem("an exact probe for id %llu (slot %u) found %s",
				(unsigned long long)id, slot_of(id),
				h->n_hits ? "another point" : "nothing");
		}
		sh_wire_free_response(rs);
		np_sleep_ms(5);
	}
	sh_rpc_close(c);
	return NULL;
}

/* Points written for the first time just before a fence, in a slot that
 * saw no write during the copy: each must survive its move (or abort). */
#define LATE0 2000000u
static uint64_t late[256];
static size_t nlate;

/* A fresh id whose slot lies in first..last, written and acknowledged. */
static void write_late(sh_rpc *c, uint32_t first, uint32_t last)
{
	static uint64_t next = LATE0;
	uint64_t id = next;
	while (slot_of(id) < first || slot_of(id) > last)
		id++;
	next = id + 1;
	double t0 = np_now_s();
	while (write_point(c, id, 1, false) != SH_OK) {
		assert_true(np_now_s() - t0 < 30);
		np_sleep_ms(20);
	}
	assert_true(nlate < 256);
	late[nlate++] = id;
}

static void check_late(void)
{
	sh_rpc *c = dial_router(30000);
	for (size_t i = 0; i < nlate; i++) {
		Shoal__V1__PointId pid = SHOAL__V1__POINT_ID__INIT, *pp = &pid;
		pid.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		pid.num = late[i];
		Shoal__V1__GetRequest g = SHOAL__V1__GET_REQUEST__INIT;
		g.collection = COLL;
		g.ids = &pp;
		g.n_ids = 1;
		Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
		rq.op_case = SHOAL__V1__REQUEST__OP_GET;
		rq.get = &g;
		Shoal__V1__Response *rs = call(c, &rq);
		assert_non_null(rs);
		assert_int_equal(rs->code, 0);
		if (rs->get->n_points != 1)
			fail_msg("id %llu, written just before its slot's "
				 "fence, is lost",
				 (unsigned long long)late[i]);
		sh_wire_free_response(rs);
	}
	sh_rpc_close(c);
}

static pthread_t threads[NWRITERS + 2];
static double t_start;

static void load_start(void)
{
	t_start = np_now_s();
	atomic_store(&n_acked, 0);
	atomic_store(&n_refused, 0);
	atomic_store(&n_unknown, 0);
	atomic_store(&n_search, 0);
	atomic_store(&n_search_err, 0);
	atomic_store(&n_probe, 0);
	atomic_store(&n_probe_err, 0);
	atomic_store(&stop_load, false);
	for (int w = 0; w < NWRITERS; w++)
		assert_int_equal(pthread_create(&threads[w], NULL, writer,
						(void *)(intptr_t)w),
				 0);
	assert_int_equal(
	    pthread_create(&threads[NWRITERS], NULL, searcher, NULL), 0);
	assert_int_equal(
	    pthread_create(&threads[NWRITERS + 1], NULL, prober, NULL), 0);
}

static void load_stop(void)
{
	atomic_store(&stop_load, true);
	for (int t = 0; t < NWRITERS + 2; t++)
		pthread_join(threads[t], NULL);
}

/* ---- Checks
 * ------------------------------------------------------------------- */

/* The final state of every id, read through the router, against the
 * acknowledgements. */
static void check_final_state(void)
{
	sh_rpc *c = dial_router(30000);
	for (uint64_t base = 0; base < NCHURN + NSTABLE; base += 500) {
		Shoal__V1__PointId pid[500], *pp[500];
		size_t n = 0;
		for (uint64_t k = base; k < base + 500 && k < NCHURN + NSTABLE;
		     k++) {
			uint64_t id = k < NCHURN ? k : STABLE0 + (k - NCHURN);
			shoal__v1__point_id__init(&pid[n]);
			pid[n].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
			pid[n].num = id;
			pp[n] = &pid[n];
			n++;
		}
		Shoal__V1__GetRequest g = SHOAL__V1__GET_REQUEST__INIT;
		g.collection = COLL;
		g.ids = pp;
		g.n_ids = n;
		g.with_vector = 1;
		Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
		rq.op_case = SHOAL__V1__REQUEST__OP_GET;
		rq.get = &g;
		rq.timeout_ms = 20000;
		Shoal__V1__Response *rs = call(c, &rq);
		assert_non_null(rs);
		if (rs->code)
			fail_msg("final get: %s", rs->message);
		size_t j = 0;
		for (size_t i = 0; i < n; i++) {
			uint64_t id = pid[i].num;
			const Shoal__V1__Point *p = NULL;
			if (j < rs->get->n_points &&
			    rs->get->points[j]->id->num == id)
				p = rs->get->points[j++];
			if (id >= STABLE0) {
				if (!p || p->version != 1)
					fail_msg(
					    "stable id %llu (slot %u) is "
					    "%s",
					    (unsigned long long)id, slot_of(id),
					    p ? "at another version" : "lost");
				continue;
			}
			const struct idstate *s = &ids[id];
			bool ok_acked =
			    s->acked_live ? p && p->version == s->acked : !p;
			bool ok_unknown =
			    s->unknown > s->acked &&
			    (s->unknown_live ? p && p->version == s->unknown
					     : !p);
			if (ok_acked || ok_unknown)
				continue;
			fail_msg("id %llu (slot %u): acknowledged %s v%llu%s, "
				 "found %s v%llu",
				 (unsigned long long)id, slot_of(id),
				 s->acked_live ? "upsert" : "delete",
				 (unsigned long long)s->acked,
				 s->unknown > s->acked ? " (a later write's "
							 "outcome unknown)"
						       : "",
				 p ? "live" : "absent",
				 (unsigned long long)(p ? p->version : 0));
		}
		for (size_t i = 0; i < rs->get->n_points; i++) {
			float v[DIM];
			const Shoal__V1__Point *p = rs->get->points[i];
			vec_of(p->id->num, p->version, v);
			assert_int_equal(p->n_vector, DIM);
			for (int d = 0; d < DIM; d++)
				assert_true(p->vector[d] == v[d]);
		}
		sh_wire_free_response(rs);
	}
	sh_rpc_close(c);
}

/* Each node holds exactly the live points of the slots it owns: no copy is
 * left behind, nothing is held twice. */
static void check_nodes(void)
{
	sh_rpc *c = dial_router(30000);
	uint32_t owner[SH_SLOTS];
	map_owners(c, owner);
	sh_rpc_close(c);
	uint64_t held = 0;
	for (int i = 0; i < nnodes; i++) {
		if (nodes[i].pid <= 0)
			continue;
		sh_rpc *nc;
		char err[256];
		assert_int_equal(
		    sh_rpc_dial(node_url[i], 10000, 0, &nc, err, sizeof(err)),
		    0);
		Shoal__V1__StatsRequest sr = SHOAL__V1__STATS_REQUEST__INIT;
		sr.with_slot_counts = 1;
		Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
		rq.op_case = SHOAL__V1__REQUEST__OP_STATS;
		rq.stats = &sr;
		Shoal__V1__Response *rs = call(nc, &rq);
		assert_non_null(rs);
		assert_int_equal(rs->code, 0);
		for (size_t k = 0; k < rs->stats->n_slot_counts; k++) {
			const Shoal__V1__SlotCount *sc =
			    rs->stats->slot_counts[k];
			if (owner[sc->slot] != (uint32_t)(i + 1))
				fail_msg("node %d holds %llu points of slot "
					 "%u, which node %u owns",
					 i + 1, (unsigned long long)sc->points,
					 sc->slot, owner[sc->slot]);
			held += sc->points;
		}
		sh_wire_free_response(rs);
		sh_rpc_close(nc);
	}
	/* the router's count agrees with what the nodes hold */
	sh_rpc *rc_ = dial_router(30000);
	int64_t cnt = np_count(rc_, COLL, NULL);
	sh_rpc_close(rc_);
	assert_int_equal((uint64_t)cnt, held);
}

static void report(const char *what)
{
	print_message(
	    "%s (%.1f s): writes %llu acknowledged, %llu refused, %llu "
	    "unknown; searches %llu (%llu failed explicitly); "
	    "probes %llu (%llu failed explicitly)\n",
	    what, np_now_s() - t_start,
	    (unsigned long long)atomic_load(&n_acked),
	    (unsigned long long)atomic_load(&n_refused),
	    (unsigned long long)atomic_load(&n_unknown),
	    (unsigned long long)atomic_load(&n_search),
	    (unsigned long long)atomic_load(&n_search_err),
	    (unsigned long long)atomic_load(&n_probe),
	    (unsigned long long)atomic_load(&n_probe_err));
	if (first_problem[0])
		fail_msg("%s", first_problem);
	assert_int_equal(atomic_load(&n_dups), 0);
	assert_int_equal(atomic_load(&n_holes), 0);
	assert_int_equal(atomic_load(&n_probe_miss), 0);
	/* the load really ran */
	assert_true(atomic_load(&n_acked) > 100);
	assert_true(atomic_load(&n_search) > 20);
}

/* ---- Fixture
 * ------------------------------------------------------------------ */

static int start_cluster(void)
{
	memset(node_url, 0, sizeof(node_url));
	memset(router_url, 0, sizeof(router_url));
	memset(router2_url, 0, sizeof(router2_url));
	memset(ids, 0, sizeof(ids));
	first_problem[0] = 0;
	nlate = 0;
	ctl_router = router_url;
	nnodes = 4;
	for (int i = 0; i < nnodes; i++)
		start_node(i);
	char boot[1600];
	snprintf(boot, sizeof(boot), "%s,%s,%s", node_url[0], node_url[1],
		 node_url[2]);
	start_router(boot);
	if (use_etcd) /* a second router: the map from etcd */
		start_router_n(2, NULL);
	sh_rpc *c = dial_router(30000);
	assert_int_equal(np_create(c, COLL, DIM, SHOAL__V1__METRIC__L2, NULL),
			 0);
	for (uint64_t k = 0; k < NCHURN + NSTABLE; k++) {
		uint64_t id = k < NCHURN ? k : STABLE0 + (k - NCHURN);
		float v[DIM];
		vec_of(id, 1, v);
		assert_int_equal(np_upsert1(c, COLL, id, v, DIM, NULL, 1, NULL),
				 0);
		if (k < NCHURN) {
			ids[k].acked = 1;
			ids[k].acked_live = true;
			ids[k].next = 1;
		}
	}
	sh_rpc_close(c);
	return 0;
}

static int setup(void **state)
{
	use_etcd = false;
	np_tmpdir(tmp, sizeof(tmp));
	return start_cluster();
}

static int setup_etcd(void **state)
{
	use_etcd = true;
	np_tmpdir(tmp, sizeof(tmp));
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/etcd", tmp);
	mkdir(dir, 0755);
	if (np_start_etcd(&etcd, dir) != 0) {
		print_message("no etcd ($SHOAL_ETCD_BIN): skipped\n");
		return 0;
	}
	return start_cluster();
}

static int teardown(void **state)
{
	np_stop(&router, SIGTERM);
	np_stop(&router2, SIGTERM);
	for (int i = 0; i < MAXN; i++)
		np_stop(&nodes[i], SIGTERM);
	np_stop(&etcd, SIGTERM);
	np_rmrf(tmp);
	return 0;
}

/* ---- Tests
 * -------------------------------------------------------------------- */

/* Grow 3 -> 4, drain back to 3 and remove the fourth, abort a move half
 * way, all under load. */
static void test_grow_drain_abort_under_load(void **state)
{
	load_start();
	np_sleep_ms(300);
	assert_int_equal(shoalctl(NULL, "add-node", node_url[3], NULL), 0);
	print_message("  %5.1f s: node 4 added\n", np_now_s() - t_start);
	/* throttled, so that writes race the copy */
	assert_int_equal(shoalctl(NULL, "rebalance", "--grace-ms", "300",
				  "--max-rate", "300K", NULL),
			 0);
	print_message("  %5.1f s: rebalanced\n", np_now_s() - t_start);
	sh_rpc *c = dial_router(30000);
	uint32_t owner[SH_SLOTS];
	map_owners(c, owner);
	uint32_t on4 = 0;
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		on4 += owner[s] == 4;
	assert_true(on4 > SH_SLOTS / 8); /* node 4 took its share */
	np_sleep_ms(200);
	assert_int_equal(shoalctl(NULL, "drain", "4", "--grace-ms", "300",
				  "--max-rate", "300K", NULL),
			 0);
	map_owners(c, owner);
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		assert_int_not_equal(owner[s], 4);
	print_message("  %5.1f s: node 4 drained\n", np_now_s() - t_start);
	assert_int_equal(shoalctl(NULL, "remove-node", "4", NULL), 0);
	/* half way: a throttled move, its coordinator killed while it
	 * copies, then aborted */
	pid_t bg;
	uint32_t from_owner = owner[0];
	uint32_t to = from_owner == 1 ? 2 : 1;
	char to_s[8];
	snprintf(to_s, sizeof(to_s), "%u", to);
	shoalctl(&bg, "move-slots", "0-4095", "--to", to_s, "--max-rate", "20K",
		 NULL);
	double t0 = np_now_s();
	uint64_t mid;
	int st;
	while ((st = current_move(c, &mid, NULL, NULL, NULL)) !=
	       SHOAL__V1__MOVE_STATE__MOVE_COPYING) {
		assert_true(np_now_s() - t0 < 30);
		np_sleep_ms(20);
	}
	np_sleep_ms(200);
	kill(bg, SIGKILL);
	waitpid(bg, NULL, 0);
	print_message("  %5.1f s: coordinator killed while copying\n",
		      np_now_s() - t_start);
	assert_int_equal(shoalctl(NULL, "abort", NULL), 0);
	print_message("  %5.1f s: aborted\n", np_now_s() - t_start);
	assert_int_equal(current_move(c, &mid, NULL, NULL, NULL), 0);
	map_owners(c, owner);
	assert_int_equal(owner[0], from_owner); /* nothing moved */
	sh_rpc_close(c);
	np_sleep_ms(300);
	load_stop();
	report("grow, drain, abort");
	check_final_state();
	nnodes = 3; /* node 4 left the cluster: its copies are dropped */
	check_nodes();
	nnodes = 4;
	/* the node removed holds nothing any more */
	sh_rpc *nc;
	char err[256];
	assert_int_equal(
	    sh_rpc_dial(node_url[3], 10000, 0, &nc, err, sizeof(err)), 0);
	assert_int_equal(np_count(nc, COLL, NULL), 0);
	sh_rpc_close(nc);
}

enum victim { V_SOURCE, V_TARGET, V_ROUTER, V_COORD, NVICTIMS };
static const char *const victim_names[] = {"source", "target", "router",
					   "coordinator"};

static int node_index(uint32_t id)
{
	return (int)id - 1;
}

/* Advances move `id` until it reaches state `until` (or finishes). The
 * test is the coordinator here, so that it knows the step exactly. */
static void advance_to(sh_rpc *c, int until)
{
	double t0 = np_now_s();
	for (;;) {
		uint64_t id;
		int copy;
		int st = current_move(c, &id, NULL, NULL, &copy);
		if (st < 0) {
			np_sleep_ms(50); /* the router is coming back */
			assert_true(np_now_s() - t0 < 120);
			continue;
		}
		if (st == 0 || st >= until)
			return;
		char msg[512];
		int rc = job_simple(c, SHOAL__V1__MOVE_JOB_ACTION__JOB_ADVANCE,
				    id, st, msg, sizeof(msg));
		if (rc && rc != SH_EBUSY && rc != SH_ESTALE)
			print_message("  advance from %d: %s (%s)\n", st, msg,
				      sh_errname(rc));
		if (rc)
			np_sleep_ms(50);
		assert_true(np_now_s() - t0 < 120);
	}
}

/* SIGKILLs the victim and starts it again. */
static void kill_and_restart(enum victim v, uint32_t from, uint32_t to,
			     sh_rpc **c)
{
	switch (v) {
	case V_SOURCE:
	case V_TARGET: {
		int i = node_index(v == V_SOURCE ? from : to);
		np_stop(&nodes[i], SIGKILL);
		np_sleep_ms(50);
		start_node(i);
		break;
	}
	case V_ROUTER:
		sh_rpc_close(*c);
		np_stop(&router, SIGKILL);
		start_router(NULL);
		*c = dial_router(30000);
		break;
	default:
		break; /* the coordinator: the test simply stops advancing */
	}
}

/* Every (step, victim): a move of a few slots, the victim killed when the
 * move has reached the step, then resumed or aborted (alternately), all
 * under load. The special cases: a slot written for the first time just
 * before the fence; a point written while its slot is copied (the
 * writers hammer every slot); a source restarted mid-copy (throttled). */
static void test_kill_at_every_step(void **state)
{
	const char *r = getenv("SHOAL_REBALANCE_ROUNDS");
	int rounds = r ? atoi(r) : 1;
	load_start();
	sh_rpc *c = dial_router(30000);
	int n = 0;
	for (int round = 0; round < rounds; round++)
		for (int step = SHOAL__V1__MOVE_STATE__MOVE_PENDING;
		     step <= SHOAL__V1__MOVE_STATE__MOVE_SWITCHED; step++)
			for (int v = 0; v < NVICTIMS; v++, n++) {
				uint32_t owner[SH_SLOTS];
				map_owners(c, owner);
				/* 512 slots of one node to the next */
				uint32_t first = (uint32_t)(n % 32) * 512;
				uint32_t last = first + 511;
				uint32_t from = owner[first];
				uint32_t to = from % 3 + 1;
				for (uint32_t x = first; x <= last; x++)
					if (owner[x] != from)
						last = x - 1; /* one owner */
				/* the source copies slowly when it is the
				 * one killed mid-copy */
				bool slow =
				    step ==
					SHOAL__V1__MOVE_STATE__MOVE_COPYING &&
				    v == V_SOURCE;
				job_start(c, first, last, from, to,
					  slow ? 20000 : 100000);
				uint64_t id;
				if (step >=
				    SHOAL__V1__MOVE_STATE__MOVE_FENCED) {
					/* copied; then a first write to a
					 * fresh point, then the fence */
					advance_to(
					    c,
					    SHOAL__V1__MOVE_STATE__MOVE_COPYING);
					int copy = 0;
					double t0 = np_now_s();
					while (
					    current_move(c, &id, NULL, NULL,
							 &copy) ==
						SHOAL__V1__MOVE_STATE__MOVE_COPYING &&
					    copy !=
						SHOAL__V1__MIGRATE_STATE__MIGRATE_READY) {
						assert_true(np_now_s() - t0 <
							    60);
						np_sleep_ms(10);
					}
					write_late(c, first, last);
				}
				advance_to(c, step);
				int at = current_move(c, &id, NULL, NULL, NULL);
				kill_and_restart((enum victim)v, from, to, &c);
				bool resume =
				    n % 2 == 0 ||
				    at >= SHOAL__V1__MOVE_STATE__MOVE_SWITCHED;
				print_message("  %5.1f s: move %u-%u %u->%u at "
					      "%d, %s killed: %s\n",
					      np_now_s() - t_start, first, last,
					      from, to, at, victim_names[v],
					      resume ? "resume" : "abort");
				if (v == V_COORD) {
					/* a new coordinator: shoalctl */
					int ex = shoalctl(
					    NULL, resume ? "resume" : "abort",
					    NULL);
					assert_int_equal(ex, 0);
				} else if (resume) {
					advance_to(
					    c,
					    SHOAL__V1__MOVE_STATE__MOVE_DONE);
				} else {
					char msg[512];
					int rc;
					double t1 = np_now_s();
					while ((
					    rc = job_simple(
						c,
						SHOAL__V1__MOVE_JOB_ACTION__JOB_ABORT,
						0, 0, msg, sizeof(msg)))) {
						print_message("  abort: %s\n",
							      msg);
						assert_true(np_now_s() - t1 <
							    60);
						np_sleep_ms(200);
					}
				}
				assert_int_equal(
				    current_move(c, &id, NULL, NULL, NULL), 0);
			}
	sh_rpc_close(c);
	np_sleep_ms(200);
	load_stop();
	report("kills at every step");
	check_final_state();
	check_late();
	nnodes = 3;
	check_nodes();
	nnodes = 4;
}

/* The map of a router (its epoch, and each slot's owner). */
static uint64_t map_of(const char *url, uint32_t *owner)
{
	sh_rpc *c = dial_url(url, 10000);
	Shoal__V1__GetMapRequest gm = SHOAL__V1__GET_MAP_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	Shoal__V1__Response *rs = call(c, &rq);
	assert_non_null(rs);
	assert_int_equal(rs->code, 0);
	uint64_t epoch = rs->get_map->epoch;
	for (size_t i = 0; owner && i < rs->get_map->n_slots; i++)
		for (uint32_t x = rs->get_map->slots[i]->first;
		     x <= rs->get_map->slots[i]->last; x++)
			owner[x] = rs->get_map->slots[i]->node_id;
	sh_wire_free_response(rs);
	sh_rpc_close(c);
	return epoch;
}

/* etcd mode: two routers share one map. A move run through one is seen
 * by the other; two rebalances started at once, one through each: one
 * wins, the other fails with a clear error; a job started through one
 * router is resumed through the other after the first is killed. */
static void test_two_routers_share_the_map(void **state)
{
	if (!etcd.pid)
		skip();
	load_start();
	/* the writer and searcher use router 1; shoalctl runs on router 2 */
	ctl_router = router2_url;
	assert_int_equal(shoalctl(NULL, "move-slots", "0-2047", "--to", "3",
				  "--grace-ms", "200", NULL),
			 0);
	uint32_t o1[SH_SLOTS], o2[SH_SLOTS];
	double t0 = np_now_s();
	while (map_of(router_url, o1) != map_of(router2_url, o2)) {
		assert_true(np_now_s() - t0 < 10); /* the watch */
		np_sleep_ms(20);
	}
	map_of(router_url, o1);
	assert_int_equal(o1[0], 3);
	assert_int_equal(o1[2047], 3);
	assert_memory_equal(o1, o2, sizeof(o1));
	/* node 4 joins; then two rebalances at once, one per router */
	assert_int_equal(shoalctl(NULL, "add-node", node_url[3], NULL), 0);
	pid_t a, b;
	ctl_router = router_url;
	shoalctl(&a, "rebalance", "--max-rate", "100K", "--grace-ms", "200",
		 NULL);
	ctl_router = router2_url;
	shoalctl(&b, "rebalance", "--max-rate", "100K", "--grace-ms", "200",
		 NULL);
	int sa, sb;
	waitpid(a, &sa, 0);
	waitpid(b, &sb, 0);
	sa = WIFEXITED(sa) ? WEXITSTATUS(sa) : 128;
	sb = WIFEXITED(sb) ? WEXITSTATUS(sb) : 128;
	print_message("  two rebalances at once: exit %d and %d\n", sa, sb);
	assert_true((sa == 0) != (sb == 0));
	char log[600];
	snprintf(log, sizeof(log), "%s/shoalctl.log", tmp);
	FILE *f = fopen(log, "r");
	assert_non_null(f);
	static char text[1 << 16];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = 0;
	fclose(f);
	assert_true(strstr(text, "is in flight") ||
		    strstr(text, "changed meanwhile"));
	/* a job started through router 1, whose router dies: router 2
	 * resumes it */
	map_of(router_url, o1);
	uint32_t from = o1[SH_SLOTS - 1], to = from == 1 ? 2 : 1;
	sh_rpc *c = dial_router(30000);
	job_start(c, SH_SLOTS - 1024, SH_SLOTS - 1, from, to, 0);
	advance_to(c, SHOAL__V1__MOVE_STATE__MOVE_COPYING);
	sh_rpc_close(c);
	np_stop(&router, SIGKILL);
	assert_int_equal(shoalctl(NULL, "resume", NULL), 0);
	start_router(NULL); /* it comes back with the map from etcd */
	t0 = np_now_s();
	while (map_of(router_url, o1) != map_of(router2_url, o2)) {
		assert_true(np_now_s() - t0 < 10);
		np_sleep_ms(20);
	}
	assert_int_equal(o1[SH_SLOTS - 1], to);
	np_sleep_ms(200);
	load_stop();
	report("two routers");
	check_final_state();
	check_nodes();
}

/* Regression (jepsen, clock nemesis review): the grace period between a
 * switch and the drop of the source's copy was timed on the wall clock,
 * so a router whose clock jumped forward let the source drop its copy at
 * once, under searches still in flight there. The router now times it on
 * its monotonic clock: after a jump of +600 s the move stays switched
 * until the grace period has really passed. */
static void test_wall_clock_jump_does_not_cut_the_grace_short(void **state)
{
	const char *lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
	if (access(lib, R_OK) != 0) {
		print_message("no libfaketime (Debian's faketime): skipped\n");
		return;
	}
	char clock[600];
	snprintf(clock, sizeof(clock), "%s/router.faketime", tmp);
	FILE *f = fopen(clock, "w");
	assert_non_null(f);
	fputs("+0\n", f);
	fclose(f);
	/* the router again, on a clock of its own */
	np_stop(&router, SIGTERM);
	/* (an ASan build's router must accept a preload ahead of ASan) */
	char asan_was[512], asan[600];
	snprintf(asan_was, sizeof(asan_was), "%s",
		 getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "");
	snprintf(asan, sizeof(asan), "%s%sverify_asan_link_order=0", asan_was,
		 asan_was[0] ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);
	setenv("LD_PRELOAD", lib, 1);
	setenv("FAKETIME_TIMESTAMP_FILE", clock, 1);
	setenv("FAKETIME_NO_CACHE", "1", 1);
	setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1", 1);
	start_router(NULL);
	unsetenv("LD_PRELOAD");
	unsetenv("FAKETIME_TIMESTAMP_FILE");
	unsetenv("FAKETIME_NO_CACHE");
	unsetenv("FAKETIME_DONT_FAKE_MONOTONIC");
	setenv("ASAN_OPTIONS", asan_was, 1);

	uint32_t owner[SH_SLOTS];
	sh_rpc *c = dial_router(30000);
	map_owners(c, owner);
	uint32_t from = owner[0], to = from == 1 ? 2 : 1;
	job_grace_ms = 4000;
	job_start(c, 0, 63, from, to, 0);
	job_grace_ms = 200;
	advance_to(c, SHOAL__V1__MOVE_STATE__MOVE_HANDED_OFF);
	/* Timed from before the step that switches: the router starts the
	 * grace inside that step, then tells both nodes and answers, and a
	 * loaded machine can take a second over that (the time taken after
	 * the answer once made this test see a grace "cut short"). */
	double switched = np_now_s();
	advance_to(c, SHOAL__V1__MOVE_STATE__MOVE_SWITCHED);
	f = fopen(clock, "w");
	assert_non_null(f);
	fputs("+600s\n", f);
	fclose(f);
	uint64_t id = 0;
	assert_int_equal(current_move(c, &id, NULL, NULL, NULL),
			 SHOAL__V1__MOVE_STATE__MOVE_SWITCHED);
	char msg[512];
	int rc =
	    job_simple(c, SHOAL__V1__MOVE_JOB_ACTION__JOB_ADVANCE, id,
		       SHOAL__V1__MOVE_STATE__MOVE_SWITCHED, msg, sizeof(msg));
	/* (a step slower than the grace itself proves nothing: say so) */
	if (np_now_s() - switched < 3.5) {
		assert_int_equal(rc, SH_EBUSY);
		assert_non_null(strstr(msg, "grace period"));
		assert_int_equal(current_move(c, &id, NULL, NULL, NULL),
				 SHOAL__V1__MOVE_STATE__MOVE_SWITCHED);
	} else {
		print_message("  the step took over 3.5 s: not judged\n");
	}
	advance_to(c, SHOAL__V1__MOVE_STATE__MOVE_DONE);
	double done = np_now_s() - switched;
	print_message("  done %.2f s after the switching step began\n", done);
	assert_true(done >= 4.0);
	map_owners(c, owner);
	assert_int_equal(owner[0], to);
	sh_rpc_close(c);
}

int main(void)
{
	if (!getenv("SHOAL_NODE_BIN") || !getenv("SHOAL_ROUTER_BIN") ||
	    !getenv("SHOALCTL_BIN")) {
		fprintf(stderr, "SHOAL_NODE_BIN, SHOAL_ROUTER_BIN and "
				"SHOALCTL_BIN must be set\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_grow_drain_abort_under_load,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kill_at_every_step, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_two_routers_share_the_map,
					    setup_etcd, teardown),
	    cmocka_unit_test_setup_teardown(
		test_wall_clock_jump_does_not_cut_the_grace_short, setup,
		teardown),
	};
	/* SHOAL_TEST_ONLY=test_name (a glob) runs just that one */
	if (getenv("SHOAL_TEST_ONLY"))
		cmocka_set_test_filter(getenv("SHOAL_TEST_ONLY"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
