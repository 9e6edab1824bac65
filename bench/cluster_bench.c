/*
 * shoal-bench cluster: a shoal cluster measured through its router.
 *
 *   shoal-bench cluster --data DIR [--router URL | --nodes 1,3,6]
 *                       [--k 10] [--efs 16,32,64,128,256]
 *                       [--threads 1,4] [--seconds 3] [--nq 1000]
 *                       [--loaders 4] [--collection bench] [--int8]
 *
 * DIR holds base.fvecs, query.fvecs, groundtruth.ivecs and, optionally,
 * base.labels / query.labels / label-names.txt (shoal-bench fmnist or gen
 * write them). With --router, the cluster is the one at URL (e.g.
 * deploy/local-cluster.sh's); with --nodes, for each count the benchmark
 * starts that many shoal-node processes and a shoal-router itself.
 *
 * For each cluster: creates the collection (dropping an old one), loads
 * the base vectors in batches of 256 from --loaders threads with a payload
 * {"category": <label name>, "price": <synthetic>} (points/s = upsert
 * throughput through the router), then measures recall@k per ef without a
 * filter and, at the smallest ef reaching recall 0.95, search qps / p50 /
 * p99 per client thread count; and, with labels, the same with the filter
 * category = <the query's own class>, with recall against exact ground
 * truth computed here over the points of that class. One JSON object per
 * measurement on stdout; a summary table on stderr.
 */
#include "cluster_bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "error.h"
#include "fvecs.h"
#include "proc.h"
#include "rpc.h"

#define MAXT 32

struct copts {
	const char *data, *router, *coll;
	size_t k, nq, loaders;
	double seconds;
	size_t efs[16], nef, threads[8], nthreads, nodes[8], nnodes;
	bool int8;
};

struct cdata {
	float *base, *q;
	int32_t *gt, *fgt; /* unfiltered (gtk wide), filtered (k wide) */
	uint8_t *bl, *ql;
	size_t nb, nq, gtk;
	uint32_t dim;
	char names[256][64];
	size_t nnames;
};

static const char *label_name(const struct cdata *d, uint8_t l, char *buf,
			      size_t cap)
{
	if (l < d->nnames)
		return d->names[l];
	snprintf(buf, cap, "class-%u", l);
	return buf;
}

/* A deterministic synthetic price in [5, 500). */
static double price_of(uint64_t id)
{
	uint64_t x = id * 0x9E3779B97F4A7C15ull;
	x ^= x >> 29;
	return 5.0 + (double)(x % 49500) / 100.0;
}

static int call(sh_rpc *c, Shoal__V1__Request *rq, int *code, char *msg,
		size_t cap)
{
	Shoal__V1__Response *rs;
	char err[256];
	int rc = sh_rpc_call(c, rq, &rs, err, sizeof(err));
	if (rc) {
		snprintf(msg, cap, "%s", err);
		return rc;
	}
	*code = (int)rs->code;
	snprintf(msg, cap, "%s", rs->message ? rs->message : "");
	sh_wire_free_response(rs);
	return SH_OK;
}

static int create(sh_rpc *c, const struct copts *o, uint32_t dim)
{
	int code;
	char msg[512];
	Shoal__V1__DropCollectionRequest dr =
	    SHOAL__V1__DROP_COLLECTION_REQUEST__INIT;
	dr.name = (char *)o->coll;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_DROP_COLLECTION;
	rq.drop_collection = &dr;
	if (call(c, &rq, &code, msg, sizeof(msg)))
		goto fail;
	Shoal__V1__PayloadIndex pi[2] = {SHOAL__V1__PAYLOAD_INDEX__INIT,
					 SHOAL__V1__PAYLOAD_INDEX__INIT};
	Shoal__V1__PayloadIndex *pp[2] = {&pi[0], &pi[1]};
	pi[0].field = "category";
	pi[0].type = SHOAL__V1__PAYLOAD_TYPE__KEYWORD;
	pi[1].field = "price";
	pi[1].type = SHOAL__V1__PAYLOAD_TYPE__FLOAT;
	Shoal__V1__CollectionConfig cfg = SHOAL__V1__COLLECTION_CONFIG__INIT;
	cfg.name = (char *)o->coll;
	cfg.dim = dim;
	cfg.metric = SHOAL__V1__METRIC__L2;
	cfg.storage =
	    o->int8 ? SHOAL__V1__STORAGE__INT8 : SHOAL__V1__STORAGE__F32;
	cfg.indexes = pp;
	cfg.n_indexes = 2;
	Shoal__V1__CreateCollectionRequest cr =
	    SHOAL__V1__CREATE_COLLECTION_REQUEST__INIT;
	cr.config = &cfg;
	rq.op_case = SHOAL__V1__REQUEST__OP_CREATE_COLLECTION;
	rq.create_collection = &cr;
	rq.request_id = 0;
	if (call(c, &rq, &code, msg, sizeof(msg)))
		goto fail;
	if (code) {
		fprintf(stderr, "cluster: create %s: %s: %s\n", o->coll,
			sh_errname(code), msg);
		return -1;
	}
	return 0;
fail:
	fprintf(stderr, "cluster: %s\n", msg);
	return -1;
}

/* ---- Loading --------------------------------------------------------------
 */

struct loader {
	pthread_t t;
	sh_rpc *c;
	const struct copts *o;
	const struct cdata *d;
	atomic_size_t *next;
	int err;
};

static void *load_main(void *arg)
{
	struct loader *l = arg;
	const struct cdata *d = l->d;
	Shoal__V1__PointId ids[256];
	Shoal__V1__Point pts[256], *pp[256];
	char payload[256][160];
	for (;;) {
		size_t first = atomic_fetch_add(l->next, 256);
		if (first >= d->nb)
			break;
		size_t n = d->nb - first < 256 ? d->nb - first : 256;
		for (size_t i = 0; i < n; i++) {
			size_t id = first + i;
			char nb_[32];
			shoal__v1__point_id__init(&ids[i]);
			ids[i].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
			ids[i].num = id;
			shoal__v1__point__init(&pts[i]);
			pts[i].id = &ids[i];
			pts[i].vector = d->base + id * d->dim;
			pts[i].n_vector = d->dim;
			pts[i].version = 1;
			if (d->bl)
				snprintf(
				    payload[i], sizeof(payload[i]),
				    "{\"category\":\"%s\",\"price\":%.2f}",
				    label_name(d, d->bl[id], nb_, sizeof(nb_)),
				    price_of(id));
			else
				snprintf(payload[i], sizeof(payload[i]),
					 "{\"price\":%.2f}", price_of(id));
			pts[i].payload_json = payload[i];
			pp[i] = &pts[i];
		}
		Shoal__V1__UpsertRequest up = SHOAL__V1__UPSERT_REQUEST__INIT;
		up.collection = (char *)l->o->coll;
		up.points = pp;
		up.n_points = n;
		Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
		rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
		rq.upsert = &up;
		rq.timeout_ms = 120000;
		int code;
		char msg[512];
		if (call(l->c, &rq, &code, msg, sizeof(msg)) || code) {
			fprintf(stderr, "cluster: upsert: %s\n", msg);
			l->err = 1;
			break;
		}
	}
	return NULL;
}

/* ---- Searching ------------------------------------------------------------
 */

struct sjob {
	sh_rpc *c;
	const struct copts *o;
	const struct cdata *d;
	size_t ef;
	bool filtered;
};

/* One search; ids (k) filled when not NULL. */
static int search_one(struct sjob *j, size_t qi, int32_t *ids)
{
	const struct cdata *d = j->d;
	Shoal__V1__Vector v = SHOAL__V1__VECTOR__INIT, *vp = &v;
	v.values = d->q + qi * d->dim;
	v.n_values = d->dim;
	Shoal__V1__SearchRequest s = SHOAL__V1__SEARCH_REQUEST__INIT;
	s.collection = (char *)j->o->coll;
	s.queries = &vp;
	s.n_queries = 1;
	s.k = (uint32_t)j->o->k;
	s.ef = (uint32_t)j->ef;
	Shoal__V1__Match m = SHOAL__V1__MATCH__INIT;
	Shoal__V1__Condition co = SHOAL__V1__CONDITION__INIT;
	Shoal__V1__Clause cl = SHOAL__V1__CLAUSE__INIT, *clp = &cl;
	Shoal__V1__Filter f = SHOAL__V1__FILTER__INIT;
	char nb_[32];
	if (j->filtered) {
		m.key = "category";
		m.value_case = SHOAL__V1__MATCH__VALUE_KEYWORD;
		m.keyword = (char *)label_name(d, d->ql[qi], nb_, sizeof(nb_));
		co.kind_case = SHOAL__V1__CONDITION__KIND_MATCH;
		co.match = &m;
		cl.kind_case = SHOAL__V1__CLAUSE__KIND_CONDITION;
		cl.condition = &co;
		f.must = &clp;
		f.n_must = 1;
		s.filter = &f;
	}
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_SEARCH;
	rq.search = &s;
	Shoal__V1__Response *rs;
	char err[256];
	int rc = sh_rpc_call(j->c, &rq, &rs, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "cluster: search: %s\n", err);
		return rc;
	}
	rc = (int)rs->code;
	if (rc)
		fprintf(stderr, "cluster: search: %s\n", rs->message);
	else if (ids) {
		Shoal__V1__QueryHits *qh = rs->search->results[0];
		for (size_t i = 0; i < j->o->k; i++)
			ids[i] =
			    i < qh->n_hits ? (int32_t)qh->hits[i]->id->num : -1;
	}
	sh_wire_free_response(rs);
	return rc;
}

/* One search of a client thread (bench_timed); each thread walks the
 * queries from its own offset. */
static int search_call(void *ctx, unsigned thread, uint64_t i)
{
	struct sjob *j = ctx;
	return search_one(j, ((size_t)thread * 7919 + i) % j->d->nq, NULL) ? -1
									   : 1;
}

static int measure(struct sjob *j, size_t nt, double *qps, double *p50,
		   double *p99)
{
	return bench_timed((unsigned)nt, j->o->seconds, search_call, j, qps,
			   p50, p99);
}

static double recall(struct sjob *j)
{
	const struct cdata *d = j->d;
	size_t k = j->o->k, hit = 0, want = 0;
	int32_t ids[1024];
	for (size_t q = 0; q < d->nq; q++) {
		if (search_one(j, q, ids))
			return -1;
		const int32_t *g =
		    j->filtered ? d->fgt + q * k : d->gt + q * d->gtk;
		for (size_t b = 0; b < k; b++) {
			if (g[b] < 0)
				continue;
			want++;
			for (size_t a = 0; a < k; a++)
				if (ids[a] == g[b]) {
					hit++;
					break;
				}
		}
	}
	return want ? (double)hit / (double)want : 1.0;
}

/* ---- One cluster ------------------------------------------------------------
 */

static int run_cluster(const struct copts *o, const struct cdata *d,
		       const char *url, size_t nodes)
{
	char err[256];
	sh_rpc *c;
	if (sh_rpc_dial(url, 60000, 0, &c, err, sizeof(err))) {
		fprintf(stderr, "cluster: %s\n", err);
		return -1;
	}
	int rc = -1;
	if (create(c, o, d->dim))
		goto out;
	/* load */
	struct loader ld[MAXT];
	atomic_size_t next = 0;
	size_t nl = o->loaders < MAXT ? o->loaders : MAXT;
	double t0 = bench_now_s();
	for (size_t i = 0; i < nl; i++) {
		ld[i] = (struct loader){.c = c, .o = o, .d = d, .next = &next};
		pthread_create(&ld[i].t, NULL, load_main, &ld[i]);
	}
	int lerr = 0;
	for (size_t i = 0; i < nl; i++) {
		pthread_join(ld[i].t, NULL);
		lerr |= ld[i].err;
	}
	if (lerr)
		goto out;
	double lt = bench_now_s() - t0;
	printf("{\"bench\":\"cluster\",\"nodes\":%zu,\"op\":\"upsert\","
	       "\"batch\":256,\"clients\":%zu,\"points\":%zu,\"dim\":%u,"
	       "\"seconds\":%.2f,\"points_per_s\":%.1f}\n",
	       nodes, nl, d->nb, d->dim, lt, (double)d->nb / lt);
	fprintf(stderr,
		"cluster: %zu nodes: loaded %zu points (%u-d) in %.1f s: %.0f "
		"points/s\n",
		nodes, d->nb, d->dim, lt, (double)d->nb / lt);
	fflush(stdout);

	for (int filtered = 0; filtered <= (d->ql ? 1 : 0); filtered++) {
		struct sjob j = {.c = c, .o = o, .d = d, .filtered = filtered};
		size_t ef95 = 0;
		double r95 = 0;
		for (size_t e = 0; e < o->nef; e++) {
			j.ef = o->efs[e];
			double r = recall(&j);
			if (r < 0)
				goto out;
			printf("{\"bench\":\"cluster\",\"nodes\":%zu,\"op\":"
			       "\"recall\",\"filter\":%s,\"ef\":%zu,\"k\":%zu,"
			       "\"recall\":%.4f}\n",
			       nodes, filtered ? "\"category\"" : "null", j.ef,
			       o->k, r);
			if (!ef95 && r >= 0.95) {
				ef95 = j.ef;
				r95 = r;
			}
		}
		if (!ef95) {
			ef95 = o->efs[o->nef - 1];
			j.ef = ef95;
			r95 = recall(&j);
		}
		j.ef = ef95;
		for (size_t t = 0; t < o->nthreads; t++) {
			double qps, p50, p99;
			if (measure(&j, o->threads[t], &qps, &p50, &p99))
				goto out;
			printf("{\"bench\":\"cluster\",\"nodes\":%zu,\"op\":"
			       "\"search\",\"filter\":%s,\"k\":%zu,\"ef\":%zu,"
			       "\"recall\":%.4f,\"threads\":%zu,\"qps\":%.1f,"
			       "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
			       nodes, filtered ? "\"category\"" : "null", o->k,
			       ef95, r95, o->threads[t], qps, p50, p99);
			fprintf(stderr,
				"cluster: %zu nodes, %s: recall@%zu %.4f (ef "
				"%zu), %zu threads: %.0f qps, p50 %.2f ms, "
				"p99 %.2f ms\n",
				nodes,
				filtered ? "filter category = <query's class>"
					 : "no filter",
				o->k, r95, ef95, o->threads[t], qps, p50, p99);
			fflush(stdout);
		}
	}
	rc = 0;
out:
	sh_rpc_close(c);
	return rc;
}

/* The nodes in the map of the router at url (0 when it cannot say). */
static size_t count_nodes(const char *url)
{
	char err[256];
	sh_rpc *c;
	size_t n = 0;
	if (sh_rpc_dial(url, 10000, 0, &c, err, sizeof(err)))
		return 0;
	Shoal__V1__GetMapRequest gm = SHOAL__V1__GET_MAP_REQUEST__INIT;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	Shoal__V1__Response *rs;
	if (sh_rpc_call(c, &rq, &rs, err, sizeof(err)) == SH_OK) {
		if (!rs->code && rs->get_map)
			n = rs->get_map->n_nodes;
		sh_wire_free_response(rs);
	}
	sh_rpc_close(c);
	return n;
}

/* Starts n nodes and a router, runs the benchmark, stops them. */
static int spawn_and_run(const struct copts *o, const struct cdata *d, size_t n,
			 const char *argv0)
{
	char nodebin[4200], routerbin[4200];
	bench_sibling(argv0, "node/shoal-node", nodebin, sizeof(nodebin));
	bench_sibling(argv0, "router/shoal-router", routerbin,
		      sizeof(routerbin));
	struct bench_proc np[64], rp;
	char list[64 * 80] = "";
	int rc = -1;
	size_t started = 0;
	for (; started < n; started++) {
		if (bench_proc_start(&np[started], nodebin, NULL))
			goto out;
		strcat(list, started ? "," : "");
		strcat(list, np[started].url);
	}
	const char *extra[] = {"--nodes", list, NULL};
	if (bench_proc_start(&rp, routerbin, extra))
		goto out;
	rc = run_cluster(o, d, rp.url, n);
	bench_proc_stop(&rp, 0);
out:
	for (size_t i = 0; i < started; i++)
		bench_proc_stop(&np[i], 0);
	return rc;
}

static int load_data(const struct copts *o, struct cdata *d)
{
	char path[4200], err[512];
	size_t n, nf;
	uint32_t gdim;
	snprintf(path, sizeof(path), "%s/base.fvecs", o->data);
	if (fv_read_fvecs(path, 0, &d->base, &d->nb, NULL, &d->dim, err,
			  sizeof(err)))
		goto fail;
	uint32_t qdim;
	snprintf(path, sizeof(path), "%s/query.fvecs", o->data);
	if (fv_read_fvecs(path, o->nq, &d->q, &d->nq, NULL, &qdim, err,
			  sizeof(err)))
		goto fail;
	snprintf(path, sizeof(path), "%s/groundtruth.ivecs", o->data);
	if (fv_read_ivecs(path, o->nq, &d->gt, &n, NULL, &gdim, err,
			  sizeof(err)))
		goto fail;
	d->gtk = gdim;
	if (qdim != d->dim || n < d->nq || gdim < o->k) {
		snprintf(err, sizeof(err),
			 "%s: queries, ground truth and base disagree",
			 o->data);
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/base.labels", o->data);
	if (fv_read_labels(path, &d->bl, &nf, err, sizeof(err)) == 0 &&
	    nf == d->nb) {
		snprintf(path, sizeof(path), "%s/query.labels", o->data);
		if (fv_read_labels(path, &d->ql, &nf, err, sizeof(err)) ||
		    nf < d->nq) {
			free(d->ql);
			d->ql = NULL;
		}
	} else {
		free(d->bl);
		d->bl = NULL;
	}
	snprintf(path, sizeof(path), "%s/label-names.txt", o->data);
	FILE *f = fopen(path, "r");
	while (f && d->nnames < 256 &&
	       fgets(d->names[d->nnames], sizeof(d->names[0]), f)) {
		d->names[d->nnames][strcspn(d->names[d->nnames], "\n")] = 0;
		d->nnames++;
	}
	if (f)
		fclose(f);
	if (d->ql) {
		/* exact ground truth per query over its own class */
		d->fgt = malloc(d->nq * o->k * sizeof(int32_t));
		uint32_t *cnt = malloc(d->nq * sizeof(uint32_t));
		uint8_t *allow = calloc((d->nb + 7) / 8, 1);
		float *qs = malloc(d->nq * d->dim * sizeof(float));
		size_t *qi = malloc(d->nq * sizeof(size_t));
		int32_t *g = malloc(d->nq * o->k * sizeof(int32_t));
		if (!d->fgt || !cnt || !allow || !qs || !qi || !g) {
			free(cnt);
			free(allow);
			free(qs);
			free(qi);
			free(g);
			snprintf(err, sizeof(err), "out of memory");
			goto fail;
		}
		for (int l = 0; l < 256; l++) {
			size_t m = 0;
			for (size_t q = 0; q < d->nq; q++)
				if (d->ql[q] == l) {
					memcpy(qs + m * d->dim,
					       d->q + q * d->dim,
					       d->dim * sizeof(float));
					qi[m++] = q;
				}
			if (!m)
				continue;
			memset(allow, 0, (d->nb + 7) / 8);
			for (size_t i = 0; i < d->nb; i++)
				if (d->bl[i] == l)
					allow[i >> 3] |=
					    (uint8_t)(1u << (i & 7));
			bench_exact_topk(d->base, d->nb, qs, m, d->dim, false,
					 allow, o->k, g, cnt);
			for (size_t x = 0; x < m; x++)
				memcpy(d->fgt + qi[x] * o->k, g + x * o->k,
				       o->k * sizeof(int32_t));
		}
		free(cnt);
		free(allow);
		free(qs);
		free(qi);
		free(g);
	}
	return 0;
fail:
	fprintf(stderr, "cluster: %s\n", err);
	return -1;
}

int cmd_cluster(int argc, char **argv)
{
	struct copts o = {
	    .coll = "bench", .k = 10, .nq = 1000, .loaders = 4, .seconds = 3};
	o.nef = bench_parse_list("16,32,64,128,256", o.efs, 16);
	o.nthreads = bench_parse_list("1,4", o.threads, 8);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--int8")) {
			o.int8 = true;
			continue;
		}
		const char *v = i + 1 < argc ? argv[++i] : NULL;
		if (!v) {
			fprintf(stderr, "cluster: %s needs a value\n", a);
			return 2;
		}
		if (!strcmp(a, "--data"))
			o.data = v;
		else if (!strcmp(a, "--router"))
			o.router = v;
		else if (!strcmp(a, "--collection"))
			o.coll = v;
		else if (!strcmp(a, "--k"))
			o.k = strtoul(v, NULL, 10);
		else if (!strcmp(a, "--nq"))
			o.nq = strtoul(v, NULL, 10);
		else if (!strcmp(a, "--loaders"))
			o.loaders = strtoul(v, NULL, 10);
		else if (!strcmp(a, "--seconds"))
			o.seconds = strtod(v, NULL);
		else if (!strcmp(a, "--efs"))
			o.nef = bench_parse_list(v, o.efs, 16);
		else if (!strcmp(a, "--threads"))
			o.nthreads = bench_parse_list(v, o.threads, 8);
		else if (!strcmp(a, "--nodes"))
			o.nnodes = bench_parse_list(v, o.nodes, 8);
		else {
			fprintf(stderr, "cluster: unknown flag %s\n", a);
			return 2;
		}
	}
	bool bad = !o.data || (!o.router && !o.nnodes) || !o.nef ||
		   !o.nthreads || o.k == 0 || o.k > 1024 || o.loaders == 0 ||
		   !(o.seconds > 0);
	for (size_t i = 0; i < o.nthreads; i++)
		bad |= o.threads[i] > MAXT;
	for (size_t i = 0; i < o.nnodes; i++)
		bad |= o.nodes[i] > 64;
	if (bad) {
		fprintf(stderr, "usage: shoal-bench cluster --data DIR "
				"(--router URL | --nodes 1,3,6) [--k 10] "
				"[--efs ...] [--threads 1,4] [--seconds 3] "
				"[--loaders 4] [--nq 1000] [--int8]\n");
		return 2;
	}
	struct cdata d;
	memset(&d, 0, sizeof(d));
	int rc = load_data(&o, &d) ? 1 : 0;
	if (!rc && o.router)
		rc = run_cluster(&o, &d, o.router, count_nodes(o.router)) ? 1
									  : 0;
	for (size_t i = 0; !rc && !o.router && i < o.nnodes; i++)
		rc = spawn_and_run(&o, &d, o.nodes[i], argv[0]) ? 1 : 0;
	free(d.base);
	free(d.q);
	free(d.gt);
	free(d.fgt);
	free(d.bl);
	free(d.ql);
	return rc;
}
