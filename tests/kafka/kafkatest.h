/*
 * Kafka test helpers for integration tests and benchmarks: run the
 * shoal-kafka-mock TEST cluster as a child process, produce to it and read
 * topics back.  No cmocka here, so benchmarks can link it too.  Every
 * function returning int gives 0 on success and -1 on failure.
 */
#ifndef SHOAL_KAFKATEST_H
#define SHOAL_KAFKATEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <librdkafka/rdkafka.h>

typedef struct kt_mock {
	pid_t pid;	     /* 0 when not running */
	char dir[64];	     /* mkdtemp dir holding the ready file */
	char bootstrap[512]; /* "host:port,host:port,..." */
	int status;	     /* wait status once stopped, -1 before */
} kt_mock;

/* Spawns the shoal-kafka-mock binary at bin with brokers brokers and the
 * NULL-terminated topics ("name:partitions[:replication]"), and waits up to
 * 30 s for it to be ready.  The child gets PR_SET_PDEATHSIG(SIGKILL): it
 * dies with the calling *thread*, so call this from a thread that lives as
 * long as the mock is needed (the main thread). */
int kt_mock_start(kt_mock *m, const char *bin, int brokers,
		  const char *const *topics);
/* SIGTERM, wait (SIGKILL after 10 s), remove the temp dir.  Idempotent.
 * m->status then holds the mock's wait status: a clean stop is
 * WIFEXITED(status) && WEXITSTATUS(status) == 0 (a sanitizer finding in
 * the mock shows up as a non-zero exit). */
void kt_mock_stop(kt_mock *m);

/* A producer with acks=all and a small linger; NULL with err filled. */
rd_kafka_t *kt_producer_new(const char *bootstrap, char *err, size_t errlen);
/* Enqueues one message (copied), polling while the queue is full; -1 on
 * any other error.  partition is RD_KAFKA_PARTITION_UA to partition by
 * key.  headers are name,value pairs terminated by NULL (may be NULL). */
int kt_produce(rd_kafka_t *p, const char *topic, int32_t partition,
	       const void *key, size_t keylen, const void *value, size_t len,
	       const char *const *headers);
/* Flushes; 0 only when every message produced so far by p was delivered. */
int kt_flush(rd_kafka_t *p, int timeout_ms);
/* Destroys a producer from kt_producer_new (flushing nothing). */
void kt_producer_destroy(rd_kafka_t *p);

typedef struct kt_header {
	char *name;
	void *value; /* NUL-terminated copy; NULL for a null header */
	size_t len;
} kt_header;

typedef struct kt_msg {
	void *key; /* NUL-terminated copies; NULL when absent */
	size_t keylen;
	void *value;
	size_t len;
	int32_t partition;
	int64_t offset;
	kt_header *headers;
	size_t nheaders;
} kt_msg;

/* Reads topic from the earliest offsets (all partitions assigned, with a
 * fresh random group.id) until expect messages arrived or timeout_ms
 * passed; expect < 0 reads until the timeout.  Returns 0 with out and n
 * set (fewer than expect messages on timeout: check n), -1 on error.
 * Free with kt_msgs_free.  On the shoal-kafka-mock a missing topic is
 * auto-created by the metadata lookup (so it reads as empty); on a broker
 * without auto-creation it fails after timeout_ms. */
int kt_read_all(const char *bootstrap, const char *topic, int expect,
		int timeout_ms, kt_msg **out, size_t *n);
void kt_msgs_free(kt_msg *m, size_t n);
/* The value of the first header named name (NUL-terminated), or NULL. */
const char *kt_msg_header(const kt_msg *m, const char *name);

/* Copies one consumed message into out (as kt_read_all does). */
int kt_msg_copy(const rd_kafka_message_t *rm, kt_msg *out);
/* Monotonic milliseconds. */
int64_t kt_now_ms(void);

#endif
