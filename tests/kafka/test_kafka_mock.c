/*
 * The shoal-kafka-mock TEST cluster and the kafkatest helpers: produce and
 * read back with headers, and a cooperative-sticky consumer group that
 * splits the partitions, commits offsets, and hands them to a later member.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "kafkatest.h"

#define NMSG 1000
#define NPART 4
#define QUOTA 100 /* messages per partition "processed" before the commit */

static kt_mock mock;
static int per_part[NPART]; /* messages produced per partition */

static int setup(void **state)
{
	const char *bin = getenv("SHOAL_KAFKA_MOCK_BIN");
	const char *topics[] = {"t:4", NULL};

	if (!bin) {
		fprintf(stderr, "SHOAL_KAFKA_MOCK_BIN is not set\n");
		return -1;
	}
	return kt_mock_start(&mock, bin, 3, topics);
}

static int teardown(void **state)
{
	kt_mock_stop(&mock);
	int st = mock.status;
	kt_mock_stop(&mock); /* idempotent */
	/* the mock shut down cleanly (no sanitizer report either) */
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static void test_produce_and_read_back(void **state)
{
	char err[512], key[32], val[64], idx[16];
	rd_kafka_t *p = kt_producer_new(mock.bootstrap, err, sizeof(err));
	kt_msg *msgs;
	size_t n;

	assert_non_null(p);
	for (int i = 0; i < NMSG; i++) {
		snprintf(key, sizeof(key), "k%04d", i);
		snprintf(val, sizeof(val), "value-%d", i * 7);
		snprintf(idx, sizeof(idx), "%d", i);
		const char *hdrs[] = {"x-idx", idx, "x-src", "test", NULL};
		assert_int_equal(kt_produce(p, "t", RD_KAFKA_PARTITION_UA, key,
					    strlen(key), val, strlen(val),
					    hdrs),
				 0);
	}
	assert_int_equal(kt_flush(p, 30000), 0);
	kt_producer_destroy(p);

	assert_int_equal(
	    kt_read_all(mock.bootstrap, "t", NMSG, 30000, &msgs, &n), 0);
	assert_int_equal(n, NMSG);
	char seen[NMSG] = {0};
	int64_t next[NPART] = {0};
	for (size_t i = 0; i < n; i++) {
		const kt_msg *m = &msgs[i];
		assert_non_null(m->key);
		int k = atoi((const char *)m->key + 1);
		assert_true(k >= 0 && k < NMSG);
		assert_false(seen[k]);
		seen[k] = 1;
		snprintf(key, sizeof(key), "k%04d", k);
		snprintf(val, sizeof(val), "value-%d", k * 7);
		assert_int_equal(m->keylen, strlen(key));
		assert_string_equal(m->key, key);
		assert_int_equal(m->len, strlen(val));
		assert_string_equal(m->value, val);
		assert_int_equal(m->nheaders, 2);
		snprintf(idx, sizeof(idx), "%d", k);
		assert_non_null(kt_msg_header(m, "x-idx"));
		assert_string_equal(kt_msg_header(m, "x-idx"), idx);
		assert_string_equal(kt_msg_header(m, "x-src"), "test");
		assert_null(kt_msg_header(m, "nope"));
		assert_true(m->partition >= 0 && m->partition < NPART);
		/* per partition, offsets come in order with no gap */
		assert_int_equal(m->offset, next[m->partition]);
		next[m->partition]++;
	}
	for (int i = 0; i < NPART; i++) {
		per_part[i] = (int)next[i];
		/* keyed over 4 partitions: each gets a share */
		assert_true(per_part[i] > QUOTA);
	}
	kt_msgs_free(msgs, n);

	/* A topic the mock was not started with (a dead-letter topic): the
	 * 2.0.2 mock creates it on the producer's metadata request. */
	p = kt_producer_new(mock.bootstrap, err, sizeof(err));
	assert_non_null(p);
	for (int i = 0; i < 3; i++) {
		snprintf(val, sizeof(val), "dead-%d", i);
		const char *hdrs[] = {"x-error", "bad vector", NULL};
		assert_int_equal(
		    kt_produce(p, "t.dlq", 0, NULL, 0, val, strlen(val), hdrs),
		    0);
	}
	assert_int_equal(kt_flush(p, 30000), 0);
	kt_producer_destroy(p);
	assert_int_equal(
	    kt_read_all(mock.bootstrap, "t.dlq", 3, 30000, &msgs, &n), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		snprintf(val, sizeof(val), "dead-%zu", i);
		assert_null(msgs[i].key);
		assert_string_equal(msgs[i].value, val);
		assert_int_equal(msgs[i].offset, (int64_t)i);
		assert_string_equal(kt_msg_header(&msgs[i], "x-error"),
				    "bad vector");
	}
	kt_msgs_free(msgs, n);

	/* nothing expected: a short empty read, not a hang */
	assert_int_equal(
	    kt_read_all(mock.bootstrap, "t.empty", 0, 1000, &msgs, &n), 0);
	assert_int_equal(n, 0);
	kt_msgs_free(msgs, n);
}

/* ---- consumer group
 * ---------------------------------------------------------- */

struct member {
	const char *name;
	rd_kafka_t *rk;
	int rebalances;
	int assigned; /* partitions held now */
	int64_t last_change;
	const char *protocol;
	int revoke_commits; /* commits made on revoke */
	int revoke_commit_err;
	int64_t maxoff[NPART]; /* highest offset seen per partition */
	int below_quota;       /* messages seen with offset < QUOTA */
};

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct member *m = opaque;
	rd_kafka_error_t *e = NULL;
	const char *proto = rd_kafka_rebalance_protocol(rk);

	m->protocol = proto;
	m->rebalances++;
	m->last_change = kt_now_ms();
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		if (!strcmp(proto, "COOPERATIVE"))
			e = rd_kafka_incremental_assign(rk, parts);
		else
			assert_int_equal(rd_kafka_assign(rk, parts), 0);
		m->assigned += parts->cnt;
	} else {
		/* What a worker does: commit what it processed before the
		 * partitions go, so the next owner resumes there. */
		if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS &&
		    !rd_kafka_assignment_lost(rk)) {
			rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
			m->revoke_commits++;
			if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET) {
				m->revoke_commit_err = cerr;
				fprintf(stderr, "%s: commit on revoke: %s\n",
					m->name, rd_kafka_err2str(cerr));
			}
		}
		if (!strcmp(proto, "COOPERATIVE"))
			e = rd_kafka_incremental_unassign(rk, parts);
		else
			assert_int_equal(rd_kafka_assign(rk, NULL), 0);
		m->assigned -= parts->cnt;
	}
	if (e) {
		fprintf(stderr, "%s: %s\n", m->name, rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
		fail();
	}
	fprintf(stderr, "%s: %s %d partition(s) (%s), holds %d\n", m->name,
		err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assigned"
							    : "revoked",
		parts->cnt, proto, m->assigned);
}

static rd_kafka_t *consumer_new(const char *group, struct member *m)
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	char err[512];
	const char *kv[] = {
	    "bootstrap.servers",
	    mock.bootstrap,
	    "group.id",
	    group,
	    "partition.assignment.strategy",
	    "cooperative-sticky",
	    "auto.offset.reset",
	    "earliest",
	    "enable.auto.commit",
	    "false",
	    /* the app stores the offset of what it processed */
	    "enable.auto.offset.store",
	    "false",
	    "session.timeout.ms",
	    "6000",
	    "heartbeat.interval.ms",
	    "300",
	    "log_level",
	    "4",
	    NULL,
	};
	for (int i = 0; kv[i]; i += 2) {
		if (rd_kafka_conf_set(c, kv[i], kv[i + 1], err, sizeof(err))) {
			fprintf(stderr, "%s: %s\n", kv[i], err);
			fail();
		}
	}
	rd_kafka_conf_set_rebalance_cb(c, rebalance_cb);
	rd_kafka_conf_set_opaque(c, m);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
	if (!rk) {
		fprintf(stderr, "consumer: %s\n", err);
		fail();
	}
	rd_kafka_poll_set_consumer(rk);
	rd_kafka_topic_partition_list_t *t =
	    rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(t, "t", RD_KAFKA_PARTITION_UA);
	assert_int_equal(rd_kafka_subscribe(rk, t), 0);
	rd_kafka_topic_partition_list_destroy(t);
	m->rk = rk;
	return rk;
}

/* Polls one message: "processes" (stores the offset of) messages below
 * QUOTA on each partition, ignores the rest.  Returns 1 for a message. */
static int poll_one(struct member *m, int timeout_ms, int64_t *got_off,
		    int32_t *got_part)
{
	rd_kafka_message_t *rm = rd_kafka_consumer_poll(m->rk, timeout_ms);
	int r = 0;

	if (!rm)
		return 0;
	if (rm->err) {
		if (rm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
			fprintf(stderr, "%s: %s\n", m->name,
				rd_kafka_message_errstr(rm));
	} else {
		*got_off = rm->offset;
		*got_part = rm->partition;
		r = 1;
		if (rm->partition >= 0 && rm->partition < NPART &&
		    rm->offset > m->maxoff[rm->partition])
			m->maxoff[rm->partition] = rm->offset;
		if (rm->offset < QUOTA)
			m->below_quota++;
		if (rm->offset < QUOTA) {
			rd_kafka_topic_partition_list_t *l =
			    rd_kafka_topic_partition_list_new(1);
			rd_kafka_topic_partition_list_add(l, "t", rm->partition)
			    ->offset = rm->offset + 1;
			rd_kafka_resp_err_t err =
			    rd_kafka_offsets_store(m->rk, l);
			if (err || l->elems[0].err)
				fprintf(stderr,
					"%s: offsets_store [%d]@%lld: %s\n",
					m->name, rm->partition,
					(long long)rm->offset,
					rd_kafka_err2str(
					    err ? err : l->elems[0].err));
			rd_kafka_topic_partition_list_destroy(l);
		}
	}
	rd_kafka_message_destroy(rm);
	return r;
}

static void test_cooperative_group_commit_resume(void **state)
{
	char group[64];
	struct member a = {.name = "c1"}, b = {.name = "c2"},
		      c = {.name = "c3"};
	int64_t off;
	int32_t part;

	snprintf(group, sizeof(group), "g-%lld", (long long)kt_now_ms());
	for (int i = 0; i < NPART; i++)
		a.maxoff[i] = b.maxoff[i] = c.maxoff[i] = -1;

	/* c1 alone gets all 4 partitions and processes (stores) the first
	 * QUOTA messages of each. */
	consumer_new(group, &a);
	int64_t t0 = kt_now_ms(), deadline = t0 + 60000;
	int done = 0;
	while (!done && kt_now_ms() < deadline) {
		poll_one(&a, 50, &off, &part);
		done = a.assigned == NPART;
		for (int i = 0; i < NPART; i++)
			done = done && a.maxoff[i] >= QUOTA - 1;
	}
	fprintf(stderr, "c1 alone: holds %d after %lld ms\n", a.assigned,
		(long long)(kt_now_ms() - t0));
	assert_true(done);
	assert_string_equal(a.protocol, "COOPERATIVE");

	/* c2 joins: an incremental rebalance moves 2 partitions, c1 keeps the
	 * other 2 all along and commits before giving any up.  Poll both
	 * until the split holds for 2 s. */
	int a_rebal = a.rebalances, a_min = a.assigned;
	consumer_new(group, &b);
	t0 = kt_now_ms();
	deadline = t0 + 60000;
	int settled = 0;
	while (kt_now_ms() < deadline) {
		poll_one(&a, 50, &off, &part);
		poll_one(&b, 50, &off, &part);
		if (a.assigned < a_min)
			a_min = a.assigned;
		int64_t now = kt_now_ms();
		if (a.assigned + b.assigned == NPART && a.assigned > 0 &&
		    b.assigned > 0 && now - a.last_change > 2000 &&
		    now - b.last_change > 2000) {
			settled = 1;
			break;
		}
	}
	fprintf(stderr,
		"group settled=%d after %lld ms: c1 %d (never below %d), "
		"c2 %d partitions, c1 %d rebalance events, c2 %d, c1 "
		"commits on revoke %d, c2 messages below the commit %d\n",
		settled, (long long)(kt_now_ms() - t0), a.assigned, a_min,
		b.assigned, a.rebalances - a_rebal, b.rebalances,
		a.revoke_commits, b.below_quota);
	assert_true(settled);
	assert_string_equal(b.protocol, "COOPERATIVE");
	assert_int_equal(a.assigned, 2);
	assert_int_equal(b.assigned, 2);
	/* cooperative: c1 was never stripped of everything */
	assert_int_equal(a_min, 2);
	assert_true(a.revoke_commits >= 1);
	if (a.revoke_commit_err == 0) {
		/* c2 resumed the moved partitions at c1's commit */
		assert_int_equal(b.below_quota, 0);
	} else {
		/* The coordinator may refuse the commit when the next
		 * rebalance has begun (the mock does under load): c2 then
		 * re-reads the moved partitions from the start, which is
		 * at-least-once, and nothing else. */
		assert_int_equal(a.revoke_commit_err,
				 RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
		assert_true(b.below_quota <= b.assigned * QUOTA);
	}

	/* rd_kafka_assignment agrees with the callbacks and is a split */
	rd_kafka_topic_partition_list_t *la, *lb;
	assert_int_equal(rd_kafka_assignment(a.rk, &la), 0);
	assert_int_equal(rd_kafka_assignment(b.rk, &lb), 0);
	assert_int_equal(la->cnt, a.assigned);
	assert_int_equal(lb->cnt, b.assigned);
	int owner[NPART] = {0};
	for (int i = 0; i < la->cnt; i++)
		owner[la->elems[i].partition] |= 1;
	for (int i = 0; i < lb->cnt; i++)
		owner[lb->elems[i].partition] |= 2;
	for (int i = 0; i < NPART; i++)
		assert_true(owner[i] == 1 || owner[i] == 2);
	rd_kafka_topic_partition_list_destroy(la);
	rd_kafka_topic_partition_list_destroy(lb);

	/* Commit synchronously: c1 has stored offsets on its partitions
	 * (already committed on the revoke, so NO_OFFSET is fine too), c2
	 * stored nothing. */
	rd_kafka_resp_err_t cerr = rd_kafka_commit(a.rk, NULL, 0);
	assert_true(cerr == 0 || cerr == RD_KAFKA_RESP_ERR__NO_OFFSET);
	cerr = rd_kafka_commit(b.rk, NULL, 0);
	assert_true(cerr == 0 || cerr == RD_KAFKA_RESP_ERR__NO_OFFSET);

	/* The broker has QUOTA committed for every partition. */
	rd_kafka_topic_partition_list_t *q =
	    rd_kafka_topic_partition_list_new(NPART);
	for (int i = 0; i < NPART; i++)
		rd_kafka_topic_partition_list_add(q, "t", i);
	assert_int_equal(rd_kafka_committed(a.rk, q, 10000), 0);
	for (int i = 0; i < NPART; i++) {
		assert_int_equal(q->elems[i].err, 0);
		assert_int_equal(q->elems[i].offset, QUOTA);
	}
	rd_kafka_topic_partition_list_destroy(q);

	assert_int_equal(rd_kafka_consumer_close(a.rk), 0);
	rd_kafka_destroy(a.rk);
	assert_int_equal(rd_kafka_consumer_close(b.rk), 0);
	rd_kafka_destroy(b.rk);

	/* A new member resumes at the committed offsets: it gets exactly the
	 * messages at or above QUOTA, each once. */
	int expect = 0;
	for (int i = 0; i < NPART; i++)
		expect += per_part[i] - QUOTA;
	char *seen[NPART];
	for (int i = 0; i < NPART; i++) {
		seen[i] = calloc((size_t)per_part[i], 1);
		assert_non_null(seen[i]);
	}
	consumer_new(group, &c);
	int got = 0;
	t0 = kt_now_ms();
	deadline = t0 + 60000;
	while (got < expect && kt_now_ms() < deadline) {
		if (!poll_one(&c, 100, &off, &part))
			continue;
		assert_true(part >= 0 && part < NPART);
		if (off < QUOTA)
			fprintf(stderr, "c3: got [%d]@%lld below the commit\n",
				part, (long long)off);
		assert_true(off >= QUOTA && off < per_part[part]);
		assert_false(seen[part][off]);
		seen[part][off] = 1;
		got++;
	}
	fprintf(stderr, "c3: %d of %d messages after %lld ms, holds %d\n", got,
		expect, (long long)(kt_now_ms() - t0), c.assigned);
	assert_int_equal(got, expect);
	assert_int_equal(c.assigned, NPART);
	/* and nothing more arrives */
	int64_t quiet = kt_now_ms() + 500;
	while (kt_now_ms() < quiet)
		assert_int_equal(poll_one(&c, 50, &off, &part), 0);
	assert_int_equal(rd_kafka_consumer_close(c.rk), 0);
	rd_kafka_destroy(c.rk);
	for (int i = 0; i < NPART; i++)
		free(seen[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_produce_and_read_back),
	    cmocka_unit_test(test_cooperative_group_commit_resume),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
