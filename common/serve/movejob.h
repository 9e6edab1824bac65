/*
 * The coordinator's side of slot moves (docs/rebalancing.md): puts a job
 * of moves in the router's map and drives it step by step with
 * MoveJobRequests. shoalctl and shoal-bench rebalance share it; what each
 * shows while a job runs is theirs (sh_movejob_watch).
 *
 * The state lives in the map, not here: a coordinator that stops at any
 * point leaves a job that another one resumes (sh_movejob_run) or aborts.
 */
#ifndef SH_MOVEJOB_H
#define SH_MOVEJOB_H

#include <stddef.h>
#include <stdint.h>

#include "rpc.h"

/* One move of a job to start. */
typedef struct sh_movejob_move {
	uint32_t first, last; /* slots */
	uint32_t from, to;    /* node ids */
	uint64_t points;      /* estimated (shown in status) */
} sh_movejob_move;

/* One MoveJobRequest to the router at c (deadline timeout_ms: steps may
 * wait for a fence's drain or the erasing of a copy). Returns the router's
 * code, or the transport's error, with its message in msg; *out (optional;
 * the caller frees it with sh_wire_free_response) gets the response when
 * one came. Any thread. */
int sh_movejob_call(sh_rpc *c, Shoal__V1__MoveJobRequest *jr,
		    uint32_t timeout_ms, Shoal__V1__Response **out, char *msg,
		    size_t cap);

/* Puts a job of n moves in the map (JOB_START). SH_OK with *job_id, or the
 * router's error (EBUSY: another job is in flight; ESTALE: another router
 * changed the map meanwhile) with its message. */
int sh_movejob_start(sh_rpc *c, const char *description,
		     const sh_movejob_move *mv, size_t n, uint64_t max_bps,
		     uint32_t grace_ms, uint64_t *job_id, char *msg,
		     size_t cap);

/* What a run shows. Both callbacks are optional and called on the calling
 * thread of sh_movejob_run. */
typedef struct sh_movejob_watch {
	/* After every status: the job as the map has it, the index of the
	 * move in flight (n_moves when none) and whether its copy is still
	 * running (the run then only waits). */
	void (*status)(void *ctx, const Shoal__V1__MoveJob *job, size_t current,
		       int copying);
	/* A step that failed (it is retried): the move, the code, why. */
	void (*failed)(void *ctx, const Shoal__V1__Move *m, int code,
		       const char *msg);
	void *ctx;
} sh_movejob_watch;

/* Runs job job_id (0: whichever is in the map) to its end: reads the job,
 * takes its first move not DONE or ABORTED, waits (poll_ms) while that
 * move's copy runs, else asks for its next step (JOB_ADVANCE from the
 * state it saw). EBUSY (not yet: the copy, the grace period) and ESTALE
 * (the map changed: read it again) are waited out; any other failure is
 * retried with a growing pause, and max_fails of them in a row end the
 * run. Returns SH_OK when no move is left in flight, with *done moves DONE
 * of *total (the rest were aborted); SH_ENOTFOUND when the job is not (or
 * no longer) in the map; otherwise the last failure, with its message in
 * msg (the job stays in the map for a resume or an abort). */
int sh_movejob_run(sh_rpc *c, uint64_t job_id, int poll_ms, int max_fails,
		   const sh_movejob_watch *w, size_t *done, size_t *total,
		   char *msg, size_t cap);

#endif
