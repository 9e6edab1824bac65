/*
 * shoal-ingest end to end: the shoal-kafka-mock TEST cluster, three
 * shoal-node processes behind a shoal-router, and shoal-ingest workers
 * started, stopped and killed as real processes.
 *
 * Every scenario produces changes (upserts and deletes of a set of ids,
 * each id's versions in random order) and then checks that the cluster
 * holds exactly what the highest version of each id says: the upserted
 * vector and payload of that version, or nothing after a delete.
 *
 *   (1) many changes out of order across partitions, one worker (8
 *       partitions: the mock keeps only the last 5 MiB of a partition, and
 *       everything is produced before the worker starts);
 *   (2) the worker killed with SIGKILL at random moments and restarted;
 *   (3) two workers in one group, one leaves mid-stream;
 *   (4) malformed records go to the dead-letter topic with their error,
 *       the rest are applied;
 *   (5) a node down for a while: the worker retries, pauses, catches up;
 *   (6) records with a text and no vector are embedded by shoal-embed on
 *       the way in (skipped when the model is not installed).
 *
 * SHOAL_INGEST_RECORDS sets the size of (1) (default 100,000; 20,000 under
 * AddressSanitizer) and SHOAL_INGEST_KILLS the kills of (2) (default 10).
 */
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafkatest.h"
#include "nodeproc.h"
#include "shoal.h"

#define DIM 8
#define NN 3

static char tmp[512];
static kt_mock mock;
static nodeproc nodes[NN], router;
static shoal_client *cl;
static char node_list[2048];

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static void vec_of(uint64_t id, uint64_t version, float *v)
{
	for (int j = 0; j < DIM; j++)
		v[j] =
		    (float)cos((double)id * 0.37 + (double)version * 0.11 + j);
}

/* ---- Changes ------------------------------------------------------------- */

struct change {
	uint64_t id, version;
	bool del;
};

/* The expected state: per id, the change of the highest version. */
struct expect {
	uint64_t nid;
	uint64_t *version; /* 0: never written */
	bool *deleted;
};

static void expect_init(struct expect *e, uint64_t nid)
{
	e->nid = nid;
	e->version = calloc(nid, sizeof(*e->version));
	e->deleted = calloc(nid, sizeof(*e->deleted));
	assert_non_null(e->version);
	assert_non_null(e->deleted);
}

static void expect_free(struct expect *e)
{
	free(e->version);
	free(e->deleted);
}

static void expect_add(struct expect *e, const struct change *c)
{
	if (c->version >= e->version[c->id]) {
		e->version[c->id] = c->version;
		e->deleted[c->id] = c->del;
	}
}

/* nid ids, per ids `per` changes with versions 1..per in random order
 * (a version drawn twice is not: each id's versions are a permutation),
 * about a third deletes; the list as a whole shuffled. */
static struct change *make_changes(uint64_t nid, uint64_t per, size_t *n)
{
	*n = nid * per;
	struct change *c = calloc(*n, sizeof(*c));
	assert_non_null(c);
	for (uint64_t i = 0; i < nid; i++)
		for (uint64_t v = 0; v < per; v++) {
			struct change *x = &c[i * per + v];
			x->id = i;
			x->version = v + 1;
			x->del = rnd() % 3 == 0;
		}
	for (size_t i = *n - 1; i > 0; i--) {
		size_t j = (size_t)(rnd() % (i + 1));
		struct change t = c[i];
		c[i] = c[j];
		c[j] = t;
	}
	return c;
}

/* make_changes and the state they must end in. */
static struct change *scenario(uint64_t nid, uint64_t per, size_t *n,
			       struct expect *e)
{
	struct change *c = make_changes(nid, per, n);
	expect_init(e, nid);
	for (size_t i = 0; i < *n; i++)
		expect_add(e, &c[i]);
	return c;
}

static int json_of(const struct change *c, const char *coll, char *buf,
		   size_t cap)
{
	if (c->del)
		return snprintf(buf, cap,
				"{\"op\":\"delete\",\"collection\":\"%s\","
				"\"id\":%" PRIu64 ",\"version\":%" PRIu64 "}",
				coll, c->id, c->version);
	float v[DIM];
	vec_of(c->id, c->version, v);
	int len = snprintf(buf, cap,
			   "{\"op\":\"upsert\",\"collection\":\"%s\",\"id\":"
			   "%" PRIu64 ",\"version\":%" PRIu64 ",\"vector\":[",
			   coll, c->id, c->version);
	for (int j = 0; j < DIM; j++)
		len += snprintf(buf + len, cap - (size_t)len, "%s%.9g",
				j ? "," : "", (double)v[j]);
	len += snprintf(buf + len, cap - (size_t)len,
			"],\"payload\":{\"v\":%" PRIu64 "}}", c->version);
	return len;
}

static rd_kafka_t *producer(void)
{
	char err[256];
	rd_kafka_t *p = kt_producer_new(mock.bootstrap, err, sizeof(err));
	if (!p)
		fail_msg("producer: %s", err);
	return p;
}

static void produce(rd_kafka_t *p, const char *topic, const char *coll,
		    const struct change *c, size_t n)
{
	char buf[1024], key[32];
	for (size_t i = 0; i < n; i++) {
		int len = json_of(&c[i], coll, buf, sizeof(buf));
		int kl = snprintf(key, sizeof(key), "%" PRIu64, c[i].id);
		assert_int_equal(kt_produce(p, topic, RD_KAFKA_PARTITION_UA,
					    key, (size_t)kl, buf, (size_t)len,
					    NULL),
				 0);
	}
}

/* ---- The cluster --------------------------------------------------------- */

static void create(const char *coll)
{
	shoal_collection_config cfg = {
	    .name = coll, .dim = DIM, .metric = SHOAL_METRIC_L2};
	assert_int_equal(shoal_collection_create(cl, &cfg), SHOAL_OK);
}

/* Starts a worker of group on topic, with --max-pending pending and
 * --embed embed (NULL: none). */
static void start_worker_with(nodeproc *w, const char *name, const char *topic,
			      const char *group, const char *pending,
			      const char *embed)
{
	char dir[700];
	snprintf(dir, sizeof(dir), "%s/%s", tmp, name);
	const char *args[] = {"--brokers",
			      mock.bootstrap,
			      "--topic",
			      topic,
			      "--group",
			      group,
			      "--router",
			      router.url,
			      "--linger-ms",
			      "5",
			      "--commit-interval-ms",
			      "200",
			      "--backoff-ms",
			      "20",
			      "--backoff-max-ms",
			      "300",
			      "--revoke-timeout-ms",
			      "5000",
			      "--timeout-ms",
			      "3000",
			      "-X",
			      "session.timeout.ms=6000",
			      "-X",
			      "heartbeat.interval.ms=500",
			      "--max-pending",
			      pending,
			      embed ? "--embed" : NULL,
			      embed,
			      NULL};
	assert_int_equal(np_spawn(w, "SHOAL_INGEST_BIN", dir, args), 0);
}

static void start_worker(nodeproc *w, const char *name, const char *topic,
			 const char *group)
{
	start_worker_with(w, name, topic, group, "20000", NULL);
}

/* SIGTERM: the worker finishes, commits, leaves the group and exits 0 (a
 * sanitizer finding would make it exit otherwise; its log says). */
static void assert_stops_clean(nodeproc *w)
{
	char log[sizeof(w->log)];
	snprintf(log, sizeof(log), "%s", w->log);
	int st = np_stop(w, SIGTERM);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg(
		    "shoal-ingest did not stop cleanly (status %#x, see %s)",
		    st, log);
}

/* A counter or gauge from the worker's /metrics (-1 when absent). */
static double metric(const nodeproc *w, const char *name)
{
	int st = 0;
	char *body = np_http_get(w, "/metrics", &st);
	if (!body)
		return -1;
	double v = -1;
	size_t nl = strlen(name);
	for (char *l = body; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : l)
		if (!strncmp(l, name, nl) && (l[nl] == ' ' || l[nl] == '{')) {
			char *sp = strchr(l, ' ');
			if (sp) {
				v = (v < 0 ? 0 : v) + strtod(sp + 1, NULL);
			}
		}
	free(body);
	return v;
}

/* How many partitions a worker has assigned now (its lag gauge has one line
 * per assigned partition); -1 when its metrics cannot be read. */
static int assigned(const nodeproc *w)
{
	int st = 0;
	char *body = np_http_get(w, "/metrics", &st);
	if (!body)
		return -1;
	int n = 0;
	const char *key = "shoal_ingest_consumer_lag{";
	for (char *l = body; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : l)
		if (!strncmp(l, key, strlen(key)))
			n++;
	free(body);
	return n;
}

/* How many ids are not yet in their expected state (checked through the
 * router, 1000 ids per get). */
static uint64_t mismatches(const char *coll, const struct expect *e,
			   bool report)
{
	uint64_t bad = 0;
	shoal_id ids[1000];
	for (uint64_t s = 0; s < e->nid; s += 1000) {
		size_t m = e->nid - s < 1000 ? (size_t)(e->nid - s) : 1000;
		for (size_t i = 0; i < m; i++)
			ids[i] = shoal_id_num(s + i);
		shoal_points *pts = NULL;
		if (shoal_get(cl, coll, ids, m, true, true, &pts) != SHOAL_OK)
			return e->nid;
		/* the router returns each node's points together: index
		 * them by id */
		const shoal_point *by[1000] = {0};
		for (size_t k = 0; k < pts->n; k++)
			if (pts->points[k].id.num >= s &&
			    pts->points[k].id.num < s + m)
				by[pts->points[k].id.num - s] = &pts->points[k];
		for (size_t i = 0; i < m; i++) {
			uint64_t id = s + i;
			bool want = e->version[id] && !e->deleted[id];
			bool have = by[i] != NULL;
			bool ok = want == have;
			if (ok && have) {
				const shoal_point *p = by[i];
				float v[DIM];
				vec_of(id, e->version[id], v);
				char pay[64];
				snprintf(pay, sizeof(pay),
					 "{\"v\":%" PRIu64 "}", e->version[id]);
				ok = p->dim == DIM &&
				     !memcmp(p->vector, v, sizeof(v)) &&
				     p->payload_json &&
				     !strcmp(p->payload_json, pay);
			}
			if (!ok) {
				if (report && bad < 5)
					print_message(
					    "id %" PRIu64 ": want %s v%" PRIu64
					    ", have %s (payload %s)\n",
					    id, want ? "live" : "absent",
					    e->version[id],
					    have ? "live" : "absent",
					    have ? by[i]->payload_json : "-");
				bad++;
			}
		}
		shoal_points_free(pts);
	}
	return bad;
}

/* Waits (up to timeout_s) until the collection matches e. */
static void await_state(const char *coll, const struct expect *e, int timeout_s)
{
	uint64_t bad = 0;
	for (int t = 0; t < timeout_s * 10; t++) {
		if ((bad = mismatches(coll, e, false)) == 0)
			return;
		np_sleep_ms(100);
	}
	mismatches(coll, e, true);
	fail_msg("%s: %" PRIu64 " of %" PRIu64 " ids not as expected after "
		 "%d s",
		 coll, bad, e->nid, timeout_s);
}

static int setup(void **state)
{
	(void)state;
	np_tmpdir(tmp, sizeof(tmp));
	const char *topics[] = {"t1:8", "t2:4", "t3:4", "t4:2",
				"t5:4", "t6:2", NULL};
	if (kt_mock_start(&mock, getenv("SHOAL_KAFKA_MOCK_BIN"), 3, topics))
		return -1;
	char dir[700];
	for (int i = 0; i < NN; i++) {
		snprintf(dir, sizeof(dir), "%s/node%d", tmp, i + 1);
		if (np_start(&nodes[i], dir, NULL))
			return -1;
		strcat(node_list, i ? "," : "");
		strcat(node_list, nodes[i].url);
	}
	snprintf(dir, sizeof(dir), "%s/router", tmp);
	const char *extra[] = {
	    "--nodes", node_list,	    "--write-timeout-ms",
	    "2000",    "--read-timeout-ms", "1000",
	    NULL};
	if (np_start_bin(&router, "SHOAL_ROUTER_BIN", dir, extra))
		return -1;
	return shoal_connect(router.url, 10000, &cl) == SHOAL_OK ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	shoal_close(cl);
	np_stop(&router, SIGKILL);
	for (int i = 0; i < NN; i++)
		np_stop(&nodes[i], SIGKILL);
	kt_mock_stop(&mock);
	np_rmrf(tmp);
	return 0;
}

static size_t env_size(const char *name, size_t def)
{
	const char *v = getenv(name);
	return v && atol(v) > 0 ? (size_t)atol(v) : def;
}

/* (1) */
static void test_out_of_order_changes_end_in_the_newest_state(void **state)
{
	(void)state;
#if defined(__SANITIZE_ADDRESS__)
	size_t total = env_size("SHOAL_INGEST_RECORDS", 20000);
#else
	size_t total = env_size("SHOAL_INGEST_RECORDS", 100000);
#endif
	uint64_t per = 20, nid = (total + per - 1) / per;
	size_t n;
	struct expect e;
	struct change *c = scenario(nid, per, &n, &e);
	create("c1");
	rd_kafka_t *p = producer();
	produce(p, "t1", "c1", c, n);
	assert_int_equal(kt_flush(p, 60000), 0);
	nodeproc w;
	int64_t t0 = kt_now_ms();
	start_worker(&w, "w1", "t1", "g1");
	await_state("c1", &e, 300);
	double secs = (double)(kt_now_ms() - t0) / 1000;
	print_message("%zu records (%" PRIu64 " ids) in %.1f s: %.0f/s\n", n,
		      nid, secs, (double)n / secs);
	/* every record was consumed and accounted for */
	for (int t = 0;
	     t < 100 && metric(&w, "shoal_ingest_records_total") < (double)n;
	     t++)
		np_sleep_ms(100);
	assert_true(metric(&w, "shoal_ingest_records_total") == (double)n);
	assert_true(metric(&w, "shoal_ingest_dead_letters_total") == 0);
	assert_stops_clean(&w);
	kt_producer_destroy(p);
	free(c);
	expect_free(&e);
}

/* (2) */
static void test_killed_worker_restarts_and_state_is_exact(void **state)
{
	(void)state;
	size_t kills = env_size("SHOAL_INGEST_KILLS", 10);
	uint64_t nid = 1000, per = 20;
	size_t n;
	struct expect e;
	struct change *c = scenario(nid, per, &n, &e);
	create("c2");
	rd_kafka_t *p = producer();
	nodeproc w;
	start_worker(&w, "w2", "t2", "g2");
	/* produce in slices while the worker is killed and restarted */
	size_t at = 0, slice = n / (kills + 1) + 1;
	for (size_t k = 0; k < kills; k++) {
		size_t m = n - at < slice ? n - at : slice;
		produce(p, "t2", "c2", c + at, m);
		at += m;
		assert_int_equal(kt_flush(p, 30000), 0);
		np_sleep_ms(100 + (int)(rnd() % 900));
		np_stop(&w, SIGKILL);
		start_worker(&w, "w2", "t2", "g2");
	}
	produce(p, "t2", "c2", c + at, n - at);
	assert_int_equal(kt_flush(p, 30000), 0);
	await_state("c2", &e, 240);
	assert_stops_clean(&w);
	kt_producer_destroy(p);
	free(c);
	expect_free(&e);
}

/* (3) */
static void test_two_workers_one_leaves(void **state)
{
	(void)state;
	uint64_t nid = 1000, per = 20;
	size_t n;
	struct expect e;
	struct change *c = scenario(nid, per, &n, &e);
	create("c3");
	rd_kafka_t *p = producer();
	nodeproc a, b;
	start_worker(&a, "w3a", "t3", "g3");
	start_worker(&b, "w3b", "t3", "g3");
	/* the group has settled with both in it before anything is produced:
	 * otherwise the first to join may consume it all before the second
	 * is given a partition */
	for (int t = 0; t < 300 && !(assigned(&a) > 0 && assigned(&b) > 0 &&
				     assigned(&a) + assigned(&b) == 4);
	     t++)
		np_sleep_ms(100);
	assert_true(assigned(&a) > 0 && assigned(&b) > 0);
	produce(p, "t3", "c3", c, n / 2);
	assert_int_equal(kt_flush(p, 30000), 0);
	/* both got partitions */
	for (int t = 0;
	     t < 200 && (metric(&a, "shoal_ingest_consumed_total") <= 0 ||
			 metric(&b, "shoal_ingest_consumed_total") <= 0);
	     t++)
		np_sleep_ms(100);
	assert_true(metric(&a, "shoal_ingest_consumed_total") > 0);
	assert_true(metric(&b, "shoal_ingest_consumed_total") > 0);
	/* one leaves mid-stream (a clean stop: it commits and leaves) */
	produce(p, "t3", "c3", c + n / 2, n / 4);
	assert_stops_clean(&b);
	produce(p, "t3", "c3", c + n / 2 + n / 4, n - n / 2 - n / 4);
	assert_int_equal(kt_flush(p, 30000), 0);
	await_state("c3", &e, 240);
	assert_stops_clean(&a);
	kt_producer_destroy(p);
	free(c);
	expect_free(&e);
}

/* (4) */
static void test_malformed_records_go_to_the_dlq(void **state)
{
	(void)state;
	create("c4");
	rd_kafka_t *p = producer();
	char big[80000];
	int bl = snprintf(big, sizeof(big),
			  "{\"op\":\"upsert\",\"collection\":\"c4\",\"id\":7,"
			  "\"version\":1,\"vector\":[1,2,3,4,5,6,7,8],"
			  "\"payload\":{\"x\":\"");
	memset(big + bl, 'a', 70000);
	bl += 70000;
	bl += snprintf(big + bl, sizeof(big) - (size_t)bl, "\"}}");
	struct {
		const char *key, *value, *code;
	} bad[] = {
	    {"1", "{\"op\":\"upsert\",", "EINVAL"}, /* bad JSON */
	    {"2",
	     "{\"op\":\"upsert\",\"collection\":\"c4\",\"id\":2,\"version\":1,"
	     "\"vector\":[1,2,3]}",
	     "EDIM"}, /* wrong dimension: the node says so */
	    {"3",
	     "{\"op\":\"upsert\",\"collection\":\"nope\",\"id\":3,"
	     "\"version\":1,\"vector\":[1,2,3,4,5,6,7,8]}",
	     "ENOCOLLECTION"},
	    {"4",
	     "{\"op\":\"upsert\",\"collection\":\"c4\",\"id\":5,\"version\":1,"
	     "\"vector\":[1,2,3,4,5,6,7,8]}",
	     "EINVAL"}, /* the key is not the id */
	    {"6",
	     "{\"op\":\"upsert\",\"collection\":\"c4\",\"id\":6,\"version\":1,"
	     "\"text\":\"red shoes\"}",
	     "EINVAL"}, /* a text and no embedding servers */
	    {"7", big, "ETOOBIG"},
	};
	size_t nbad = sizeof(bad) / sizeof(bad[0]);
	/* good records between the bad ones */
	struct change good[40];
	struct expect e;
	expect_init(&e, 100);
	for (size_t i = 0; i < 40; i++) {
		good[i].id = 50 + i;
		good[i].version = 1;
		good[i].del = false;
		expect_add(&e, &good[i]);
	}
	for (size_t i = 0; i < nbad; i++) {
		produce(p, "t4", "c4", good + i * 5, 5);
		const char *hdr[] = {"trace", "abc", NULL};
		assert_int_equal(kt_produce(p, "t4", RD_KAFKA_PARTITION_UA,
					    bad[i].key, strlen(bad[i].key),
					    bad[i].value, strlen(bad[i].value),
					    hdr),
				 0);
	}
	produce(p, "t4", "c4", good + nbad * 5, 40 - nbad * 5);
	assert_int_equal(kt_flush(p, 30000), 0);
	nodeproc w;
	start_worker(&w, "w4", "t4", "g4");
	await_state("c4", &e, 120);
	kt_msg *m = NULL;
	size_t nm = 0;
	assert_int_equal(
	    kt_read_all(mock.bootstrap, "t4.dlq", (int)nbad, 60000, &m, &nm),
	    0);
	assert_int_equal(nm, nbad);
	for (size_t i = 0; i < nbad; i++) {
		size_t j = 0;
		while (j < nm && !(m[j].keylen == strlen(bad[i].key) &&
				   !memcmp(m[j].key, bad[i].key, m[j].keylen)))
			j++;
		assert_true(j < nm);
		assert_int_equal(m[j].len, strlen(bad[i].value));
		assert_memory_equal(m[j].value, bad[i].value, m[j].len);
		assert_string_equal(kt_msg_header(&m[j], "shoal-error-code"),
				    bad[i].code);
		assert_non_null(kt_msg_header(&m[j], "shoal-error"));
		assert_string_equal(kt_msg_header(&m[j], "shoal-source-topic"),
				    "t4");
		assert_non_null(kt_msg_header(&m[j], "shoal-source-offset"));
		assert_string_equal(kt_msg_header(&m[j], "trace"), "abc");
	}
	kt_msgs_free(m, nm);
	assert_true(metric(&w, "shoal_ingest_dead_letters_total") ==
		    (double)nbad);
	assert_stops_clean(&w);
	kt_producer_destroy(p);
	expect_free(&e);
}

/* (5) */
static void test_node_down_worker_pauses_and_catches_up(void **state)
{
	(void)state;
	uint64_t nid = 2000, per = 10;
	size_t n;
	struct expect e;
	struct change *c = scenario(nid, per, &n, &e);
	create("c5");
	rd_kafka_t *p = producer();
	nodeproc w;
	/* a small queue, so that the outage fills it */
	start_worker_with(&w, "w5", "t5", "g5", "200", NULL);
	produce(p, "t5", "c5", c, n / 4);
	assert_int_equal(kt_flush(p, 30000), 0);
	/* node 2 goes away; writes to its slots fail and are retried */
	np_stop(&nodes[1], SIGKILL);
	produce(p, "t5", "c5", c + n / 4, n - n / 4);
	assert_int_equal(kt_flush(p, 30000), 0);
	for (int t = 0;
	     t < 100 && metric(&w, "shoal_ingest_write_retries_total") <= 0;
	     t++)
		np_sleep_ms(100);
	assert_true(metric(&w, "shoal_ingest_write_retries_total") > 0);
	/* the partitions waiting on the dead node fill up and pause */
	for (int t = 0; t < 100 && metric(&w, "shoal_ingest_pauses_total") <= 0;
	     t++)
		np_sleep_ms(100);
	assert_true(metric(&w, "shoal_ingest_pauses_total") > 0);
	np_sleep_ms(1000);
	/* back on its data: the worker catches up, nothing lost */
	char dir[700];
	snprintf(dir, sizeof(dir), "%s", nodes[1].data_dir);
	const char *extra[] = {"--listen", nodes[1].url, NULL};
	char url[512];
	snprintf(url, sizeof(url), "%s", nodes[1].url);
	extra[1] = url;
	assert_int_equal(np_start(&nodes[1], dir, extra), 0);
	await_state("c5", &e, 240);
	assert_stops_clean(&w);
	kt_producer_destroy(p);
	free(c);
	expect_free(&e);
}

/* (6) */
static void test_texts_are_embedded_on_the_way_in(void **state)
{
	(void)state;
	const char *model = getenv("SHOAL_MODEL_DIR");
	char cfg[700];
	snprintf(cfg, sizeof(cfg), "%s/config.json", model ? model : "");
	if (!model || access(cfg, R_OK) != 0 || !getenv("SHOAL_EMBED_BIN")) {
		print_message("no model installed (deploy/fetch-model.sh)\n");
		skip();
	}
	char dir[700], spec[800];
	snprintf(dir, sizeof(dir), "%s/embed", tmp);
	snprintf(spec, sizeof(spec), "minilm=%s", model);
	const char *extra[] = {"--model", spec, NULL};
	nodeproc emb;
	assert_int_equal(np_start_bin(&emb, "SHOAL_EMBED_BIN", dir, extra), 0);
	shoal_collection_config cc = {
	    .name = "c6", .dim = 384, .metric = SHOAL_METRIC_COSINE};
	assert_int_equal(shoal_collection_create(cl, &cc), SHOAL_OK);
	static const char *const texts[] = {
	    "red leather running shoes",
	    "stainless steel kettle 1.7 l",
	    "wireless noise cancelling headphones",
	    "oak dining table",
	    "cotton summer dress, size m",
	    "waterproof hiking backpack 30 l"};
	enum { NT = sizeof(texts) / sizeof(texts[0]) };
	rd_kafka_t *p = producer();
	for (int i = 0; i < NT; i++) {
		char buf[512], key[8];
		int len = snprintf(buf, sizeof(buf),
				   "{\"op\":\"upsert\",\"collection\":\"c6\","
				   "\"id\":%d,\"version\":1,\"text\":\"%s\"}",
				   i, texts[i]);
		int kl = snprintf(key, sizeof(key), "%d", i);
		assert_int_equal(kt_produce(p, "t6", RD_KAFKA_PARTITION_UA, key,
					    (size_t)kl, buf, (size_t)len, NULL),
				 0);
	}
	assert_int_equal(kt_flush(p, 30000), 0);
	nodeproc w;
	start_worker_with(&w, "w6", "t6", "g6", "20000", emb.url);
	/* each point's vector is the text's embedding, one text at a time */
	shoal_embedder *e = NULL;
	const char *urls[] = {emb.url};
	assert_int_equal(shoal_embedder_connect(urls, 1, 10000, &e), SHOAL_OK);
	for (int i = 0; i < NT; i++) {
		shoal_id id = shoal_id_num((uint64_t)i);
		shoal_points *pts = NULL;
		for (int t = 0; t < 600; t++) {
			assert_int_equal(
			    shoal_get(cl, "c6", &id, 1, false, true, &pts),
			    SHOAL_OK);
			if (pts->n)
				break;
			shoal_points_free(pts);
			pts = NULL;
			np_sleep_ms(100);
		}
		assert_non_null(pts);
		assert_int_equal(pts->n, 1);
		shoal_embeddings *v = NULL;
		assert_int_equal(shoal_embed(e, NULL, &texts[i], 1, &v),
				 SHOAL_OK);
		double dot = 0;
		for (size_t j = 0; j < 384; j++)
			dot += (double)v->vectors[j] *
			       (double)pts->points[0].vector[j];
		assert_true(dot > 0.9999);
		shoal_embeddings_free(v);
		shoal_points_free(pts);
	}
	shoal_embedder_close(e);
	assert_stops_clean(&w);
	kt_producer_destroy(p);
	np_stop(&emb, SIGTERM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_out_of_order_changes_end_in_the_newest_state),
	    cmocka_unit_test(test_malformed_records_go_to_the_dlq),
	    cmocka_unit_test(test_two_workers_one_leaves),
	    cmocka_unit_test(test_node_down_worker_pauses_and_catches_up),
	    cmocka_unit_test(test_killed_worker_restarts_and_state_is_exact),
	    cmocka_unit_test(test_texts_are_embedded_on_the_way_in),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
