/*
 * shoal-kafka-mock: a TEST Kafka cluster for integration tests and benchmarks.
 *
 * This is NOT a Kafka broker.  It hosts librdkafka's built-in mock cluster
 * (rdkafka_mock.h), which speaks the Kafka protocol on loopback ports but
 * keeps everything in memory, has no durability, no security, no real
 * replication and implements only the subset of the protocol that
 * librdkafka's own test-suite needs.  Never point anything production at it.
 *
 * It prints one line "bootstrap=HOST:PORT,..." on stdout, optionally writes
 * a ready file (PATH.tmp then rename) holding "bootstrap=...\npid=N\n", and
 * serves until SIGTERM or SIGINT, then destroys the cluster and exits 0.
 *
 * Topics not created with --topic: with librdkafka 2.0.2 the mock creates
 * a topic it does not know, with its defaults (4 partitions, replication
 * min(3, brokers)), as soon as any client sends a Metadata request naming
 * it: a producer producing to it, a consumer subscribing to it, or
 * rd_kafka_metadata() on it.  allow.auto.create.topics=false does not stop
 * this (the mock only speaks an old Metadata version without that flag;
 * librdkafka logs "allow.auto.create.topics=false not supported by
 * broker").  So a dead-letter topic "<topic>.dlq" works without --topic,
 * with 4 partitions; pass it with --topic to get another partition count,
 * or to have it exist before anything touches it (a regex subscription
 * only matches topics that already exist).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64
#define MAX_BROKERS 16

struct topic_spec {
	char name[250];
	int partitions;
	int replication; /* 0: min(3, brokers) */
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: shoal-kafka-mock [--brokers N] [--topic "
	    "NAME[:PARTITIONS[:REPLICATION]]]...\n"
	    "                        [--ready-file PATH] [--help]\n"
	    "\n"
	    "A TEST Kafka cluster for shoal's integration tests and "
	    "benchmarks:\n"
	    "librdkafka's in-memory mock brokers on loopback ports.  It is NOT "
	    "a\n"
	    "real Kafka broker (no durability, no security, partial "
	    "protocol);\n"
	    "never use it for anything but tests.\n"
	    "\n"
	    "  --brokers N          number of mock brokers, 1..%d (default 3)\n"
	    "  --topic SPEC         create topic NAME with PARTITIONS (default "
	    "4)\n"
	    "                       and REPLICATION (default min(3, "
	    "brokers));\n"
	    "                       repeatable\n"
	    "  --ready-file PATH    once up, write "
	    "\"bootstrap=...\\npid=N\\n\" to\n"
	    "                       PATH (atomically, via PATH.tmp and "
	    "rename)\n"
	    "  --help               this text\n"
	    "\n"
	    "Prints \"bootstrap=HOST:PORT,...\" on stdout once ready and "
	    "serves\n"
	    "until SIGTERM or SIGINT.\n"
	    "\n"
	    "Topics: a topic not given with --topic (say a dead-letter topic\n"
	    "\"<topic>.dlq\") is created by the mock, with 4 partitions, the\n"
	    "first time any client asks for its metadata (producing to it,\n"
	    "subscribing to it by name), even with\n"
	    "allow.auto.create.topics=false.  Give every topic whose "
	    "partition\n"
	    "count matters, or that a regex subscription must find, with\n"
	    "--topic.\n"
	    "\n"
	    "Retention: a partition keeps only its last 5 MiB of messages\n"
	    "(librdkafka 2.0's mock drops older ones, unread or not).\n",
	    MAX_BROKERS);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

static int parse_topic(const char *arg, struct topic_spec *t)
{
	const char *c1 = strchr(arg, ':');
	size_t nlen = c1 ? (size_t)(c1 - arg) : strlen(arg);
	char buf[32];

	if (nlen == 0 || nlen >= sizeof(t->name))
		return -1;
	memcpy(t->name, arg, nlen);
	t->name[nlen] = '\0';
	t->partitions = 4;
	t->replication = 0;
	if (!c1)
		return 0;
	const char *c2 = strchr(c1 + 1, ':');
	size_t plen = c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1);
	if (plen == 0 || plen >= sizeof(buf))
		return -1;
	memcpy(buf, c1 + 1, plen);
	buf[plen] = '\0';
	if (parse_int(buf, 1, 10000, &t->partitions))
		return -1;
	if (c2 && parse_int(c2 + 1, 1, MAX_BROKERS, &t->replication))
		return -1;
	return 0;
}

static int write_ready(const char *path, const char *bootstrap)
{
	size_t len = strlen(path) + 5;
	char *tmp = malloc(len);
	FILE *f;
	int rc = -1;

	if (!tmp)
		return -1;
	snprintf(tmp, len, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		goto out;
	fprintf(f, "bootstrap=%s\npid=%ld\n", bootstrap, (long)getpid());
	if (fflush(f) || fsync(fileno(f))) {
		fclose(f);
		unlink(tmp);
		goto out;
	}
	if (fclose(f) || rename(tmp, path)) {
		unlink(tmp);
		goto out;
	}
	rc = 0;
out:
	free(tmp);
	return rc;
}

int main(int argc, char **argv)
{
	static struct topic_spec topics[MAX_TOPICS];
	int ntopics = 0, brokers = 3, i, sig = 0;
	const char *ready = NULL;
	char errstr[512];
	sigset_t set;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (i + 1 >= argc) {
			fprintf(stderr,
				"shoal-kafka-mock: unknown flag or "
				"missing value: %s (see --help)\n",
				a);
			return 2;
		}
		const char *v = argv[++i];
		if (!strcmp(a, "--brokers")) {
			if (parse_int(v, 1, MAX_BROKERS, &brokers)) {
				fprintf(stderr,
					"shoal-kafka-mock: --brokers must be "
					"1..%d, got '%s'\n",
					MAX_BROKERS, v);
				return 2;
			}
		} else if (!strcmp(a, "--topic")) {
			if (ntopics == MAX_TOPICS) {
				fprintf(stderr,
					"shoal-kafka-mock: at most %d topics\n",
					MAX_TOPICS);
				return 2;
			}
			if (parse_topic(v, &topics[ntopics])) {
				fprintf(stderr,
					"shoal-kafka-mock: bad --topic '%s' "
					"(want NAME[:PARTITIONS[:REPLICATION]])"
					"\n",
					v);
				return 2;
			}
			ntopics++;
		} else if (!strcmp(a, "--ready-file")) {
			ready = v;
		} else {
			fprintf(stderr,
				"shoal-kafka-mock: unknown flag %s (see "
				"--help)\n",
				a);
			return 2;
		}
	}
	for (i = 0; i < ntopics; i++) {
		if (topics[i].replication > brokers) {
			fprintf(stderr,
				"shoal-kafka-mock: topic %s: replication %d > "
				"%d brokers\n",
				topics[i].name, topics[i].replication, brokers);
			return 2;
		}
		if (!topics[i].replication)
			topics[i].replication = brokers < 3 ? brokers : 3;
	}

	/* Block the signals before librdkafka starts its threads, so that
	 * they inherit the mask and only sigwait() below sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL)) {
		fprintf(stderr, "shoal-kafka-mock: pthread_sigmask failed\n");
		return 1;
	}

	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)))
		fprintf(stderr, "shoal-kafka-mock: %s\n", errstr);
	/* The handle only hosts the cluster; it never connects anywhere. */
	rd_kafka_t *rk =
	    rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!rk) {
		fprintf(stderr, "shoal-kafka-mock: rd_kafka_new: %s\n", errstr);
		return 1;
	}
	rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
	if (!mc) {
		fprintf(stderr, "shoal-kafka-mock: cannot create the mock "
				"cluster\n");
		rd_kafka_destroy(rk);
		return 1;
	}
	for (i = 0; i < ntopics; i++) {
		rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
		    mc, topics[i].name, topics[i].partitions,
		    topics[i].replication);
		if (err) {
			fprintf(stderr, "shoal-kafka-mock: topic %s: %s\n",
				topics[i].name, rd_kafka_err2str(err));
			rd_kafka_mock_cluster_destroy(mc);
			rd_kafka_destroy(rk);
			return 1;
		}
	}

	const char *bs = rd_kafka_mock_cluster_bootstraps(mc);
	printf("bootstrap=%s\n", bs);
	fflush(stdout);
	if (ready && write_ready(ready, bs)) {
		fprintf(stderr, "shoal-kafka-mock: cannot write %s: %s\n",
			ready, strerror(errno));
		rd_kafka_mock_cluster_destroy(mc);
		rd_kafka_destroy(rk);
		return 1;
	}

	while (sigwait(&set, &sig) != 0)
		;
	fprintf(stderr, "shoal-kafka-mock: %s, shutting down\n",
		sig == SIGINT ? "SIGINT" : "SIGTERM");
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	return 0;
}
