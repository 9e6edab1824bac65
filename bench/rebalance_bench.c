/*
 * shoal-bench rebalance: an online slot move, measured.
 *
 *   shoal-bench rebalance [--points 1000000] [--dim 128] [--nodes 3]
 *                         [--loaders 4] [--searchers 2]
 *                         [--steady-seconds 10] [--max-rate BYTES_PER_S]
 *                         [--grace-ms 1000] [--k 10] [--ef 64]
 *                         [--fsync always|batch|never] [--keep]
 *
 * Starts --nodes + 1 shoal-node processes and a shoal-router over the
 * first --nodes (the last node is not in the map yet), creates the
 * collection "bench" (L2, f32), and loads --points synthetic points
 * (Gaussian clusters around 256 random centres; queries from the same
 * distribution) through the router, in batches of 1000 from --loaders
 * threads, each with version 1 and the payload {"i": id}.
 *
 * Then --searchers threads search (k, ef) through the router without a
 * pause until the end, and every latency is kept, tagged with the phase
 * it started in:
 *
 *   steady  --steady-seconds before the move (after 1 s of warm-up);
 *   moving  from AddNode until the last move is DONE;
 *   after   a few seconds once the job is finished.
 *
 * The move: the new node is added (AddNodeRequest), and one job (the
 * router's MoveJob, as shoalctl move-slots would start) moves a quarter of
 * all slots onto it: from each source node the top of its range, 4096 /
 * nodes slots each (the first 4096 % nodes sources give one more, so that
 * exactly 4096 move). This program is the job's coordinator, as shoalctl's
 * run_job (ctl/moves.c): it asks for each step with JOB_ADVANCE and polls
 * JOB_STATUS every 50 ms while a copy runs. The copy's rate comes from the
 * source's own progress (points and bytes of its ImportRequests, and its
 * elapsed time) at the first status that shows the copy READY, so it is
 * exact to one poll (50 ms); a move's wall time runs from its first step
 * to DONE and includes the fence, the hand-off, the switch and the grace
 * period (--grace-ms).
 *
 * At the end: the router must count --points points (exact count) and the
 * map must give the new node 4096 slots; the node and router logs are
 * scanned for WARN and ERROR lines (shown on stderr, counted in the
 * summary). One JSON object per measurement on stdout (phases load,
 * steady, moving, after, one "move" per move, copy, summary); a table on
 * stderr. MB is 10^6 bytes. Searches use the router's default read
 * deadline (1 s); a search that fails is counted in "errors", not in the
 * latencies. Every process is stopped at the end, or on a failure, and its
 * directory removed unless --keep.
 */
#include "rebalance_bench.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "error.h"
#include "proc.h"
#include "flags.h"
#include "movejob.h"
#include "rpc.h"
#include "slots.h"

#define COLL "bench"
#define MAXNODES 32   /* source nodes; one more is started for the move */
#define MAXTHREADS 64 /* loaders, searchers */
#define BATCH 1000    /* points per upsert */
#define NCENTERS 256  /* Gaussian clusters of the synthetic data */
/* Per-coordinate spread around a centre; centres are uniform in [-1, 1]. */
#define NOISE 0.35f
#define SEED 0x5eedULL
/* Queries are points of ids from here on: never in the collection. */
#define QUERY_BASE (1ULL << 40)
#define WARM_S 1.0	       /* searches before "steady", not reported */
#define AFTER_MAX_S 5.0	       /* the "after" phase: min(steady, this) */
#define POLL_MS 50	       /* JOB_STATUS while a copy runs; EBUSY waits */
#define MAX_FAILS 5	       /* failed steps in a row before giving up */
#define ADMIN_TIMEOUT_MS 60000 /* a step may drain a fence or erase a copy */
#define P99_GOAL 2.0	       /* p99 while moving / steady, at most */
#define MAX_MOVES 64 /* one per source range: a fresh map has one each */

enum phase { PH_WARM, PH_STEADY, PH_MOVING, PH_AFTER, NPHASE, PH_STOP };
static const char *const phase_names[NPHASE] = {"warm", "steady", "moving",
						"after"};

struct ropts {
	size_t points, dim, nodes, loaders, searchers, k, ef;
	double steady_s;
	uint64_t max_rate; /* bytes/s of each move's copy; 0 = unlimited */
	uint32_t grace_ms;
	const char *fsync;
	bool keep;
};

/* ---- Synthetic data ---------------------------------------------------------
 *
 * Every point is a function of its id alone (a splitmix64 stream seeded by
 * it), so loaders and searchers need no shared data but the centres.
 */

static uint64_t mix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/* Uniform in (0, 1); advances *s. */
static double next_unit(uint64_t *s)
{
	*s = mix64(*s);
	return ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
}

struct gen {
	uint32_t dim;
	float *centers; /* NCENTERS x dim; owned, freed by gen_free */
};

static int gen_init(struct gen *g, uint32_t dim)
{
	g->dim = dim;
	g->centers = malloc((size_t)NCENTERS * dim * sizeof(float));
	if (!g->centers)
		return -1;
	uint64_t s = SEED;
	for (size_t i = 0; i < (size_t)NCENTERS * dim; i++)
		g->centers[i] = (float)(2.0 * next_unit(&s) - 1.0);
	return 0;
}

static void gen_free(struct gen *g)
{
	free(g->centers);
	g->centers = NULL;
}

/* The vector of point id into out (dim floats). Thread-safe. */
static void gen_point(const struct gen *g, uint64_t id, float *out)
{
	uint64_t s = mix64(id ^ (SEED << 17));
	const float *c = g->centers + (mix64(s) % NCENTERS) * g->dim;
	for (uint32_t d = 0; d < g->dim; d += 2) {
		/* Box-Muller: two normal deviates per pair of uniforms */
		double r = sqrt(-2.0 * log(next_unit(&s)));
		double t = 2.0 * M_PI * next_unit(&s);
		out[d] = c[d] + NOISE * (float)(r * cos(t));
		if (d + 1 < g->dim)
			out[d + 1] = c[d + 1] + NOISE * (float)(r * sin(t));
	}
}

/* ---- Calls ------------------------------------------------------------------
 */

/* One call: SH_OK with *rs (the caller frees it; its code may be an
 * error), or the transport's error with its message in msg. */
static int call(sh_rpc *c, Shoal__V1__Request *rq, Shoal__V1__Response **rs,
		char *msg, size_t cap)
{
	*rs = NULL;
	return sh_rpc_call(c, rq, rs, msg, cap);
}

/* A call whose response is only checked: 0, or -1 with why in msg. */
static int call_ok(sh_rpc *c, Shoal__V1__Request *rq, char *msg, size_t cap)
{
	Shoal__V1__Response *rs;
	char err[256];
	if (call(c, rq, &rs, err, sizeof(err))) {
		snprintf(msg, cap, "%s", err);
		return -1;
	}
	int code = (int)rs->code;
	if (code)
		snprintf(msg, cap, "%s: %s", sh_errname(code),
			 rs->message ? rs->message : "");
	sh_wire_free_response(rs);
	return code ? -1 : 0;
}

static int create(sh_rpc *c, uint32_t dim)
{
	char msg[512];
	Shoal__V1__CollectionConfig cfg = SHOAL__V1__COLLECTION_CONFIG__INIT;
	cfg.name = COLL;
	cfg.dim = dim;
	cfg.metric = SHOAL__V1__METRIC__L2;
	cfg.storage = SHOAL__V1__STORAGE__F32;
	Shoal__V1__CreateCollectionRequest cr =
	    SHOAL__V1__CREATE_COLLECTION_REQUEST__INIT;
	cr.config = &cfg;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_CREATE_COLLECTION;
	rq.create_collection = &cr;
	if (call_ok(c, &rq, msg, sizeof(msg))) {
		fprintf(stderr, "rebalance: create " COLL ": %s\n", msg);
		return -1;
	}
	return 0;
}

/* ---- Loading ----------------------------------------------------------------
 */

struct loader {
	pthread_t t;
	sh_rpc *c;
	const struct ropts *o;
	const struct gen *g;
	atomic_size_t *next; /* the next id to hand out, shared */
	atomic_size_t *done; /* points acknowledged, shared */
	int err;
};

static void *load_main(void *arg)
{
	struct loader *l = arg;
	size_t dim = l->o->dim;
	Shoal__V1__PointId *ids = calloc(BATCH, sizeof(*ids));
	Shoal__V1__Point *pts = calloc(BATCH, sizeof(*pts));
	Shoal__V1__Point **pp = calloc(BATCH, sizeof(*pp));
	float *vec = malloc(BATCH * dim * sizeof(float));
	char(*payload)[32] = malloc(BATCH * sizeof(*payload));
	if (!ids || !pts || !pp || !vec || !payload) {
		fprintf(stderr, "rebalance: load: out of memory\n");
		l->err = 1;
		goto out;
	}
	for (;;) {
		size_t first = atomic_fetch_add(l->next, BATCH);
		if (first >= l->o->points)
			break;
		size_t n =
		    l->o->points - first < BATCH ? l->o->points - first : BATCH;
		for (size_t i = 0; i < n; i++) {
			uint64_t id = first + i;
			shoal__v1__point_id__init(&ids[i]);
			ids[i].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
			ids[i].num = id;
			shoal__v1__point__init(&pts[i]);
			pts[i].id = &ids[i];
			gen_point(l->g, id, vec + i * dim);
			pts[i].vector = vec + i * dim;
			pts[i].n_vector = dim;
			pts[i].version = 1;
			snprintf(payload[i], sizeof(payload[i]), "{\"i\":%llu}",
				 (unsigned long long)id);
			pts[i].payload_json = payload[i];
			pp[i] = &pts[i];
		}
		Shoal__V1__UpsertRequest up = SHOAL__V1__UPSERT_REQUEST__INIT;
		up.collection = COLL;
		up.points = pp;
		up.n_points = n;
		Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
		rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
		rq.upsert = &up;
		rq.timeout_ms = 120000;
		Shoal__V1__Response *rs;
		char msg[512];
		if (call(l->c, &rq, &rs, msg, sizeof(msg))) {
			fprintf(stderr, "rebalance: upsert: %s\n", msg);
			l->err = 1;
			break;
		}
		int code = (int)rs->code;
		uint64_t applied = rs->upsert ? rs->upsert->applied : 0;
		if (code || applied != n)
			fprintf(stderr,
				"rebalance: upsert of %zu points from %zu: "
				"%s%s%s (%llu applied)\n",
				n, first, sh_errname(code),
				rs->message && *rs->message ? ": " : "",
				rs->message ? rs->message : "",
				(unsigned long long)applied);
		sh_wire_free_response(rs);
		if (code || applied != n) {
			l->err = 1;
			break;
		}
		atomic_fetch_add(l->done, n);
	}
out:
	free(ids);
	free(pts);
	free(pp);
	free(vec);
	free(payload);
	return NULL;
}

/* Loads every point; prints progress every 5 s and the load line.
 * Returns 0 or -1. */
static int load(sh_rpc *c, const struct ropts *o, const struct gen *g)
{
	struct loader ld[MAXTHREADS];
	atomic_size_t next = 0, done = 0;
	size_t nl = o->loaders;
	double t0 = bench_now_s();
	size_t started = 0;
	for (; started < nl; started++) {
		ld[started] = (struct loader){
		    .c = c, .o = o, .g = g, .next = &next, .done = &done};
		if (pthread_create(&ld[started].t, NULL, load_main,
				   &ld[started])) {
			fprintf(stderr, "rebalance: cannot start a loader\n");
			atomic_store(&next, o->points); /* stop the others */
			break;
		}
	}
	/* Progress until every point is handed out and acknowledged (or a
	 * loader failed: it stops handing out, the others drain). */
	double shown = t0;
	while (atomic_load(&done) < o->points) {
		bool failed = false;
		for (size_t i = 0; i < started; i++)
			failed |= ld[i].err != 0;
		if (failed || started < nl) {
			atomic_store(&next, o->points); /* stop the others */
			break;
		}
		usleep(100000);
		double now = bench_now_s();
		if (now - shown >= 5.0) {
			size_t d = atomic_load(&done);
			fprintf(stderr,
				"rebalance: loaded %zu of %zu points (%.0f%%) "
				"in %.0f s: %.0f points/s\n",
				d, o->points, 100.0 * (double)d / o->points,
				now - t0, (double)d / (now - t0));
			shown = now;
		}
	}
	int err = started < nl;
	for (size_t i = 0; i < started; i++) {
		pthread_join(ld[i].t, NULL);
		err |= ld[i].err;
	}
	if (err)
		return -1;
	double lt = bench_now_s() - t0;
	printf("{\"bench\":\"rebalance\",\"phase\":\"load\",\"points\":%zu,"
	       "\"dim\":%zu,\"nodes\":%zu,\"loaders\":%zu,\"batch\":%d,"
	       "\"fsync\":\"%s\",\"seconds\":%.2f,\"points_per_s\":%.1f}\n",
	       o->points, o->dim, o->nodes, nl, BATCH, o->fsync, lt,
	       (double)o->points / lt);
	fflush(stdout);
	fprintf(stderr,
		"rebalance: loaded %zu points (%zu-d) onto %zu nodes in "
		"%.1f s: %.0f points/s (fsync %s)\n",
		o->points, o->dim, o->nodes, lt, (double)o->points / lt,
		o->fsync);
	return 0;
}

/* ---- Searching --------------------------------------------------------------
 */

/* The searches of one thread in one phase. Written by that thread only;
 * read by the main thread after pthread_join. */
struct lat_log {
	float *ms; /* latencies of the searches that succeeded (malloc) */
	size_t n, cap;
	uint64_t errors; /* failed searches */
	uint64_t short_; /* answered with fewer than k hits */
	uint64_t dupes;	 /* answered with an id twice */
};

struct searcher {
	pthread_t t;
	sh_rpc *c;
	const struct ropts *o;
	const struct gen *g;
	atomic_int *phase; /* enum phase; PH_STOP ends the thread */
	unsigned idx;
	struct lat_log log[NPHASE];
	bool oom;
};

static bool has_dupes(const Shoal__V1__QueryHits *qh)
{
	for (size_t a = 0; a < qh->n_hits; a++)
		for (size_t b = a + 1; b < qh->n_hits; b++)
			if (qh->hits[a]->id && qh->hits[b]->id &&
			    qh->hits[a]->id->num == qh->hits[b]->id->num)
				return true;
	return false;
}

static void *search_main(void *arg)
{
	struct searcher *s = arg;
	float *q = malloc(s->o->dim * sizeof(float));
	if (!q) {
		s->oom = true;
		return NULL;
	}
	unsigned shown = 0;
	for (uint64_t i = 0;; i++) {
		int ph = atomic_load(s->phase);
		if (ph == PH_STOP)
			break;
		gen_point(s->g, QUERY_BASE + ((uint64_t)s->idx << 32) + i, q);
		Shoal__V1__Vector v = SHOAL__V1__VECTOR__INIT, *vp = &v;
		v.values = q;
		v.n_values = s->o->dim;
		Shoal__V1__SearchRequest sr = SHOAL__V1__SEARCH_REQUEST__INIT;
		sr.collection = COLL;
		sr.queries = &vp;
		sr.n_queries = 1;
		sr.k = (uint32_t)s->o->k;
		sr.ef = (uint32_t)s->o->ef;
		Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
		rq.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
		rq.search = &sr;
		Shoal__V1__Response *rs;
		char err[256];
		double t0 = bench_now_s();
		int rc = call(s->c, &rq, &rs, err, sizeof(err));
		double ms = (bench_now_s() - t0) * 1000.0;
		struct lat_log *l = &s->log[ph];
		if (!rc && rs->code) {
			snprintf(err, sizeof(err), "%s: %s",
				 sh_errname((int)rs->code),
				 rs->message ? rs->message : "");
			rc = -1;
		}
		if (!rc && (!rs->search || rs->search->n_results != 1)) {
			snprintf(err, sizeof(err), "no results");
			rc = -1;
		}
		if (rc) {
			l->errors++;
			if (shown++ < 5)
				fprintf(stderr,
					"rebalance: search (%s phase): %s\n",
					phase_names[ph], err);
		} else {
			const Shoal__V1__QueryHits *qh = rs->search->results[0];
			l->short_ += qh->n_hits < s->o->k;
			l->dupes += has_dupes(qh);
			if (l->n == l->cap) {
				size_t cap = l->cap ? 2 * l->cap : 4096;
				float *m = realloc(l->ms, cap * sizeof(float));
				if (!m) {
					s->oom = true;
					sh_wire_free_response(rs);
					break;
				}
				l->ms = m;
				l->cap = cap;
			}
			l->ms[l->n++] = (float)ms;
		}
		sh_wire_free_response(rs);
	}
	free(q);
	return NULL;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

struct phase_stats {
	size_t searches;
	uint64_t errors, short_, dupes;
	double seconds, qps, p50, p99, max;
};

/* Merges the threads' logs of phase ph (the threads have been joined). */
static int phase_stats(const struct searcher *s, size_t ns, int ph,
		       double seconds, struct phase_stats *st)
{
	memset(st, 0, sizeof(*st));
	size_t n = 0;
	for (size_t i = 0; i < ns; i++)
		n += s[i].log[ph].n;
	float *all = malloc((n ? n : 1) * sizeof(float));
	if (!all)
		return -1;
	n = 0;
	for (size_t i = 0; i < ns; i++) {
		const struct lat_log *l = &s[i].log[ph];
		if (l->n)
			memcpy(all + n, l->ms, l->n * sizeof(float));
		n += l->n;
		st->errors += l->errors;
		st->short_ += l->short_;
		st->dupes += l->dupes;
	}
	qsort(all, n, sizeof(float), cmp_float);
	st->searches = n;
	st->seconds = seconds;
	st->qps = seconds > 0 ? (double)n / seconds : 0;
	st->p50 = n ? bench_percentile(all, n, 0.50) : 0;
	st->p99 = n ? bench_percentile(all, n, 0.99) : 0;
	st->max = n ? all[n - 1] : 0;
	free(all);
	return 0;
}

static void print_phase(int ph, const struct phase_stats *st,
			const struct ropts *o)
{
	printf("{\"bench\":\"rebalance\",\"phase\":\"%s\",\"searchers\":%zu,"
	       "\"k\":%zu,\"ef\":%zu,\"seconds\":%.2f,\"searches\":%zu,"
	       "\"qps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
	       "\"errors\":%llu,\"short\":%llu,\"dupes\":%llu}\n",
	       phase_names[ph], o->searchers, o->k, o->ef, st->seconds,
	       st->searches, st->qps, st->p50, st->p99, st->max,
	       (unsigned long long)st->errors, (unsigned long long)st->short_,
	       (unsigned long long)st->dupes);
}

/* ---- The map ----------------------------------------------------------------
 */

/* The router's map (the caller frees the response), or NULL. */
static Shoal__V1__Response *get_map(sh_rpc *c)
{
	Shoal__V1__GetMapRequest gm = SHOAL__V1__GET_MAP_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	Shoal__V1__Response *rs;
	char err[256];
	if (call(c, &rq, &rs, err, sizeof(err))) {
		fprintf(stderr, "rebalance: get map: %s\n", err);
		return NULL;
	}
	if (rs->code || !rs->get_map) {
		fprintf(stderr, "rebalance: get map: %s: %s\n",
			sh_errname((int)rs->code),
			rs->message ? rs->message : "");
		sh_wire_free_response(rs);
		return NULL;
	}
	return rs;
}

/* Slots that node owns in map m. */
static size_t slots_of(const Shoal__V1__ClusterMap *m, uint32_t node)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n_slots; i++)
		if (m->slots[i]->node_id == node)
			n += m->slots[i]->last - m->slots[i]->first + 1;
	return n;
}

/* One move of the job, as planned here and as it went. */
struct move_rec {
	uint32_t first, last, from, to;
	uint64_t id; /* the router's, from the first status */
	/* the source's progress at the first status that showed the copy
	 * READY (or the last one while copying, when none did) */
	uint64_t points_total, points_copied, bytes_copied, copy_ms;
	uint32_t passes;
	bool ready_seen;
	double t_start, t_end; /* first step, DONE (bench_now_s) */
	int state;
};

/* Plans the moves of a quarter of the slots onto node `to`: from each
 * other node its top slots (its ranges from the top down; one move per
 * contiguous run). Returns the count, or 0 on failure. */
static size_t plan(const Shoal__V1__ClusterMap *m, uint32_t to,
		   struct move_rec *mv, size_t cap)
{
	uint32_t src[MAXNODES];
	size_t ns = 0;
	for (size_t i = 0; i < m->n_nodes && ns < MAXNODES; i++)
		if (m->nodes[i]->id != to)
			src[ns++] = m->nodes[i]->id;
	if (!ns)
		return 0;
	size_t quarter = SH_SLOTS / 4, nm = 0;
	for (size_t i = 0; i < ns; i++) {
		size_t want = quarter / ns + (i < quarter % ns ? 1 : 0);
		/* the map's ranges are ascending: walk them from the top */
		for (size_t r = m->n_slots; r-- > 0 && want > 0;) {
			const Shoal__V1__SlotOwner *so = m->slots[r];
			if (so->node_id != src[i])
				continue;
			size_t len = so->last - so->first + 1;
			size_t take = len < want ? len : want;
			if (nm == cap)
				return 0;
			mv[nm++] = (struct move_rec){
			    .first = so->last - (uint32_t)take + 1,
			    .last = so->last,
			    .from = src[i],
			    .to = to,
			};
			want -= take;
		}
		if (want) {
			fprintf(stderr,
				"rebalance: node %u owns too few slots to "
				"give %zu\n",
				src[i], want);
			return 0;
		}
	}
	return nm;
}

/* ---- The job ----------------------------------------------------------------
 */

/* Adds node url to the map: its id, or 0. */
static uint32_t add_node(sh_rpc *c, const char *url)
{
	Shoal__V1__AddNodeRequest an = SHOAL__V1__ADD_NODE_REQUEST__INIT;
	an.address = (char *)url;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_ADD_NODE;
	rq.add_node = &an;
	rq.timeout_ms = ADMIN_TIMEOUT_MS;
	Shoal__V1__Response *rs;
	char err[256];
	if (call(c, &rq, &rs, err, sizeof(err))) {
		fprintf(stderr, "rebalance: add node %s: %s\n", url, err);
		return 0;
	}
	uint32_t id = 0;
	if (rs->code || !rs->add_node)
		fprintf(stderr, "rebalance: add node %s: %s: %s\n", url,
			sh_errname((int)rs->code),
			rs->message ? rs->message : "");
	else
		id = rs->add_node->node_id;
	sh_wire_free_response(rs);
	return id;
}

/* Starts the job of moves mv; its id, or 0. */
static uint64_t start_job(sh_rpc *c, const struct ropts *o,
			  const struct move_rec *mv, size_t nm)
{
	sh_movejob_move ms[MAX_MOVES];
	for (size_t i = 0; i < nm; i++)
		ms[i] = (sh_movejob_move){mv[i].first, mv[i].last, mv[i].from,
					  mv[i].to, 0};
	uint64_t id;
	char msg[512];
	int rc = sh_movejob_start(c, "bench", ms, nm, o->max_rate, o->grace_ms,
				  &id, msg, sizeof(msg));
	if (rc) {
		fprintf(stderr, "rebalance: start the job: %s (%s)\n", msg,
			sh_errname(rc));
		return 0;
	}
	return id;
}

/* Keeps the progress of the move in status m into its record. */
static void note_progress(struct move_rec *r, const Shoal__V1__Move *m)
{
	const Shoal__V1__MigrateResult *p = m->progress;
	if (m->state != SHOAL__V1__MOVE_STATE__MOVE_COPYING || !p ||
	    r->ready_seen)
		return;
	r->points_total = p->points_total;
	r->points_copied = p->points_copied;
	r->bytes_copied = p->bytes_copied;
	r->copy_ms = p->elapsed_ms;
	r->passes = p->passes;
	r->ready_seen = p->state == SHOAL__V1__MIGRATE_STATE__MIGRATE_READY;
}

struct watch {
	struct move_rec *mv;
	size_t nm;
	size_t cur; /* the record of the move in flight */
};

/* After each status: each move's id and state, its first step and DONE
 * times, and its copy's progress. */
static void on_status(void *ctx, const Shoal__V1__MoveJob *j, size_t idx,
		      int copying)
{
	struct watch *w = ctx;
	double now = bench_now_s();
	for (size_t i = 0; i < w->nm && i < j->n_moves; i++) {
		w->mv[i].id = j->moves[i]->id;
		w->mv[i].state = (int)j->moves[i]->state;
	}
	if (idx >= j->n_moves)
		idx = SIZE_MAX;
	if (w->cur != SIZE_MAX && w->cur != idx)
		w->mv[w->cur].t_end = now;
	if (idx != SIZE_MAX && idx != w->cur)
		w->mv[idx].t_start = now;
	w->cur = idx;
	if (idx == SIZE_MAX || idx >= w->nm)
		return;
	const Shoal__V1__Move *m = j->moves[idx];
	note_progress(&w->mv[idx], m);
	if (m->state == SHOAL__V1__MOVE_STATE__MOVE_PREPARED)
		w->mv[idx].ready_seen = false; /* the copy runs again */
}

static void on_failed(void *ctx, const Shoal__V1__Move *m, int code,
		      const char *msg)
{
	fprintf(stderr, "rebalance: move %llu (slots %u-%u): %s (%s)\n",
		(unsigned long long)m->id, m->first, m->last, msg,
		sh_errname(code));
}

/* Runs job job_id to its end (common/serve/movejob.c, as shoalctl does),
 * filling the records (in job order, which is mv's). Returns 0 when every
 * move is DONE, -1 otherwise (with why on stderr). */
static int run_job(sh_rpc *c, uint64_t job_id, struct move_rec *mv, size_t nm)
{
	struct watch w = {mv, nm, SIZE_MAX};
	sh_movejob_watch mw = {on_status, on_failed, &w};
	size_t done, total;
	char msg[512];
	int rc = sh_movejob_run(c, job_id, POLL_MS, MAX_FAILS, &mw, &done,
				&total, msg, sizeof(msg));
	if (rc) {
		fprintf(stderr, "rebalance: the job: %s (%s)\n", msg,
			sh_errname(rc));
		return -1;
	}
	if (total != nm || done != total) {
		fprintf(stderr, "rebalance: %zu of %zu moves done\n", done,
			total);
		return -1;
	}
	return 0;
}

/* The router's exact count of the collection, or -1. */
static long long count_points(sh_rpc *c)
{
	Shoal__V1__CountRequest cr = SHOAL__V1__COUNT_REQUEST__INIT;
	cr.collection = COLL;
	cr.exact = true;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_COUNT;
	rq.count = &cr;
	rq.timeout_ms = ADMIN_TIMEOUT_MS;
	Shoal__V1__Response *rs;
	char err[256];
	if (call(c, &rq, &rs, err, sizeof(err))) {
		fprintf(stderr, "rebalance: count: %s\n", err);
		return -1;
	}
	long long n = -1;
	if (rs->code || !rs->count)
		fprintf(stderr, "rebalance: count: %s: %s\n",
			sh_errname((int)rs->code),
			rs->message ? rs->message : "");
	else
		n = (long long)rs->count->count;
	sh_wire_free_response(rs);
	return n;
}

/* ---- Processes --------------------------------------------------------------
 */

struct env {
	struct bench_proc node[MAXNODES + 1];
	size_t nnodes; /* started */
	struct bench_proc router;
	bool router_up;
	sh_rpc *admin, *load, *search; /* to the router */
};

/* Prints the WARN and ERROR lines of the log of p (at most 8 of each
 * process) and adds their counts. */
static void scan_log(const struct bench_proc *p, const char *who, size_t *warns,
		     size_t *errors)
{
	char path[700], line[1024];
	snprintf(path, sizeof(path), "%s/log", p->dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	size_t shown = 0, w = 0, e = 0;
	while (fgets(line, sizeof(line), f)) {
		bool is_w = strstr(line, "Z WARN ") != NULL;
		bool is_e = strstr(line, "Z ERROR ") != NULL;
		if (!is_w && !is_e)
			continue;
		w += is_w;
		e += is_e;
		if (shown++ < 8)
			fprintf(stderr, "rebalance: %s: %s", who, line);
	}
	fclose(f);
	if (shown > 8)
		fprintf(stderr, "rebalance: %s: ... %zu more (%s)\n", who,
			shown - 8, path);
	*warns += w;
	*errors += e;
}

static void env_scan_logs(const struct env *e, size_t *warns, size_t *errors)
{
	*warns = *errors = 0;
	if (e->router_up)
		scan_log(&e->router, "router", warns, errors);
	for (size_t i = 0; i < e->nnodes; i++) {
		char who[32];
		snprintf(who, sizeof(who), "node %zu", i + 1);
		scan_log(&e->node[i], who, warns, errors);
	}
}

static void env_stop(struct env *e, bool keep)
{
	if (e->admin)
		sh_rpc_close(e->admin);
	if (e->load)
		sh_rpc_close(e->load);
	if (e->search)
		sh_rpc_close(e->search);
	e->admin = e->load = e->search = NULL;
	if (e->router_up) {
		if (keep)
			fprintf(stderr, "rebalance: router kept in %s\n",
				e->router.dir);
		bench_proc_stop(&e->router, keep);
		e->router_up = false;
	}
	for (size_t i = 0; i < e->nnodes; i++) {
		if (keep)
			fprintf(stderr, "rebalance: node %zu kept in %s\n",
				i + 1, e->node[i].dir);
		bench_proc_stop(&e->node[i], keep);
	}
	e->nnodes = 0;
}

/* Starts nodes + 1 nodes and a router over the first nodes; dials it. */
static int env_start(struct env *e, const struct ropts *o, const char *argv0)
{
	char nodebin[4200], routerbin[4200];
	bench_sibling(argv0, "node/shoal-node", nodebin, sizeof(nodebin));
	bench_sibling(argv0, "router/shoal-router", routerbin,
		      sizeof(routerbin));
	if (access(nodebin, X_OK) || access(routerbin, X_OK)) {
		fprintf(stderr, "rebalance: %s or %s is missing\n", nodebin,
			routerbin);
		return -1;
	}
	const char *nx[] = {"--fsync", o->fsync, NULL};
	char list[MAXNODES * 660] = "";
	for (; e->nnodes < o->nodes + 1; e->nnodes++) {
		if (bench_proc_start(&e->node[e->nnodes], nodebin, nx))
			return -1;
		if (e->nnodes < o->nodes) {
			strcat(list, e->nnodes ? "," : "");
			strcat(list, e->node[e->nnodes].url);
		}
	}
	const char *rx[] = {"--nodes", list, NULL};
	if (bench_proc_start(&e->router, routerbin, rx))
		return -1;
	e->router_up = true;
	char err[256];
	/* above the deadline of one move step (movejob.c) */
	if (sh_rpc_dial(e->router.url, 130000, 0, &e->admin, err,
			sizeof(err)) ||
	    sh_rpc_dial(e->router.url, 130000, 0, &e->load, err, sizeof(err)) ||
	    sh_rpc_dial(e->router.url, 30000, 0, &e->search, err,
			sizeof(err))) {
		fprintf(stderr, "rebalance: %s: %s\n", e->router.url, err);
		return -1;
	}
	return 0;
}

/* ---- The run ----------------------------------------------------------------
 */

static void print_moves(const struct move_rec *mv, size_t nm,
			double job_seconds, const struct ropts *o)
{
	uint64_t pts = 0, bytes = 0, ms = 0;
	for (size_t i = 0; i < nm; i++) {
		const struct move_rec *r = &mv[i];
		double wall = r->t_end > r->t_start ? r->t_end - r->t_start : 0;
		double s = (double)r->copy_ms / 1000.0;
		printf("{\"bench\":\"rebalance\",\"phase\":\"move\",\"move\":"
		       "%llu,\"first\":%u,\"last\":%u,\"slots\":%u,\"from\":%u,"
		       "\"to\":%u,\"points_total\":%llu,\"points\":%llu,"
		       "\"bytes\":%llu,\"copy_seconds\":%.3f,\"passes\":%u,"
		       "\"points_per_s\":%.1f,\"mb_per_s\":%.2f,"
		       "\"wall_seconds\":%.3f}\n",
		       (unsigned long long)r->id, r->first, r->last,
		       r->last - r->first + 1, r->from, r->to,
		       (unsigned long long)r->points_total,
		       (unsigned long long)r->points_copied,
		       (unsigned long long)r->bytes_copied, s, r->passes,
		       s > 0 ? (double)r->points_copied / s : 0,
		       s > 0 ? (double)r->bytes_copied / 1e6 / s : 0, wall);
		pts += r->points_copied;
		bytes += r->bytes_copied;
		ms += r->copy_ms;
	}
	double s = (double)ms / 1000.0;
	printf("{\"bench\":\"rebalance\",\"phase\":\"copy\",\"moves\":%zu,"
	       "\"slots\":%d,\"points\":%llu,\"bytes\":%llu,\"seconds\":%.3f,"
	       "\"points_per_s\":%.1f,\"mb_per_s\":%.2f,\"total_seconds\":%.3f,"
	       "\"max_rate\":%llu,\"grace_ms\":%u}\n",
	       nm, SH_SLOTS / 4, (unsigned long long)pts,
	       (unsigned long long)bytes, s, s > 0 ? (double)pts / s : 0,
	       s > 0 ? (double)bytes / 1e6 / s : 0, job_seconds,
	       (unsigned long long)o->max_rate, o->grace_ms);
	fflush(stdout);
}

static void print_table(const struct phase_stats *st, const struct move_rec *mv,
			size_t nm, double job_seconds)
{
	fprintf(stderr, "\n%-8s %8s %9s %9s %9s %9s %7s\n", "phase", "searches",
		"qps", "p50 ms", "p99 ms", "max ms", "errors");
	for (int ph = PH_STEADY; ph < NPHASE; ph++)
		fprintf(stderr, "%-8s %8zu %9.1f %9.3f %9.3f %9.3f %7llu\n",
			phase_names[ph], st[ph].searches, st[ph].qps,
			st[ph].p50, st[ph].p99, st[ph].max,
			(unsigned long long)st[ph].errors);
	fprintf(stderr, "\n%6s %-11s %4s %3s %9s %11s %8s %10s %7s %7s\n",
		"move", "slots", "from", "to", "points", "bytes", "copy s",
		"points/s", "MB/s", "wall s");
	for (size_t i = 0; i < nm; i++) {
		const struct move_rec *r = &mv[i];
		char sl[32];
		double s = (double)r->copy_ms / 1000.0;
		snprintf(sl, sizeof(sl), "%u-%u", r->first, r->last);
		fprintf(stderr,
			"%6llu %-11s %4u %3u %9llu %11llu %8.2f %10.0f %7.2f "
			"%7.2f\n",
			(unsigned long long)r->id, sl, r->from, r->to,
			(unsigned long long)r->points_copied,
			(unsigned long long)r->bytes_copied, s,
			s > 0 ? (double)r->points_copied / s : 0,
			s > 0 ? (double)r->bytes_copied / 1e6 / s : 0,
			r->t_end - r->t_start);
	}
	fprintf(stderr, "job: %.2f s from start to the last DONE\n\n",
		job_seconds);
}

/* Sleeps until bench_now_s() reaches t. */
static void sleep_until(double t)
{
	double now;
	while ((now = bench_now_s()) < t)
		usleep((useconds_t)((t - now) * 1e6 < 100000
					? (t - now) * 1e6 + 1
					: 100000));
}

static int run(const struct ropts *o, const char *argv0)
{
	struct env e;
	memset(&e, 0, sizeof(e));
	struct gen g = {0};
	struct searcher sr[MAXTHREADS];
	memset(sr, 0, sizeof(sr));
	size_t ns = 0;
	atomic_int phase = PH_WARM;
	struct move_rec mv[MAX_MOVES];
	size_t nm = 0;
	int rc = -1;
	bool moved = false;
	double t_phase[NPHASE + 1] = {0}, job_t0 = 0, job_t1 = 0;

	if (gen_init(&g, (uint32_t)o->dim)) {
		fprintf(stderr, "rebalance: out of memory\n");
		goto out;
	}
	if (env_start(&e, o, argv0))
		goto out;
	fprintf(stderr,
		"rebalance: %zu nodes + 1 (not in the map: %s), router %s\n",
		o->nodes, e.node[o->nodes].url, e.router.url);
	if (create(e.admin, (uint32_t)o->dim) || load(e.load, o, &g))
		goto out;

	/* searchers, from now to the end */
	t_phase[PH_WARM] = bench_now_s();
	for (; ns < o->searchers; ns++) {
		sr[ns] = (struct searcher){.c = e.search,
					   .o = o,
					   .g = &g,
					   .phase = &phase,
					   .idx = (unsigned)ns};
		if (pthread_create(&sr[ns].t, NULL, search_main, &sr[ns])) {
			fprintf(stderr, "rebalance: cannot start a searcher\n");
			goto out;
		}
	}
	sleep_until(t_phase[PH_WARM] + WARM_S);
	t_phase[PH_STEADY] = bench_now_s();
	atomic_store(&phase, PH_STEADY);
	fprintf(stderr, "rebalance: steady state: %zu searchers for %.0f s\n",
		o->searchers, o->steady_s);
	sleep_until(t_phase[PH_STEADY] + o->steady_s);

	/* the move */
	t_phase[PH_MOVING] = bench_now_s();
	atomic_store(&phase, PH_MOVING);
	uint32_t to = add_node(e.admin, e.node[o->nodes].url);
	if (!to)
		goto out;
	Shoal__V1__Response *mr = get_map(e.admin);
	if (!mr)
		goto out;
	nm = plan(mr->get_map, to, mv, MAX_MOVES);
	sh_wire_free_response(mr);
	if (!nm) {
		fprintf(stderr, "rebalance: no plan\n");
		goto out;
	}
	job_t0 = bench_now_s();
	uint64_t job = start_job(e.admin, o, mv, nm);
	if (!job)
		goto out;
	fprintf(stderr,
		"rebalance: job %llu: %zu moves of %d slots in all to node %u "
		"(max rate %llu B/s, grace %u ms)\n",
		(unsigned long long)job, nm, SH_SLOTS / 4, to,
		(unsigned long long)o->max_rate, o->grace_ms);
	if (run_job(e.admin, job, mv, nm))
		goto out;
	job_t1 = bench_now_s();
	moved = true;
	fprintf(stderr, "rebalance: job %llu done in %.1f s\n",
		(unsigned long long)job, job_t1 - job_t0);

	/* after */
	t_phase[PH_AFTER] = bench_now_s();
	atomic_store(&phase, PH_AFTER);
	double after_s = o->steady_s < AFTER_MAX_S ? o->steady_s : AFTER_MAX_S;
	sleep_until(t_phase[PH_AFTER] + after_s);
	t_phase[NPHASE] = bench_now_s();
	rc = 0;
out:
	atomic_store(&phase, PH_STOP);
	for (size_t i = 0; i < ns; i++)
		pthread_join(sr[i].t, NULL);
	for (size_t i = 0; i < ns; i++)
		if (sr[i].oom) {
			fprintf(stderr, "rebalance: searcher: out of memory\n");
			rc = -1;
		}
	if (!rc) {
		struct phase_stats st[NPHASE];
		for (int ph = PH_STEADY; ph < NPHASE && !rc; ph++) {
			if (phase_stats(sr, ns, ph,
					t_phase[ph + 1] - t_phase[ph],
					&st[ph])) {
				rc = -1;
				break;
			}
			print_phase(ph, &st[ph], o);
		}
		if (!rc)
			print_moves(mv, nm, job_t1 - job_t0, o);
		long long n = count_points(e.admin);
		size_t got = 0;
		Shoal__V1__Response *m2 = get_map(e.admin);
		if (m2) {
			got = slots_of(m2->get_map, mv[0].to);
			sh_wire_free_response(m2);
		}
		size_t warns, errors;
		env_scan_logs(&e, &warns, &errors);
		bool count_ok = n == (long long)o->points;
		bool slots_ok = got == SH_SLOTS / 4;
		double ratio = !rc && st[PH_STEADY].p99 > 0
				   ? st[PH_MOVING].p99 / st[PH_STEADY].p99
				   : 0;
		if (!rc) {
			printf(
			    "{\"bench\":\"rebalance\",\"phase\":\"summary\","
			    "\"points\":%zu,\"dim\":%zu,\"nodes\":%zu,"
			    "\"fsync\":\"%s\",\"count\":%lld,\"count_ok\":%s,"
			    "\"new_node_slots\":%zu,\"slots_ok\":%s,"
			    "\"steady_p99_ms\":%.3f,\"moving_p99_ms\":%.3f,"
			    "\"after_p99_ms\":%.3f,"
			    "\"p99_ratio_moving_over_steady\":%.3f,"
			    "\"goal\":%.1f,\"within_goal\":%s,"
			    "\"search_errors\":%llu,\"log_warnings\":%zu,"
			    "\"log_errors\":%zu}\n",
			    o->points, o->dim, o->nodes, o->fsync, n,
			    count_ok ? "true" : "false", got,
			    slots_ok ? "true" : "false", st[PH_STEADY].p99,
			    st[PH_MOVING].p99, st[PH_AFTER].p99, ratio,
			    P99_GOAL, ratio <= P99_GOAL ? "true" : "false",
			    (unsigned long long)(st[PH_STEADY].errors +
						 st[PH_MOVING].errors +
						 st[PH_AFTER].errors),
			    warns, errors);
			fflush(stdout);
			print_table(st, mv, nm, job_t1 - job_t0);
			fprintf(stderr,
				"rebalance: count %lld (want %zu): %s; node %u "
				"owns %zu slots (want %d): %s; p99 moving / "
				"steady = %.2f (goal <= %.1f)\n",
				n, o->points, count_ok ? "ok" : "WRONG",
				mv[0].to, got, SH_SLOTS / 4,
				slots_ok ? "ok" : "WRONG", ratio, P99_GOAL);
			if (!count_ok || !slots_ok)
				rc = -1;
		}
	} else {
		size_t warns, errors;
		env_scan_logs(&e, &warns, &errors);
		if (!moved && nm)
			fprintf(stderr,
				"rebalance: the move did not finish; the "
				"processes are stopped\n");
	}
	for (size_t i = 0; i < ns; i++)
		for (int ph = 0; ph < NPHASE; ph++)
			free(sr[i].log[ph].ms);
	env_stop(&e, o->keep);
	gen_free(&g);
	return rc;
}

/* ---- Flags ------------------------------------------------------------------
 */

/* "50M", "200K", "1000000": bytes per second (K, M, G: powers of 1024),
 * or 0 ("0": unlimited). Returns 0, or -1 when malformed. */
static int parse_rate(const char *s, uint64_t *out)
{
	return sh_parse_size(s, out) == SH_OK ? 0 : -1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: shoal-bench rebalance [--points 1000000] [--dim 128] "
		"[--nodes 3]\n"
		"         [--loaders 4] [--searchers 2] [--steady-seconds 10]\n"
		"         [--max-rate BYTES_PER_S (0 = unlimited)] "
		"[--grace-ms 1000]\n"
		"         [--k 10] [--ef 64] [--fsync always|batch|never] "
		"[--keep]\n");
}

int cmd_rebalance(int argc, char **argv)
{
	struct ropts o = {.points = 1000000,
			  .dim = 128,
			  .nodes = 3,
			  .loaders = 4,
			  .searchers = 2,
			  .k = 10,
			  .ef = 64,
			  .steady_s = 10,
			  .grace_ms = 1000,
			  .fsync = "always"};
	bool bad = false;
	for (int i = 2; i < argc && !bad; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--keep")) {
			o.keep = true;
			continue;
		}
		const char *v = i + 1 < argc ? argv[++i] : NULL;
		if (!v) {
			fprintf(stderr, "rebalance: %s needs a value\n", a);
			bad = true;
			break;
		}
		char *end = NULL;
		if (!strcmp(a, "--points"))
			o.points = strtoul(v, &end, 10);
		else if (!strcmp(a, "--dim"))
			o.dim = strtoul(v, &end, 10);
		else if (!strcmp(a, "--nodes"))
			o.nodes = strtoul(v, &end, 10);
		else if (!strcmp(a, "--loaders"))
			o.loaders = strtoul(v, &end, 10);
		else if (!strcmp(a, "--searchers"))
			o.searchers = strtoul(v, &end, 10);
		else if (!strcmp(a, "--k"))
			o.k = strtoul(v, &end, 10);
		else if (!strcmp(a, "--ef"))
			o.ef = strtoul(v, &end, 10);
		else if (!strcmp(a, "--steady-seconds"))
			o.steady_s = strtod(v, &end);
		else if (!strcmp(a, "--grace-ms"))
			o.grace_ms = (uint32_t)strtoul(v, &end, 10);
		else if (!strcmp(a, "--max-rate"))
			bad |= parse_rate(v, &o.max_rate) != 0;
		else if (!strcmp(a, "--fsync"))
			o.fsync = v;
		else {
			fprintf(stderr, "rebalance: unknown flag %s\n", a);
			bad = true;
		}
		if (end && *end) {
			fprintf(stderr, "rebalance: %s %s: not a number\n", a,
				v);
			bad = true;
		}
	}
	bad |= o.points == 0 || o.dim == 0 || o.dim > 65536 || o.nodes == 0 ||
	       o.nodes > MAXNODES || o.loaders == 0 || o.loaders > MAXTHREADS ||
	       o.searchers == 0 || o.searchers > MAXTHREADS || o.k == 0 ||
	       o.k > 1024 || o.ef == 0 || !(o.steady_s > 0) ||
	       (strcmp(o.fsync, "always") && strcmp(o.fsync, "batch") &&
		strcmp(o.fsync, "never"));
	if (bad) {
		usage();
		return 2;
	}
	return run(&o, argv[0]) ? 1 : 0;
}
