/* shoal-ingest's worker: consumer, batches, senders, offsets. See worker.h. */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <xxhash.h>

#include "error.h"
#include "log.h"
#include "metrics.h"
#include "record.h"
#include "shoal.h"

#define LOG "ingest"
#define MAX_BATCH 10000 /* the SDK's limit of points per write */
#define MAX_EMBED 1024	/* the embedding servers' limit of texts per call */

/* Outcomes of a record, for /metrics. */
enum { OP_UPSERT, OP_DELETE, OP_INVALID, NOPS };
enum { OUT_APPLIED, OUT_IGNORED, OUT_DEAD, NOUTS };
static const char *const op_names[NOPS] = {"upsert", "delete", "invalid"};
static const char *const out_names[NOUTS] = {"applied", "ignored",
					     "dead_lettered"};

/* One consumed message. */
struct rec {
	int64_t offset;
	int64_t ts_ms; /* the message's Kafka timestamp, -1 when none */
	bool parsed;   /* r holds the change */
	bool dead;     /* goes to the dead-letter topic */
	int code;      /* why it is dead */
	char *why;
	sh_ingest_record r;
	/* the original message, held (not copied) until the record is
	 * written: should the record be refused, by the parser or by a node,
	 * it goes to the dead-letter topic as it came */
	rd_kafka_message_t *msg;
	const float *vec; /* the vector written: r.vector or an embedding */
};

/* One assigned partition. The consumer thread owns everything; fields read
 * by /metrics are written under w->mu. */
struct part {
	char *topic;
	int32_t partition;
	const char *dlq; /* its dead-letter topic */
	struct rec *q;	 /* queued records q[head..n) */
	size_t head, n, cap;
	uint64_t first_us; /* when q[head] arrived */
	bool inflight;	   /* a batch holds some of its records */
	bool paused;
	bool revoking;
	int64_t next_offset; /* the offset after the last consumed one */
	int64_t stored;	     /* the offset stored for commit, -1 none */
	struct part *next;
};

/* What a batch holds of one partition: recs[r0..r1), offsets below end. */
struct bpart {
	struct part *p;
	int64_t end;
	size_t r0, r1;
};

struct batch {
	struct rec *recs;
	size_t n;
	struct bpart *parts;
	size_t nparts;
	atomic_bool abandon; /* set by the consumer thread: give up */
	bool abandoned;	     /* the sender gave up: store nothing */
	uint64_t counts[NOPS][NOUTS];
	struct batch *next;  /* in jobs or done */
	struct batch *anext; /* in active: handed out, not yet reaped */
};

struct sh_ingest {
	sh_ingest_opts o;
	char **topics;	  /* copies */
	char **dlqs;	  /* the dead-letter topic of each */
	rd_kafka_t *rk;	  /* consumer */
	rd_kafka_t *prod; /* dead-letter producer */
	rd_kafka_queue_t *cq;
	shoal_client *client;
	shoal_embedder *embedder;
	char *model;
	atomic_bool stop;
	atomic_int state; /* health */

	pthread_t *senders;
	int nsenders;
	pthread_mutex_t mu; /* jobs, done, parts' shared fields */
	pthread_cond_t jobs_cv, done_cv;
	struct batch *jobs, *jobs_tail, *done, *active;
	int inflight; /* batches handed out, not yet processed back */
	bool senders_stop;

	struct part *parts;
	char fatal[512];
	int fatal_rc;

	/* metrics */
	atomic_uint_fast64_t records[NOPS][NOUTS];
	atomic_uint_fast64_t consumed, batches, retries, rebalances, pauses;
	atomic_uint_fast64_t commits, commit_errors, write_errors[32];
	sh_size_histogram batch_size;
	sh_histogram freshness, write_latency;
};

void sh_ingest_opts_default(sh_ingest_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->batch_size = 500;
	o->linger_ms = 5;
	o->max_inflight = 4;
	o->max_pending = 20000;
	o->timeout_ms = 10000;
	o->backoff_ms = 50;
	o->backoff_max_ms = 5000;
	o->revoke_timeout_ms = 10000;
	o->commit_interval_ms = 1000;
}

static int64_t wall_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void rec_clear(struct rec *r)
{
	sh_ingest_record_clear(&r->r);
	free(r->why);
	if (r->msg)
		rd_kafka_message_destroy(r->msg);
	memset(r, 0, sizeof(*r));
}

/* Errors that say nothing about the data: retry them (a misconfigured
 * --router that answers EUNSUPPORTED, or a node whose storage is failing,
 * must not send good records to the dead-letter topic). */
static bool transient(int rc)
{
	switch (rc) {
	case SHOAL_EIO:
	case SHOAL_ETIMEDOUT:
	case SHOAL_EBUSY:
	case SHOAL_EMOVED:
	case SHOAL_ENOMEM:
	case SHOAL_EFULL:
	case SHOAL_EUNSUPPORTED:
	case SHOAL_ECORRUPT:
		return true;
	default:
		return false;
	}
}

/* ---- Dead letters ---------------------------------------------------------
 */

/* Marks r for the dead-letter topic, with the reason. */
static void rec_reject(struct rec *r, int code, const char *why)
{
	r->dead = true;
	r->code = code;
	free(r->why);
	r->why = strdup(why ? why : "");
}

struct dr_state {
	atomic_int pending, failed;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
			void *opaque)
{
	(void)rk;
	(void)opaque;
	struct dr_state *s = m->_private;
	if (!s)
		return;
	if (m->err)
		atomic_fetch_add(&s->failed, 1);
	atomic_fetch_sub(&s->pending, 1);
}

/* Produces every dead record of b to its partition's dead-letter topic
 * and waits for their delivery. SH_OK, or SH_EIO when one failed (the
 * caller retries them all: a duplicate dead letter beats a lost one). */
static int send_dead(sh_ingest *w, struct batch *b)
{
	struct dr_state st = {0};
	for (size_t pi = 0; pi < b->nparts; pi++) {
		struct bpart *bp = &b->parts[pi];
		for (size_t k = bp->r0; k < bp->r1; k++) {
			struct rec *r = &b->recs[k];
			if (!r->dead)
				continue;
			rd_kafka_headers_t *orig = NULL, *h;
			if (rd_kafka_message_headers(r->msg, &orig) ==
				RD_KAFKA_RESP_ERR_NO_ERROR &&
			    orig)
				h = rd_kafka_headers_copy(orig);
			else
				h = rd_kafka_headers_new(6);
			char part[16], off[24];
			snprintf(part, sizeof(part), "%d",
				 (int)bp->p->partition);
			snprintf(off, sizeof(off), "%lld",
				 (long long)r->offset);
			const char *name = shoal_errname(r->code);
			rd_kafka_header_add(h, "shoal-error", -1,
					    r->why ? r->why : "", -1);
			rd_kafka_header_add(h, "shoal-error-code", -1, name,
					    -1);
			rd_kafka_header_add(h, "shoal-source-topic", -1,
					    bp->p->topic, -1);
			rd_kafka_header_add(h, "shoal-source-partition", -1,
					    part, -1);
			rd_kafka_header_add(h, "shoal-source-offset", -1, off,
					    -1);
			atomic_fetch_add(&st.pending, 1);
			rd_kafka_resp_err_t e;
			for (;;) {
				e = rd_kafka_producev(
				    w->prod, RD_KAFKA_V_TOPIC(bp->p->dlq),
				    RD_KAFKA_V_KEY(r->msg->key,
						   r->msg->key_len),
				    RD_KAFKA_V_VALUE(r->msg->payload,
						     r->msg->len),
				    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
				    RD_KAFKA_V_HEADERS(h),
				    RD_KAFKA_V_OPAQUE(&st), RD_KAFKA_V_END);
				if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
					break;
				rd_kafka_poll(w->prod, 50);
			}
			if (e) {
				rd_kafka_headers_destroy(h);
				atomic_fetch_sub(&st.pending, 1);
				atomic_fetch_add(&st.failed, 1);
				sh_warn(LOG, "dead-letter topic %s: %s",
					bp->p->dlq, rd_kafka_err2str(e));
			}
		}
	}
	while (atomic_load(&st.pending) > 0)
		rd_kafka_flush(w->prod, 100);
	return atomic_load(&st.failed) ? SH_EIO : SH_OK;
}

/* ---- Writes ---------------------------------------------------------------
 */

static shoal_id rec_id(const struct rec *r, char *buf)
{
	if (r->r.id.kind == SH_PID_U64)
		return shoal_id_num(r->r.id.num);
	memcpy(buf, r->r.id.str, r->r.id.len);
	buf[r->r.id.len] = 0;
	return shoal_id_str(buf);
}

/* Sleeps ms, or less when b is abandoned. */
static void nap(struct batch *b, int ms)
{
	for (int t = 0; t < ms && !atomic_load(&b->abandon); t += 10) {
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* One attempt at writing recs[0..n) (one collection, one op, distinct
 * ids), embedding texts first. Counts outcomes into b on success. */
static int write_once(sh_ingest *w, struct batch *b, struct rec **recs,
		      size_t n, char *err, size_t errlen)
{
	char(*ids)[SH_PID_MAX_STR + 1] = calloc(n, sizeof(*ids));
	shoal_point *pts = NULL;
	shoal_id *dids = NULL;
	uint64_t *vers = NULL;
	float *emb = NULL;
	shoal_write_result *res = NULL;
	int rc = SH_ENOMEM;
	if (!ids)
		goto out;
	const char *coll = recs[0]->r.collection;
	uint64_t t0 = sh_now_us();
	if (recs[0]->r.op == SH_INGEST_UPSERT) {
		/* texts without vectors: embed them, MAX_EMBED at a time */
		size_t ntext = 0;
		for (size_t i = 0; i < n; i++)
			if (!recs[i]->r.vector)
				ntext++;
		if (ntext) {
			const char **texts = calloc(ntext, sizeof(*texts));
			size_t dim = 0, at = 0;
			if (!texts)
				goto out;
			for (size_t i = 0; i < n; i++)
				if (!recs[i]->r.vector)
					texts[at++] = recs[i]->r.text;
			for (size_t s = 0; s < ntext; s += MAX_EMBED) {
				size_t m = ntext - s < MAX_EMBED ? ntext - s
								 : MAX_EMBED;
				shoal_embeddings *e = NULL;
				rc = shoal_embed(w->embedder, w->model,
						 texts + s, m, &e);
				if (rc != SHOAL_OK) {
					snprintf(err, errlen, "embedding: %s",
						 shoal_last_error());
					free(texts);
					goto out;
				}
				if (!emb) {
					dim = e->dim;
					emb =
					    malloc(ntext * dim * sizeof(float));
				}
				if (!emb || e->dim != dim) {
					rc = emb ? SH_EIO : SH_ENOMEM;
					snprintf(err, errlen, "%s",
						 emb ? "the embedding "
						       "servers answered "
						       "two dimensions"
						     : "out of memory");
					shoal_embeddings_free(e);
					free(texts);
					goto out;
				}
				memcpy(emb + s * dim, e->vectors,
				       m * dim * sizeof(float));
				shoal_embeddings_free(e);
			}
			free(texts);
			at = 0;
			for (size_t i = 0; i < n; i++)
				if (!recs[i]->r.vector) {
					recs[i]->vec = emb + at * dim;
					recs[i]->r.dim = dim;
					at++;
				}
		}
		pts = calloc(n, sizeof(*pts));
		if (!pts)
			goto out;
		for (size_t i = 0; i < n; i++) {
			const struct rec *r = recs[i];
			pts[i].id = rec_id(r, ids[i]);
			pts[i].vector = r->r.vector ? r->r.vector : r->vec;
			pts[i].dim = r->r.dim;
			pts[i].payload_json = r->r.payload_json;
			pts[i].version = r->r.version;
		}
		rc = shoal_upsert(w->client, coll, pts, n, &res);
	} else {
		dids = calloc(n, sizeof(*dids));
		vers = calloc(n, sizeof(*vers));
		if (!dids || !vers)
			goto out;
		for (size_t i = 0; i < n; i++) {
			dids[i] = rec_id(recs[i], ids[i]);
			vers[i] = recs[i]->r.version;
		}
		rc = shoal_delete(w->client, coll, dids, vers, n, &res);
	}
	if (rc != SHOAL_OK) {
		snprintf(err, errlen, "%s", shoal_last_error());
		goto out;
	}
	sh_histogram_observe(&w->write_latency, sh_now_us() - t0);
	int op = recs[0]->r.op == SH_INGEST_UPSERT ? OP_UPSERT : OP_DELETE;
	int64_t now = wall_ms();
	for (size_t i = 0; i < n && i < res->n; i++) {
		int c = res->statuses[i].code;
		if (c == SHOAL_OK) {
			b->counts[op][OUT_APPLIED]++;
			if (recs[i]->ts_ms >= 0 && now >= recs[i]->ts_ms)
				sh_histogram_observe(
				    &w->freshness,
				    (uint64_t)(now - recs[i]->ts_ms) * 1000);
		} else {
			b->counts[op][OUT_IGNORED]++;
		}
	}
out:
	if (res)
		shoal_write_result_free(res);
	for (size_t i = 0; i < n; i++)
		recs[i]->vec = NULL;
	free(emb);
	free(ids);
	free(pts);
	free(dids);
	free(vers);
	if (rc == SH_ENOMEM && !*err)
		snprintf(err, errlen, "out of memory");
	return rc;
}

/* Writes recs[0..n) until it succeeds, retrying transient failures with
 * backoff; a failure that names the data is narrowed down by halves until
 * the bad records are found, and they are marked dead. Returns SH_OK, or
 * SH_EBUSY when the batch was abandoned. */
static int settle(sh_ingest *w, struct batch *b, struct rec **recs, size_t n)
{
	char err[512];
	int backoff = w->o.backoff_ms;
	for (;;) {
		err[0] = 0;
		int rc = write_once(w, b, recs, n, err, sizeof(err));
		if (rc == SHOAL_OK)
			return SH_OK;
		if (rc > 0 && rc < 32)
			atomic_fetch_add(&w->write_errors[rc], 1);
		if (!transient(rc)) {
			if (n == 1) {
				rec_reject(recs[0], rc, err);
				return SH_OK;
			}
			size_t h = n / 2;
			int r1 = settle(w, b, recs, h);
			if (r1 != SH_OK)
				return r1;
			return settle(w, b, recs + h, n - h);
		}
		if (atomic_load(&b->abandon))
			return SH_EBUSY;
		atomic_fetch_add(&w->retries, 1);
		sh_warn(LOG,
			"writing %zu records to %s failed (%s: %s); retrying "
			"in %d ms",
			n, recs[0]->r.collection, shoal_errname(rc), err,
			backoff);
		nap(b, backoff);
		if (atomic_load(&b->abandon))
			return SH_EBUSY;
		backoff = backoff * 2 > w->o.backoff_max_ms
			      ? w->o.backoff_max_ms
			      : backoff * 2;
	}
}

/* The newest change of every (collection, id) of the batch, grouped by
 * collection and op: groups[0..ng) of recs. Older changes of the same id
 * are counted as ignored (the node would ignore them too). */
static int cmp_group(const void *a, const void *bb)
{
	const struct rec *x = *(struct rec *const *)a;
	const struct rec *y = *(struct rec *const *)bb;
	int c = strcmp(x->r.collection, y->r.collection);
	if (c)
		return c;
	return (int)x->r.op - (int)y->r.op;
}

static uint64_t rec_hash(const struct rec *r)
{
	uint64_t h = XXH64(r->r.collection, strlen(r->r.collection), 0);
	if (r->r.id.kind == SH_PID_U64)
		return XXH64(&r->r.id.num, sizeof(r->r.id.num), h ^ 1);
	return XXH64(r->r.id.str, r->r.id.len, h ^ 2);
}

static bool rec_same_point(const struct rec *a, const struct rec *b)
{
	if (strcmp(a->r.collection, b->r.collection) ||
	    a->r.id.kind != b->r.id.kind)
		return false;
	if (a->r.id.kind == SH_PID_U64)
		return a->r.id.num == b->r.id.num;
	return a->r.id.len == b->r.id.len &&
	       !memcmp(a->r.id.str, b->r.id.str, a->r.id.len);
}

static int write_batch(sh_ingest *w, struct batch *b)
{
	size_t cap = 16;
	while (cap < 2 * b->n)
		cap *= 2;
	struct rec **slot = calloc(cap, sizeof(*slot));
	struct rec **live = calloc(b->n ? b->n : 1, sizeof(*live));
	if (!slot || !live) {
		free(slot);
		free(live);
		return SH_ENOMEM;
	}
	size_t nlive = 0;
	for (size_t i = 0; i < b->n; i++) {
		struct rec *r = &b->recs[i];
		if (r->dead || !r->parsed)
			continue;
		size_t h = (size_t)rec_hash(r) & (cap - 1);
		while (slot[h] && !rec_same_point(slot[h], r))
			h = (h + 1) & (cap - 1);
		int op = r->r.op == SH_INGEST_UPSERT ? OP_UPSERT : OP_DELETE;
		if (!slot[h]) {
			slot[h] = r;
			continue;
		}
		/* the later of equal versions wins, as at the node */
		struct rec *old = slot[h];
		if (r->r.version >= old->r.version) {
			int oop = old->r.op == SH_INGEST_UPSERT ? OP_UPSERT
								: OP_DELETE;
			b->counts[oop][OUT_IGNORED]++;
			slot[h] = r;
		} else {
			b->counts[op][OUT_IGNORED]++;
		}
	}
	for (size_t h = 0; h < cap; h++)
		if (slot[h])
			live[nlive++] = slot[h];
	free(slot);
	qsort(live, nlive, sizeof(*live), cmp_group);
	int rc = SH_OK;
	for (size_t s = 0; s < nlive && rc == SH_OK;) {
		size_t e = s + 1;
		while (e < nlive && !cmp_group(&live[s], &live[e]))
			e++;
		rc = settle(w, b, live + s, e - s);
		s = e;
	}
	free(live);
	return rc;
}

static void run_batch(sh_ingest *w, struct batch *b)
{
	int rc = write_batch(w, b);
	int backoff = w->o.backoff_ms;
	while (rc == SH_OK) {
		bool any = false;
		for (size_t i = 0; i < b->n; i++)
			any |= b->recs[i].dead;
		if (!any || send_dead(w, b) == SH_OK)
			break;
		if (atomic_load(&b->abandon)) {
			rc = SH_EBUSY;
			break;
		}
		atomic_fetch_add(&w->retries, 1);
		nap(b, backoff);
		backoff = backoff * 2 > w->o.backoff_max_ms
			      ? w->o.backoff_max_ms
			      : backoff * 2;
	}
	if (rc == SH_ENOMEM) {
		/* not the data's fault: try it again later */
		sh_warn(LOG, "out of memory writing a batch; abandoning it");
		rc = SH_EBUSY;
	}
	b->abandoned = rc != SH_OK;
	if (!b->abandoned)
		for (size_t i = 0; i < b->n; i++)
			if (b->recs[i].dead)
				b->counts[b->recs[i].parsed
					      ? (b->recs[i].r.op ==
							 SH_INGEST_UPSERT
						     ? OP_UPSERT
						     : OP_DELETE)
					      : OP_INVALID][OUT_DEAD]++;
}

static void *sender_main(void *arg)
{
	sh_ingest *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->jobs && !w->senders_stop)
			pthread_cond_wait(&w->jobs_cv, &w->mu);
		if (!w->jobs)
			break;
		struct batch *b = w->jobs;
		w->jobs = b->next;
		if (!w->jobs)
			w->jobs_tail = NULL;
		pthread_mutex_unlock(&w->mu);
		run_batch(w, b);
		pthread_mutex_lock(&w->mu);
		b->next = w->done;
		w->done = b;
		pthread_cond_broadcast(&w->done_cv);
		rd_kafka_queue_yield(w->cq);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* ---- Partitions -------------------------------------------------------------
 */

static struct part *find_part(sh_ingest *w, const char *topic, int32_t p)
{
	for (struct part *x = w->parts; x; x = x->next)
		if (x->partition == p && !strcmp(x->topic, topic))
			return x;
	return NULL;
}

static const char *dlq_of(sh_ingest *w, const char *topic)
{
	for (size_t i = 0; i < w->o.ntopics; i++)
		if (!strcmp(w->topics[i], topic))
			return w->dlqs[i];
	return w->dlqs[0];
}

static struct part *add_part(sh_ingest *w, const char *topic, int32_t p)
{
	struct part *x = find_part(w, topic, p);
	if (x)
		return x;
	x = calloc(1, sizeof(*x));
	if (!x || !(x->topic = strdup(topic))) {
		free(x);
		return NULL;
	}
	x->partition = p;
	x->dlq = dlq_of(w, topic);
	x->next_offset = -1;
	x->stored = -1;
	pthread_mutex_lock(&w->mu);
	x->next = w->parts;
	w->parts = x;
	pthread_mutex_unlock(&w->mu);
	return x;
}

static void drop_queue(struct part *x)
{
	for (size_t i = x->head; i < x->n; i++)
		rec_clear(&x->q[i]);
	x->head = x->n = 0;
}

static void remove_part(sh_ingest *w, struct part *x)
{
	pthread_mutex_lock(&w->mu);
	for (struct part **pp = &w->parts; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	pthread_mutex_unlock(&w->mu);
	drop_queue(x);
	free(x->q);
	free(x->topic);
	free(x);
}

static void set_paused(sh_ingest *w, struct part *x, bool pause)
{
	rd_kafka_topic_partition_list_t *l =
	    rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, x->topic, x->partition);
	rd_kafka_resp_err_t e = pause ? rd_kafka_pause_partitions(w->rk, l)
				      : rd_kafka_resume_partitions(w->rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (e) {
		sh_warn(LOG, "%s %s [%d]: %s", pause ? "pause" : "resume",
			x->topic, (int)x->partition, rd_kafka_err2str(e));
		return;
	}
	x->paused = pause;
	if (pause)
		atomic_fetch_add(&w->pauses, 1);
	sh_debug(LOG, "%s %s [%d] (%zu queued)", pause ? "paused" : "resumed",
		 x->topic, (int)x->partition, x->n - x->head);
}

/* ---- The consumer thread ---------------------------------------------------
 */

/* Queues m (the record keeps it; m is destroyed otherwise). */
static void handle_message(sh_ingest *w, rd_kafka_message_t *m)
{
	const char *topic = rd_kafka_topic_name(m->rkt);
	struct part *x = find_part(w, topic, m->partition);
	/* Not ours (any more: its owner reads it), or already queued
	 * (offsets only move forward). */
	if (!x || x->revoking ||
	    (x->next_offset >= 0 && m->offset < x->next_offset)) {
		rd_kafka_message_destroy(m);
		return;
	}
	if (x->n == x->cap) {
		if (x->head > 0) {
			memmove(x->q, x->q + x->head,
				(x->n - x->head) * sizeof(*x->q));
			x->n -= x->head;
			x->head = 0;
		} else {
			size_t nc = x->cap ? 2 * x->cap : 256;
			struct rec *nq = realloc(x->q, nc * sizeof(*nq));
			if (!nq) {
				/* skipping it would commit past it: stop, and
				 * the next start reads it again */
				snprintf(w->fatal, sizeof(w->fatal),
					 "out of memory queueing a record");
				w->fatal_rc = SH_ENOMEM;
				atomic_store(&w->stop, true);
				rd_kafka_message_destroy(m);
				return;
			}
			x->q = nq;
			x->cap = nc;
		}
	}
	struct rec *r = &x->q[x->n];
	memset(r, 0, sizeof(*r));
	r->offset = m->offset;
	rd_kafka_timestamp_type_t tt;
	r->ts_ms = rd_kafka_message_timestamp(m, &tt);
	if (tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
		r->ts_ms = -1;

	const void *ct = NULL;
	size_t ctlen = 0;
	char ctype[128] = "";
	rd_kafka_headers_t *h = NULL;
	if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
	    rd_kafka_header_get_last(h, "content-type", &ct, &ctlen) ==
		RD_KAFKA_RESP_ERR_NO_ERROR &&
	    ct && ctlen < sizeof(ctype)) {
		memcpy(ctype, ct, ctlen);
		ctype[ctlen] = 0;
	}
	char err[512];
	int rc = sh_ingest_parse(m->payload, m->len, sh_ingest_format_of(ctype),
				 m->key, m->key_len, &r->r, err, sizeof(err));
	if (rc == SH_OK) {
		r->parsed = true;
		if (r->r.op == SH_INGEST_UPSERT && !r->r.vector &&
		    !w->embedder) {
			snprintf(err, sizeof(err),
				 "the record has a text and no vector, and "
				 "shoal-ingest has no --embed servers to embed "
				 "it");
			rc = SH_EINVAL;
		}
	}
	r->msg = m;
	if (rc != SH_OK)
		rec_reject(r, rc, err);
	if (x->head == x->n)
		x->first_us = sh_now_us();
	pthread_mutex_lock(&w->mu);
	x->n++;
	x->next_offset = m->offset + 1;
	pthread_mutex_unlock(&w->mu);
	atomic_fetch_add(&w->consumed, 1);
	if (!x->paused && x->n - x->head >= (size_t)w->o.max_pending)
		set_paused(w, x, true);
}

/* Hands batches to the senders while there is room: records of the
 * partitions with none in flight, full batches at once, the rest when
 * their oldest record has waited linger_ms. Returns the microseconds until
 * the next linger deadline (or a default). */
static uint64_t dispatch(sh_ingest *w)
{
	uint64_t now = sh_now_us(), next = 100000;
	uint64_t linger = (uint64_t)w->o.linger_ms * 1000;
	for (;;) {
		if (w->inflight >= w->o.max_inflight || atomic_load(&w->stop))
			return next;
		size_t ready = 0;
		bool due = false;
		for (struct part *x = w->parts; x; x = x->next) {
			if (x->inflight || x->revoking || x->head == x->n)
				continue;
			ready += x->n - x->head;
			if (x->first_us + linger <= now)
				due = true;
			else if (x->first_us + linger - now < next)
				next = x->first_us + linger - now;
		}
		if (!ready || (!due && ready < (size_t)w->o.batch_size))
			return next;

		size_t want = ready < (size_t)w->o.batch_size
				  ? ready
				  : (size_t)w->o.batch_size;
		struct batch *b = calloc(1, sizeof(*b));
		size_t np = 0;
		for (struct part *x = w->parts; x; x = x->next)
			np += !x->inflight && !x->revoking && x->head < x->n;
		if (b) {
			b->recs = calloc(want, sizeof(*b->recs));
			b->parts = calloc(np, sizeof(*b->parts));
		}
		if (!b || !b->recs || !b->parts) {
			if (b) {
				free(b->recs);
				free(b->parts);
				free(b);
			}
			sh_warn(LOG, "out of memory cutting a batch");
			return 10000;
		}
		/* oldest partitions first */
		while (b->n < want) {
			struct part *best = NULL;
			for (struct part *x = w->parts; x; x = x->next)
				if (!x->inflight && !x->revoking &&
				    x->head < x->n &&
				    (!best || x->first_us < best->first_us))
					best = x;
			if (!best)
				break;
			size_t take = best->n - best->head;
			if (take > want - b->n)
				take = want - b->n;
			memcpy(b->recs + b->n, best->q + best->head,
			       take * sizeof(*b->recs));
			b->parts[b->nparts].p = best;
			b->parts[b->nparts].r0 = b->n;
			b->n += take;
			b->parts[b->nparts].r1 = b->n;
			b->parts[b->nparts].end = b->recs[b->n - 1].offset + 1;
			b->nparts++;
			best->head += take;
			best->inflight = true;
			if (best->head == best->n)
				best->head = best->n = 0;
			else
				best->first_us = now;
		}
		sh_size_histogram_observe(&w->batch_size, b->n);
		atomic_fetch_add(&w->batches, 1);
		pthread_mutex_lock(&w->mu);
		if (w->jobs_tail)
			w->jobs_tail->next = b;
		else
			w->jobs = b;
		w->jobs_tail = b;
		b->anext = w->active;
		w->active = b;
		w->inflight++;
		pthread_cond_signal(&w->jobs_cv);
		pthread_mutex_unlock(&w->mu);
	}
}

/* Stores the offsets of the batches the senders finished, resumes drained
 * partitions, frees the batches. */
static void reap(sh_ingest *w)
{
	pthread_mutex_lock(&w->mu);
	struct batch *b = w->done;
	w->done = NULL;
	pthread_mutex_unlock(&w->mu);
	while (b) {
		struct batch *nb = b->next;
		rd_kafka_topic_partition_list_t *l =
		    rd_kafka_topic_partition_list_new((int)b->nparts);
		for (size_t i = 0; i < b->nparts; i++) {
			struct part *x = b->parts[i].p;
			x->inflight = false;
			if (b->abandoned)
				continue;
			pthread_mutex_lock(&w->mu);
			x->stored = b->parts[i].end;
			pthread_mutex_unlock(&w->mu);
			rd_kafka_topic_partition_list_add(l, x->topic,
							  x->partition)
			    ->offset = b->parts[i].end;
		}
		if (l->cnt) {
			rd_kafka_resp_err_t e =
			    rd_kafka_offsets_store(w->rk, l);
			if (e)
				sh_warn(LOG, "storing offsets: %s",
					rd_kafka_err2str(e));
		}
		rd_kafka_topic_partition_list_destroy(l);
		if (!b->abandoned)
			for (int o = 0; o < NOPS; o++)
				for (int k = 0; k < NOUTS; k++)
					atomic_fetch_add(&w->records[o][k],
							 b->counts[o][k]);
		pthread_mutex_lock(&w->mu);
		for (struct batch **pp = &w->active; *pp; pp = &(*pp)->anext)
			if (*pp == b) {
				*pp = b->anext;
				break;
			}
		w->inflight--;
		pthread_mutex_unlock(&w->mu);
		for (size_t i = 0; i < b->n; i++)
			rec_clear(&b->recs[i]);
		free(b->recs);
		free(b->parts);
		free(b);
		b = nb;
	}
	for (struct part *x = w->parts; x; x = x->next)
		if (x->paused && !x->revoking &&
		    x->n - x->head <= (size_t)w->o.max_pending / 2)
			set_paused(w, x, false);
}

/* Waits until no batch holds a partition marked revoking: grace_ms, then
 * abandons those batches and waits for their senders to give up. */
static void drain_revoking(sh_ingest *w, int grace_ms)
{
	uint64_t until = sh_now_us() + (uint64_t)grace_ms * 1000;
	bool abandoned = false;
	for (;;) {
		reap(w);
		bool busy = false;
		for (struct part *x = w->parts; x; x = x->next)
			busy |= x->revoking && x->inflight;
		if (!busy)
			return;
		if (!abandoned && sh_now_us() >= until) {
			/* the batches still holding them are told to give up */
			pthread_mutex_lock(&w->mu);
			for (struct batch *b = w->active; b; b = b->anext)
				for (size_t i = 0; i < b->nparts; i++)
					if (b->parts[i].p->revoking)
						atomic_store(&b->abandon, true);
			pthread_mutex_unlock(&w->mu);
			sh_warn(LOG,
				"batches of revoked partitions still "
				"unwritten after %d ms: abandoned (the "
				"new owner writes them again)",
				grace_ms);
			abandoned = true;
		}
		pthread_mutex_lock(&w->mu);
		if (!w->done)
			sh_cond_wait_until(&w->done_cv, &w->mu,
					   sh_now_us() + 20000);
		pthread_mutex_unlock(&w->mu);
	}
}

static rd_kafka_topic_partition_list_t *stored_offsets(sh_ingest *w,
						       bool revoking_only)
{
	rd_kafka_topic_partition_list_t *l =
	    rd_kafka_topic_partition_list_new(4);
	for (struct part *x = w->parts; x; x = x->next)
		if (x->stored >= 0 && (!revoking_only || x->revoking))
			rd_kafka_topic_partition_list_add(l, x->topic,
							  x->partition)
			    ->offset = x->stored;
	return l;
}

/* Commits what was written of the revoking partitions, synchronously. */
static void commit_revoking(sh_ingest *w)
{
	rd_kafka_topic_partition_list_t *l = stored_offsets(w, true);
	if (l->cnt) {
		rd_kafka_resp_err_t e = rd_kafka_commit(w->rk, l, 0);
		if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
			atomic_fetch_add(&w->commit_errors, 1);
			sh_warn(LOG,
				"committing before giving partitions up: %s",
				rd_kafka_err2str(e));
		} else {
			atomic_fetch_add(&w->commits, 1);
		}
	}
	rd_kafka_topic_partition_list_destroy(l);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
			 rd_kafka_topic_partition_list_t *l, void *opaque)
{
	sh_ingest *w = opaque;
	atomic_fetch_add(&w->rebalances, 1);
	/* known once the group is joined (the assignor can be changed with
	 * -X partition.assignment.strategy) */
	bool coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
	if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		for (int i = 0; i < l->cnt; i++) {
			struct part *x = add_part(w, l->elems[i].topic,
						  l->elems[i].partition);
			if (!x) {
				snprintf(w->fatal, sizeof(w->fatal),
					 "out of memory on assignment");
				w->fatal_rc = SH_ENOMEM;
				atomic_store(&w->stop, true);
			}
			sh_info(LOG, "assigned %s [%d]", l->elems[i].topic,
				(int)l->elems[i].partition);
		}
		rd_kafka_error_t *err = NULL;
		rd_kafka_resp_err_t ae = RD_KAFKA_RESP_ERR_NO_ERROR;
		if (coop)
			err = rd_kafka_incremental_assign(rk, l);
		else
			ae = rd_kafka_assign(rk, l);
		if (err) {
			sh_warn(LOG, "assign: %s", rd_kafka_error_string(err));
			rd_kafka_error_destroy(err);
		} else if (ae) {
			sh_warn(LOG, "assign: %s", rd_kafka_err2str(ae));
		}
		return;
	}
	/* Revoked (or lost, or an error): give the partitions up cleanly. */
	bool lost = e != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ||
		    rd_kafka_assignment_lost(rk);
	for (int i = 0; i < l->cnt; i++) {
		struct part *x =
		    find_part(w, l->elems[i].topic, l->elems[i].partition);
		if (!x)
			continue;
		x->revoking = true;
		drop_queue(x);
	}
	drain_revoking(w, lost ? 0 : w->o.revoke_timeout_ms);
	if (!lost)
		commit_revoking(w);
	for (int i = 0; i < l->cnt; i++) {
		struct part *x =
		    find_part(w, l->elems[i].topic, l->elems[i].partition);
		sh_info(LOG, "%s %s [%d]%s", lost ? "lost" : "revoked",
			l->elems[i].topic, (int)l->elems[i].partition,
			x && x->stored >= 0 ? "" : " (nothing written)");
		if (x)
			remove_part(w, x);
	}
	if (coop && e == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
		rd_kafka_error_t *err = rd_kafka_incremental_unassign(rk, l);
		if (err) {
			sh_warn(LOG, "unassign: %s",
				rd_kafka_error_string(err));
			rd_kafka_error_destroy(err);
		}
	} else {
		rd_kafka_assign(rk, NULL);
	}
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac,
		   const char *buf)
{
	/* the producer is given every -X property too: its warnings about
	 * consumer-only ones are noise */
	if (rd_kafka_type(rk) == RD_KAFKA_PRODUCER && !strcmp(fac, "CONFWARN"))
		level = 7;
	if (level <= 3)
		sh_error(LOG, "kafka %s: %s", fac, buf);
	else if (level <= 4)
		sh_warn(LOG, "kafka %s: %s", fac, buf);
	else if (level <= 6)
		sh_info(LOG, "kafka %s: %s", fac, buf);
	else
		sh_debug(LOG, "kafka %s: %s", fac, buf);
}

static int conf_set(rd_kafka_conf_t *c, const char *k, const char *v, char *err,
		    size_t errlen)
{
	char e[256];
	if (rd_kafka_conf_set(c, k, v, e, sizeof(e)) != RD_KAFKA_CONF_OK)
		return sh_errf(err, errlen, SH_EINVAL, "-X %s=%s: %s", k, v, e);
	return SH_OK;
}

/* shoal's settings, then the user's key=value properties over them. */
static int make_conf(const sh_ingest_opts *o, const char *const *own,
		     rd_kafka_conf_t **out, char *err, size_t errlen)
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	int rc = conf_set(c, "bootstrap.servers", o->brokers, err, errlen);
	for (size_t i = 0; own[i] && rc == SH_OK; i += 2)
		rc = conf_set(c, own[i], own[i + 1], err, errlen);
	for (size_t i = 0; i < o->nprops && rc == SH_OK; i++) {
		const char *eq = strchr(o->kafka_props[i], '=');
		char key[256];
		if (!eq || eq == o->kafka_props[i] ||
		    (size_t)(eq - o->kafka_props[i]) >= sizeof(key)) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "-X %s: expected key=value",
				     o->kafka_props[i]);
			break;
		}
		memcpy(key, o->kafka_props[i],
		       (size_t)(eq - o->kafka_props[i]));
		key[eq - o->kafka_props[i]] = 0;
		rc = conf_set(c, key, eq + 1, err, errlen);
	}
	if (rc != SH_OK) {
		rd_kafka_conf_destroy(c);
		return rc;
	}
	rd_kafka_conf_set_log_cb(c, on_log);
	*out = c;
	return SH_OK;
}

int sh_ingest_open(const sh_ingest_opts *o, sh_ingest **out, char *err,
		   size_t errlen)
{
	*out = NULL;
	if (!o->brokers || !*o->brokers || !o->group || !*o->group ||
	    !o->ntopics || !o->router || !*o->router)
		return sh_errf(err, errlen, SH_EINVAL,
			       "brokers, group, at least one topic and the "
			       "router are required");
	if (o->batch_size < 1 || o->batch_size > MAX_BATCH ||
	    o->linger_ms < 0 || o->max_inflight < 1 || o->max_pending < 1 ||
	    o->timeout_ms < 1 || o->backoff_ms < 1 ||
	    o->backoff_max_ms < o->backoff_ms || o->revoke_timeout_ms < 0 ||
	    o->commit_interval_ms < 1)
		return sh_errf(err, errlen, SH_EINVAL,
			       "bad batching, retry or commit settings");
	sh_ingest *w = calloc(1, sizeof(*w));
	if (!w)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	w->o = *o;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->jobs_cv, NULL);
	sh_cond_init_mono(&w->done_cv);
	int rc = SH_ENOMEM;
	w->topics = calloc(o->ntopics, sizeof(*w->topics));
	w->dlqs = calloc(o->ntopics, sizeof(*w->dlqs));
	if (!w->topics || !w->dlqs)
		goto nomem;
	for (size_t i = 0; i < o->ntopics; i++) {
		char buf[512];
		if (!*o->topics[i] || strlen(o->topics[i]) > 249) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "topic '%s': 1..249 characters",
				     o->topics[i]);
			goto fail;
		}
		snprintf(buf, sizeof(buf), "%s.dlq", o->topics[i]);
		w->topics[i] = strdup(o->topics[i]);
		w->dlqs[i] =
		    strdup(o->dlq_topic && *o->dlq_topic ? o->dlq_topic : buf);
		if (!w->topics[i] || !w->dlqs[i])
			goto nomem;
	}
	w->o.topics = NULL; /* borrowed: use w->topics */
	w->o.kafka_props = NULL;
	w->o.embed_urls = NULL;
	w->o.dlq_topic = NULL;
	w->o.brokers = w->o.group = w->o.router = w->o.model = NULL;
	if (o->model && *o->model && !(w->model = strdup(o->model)))
		goto nomem;

	char interval[24], errstr[512];
	snprintf(interval, sizeof(interval), "%d", o->commit_interval_ms);
	const char *cons[] = {
	    "group.id", o->group, "client.id", "shoal-ingest",
	    "partition.assignment.strategy", "cooperative-sticky",
	    "enable.auto.commit", "true", "enable.auto.offset.store", "false",
	    "auto.commit.interval.ms", interval, "auto.offset.reset",
	    "earliest", "enable.partition.eof", "false",
	    /* freshness: a broker holds an empty fetch
	     * this long (librdkafka's default is 500 ms) */
	    "fetch.wait.max.ms", "10", NULL};
	rd_kafka_conf_t *c;
	if ((rc = make_conf(o, cons, &c, err, errlen)) != SH_OK)
		goto fail;
	rd_kafka_conf_set_rebalance_cb(c, on_rebalance);
	rd_kafka_conf_set_opaque(c, w);
	w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof(errstr));
	if (!w->rk) {
		rd_kafka_conf_destroy(c);
		rc = sh_errf(err, errlen, SH_EINVAL, "kafka consumer: %s",
			     errstr);
		goto fail;
	}
	rd_kafka_poll_set_consumer(w->rk);
	w->cq = rd_kafka_queue_get_consumer(w->rk);

	const char *prod[] = {"client.id",
			      "shoal-ingest-dlq",
			      "acks",
			      "all",
			      "message.timeout.ms",
			      "30000",
			      "linger.ms",
			      "1",
			      NULL};
	if ((rc = make_conf(o, prod, &c, err, errlen)) != SH_OK)
		goto fail;
	rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
	w->prod = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
	if (!w->prod) {
		rd_kafka_conf_destroy(c);
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "kafka dead-letter producer: %s", errstr);
		goto fail;
	}

	if ((rc = shoal_connect(o->router, o->timeout_ms, &w->client)) !=
	    SHOAL_OK) {
		sh_errf(err, errlen, rc, "router %s: %s", o->router,
			shoal_last_error());
		goto fail;
	}
	if (o->nembed && (rc = shoal_embedder_connect(
			      o->embed_urls, o->nembed, o->timeout_ms,
			      &w->embedder)) != SHOAL_OK) {
		sh_errf(err, errlen, rc, "embedding servers: %s",
			shoal_last_error());
		goto fail;
	}
	*out = w;
	return SH_OK;
nomem:
	rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
fail:
	sh_ingest_close(w);
	return rc;
}

static int start_senders(sh_ingest *w, char *err, size_t errlen)
{
	w->senders = calloc((size_t)w->o.max_inflight, sizeof(*w->senders));
	if (!w->senders)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	for (int i = 0; i < w->o.max_inflight; i++) {
		if (pthread_create(&w->senders[i], NULL, sender_main, w))
			return sh_errf(err, errlen, SH_ENOMEM,
				       "cannot start a sender thread");
		w->nsenders = i + 1;
	}
	return SH_OK;
}

static void stop_senders(sh_ingest *w)
{
	pthread_mutex_lock(&w->mu);
	w->senders_stop = true;
	pthread_cond_broadcast(&w->jobs_cv);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < w->nsenders; i++)
		pthread_join(w->senders[i], NULL);
	w->nsenders = 0;
	free(w->senders);
	w->senders = NULL;
}

static void handle_error(sh_ingest *w, const rd_kafka_message_t *m)
{
	if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		return;
	const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
	sh_warn(LOG, "consumer: %s%s%s", topic, *topic ? ": " : "",
		rd_kafka_message_errstr(m));
	(void)w;
}

int sh_ingest_run(sh_ingest *w, char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *sub =
	    rd_kafka_topic_partition_list_new((int)w->o.ntopics);
	for (size_t i = 0; i < w->o.ntopics; i++)
		rd_kafka_topic_partition_list_add(sub, w->topics[i],
						  RD_KAFKA_PARTITION_UA);
	rd_kafka_resp_err_t e = rd_kafka_subscribe(w->rk, sub);
	rd_kafka_topic_partition_list_destroy(sub);
	if (e)
		return sh_errf(err, errlen, SH_EINVAL, "subscribe: %s",
			       rd_kafka_err2str(e));
	int rc = start_senders(w, err, errlen);
	if (rc != SH_OK) {
		stop_senders(w);
		return rc;
	}
	atomic_store(&w->state, 1);
	char ferr[256];
	while (!atomic_load(&w->stop)) {
		uint64_t wait_us = dispatch(w);
		int tmo = (int)((wait_us + 999) / 1000);
		rd_kafka_message_t *m =
		    rd_kafka_consumer_poll(w->rk, tmo > 100 ? 100 : tmo);
		for (int k = 0; m; k++) {
			if (m->err) {
				handle_error(w, m);
				rd_kafka_message_destroy(m);
			} else {
				handle_message(w, m);
			}
			if (k >= 1000 || atomic_load(&w->stop))
				break;
			m = rd_kafka_consumer_poll(w->rk, 0);
		}
		reap(w);
		if (rd_kafka_fatal_error(w->rk, ferr, sizeof(ferr))) {
			snprintf(w->fatal, sizeof(w->fatal), "kafka: %s", ferr);
			w->fatal_rc = SH_EIO;
			break;
		}
	}
	atomic_store(&w->state, 2);
	/* Stop: what is queued stays unconsumed (committed offsets stay
	 * behind it), what is in flight gets the revoke grace. */
	for (struct part *x = w->parts; x; x = x->next) {
		x->revoking = true;
		drop_queue(x);
	}
	drain_revoking(w, w->o.revoke_timeout_ms);
	commit_revoking(w);
	rd_kafka_resp_err_t ce = rd_kafka_consumer_close(w->rk);
	if (ce)
		sh_warn(LOG, "closing the consumer: %s", rd_kafka_err2str(ce));
	stop_senders(w);
	rd_kafka_flush(w->prod, 5000);
	if (w->fatal_rc)
		return sh_errf(err, errlen, w->fatal_rc, "%s", w->fatal);
	return SH_OK;
}

void sh_ingest_stop(sh_ingest *w)
{
	atomic_store(&w->stop, true);
	if (w->cq)
		rd_kafka_queue_yield(w->cq);
}

int sh_ingest_health(sh_ingest *w)
{
	return atomic_load(&w->state);
}

void sh_ingest_metrics(sh_ingest *w, FILE *f)
{
	sh_metric_head(f, "shoal_ingest_records_total", "counter",
		       "Records written, by op and outcome (applied; ignored: "
		       "an equal or newer version was stored or came in the "
		       "same batch; dead_lettered).");
	for (int o = 0; o < NOPS; o++)
		for (int k = 0; k < NOUTS; k++)
			fprintf(
			    f,
			    "shoal_ingest_records_total{op=\"%s\","
			    "outcome=\"%s\"} %llu\n",
			    op_names[o], out_names[k],
			    (unsigned long long)atomic_load(&w->records[o][k]));
	uint64_t dead = 0;
	for (int o = 0; o < NOPS; o++)
		dead += atomic_load(&w->records[o][OUT_DEAD]);
	sh_metric_head(f, "shoal_ingest_dead_letters_total", "counter",
		       "Records sent to the dead-letter topic.");
	fprintf(f, "shoal_ingest_dead_letters_total %llu\n",
		(unsigned long long)dead);
	struct {
		const char *name, *help;
		atomic_uint_fast64_t *v;
	} ctr[] = {
	    {"shoal_ingest_consumed_total", "Messages consumed.", &w->consumed},
	    {"shoal_ingest_batches_total", "Batches cut.", &w->batches},
	    {"shoal_ingest_write_retries_total",
	     "Writes retried after a transient failure.", &w->retries},
	    {"shoal_ingest_rebalances_total",
	     "Assignments and revocations of partitions.", &w->rebalances},
	    {"shoal_ingest_pauses_total",
	     "Partitions paused because their queue was full.", &w->pauses},
	    {"shoal_ingest_commits_total", "Synchronous offset commits.",
	     &w->commits},
	    {"shoal_ingest_commit_errors_total", "Failed offset commits.",
	     &w->commit_errors},
	};
	for (size_t i = 0; i < sizeof(ctr) / sizeof(ctr[0]); i++) {
		sh_metric_head(f, ctr[i].name, "counter", ctr[i].help);
		fprintf(f, "%s %llu\n", ctr[i].name,
			(unsigned long long)atomic_load(ctr[i].v));
	}
	sh_metric_head(f, "shoal_ingest_write_errors_total", "counter",
		       "Failed write calls, by error code.");
	for (int c = 0; c < 32; c++) {
		uint64_t v = atomic_load(&w->write_errors[c]);
		if (v)
			fprintf(f,
				"shoal_ingest_write_errors_total{code=\"%s\"} "
				"%llu\n",
				shoal_errname(c), (unsigned long long)v);
	}
	sh_metric_head(f, "shoal_ingest_batch_size", "histogram",
		       "Records per batch.");
	sh_size_histogram_write(&w->batch_size, f, "shoal_ingest_batch_size",
				"");
	sh_metric_head(f, "shoal_ingest_write_duration_seconds", "histogram",
		       "One write call through the router.");
	sh_histogram_write(&w->write_latency, f,
			   "shoal_ingest_write_duration_seconds", "");
	sh_metric_head(f, "shoal_ingest_freshness_seconds", "histogram",
		       "From a record's Kafka timestamp to its write's "
		       "acknowledgement.");
	sh_histogram_write(&w->freshness, f, "shoal_ingest_freshness_seconds",
			   "");

	sh_metric_head(f, "shoal_ingest_consumer_lag", "gauge",
		       "Messages of an assigned partition not yet consumed "
		       "(high watermark - position).");
	pthread_mutex_lock(&w->mu);
	int inflight = w->inflight;
	for (struct part *x = w->parts; x; x = x->next) {
		int64_t lo = -1, hi = -1;
		rd_kafka_get_watermark_offsets(w->rk, x->topic, x->partition,
					       &lo, &hi);
		int64_t pos = x->next_offset >= 0 ? x->next_offset : lo;
		fprintf(
		    f,
		    "shoal_ingest_consumer_lag{topic=\"%s\",partition=\"%d\"}"
		    " %lld\n",
		    x->topic, (int)x->partition,
		    (long long)(hi >= 0 && pos >= 0 && hi > pos ? hi - pos
								: 0));
	}
	sh_metric_head(f, "shoal_ingest_queued_records", "gauge",
		       "Records consumed and waiting for a batch.");
	for (struct part *x = w->parts; x; x = x->next)
		fprintf(f,
			"shoal_ingest_queued_records{topic=\"%s\",partition="
			"\"%d\"} %zu\n",
			x->topic, (int)x->partition, x->n - x->head);
	sh_metric_head(f, "shoal_ingest_committable_offset", "gauge",
		       "The offset after the last record written (stored for "
		       "commit), -1 before the first.");
	for (struct part *x = w->parts; x; x = x->next)
		fprintf(f,
			"shoal_ingest_committable_offset{topic=\"%s\","
			"partition=\"%d\"} %lld\n",
			x->topic, (int)x->partition, (long long)x->stored);
	pthread_mutex_unlock(&w->mu);
	sh_metric_head(f, "shoal_ingest_batches_in_flight", "gauge",
		       "Batches being written.");
	fprintf(f, "shoal_ingest_batches_in_flight %d\n", inflight);
}

void sh_ingest_close(sh_ingest *w)
{
	if (!w)
		return;
	stop_senders(w);
	while (w->parts)
		remove_part(w, w->parts);
	if (w->cq)
		rd_kafka_queue_destroy(w->cq);
	if (w->rk)
		rd_kafka_destroy(w->rk);
	if (w->prod) {
		rd_kafka_flush(w->prod, 1000);
		rd_kafka_destroy(w->prod);
	}
	if (w->client)
		shoal_close(w->client);
	if (w->embedder)
		shoal_embedder_close(w->embedder);
	for (size_t i = 0; w->topics && i < w->o.ntopics; i++)
		free(w->topics[i]);
	for (size_t i = 0; w->dlqs && i < w->o.ntopics; i++)
		free(w->dlqs[i]);
	free(w->topics);
	free(w->dlqs);
	free(w->model);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->jobs_cv);
	pthread_cond_destroy(&w->done_cv);
	free(w);
}
