/*
 * Slot moves on a node (docs/rebalancing.md): the source's copy job and
 * its capture of writes, the target's imports, and the MigrateRequest
 * commands that drive both.
 *
 * ## The source's job
 *
 * START turns the capture on for the move's slots, under the write gate
 * held for writing, so that every write acknowledged from then on is
 * recorded (node_capture: the collection and the id, in the job's
 * captured set), and only then starts the job's thread, which
 *
 *   1. copies every point and tombstone of the slots, collection by
 *      collection, from one RocksDB snapshot per run of slots
 *      (sh_store_stream_points), to the target in ImportRequests;
 *   2. replays the captured writes: it takes the whole captured set, reads
 *      each point as it is now (live: vector, payload, version; deleted:
 *      its tombstone's version) and sends it, and goes on doing so as
 *      writes arrive (state READY);
 *   3. after FENCE (no write to the slots is acknowledged any more, and
 *      the ones in flight have been captured), takes the set once more and
 *      reports FENCED when a take finds it empty: the target has every
 *      acknowledged write.
 *
 * Why this loses nothing: a write acknowledged before the capture began is
 * in every snapshot the copy reads; one acknowledged after it is in the
 * captured set, and its point is sent, as it is at the time of the send,
 * after the write. Versions settle the rest: the target ignores an older
 * version than the one it has, so a copy that arrives after a newer replay
 * changes nothing, and a tombstone travels with its version so a deleted
 * point cannot come back. One thread sends everything in order over one
 * connection, and every send reads the point after the write it replays.
 *
 * The captured set is bounded (MIG_CAPTURE_MAX ids). When writes outrun
 * the replay past it, the set is cleared and the copy starts over from a
 * new snapshot (a new pass), which holds everything the cleared set named.
 *
 * The job lives in memory only. A restarted source has none: FENCE then
 * answers ENOTFOUND and the coordinator starts the copy again. What must
 * survive a crash (the fence, the handover) is in the persisted slot
 * state (slots.c).
 *
 * ## Locking
 *
 * n->mig_mu guards n->job (the pointer: created by START, freed by
 * ABORT_SOURCE, HANDOFF, FINISH_SOURCE or at close, never while another
 * thread uses it: every user holds mig_mu, or holds a reference (refs,
 * under job->mu: a FENCE waiting for the drain), or is the job's own
 * thread, which is joined before the free). job->mu guards the job's
 * state, counters and captured set; node_capture takes it once per
 * captured write. n->capture changes under the write gate held for
 * writing. Lock order: wgate, then mig_mu, then job->mu (node_capture
 * runs with wgate held for reading); the job's thread takes none but
 * job->mu.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "node_impl.h"
#include "rpc.h"

/* Captured writes held before a pass starts over (about 100 bytes each). */
#define MIG_CAPTURE_MAX (1u << 20)
/* An ImportRequest holds at most this many points or this many bytes. */
#define MIG_BATCH_POINTS 256
#define MIG_BATCH_BYTES (4u << 20)
/* Each send's deadline, and how long the job retries a target that does not
 * answer (or answers EIO, EBUSY) before it fails. */
#define MIG_SEND_TIMEOUT_MS 10000
#define MIG_GIVE_UP_MS 120000
/* How long FENCE waits for the drain when the request gives no deadline. */
#define MIG_FENCE_TIMEOUT_MS 30000

/* ---- The captured set -----------------------------------------------------
 */

struct cap_key {
	uint32_t coll;
	bool used;
	sh_pid pid;
};

/* Open addressing, linear probing, at most half full. */
struct cap_set {
	struct cap_key *e;
	size_t cap, n;
};

static uint64_t cap_hash(uint32_t coll, const sh_pid *pid)
{
	return sh_pid_hash(pid) ^ ((uint64_t)coll * 0x9E3779B97F4A7C15ull);
}

static void cap_clear(struct cap_set *s)
{
	free(s->e);
	memset(s, 0, sizeof(*s));
}

/* Adds (coll, pid); false when out of memory. */
static bool cap_add(struct cap_set *s, uint32_t coll, const sh_pid *pid)
{
	if (2 * (s->n + 1) > s->cap) {
		size_t nc = s->cap ? 2 * s->cap : 1024;
		struct cap_key *ne = calloc(nc, sizeof(*ne));
		if (!ne)
			return false;
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->e[i].used)
				continue;
			size_t h =
			    cap_hash(s->e[i].coll, &s->e[i].pid) & (nc - 1);
			while (ne[h].used)
				h = (h + 1) & (nc - 1);
			ne[h] = s->e[i];
		}
		free(s->e);
		s->e = ne;
		s->cap = nc;
	}
	size_t h = cap_hash(coll, pid) & (s->cap - 1);
	while (s->e[h].used) {
		if (s->e[h].coll == coll && sh_pid_eq(&s->e[h].pid, pid))
			return true;
		h = (h + 1) & (s->cap - 1);
	}
	s->e[h].used = true;
	s->e[h].coll = coll;
	s->e[h].pid = *pid;
	s->n++;
	return true;
}

/* ---- The job --------------------------------------------------------------
 */

struct mig_job {
	sh_node *n;
	uint64_t move_id;
	uint64_t slots[SH_SLOT_WORDS];
	uint32_t target_id;
	char target[256];
	uint64_t max_bps;
	sh_rpc *rpc;
	pthread_t thread;
	bool started;

	pthread_mutex_t mu;
	pthread_cond_t cv; /* state changes, captures, stop, fence */
	/* Guarded by mu. */
	Shoal__V1__MigrateState state;
	bool stop;
	bool fence;   /* FENCE asked: drain and report */
	bool drained; /* after fence: the target has every captured write */
	bool overflow;
	int refs; /* FENCE handlers waiting on the job without mig_mu */
	struct cap_set cap;
	char error[256];
	uint64_t points_total, copied, bytes, replayed, t0_us;
	uint32_t passes;
	uint64_t throttle_t0, throttle_bytes;
};

enum { JOB_STOPPED = 1000, JOB_OVERFLOW = 1001 };

static uint64_t now_us(void)
{
	return sh_now_us();
}

/* Waits on j->cv (j->mu held) until sh_now_us() reaches us. */
static void job_wait_until(struct mig_job *j, uint64_t us)
{
	sh_cond_wait_until(&j->cv, &j->mu, us);
}

/* Sleeps ms unless the job is stopped meanwhile; true when stopped. */
static bool job_sleep(struct mig_job *j, uint64_t ms)
{
	uint64_t until = now_us() + ms * 1000;
	pthread_mutex_lock(&j->mu);
	while (!j->stop && now_us() < until)
		job_wait_until(j, until);
	bool stop = j->stop;
	pthread_mutex_unlock(&j->mu);
	return stop;
}

static bool job_stopping(struct mig_job *j)
{
	pthread_mutex_lock(&j->mu);
	bool s = j->stop;
	pthread_mutex_unlock(&j->mu);
	return s;
}

void node_capture(sh_node *n, uint32_t coll, const sh_pid *id)
{
	if (!slot_bit(n->capture, sh_slot_of(id)))
		return;
	pthread_mutex_lock(&n->mig_mu);
	struct mig_job *j = n->job;
	if (j) {
		pthread_mutex_lock(&j->mu);
		if (j->cap.n >= MIG_CAPTURE_MAX || !cap_add(&j->cap, coll, id))
			j->overflow = true;
		pthread_cond_broadcast(&j->cv);
		pthread_mutex_unlock(&j->mu);
	}
	pthread_mutex_unlock(&n->mig_mu);
}

/* ---- Sending --------------------------------------------------------------
 */

/* One ImportRequest being filled: its objects live in `a`. */
struct batch {
	sh_arena a;
	Shoal__V1__ImportRequest ir;
	sh_store_coll coll; /* the collection, as it was at the start */
	uint32_t dim;
	size_t bytes; /* payloads and vectors so far */
	size_t cap;   /* room in points / tombstones */
};

static int batch_begin(struct batch *b, struct mig_job *j,
		       const sh_store_coll *c)
{
	memset(&b->a, 0, sizeof(b->a));
	shoal__v1__import_request__init(&b->ir);
	if (c != &b->coll)
		b->coll = *c;
	b->ir.move_id = j->move_id;
	b->ir.config = node_config_out(&b->a, &b->coll);
	b->dim = b->coll.params.dim;
	b->bytes = 0;
	b->cap = MIG_BATCH_POINTS;
	b->ir.points = sh_arena_alloc(&b->a, b->cap * sizeof(void *));
	b->ir.tombstones = sh_arena_alloc(&b->a, b->cap * sizeof(void *));
	return b->ir.config && b->ir.points && b->ir.tombstones ? SH_OK
								: SH_ENOMEM;
}

static bool batch_full(const struct batch *b)
{
	return b->ir.n_points + b->ir.n_tombstones >= b->cap ||
	       b->bytes >= MIG_BATCH_BYTES;
}

static Shoal__V1__PointId *batch_pid(struct batch *b, const sh_pid *id)
{
	Shoal__V1__PointId *o = sh_arena_alloc(&b->a, sizeof(*o));
	char *buf = sh_arena_alloc(&b->a, SH_PID_MAX_STR + 1);
	if (!o || !buf)
		return NULL;
	sh_wire_pid_to_proto(id, o, buf);
	return o;
}

static int batch_point(struct batch *b, const sh_pid *id, uint64_t version,
		       const float *vec, const char *payload, size_t plen)
{
	Shoal__V1__Point *p = sh_arena_alloc(&b->a, sizeof(*p));
	float *v = sh_arena_alloc(&b->a, b->dim * sizeof(float));
	if (!p || !v)
		return SH_ENOMEM;
	shoal__v1__point__init(p);
	if (!(p->id = batch_pid(b, id)))
		return SH_ENOMEM;
	memcpy(v, vec, b->dim * sizeof(float));
	p->vector = v;
	p->n_vector = b->dim;
	p->version = version;
	if (plen) {
		p->payload_json = sh_arena_strndup(&b->a, payload, plen);
		if (!p->payload_json)
			return SH_ENOMEM;
	}
	b->ir.points[b->ir.n_points++] = p;
	b->bytes += b->dim * sizeof(float) + plen + 32;
	return SH_OK;
}

static int batch_tombstone(struct batch *b, const sh_pid *id, uint64_t version)
{
	Shoal__V1__PointRef *r = sh_arena_alloc(&b->a, sizeof(*r));
	if (!r)
		return SH_ENOMEM;
	shoal__v1__point_ref__init(r);
	if (!(r->id = batch_pid(b, id)))
		return SH_ENOMEM;
	r->version = version;
	b->ir.tombstones[b->ir.n_tombstones++] = r;
	b->bytes += 32;
	return SH_OK;
}

static void job_fail(struct mig_job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void job_fail(struct mig_job *j, const char *fmt, ...)
{
	pthread_mutex_lock(&j->mu);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	va_end(ap);
	j->state = SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
	sh_warn("migrate", "move %llu: %s", (unsigned long long)j->move_id,
		j->error);
}

/* Keeps the copy under max_bps bytes per second. True when stopped. */
static bool throttle(struct mig_job *j, size_t bytes)
{
	if (!j->max_bps)
		return false;
	uint64_t now = now_us();
	if (!j->throttle_t0)
		j->throttle_t0 = now;
	j->throttle_bytes += bytes;
	uint64_t due =
	    j->throttle_t0 + j->throttle_bytes * 1000000ull / j->max_bps;
	return due > now && job_sleep(j, (due - now + 999) / 1000);
}

/* Sends the batch (if it holds anything) and empties it for the same
 * collection. Retries what may pass (no answer, EIO, EBUSY, ENOMEM,
 * ETIMEDOUT) with backoff for MIG_GIVE_UP_MS; `replay` counts the items
 * as replayed writes rather than copied ones. Returns SH_OK, JOB_STOPPED,
 * or an error (the job has failed). */
static int batch_send(struct mig_job *j, struct batch *b, bool replay)
{
	size_t items = b->ir.n_points + b->ir.n_tombstones;
	if (items == 0)
		return SH_OK;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_IMPORT_POINTS;
	rq.import_points = &b->ir;
	rq.timeout_ms = MIG_SEND_TIMEOUT_MS;
	size_t bytes = protobuf_c_message_get_packed_size(&rq.base);
	uint64_t give_up = now_us() + MIG_GIVE_UP_MS * 1000ull;
	uint64_t backoff = 50;
	char err[512];
	int rc;
	for (;;) {
		if (job_stopping(j))
			return JOB_STOPPED;
		Shoal__V1__Response *rs = NULL;
		rc = sh_rpc_call(j->rpc, &rq, &rs, err, sizeof(err));
		if (rc == SH_OK) {
			rc = (int)rs->code;
			if (rc != SH_OK)
				snprintf(err, sizeof(err), "%s",
					 rs->message && *rs->message
					     ? rs->message
					     : sh_strerror(rc));
		}
		sh_wire_free_response(rs);
		if (rc == SH_OK)
			break;
		bool again = rc == SH_EIO || rc == SH_ETIMEDOUT ||
			     rc == SH_EBUSY || rc == SH_ENOMEM;
		if (!again || now_us() > give_up) {
			job_fail(j, "importing into node %u (%s): %s (%s)",
				 j->target_id, j->target, err, sh_errname(rc));
			return rc;
		}
		if (job_sleep(j, backoff))
			return JOB_STOPPED;
		backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
	}
	pthread_mutex_lock(&j->mu);
	if (replay)
		j->replayed += items;
	else
		j->copied += items;
	j->bytes += bytes;
	pthread_mutex_unlock(&j->mu);
	atomic_fetch_add(replay ? &j->n->mig_replayed : &j->n->mig_copied,
			 items);
	atomic_fetch_add(&j->n->mig_bytes, bytes);
	/* Empty it for the next one, same collection. */
	sh_arena_free(&b->a);
	rc = batch_begin(b, j, &b->coll);
	if (rc)
		return rc;
	return throttle(j, bytes) ? JOB_STOPPED : SH_OK;
}

/* ---- The copy -------------------------------------------------------------
 */

struct copy_ctx {
	struct mig_job *j;
	struct coll_entry *e;
	struct batch *b;
	int rc;
};

static int copy_one(void *ctx, uint16_t slot, const sh_pid *pid,
		    const sh_store_point *p, const float *vec)
{
	struct copy_ctx *cc = ctx;
	if (atomic_load(&cc->e->dropping)) {
		cc->rc = JOB_STOPPED;
		return 1;
	}
	int rc = p->deleted ? batch_tombstone(cc->b, pid, p->version)
			    : batch_point(cc->b, pid, p->version, vec,
					  p->payload, p->payload_len);
	if (rc == SH_OK && batch_full(cc->b))
		rc = batch_send(cc->j, cc->b, false);
	if (rc) {
		cc->rc = rc;
		return 1;
	}
	return 0;
}

/* The ids of every collection, in the table now. */
static uint32_t *coll_ids(sh_node *n, size_t *count)
{
	pthread_rwlock_rdlock(&n->tlock);
	size_t nc = n->ncolls;
	uint32_t *ids = malloc((nc ? nc : 1) * sizeof(*ids));
	for (size_t i = 0; ids && i < nc; i++)
		ids[i] = n->colls[i]->id;
	pthread_rwlock_unlock(&n->tlock);
	*count = ids ? nc : 0;
	return ids;
}

/* One pass of the copy: every collection, every run of the job's slots.
 * Returns SH_OK, JOB_STOPPED or an error. */
static int copy_all(struct mig_job *j)
{
	sh_node *n = j->n;
	size_t nc;
	uint32_t *ids = coll_ids(n, &nc);
	if (!ids)
		return SH_ENOMEM;
	uint64_t total = 0;
	for (size_t c = 0; c < nc; c++) {
		struct coll_entry *e = coll_get_id(n, ids[c]);
		if (!e)
			continue;
		for (uint32_t s = 0; s < SH_SLOTS; s++)
			if (slot_bit(j->slots, s))
				total +=
				    sh_partition_slot_points(e->p, (uint16_t)s);
		coll_put(e);
	}
	pthread_mutex_lock(&j->mu);
	j->points_total = total;
	pthread_mutex_unlock(&j->mu);
	int rc = SH_OK;
	for (size_t c = 0; c < nc && rc == SH_OK; c++) {
		struct coll_entry *e = coll_get_id(n, ids[c]);
		if (!e)
			continue;
		const sh_store_coll *cfg = sh_partition_coll(e->p);
		struct batch b;
		rc = batch_begin(&b, j, cfg);
		struct copy_ctx cc = {j, e, &b, SH_OK};
		for (uint32_t lo = 0; rc == SH_OK && lo < SH_SLOTS; lo++) {
			if (!slot_bit(j->slots, lo))
				continue;
			uint32_t hi = lo;
			while (hi + 1 < SH_SLOTS && slot_bit(j->slots, hi + 1))
				hi++;
			int src = sh_store_stream_points(
			    n->st, cfg->id, (uint16_t)lo, (uint16_t)hi,
			    cfg->params.dim, copy_one, &cc);
			if (src == 1)
				rc = cc.rc;
			else if (src)
				rc = src;
			lo = hi;
		}
		if (rc == SH_OK)
			rc = batch_send(j, &b, false);
		sh_arena_free(&b.a);
		bool dropped = atomic_load(&e->dropping);
		coll_put(e);
		if (rc == JOB_STOPPED && dropped && !job_stopping(j))
			rc = SH_OK; /* the collection went away: skip it */
	}
	free(ids);
	if (rc && rc != JOB_STOPPED && !job_stopping(j)) {
		pthread_mutex_lock(&j->mu);
		bool failed =
		    j->state == SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED;
		pthread_mutex_unlock(&j->mu);
		if (!failed)
			job_fail(j, "copying: %s (%s)", sh_store_last_error(),
				 sh_errname(rc));
	}
	return rc;
}

/* ---- The replay -----------------------------------------------------------
 */

static int cmp_key(const void *x, const void *y)
{
	const struct cap_key *a = x, *b = y;
	return (a->coll > b->coll) - (a->coll < b->coll);
}

/* Sends the points named by keys[0..n) (sorted by collection) as they are
 * now. Returns SH_OK, JOB_STOPPED or an error. */
static int replay(struct mig_job *j, struct cap_key *keys, size_t n)
{
	int rc = SH_OK;
	size_t i = 0;
	while (i < n && rc == SH_OK) {
		uint32_t coll = keys[i].coll;
		size_t end = i;
		while (end < n && keys[end].coll == coll)
			end++;
		struct coll_entry *e = coll_get_id(j->n, coll);
		if (!e) { /* dropped: nothing to replay */
			i = end;
			continue;
		}
		struct batch b;
		rc = batch_begin(&b, j, sh_partition_coll(e->p));
		for (; i < end && rc == SH_OK; i++) {
			const sh_pid *id = &keys[i].pid;
			sh_partition_record rec;
			int g = sh_partition_get(e->p, id, true, &rec);
			if (g == SH_OK) {
				rc =
				    batch_point(&b, id, rec.version, rec.vector,
						rec.payload, rec.payload_len);
				sh_partition_record_clear(&rec);
			} else if (g == SH_ENOTFOUND) {
				sh_store_point sp;
				g = sh_store_get_point(j->n->st, coll,
						       sh_slot_of(id), id, &sp);
				if (g == SH_OK && sp.deleted)
					rc =
					    batch_tombstone(&b, id, sp.version);
				else if (g != SH_OK && g != SH_ENOTFOUND)
					rc = g;
				sh_store_point_clear(&sp);
			} else {
				rc = g;
			}
			if (rc == SH_OK && batch_full(&b))
				rc = batch_send(j, &b, true);
		}
		if (rc == SH_OK)
			rc = batch_send(j, &b, true);
		sh_arena_free(&b.a);
		coll_put(e);
		if (rc == JOB_STOPPED && !job_stopping(j))
			rc = SH_OK; /* its collection was dropped */
		i = end;
	}
	if (rc && rc != JOB_STOPPED && !job_stopping(j)) {
		pthread_mutex_lock(&j->mu);
		bool failed =
		    j->state == SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED;
		pthread_mutex_unlock(&j->mu);
		if (!failed)
			job_fail(j, "replaying captured writes: %s",
				 sh_errname(rc));
	}
	return rc;
}

/* Replays captured writes until stopped, failed or overflowed; reports the
 * drain after FENCE. */
static int replay_loop(struct mig_job *j)
{
	for (;;) {
		pthread_mutex_lock(&j->mu);
		for (;;) {
			if (j->stop || j->overflow || j->cap.n)
				break;
			if (j->fence && !j->drained) {
				/* Every take since the fence has been sent,
				 * and the fence came after the last write. */
				j->drained = true;
				j->state =
				    SHOAL__V1__MIGRATE_STATE__MIGRATE_FENCED;
				pthread_cond_broadcast(&j->cv);
			}
			job_wait_until(j, now_us() + 100000);
		}
		if (j->stop) {
			pthread_mutex_unlock(&j->mu);
			return JOB_STOPPED;
		}
		if (j->overflow) {
			pthread_mutex_unlock(&j->mu);
			return JOB_OVERFLOW;
		}
		struct cap_set take = j->cap;
		memset(&j->cap, 0, sizeof(j->cap));
		pthread_mutex_unlock(&j->mu);
		/* Compact and sort by collection. */
		size_t m = 0;
		for (size_t i = 0; i < take.cap; i++)
			if (take.e[i].used)
				take.e[m++] = take.e[i];
		qsort(take.e, m, sizeof(*take.e), cmp_key);
		int rc = replay(j, take.e, m);
		cap_clear(&take);
		if (rc)
			return rc;
	}
}

static void *job_main(void *arg)
{
	struct mig_job *j = arg;
	for (;;) {
		pthread_mutex_lock(&j->mu);
		if (j->stop) {
			pthread_mutex_unlock(&j->mu);
			break;
		}
		j->passes++;
		j->state = SHOAL__V1__MIGRATE_STATE__MIGRATE_COPYING;
		if (j->passes > 1) {
			/* A new snapshot holds everything the set named. */
			cap_clear(&j->cap);
			j->overflow = false;
		}
		pthread_mutex_unlock(&j->mu);
		int rc = copy_all(j);
		if (rc)
			break;
		pthread_mutex_lock(&j->mu);
		bool again = j->overflow;
		if (!again)
			j->state = SHOAL__V1__MIGRATE_STATE__MIGRATE_READY;
		pthread_cond_broadcast(&j->cv);
		pthread_mutex_unlock(&j->mu);
		if (again)
			continue;
		rc = replay_loop(j);
		if (rc != JOB_OVERFLOW)
			break;
		sh_info("migrate",
			"move %llu: more than %u captured writes waited; "
			"copying again from a new snapshot",
			(unsigned long long)j->move_id, MIG_CAPTURE_MAX);
	}
	return NULL;
}

/* Stops j's thread and frees it. The caller holds n->mig_mu and has taken
 * j out of n->job. */
static void job_free(struct mig_job *j)
{
	if (!j)
		return;
	pthread_mutex_lock(&j->mu);
	j->stop = true;
	pthread_cond_broadcast(&j->cv);
	while (j->refs)
		pthread_cond_wait(&j->cv, &j->mu);
	pthread_mutex_unlock(&j->mu);
	if (j->started)
		pthread_join(j->thread, NULL);
	sh_rpc_close(j->rpc);
	cap_clear(&j->cap);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	free(j);
}

/* Stops the job (if it is move_id's, or any when move_id is 0). The
 * capture of its slots ends with it (under the write gate). */
static void job_stop(sh_node *n, uint64_t move_id)
{
	pthread_mutex_lock(&n->mig_mu);
	struct mig_job *j = n->job;
	if (j && (move_id == 0 || j->move_id == move_id)) {
		n->job = NULL;
		pthread_mutex_unlock(&n->mig_mu);
		/* Writes captured from here find no job: it is going. */
		pthread_rwlock_wrlock(&n->wgate);
		memset(n->capture, 0, sizeof(n->capture));
		pthread_rwlock_unlock(&n->wgate);
		job_free(j);
		return;
	}
	pthread_mutex_unlock(&n->mig_mu);
}

void node_migrate_close(sh_node *n)
{
	job_stop(n, 0);
}

/* ---- Commands -------------------------------------------------------------
 */

struct mig_cmd {
	const Shoal__V1__MigrateRequest *r;
	uint32_t handed_to; /* HANDOFF: the job's target */
	uint64_t slots[SH_SLOT_WORDS];
	uint64_t drop[SH_SLOT_WORDS]; /* out: slots whose copy goes */
};

static int start_checks(sh_node *n, struct mig_cmd *c, char *err, size_t errlen)
{
	struct node_slots s;
	node_slots_get(n, &s);
	for (uint32_t x = 0; x < SH_SLOTS; x++) {
		if (!slot_bit(c->slots, x))
			continue;
		if (!slot_bit(s.owned, x) || slot_bit(s.handed, x))
			return sh_errf(err, errlen, SH_EMOVED,
				       "migrate: slot %u is not served by "
				       "this node (map epoch %llu)",
				       x, (unsigned long long)s.epoch);
		if (slot_bit(s.fenced, x) && s.fence_move != c->r->move_id)
			return sh_errf(err, errlen, SH_EBUSY,
				       "migrate: slot %u is fenced by move "
				       "%llu",
				       x, (unsigned long long)s.fence_move);
	}
	return SH_OK;
}

static int cmd_start(sh_node *n, struct mig_cmd *c, char *err, size_t errlen)
{
	const Shoal__V1__MigrateRequest *r = c->r;
	pthread_mutex_lock(&n->mig_mu);
	struct mig_job *old = n->job;
	if (old && old->move_id != r->move_id) {
		uint64_t other = old->move_id;
		pthread_mutex_unlock(&n->mig_mu);
		return sh_errf(err, errlen, SH_EBUSY,
			       "migrate: this node is copying move %llu",
			       (unsigned long long)other);
	}
	if (old) {
		pthread_mutex_lock(&old->mu);
		bool failed =
		    old->state == SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED;
		pthread_mutex_unlock(&old->mu);
		pthread_mutex_unlock(&n->mig_mu);
		if (!failed)
			return SH_OK;	 /* running: idempotent */
		job_stop(n, r->move_id); /* failed: start over */
	} else {
		pthread_mutex_unlock(&n->mig_mu);
	}
	int rc = start_checks(n, c, err, errlen);
	if (rc)
		return rc;
	struct mig_job *j = calloc(1, sizeof(*j));
	if (!j)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	j->n = n;
	j->move_id = r->move_id;
	memcpy(j->slots, c->slots, sizeof(j->slots));
	j->target_id = r->peer_node_id;
	snprintf(j->target, sizeof(j->target), "%s", r->peer_address);
	j->max_bps = r->max_bytes_per_sec;
	j->t0_us = now_us();
	j->state = SHOAL__V1__MIGRATE_STATE__MIGRATE_COPYING;
	pthread_mutex_init(&j->mu, NULL);
	sh_cond_init_mono(&j->cv);
	rc = sh_rpc_dial(j->target, MIG_SEND_TIMEOUT_MS,
			 n->o.limits.max_message_bytes, &j->rpc, err, errlen);
	if (rc) {
		job_free(j);
		return rc;
	}
	/* The job is published and the capture begins after every write in
	 * flight (wgate) and before the thread takes its first snapshot. */
	pthread_rwlock_wrlock(&n->wgate);
	pthread_mutex_lock(&n->mig_mu);
	if (n->job) { /* a concurrent START won */
		pthread_mutex_unlock(&n->mig_mu);
		pthread_rwlock_unlock(&n->wgate);
		job_free(j);
		return SH_OK;
	}
	if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
		pthread_mutex_unlock(&n->mig_mu);
		pthread_rwlock_unlock(&n->wgate);
		job_free(j);
		return sh_errf(err, errlen, SH_ENOMEM,
			       "cannot start the copy thread");
	}
	j->started = true;
	n->job = j;
	memcpy(n->capture, c->slots, sizeof(n->capture));
	pthread_mutex_unlock(&n->mig_mu);
	pthread_rwlock_unlock(&n->wgate);
	sh_info("migrate", "move %llu: copying %u slots to node %u (%s)",
		(unsigned long long)r->move_id, slots_count(c->slots),
		r->peer_node_id, r->peer_address);
	return SH_OK;
}

/* The job's progress into res (IDLE when there is none for the move). */
static void job_status(sh_node *n, uint64_t move_id,
		       Shoal__V1__MigrateResult *res, sh_arena *a)
{
	res->state = SHOAL__V1__MIGRATE_STATE__MIGRATE_IDLE;
	res->move_id = move_id;
	pthread_mutex_lock(&n->mig_mu);
	struct mig_job *j = n->job;
	if (j && j->move_id == move_id) {
		pthread_mutex_lock(&j->mu);
		res->state = j->state;
		res->points_total = j->points_total;
		res->points_copied = j->copied;
		res->bytes_copied = j->bytes;
		res->captured_pending = j->cap.n;
		res->replayed = j->replayed;
		res->elapsed_ms = (now_us() - j->t0_us) / 1000;
		res->passes = j->passes;
		if (j->error[0])
			res->error =
			    sh_arena_strndup(a, j->error, strlen(j->error));
		pthread_mutex_unlock(&j->mu);
	}
	pthread_mutex_unlock(&n->mig_mu);
}

static int apply_fence(sh_node *n, struct node_slots *s, void *ctx, char *err,
		       size_t errlen)
{
	struct mig_cmd *c = ctx;
	if (s->fence_move && s->fence_move != c->r->move_id &&
	    slots_any(s->fenced))
		return sh_errf(err, errlen, SH_EBUSY,
			       "migrate: slots are fenced by move %llu",
			       (unsigned long long)s->fence_move);
	for (size_t i = 0; i < SH_SLOT_WORDS; i++)
		s->fenced[i] |= c->slots[i];
	s->fence_move = c->r->move_id;
	return SH_OK;
}

static int cmd_fence(sh_node *n, struct mig_cmd *c, uint32_t timeout_ms,
		     char *err, size_t errlen)
{
	uint64_t move = c->r->move_id;
	pthread_mutex_lock(&n->mig_mu);
	struct mig_job *j = n->job;
	Shoal__V1__MigrateState st = SHOAL__V1__MIGRATE_STATE__MIGRATE_IDLE;
	char why[256] = "";
	if (j && j->move_id == move) {
		pthread_mutex_lock(&j->mu);
		st = j->state;
		snprintf(why, sizeof(why), "%s", j->error);
		pthread_mutex_unlock(&j->mu);
	}
	pthread_mutex_unlock(&n->mig_mu);
	if (st == SHOAL__V1__MIGRATE_STATE__MIGRATE_IDLE)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "migrate: no copy of move %llu runs here (did "
			       "the node restart?): start it again",
			       (unsigned long long)move);
	if (st == SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED)
		return sh_errf(err, errlen, SH_EIO,
			       "migrate: the copy of move %llu failed: %s",
			       (unsigned long long)move, why);
	if (st == SHOAL__V1__MIGRATE_STATE__MIGRATE_COPYING)
		return sh_errf(err, errlen, SH_EBUSY,
			       "migrate: move %llu is still copying",
			       (unsigned long long)move);
	/* From here no write to the slots is acknowledged, and those in
	 * flight have been captured (the write gate). */
	int rc = node_slots_change(n, apply_fence, c, err, errlen);
	if (rc)
		return rc;
	uint64_t until = now_us() + (uint64_t)timeout_ms * 1000;
	pthread_mutex_lock(&n->mig_mu);
	j = n->job;
	if (!j || j->move_id != move) {
		pthread_mutex_unlock(&n->mig_mu);
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "migrate: the copy of move %llu stopped",
			       (unsigned long long)move);
	}
	pthread_mutex_lock(&j->mu);
	j->fence = true;
	j->refs++; /* j stays until we let go (job_free waits) */
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&n->mig_mu);
	while (!j->drained && !j->stop &&
	       j->state != SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED &&
	       now_us() < until)
		job_wait_until(j, until);
	bool drained = j->drained;
	snprintf(why, sizeof(why), "%s",
		 j->stop ? "the copy was stopped" : j->error);
	j->refs--;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
	if (drained)
		return SH_OK;
	if (why[0])
		return sh_errf(err, errlen, SH_EIO,
			       "migrate: draining move %llu failed: %s",
			       (unsigned long long)move, why);
	return sh_errf(err, errlen, SH_ETIMEDOUT,
		       "migrate: move %llu not drained within %u ms (the "
		       "fence holds; FENCE again to wait more)",
		       (unsigned long long)move, timeout_ms);
}

static int apply_handoff(sh_node *n, struct node_slots *s, void *ctx, char *err,
			 size_t errlen)
{
	struct mig_cmd *c = ctx;
	s->handed_to = c->handed_to;
	for (size_t i = 0; i < SH_SLOT_WORDS; i++) {
		if ((c->slots[i] & ~s->fenced[i]) ||
		    (c->slots[i] && s->fence_move != c->r->move_id))
			return sh_errf(err, errlen, SH_EINVAL,
				       "migrate: hand-off of slots move %llu "
				       "has not fenced",
				       (unsigned long long)c->r->move_id);
		s->handed[i] |= c->slots[i];
	}
	return SH_OK;
}

static int cmd_handoff(sh_node *n, struct mig_cmd *c, char *err, size_t errlen)
{
	uint64_t move = c->r->move_id;
	struct node_slots s;
	node_slots_get(n, &s);
	bool done = s.fence_move == move;
	for (size_t i = 0; i < SH_SLOT_WORDS && done; i++)
		done = (c->slots[i] & ~s.handed[i]) == 0;
	if (done) /* handed over already: idempotent */
		return SH_OK;
	/* Only a job that drained since the fence proves the target has
	 * every acknowledged write. */
	pthread_mutex_lock(&n->mig_mu);
	struct mig_job *j = n->job;
	bool drained = false;
	if (j && j->move_id == move) {
		pthread_mutex_lock(&j->mu);
		drained = j->drained;
		c->handed_to = j->target_id;
		pthread_mutex_unlock(&j->mu);
	}
	pthread_mutex_unlock(&n->mig_mu);
	if (!drained)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "migrate: move %llu has not drained here (did "
			       "the node restart?): start and fence again",
			       (unsigned long long)move);
	int rc = node_slots_change(n, apply_handoff, c, err, errlen);
	if (rc)
		return rc;
	job_stop(n, move);
	sh_info("migrate", "move %llu: %u slots handed over",
		(unsigned long long)move, slots_count(c->slots));
	return SH_OK;
}

static int apply_abort_source(sh_node *n, struct node_slots *s, void *ctx,
			      char *err, size_t errlen)
{
	struct mig_cmd *c = ctx;
	for (size_t i = 0; i < SH_SLOT_WORDS; i++) {
		s->fenced[i] &= ~c->slots[i];
		s->handed[i] &= ~c->slots[i];
	}
	if (!slots_any(s->fenced) && !slots_any(s->handed))
		s->fence_move = 0;
	return SH_OK;
}

static int apply_prepare(sh_node *n, struct node_slots *s, void *ctx, char *err,
			 size_t errlen)
{
	struct mig_cmd *c = ctx;
	for (size_t i = 0; i < SH_SLOT_WORDS; i++) {
		if (c->slots[i] & s->owned[i])
			return sh_errf(err, errlen, SH_EINVAL,
				       "migrate: this node owns some of the "
				       "slots already");
		s->importing[i] |= c->slots[i];
		/* Leftovers of an earlier move of these slots away from
		 * here mean nothing now that the node does not own them. */
		s->fenced[i] &= ~c->slots[i];
		s->handed[i] &= ~c->slots[i];
	}
	s->import_move = c->r->move_id;
	return SH_OK;
}

static int apply_end_import(sh_node *n, struct node_slots *s, void *ctx,
			    char *err, size_t errlen)
{
	struct mig_cmd *c = ctx;
	for (size_t i = 0; i < SH_SLOT_WORDS; i++) {
		s->importing[i] &= ~c->slots[i];
		c->drop[i] = c->slots[i] & ~s->owned[i];
	}
	if (!slots_any(s->importing))
		s->import_move = 0;
	return SH_OK;
}

static int apply_finish_source(sh_node *n, struct node_slots *s, void *ctx,
			       char *err, size_t errlen)
{
	struct mig_cmd *c = ctx;
	for (size_t i = 0; i < SH_SLOT_WORDS; i++)
		if (c->slots[i] & s->owned[i])
			return sh_errf(err, errlen, SH_EINVAL,
				       "migrate: this node still owns some of "
				       "the slots at map epoch %llu (send it "
				       "the new map first)",
				       (unsigned long long)s->epoch);
	for (size_t i = 0; i < SH_SLOT_WORDS; i++) {
		s->fenced[i] &= ~c->slots[i];
		s->handed[i] &= ~c->slots[i];
		c->drop[i] = c->slots[i] & ~s->importing[i];
	}
	if (!slots_any(s->fenced) && !slots_any(s->handed))
		s->fence_move = 0;
	return SH_OK;
}

/* Erases the copies of c->drop in every collection. */
static int drop_copies(sh_node *n, struct mig_cmd *c, char *err, size_t errlen)
{
	if (!slots_any(c->drop))
		return SH_OK;
	size_t nc;
	uint32_t *ids = coll_ids(n, &nc);
	if (!ids)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	int rc = SH_OK;
	uint64_t total = 0;
	for (size_t i = 0; i < nc && rc == SH_OK; i++) {
		struct coll_entry *e = coll_get_id(n, ids[i]);
		if (!e)
			continue;
		uint64_t removed = 0;
		rc = sh_partition_drop_slots(e->p, c->drop, &removed);
		total += removed;
		if (rc)
			sh_errf(err, errlen, rc, "dropping slots of %s: %s",
				e->name,
				rc == SH_EIO ? sh_store_last_error()
					     : sh_strerror(rc));
		coll_put(e);
	}
	free(ids);
	atomic_fetch_add(&n->mig_dropped, total);
	if (rc == SH_OK && total)
		sh_info("migrate",
			"move %llu: dropped %llu records of %u slots",
			(unsigned long long)c->r->move_id,
			(unsigned long long)total, slots_count(c->drop));
	return rc;
}

int op_migrate(sh_node *n, const Shoal__V1__Request *rq,
	       Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	struct mig_cmd c;
	memset(&c, 0, sizeof(c));
	c.r = rq->migrate;
	sh_wire_slots_from_set(c.r->slots, c.slots);
	int rc = SH_OK;
	switch (c.r->action) {
	case SHOAL__V1__MIGRATE_ACTION__PREPARE_IMPORT:
		rc = node_slots_change(n, apply_prepare, &c, err, errlen);
		break;
	case SHOAL__V1__MIGRATE_ACTION__START:
		rc = cmd_start(n, &c, err, errlen);
		break;
	case SHOAL__V1__MIGRATE_ACTION__STATUS:
		break;
	case SHOAL__V1__MIGRATE_ACTION__FENCE:
		rc = cmd_fence(n, &c,
			       rq->timeout_ms ? rq->timeout_ms
					      : MIG_FENCE_TIMEOUT_MS,
			       err, errlen);
		break;
	case SHOAL__V1__MIGRATE_ACTION__HANDOFF:
		rc = cmd_handoff(n, &c, err, errlen);
		break;
	case SHOAL__V1__MIGRATE_ACTION__ABORT_SOURCE:
		job_stop(n, c.r->move_id);
		rc = node_slots_change(n, apply_abort_source, &c, err, errlen);
		break;
	case SHOAL__V1__MIGRATE_ACTION__ABORT_IMPORT:
		rc = node_slots_change(n, apply_end_import, &c, err, errlen);
		if (rc == SH_OK)
			rc = drop_copies(n, &c, err, errlen);
		break;
	case SHOAL__V1__MIGRATE_ACTION__FINISH_SOURCE:
		job_stop(n, c.r->move_id);
		rc = node_slots_change(n, apply_finish_source, &c, err, errlen);
		if (rc == SH_OK)
			rc = drop_copies(n, &c, err, errlen);
		break;
	case SHOAL__V1__MIGRATE_ACTION__FINISH_IMPORT:
		rc = node_slots_change(n, apply_end_import, &c, err, errlen);
		break;
	default:
		return sh_errf(err, errlen, SH_EINVAL,
			       "migrate.action: unknown");
	}
	if (rc)
		return rc;
	Shoal__V1__MigrateResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__migrate_result__init(res);
	job_status(n, c.r->move_id, res, a);
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_MIGRATE;
	rs->migrate = res;
	return SH_OK;
}

/* ---- The target's imports -------------------------------------------------
 */

int node_check_import(sh_node *n, const sh_pid *id, uint64_t move_id,
		      const char *what, size_t i, char *err, size_t errlen)
{
	uint16_t slot = sh_slot_of(id);
	int rc = SH_OK;
	pthread_rwlock_rdlock(&n->slock);
	const struct node_slots *s = &n->slots;
	if (!slot_bit(s->importing, slot) || slot_bit(s->owned, slot))
		rc = sh_errf(err, errlen, SH_EMOVED,
			     "%s[%zu]: slot %u is not being imported by this "
			     "node",
			     what, i, slot);
	else if (s->import_move != move_id)
		rc = sh_errf(err, errlen, SH_EMOVED,
			     "%s[%zu]: this node imports for move %llu, not "
			     "%llu",
			     what, i, (unsigned long long)s->import_move,
			     (unsigned long long)move_id);
	pthread_rwlock_unlock(&n->slock);
	return rc;
}

/* The collection an import names: found, or created from its config; its
 * shape must be the source's. */
static int import_collection(sh_node *n, const Shoal__V1__CollectionConfig *cfg,
			     struct coll_entry **out, char *err, size_t errlen)
{
	*out = coll_get(n, cfg->name);
	if (!*out) {
		char *json;
		int rc = node_config_json(cfg, &json, err, errlen);
		if (rc)
			return rc;
		rc = node_table_create(n, json, err, errlen);
		cJSON_free(json);
		if (rc && rc != SH_EEXIST)
			return rc;
		*out = coll_get(n, cfg->name);
		if (!*out)
			return sh_errf(err, errlen, SH_ENOCOLLECTION,
				       "import: collection %s went away",
				       cfg->name);
	}
	const sh_hnsw_params *p = &sh_partition_coll((*out)->p)->params;
	int metric = p->metric == SH_METRIC_L2	 ? SHOAL__V1__METRIC__L2
		     : p->metric == SH_METRIC_IP ? SHOAL__V1__METRIC__IP
						 : SHOAL__V1__METRIC__COSINE;
	int storage = p->storage == SH_STORAGE_INT8 ? SHOAL__V1__STORAGE__INT8
						    : SHOAL__V1__STORAGE__F32;
	if (p->dim != cfg->dim || metric != (int)cfg->metric ||
	    storage != (int)cfg->storage) {
		coll_put(*out);
		*out = NULL;
		return sh_errf(err, errlen, SH_EINVAL,
			       "import: collection %s here has another shape "
			       "(dimension, metric or storage) than the "
			       "source's",
			       cfg->name);
	}
	return SH_OK;
}

int op_import(sh_node *n, const Shoal__V1__Request *rq, Shoal__V1__Response *rs,
	      sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__ImportRequest *r = rq->import_points;
	struct coll_entry *e;
	int rc = import_collection(n, r->config, &e, err, errlen);
	if (rc)
		return rc;
	size_t np = r->n_points, nt = r->n_tombstones;
	sh_partition_point *pts =
	    sh_arena_alloc(a, (np ? np : 1) * sizeof(*pts));
	sh_pid *ids = sh_arena_alloc(a, (nt ? nt : 1) * sizeof(*ids));
	uint64_t *vers = sh_arena_alloc(a, (nt ? nt : 1) * sizeof(*vers));
	int *st = sh_arena_alloc(a, (np + nt + 1) * sizeof(*st));
	if (!pts || !ids || !vers || !st) {
		coll_put(e);
		return SH_ENOMEM;
	}
	pthread_rwlock_rdlock(&n->wgate);
	rc = node_points_in(n, e, "import_points.points", r->points, np,
			    r->move_id, true, pts, err, errlen);
	for (size_t i = 0; rc == SH_OK && i < nt; i++) {
		if (sh_wire_pid_from_proto(r->tombstones[i]->id, &ids[i]) !=
		    SH_OK)
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "import_points.tombstones[%zu].id: "
				     "invalid",
				     i);
		else
			rc = node_check_import(n, &ids[i], r->move_id,
					       "import_points.tombstones", i,
					       err, errlen);
		vers[i] = r->tombstones[i]->version;
	}
	if (rc == SH_OK && np)
		rc = sh_partition_upsert(e->p, pts, np, st);
	if (rc == SH_OK && nt)
		rc = sh_partition_delete(e->p, ids, vers, nt, st + np);
	pthread_rwlock_unlock(&n->wgate);
	if (rc && !*err)
		sh_errf(err, errlen, rc, "import into %s: %s", e->name,
			rc == SH_EIO ? sh_store_last_error() : sh_strerror(rc));
	coll_put(e);
	if (rc)
		return rc;
	Shoal__V1__ImportResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__import_result__init(res);
	for (size_t i = 0; i < np + nt; i++) {
		if (st[i] == SH_OK)
			res->applied++;
		else
			res->ignored++;
	}
	atomic_fetch_add(&n->mig_imported, res->applied);
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_IMPORT_POINTS;
	rs->import_points = res;
	return SH_OK;
}

/* ---- Metrics --------------------------------------------------------------
 */

void node_migrate_metrics(sh_node *n, FILE *f)
{
	Shoal__V1__MigrateResult res = SHOAL__V1__MIGRATE_RESULT__INIT;
	uint64_t move = 0;
	pthread_mutex_lock(&n->mig_mu);
	if (n->job)
		move = n->job->move_id;
	pthread_mutex_unlock(&n->mig_mu);
	sh_arena a = {0};
	if (move)
		job_status(n, move, &res, &a);
	sh_arena_free(&a);
	fprintf(f,
		"# HELP shoal_migrate_copied_total Points and tombstones a "
		"move's copy sent from this node.\n"
		"# TYPE shoal_migrate_copied_total counter\n"
		"shoal_migrate_copied_total %llu\n"
		"# HELP shoal_migrate_replayed_total Captured writes this "
		"node replayed to a move's target.\n"
		"# TYPE shoal_migrate_replayed_total counter\n"
		"shoal_migrate_replayed_total %llu\n"
		"# HELP shoal_migrate_sent_bytes_total Bytes of imports sent.\n"
		"# TYPE shoal_migrate_sent_bytes_total counter\n"
		"shoal_migrate_sent_bytes_total %llu\n"
		"# HELP shoal_migrate_imported_total Points and tombstones "
		"imported into this node (applied).\n"
		"# TYPE shoal_migrate_imported_total counter\n"
		"shoal_migrate_imported_total %llu\n"
		"# HELP shoal_migrate_dropped_total Records of moved slots "
		"this node erased.\n"
		"# TYPE shoal_migrate_dropped_total counter\n"
		"shoal_migrate_dropped_total %llu\n"
		"# HELP shoal_migrate_job_state State of this node's copy job "
		"(0 none, 2 copying, 3 ready, 4 fenced, 5 failed).\n"
		"# TYPE shoal_migrate_job_state gauge\n"
		"shoal_migrate_job_state %d\n"
		"# HELP shoal_migrate_captured_pending Captured writes not "
		"replayed yet.\n"
		"# TYPE shoal_migrate_captured_pending gauge\n"
		"shoal_migrate_captured_pending %llu\n",
		(unsigned long long)atomic_load(&n->mig_copied),
		(unsigned long long)atomic_load(&n->mig_replayed),
		(unsigned long long)atomic_load(&n->mig_bytes),
		(unsigned long long)atomic_load(&n->mig_imported),
		(unsigned long long)atomic_load(&n->mig_dropped),
		move ? (int)res.state : 0,
		(unsigned long long)res.captured_pending);
}
