/*
 * shoal-store-bench: how long a shard node takes to restart.
 *
 * Builds a collection of N random points through an sh_hnsw whose change
 * log feeds sh_store batches (the shard node's write path), commits a
 * WriteBatch every --batch points (default 1000) with fsync policy BATCH
 * (sh_store_sync every 100 batches and at the end, as the node's timer
 * would), closes the store, then measures a restart: open + load the index
 * from the graph CF (no distance computed) + a full scan of the points CF
 * (what the payload index rebuild reads). Prints one JSON line:
 *
 *   {"n","dim","build_s","close_s","restart_s","open_s","load_index_s",
 *    "scan_points_s","db_bytes","same_results"}
 *
 * same_results: every point and node came back, and 100 searches on the
 * reloaded index gave the iids and distances of the original (with --crash
 * the original died with the child: counts only). Benchmarks never gate CI on a
 * timing.
 */
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "slots.h"
#include "store.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* Point i's vector: uniform in [-1, 1), reproducible from (seed, i). */
static void vec_of(uint64_t seed, uint64_t i, uint32_t dim, float *v)
{
	uint64_t s = seed ^ (i * 0xD1B54A32D192ED03ull);
	for (uint32_t j = 0; j < dim; j++)
		v[j] = (float)((rnd(&s) >> 40) * (2.0 / 16777216.0) - 1.0);
}

static uint64_t du_bytes;

static int du_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	if (flag == FTW_F)
		du_bytes += (uint64_t)sb->st_size;
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	return remove(path);
}

struct writer {
	sh_store_batch *b;
	uint32_t coll, dim;
};

static void feed(void *ctx, const sh_hnsw_change *c, size_t n)
{
	struct writer *w = ctx;
	sh_store_batch_index_changes(w->b, w->coll, w->dim, c, n);
}

static int count_cb(void *ctx, uint16_t slot, const sh_pid *pid,
		    const sh_store_point *p)
{
	(*(uint64_t *)ctx)++;
	return 0;
}

static void usage(void)
{
	fprintf(
	    stderr,
	    "usage: shoal-store-bench [--n N] [--dim D] [--batch B] "
	    "[--m M] [--ef-construction E] [--dir DIR] [--keep]\n"
	    "  --n N          points (default 1000000)\n"
	    "  --dim D        dimension (default 128)\n"
	    "  --batch B      points per WriteBatch (default 1000)\n"
	    "  --m, --ef-construction   HNSW build parameters (16, 200)\n"
	    "  --dir DIR      database directory (default: a new "
	    "/tmp/shoal-store-bench-* removed at the end)\n"
	    "  --keep         keep the database directory\n"
	    "  --crash        build in a child that exits without closing "
	    "the store (a kill -9 after its last synced batch); the restart "
	    "then replays the WAL\n"
	    "  --restart-only only measure the restart of the database "
	    "that --dir DIR --keep left (for profiling)\n");
}

static int die(const char *what, int rc)
{
	fprintf(stderr, "shoal-store-bench: %s: %s (%s)\n", what,
		sh_strerror(rc), sh_store_last_error());
	return 1;
}

int main(int argc, char **argv)
{
	uint64_t n = 1000000, batch = 1000, seed = 7;
	uint32_t dim = 128, m = 16, efc = 200;
	const char *dir = NULL;
	bool keep = false, restart_only = false, crash = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--keep")) {
			keep = true;
			continue;
		}
		if (!strcmp(a, "--crash")) {
			crash = true;
			continue;
		}
		if (!strcmp(a, "--restart-only")) {
			restart_only = keep = true;
			continue;
		}
		if (!strcmp(a, "--help") || !v) {
			usage();
			return strcmp(a, "--help") ? 2 : 0;
		}
		i++;
		if (!strcmp(a, "--n"))
			n = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--dim"))
			dim = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--batch"))
			batch = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--m"))
			m = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--ef-construction"))
			efc = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--dir"))
			dir = v;
		else {
			usage();
			return 2;
		}
	}
	if (n == 0 || batch == 0 || dim == 0 || dim > SH_HNSW_MAX_DIM ||
	    (restart_only && !dir)) {
		usage();
		return 2;
	}
	char tmp[64], path[PATH_MAX];
	if (!dir) {
		snprintf(tmp, sizeof(tmp), "/tmp/shoal-store-bench-XXXXXX");
		if (!mkdtemp(tmp)) {
			perror("mkdtemp");
			return 1;
		}
		dir = tmp;
	}
	snprintf(path, sizeof(path), "%s/db", dir);

	sh_store_opts o;
	sh_store_opts_default(&o);
	o.fsync = SH_FSYNC_BATCH;
	sh_store *st;
	char err[256];
	int rc;
	sh_store_coll c;
	sh_hnsw *h = NULL;
	float *v = malloc(dim * sizeof(float));
	double build_s = 0, close_s = 0, t0;
	if (restart_only)
		goto restart;
	if (crash) {
		/* the child builds and dies without closing, as under kill -9
		 * after its last acknowledged (synced) batch; the parent then
		 * restarts from the WAL and the unflushed memtables */
		pid_t child = fork();
		if (child < 0) {
			perror("fork");
			return 1;
		}
		if (child > 0) {
			int ws;
			t0 = now();
			waitpid(child, &ws, 0);
			build_s = now() - t0;
			if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
				return 1;
			goto restart;
		}
	}
	rc = sh_store_open(path, &o, &st, err, sizeof(err));
	if (rc)
		return die("open", rc);
	char cfg[256];
	snprintf(cfg, sizeof(cfg),
		 "{\"name\":\"bench\",\"dim\":%u,\"m\":%u,"
		 "\"ef_construction\":%u}",
		 dim, m, efc);
	uint32_t coll;
	if ((rc = sh_store_coll_create(st, cfg, &coll)))
		return die("create collection", rc);
	sh_store_coll_get_id(st, coll, &c);
	if ((rc = sh_hnsw_new(&c.params, &h)))
		return die("hnsw", rc);
	struct writer w = {sh_store_batch_new(st), coll, dim};
	sh_hnsw_set_change_fn(h, feed, &w);

	/* build */
	t0 = now();
	uint64_t nb = 0;
	for (uint64_t i = 0; i < n; i++) {
		sh_pid pid = sh_pid_u64(i);
		uint32_t iid;
		char payload[64];
		int pl = snprintf(payload, sizeof(payload),
				  "{\"i\":%" PRIu64 ",\"g\":%" PRIu64 "}", i,
				  i % 100);
		vec_of(seed, i, dim, v);
		if ((rc = sh_hnsw_upsert(h, &pid, v, &iid, NULL)))
			return die("upsert", rc);
		sh_store_batch_put_point(w.b, coll, sh_slot_of(&pid), &pid, 1,
					 iid, payload, (size_t)pl);
		if ((i + 1) % batch == 0 || i + 1 == n) {
			if ((rc = sh_store_batch_commit(w.b)))
				return die("commit", rc);
			if (++nb % 100 == 0 && (rc = sh_store_sync(st)))
				return die("sync", rc);
		}
		if (n >= 100000 && (i + 1) % (n / 10) == 0)
			fprintf(stderr,
				"built %" PRIu64 " / %" PRIu64 " in %.1f s\n",
				i + 1, n, now() - t0);
	}
	if ((rc = sh_store_sync(st)))
		return die("sync", rc);
	build_s = now() - t0;
	if (crash)
		_exit(0);
	sh_store_batch_free(w.b);
	t0 = now();
	sh_store_close(st);
	close_s = now() - t0;

restart:
	t0 = now();
	o.create_if_missing = false;
	if ((rc = sh_store_open(path, &o, &st, err, sizeof(err))))
		return die("reopen", rc);
	double t1 = now();
	sh_hnsw *h2;
	if ((rc = sh_store_coll_get(st, "bench", &c)) ||
	    (rc = sh_hnsw_new(&c.params, &h2)))
		return die("collection", rc);
	if ((rc = sh_store_load_index(st, c.id, h2)))
		return die("load index", rc);
	double t2 = now();
	uint64_t npoints = 0;
	if ((rc = sh_store_scan_points(st, c.id, 0, SH_SLOTS - 1, count_cb,
				       &npoints)))
		return die("scan points", rc);
	double t3 = now();

	sh_hnsw_info info;
	sh_hnsw_info_get(h2, &info);
	bool same = restart_only || (npoints == n && info.live == n);
	if (restart_only || crash)
		n = npoints;
	uint64_t qs = 99;
	for (int q = 0; q < 100 && same && h; q++) {
		sh_hnsw_hit a[10], b[10];
		size_t na, nb2;
		vec_of(qs, (uint64_t)q, dim, v);
		sh_hnsw_search(h, v, 10, 64, NULL, a, &na, NULL);
		sh_hnsw_search(h2, v, 10, 64, NULL, b, &nb2, NULL);
		same = na == nb2;
		for (size_t j = 0; j < na && same; j++)
			same = a[j].iid == b[j].iid && a[j].dist == b[j].dist;
	}
	sh_store_close(st);
	du_bytes = 0;
	nftw(path, du_one, 16, FTW_PHYS);
	printf("{\"n\":%" PRIu64 ",\"dim\":%u,\"build_s\":%.3f,"
	       "\"close_s\":%.3f,\"restart_s\":%.3f,\"open_s\":%.3f,"
	       "\"load_index_s\":%.3f,\"scan_points_s\":%.3f,"
	       "\"db_bytes\":%" PRIu64 ",\"same_results\":%s}\n",
	       n, dim, build_s, close_s, t3 - t0, t1 - t0, t2 - t1, t3 - t2,
	       du_bytes,
	       restart_only ? "null"
	       : same	    ? "true"
			    : "false");
	fflush(stdout);
	sh_hnsw_free(h);
	sh_hnsw_free(h2);
	free(v);
	if (!keep)
		nftw(dir == tmp ? tmp : path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return same ? 0 : 1;
}
