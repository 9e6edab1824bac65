/*
 * shoalctl rebalance / drain / move-slots / remove-node / abort / resume,
 * and the moves part of status: slot moves through the router's MoveJob
 * messages (docs/rebalancing.md).
 *
 * shoalctl is the coordinator: it puts a job of moves in the map (START),
 * then asks the router for each move's steps in turn (ADVANCE with the
 * state it saw) and watches the copy's progress in between. The state
 * lives in the map, not here: a shoalctl killed at any point leaves a job
 * that `shoalctl resume` continues and `shoalctl abort` undoes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "error.h"
#include "flags.h"
#include "movejob.h"
#include "plan.h"
#include "rpc.h"
#include "slots.h"

static const char *const state_names[] = {
    "?",	  "pending",  "prepared", "copying", "fenced",
    "handed_off", "switched", "done",	  "aborted",
};

static const char *state_name(int s)
{
	return s >= 1 && s <= 8 ? state_names[s] : "?";
}

static bool terminal(int s)
{
	return s == SHOAL__V1__MOVE_STATE__MOVE_DONE ||
	       s == SHOAL__V1__MOVE_STATE__MOVE_ABORTED;
}

/* The router, dialled once for the whole command. */
static sh_rpc *router_rpc(void)
{
	static sh_rpc *c;
	if (!c) {
		char err[512];
		/* above the deadline of one step (movejob.c) */
		if (sh_rpc_dial(ctl.router, 130000, 0, &c, err, sizeof(err)))
			ctl_die("%s", err);
	}
	return c;
}

/* One MoveJob call; the response is the caller's. Unlike ctl_admin_call it
 * does not die: *code gets the router's code and msg its message. */
static Shoal__V1__Response *job_call(Shoal__V1__MoveJobRequest *jr, int *code,
				     char *msg, size_t cap)
{
	Shoal__V1__Response *rs = NULL;
	*code = sh_movejob_call(router_rpc(), jr, 120000, &rs, msg, cap);
	return rs;
}

static Shoal__V1__Response *job_status(void)
{
	Shoal__V1__MoveJobRequest jr = SHOAL__V1__MOVE_JOB_REQUEST__INIT;
	jr.action = SHOAL__V1__MOVE_JOB_ACTION__JOB_STATUS;
	int code;
	char msg[512];
	Shoal__V1__Response *rs = job_call(&jr, &code, msg, sizeof(msg));
	if (!rs || code) {
		sh_wire_free_response(rs);
		ctl_die("status of the moves: %s", msg);
	}
	return rs;
}

/* ---- Sizes and rates ------------------------------------------------------
 */

/* --max-rate: a size per second ("50M", "200K", "50MB/s"). */
static uint64_t parse_rate(const char *s)
{
	char buf[64];
	snprintf(buf, sizeof(buf), "%s", s);
	size_t n = strlen(buf);
	if (n > 2 && !strcmp(buf + n - 2, "/s"))
		buf[n - 2] = 0;
	uint64_t v;
	if (sh_parse_size(buf, &v) != SH_OK || v == 0)
		ctl_die("--max-rate %s: bytes per second, e.g. 50M or 200K", s);
	return v;
}

static const char *human_bytes(double b, char *buf, size_t cap)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;
	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, cap, i ? "%.1f %s" : "%.0f %s", b, u[i]);
	return buf;
}

/* ---- JSON and tables --------------------------------------------------------
 */

cJSON *ctl_job_json(const Shoal__V1__MoveJob *j)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", (double)j->id);
	cJSON_AddStringToObject(o, "description",
				j->description ? j->description : "");
	cJSON_AddNumberToObject(o, "max_bytes_per_sec",
				(double)j->max_bytes_per_sec);
	cJSON_AddNumberToObject(o, "grace_ms", j->grace_ms);
	cJSON_AddBoolToObject(o, "aborted", j->aborted);
	cJSON *a = cJSON_AddArrayToObject(o, "moves");
	for (size_t i = 0; i < j->n_moves; i++) {
		const Shoal__V1__Move *m = j->moves[i];
		cJSON *x = cJSON_CreateObject();
		cJSON_AddNumberToObject(x, "id", (double)m->id);
		cJSON_AddNumberToObject(x, "first", m->first);
		cJSON_AddNumberToObject(x, "last", m->last);
		cJSON_AddNumberToObject(x, "from", m->from);
		cJSON_AddNumberToObject(x, "to", m->to);
		cJSON_AddStringToObject(x, "state", state_name(m->state));
		cJSON_AddNumberToObject(x, "points", (double)m->points);
		if (m->error && *m->error)
			cJSON_AddStringToObject(x, "error", m->error);
		if (m->progress) {
			const Shoal__V1__MigrateResult *p = m->progress;
			cJSON *y = cJSON_AddObjectToObject(x, "progress");
			cJSON_AddNumberToObject(y, "points_total",
						(double)p->points_total);
			cJSON_AddNumberToObject(y, "points_copied",
						(double)p->points_copied);
			cJSON_AddNumberToObject(y, "bytes_copied",
						(double)p->bytes_copied);
			cJSON_AddNumberToObject(y, "captured_pending",
						(double)p->captured_pending);
			cJSON_AddNumberToObject(y, "replayed",
						(double)p->replayed);
			cJSON_AddNumberToObject(y, "elapsed_ms",
						(double)p->elapsed_ms);
		}
		cJSON_AddItemToArray(a, x);
	}
	return o;
}

/* "[#####.....]  48%  12,345/25,000 points  3.1 MiB/s  ETA 4 s" */
static void progress_line(const Shoal__V1__MigrateResult *p, char *buf,
			  size_t cap)
{
	double total = (double)p->points_total, done = (double)p->points_copied;
	double frac = total > 0 ? done / total : 0;
	if (frac > 1)
		frac = 1;
	char bar[21];
	int fill = (int)(frac * 20);
	for (int i = 0; i < 20; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[20] = 0;
	double secs = (double)p->elapsed_ms / 1000.0;
	double rate = secs > 0 ? (double)p->bytes_copied / secs : 0;
	double prate = secs > 0 ? done / secs : 0;
	char hb[32], eta[32] = "";
	if (prate > 0 && total > done &&
	    p->state == SHOAL__V1__MIGRATE_STATE__MIGRATE_COPYING)
		snprintf(eta, sizeof(eta), "  ETA %.0f s",
			 (total - done) / prate);
	snprintf(buf, cap,
		 "[%s] %3.0f%%  %llu/%llu points  %s/s  %.0f points/s%s%s", bar,
		 frac * 100, (unsigned long long)done,
		 (unsigned long long)total, human_bytes(rate, hb, sizeof(hb)),
		 prate, eta,
		 p->state == SHOAL__V1__MIGRATE_STATE__MIGRATE_READY
		     ? "  (copied; replaying writes)"
		     : "");
}

void ctl_print_job_status(bool json)
{
	Shoal__V1__Response *rs = job_status();
	const Shoal__V1__MoveJob *j = rs->move_job->job;
	if (json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "map_epoch",
					(double)rs->move_job->map_epoch);
		if (j)
			cJSON_AddItemToObject(o, "job", ctl_job_json(j));
		ctl_print_json(o);
		sh_wire_free_response(rs);
		return;
	}
	if (!j) {
		printf("\nno slot moves\n");
		sh_wire_free_response(rs);
		return;
	}
	size_t done = 0;
	for (size_t i = 0; i < j->n_moves; i++)
		done += terminal(j->moves[i]->state);
	printf("\njob %llu (%s): %zu of %zu moves finished%s\n",
	       (unsigned long long)j->id, j->description, done, j->n_moves,
	       j->aborted ? ", aborted" : "");
	printf("%6s  %-13s %5s %5s  %-10s %s\n", "MOVE", "SLOTS", "FROM", "TO",
	       "STATE", "PROGRESS");
	for (size_t i = 0; i < j->n_moves; i++) {
		const Shoal__V1__Move *m = j->moves[i];
		char r[32], line[200] = "";
		snprintf(r, sizeof(r), "%u-%u", m->first, m->last);
		if (m->progress)
			progress_line(m->progress, line, sizeof(line));
		else if (m->error && *m->error)
			snprintf(line, sizeof(line), "(%s)", m->error);
		printf("%6llu  %-13s %5u %5u  %-10s %s\n",
		       (unsigned long long)m->id, r, m->from, m->to,
		       state_name(m->state), line);
	}
	sh_wire_free_response(rs);
}

/* ---- Running a job ----------------------------------------------------------
 */

struct show {
	bool tty;
	uint64_t move;
	int state;
};

/* Each step as it is reached; a progress bar while a copy runs. */
static void show_status(void *ctx, const Shoal__V1__MoveJob *j, size_t cur,
			int copying)
{
	struct show *sh = ctx;
	if (ctl.json || cur >= j->n_moves)
		return;
	const Shoal__V1__Move *mv = j->moves[cur];
	if (mv->id != sh->move || (int)mv->state != sh->state) {
		if (sh->tty)
			fprintf(stderr, "\r\033[K");
		fprintf(stderr,
			"move %llu [%zu/%zu] slots %u-%u: node %u -> %u: "
			"%s\n",
			(unsigned long long)mv->id, cur + 1, j->n_moves,
			mv->first, mv->last, mv->from, mv->to,
			state_name(mv->state));
		sh->move = mv->id;
		sh->state = (int)mv->state;
	}
	if (copying && sh->tty) {
		char line[200];
		progress_line(mv->progress, line, sizeof(line));
		fprintf(stderr, "\r\033[K  %s", line);
	}
}

static void show_failed(void *ctx, const Shoal__V1__Move *m, int code,
			const char *msg)
{
	struct show *sh = ctx;
	if (sh->tty)
		fprintf(stderr, "\r\033[K");
	fprintf(stderr, "shoalctl: move %llu: %s (%s)\n",
		(unsigned long long)m->id, msg, sh_errname(code));
}

/* Runs the job in the map (job_id: the one expected, 0 any) until every
 * move is finished or aborted (common/serve/movejob.c). Returns the exit
 * status: 0 when every move is done, 1 otherwise. Five failed steps in a
 * row stop shoalctl with the job left in the map. */
static int run_job(uint64_t job_id)
{
	struct show sh = {.tty = isatty(STDERR_FILENO) && !ctl.json};
	sh_movejob_watch w = {show_status, show_failed, &sh};
	size_t done, total;
	char msg[512];
	int rc = sh_movejob_run(router_rpc(), job_id, 200, 5, &w, &done, &total,
				msg, sizeof(msg));
	if (sh.tty)
		fprintf(stderr, "\r\033[K");
	if (rc == SH_ENOTFOUND)
		ctl_die("the job is no longer in the map (another shoalctl "
			"cleared it?)");
	if (rc)
		ctl_die("%s (%s); the job stays in the map: fix the cause, "
			"then shoalctl resume (or abort)",
			msg, sh_errname(rc));
	Shoal__V1__Response *rs = job_status();
	const Shoal__V1__MoveJob *j = rs->move_job->job;
	if (ctl.json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "map_epoch",
					(double)rs->move_job->map_epoch);
		if (j)
			cJSON_AddItemToObject(o, "job", ctl_job_json(j));
		ctl_print_json(o);
	} else {
		printf("job %llu: %zu of %zu moves done%s; map epoch %llu\n",
		       (unsigned long long)(j ? j->id : job_id), done, total,
		       done < total ? " (the rest aborted)" : "",
		       (unsigned long long)rs->move_job->map_epoch);
	}
	sh_wire_free_response(rs);
	return done == total ? 0 : 1;
}

/* Puts a job of moves in the map and runs it. */
static int start_job(const char *desc, const sh_plan_move *mv, size_t nm,
		     uint64_t max_bps, uint32_t grace_ms)
{
	sh_movejob_move *ms = calloc(nm ? nm : 1, sizeof(*ms));
	if (!ms)
		ctl_die("out of memory");
	for (size_t i = 0; i < nm; i++)
		ms[i] = (sh_movejob_move){mv[i].first, mv[i].last, mv[i].from,
					  mv[i].to, mv[i].points};
	uint64_t id;
	char msg[512];
	int rc = sh_movejob_start(router_rpc(), desc, ms, nm, max_bps, grace_ms,
				  &id, msg, sizeof(msg));
	free(ms);
	if (rc)
		ctl_die("%s: %s (%s)", desc, msg, sh_errname(rc));
	if (!ctl.json)
		fprintf(stderr, "job %llu (%s): %zu moves\n",
			(unsigned long long)id, desc, nm);
	return run_job(id);
}

/* ---- Plans
 * ------------------------------------------------------------------- */

struct plan {
	sh_plan_node *nodes;
	size_t nn;
	sh_plan_move *mv;
	size_t nm;
	uint64_t *after;
	double bytes_per_point;
	uint64_t epoch;
};

/* Bytes a point takes on the wire of a move, on average over the
 * collections (vector, id, payload guess). */
static double bytes_per_point(void)
{
	shoal_client *c = ctl_connect();
	shoal_collections *l;
	double b = 0, n = 0;
	if (shoal_collection_list(c, &l) == SHOAL_OK) {
		for (size_t i = 0; i < l->n; i++) {
			b += (double)l->items[i].points *
			     (4.0 * l->items[i].config.dim + 64);
			n += (double)l->items[i].points;
		}
		shoal_collections_free(l);
	}
	shoal_close(c);
	return n > 0 ? b / n : 0;
}

/* Each slot's points, as its owner counts it. */
static uint64_t *slot_points(void)
{
	Shoal__V1__StatsRequest sr = SHOAL__V1__STATS_REQUEST__INIT;
	sr.with_slot_counts = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_STATS;
	rq.stats = &sr;
	Shoal__V1__Response *rs = ctl_admin_call(&rq);
	uint64_t *pts = calloc(SH_SLOTS, sizeof(*pts));
	if (!pts)
		ctl_die("out of memory");
	for (size_t i = 0; i < rs->stats->n_slot_counts; i++)
		if (rs->stats->slot_counts[i]->slot < SH_SLOTS)
			pts[rs->stats->slot_counts[i]->slot] =
			    rs->stats->slot_counts[i]->points;
	sh_wire_free_response(rs);
	return pts;
}

static void make_plan(const char *drain, struct plan *p)
{
	memset(p, 0, sizeof(*p));
	Shoal__V1__Response *rs = ctl_get_map(true);
	const Shoal__V1__ClusterMap *m = rs->get_map;
	p->epoch = m->epoch;
	p->nn = m->n_nodes;
	p->nodes = calloc(m->n_nodes ? m->n_nodes : 1, sizeof(*p->nodes));
	sh_plan_range *ranges =
	    calloc(m->n_slots ? m->n_slots : 1, sizeof(*ranges));
	p->after = calloc(m->n_nodes ? m->n_nodes : 1, sizeof(*p->after));
	if (!p->nodes || !ranges || !p->after)
		ctl_die("out of memory");
	for (size_t i = 0; i < m->n_nodes; i++) {
		const Shoal__V1__NodeInfo *n = m->nodes[i];
		if (n->health != SHOAL__V1__HEALTH__SERVING)
			ctl_die("node %u (%s) is %s%s%s: its points are "
				"unknown, so no plan",
				n->id, n->address, ctl_health_name(n->health),
				n->error && *n->error ? ": " : "",
				n->error ? n->error : "");
		p->nodes[i] = (sh_plan_node){.id = n->id, .points = n->points};
	}
	for (const char *d = drain; d && *d;) {
		char *end;
		unsigned long id = strtoul(d, &end, 10);
		size_t i = 0;
		while (i < m->n_nodes && p->nodes[i].id != id)
			i++;
		if (end == d || (*end && *end != ',') || i == m->n_nodes)
			ctl_die("--drain %s: not a node id of the map", drain);
		p->nodes[i].drain = true;
		d = *end ? end + 1 : end;
	}
	for (size_t i = 0; i < m->n_slots; i++)
		ranges[i] = (sh_plan_range){.first = m->slots[i]->first,
					    .last = m->slots[i]->last,
					    .node = m->slots[i]->node_id};
	uint64_t *sp = slot_points();
	char err[256];
	if (sh_plan_rebalance_weighted(p->nodes, m->n_nodes, ranges, m->n_slots,
				       sp, &p->mv, &p->nm, p->after, err,
				       sizeof(err)) != SH_OK)
		ctl_die("rebalance: %s", err);
	free(sp);
	free(ranges);
	sh_wire_free_response(rs);
	p->bytes_per_point = bytes_per_point();
}

static void free_plan(struct plan *p)
{
	free(p->nodes);
	free(p->mv);
	free(p->after);
}

static void print_plan(const struct plan *p)
{
	if (ctl.json) {
		cJSON *o = cJSON_CreateObject(), *a;
		cJSON_AddNumberToObject(o, "epoch", (double)p->epoch);
		a = cJSON_AddArrayToObject(o, "moves");
		for (size_t k = 0; k < p->nm; k++) {
			const sh_plan_move *mv = &p->mv[k];
			cJSON *x = cJSON_CreateObject();
			cJSON_AddNumberToObject(x, "first", mv->first);
			cJSON_AddNumberToObject(x, "last", mv->last);
			cJSON_AddNumberToObject(x, "slots",
						mv->last - mv->first + 1);
			cJSON_AddNumberToObject(x, "from", mv->from);
			cJSON_AddNumberToObject(x, "to", mv->to);
			cJSON_AddNumberToObject(x, "points",
						(double)mv->points);
			cJSON_AddNumberToObject(
			    x, "bytes",
			    round((double)mv->points * p->bytes_per_point));
			cJSON_AddItemToArray(a, x);
		}
		a = cJSON_AddArrayToObject(o, "nodes");
		for (size_t i = 0; i < p->nn; i++) {
			cJSON *x = cJSON_CreateObject();
			cJSON_AddNumberToObject(x, "id", p->nodes[i].id);
			cJSON_AddNumberToObject(x, "points",
						(double)p->nodes[i].points);
			cJSON_AddNumberToObject(x, "points_after",
						(double)p->after[i]);
			cJSON_AddBoolToObject(x, "drain", p->nodes[i].drain);
			cJSON_AddItemToArray(a, x);
		}
		ctl_print_json(o);
		return;
	}
	printf("plan for map epoch %llu: %zu move(s)%s\n",
	       (unsigned long long)p->epoch, p->nm, p->nm ? "" : " (balanced)");
	if (p->nm)
		printf("%-13s %6s %5s %5s %12s %12s\n", "SLOTS", "COUNT",
		       "FROM", "TO", "POINTS", "BYTES(EST)");
	for (size_t k = 0; k < p->nm; k++) {
		const sh_plan_move *mv = &p->mv[k];
		char r[16], hb[32];
		snprintf(r, sizeof(r), "%u-%u", mv->first, mv->last);
		printf("%-13s %6u %5u %5u %12llu %12s\n", r,
		       mv->last - mv->first + 1, mv->from, mv->to,
		       (unsigned long long)mv->points,
		       human_bytes((double)mv->points * p->bytes_per_point, hb,
				   sizeof(hb)));
	}
	printf("\n%4s %12s %12s\n", "NODE", "POINTS", "AFTER");
	for (size_t i = 0; i < p->nn; i++)
		printf("%4u %12llu %12llu%s\n", p->nodes[i].id,
		       (unsigned long long)p->nodes[i].points,
		       (unsigned long long)p->after[i],
		       p->nodes[i].drain ? "  (drained)" : "");
}

/* ---- Commands
 * ---------------------------------------------------------------- */

struct move_opts {
	bool dry;
	uint64_t max_bps;
	uint32_t grace_ms;
	const char *drain;
	const char *to;
	const char *range;
};

/* Parses the options every move command shares; positional arguments
 * land in pos (at most npos). */
static void parse_move_opts(int argc, char **argv, struct move_opts *o,
			    const char **pos, int npos, const char *usage)
{
	memset(o, 0, sizeof(*o));
	int np = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--dry-run"))
			o->dry = true;
		else if (!strcmp(argv[i], "--max-rate") && i + 1 < argc)
			o->max_bps = parse_rate(argv[++i]);
		else if (!strcmp(argv[i], "--grace-ms") && i + 1 < argc)
			o->grace_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--drain") && i + 1 < argc)
			o->drain = argv[++i];
		else if (!strcmp(argv[i], "--to") && i + 1 < argc)
			o->to = argv[++i];
		else if (argv[i][0] != '-' && np < npos)
			pos[np++] = argv[i];
		else
			ctl_die("usage: %s", usage);
	}
	for (int i = np; i < npos; i++)
		pos[i] = NULL;
}

static int plan_and_run(const char *drain, const struct move_opts *o,
			const char *desc)
{
	struct plan p;
	make_plan(drain, &p);
	if (o->dry || p.nm == 0) {
		print_plan(&p);
		free_plan(&p);
		return 0;
	}
	if (!ctl.json)
		print_plan(&p);
	int rc = start_job(desc, p.mv, p.nm, o->max_bps, o->grace_ms);
	free_plan(&p);
	return rc;
}

int ctl_rebalance(int argc, char **argv)
{
	struct move_opts o;
	parse_move_opts(argc, argv, &o, NULL, 0,
			"rebalance [--dry-run] [--drain ID[,ID...]] "
			"[--max-rate BYTES/S] [--grace-ms MS]");
	return plan_and_run(o.drain, &o,
			    o.drain ? "rebalance with drain" : "rebalance");
}

int ctl_drain(int argc, char **argv)
{
	struct move_opts o;
	const char *pos[1];
	parse_move_opts(argc, argv, &o, pos, 1,
			"drain NODE [--dry-run] [--max-rate BYTES/S] "
			"[--grace-ms MS]");
	if (!pos[0])
		ctl_die("usage: drain NODE [--dry-run] [--max-rate BYTES/S]");
	char desc[64];
	snprintf(desc, sizeof(desc), "drain %s", pos[0]);
	return plan_and_run(pos[0], &o, desc);
}

/* move-slots FIRST[-LAST] --to NODE: one move per current owner of the
 * range's slots. */
int ctl_move_slots(int argc, char **argv)
{
	struct move_opts o;
	const char *pos[1];
	const char *usage = "move-slots FIRST[-LAST] --to NODE [--max-rate "
			    "BYTES/S] [--grace-ms MS]";
	parse_move_opts(argc, argv, &o, pos, 1, usage);
	if (!pos[0] || !o.to)
		ctl_die("usage: %s", usage);
	char *end;
	unsigned long first = strtoul(pos[0], &end, 10), last = first;
	if (*end == '-')
		last = strtoul(end + 1, &end, 10);
	if (*end || first > last || last >= SH_SLOTS)
		ctl_die("move-slots %s: a slot or a range FIRST-LAST within "
			"0..%d",
			pos[0], SH_SLOTS - 1);
	unsigned long to = strtoul(o.to, &end, 10);
	if (*end || to == 0)
		ctl_die("--to %s: a node id", o.to);
	Shoal__V1__Response *rs = ctl_get_map(false);
	const Shoal__V1__ClusterMap *m = rs->get_map;
	bool known = false;
	for (size_t i = 0; i < m->n_nodes; i++)
		known |= m->nodes[i]->id == to;
	if (!known)
		ctl_die("--to %lu: not a node of the map", to);
	sh_plan_move *mv = calloc(m->n_slots ? m->n_slots : 1, sizeof(*mv));
	size_t nm = 0;
	if (!mv)
		ctl_die("out of memory");
	for (size_t i = 0; i < m->n_slots; i++) {
		const Shoal__V1__SlotOwner *so = m->slots[i];
		uint32_t a = so->first > first ? so->first : (uint32_t)first;
		uint32_t b = so->last < last ? so->last : (uint32_t)last;
		if (a > b || so->node_id == to)
			continue;
		if (nm && mv[nm - 1].from == so->node_id &&
		    mv[nm - 1].last + 1 == a)
			mv[nm - 1].last = b;
		else
			mv[nm++] = (sh_plan_move){.first = a,
						  .last = b,
						  .from = so->node_id,
						  .to = (uint32_t)to};
	}
	sh_wire_free_response(rs);
	if (nm == 0) {
		printf("slots %lu-%lu are on node %lu already\n", first, last,
		       to);
		free(mv);
		return 0;
	}
	char desc[96];
	snprintf(desc, sizeof(desc), "move-slots %lu-%lu to %lu", first, last,
		 to);
	int st = 0;
	if (o.dry) {
		for (size_t k = 0; k < nm; k++)
			printf("slots %u-%u: node %u -> %u\n", mv[k].first,
			       mv[k].last, mv[k].from, mv[k].to);
	} else {
		st = start_job(desc, mv, nm, o.max_bps, o.grace_ms);
	}
	free(mv);
	return st;
}

int ctl_remove_node(int argc, char **argv)
{
	if (argc != 1)
		ctl_die("usage: remove-node NODE (once it owns no slot: "
			"shoalctl drain NODE first)");
	char *end;
	unsigned long id = strtoul(argv[0], &end, 10);
	if (*end || id == 0)
		ctl_die("remove-node %s: a node id", argv[0]);
	Shoal__V1__RemoveNodeRequest rn = SHOAL__V1__REMOVE_NODE_REQUEST__INIT;
	rn.node_id = (uint32_t)id;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_REMOVE_NODE;
	rq.remove_node = &rn;
	Shoal__V1__Response *rs = ctl_admin_call(&rq);
	if (ctl.json)
		printf("{\"node_id\":%lu,\"map_epoch\":%llu}\n", id,
		       (unsigned long long)rs->remove_node->map_epoch);
	else
		printf("removed node %lu; map epoch %llu\n", id,
		       (unsigned long long)rs->remove_node->map_epoch);
	sh_wire_free_response(rs);
	return 0;
}

int ctl_abort(int argc, char **argv)
{
	if (argc)
		ctl_die("abort takes no arguments");
	Shoal__V1__MoveJobRequest jr = SHOAL__V1__MOVE_JOB_REQUEST__INIT;
	jr.action = SHOAL__V1__MOVE_JOB_ACTION__JOB_ABORT;
	int code;
	char msg[512];
	Shoal__V1__Response *rs = job_call(&jr, &code, msg, sizeof(msg));
	if (!rs || code) {
		sh_wire_free_response(rs);
		ctl_die("abort: %s (%s)", msg, sh_errname(code));
	}
	const Shoal__V1__MoveJob *j = rs->move_job->job;
	int st = 0;
	if (ctl.json) {
		cJSON *o = cJSON_CreateObject();
		if (j)
			cJSON_AddItemToObject(o, "job", ctl_job_json(j));
		ctl_print_json(o);
	} else if (!j) {
		printf("no job in the map\n");
	}
	for (size_t i = 0; j && i < j->n_moves; i++) {
		const Shoal__V1__Move *m = j->moves[i];
		if (m->state == SHOAL__V1__MOVE_STATE__MOVE_SWITCHED) {
			fprintf(stderr,
				"shoalctl: move %llu already gave slots %u-%u "
				"to node %u: it can only be finished "
				"(shoalctl resume)\n",
				(unsigned long long)m->id, m->first, m->last,
				m->to);
			st = 1;
		} else if (!ctl.json) {
			printf("move %llu (slots %u-%u, %u -> %u): %s\n",
			       (unsigned long long)m->id, m->first, m->last,
			       m->from, m->to, state_name(m->state));
		}
	}
	sh_wire_free_response(rs);
	return st;
}

int ctl_resume(int argc, char **argv)
{
	if (argc)
		ctl_die("resume takes no arguments");
	Shoal__V1__Response *rs = job_status();
	const Shoal__V1__MoveJob *j = rs->move_job->job;
	uint64_t id = j ? j->id : 0;
	sh_wire_free_response(rs);
	if (!id) {
		printf("no job in the map\n");
		return 0;
	}
	return run_job(id);
}
