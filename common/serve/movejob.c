/* The coordinator's side of slot moves. See movejob.h. */
#include "movejob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "metrics.h"

/* A step's deadline: a fence drains, a finish erases a copy. */
#define STEP_TIMEOUT_MS 120000

static int terminal(int s)
{
	return s == SHOAL__V1__MOVE_STATE__MOVE_DONE ||
	       s == SHOAL__V1__MOVE_STATE__MOVE_ABORTED;
}

int sh_movejob_call(sh_rpc *c, Shoal__V1__MoveJobRequest *jr,
		    uint32_t timeout_ms, Shoal__V1__Response **out, char *msg,
		    size_t cap)
{
	if (out)
		*out = NULL;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_MOVE_JOB;
	rq.move_job = jr;
	rq.timeout_ms = timeout_ms;
	Shoal__V1__Response *rs = NULL;
	char err[256];
	int rc = sh_rpc_call(c, &rq, &rs, err, sizeof(err));
	if (rc) {
		snprintf(msg, cap, "%s", err);
		return rc;
	}
	rc = (int)rs->code;
	snprintf(msg, cap, "%s",
		 rs->message && *rs->message ? rs->message : sh_strerror(rc));
	if (out)
		*out = rs;
	else
		sh_wire_free_response(rs);
	return rc;
}

int sh_movejob_start(sh_rpc *c, const char *description,
		     const sh_movejob_move *mv, size_t n, uint64_t max_bps,
		     uint32_t grace_ms, uint64_t *job_id, char *msg, size_t cap)
{
	*job_id = 0;
	Shoal__V1__Move *ms = calloc(n ? n : 1, sizeof(*ms));
	Shoal__V1__Move **mp = calloc(n ? n : 1, sizeof(*mp));
	if (!ms || !mp) {
		free(ms);
		free(mp);
		snprintf(msg, cap, "out of memory");
		return SH_ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		shoal__v1__move__init(&ms[i]);
		ms[i].first = mv[i].first;
		ms[i].last = mv[i].last;
		ms[i].from = mv[i].from;
		ms[i].to = mv[i].to;
		ms[i].points = mv[i].points;
		mp[i] = &ms[i];
	}
	Shoal__V1__MoveJob job = SHOAL__V1__MOVE_JOB__INIT;
	job.description = (char *)(description ? description : "");
	job.moves = mp;
	job.n_moves = n;
	job.max_bytes_per_sec = max_bps;
	job.grace_ms = grace_ms;
	Shoal__V1__MoveJobRequest jr = SHOAL__V1__MOVE_JOB_REQUEST__INIT;
	jr.action = SHOAL__V1__MOVE_JOB_ACTION__JOB_START;
	jr.job = &job;
	Shoal__V1__Response *rs;
	int rc = sh_movejob_call(c, &jr, STEP_TIMEOUT_MS, &rs, msg, cap);
	if (rc == SH_OK) {
		if (rs->move_job && rs->move_job->job)
			*job_id = rs->move_job->job->id;
		else
			rc = SH_EIO, snprintf(msg, cap, "no job in the answer");
	}
	sh_wire_free_response(rs);
	free(ms);
	free(mp);
	return rc;
}

int sh_movejob_run(sh_rpc *c, uint64_t job_id, int poll_ms, int max_fails,
		   const sh_movejob_watch *w, size_t *done, size_t *total,
		   char *msg, size_t cap)
{
	*done = *total = 0;
	int fails = 0;
	for (;;) {
		Shoal__V1__MoveJobRequest sq =
		    SHOAL__V1__MOVE_JOB_REQUEST__INIT;
		sq.action = SHOAL__V1__MOVE_JOB_ACTION__JOB_STATUS;
		Shoal__V1__Response *rs;
		int rc =
		    sh_movejob_call(c, &sq, STEP_TIMEOUT_MS, &rs, msg, cap);
		const Shoal__V1__MoveJob *j =
		    rc || !rs->move_job ? NULL : rs->move_job->job;
		if (rc == SH_OK && (!j || (job_id && j->id != job_id))) {
			sh_wire_free_response(rs);
			snprintf(msg, cap,
				 "the job is not in the map (cleared, or "
				 "replaced)");
			return SH_ENOTFOUND;
		}
		if (rc) {
			sh_wire_free_response(rs);
			if (++fails >= max_fails)
				return rc;
			sh_sleep_ms(500 * fails);
			continue;
		}
		job_id = j->id;
		size_t cur = j->n_moves;
		for (size_t i = 0; i < j->n_moves && cur == j->n_moves; i++)
			if (!terminal(j->moves[i]->state))
				cur = i;
		const Shoal__V1__Move *m =
		    cur < j->n_moves ? j->moves[cur] : NULL;
		int copying = m &&
			      m->state == SHOAL__V1__MOVE_STATE__MOVE_COPYING &&
			      m->progress &&
			      m->progress->state ==
				  SHOAL__V1__MIGRATE_STATE__MIGRATE_COPYING;
		if (w && w->status)
			w->status(w->ctx, j, cur, copying);
		if (!m) {
			*total = j->n_moves;
			for (size_t i = 0; i < j->n_moves; i++)
				*done += j->moves[i]->state ==
					 SHOAL__V1__MOVE_STATE__MOVE_DONE;
			sh_wire_free_response(rs);
			return SH_OK;
		}
		if (copying) {
			sh_wire_free_response(rs);
			sh_sleep_ms(poll_ms);
			continue;
		}
		Shoal__V1__MoveJobRequest aq =
		    SHOAL__V1__MOVE_JOB_REQUEST__INIT;
		aq.action = SHOAL__V1__MOVE_JOB_ACTION__JOB_ADVANCE;
		aq.job_id = j->id;
		aq.move_id = m->id;
		aq.from_state = m->state;
		Shoal__V1__Move failed = *m;
		sh_wire_free_response(rs);
		rc = sh_movejob_call(c, &aq, STEP_TIMEOUT_MS, NULL, msg, cap);
		if (rc == SH_OK) {
			fails = 0;
			continue;
		}
		if (rc == SH_EBUSY || rc == SH_ESTALE) {
			sh_sleep_ms(poll_ms);
			continue;
		}
		failed.progress = NULL;
		failed.error = NULL;
		if (w && w->failed)
			w->failed(w->ctx, &failed, rc, msg);
		if (++fails >= max_fails)
			return rc;
		sh_sleep_ms(500 * fails);
	}
}
