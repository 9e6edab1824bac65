/* Integration tests of shoal-router: three real shoal-node processes and a
 * router on free 127.0.0.1 ports, next to a single reference node holding
 * the same data. Routing of writes and gets by slot, exact searches equal
 * to the reference (ids and order), filters, scroll, count, stats, the
 * cluster map (get_map, add_node, persistence), coverage when a node is
 * down (an error by default, partial results when asked), routing after
 * a node restarts, and a node that stops answering being reconnected and
 * reported. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "error.h"
#include "nodeproc.h"
#include "pid.h"
#include "slots.h"

#define DIM 8
#define N 600
#define NN 3

static char tmp[512];
static nodeproc nodes[NN + 1], ref, router;
static sh_rpc *rc_, *refc;

static void vec_of(uint64_t i, float *v)
{
	for (int j = 0; j < DIM; j++)
		v[j] = (float)sin((double)(i * 31 + (uint64_t)j * 7));
}

static void payload_of(uint64_t i, char *buf, size_t cap)
{
	snprintf(buf, cap, "{\"cat\":\"c%llu\",\"price\":%llu}",
		 (unsigned long long)(i % 5), (unsigned long long)(i % 100));
}

static void start_router(void)
{
	char dir[600], list[2048] = "";
	snprintf(dir, sizeof(dir), "%s/router", tmp);
	for (int i = 0; i < NN; i++) {
		strcat(list, i ? "," : "");
		strcat(list, nodes[i].url);
	}
	const char *extra[] = {
	    "--nodes", list, "--read-timeout-ms", "1000", "--write-timeout-ms",
	    "2000",    NULL};
	assert_int_equal(np_start_bin(&router, "SHOAL_ROUTER_BIN", dir, extra),
			 0);
	char err[256];
	assert_int_equal(
	    sh_rpc_dial(router.url, 10000, 0, &rc_, err, sizeof(err)), 0);
}

static int setup(void **state)
{
	np_tmpdir(tmp, sizeof(tmp));
	char dir[600];
	for (int i = 0; i < NN; i++) {
		snprintf(dir, sizeof(dir), "%s/node%d", tmp, i + 1);
		if (np_start(&nodes[i], dir, NULL))
			return -1;
	}
	snprintf(dir, sizeof(dir), "%s/ref", tmp);
	if (np_start(&ref, dir, NULL))
		return -1;
	char err[256];
	if (sh_rpc_dial(ref.url, 10000, 0, &refc, err, sizeof(err)))
		return -1;
	start_router();
	return 0;
}

static int teardown(void **state)
{
	sh_rpc_close(rc_);
	sh_rpc_close(refc);
	np_stop(&router, SIGKILL);
	for (int i = 0; i <= NN; i++)
		np_stop(&nodes[i], SIGKILL);
	np_stop(&ref, SIGKILL);
	np_rmrf(tmp);
	return 0;
}

/* Upserts points lo..hi-1 to c (router or reference) in one request. */
static int upsert_range(sh_rpc *c, uint64_t lo, uint64_t hi, uint64_t ver,
			Shoal__V1__Response **keep)
{
	size_t n = hi - lo;
	Shoal__V1__PointId *ids = calloc(n, sizeof(*ids));
	Shoal__V1__Point *pts = calloc(n, sizeof(*pts));
	Shoal__V1__Point **pp = calloc(n, sizeof(*pp));
	float *vecs = calloc(n * DIM, sizeof(float));
	char(*pl)[64] = calloc(n, sizeof(*pl));
	for (size_t i = 0; i < n; i++) {
		shoal__v1__point_id__init(&ids[i]);
		ids[i].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		ids[i].num = lo + i;
		shoal__v1__point__init(&pts[i]);
		pts[i].id = &ids[i];
		vec_of(lo + i, vecs + i * DIM);
		pts[i].vector = vecs + i * DIM;
		pts[i].n_vector = DIM;
		payload_of(lo + i, pl[i], sizeof(pl[i]));
		pts[i].payload_json = pl[i];
		pts[i].version = ver;
		pp[i] = &pts[i];
	}
	Shoal__V1__UpsertRequest up = SHOAL__V1__UPSERT_REQUEST__INIT;
	up.collection = "p";
	up.points = pp;
	up.n_points = n;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
	rq.upsert = &up;
	Shoal__V1__Response *rs = np_call(c, &rq);
	int code = rs->code;
	if (keep)
		*keep = rs;
	else
		sh_wire_free_response(rs);
	free(ids);
	free(pts);
	free(pp);
	free(vecs);
	free(pl);
	return code;
}

static Shoal__V1__Response *search(sh_rpc *c, const float *q, uint32_t k,
				   bool exact, Shoal__V1__Filter *f,
				   float min_cov)
{
	Shoal__V1__Vector v = SHOAL__V1__VECTOR__INIT, *vp = &v;
	v.values = (float *)q;
	v.n_values = DIM;
	Shoal__V1__SearchRequest s = SHOAL__V1__SEARCH_REQUEST__INIT;
	s.collection = "p";
	s.queries = &vp;
	s.n_queries = 1;
	s.k = k;
	s.exact = exact;
	s.filter = f;
	s.min_coverage = min_cov;
	s.with_payload = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
	rq.search = &s;
	return np_call(c, &rq);
}

/* cat = "c2" as a wire filter (static storage). */
static Shoal__V1__Filter *cat_filter(void)
{
	static Shoal__V1__Match m = SHOAL__V1__MATCH__INIT;
	static Shoal__V1__Condition co = SHOAL__V1__CONDITION__INIT;
	static Shoal__V1__Clause cl = SHOAL__V1__CLAUSE__INIT, *clp = &cl;
	static Shoal__V1__Filter f = SHOAL__V1__FILTER__INIT;
	m.key = "cat";
	m.value_case = SHOAL__V1__MATCH__VALUE_KEYWORD;
	m.keyword = "c2";
	co.kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
	co.match = &m;
	cl.kind_case = SHOAL__V1__CLAUSE__KIND_CONDITION;
	cl.condition = &co;
	f.must = &clp;
	f.n_must = 1;
	return &f;
}

static void test_writes_are_routed_by_slot(void **state)
{
	const char *idx[] = {"cat:keyword", "price:integer", NULL};
	assert_int_equal(np_create(rc_, "p", DIM, SHOAL__V1__METRIC__L2, idx),
			 0);
	assert_int_equal(np_create(refc, "p", DIM, SHOAL__V1__METRIC__L2, idx),
			 0);
	/* again: every node has it */
	assert_int_equal(np_create(rc_, "p", DIM, SHOAL__V1__METRIC__L2, idx),
			 SH_EEXIST);
	for (uint64_t lo = 0; lo < N; lo += 200) {
		assert_int_equal(upsert_range(rc_, lo, lo + 200, 1, NULL), 0);
		assert_int_equal(upsert_range(refc, lo, lo + 200, 1, NULL), 0);
	}
	assert_int_equal(np_count(rc_, "p", NULL), N);
	/* each node holds exactly the points of its slots */
	int64_t sum = 0;
	for (int i = 0; i < NN; i++) {
		sh_rpc *c;
		char err[256];
		assert_int_equal(
		    sh_rpc_dial(nodes[i].url, 5000, 0, &c, err, sizeof(err)),
		    0);
		int64_t cnt = np_count(c, "p", NULL);
		assert_true(cnt > N / 6 && cnt < N / 2);
		sum += cnt;
		sh_rpc_close(c);
	}
	assert_int_equal(sum, N);

	/* get through the router, from every node, in the order asked (the
	 * missing id left out) */
	enum { NG = 8 };
	Shoal__V1__PointId ids[NG];
	Shoal__V1__PointId *pp[NG];
	uint64_t want[NG] = {599, 3, 100000, 150, 2, 598, 1, 4};
	for (int i = 0; i < NG; i++) {
		shoal__v1__point_id__init(&ids[i]);
		ids[i].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		ids[i].num = want[i];
		pp[i] = &ids[i];
	}
	Shoal__V1__GetRequest g = SHOAL__V1__GET_REQUEST__INIT;
	g.collection = "p";
	g.ids = pp;
	g.n_ids = NG;
	g.with_vector = 1;
	g.with_payload = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET;
	rq.get = &g;
	Shoal__V1__Response *rs = np_call(rc_, &rq);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->get->n_points, NG - 1);
	for (size_t i = 0, k = 0; i < NG; i++)
		if (want[i] != 100000)
			assert_int_equal(rs->get->points[k++]->id->num,
					 want[i]);
	for (size_t i = 0; i < NG - 1; i++) {
		float v[DIM];
		vec_of(rs->get->points[i]->id->num, v);
		assert_memory_equal(rs->get->points[i]->vector, v, sizeof(v));
	}
	sh_wire_free_response(rs);
}

static void test_exact_search_equals_reference(void **state)
{
	for (uint64_t t = 0; t < 10; t++) {
		float q[DIM];
		vec_of(10000 + t, q);
		for (int filt = 0; filt < 2; filt++) {
			Shoal__V1__Filter *f = filt ? cat_filter() : NULL;
			Shoal__V1__Response *a = search(rc_, q, 20, true, f, 0);
			Shoal__V1__Response *b =
			    search(refc, q, 20, true, f, 0);
			assert_int_equal(a->code, 0);
			assert_int_equal(b->code, 0);
			Shoal__V1__QueryHits *x = a->search->results[0];
			Shoal__V1__QueryHits *y = b->search->results[0];
			assert_int_equal(x->n_hits, y->n_hits);
			for (size_t h = 0; h < x->n_hits; h++) {
				assert_int_equal(x->hits[h]->id->num,
						 y->hits[h]->id->num);
				assert_float_equal(x->hits[h]->distance,
						   y->hits[h]->distance, 1e-5);
				if (filt)
					assert_non_null(
					    strstr(x->hits[h]->payload_json,
						   "\"c2\""));
			}
			assert_int_equal(a->search->nodes_answered, NN);
			assert_int_equal(a->search->nodes_asked, NN);
			assert_int_equal(a->search->covered->n_ranges, 1);
			assert_int_equal(a->search->covered->ranges[0]->last,
					 SH_SLOTS - 1);
			sh_wire_free_response(a);
			sh_wire_free_response(b);
		}
	}
	/* and the graph search finds the point itself */
	float q[DIM];
	vec_of(42, q);
	Shoal__V1__Response *a = search(rc_, q, 5, false, NULL, 0);
	assert_int_equal(a->search->results[0]->hits[0]->id->num, 42);
	sh_wire_free_response(a);
}

static void test_scroll_count_stats_deletes(void **state)
{
	/* scroll: every point once, across the three nodes */
	unsigned char seen[N] = {0};
	size_t total = 0;
	uint8_t *cur = NULL;
	size_t curlen = 0;
	for (int page = 0; page < 100; page++) {
		Shoal__V1__ScrollRequest s = SHOAL__V1__SCROLL_REQUEST__INIT;
		s.collection = "p";
		s.limit = 77;
		s.cursor.data = cur;
		s.cursor.len = curlen;
		Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
		rq.op_case = SHOAL__V1__REQUEST__OP_SCROLL;
		rq.scroll = &s;
		Shoal__V1__Response *rs = np_call(rc_, &rq);
		assert_int_equal(rs->code, 0);
		for (size_t i = 0; i < rs->scroll->n_points; i++) {
			uint64_t id = rs->scroll->points[i]->id->num;
			assert_true(id < N);
			assert_false(seen[id % N]);
			seen[id % N] = 1;
			total++;
		}
		free(cur);
		curlen = rs->scroll->next_cursor.len;
		cur = curlen ? malloc(curlen) : NULL;
		if (curlen)
			memcpy(cur, rs->scroll->next_cursor.data, curlen);
		sh_wire_free_response(rs);
		if (!curlen)
			break;
	}
	assert_int_equal(total, N);
	assert_int_equal(np_count(rc_, "p", cat_filter()), N / 5);

	/* stats and list sum over the nodes */
	Shoal__V1__StatsRequest sr = SHOAL__V1__STATS_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_STATS;
	rq.stats = &sr;
	Shoal__V1__Response *rs = np_call(rc_, &rq);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->stats->n_collections, 1);
	assert_int_equal(rs->stats->collections[0]->points, N);
	sh_wire_free_response(rs);

	/* deletes by id (routed) and by filter (fanned out) */
	uint64_t del[3] = {1, 2, 3};
	int st[3];
	assert_int_equal(np_delete(rc_, "p", del, 3, 5, st), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(st[i], SH_OK);
	assert_int_equal(np_count(rc_, "p", NULL), N - 3);
	Shoal__V1__DeleteRequest d = SHOAL__V1__DELETE_REQUEST__INIT;
	d.collection = "p";
	d.selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_FILTER;
	d.filter = cat_filter();
	d.filter_version = 5;
	rq.op_case = SHOAL__V1__REQUEST__OP_DELETE;
	rq.delete_ = &d;
	rq.request_id = 0;
	rs = np_call(rc_, &rq);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->delete_->applied, N / 5 - 1); /* 2 was gone */
	sh_wire_free_response(rs);
	assert_int_equal(np_count(rc_, "p", NULL), N - 3 - (N / 5 - 1));
}

static void test_map_and_add_node(void **state)
{
	Shoal__V1__GetMapRequest gm = SHOAL__V1__GET_MAP_REQUEST__INIT;
	gm.with_health = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	Shoal__V1__Response *rs = np_call(rc_, &rq);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->get_map->epoch, 1);
	assert_int_equal(rs->get_map->n_nodes, NN);
	assert_int_equal(rs->get_map->n_slots, NN);
	uint64_t pts = 0;
	for (size_t i = 0; i < NN; i++) {
		assert_int_equal(rs->get_map->nodes[i]->health,
				 SHOAL__V1__HEALTH__SERVING);
		pts += rs->get_map->nodes[i]->points;
	}
	assert_int_equal(pts, np_count(rc_, "p", NULL));
	sh_wire_free_response(rs);
	int status;
	char *m = np_http_get(&router, "/metrics", &status);
	assert_int_equal(status, 200);
	assert_non_null(strstr(m, "shoal_router_node_duration_seconds_bucket{"
				  "node=\"1\""));
	assert_non_null(strstr(
	    m, "shoal_router_requests_total{op=\"upsert\",code=\"OK\"}"));
	assert_non_null(strstr(m, "shoal_router_map_epoch 1"));
	free(m);

	char dir[600];
	snprintf(dir, sizeof(dir), "%s/node4", tmp);
	assert_int_equal(np_start(&nodes[NN], dir, NULL), 0);
	Shoal__V1__AddNodeRequest an = SHOAL__V1__ADD_NODE_REQUEST__INIT;
	an.address = nodes[NN].url;
	rq.op_case = SHOAL__V1__REQUEST__OP_ADD_NODE;
	rq.add_node = &an;
	rq.request_id = 0;
	rs = np_call(rc_, &rq);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->add_node->node_id, 4);
	assert_int_equal(rs->add_node->map_epoch, 2);
	sh_wire_free_response(rs);
	rq.request_id = 0;
	rs = np_call(rc_, &rq); /* twice: refused */
	assert_int_equal(rs->code, SH_EEXIST);
	sh_wire_free_response(rs);
	/* the collection must exist on the new node before it gets slots;
	 * creating it again through the router completes it */
	assert_int_equal(
	    np_create(rc_, "p", DIM, SHOAL__V1__METRIC__L2,
		      (const char *[]){"cat:keyword", "price:integer", NULL}),
	    0);
	/* searches still cover every slot (the new node owns none) */
	float q[DIM];
	vec_of(7, q);
	rs = search(rc_, q, 3, false, NULL, 0);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->search->nodes_asked, NN);
	assert_int_equal(rs->map_epoch, 2);
	sh_wire_free_response(rs);

	/* the router restarts from its map file */
	sh_rpc_close(rc_);
	assert_int_equal(WEXITSTATUS(np_stop(&router, SIGTERM)), 0);
	start_router();
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	rq.request_id = 0;
	rs = np_call(rc_, &rq);
	assert_int_equal(rs->get_map->epoch, 2);
	assert_int_equal(rs->get_map->n_nodes, NN + 1);
	sh_wire_free_response(rs);
}

static void test_node_down(void **state)
{
	int64_t before = np_count(rc_, "p", NULL);
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/node2", tmp);
	np_stop(&nodes[1], SIGKILL);
	float q[DIM];
	vec_of(9, q);
	/* by default a missing node fails the search, naming it */
	Shoal__V1__Response *rs = search(rc_, q, 5, false, NULL, 0);
	assert_true((int)rs->code == SH_ETIMEDOUT || (int)rs->code == SH_EIO);
	assert_non_null(strstr(rs->message, "node 2"));
	sh_wire_free_response(rs);
	/* partial results when asked */
	rs = search(rc_, q, 5, false, NULL, 0.5f);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->search->nodes_answered, NN - 1);
	assert_int_equal(rs->search->nodes_asked, NN);
	assert_true(rs->search->covered->n_ranges >= 1);
	sh_wire_free_response(rs);
	rs = search(rc_, q, 5, false, NULL, 0.9f);
	assert_int_not_equal(rs->code, 0);
	sh_wire_free_response(rs);
	/* a write that touches node 2 fails and says which points */
	Shoal__V1__Response *up = NULL;
	int code = upsert_range(rc_, 1000, 1030, 9, &up);
	assert_int_not_equal(code, 0);
	assert_non_null(strstr(up->message, "node 2"));
	assert_int_equal(up->upsert->n_statuses, 30);
	size_t okc = 0;
	for (size_t i = 0; i < 30; i++)
		okc += up->upsert->statuses[i]->code == 0;
	assert_true(okc > 0 && okc < 30);
	assert_int_equal(up->upsert->applied, okc);
	sh_wire_free_response(up);

	/* node 2 comes back on another port: not in the map, so start it on
	 * its data dir and check that the map's address is what matters */
	const char *extra[] = {"--listen", NULL, NULL};
	char listen[600];
	snprintf(listen, sizeof(listen), "%s", nodes[1].url);
	extra[1] = listen;
	/* np_start passes --listen port 0 first; the later flag wins */
	assert_int_equal(np_start(&nodes[1], dir, extra), 0);
	assert_string_equal(nodes[1].url, listen);
	for (int tries = 0; tries < 100; tries++) {
		rs = search(rc_, q, 5, false, NULL, 0);
		int c = rs->code;
		sh_wire_free_response(rs);
		if (c == 0)
			break;
	}
	rs = search(rc_, q, 5, false, NULL, 0);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->search->nodes_answered, NN);
	sh_wire_free_response(rs);
	/* the acknowledged part of the failed write is there, and a retry
	 * of the whole write completes it */
	assert_int_equal(upsert_range(rc_, 1000, 1030, 9, NULL), 0);
	assert_int_equal(np_count(rc_, "p", NULL), before + 30);
}

/* Tells node i it owns slots first..last at epoch (another node's slots,
 * or fewer than the map says: what a node looks like mid-move). */
static void set_node_slots(int i, uint64_t epoch, uint32_t node_id,
			   uint32_t first, uint32_t last)
{
	sh_rpc *c;
	char err[256];
	assert_int_equal(
	    sh_rpc_dial(nodes[i].url, 5000, 0, &c, err, sizeof(err)), 0);
	Shoal__V1__SlotRange r = SHOAL__V1__SLOT_RANGE__INIT, *rr = &r;
	r.first = first;
	r.last = last;
	Shoal__V1__SlotSet ss = SHOAL__V1__SLOT_SET__INIT;
	ss.ranges = &rr;
	ss.n_ranges = 1;
	Shoal__V1__SetSlotsRequest s = SHOAL__V1__SET_SLOTS_REQUEST__INIT;
	s.map_epoch = epoch;
	s.node_id = node_id;
	s.owned = &ss;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_SET_SLOTS;
	rq.set_slots = &s;
	Shoal__V1__Response *rs = np_call(c, &rq);
	assert_int_equal(rs->code, 0);
	sh_wire_free_response(rs);
	sh_rpc_close(c);
}

/* A search's coverage is exact or an error: each slot is asked of its
 * owner in the map only (only_slots), so a node that claims more slots
 * than the map gives it cannot make a point come back twice; slots no node
 * covers until the deadline fail the search with a message naming them. */
static void test_search_coverage_is_exact_or_an_error(void **state)
{
	/* node 3's slots in the map */
	Shoal__V1__GetMapRequest gm = SHOAL__V1__GET_MAP_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	Shoal__V1__Response *rs = np_call(rc_, &rq);
	uint32_t first = SH_SLOTS, last = 0;
	for (size_t i = 0; i < rs->get_map->n_slots; i++)
		if (rs->get_map->slots[i]->node_id == 3) {
			first = rs->get_map->slots[i]->first;
			last = rs->get_map->slots[i]->last;
		}
	sh_wire_free_response(rs);
	assert_true(first < last);
	float q[DIM];
	vec_of(11, q);

	/* node 3 gave up its last 100 slots: a hole, asked again until the
	 * deadline, then an error naming it */
	set_node_slots(2, 100, 3, first, last - 100);
	rs = search(rc_, q, 5, false, NULL, 0);
	assert_int_equal(rs->code, SH_EIO);
	assert_non_null(strstr(rs->message, "covered by no node"));
	char want[64];
	snprintf(want, sizeof(want), "slots %u-%u", last - 99, last);
	assert_non_null(strstr(rs->message, want));
	sh_wire_free_response(rs);

	/* node 3 took every slot: it is still asked only for its own, so
	 * nothing comes back twice */
	set_node_slots(2, 101, 3, 0, SH_SLOTS - 1);
	rs = search(rc_, q, 50, true, NULL, 0);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->search->covered->n_ranges, 1);
	assert_int_equal(rs->search->covered->ranges[0]->last, SH_SLOTS - 1);
	const Shoal__V1__QueryHits *h = rs->search->results[0];
	for (size_t i = 0; i < h->n_hits; i++)
		for (size_t j = 0; j < i; j++)
			assert_true(h->hits[i]->id->num != h->hits[j]->id->num);
	sh_wire_free_response(rs);

	/* back to its own slots: whole again */
	set_node_slots(2, 102, 3, first, last);
	rs = search(rc_, q, 5, false, NULL, 0);
	assert_int_equal(rs->code, 0);
	assert_int_equal(rs->search->covered->n_ranges, 1);
	assert_int_equal(rs->search->covered->ranges[0]->first, 0);
	assert_int_equal(rs->search->covered->ranges[0]->last, SH_SLOTS - 1);
	sh_wire_free_response(rs);
}

/* shoal_router_node_reconnects_total of node id, from the router's
 * metrics (-1 when absent). */
static long reconnects(uint32_t id)
{
	int status;
	char *m = np_http_get(&router, "/metrics", &status);
	assert_non_null(m);
	char key[64];
	snprintf(key, sizeof(key),
		 "shoal_router_node_reconnects_total{node=\"%u\",", id);
	const char *at = strstr(m, key);
	const char *val = at ? strchr(at, '}') : NULL;
	long n = val ? strtol(val + 1, NULL, 10) : -1;
	free(m);
	return n;
}

/* A node that keeps its connection but answers nothing (SIGSTOP: its
 * kernel still takes the requests) has its connection replaced after 5 s
 * of timeouts, and the router says so: in its log and per node in its
 * metrics. The liveness failure of bug 5 (docs/reliability.md) looked like
 * this, and would now show. Once the node runs again it answers on the
 * new connection. */
static void test_a_silent_node_is_reconnected_and_reported(void **state)
{
	(void)state;
	long before[NN];
	for (int i = 0; i < NN; i++)
		assert_true((before[i] = reconnects((uint32_t)i + 1)) >= 0);
	long off = np_log_size(&router);
	float q[DIM];
	vec_of(11, q);
	assert_int_equal(kill(nodes[2].pid, SIGSTOP), 0);
	long now = before[2];
	int bad = 0; /* searches that did not answer partially */
	double t0 = np_now_s();
	while (now == before[2] && np_now_s() - t0 < 30) {
		/* node 3 times out; the others answer (partial coverage) */
		Shoal__V1__Response *rs = search(rc_, q, 5, false, NULL, 0.5f);
		bad += rs->code != 0 || rs->search->nodes_answered != NN - 1;
		sh_wire_free_response(rs);
		now = reconnects(3);
	}
	double secs = np_now_s() - t0;
	/* before any assert: a failed one must not leave the node stopped */
	assert_int_equal(kill(nodes[2].pid, SIGCONT), 0);
	print_message("  node 3's connection replaced after %.1f s\n", secs);
	assert_int_equal(bad, 0);
	assert_int_equal(now, before[2] + 1);
	char *log = np_log_since(&router, off);
	bool said = strstr(log, "node 3 (") &&
		    strstr(log, "answered nothing for 5 s");
	free(log);
	assert_true(said);
	assert_int_equal(reconnects(1), before[0]);
	assert_int_equal(reconnects(2), before[1]);
	/* and it answers again, whole */
	int code = -1;
	for (int tries = 0; tries < 50 && code != 0; tries++) {
		Shoal__V1__Response *rs = search(rc_, q, 5, false, NULL, 0);
		code = (int)rs->code;
		sh_wire_free_response(rs);
	}
	assert_int_equal(code, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_writes_are_routed_by_slot),
	    cmocka_unit_test(test_exact_search_equals_reference),
	    cmocka_unit_test(test_scroll_count_stats_deletes),
	    cmocka_unit_test(test_map_and_add_node),
	    cmocka_unit_test(test_node_down),
	    cmocka_unit_test(test_search_coverage_is_exact_or_an_error),
	    cmocka_unit_test(test_a_silent_node_is_reconnected_and_reported),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
