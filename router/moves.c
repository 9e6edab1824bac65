/*
 * Slot move jobs: the router's side of rebalancing (docs/rebalancing.md).
 *
 * A job is a list of moves kept in the cluster map. The coordinator
 * (shoalctl) runs each move by asking for its steps one at a time
 * (JOB_ADVANCE with the state it saw); the router carries a step out on
 * the nodes (MigrateRequest) and then records the move's new state in the
 * map with one compare-and-swap, so a crash of the coordinator, of this
 * router or of a node leaves the move at a state from which ADVANCE goes
 * on and ABORT goes back. Every node command is idempotent, so a step
 * that ran but was not recorded runs again harmlessly.
 *
 *   PENDING   -> PREPARED    the target has the collections and imports the
 *                            slots; the map marks them moving_to
 *   PREPARED  -> COPYING     the source captures writes and copies
 *   COPYING   -> FENCED      once the copy is READY: the source refuses
 *                            writes and drains the captured ones
 *   FENCED    -> HANDED_OFF  the source serves the slots no more
 *   HANDED_OFF-> SWITCHED    one new map epoch names the target the owner;
 *                            both nodes are told
 *   SWITCHED  -> DONE        after the grace period (monotonic clock), the
 *                            source drops its copy
 *
 * A source that lost its copy job (it restarted) sends the move back to
 * PREPARED: the copy runs again (versions make that harmless). ABORT
 * undoes a move up to HANDED_OFF (the map still names the source); after
 * the switch a move can only be finished.
 *
 * Steps of one router are serialised by r->admin; two routers (etcd) race
 * on the compare-and-swap, and the loser's step is answered ESTALE.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "router_impl.h"

/* Deadlines of the node commands (a fence drains; an abort or a finish
 * erases a copy). */
#define STEP_TIMEOUT_MS 30000
#define DROP_TIMEOUT_MS 300000
/* Default grace period between a switch and the drop of the source's copy:
 * longer than any search in flight (the read deadline is 1 s by default). */
#define DEFAULT_GRACE_MS 3000

static uint64_t wall_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* ---- The job on the wire ---------------------------------------------------
 */

static void move_out(Shoal__V1__Move *o, const sh_map_move *mv, sh_arena *a)
{
	shoal__v1__move__init(o);
	o->id = mv->id;
	o->first = mv->first;
	o->last = mv->last;
	o->from = mv->from;
	o->to = mv->to;
	o->state = (Shoal__V1__MoveState)mv->state;
	o->points = mv->points;
	o->switched_at_ms = mv->switched_at_ms;
	o->error = sh_arena_strndup(a, mv->error, strlen(mv->error));
}

Shoal__V1__MoveJob *router_job_out(const sh_map *m, sh_arena *a)
{
	const sh_map_job *j = &m->job;
	Shoal__V1__MoveJob *o = sh_arena_alloc(a, sizeof(*o));
	if (!o)
		return NULL;
	shoal__v1__move_job__init(o);
	o->id = j->id;
	o->description =
	    sh_arena_strndup(a, j->description, strlen(j->description));
	o->max_bytes_per_sec = j->max_bps;
	o->grace_ms = j->grace_ms;
	o->started_at_ms = j->started_at_ms;
	o->aborted = j->aborted;
	o->moves =
	    j->nmoves ? sh_arena_alloc(a, j->nmoves * sizeof(void *)) : NULL;
	for (uint32_t i = 0; o->moves && i < j->nmoves; i++) {
		Shoal__V1__Move *mv = sh_arena_alloc(a, sizeof(*mv));
		if (!mv)
			return NULL;
		move_out(mv, &j->moves[i], a);
		o->moves[o->n_moves++] = mv;
	}
	return o;
}

/* ---- Talking to the nodes ---------------------------------------------------
 */

/* One MigrateRequest for the move's slots to node id. SH_OK with *res
 * (the caller frees *resp) or the node's error with its message. */
static int migrate(sh_router *r, uint32_t node, Shoal__V1__MigrateAction act,
		   const sh_map_move *mv, uint32_t peer, const char *peer_addr,
		   uint64_t max_bps, int timeout_ms, Shoal__V1__Response **resp,
		   char *err, size_t errlen)
{
	Shoal__V1__SlotRange sr = SHOAL__V1__SLOT_RANGE__INIT, *srp = &sr;
	sr.first = mv->first;
	sr.last = mv->last;
	Shoal__V1__SlotSet set = SHOAL__V1__SLOT_SET__INIT;
	set.ranges = &srp;
	set.n_ranges = 1;
	Shoal__V1__MigrateRequest m = SHOAL__V1__MIGRATE_REQUEST__INIT;
	m.action = act;
	m.move_id = mv->id;
	m.slots = &set;
	m.peer_node_id = peer;
	m.peer_address = (char *)(peer_addr ? peer_addr : "");
	m.max_bytes_per_sec = max_bps;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_MIGRATE;
	rq.migrate = &m;
	rq.timeout_ms = (uint32_t)timeout_ms;
	Shoal__V1__Response *rs = NULL;
	int rc =
	    router_node_call(r, node, &rq, timeout_ms + 5000, &rs, err, errlen);
	if (rc)
		return rc;
	rc = (int)rs->code;
	if (rc) {
		sh_errf(err, errlen, rc, "node %u: %s", node,
			rs->message && *rs->message ? rs->message
						    : sh_strerror(rc));
		sh_wire_free_response(rs);
		return rc;
	}
	if (resp)
		*resp = rs;
	else
		sh_wire_free_response(rs);
	return SH_OK;
}

static int migrate_simple(sh_router *r, uint32_t node,
			  Shoal__V1__MigrateAction act, const sh_map_move *mv,
			  int timeout_ms, char *err, size_t errlen)
{
	return migrate(r, node, act, mv, 0, NULL, 0, timeout_ms, NULL, err,
		       errlen);
}

/* Sends node id its slots under the router's map; SH_OK or the error. */
static int push(sh_router *r, uint32_t id, char *err, size_t errlen)
{
	int idx = router_node_index(r, id);
	if (idx < 0)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "node %u is not known to this router", id);
	return router_push_slots(r, idx, err, errlen);
}

/* The target gets every collection the source has (a node added later has
 * none); one that exists already is left as it is. */
static int copy_collections(sh_router *r, const sh_map_move *mv, char *err,
			    size_t errlen)
{
	Shoal__V1__ListCollectionsRequest lr =
	    SHOAL__V1__LIST_COLLECTIONS_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_LIST_COLLECTIONS;
	rq.list_collections = &lr;
	Shoal__V1__Response *rs = NULL;
	int rc = router_node_call(r, mv->from, &rq, STEP_TIMEOUT_MS, &rs, err,
				  errlen);
	if (rc)
		return rc;
	if (rs->code || !rs->list_collections) {
		rc = sh_errf(err, errlen, rs->code ? (int)rs->code : SH_EIO,
			     "node %u: listing collections: %s", mv->from,
			     rs->message ? rs->message : "");
		sh_wire_free_response(rs);
		return rc;
	}
	const Shoal__V1__ListCollectionsResult *l = rs->list_collections;
	for (size_t i = 0; i < l->n_collections && rc == SH_OK; i++) {
		Shoal__V1__CreateCollectionRequest cr =
		    SHOAL__V1__CREATE_COLLECTION_REQUEST__INIT;
		cr.config = l->collections[i]->config;
		Shoal__V1__Request cq = SHOAL__V1__REQUEST__INIT;
		cq.op_case = SHOAL__V1__REQUEST__OP_CREATE_COLLECTION;
		cq.create_collection = &cr;
		Shoal__V1__Response *cs = NULL;
		rc = router_node_call(r, mv->to, &cq, STEP_TIMEOUT_MS, &cs, err,
				      errlen);
		if (rc == SH_OK && cs->code && (int)cs->code != SH_EEXIST)
			rc = sh_errf(err, errlen, (int)cs->code,
				     "node %u: creating collection %s: %s",
				     mv->to, cr.config->name,
				     cs->message ? cs->message : "");
		sh_wire_free_response(cs);
	}
	sh_wire_free_response(rs);
	return rc;
}

/* ---- Recording a step in the map -------------------------------------------
 */

enum step_kind {
	REC_STATE,   /* state (and error) only */
	REC_PREPARE, /* + moving_to */
	REC_SWITCH,  /* + owner, slot epoch; moving_to cleared */
	REC_ABORT,   /* the move and every pending one ABORTED */
};

struct rec {
	uint64_t job_id, move_id;
	int from_state, to_state;
	enum step_kind kind;
	const char *error; /* NULL: cleared */
};

static int rec_fn(sh_router *r, sh_map *m, void *ctx, char *err, size_t errlen)
{
	struct rec *c = ctx;
	sh_map_move *mv = sh_map_find_move(m, c->move_id);
	if (m->job.id != c->job_id || !mv)
		return sh_errf(err, errlen, SH_ESTALE,
			       "the job changed meanwhile: look again");
	if (mv->state != c->from_state)
		return sh_errf(err, errlen, SH_ESTALE,
			       "move %llu is %s now, not %s: look again",
			       (unsigned long long)mv->id,
			       sh_move_state_name(mv->state),
			       sh_move_state_name(c->from_state));
	mv->state = (uint8_t)c->to_state;
	snprintf(mv->error, sizeof(mv->error), "%s", c->error ? c->error : "");
	for (uint32_t s = mv->first; s <= mv->last; s++) {
		switch (c->kind) {
		case REC_PREPARE:
			m->moving_to[s] = mv->to;
			break;
		case REC_SWITCH:
			m->owner[s] = mv->to;
			m->slot_epoch[s] = m->epoch + 1; /* the new epoch */
			m->moving_to[s] = 0;
			break;
		case REC_ABORT:
			m->moving_to[s] = 0;
			break;
		default:
			break;
		}
	}
	if (c->kind == REC_SWITCH)
		mv->switched_at_ms = wall_ms();
	if (c->kind == REC_ABORT) {
		m->job.aborted = true;
		for (uint32_t i = 0; i < m->job.nmoves; i++)
			if (m->job.moves[i].state == SH_MOVE_PENDING) {
				m->job.moves[i].state = SH_MOVE_ABORTED;
				snprintf(m->job.moves[i].error,
					 sizeof(m->job.moves[i].error),
					 "the job was aborted");
			}
	}
	return SH_OK;
}

static int record(sh_router *r, const sh_map_move *mv, uint64_t job_id,
		  int to_state, enum step_kind kind, const char *error,
		  char *err, size_t errlen)
{
	struct rec c = {job_id, mv->id, mv->state, to_state, kind, error};
	return router_change_map_locked(r, rec_fn, &c, NULL, err, errlen);
}

/* ---- The steps --------------------------------------------------------------
 */

/* Runs the step of move mv (a copy from the map) from its state; r->admin
 * held. Returns SH_OK (the map records the next state; it may be an
 * earlier one when the copy must run again), SH_EBUSY (not yet: the copy
 * runs, or the grace period), or an error with a message. */
static int run_step(sh_router *r, const sh_map *m, const sh_map_move *mv,
		    char *err, size_t errlen)
{
	uint64_t job = m->job.id;
	int rc;
	char why[512];
	switch (mv->state) {
	case SH_MOVE_PENDING:
		if ((rc = copy_collections(r, mv, err, errlen)) ||
		    (rc = migrate(r, mv->to,
				  SHOAL__V1__MIGRATE_ACTION__PREPARE_IMPORT, mv,
				  mv->from, NULL, 0, STEP_TIMEOUT_MS, NULL, err,
				  errlen)))
			return rc;
		return record(r, mv, job, SH_MOVE_PREPARED, REC_PREPARE, NULL,
			      err, errlen);
	case SH_MOVE_PREPARED: {
		int ti = sh_map_node_index(m, mv->to);
		if (ti < 0)
			return sh_errf(err, errlen, SH_EINVAL,
				       "node %u is not in the map", mv->to);
		/* The target imports again first: an abort that stopped half
		 * way (the target let go, the map not yet told) may be
		 * resumed instead. */
		if ((rc = migrate(r, mv->to,
				  SHOAL__V1__MIGRATE_ACTION__PREPARE_IMPORT, mv,
				  mv->from, NULL, 0, STEP_TIMEOUT_MS, NULL, err,
				  errlen)) ||
		    (rc = migrate(r, mv->from, SHOAL__V1__MIGRATE_ACTION__START,
				  mv, mv->to, m->nodes[ti].address,
				  m->job.max_bps, STEP_TIMEOUT_MS, NULL, err,
				  errlen)))
			return rc;
		return record(r, mv, job, SH_MOVE_COPYING, REC_STATE, NULL, err,
			      errlen);
	}
	case SH_MOVE_COPYING: {
		Shoal__V1__Response *rs = NULL;
		rc = migrate(r, mv->from, SHOAL__V1__MIGRATE_ACTION__STATUS, mv,
			     0, NULL, 0, STEP_TIMEOUT_MS, &rs, err, errlen);
		if (rc)
			return rc;
		Shoal__V1__MigrateState st = rs->migrate->state;
		uint64_t done = rs->migrate->points_copied,
			 total = rs->migrate->points_total;
		snprintf(why, sizeof(why), "%s",
			 rs->migrate->error ? rs->migrate->error : "");
		sh_wire_free_response(rs);
		if (st == SHOAL__V1__MIGRATE_STATE__MIGRATE_COPYING)
			return sh_errf(err, errlen, SH_EBUSY,
				       "move %llu is copying: %llu of about "
				       "%llu points",
				       (unsigned long long)mv->id,
				       (unsigned long long)done,
				       (unsigned long long)total);
		if (st == SHOAL__V1__MIGRATE_STATE__MIGRATE_IDLE ||
		    st == SHOAL__V1__MIGRATE_STATE__MIGRATE_FAILED) {
			char note[SH_MAP_MAX_ERROR + 1];
			if (st == SHOAL__V1__MIGRATE_STATE__MIGRATE_IDLE)
				snprintf(note, sizeof(note),
					 "the source has no copy (it "
					 "restarted): copying again");
			else
				snprintf(note, sizeof(note), "%.*s",
					 SH_MAP_MAX_ERROR, why);
			rc = record(r, mv, job, SH_MOVE_PREPARED, REC_STATE,
				    note, err, errlen);
			if (rc)
				return rc;
			return sh_errf(err, errlen, SH_EIO, "move %llu: %s",
				       (unsigned long long)mv->id, note);
		}
		rc = migrate_simple(r, mv->from,
				    SHOAL__V1__MIGRATE_ACTION__FENCE, mv,
				    STEP_TIMEOUT_MS, err, errlen);
		if (rc == SH_ENOTFOUND || rc == SH_EIO) {
			snprintf(why, sizeof(why), "%s", err);
			int rc2 = record(r, mv, job, SH_MOVE_PREPARED,
					 REC_STATE, why, err, errlen);
			return rc2 ? rc2 : sh_errf(err, errlen, rc, "%s", why);
		}
		if (rc)
			return rc;
		return record(r, mv, job, SH_MOVE_FENCED, REC_STATE, NULL, err,
			      errlen);
	}
	case SH_MOVE_FENCED:
		rc = migrate_simple(r, mv->from,
				    SHOAL__V1__MIGRATE_ACTION__HANDOFF, mv,
				    STEP_TIMEOUT_MS, err, errlen);
		if (rc == SH_ENOTFOUND) {
			/* The source restarted after the fence: the fence
			 * held, but only a drained copy proves the target
			 * has everything. Copy again (no write can come). */
			snprintf(why, sizeof(why), "%s", err);
			int rc2 = record(r, mv, job, SH_MOVE_PREPARED,
					 REC_STATE, why, err, errlen);
			return rc2 ? rc2 : sh_errf(err, errlen, rc, "%s", why);
		}
		if (rc)
			return rc;
		return record(r, mv, job, SH_MOVE_HANDED_OFF, REC_STATE, NULL,
			      err, errlen);
	case SH_MOVE_HANDED_OFF:
		rc = record(r, mv, job, SH_MOVE_SWITCHED, REC_SWITCH, NULL, err,
			    errlen);
		if (rc)
			return rc;
		r->grace_move = mv->id;
		r->grace_since_ms = sh_now_us() / 1000;
		/* The source first (it serves the slots no more anyway),
		 * then the target; a node missed learns it on its next
		 * EMOVED. */
		if (push(r, mv->from, why, sizeof(why)))
			sh_warn("router", "move %llu: telling node %u: %s",
				(unsigned long long)mv->id, mv->from, why);
		if (push(r, mv->to, why, sizeof(why)))
			sh_warn("router", "move %llu: telling node %u: %s",
				(unsigned long long)mv->id, mv->to, why);
		sh_info("router", "move %llu: slots %u-%u now on node %u",
			(unsigned long long)mv->id, mv->first, mv->last,
			mv->to);
		return SH_OK;
	case SH_MOVE_SWITCHED: {
		/* Timed on this process's monotonic clock from the switch, or,
		 * for a move another router (or an earlier run of this one)
		 * switched, from the first time this one sees it switched: a
		 * whole grace period then, never less. switched_at_ms (wall
		 * clock) is for people only. */
		uint64_t now = sh_now_us() / 1000;
		if (r->grace_move != mv->id) {
			r->grace_move = mv->id;
			r->grace_since_ms = now;
		}
		uint64_t due = r->grace_since_ms + m->job.grace_ms;
		if (now < due)
			return sh_errf(err, errlen, SH_EBUSY,
				       "move %llu: grace period, %llu ms left",
				       (unsigned long long)mv->id,
				       (unsigned long long)(due - now));
		/* The source must know it owns them no more before it may
		 * drop them. */
		if ((rc = push(r, mv->from, err, errlen)) ||
		    (rc = migrate_simple(
			 r, mv->from, SHOAL__V1__MIGRATE_ACTION__FINISH_SOURCE,
			 mv, DROP_TIMEOUT_MS, err, errlen)))
			return rc;
		if (push(r, mv->to, why, sizeof(why)))
			sh_warn("router", "move %llu: telling node %u: %s",
				(unsigned long long)mv->id, mv->to, why);
		if ((rc = migrate_simple(
			 r, mv->to, SHOAL__V1__MIGRATE_ACTION__FINISH_IMPORT,
			 mv, STEP_TIMEOUT_MS, err, errlen)))
			return rc;
		return record(r, mv, job, SH_MOVE_DONE, REC_STATE, NULL, err,
			      errlen);
	}
	default:
		return SH_OK; /* DONE, ABORTED: nothing left */
	}
}

/* ---- The actions
 * -------------------------------------------------------------- */

struct start_ctx {
	const Shoal__V1__MoveJob *in;
	uint64_t job_id;
};

static int start_fn(sh_router *r, sh_map *m, void *ctx, char *err,
		    size_t errlen)
{
	struct start_ctx *c = ctx;
	const Shoal__V1__MoveJob *in = c->in;
	if (sh_map_job_active(m))
		return sh_errf(err, errlen, SH_EBUSY,
			       "job %llu (%s) is in flight: see shoalctl "
			       "status, then resume or abort it",
			       (unsigned long long)m->job.id,
			       m->job.description);
	if (in->n_moves > SH_MAP_MAX_MOVES)
		return sh_errf(err, errlen, SH_ETOOBIG, "%zu moves; at most %d",
			       in->n_moves, SH_MAP_MAX_MOVES);
	uint8_t *seen = calloc(SH_SLOTS, 1);
	if (!seen)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	int rc = SH_OK;
	for (size_t i = 0; i < in->n_moves && rc == SH_OK; i++) {
		const Shoal__V1__Move *mv = in->moves[i];
		if (sh_map_node_index(m, mv->from) < 0 ||
		    sh_map_node_index(m, mv->to) < 0) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "moves[%zu]: node %u or %u is not in the "
				     "map",
				     i, mv->from, mv->to);
			break;
		}
		for (uint32_t s = mv->first; s <= mv->last; s++) {
			if (m->owner[s] != mv->from) {
				rc = sh_errf(err, errlen, SH_EINVAL,
					     "moves[%zu]: slot %u belongs to "
					     "node %u, not %u",
					     i, s, m->owner[s], mv->from);
				break;
			}
			if (seen[s]++) {
				rc = sh_errf(err, errlen, SH_EINVAL,
					     "moves[%zu]: slot %u is moved "
					     "twice",
					     i, s);
				break;
			}
		}
	}
	free(seen);
	if (rc)
		return rc;
	sh_map_job *j = &m->job;
	memset(j, 0, sizeof(*j));
	j->id = m->next_id++;
	snprintf(j->description, sizeof(j->description), "%s",
		 in->description ? in->description : "");
	j->max_bps = in->max_bytes_per_sec;
	j->grace_ms = in->grace_ms ? in->grace_ms : DEFAULT_GRACE_MS;
	j->started_at_ms = wall_ms();
	for (size_t i = 0; i < in->n_moves; i++) {
		sh_map_move *x = &j->moves[j->nmoves++];
		x->id = m->next_id++;
		x->first = in->moves[i]->first;
		x->last = in->moves[i]->last;
		x->from = in->moves[i]->from;
		x->to = in->moves[i]->to;
		x->points = in->moves[i]->points;
		x->state = SH_MOVE_PENDING;
	}
	c->job_id = j->id;
	return SH_OK;
}

static int clear_fn(sh_router *r, sh_map *m, void *ctx, char *err,
		    size_t errlen)
{
	uint64_t want = *(uint64_t *)ctx;
	if (!m->job.id)
		return SH_OK;
	if (want && m->job.id != want)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "the map holds job %llu, not %llu",
			       (unsigned long long)m->job.id,
			       (unsigned long long)want);
	if (sh_map_job_active(m))
		return sh_errf(err, errlen, SH_EBUSY,
			       "job %llu is in flight: resume or abort it",
			       (unsigned long long)m->job.id);
	memset(&m->job, 0, sizeof(m->job));
	return SH_OK;
}

/* The job the request names (0: the one) in map m, or an error. */
static int check_job(const sh_map *m, uint64_t want, char *err, size_t errlen)
{
	if (!m->job.id)
		return sh_errf(err, errlen, SH_ENOTFOUND, "no job in the map");
	if (want && want != m->job.id)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "the map holds job %llu, not %llu",
			       (unsigned long long)m->job.id,
			       (unsigned long long)want);
	return SH_OK;
}

static int job_advance(sh_router *r, const Shoal__V1__MoveJobRequest *q,
		       char *err, size_t errlen)
{
	router_refresh_map(r);
	sh_map *m = router_map_copy(r);
	if (!m)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	int rc = check_job(m, q->job_id, err, errlen);
	sh_map_move *mv = rc ? NULL : sh_map_find_move(m, q->move_id);
	if (!rc && !mv)
		rc = sh_errf(err, errlen, SH_ENOTFOUND,
			     "job %llu has no move %llu",
			     (unsigned long long)m->job.id,
			     (unsigned long long)q->move_id);
	/* Already past the state the caller saw: nothing to do. */
	if (!rc && mv->state != (int)q->from_state) {
		free(m);
		return SH_OK;
	}
	if (!rc && mv != sh_map_current_move(m))
		rc = sh_errf(err, errlen, SH_EBUSY,
			     "move %llu is not next: moves run in order",
			     (unsigned long long)mv->id);
	if (!rc && m->job.aborted && mv->state == SH_MOVE_PENDING)
		rc = sh_errf(err, errlen, SH_EBUSY,
			     "job %llu was aborted: no new move starts",
			     (unsigned long long)m->job.id);
	if (!rc) {
		atomic_fetch_add(&r->move_steps, 1);
		rc = run_step(r, m, mv, err, errlen);
		if (rc && rc != SH_EBUSY) {
			atomic_fetch_add(&r->move_errors, 1);
			sh_warn("router", "move %llu (%s): %s",
				(unsigned long long)mv->id,
				sh_move_state_name(mv->state), err);
		}
	}
	free(m);
	return rc;
}

static int job_abort(sh_router *r, const Shoal__V1__MoveJobRequest *q,
		     char *note, size_t notelen, char *err, size_t errlen)
{
	router_refresh_map(r);
	sh_map *m = router_map_copy(r);
	if (!m)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	int rc = check_job(m, q->job_id, err, errlen);
	sh_map_move *mv = rc ? NULL : sh_map_current_move(m);
	if (rc || !mv) {
		free(m);
		return rc; /* nothing in flight: a finished job stays */
	}
	atomic_fetch_add(&r->move_steps, 1);
	if (mv->state == SH_MOVE_SWITCHED) {
		/* The target owns the slots: the move can only finish.
		 * Pending moves are dropped. */
		snprintf(note, notelen,
			 "move %llu already switched slots %u-%u to node %u: "
			 "it can only be finished (shoalctl resume)",
			 (unsigned long long)mv->id, mv->first, mv->last,
			 mv->to);
		for (uint32_t i = 0; i < m->job.nmoves; i++)
			if (m->job.moves[i].state == SH_MOVE_PENDING) {
				sh_map_move *p = &m->job.moves[i];
				struct rec c = {
				    m->job.id,	     p->id,
				    SH_MOVE_PENDING, SH_MOVE_ABORTED,
				    REC_ABORT,	     "the job was aborted"};
				rc = router_change_map_locked(
				    r, rec_fn, &c, NULL, err, errlen);
				break; /* REC_ABORT marks every pending one */
			}
		free(m);
		return rc;
	}
	if (mv->state >= SH_MOVE_PREPARED) {
		/* The source first: it serves the slots again; then the
		 * target lets its copy go. */
		rc = migrate_simple(r, mv->from,
				    SHOAL__V1__MIGRATE_ACTION__ABORT_SOURCE, mv,
				    STEP_TIMEOUT_MS, err, errlen);
		if (rc == SH_OK)
			rc = migrate_simple(
			    r, mv->to, SHOAL__V1__MIGRATE_ACTION__ABORT_IMPORT,
			    mv, DROP_TIMEOUT_MS, err, errlen);
	}
	if (rc == SH_OK)
		rc = record(r, mv, m->job.id, SH_MOVE_ABORTED, REC_ABORT,
			    "aborted", err, errlen);
	if (rc) {
		atomic_fetch_add(&r->move_errors, 1);
	} else {
		snprintf(note, notelen,
			 "move %llu aborted: slots %u-%u stay "
			 "on node %u",
			 (unsigned long long)mv->id, mv->first, mv->last,
			 mv->from);
		sh_info("router", "%s", note);
	}
	free(m);
	return rc;
}

/* The live progress of the move in flight, from its source. */
static void add_progress(sh_router *r, const sh_map *m, Shoal__V1__MoveJob *job,
			 sh_arena *a)
{
	sh_map_move *mv = sh_map_current_move((sh_map *)m);
	if (!mv || mv->state < SH_MOVE_COPYING || mv->state > SH_MOVE_FENCED)
		return;
	Shoal__V1__Response *rs = NULL;
	char err[256];
	if (migrate(r, mv->from, SHOAL__V1__MIGRATE_ACTION__STATUS, mv, 0, NULL,
		    0, 5000, &rs, err, sizeof(err)))
		return;
	for (size_t i = 0; i < job->n_moves; i++) {
		if (job->moves[i]->id != mv->id)
			continue;
		Shoal__V1__MigrateResult *p = sh_arena_alloc(a, sizeof(*p));
		if (p) {
			shoal__v1__migrate_result__init(p);
			p->state = rs->migrate->state;
			p->move_id = rs->migrate->move_id;
			p->points_total = rs->migrate->points_total;
			p->points_copied = rs->migrate->points_copied;
			p->bytes_copied = rs->migrate->bytes_copied;
			p->captured_pending = rs->migrate->captured_pending;
			p->replayed = rs->migrate->replayed;
			p->elapsed_ms = rs->migrate->elapsed_ms;
			p->passes = rs->migrate->passes;
			const char *e = rs->migrate->error;
			p->error =
			    sh_arena_strndup(a, e ? e : "", e ? strlen(e) : 0);
			job->moves[i]->progress = p;
		}
	}
	sh_wire_free_response(rs);
}

int rop_move_job(sh_router *r, const Shoal__V1__Request *rq,
		 Shoal__V1__Response *rs, sh_arena *a, char *err, size_t errlen)
{
	const Shoal__V1__MoveJobRequest *q = rq->move_job;
	int rc = SH_OK;
	char note[512] = "";
	pthread_mutex_lock(&r->admin);
	switch (q->action) {
	case SHOAL__V1__MOVE_JOB_ACTION__JOB_START: {
		struct start_ctx c = {.in = q->job};
		rc = router_change_map_locked(r, start_fn, &c, NULL, err,
					      errlen);
		if (rc == SH_OK)
			sh_info("router", "job %llu (%s): %zu moves",
				(unsigned long long)c.job_id,
				q->job->description ? q->job->description : "",
				q->job->n_moves);
		break;
	}
	case SHOAL__V1__MOVE_JOB_ACTION__JOB_ADVANCE:
		rc = job_advance(r, q, err, errlen);
		break;
	case SHOAL__V1__MOVE_JOB_ACTION__JOB_ABORT:
		rc = job_abort(r, q, note, sizeof(note), err, errlen);
		break;
	case SHOAL__V1__MOVE_JOB_ACTION__JOB_STATUS:
		router_refresh_map(r);
		break;
	case SHOAL__V1__MOVE_JOB_ACTION__JOB_CLEAR: {
		uint64_t want = q->job_id;
		rc = router_change_map_locked(r, clear_fn, &want, NULL, err,
					      errlen);
		break;
	}
	default:
		rc =
		    sh_errf(err, errlen, SH_EINVAL, "move_job.action: unknown");
	}
	pthread_mutex_unlock(&r->admin);
	/* The answer is the job as the map has it now, even after a step
	 * that failed (its error is in the move). */
	sh_map *m = router_map_copy(r);
	if (!m)
		return rc ? rc : SH_ENOMEM;
	Shoal__V1__MoveJobResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res) {
		free(m);
		return rc ? rc : SH_ENOMEM;
	}
	shoal__v1__move_job_result__init(res);
	res->map_epoch = m->epoch;
	if (m->job.id) {
		res->job = router_job_out(m, a);
		if (res->job &&
		    q->action == SHOAL__V1__MOVE_JOB_ACTION__JOB_STATUS)
			add_progress(r, m, res->job, a);
	}
	free(m);
	if (rc == SH_OK && note[0])
		sh_debug("router", "%s", note);
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_MOVE_JOB;
	rs->move_job = res;
	return rc;
}
