/*
 * shoal-bench node: a shard node measured over nng on loopback.
 *
 *   shoal-bench node --base B.fvecs --queries Q.fvecs --gt G.ivecs
 *                    [--node-bin PATH] [--k 10] [--efs 16,32,64,128,256]
 *                    [--threads 1,2,4] [--seconds 3]
 *                    [--nq 1000]
 *
 * Starts shoal-node (fsync always) in a temporary directory and measures:
 *   - upsert throughput in points/s: batches of 1 (one client, and four
 *     clients that share fsyncs through group commit) and of 256;
 *   - recall@k per ef, then, at the smallest ef with recall >= 0.95,
 *     search qps / p50 / p99 with 1, 2 and 4 client threads;
 *   - the same searches through the in-process index (the node's data
 *     directory opened by this process after the node stopped: the same
 *     graph), so that the network layer's cost shows as a ratio.
 * Prints one JSON object per measurement on stdout; progress on stderr.
 */
#include "node_bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "error.h"
#include "fvecs.h"
#include "partition.h"
#include "proc.h"
#include "rpc.h"
#include "store.h"

#define MAXT 16

struct nopts {
	const char *base, *queries, *gt, *node_bin;
	size_t k, nq;
	double seconds;
	size_t efs[16], nef;
	size_t threads[8], nthreads;
};

static int die(const char *fmt, const char *a)
{
	fprintf(stderr, "shoal-bench node: ");
	fprintf(stderr, fmt, a);
	fprintf(stderr, "\n");
	return 1;
}

/* ---- Requests -------------------------------------------------------------
 */

static int create(sh_rpc *c, const char *name, uint32_t dim)
{
	Shoal__V1__CollectionConfig cfg = SHOAL__V1__COLLECTION_CONFIG__INIT;
	cfg.name = (char *)name;
	cfg.dim = dim;
	cfg.metric = SHOAL__V1__METRIC__L2;
	Shoal__V1__CreateCollectionRequest cr =
	    SHOAL__V1__CREATE_COLLECTION_REQUEST__INIT;
	cr.config = &cfg;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_CREATE_COLLECTION;
	rq.create_collection = &cr;
	Shoal__V1__Response *rs;
	char err[256];
	int rc = sh_rpc_call(c, &rq, &rs, err, sizeof(err));
	if (rc)
		return die("create: %s", err);
	rc = (int)rs->code;
	sh_wire_free_response(rs);
	return rc ? die("create: %s", sh_strerror(rc)) : 0;
}

/* Upserts base[first .. first+n) (ids from id0) in one request. */
static int upsert(sh_rpc *c, const char *coll, const float *base, uint32_t dim,
		  size_t first, size_t n, uint64_t id0)
{
	Shoal__V1__PointId pid[256];
	Shoal__V1__Point pts[256], *pp[256];
	for (size_t i = 0; i < n; i++) {
		shoal__v1__point_id__init(&pid[i]);
		pid[i].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		pid[i].num = id0 + i;
		shoal__v1__point__init(&pts[i]);
		pts[i].id = &pid[i];
		pts[i].vector = (float *)base + (first + i) * dim;
		pts[i].n_vector = dim;
		pts[i].version = 1;
		pp[i] = &pts[i];
	}
	Shoal__V1__UpsertRequest up = SHOAL__V1__UPSERT_REQUEST__INIT;
	up.collection = (char *)coll;
	up.points = pp;
	up.n_points = n;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
	rq.upsert = &up;
	Shoal__V1__Response *rs;
	char err[256];
	int rc = sh_rpc_call(c, &rq, &rs, err, sizeof(err));
	if (rc)
		return die("upsert: %s", err);
	rc = (int)rs->code;
	sh_wire_free_response(rs);
	return rc ? die("upsert: %s", sh_strerror(rc)) : 0;
}

/* ---- Workers ------------------------------------------------------------- */

struct job {
	/* what to run */
	sh_rpc *c;
	sh_partition *part;
	const float *base, *q;
	uint32_t dim;
	size_t nq, k, ef, nbase, batch;
	bool write;
	atomic_size_t next_point; /* shared by the writers */
};

static int search_one(struct job *j, size_t qi, int32_t *ids)
{
	const float *q = j->q + qi * j->dim;
	if (j->part) {
		sh_partition_hit hits[1024];
		size_t nh = 0;
		int rc = sh_partition_search(j->part, q, j->k, j->ef, NULL,
					     false, hits, &nh, NULL);
		for (size_t i = 0; ids && i < j->k; i++)
			ids[i] = i < nh ? (int32_t)hits[i].id.num : -1;
		return rc;
	}
	Shoal__V1__Vector v = SHOAL__V1__VECTOR__INIT, *vp = &v;
	v.values = (float *)q;
	v.n_values = j->dim;
	Shoal__V1__SearchRequest s = SHOAL__V1__SEARCH_REQUEST__INIT;
	s.collection = "bench";
	s.queries = &vp;
	s.n_queries = 1;
	s.k = (uint32_t)j->k;
	s.ef = (uint32_t)j->ef;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
	rq.search = &s;
	Shoal__V1__Response *rs;
	char err[256];
	int rc = sh_rpc_call(j->c, &rq, &rs, err, sizeof(err));
	if (rc)
		return rc;
	rc = (int)rs->code;
	if (!rc && ids) {
		Shoal__V1__QueryHits *qh = rs->search->results[0];
		for (size_t i = 0; i < j->k; i++)
			ids[i] =
			    i < qh->n_hits ? (int32_t)qh->hits[i]->id->num : -1;
	}
	sh_wire_free_response(rs);
	return rc;
}

/* One call of a client thread (bench_timed): a batch of upserts, or one
 * search (each thread walks the queries from its own offset). */
static int one_call(void *ctx, unsigned thread, uint64_t i)
{
	struct job *j = ctx;
	if (j->write) {
		size_t first = atomic_fetch_add(&j->next_point, j->batch);
		return upsert(j->c, "bench_w", j->base, j->dim,
			      first % (j->nbase - j->batch), j->batch,
			      first + 1)
			   ? -1
			   : (int)j->batch;
	}
	size_t qi = ((size_t)thread * 7919 + i) % j->nq;
	return search_one(j, qi, NULL) ? -1 : 1;
}

static int run(struct job *j, size_t nt, double seconds, double *rate,
	       double *p50, double *p99)
{
	return bench_timed((unsigned)nt, seconds, one_call, j, rate, p50, p99);
}

static double recall(struct job *j, const int32_t *gt, size_t gtk)
{
	int32_t *ids = malloc(j->k * sizeof(int32_t));
	size_t hit = 0;
	for (size_t q = 0; q < j->nq; q++) {
		if (search_one(j, q, ids))
			break;
		for (size_t a = 0; a < j->k; a++)
			for (size_t b = 0; b < j->k; b++)
				if (ids[a] >= 0 && ids[a] == gt[q * gtk + b]) {
					hit++;
					break;
				}
	}
	free(ids);
	return (double)hit / (double)(j->nq * j->k);
}

/* ---- The command ----------------------------------------------------------
 */

int cmd_node(int argc, char **argv)
{
	struct nopts o = {.k = 10, .nq = 1000, .seconds = 3};
	o.nef = bench_parse_list("16,32,64,128,256", o.efs, 16);
	o.nthreads = bench_parse_list("1,2,4", o.threads, 8);
	static char defbin[4200];
	o.node_bin =
	    bench_sibling(argv[0], "node/shoal-node", defbin, sizeof(defbin));
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			return die("flag %s needs a value", a);
		i++;
		if (!strcmp(a, "--base"))
			o.base = v;
		else if (!strcmp(a, "--queries"))
			o.queries = v;
		else if (!strcmp(a, "--gt"))
			o.gt = v;
		else if (!strcmp(a, "--node-bin"))
			o.node_bin = v;
		else if (!strcmp(a, "--k"))
			o.k = strtoul(v, NULL, 10);
		else if (!strcmp(a, "--nq"))
			o.nq = strtoul(v, NULL, 10);
		else if (!strcmp(a, "--seconds"))
			o.seconds = strtod(v, NULL);
		else if (!strcmp(a, "--efs"))
			o.nef = bench_parse_list(v, o.efs, 16);
		else if (!strcmp(a, "--threads"))
			o.nthreads = bench_parse_list(v, o.threads, 8);
		else
			return die("unknown flag %s", a);
	}
	if (!o.base || !o.queries || !o.gt || !o.nef || !o.nthreads ||
	    o.k == 0 || o.k > 1024 || !(o.seconds > 0))
		return die("%s", "need --base, --queries, --gt (and sane "
				 "--k, --efs, --threads, --seconds)");
	for (size_t i = 0; i < o.nthreads; i++)
		if (o.threads[i] > MAXT)
			return die("%s", "at most 16 threads");

	char err[256];
	float *base = NULL, *q = NULL;
	int32_t *gt = NULL;
	size_t nb, nq, ngt;
	uint32_t dim, qdim, gtk;
	if (fv_read_fvecs(o.base, 0, &base, &nb, NULL, &dim, err,
			  sizeof(err)) ||
	    fv_read_fvecs(o.queries, o.nq, &q, &nq, NULL, &qdim, err,
			  sizeof(err)) ||
	    fv_read_ivecs(o.gt, o.nq, &gt, &ngt, NULL, &gtk, err, sizeof(err)))
		return die("%s", err);
	if (qdim != dim || ngt < nq || gtk < o.k || nb < 512)
		return die("%s", "queries, ground truth and base disagree");

	struct bench_proc p;
	const char *fsync_always[] = {"--fsync", "always", NULL};
	if (bench_proc_start(&p, o.node_bin, fsync_always))
		return 1;
	sh_rpc *c;
	if (sh_rpc_dial(p.url, 30000, 0, &c, err, sizeof(err)))
		return die("%s", err);
	int rc = 1;
	struct job j = {.c = c,
			.base = base,
			.q = q,
			.dim = dim,
			.nq = nq,
			.k = o.k,
			.nbase = nb};
	double rate, p50, p99;

	/* Upsert throughput, fsync always. */
	if (create(c, "bench_w", dim))
		goto out;
	struct {
		size_t batch, clients;
	} wr[] = {{1, 1}, {1, 4}, {256, 1}};
	for (size_t i = 0; i < 3; i++) {
		j.write = true;
		j.batch = wr[i].batch;
		double secs = o.seconds;
		if (run(&j, wr[i].clients, secs, &rate, &p50, &p99))
			goto out;
		printf("{\"bench\":\"node\",\"op\":\"upsert\",\"fsync\":"
		       "\"always\",\"batch\":%zu,\"clients\":%zu,"
		       "\"points_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}"
		       "\n",
		       wr[i].batch, wr[i].clients, rate, p50, p99);
		fflush(stdout);
	}
	j.write = false;

	/* Load the base set. */
	if (create(c, "bench", dim))
		goto out;
	double t0 = bench_now_s();
	for (size_t i = 0; i < nb; i += 256) {
		size_t n = nb - i < 256 ? nb - i : 256;
		if (upsert(c, "bench", base, dim, i, n, i))
			goto out;
	}
	fprintf(stderr, "node: loaded %zu points in %.1f s\n", nb,
		bench_now_s() - t0);

	/* Recall per ef; the smallest ef at recall >= 0.95. */
	size_t ef95 = 0;
	double rec95 = 0;
	for (size_t e = 0; e < o.nef; e++) {
		j.ef = o.efs[e];
		double r = recall(&j, gt, gtk);
		printf("{\"bench\":\"node\",\"op\":\"recall\",\"ef\":%zu,"
		       "\"k\":%zu,\"recall\":%.4f}\n",
		       j.ef, o.k, r);
		if (!ef95 && r >= 0.95) {
			ef95 = j.ef;
			rec95 = r;
		}
	}
	if (!ef95)
		ef95 = o.efs[o.nef - 1];
	j.ef = ef95;
	double net[8][3];
	for (size_t t = 0; t < o.nthreads; t++) {
		if (run(&j, o.threads[t], o.seconds, &net[t][0], &net[t][1],
			&net[t][2]))
			goto out;
	}
	sh_rpc_close(c);
	c = NULL;
	bench_proc_stop(&p, 1);

	/* The same searches in process, on the same graph. */
	char data[600];
	snprintf(data, sizeof(data), "%s/data", p.dir);
	sh_store *st;
	sh_store_coll coll;
	if (sh_store_open(data, NULL, &st, err, sizeof(err)))
		goto out;
	if (sh_store_coll_get(st, "bench", &coll) ||
	    sh_partition_open(st, coll.id, &coll, &j.part)) {
		sh_store_close(st);
		goto out;
	}
	j.c = NULL;
	for (size_t t = 0; t < o.nthreads; t++) {
		double lr, l50, l99;
		if (run(&j, o.threads[t], o.seconds, &lr, &l50, &l99))
			break;
		printf("{\"bench\":\"node\",\"op\":\"search\",\"ef\":%zu,"
		       "\"recall\":%.4f,\"threads\":%zu,\"n\":%zu,\"dim\":%u,"
		       "\"net_qps\":%.1f,\"net_p50_ms\":%.3f,"
		       "\"net_p99_ms\":%.3f,\"inproc_qps\":%.1f,"
		       "\"inproc_p50_ms\":%.3f,\"inproc_p99_ms\":%.3f,"
		       "\"net_over_inproc_qps\":%.3f}\n",
		       ef95, rec95, o.threads[t], nb, dim, net[t][0], net[t][1],
		       net[t][2], lr, l50, l99, net[t][0] / lr);
		fflush(stdout);
	}
	sh_partition_close(j.part);
	sh_store_close(st);
	rc = 0;
out:
	sh_rpc_close(c);
	bench_proc_stop(&p, 0);
	free(base);
	free(q);
	free(gt);
	return rc;
}
