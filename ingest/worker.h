/*
 * shoal-ingest's worker: one librdkafka consumer in a consumer group that
 * turns topic messages (record.h) into batched writes through a router.
 *
 * The shape of it (docs/ingest.md has the user's side):
 *
 * - The consumer thread (sh_ingest_run) polls librdkafka, parses each
 *   message into its partition's queue, and cuts batches: records of the
 *   partitions that have no batch in flight, up to batch_size records,
 *   closed when full or when the oldest waited linger_ms. A partition has
 *   at most one batch in flight, so two changes of one id (keyed, hence in
 *   one partition) never race; different partitions' batches run in
 *   parallel on up to max_inflight sender threads.
 * - A sender writes its batch through the SDK to the router: one upsert and
 *   one delete per collection, the newest version of each id only (an older
 *   one would be ignored by the node anyway); texts without vectors are
 *   embedded first. Transient failures (no answer, a node down, busy) are
 *   retried with exponential backoff until they succeed, for as long as
 *   the partitions stay assigned; a failure that names the data (wrong
 *   dimension, unknown collection, ...) is narrowed down by halving the
 *   group until the offending records are found, and those go to the
 *   dead-letter topic with the error. Parse errors go there too.
 * - Only after a batch is durably acknowledged (and its dead letters are
 *   delivered) does the consumer thread store the offset past it; stored
 *   offsets are committed every commit_interval_ms, on revoke and on
 *   close. At-least-once delivery plus the nodes' per-point versions gives
 *   an exactly-once effect.
 * - Back-pressure: a partition whose queue reaches max_pending records is
 *   paused and resumed when it drains to half of that.
 * - Revoke (cooperative-sticky rebalance): queued records of the revoked
 *   partitions are dropped (their new owner reads them again from the
 *   committed offset), batches in flight get revoke_timeout_ms to finish
 *   and are then abandoned, and what was written is committed before the
 *   partitions are given up.
 */
#ifndef SH_INGEST_WORKER_H
#define SH_INGEST_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct sh_ingest_opts {
	const char *brokers;	   /* bootstrap.servers */
	const char *group;	   /* group.id */
	const char *const *topics; /* 1.. topics to consume */
	size_t ntopics;
	const char *const *kafka_props; /* "key=value" librdkafka properties,
					   applied after shoal's own */
	size_t nprops;
	const char *dlq_topic;	       /* NULL or "": "<topic>.dlq" per topic */
	const char *router;	       /* nng URL of the shoal-router */
	const char *const *embed_urls; /* shoal-embed servers, or none */
	size_t nembed;
	const char *model;	/* embedding model (NULL: the default) */
	int batch_size;		/* records per batch, 1..10000 */
	int linger_ms;		/* longest wait of a record for a batch */
	int max_inflight;	/* batches (sender threads) at once */
	int max_pending;	/* queued records that pause a partition */
	int timeout_ms;		/* one write or embed call */
	int backoff_ms;		/* first retry delay, doubled up to */
	int backoff_max_ms;	/* this */
	int revoke_timeout_ms;	/* in-flight batches' grace on revoke */
	int commit_interval_ms; /* auto.commit.interval.ms */
} sh_ingest_opts;

/* Defaults: batch 500, linger 5 ms, 4 in flight, 20000 pending, 10 s
 * calls, backoff 50 ms .. 5 s, revoke grace 10 s, commit every 1 s. */
void sh_ingest_opts_default(sh_ingest_opts *o);

typedef struct sh_ingest sh_ingest;

/* Checks the options, creates the consumer and the dead-letter producer
 * (connections are made in the background) and connects to the router and
 * the embedding servers. SH_OK, or an error with a message in err. */
int sh_ingest_open(const sh_ingest_opts *o, sh_ingest **out, char *err,
		   size_t errlen);

/* Consumes until sh_ingest_stop: returns SH_OK after a clean stop (batches
 * in flight finished, offsets committed, the group left), or an error
 * that stopped it with a message in err. One thread. */
int sh_ingest_run(sh_ingest *w, char *err, size_t errlen);

/* Asks sh_ingest_run to stop; any thread, any number of times. */
void sh_ingest_stop(sh_ingest *w);

/* Prometheus text for /metrics; any thread. */
void sh_ingest_metrics(sh_ingest *w, FILE *f);

/* /healthz: 0 starting, 1 consuming, 2 stopping. */
int sh_ingest_health(sh_ingest *w);

/* Frees everything (after sh_ingest_run returned, or instead of it). */
void sh_ingest_close(sh_ingest *w);

#endif
