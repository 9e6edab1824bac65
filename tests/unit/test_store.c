/* The shard node's store: restart reloads the same index and points,
 * versions, collection drop, corrupt records, open failures. Each test runs
 * in its own temporary directory, removed at the end even on failure. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "slots.h"
#include "store.h"
#include "testutil.h"

/* ---- Fixture: a temporary directory ---------------------------------------
 */

struct fx {
	char root[64]; /* mkdtemp */
	char db[96];   /* root/db: the store's directory */
	sh_store *st;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	snprintf(f->root, sizeof(f->root), "/tmp/shoal-test-store-XXXXXX");
	if (!mkdtemp(f->root)) {
		free(f);
		return -1;
	}
	snprintf(f->db, sizeof(f->db), "%s/db", f->root);
	*state = f;
	return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	return remove(path);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	sh_store_close(f->st);
	nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static sh_store *open_store(struct fx *f, sh_fsync policy)
{
	sh_store_opts o;
	sh_store_opts_default(&o);
	o.fsync = policy;
	o.block_cache_mib = 16;
	char err[256];
	sh_store *st = NULL;
	int rc = sh_store_open(f->db, &o, &st, err, sizeof(err));
	if (rc)
		fail_msg("open: %s: %s", sh_errname(rc), err);
	return st;
}

static void reopen(struct fx *f)
{
	sh_store_close(f->st);
	f->st = NULL;
	f->st = open_store(f, SH_FSYNC_NEVER);
}

/* ---- Raw RocksDB access, to write what the store never would --------------
 */

static const char *const raw_cfs[] = {"default", "meta", "points", "graph",
				      "payload_idx"};

struct raw {
	rocksdb_t *db;
	rocksdb_options_t *o;
	rocksdb_column_family_handle_t *cf[5];
};

static void raw_open(struct raw *r, const char *dir)
{
	char *err = NULL;
	r->o = rocksdb_options_create();
	const rocksdb_options_t *co[5] = {r->o, r->o, r->o, r->o, r->o};
	r->db = rocksdb_open_column_families(r->o, dir, 5, raw_cfs, co, r->cf,
					     &err);
	if (err)
		fail_msg("raw open: %s", err);
}

static void raw_close(struct raw *r)
{
	for (int i = 0; i < 5; i++)
		rocksdb_column_family_handle_destroy(r->cf[i]);
	rocksdb_close(r->db);
	rocksdb_options_destroy(r->o);
}

static void raw_put(struct raw *r, int cf, const void *k, size_t kl,
		    const void *v, size_t vl)
{
	char *err = NULL;
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
	rocksdb_put_cf(r->db, wo, r->cf[cf], k, kl, v, vl, &err);
	rocksdb_writeoptions_destroy(wo);
	assert_null(err);
}

static void raw_delete(struct raw *r, int cf, const void *k, size_t kl)
{
	char *err = NULL;
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
	rocksdb_delete_cf(r->db, wo, r->cf[cf], k, kl, &err);
	rocksdb_writeoptions_destroy(wo);
	assert_null(err);
}

/* Copies every record of collection `from` in cf to collection `to`. */
static void raw_copy_coll(struct raw *r, int cf, uint32_t from, uint32_t to)
{
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_iterator_t *it =
	    rocksdb_create_iterator_cf(r->db, ro, r->cf[cf]);
	uint8_t lo[4] = {from >> 24, from >> 16, from >> 8, from};
	for (rocksdb_iter_seek(it, (const char *)lo, 4); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		if (kl < 4 || memcmp(k, lo, 4) != 0)
			break;
		uint8_t nk[128];
		memcpy(nk, k, kl);
		nk[0] = to >> 24, nk[1] = to >> 16, nk[2] = to >> 8, nk[3] = to;
		raw_put(r, cf, nk, kl, v, vl);
	}
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
}

static size_t graph_key(uint8_t *k, uint32_t coll, uint32_t iid, uint8_t kind,
			uint8_t level)
{
	k[0] = coll >> 24, k[1] = coll >> 16, k[2] = coll >> 8, k[3] = coll;
	k[4] = iid >> 24, k[5] = iid >> 16, k[6] = iid >> 8, k[7] = iid;
	k[8] = kind;
	k[9] = level;
	return 10;
}

/* ---- A shard writer as the node will be: one op = one batch ----------------
 */

struct writer {
	sh_store *st;
	sh_store_batch *b;
	uint32_t coll, dim;
	sh_hnsw *h;
	size_t nchanges;
};

static void feed(void *ctx, const sh_hnsw_change *c, size_t n)
{
	struct writer *w = ctx;
	w->nchanges += n;
	sh_store_batch_index_changes(w->b, w->coll, w->dim, c, n);
}

static void writer_init(struct writer *w, sh_store *st, const char *name)
{
	sh_store_coll c;
	assert_int_equal(sh_store_coll_get(st, name, &c), SH_OK);
	memset(w, 0, sizeof(*w));
	w->st = st;
	w->coll = c.id;
	w->dim = c.params.dim;
	w->b = sh_store_batch_new(st);
	assert_non_null(w->b);
	assert_int_equal(sh_hnsw_new(&c.params, &w->h), SH_OK);
	sh_hnsw_set_change_fn(w->h, feed, w);
}

static void writer_free(struct writer *w)
{
	sh_store_batch_free(w->b);
	sh_hnsw_free(w->h);
}

/* Upserts pid with version and payload (a client op: one batch). */
static void w_upsert(struct writer *w, const sh_pid *pid, const float *v,
		     uint64_t version, const char *payload)
{
	uint32_t iid;
	assert_int_equal(sh_store_check_version(w->st, w->coll, sh_slot_of(pid),
						pid, version, NULL),
			 SH_OK);
	assert_int_equal(sh_hnsw_upsert(w->h, pid, v, &iid, NULL), SH_OK);
	assert_int_equal(sh_store_batch_put_point(
			     w->b, w->coll, sh_slot_of(pid), pid, version, iid,
			     payload, payload ? strlen(payload) : 0),
			 SH_OK);
	assert_int_equal(sh_store_batch_commit(w->b), SH_OK);
}

static void w_delete(struct writer *w, const sh_pid *pid, uint64_t version)
{
	int rc = sh_hnsw_delete(w->h, pid, NULL);
	assert_true(rc == SH_OK || rc == SH_ENOTFOUND);
	assert_int_equal(sh_store_batch_delete_point(
			     w->b, w->coll, sh_slot_of(pid), pid, version),
			 SH_OK);
	assert_int_equal(sh_store_batch_commit(w->b), SH_OK);
}

static void w_vacuum(struct writer *w)
{
	assert_int_equal(sh_hnsw_vacuum(w->h, NULL), SH_OK);
	assert_int_equal(sh_store_batch_commit(w->b), SH_OK);
}

static void assert_valid(sh_hnsw *h)
{
	char err[256] = "";
	int rc = sh_hnsw_validate(h, err, sizeof(err));
	if (rc)
		fail_msg("validate: %s", err);
}

static sh_hnsw *load(sh_store *st, const char *name, int want)
{
	sh_store_coll c;
	sh_hnsw *h;
	assert_int_equal(sh_store_coll_get(st, name, &c), SH_OK);
	assert_int_equal(sh_hnsw_new(&c.params, &h), SH_OK);
	int rc = sh_store_load_index(st, c.id, h);
	if (rc != want)
		fail_msg("load %s: %s (%s), want %s", name, sh_errname(rc),
			 sh_store_last_error(), sh_errname(want));
	return h;
}

/* ---- Restart ---------------------------------------------------------------
 */

#define NIDS 500
#define DIM 16

struct model {
	int state[NIDS]; /* 0 never written, 1 live, 2 deleted */
	uint64_t version[NIDS];
	char payload[NIDS][48];
};

static sh_pid pid_of(size_t i)
{
	if (i % 2 == 0)
		return sh_pid_u64(i * 1000003ull);
	char s[32];
	sh_pid p;
	int n = snprintf(s, sizeof(s), "sku-%zu", i);
	assert_int_equal(sh_pid_str(s, (size_t)n, &p), SH_OK);
	return p;
}

static void run_workload(struct writer *w, struct model *m, const float *v,
			 size_t nv, uint64_t seed)
{
	uint64_t rs = seed;
	for (size_t op = 0; op < 4000; op++) {
		size_t i = tu_rand(&rs) % NIDS;
		sh_pid pid = pid_of(i);
		uint32_t r = (uint32_t)(tu_rand(&rs) % 100);
		uint64_t ver = m->version[i] + 1 + tu_rand(&rs) % 3;
		if (r < 70) {
			snprintf(m->payload[i], sizeof(m->payload[i]),
				 "{\"i\":%zu,\"op\":%zu}", i, op);
			w_upsert(w, &pid, v + (tu_rand(&rs) % nv) * DIM, ver,
				 op % 5 ? m->payload[i] : NULL);
			if (op % 5 == 0)
				m->payload[i][0] = 0;
			m->state[i] = 1;
			m->version[i] = ver;
		} else if (r < 92) {
			w_delete(w, &pid, ver);
			m->state[i] = 2;
			m->version[i] = ver;
			m->payload[i][0] = 0;
		} else if (r < 95) {
			w_vacuum(w);
		} else if (m->version[i] > 0) {
			/* a replayed older write is recognised as stale */
			uint64_t stored;
			assert_int_equal(sh_store_check_version(
					     w->st, w->coll, sh_slot_of(&pid),
					     &pid, m->version[i] - 1, &stored),
					 SH_ESTALE);
			assert_int_equal(stored, m->version[i]);
		}
	}
}

static void check_points(sh_store *st, uint32_t coll, const struct model *m,
			 sh_hnsw *h)
{
	for (size_t i = 0; i < NIDS; i++) {
		sh_pid pid = pid_of(i);
		sh_store_point p;
		int rc =
		    sh_store_get_point(st, coll, sh_slot_of(&pid), &pid, &p);
		if (m->state[i] == 0) {
			assert_int_equal(rc, SH_ENOTFOUND);
			continue;
		}
		assert_int_equal(rc, SH_OK);
		assert_int_equal(p.version, m->version[i]);
		assert_int_equal(p.deleted, m->state[i] == 2);
		assert_int_equal(p.payload_len, strlen(m->payload[i]));
		if (p.payload_len)
			assert_string_equal(p.payload, m->payload[i]);
		else
			assert_null(p.payload);
		uint32_t iid;
		if (m->state[i] == 1) {
			assert_int_equal(sh_hnsw_lookup(h, &pid, &iid), SH_OK);
			assert_int_equal(p.iid, iid);
		} else {
			assert_int_equal(p.iid, SH_IID_NONE);
			assert_int_equal(sh_hnsw_lookup(h, &pid, &iid),
					 SH_ENOTFOUND);
		}
		sh_store_point_clear(&p);
	}
}

struct scan_ctx {
	const struct model *m;
	size_t n;
	int last_slot;
};

static int scan_cb(void *ctx, uint16_t slot, const sh_pid *pid,
		   const sh_store_point *p)
{
	struct scan_ctx *s = ctx;
	assert_true((int)slot >= s->last_slot);
	s->last_slot = slot;
	assert_int_equal(slot, sh_slot_of(pid));
	size_t i = pid->kind == SH_PID_U64 ? (size_t)(pid->num / 1000003ull)
					   : (size_t)atoi(pid->str + 4);
	assert_true(i < NIDS);
	assert_int_equal(p->version, s->m->version[i]);
	assert_int_equal(p->deleted, s->m->state[i] == 2);
	assert_int_equal(p->payload_len, strlen(s->m->payload[i]));
	assert_memory_equal(p->payload ? p->payload : "", s->m->payload[i],
			    p->payload_len);
	s->n++;
	return 0;
}

static void compare_search(sh_hnsw *a, sh_hnsw *b, const float *q, size_t nq)
{
	sh_hnsw_hit x[10], y[10];
	size_t nx, ny;
	for (size_t i = 0; i < nq; i++) {
		assert_int_equal(
		    sh_hnsw_search(a, q + i * DIM, 10, 40, NULL, x, &nx, NULL),
		    SH_OK);
		assert_int_equal(
		    sh_hnsw_search(b, q + i * DIM, 10, 40, NULL, y, &ny, NULL),
		    SH_OK);
		assert_int_equal(nx, ny);
		for (size_t j = 0; j < nx; j++) {
			assert_int_equal(x[j].iid, y[j].iid);
			assert_true(x[j].dist == y[j].dist);
			assert_true(sh_pid_eq(&x[j].pid, &y[j].pid));
		}
	}
}

static void test_restart_reloads_same_index_and_points(void **state)
{
	struct fx *f = *state;
	f->st = open_store(f, SH_FSYNC_NEVER);
	uint32_t ida, idb;
	assert_int_equal(
	    sh_store_coll_create(f->st,
				 "{\"name\":\"a\",\"dim\":16,\"m\":8,"
				 "\"ef_construction\":48}",
				 &ida),
	    SH_OK);
	assert_int_equal(
	    sh_store_coll_create(f->st,
				 "{\"name\":\"b\",\"dim\":16,\"m\":6,"
				 "\"ef_construction\":40,\"storage\":\"int8\","
				 "\"metric\":\"cosine\"}",
				 &idb),
	    SH_OK);
	size_t nv = 2 * NIDS;
	float *v = tu_clustered(nv, DIM, 8, 11);
	struct model *ma = calloc(1, sizeof(*ma)), *mb = calloc(1, sizeof(*mb));
	struct writer wa, wb;
	writer_init(&wa, f->st, "a");
	writer_init(&wb, f->st, "b");
	run_workload(&wa, ma, v, nv, 1);
	run_workload(&wb, mb, v, nv, 2);
	assert_true(wa.nchanges > 10000);
	assert_valid(wa.h);

	/* batches belong to a store: free them before it closes */
	sh_store_batch_free(wa.b);
	sh_store_batch_free(wb.b);
	wa.b = wb.b = NULL;
	reopen(f);
	sh_hnsw *ha = load(f->st, "a", SH_OK), *hb = load(f->st, "b", SH_OK);
	assert_valid(ha);
	assert_valid(hb);
	sh_hnsw_info i1, i2;
	sh_hnsw_info_get(wa.h, &i1);
	sh_hnsw_info_get(ha, &i2);
	assert_int_equal(i1.live, i2.live);
	assert_int_equal(i1.tombstones, i2.tombstones);
	assert_int_equal(i1.entry, i2.entry);
	assert_true(i1.tombstones > 0);
	compare_search(wa.h, ha, v, 300);
	compare_search(wb.h, hb, v + 300 * DIM, 300);
	check_points(f->st, ida, ma, ha);
	check_points(f->st, idb, mb, hb);

	/* the NODE record holds the vector the index holds (f32 storage) */
	float x[DIM], y[DIM];
	for (size_t i = 0; i < NIDS; i++) {
		sh_pid pid = pid_of(i);
		uint32_t iid;
		if (sh_hnsw_lookup(ha, &pid, &iid) != SH_OK)
			continue;
		assert_int_equal(sh_store_get_vector(f->st, ida, iid, DIM, x),
				 SH_OK);
		assert_int_equal(sh_hnsw_get_vector(ha, iid, y), SH_OK);
		assert_memory_equal(x, y, sizeof(x));
	}
	assert_int_equal(sh_store_get_vector(f->st, ida, 0, DIM + 1, x),
			 SH_ECORRUPT);
	assert_int_equal(sh_store_get_vector(f->st, ida, 1u << 30, DIM, x),
			 SH_ENOTFOUND);

	/* a full scan sees every record once, tombstones included */
	size_t written = 0;
	for (size_t i = 0; i < NIDS; i++)
		written += ma->state[i] != 0;
	struct scan_ctx sc = {ma, 0, 0};
	assert_int_equal(
	    sh_store_scan_points(f->st, ida, 0, SH_SLOTS - 1, scan_cb, &sc),
	    SH_OK);
	assert_int_equal(sc.n, written);
	/* and a slot range only its slots */
	size_t in_range = 0;
	for (size_t i = 0; i < NIDS; i++) {
		sh_pid pid = pid_of(i);
		uint16_t s = sh_slot_of(&pid);
		in_range += ma->state[i] != 0 && s >= 4000 && s <= 9000;
	}
	sc = (struct scan_ctx){ma, 0, 0};
	assert_int_equal(
	    sh_store_scan_points(f->st, ida, 4000, 9000, scan_cb, &sc), SH_OK);
	assert_int_equal(sc.n, in_range);
	assert_int_equal(sh_store_scan_points(f->st, ida, 9, 8, scan_cb, &sc),
			 SH_EINVAL);

	/* the reloaded index keeps accepting writes that persist */
	wa.st = f->st;
	sh_hnsw_free(wa.h);
	wa.h = ha;
	wa.b = sh_store_batch_new(f->st);
	sh_hnsw_set_change_fn(ha, feed, &wa);
	run_workload(&wa, ma, v, nv, 3);
	sh_store_batch_free(wa.b);
	wa.b = NULL;
	reopen(f);
	sh_hnsw *ha2 = load(f->st, "a", SH_OK);
	assert_valid(ha2);
	compare_search(ha, ha2, v, 300);
	check_points(f->st, ida, ma, ha2);

	sh_hnsw_free(ha2);
	sh_hnsw_free(hb);
	sh_hnsw_free(wb.h);
	writer_free(&wa);
	free(ma);
	free(mb);
	free(v);
}

/* ---- Versions ---------------------------------------------------------------
 */

static void test_delete_tombstone_keeps_its_version(void **state)
{
	struct fx *f = *state;
	f->st = open_store(f, SH_FSYNC_ALWAYS);
	uint32_t id;
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"v\",\"dim\":4}", &id),
	    SH_OK);
	sh_store_batch *b = sh_store_batch_new(f->st);
	sh_pid p = sh_pid_u64(42);
	uint16_t s = sh_slot_of(&p);
	const char *pl = "{\"a\":1}";
	assert_int_equal(
	    sh_store_batch_put_point(b, id, s, &p, 5, 3, pl, strlen(pl)),
	    SH_OK);
	assert_int_equal(sh_store_batch_commit(b), SH_OK);
	assert_int_equal(sh_store_check_version(f->st, id, s, &p, 4, NULL),
			 SH_ESTALE);
	assert_int_equal(sh_store_check_version(f->st, id, s, &p, 5, NULL),
			 SH_OK);
	assert_int_equal(sh_store_batch_delete_point(b, id, s, &p, 7), SH_OK);
	assert_int_equal(sh_store_batch_commit(b), SH_OK);
	sh_store_batch_free(b);
	reopen(f);
	for (int round = 0; round < 2; round++) {
		sh_store_point pt;
		assert_int_equal(sh_store_get_point(f->st, id, s, &p, &pt),
				 SH_OK);
		assert_true(pt.deleted);
		assert_int_equal(pt.version, 7);
		assert_int_equal(pt.iid, SH_IID_NONE);
		assert_null(pt.payload);
		uint64_t stored;
		/* a late upsert with version 6 cannot resurrect the point */
		assert_int_equal(
		    sh_store_check_version(f->st, id, s, &p, 6, &stored),
		    SH_ESTALE);
		assert_int_equal(stored, 7);
		assert_int_equal(
		    sh_store_check_version(f->st, id, s, &p, 8, NULL), SH_OK);
		reopen(f);
	}
	/* never written: any version applies */
	sh_pid q = sh_pid_u64(43);
	assert_int_equal(
	    sh_store_check_version(f->st, id, sh_slot_of(&q), &q, 0, NULL),
	    SH_OK);
}

static void test_batch_error_is_sticky_and_writes_nothing(void **state)
{
	struct fx *f = *state;
	f->st = open_store(f, SH_FSYNC_BATCH);
	uint32_t id;
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"s\",\"dim\":4}", &id),
	    SH_OK);
	sh_store_batch *b = sh_store_batch_new(f->st);
	sh_pid p = sh_pid_u64(1);
	uint16_t s = sh_slot_of(&p);
	assert_int_equal(sh_store_batch_put_point(b, id, s, &p, 1, 0, NULL, 0),
			 SH_OK);
	assert_int_equal(
	    sh_store_batch_put_point(b, id, SH_SLOTS, &p, 1, 0, NULL, 0),
	    SH_EINVAL);
	assert_int_equal(sh_store_batch_put_point(b, id, s, &p, 1, 0, NULL, 0),
			 SH_EINVAL);
	assert_int_equal(sh_store_batch_commit(b), SH_EINVAL);
	sh_store_point pt;
	assert_int_equal(sh_store_get_point(f->st, id, s, &p, &pt),
			 SH_ENOTFOUND);
	/* oversized payload */
	char *big = calloc(1, SH_STORE_MAX_PAYLOAD + 2);
	memset(big, 'x', SH_STORE_MAX_PAYLOAD + 1);
	assert_int_equal(sh_store_batch_put_point(b, id, s, &p, 1, 0, big,
						  SH_STORE_MAX_PAYLOAD + 1),
			 SH_ETOOBIG);
	assert_int_equal(sh_store_batch_commit(b), SH_ETOOBIG);
	free(big);
	/* bad change records */
	sh_hnsw_change c = {.kind = (sh_hnsw_change_kind)99, .iid = 1};
	assert_int_equal(sh_store_batch_index_changes(b, id, 4, &c, 1),
			 SH_EINVAL);
	assert_int_equal(sh_store_batch_commit(b), SH_EINVAL);
	c = (sh_hnsw_change){.kind = SH_CHANGE_LINKS, .iid = 1, .level = 40};
	assert_int_equal(sh_store_batch_index_changes(b, id, 4, &c, 1),
			 SH_EINVAL);
	assert_int_equal(sh_store_batch_commit(b), SH_EINVAL);
	/* the batch is reusable after a failed commit */
	assert_int_equal(sh_store_batch_put_point(b, id, s, &p, 2, 0, NULL, 0),
			 SH_OK);
	assert_int_equal(sh_store_batch_count(b), 1);
	assert_int_equal(sh_store_batch_commit(b), SH_OK);
	assert_int_equal(sh_store_sync(f->st), SH_OK);
	assert_int_equal(sh_store_get_point(f->st, id, s, &p, &pt), SH_OK);
	assert_int_equal(pt.version, 2);
	sh_store_point_clear(&pt);
	sh_store_batch_free(b);
}

/* a NODE record re-sent without its vector only sets or clears the flag */
static void test_node_resent_without_vector_sets_tombstone(void **state)
{
	struct fx *f = *state;
	f->st = open_store(f, SH_FSYNC_NEVER);
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"t\",\"dim\":16}", NULL),
	    SH_OK);
	float *v = tu_clustered(100, DIM, 4, 3);
	struct writer w;
	writer_init(&w, f->st, "t");
	for (size_t i = 0; i < 100; i++) {
		sh_pid p = sh_pid_u64(i);
		w_upsert(&w, &p, v + i * DIM, 1, NULL);
	}
	sh_pid p7 = sh_pid_u64(7);
	uint32_t iid;
	assert_int_equal(sh_hnsw_lookup(w.h, &p7, &iid), SH_OK);
	for (int round = 0; round < 2; round++) {
		sh_hnsw_change c = {.kind = SH_CHANGE_NODE,
				    .iid = iid,
				    .pid = &p7,
				    .tombstone = round == 0};
		assert_int_equal(
		    sh_store_batch_index_changes(w.b, w.coll, DIM, &c, 1),
		    SH_OK);
		assert_int_equal(sh_store_batch_commit(w.b), SH_OK);
		sh_hnsw *h = load(f->st, "t", SH_OK);
		sh_hnsw_info info;
		sh_hnsw_info_get(h, &info);
		uint32_t got;
		assert_int_equal(info.tombstones, round == 0 ? 1 : 0);
		assert_int_equal(sh_hnsw_lookup(h, &p7, &got),
				 round == 0 ? SH_ENOTFOUND : SH_OK);
		sh_hnsw_free(h);
	}
	writer_free(&w);
	free(v);
}

struct committer {
	sh_store *st;
	uint32_t coll;
	uint64_t base;
};

static void *commit_thread(void *arg)
{
	struct committer *c = arg;
	sh_store_batch *b = sh_store_batch_new(c->st);
	for (uint64_t i = 0; i < 50 && b; i++) {
		sh_pid p = sh_pid_u64(c->base + i);
		if (sh_store_batch_put_point(b, c->coll, sh_slot_of(&p), &p,
					     i + 1, (uint32_t)i, "{}", 2) ||
		    sh_store_batch_commit(b)) {
			sh_store_batch_free(b);
			return (void *)1;
		}
	}
	sh_store_batch_free(b);
	return NULL;
}

/* fsync ALWAYS from four threads at once: RocksDB's write group shares the
 * fsyncs; every acknowledged commit is there after a restart */
static void test_concurrent_synced_commits_all_land(void **state)
{
	struct fx *f = *state;
	f->st = open_store(f, SH_FSYNC_ALWAYS);
	uint32_t id;
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"c\",\"dim\":4}", &id),
	    SH_OK);
	pthread_t t[4];
	struct committer c[4];
	for (int i = 0; i < 4; i++) {
		c[i] = (struct committer){f->st, id, (uint64_t)i * 1000};
		assert_int_equal(
		    pthread_create(&t[i], NULL, commit_thread, &c[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(t[i], &r);
		assert_null(r);
	}
	reopen(f);
	for (int i = 0; i < 4; i++)
		for (uint64_t j = 0; j < 50; j++) {
			sh_pid p = sh_pid_u64((uint64_t)i * 1000 + j);
			sh_store_point pt;
			assert_int_equal(sh_store_get_point(f->st, id,
							    sh_slot_of(&p), &p,
							    &pt),
					 SH_OK);
			assert_int_equal(pt.version, j + 1);
			assert_string_equal(pt.payload, "{}");
			sh_store_point_clear(&pt);
		}
}

/* ---- Collections ------------------------------------------------------------
 */

static int list_cb(void *ctx, const sh_store_coll *c)
{
	char *names = ctx;
	strcat(names, c->name);
	strcat(names, ",");
	return 0;
}

static void test_collection_configs_are_validated_and_persist(void **state)
{
	struct fx *f = *state;
	f->st = open_store(f, SH_FSYNC_ALWAYS);
	uint32_t id1, id2, id3;
	const char *bad[] = {
	    "",
	    "[]",
	    "{\"dim\":4}",
	    "{\"name\":\"x\"}",
	    "{\"name\":\"x\",\"dim\":0}",
	    "{\"name\":\"x\",\"dim\":4097}",
	    "{\"name\":\"x\",\"dim\":4.5}",
	    "{\"name\":\"x y\",\"dim\":4}",
	    "{\"name\":\"x\",\"dim\":4,\"metric\":\"hamming\"}",
	    "{\"name\":\"x\",\"dim\":4,\"storage\":\"f16\"}",
	    "{\"name\":\"x\",\"dim\":4,\"m\":1}",
	    "{\"name\":\"x\",\"dim\":4,\"payload_indexes\":[]}",
	    "{\"name\":\"x\",\"dim\":4,\"payload_indexes\":{\"a\":\"geo\"}}",
	    "{\"name\":\"x\",\"dim\":4,\"payload_indexes\":{\"a..b\":\"bool\"}"
	    "}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(sh_store_coll_create(f->st, bad[i], NULL),
				 SH_EINVAL);
		assert_true(sh_store_last_error()[0] != 0);
	}
	assert_int_equal(
	    sh_store_coll_create(
		f->st,
		"{\"name\":\"products\",\"dim\":128,\"metric\":\"cosine\","
		"\"storage\":\"int8\",\"m\":12,\"ef_construction\":100,"
		"\"ef_search\":32,\"rescore\":2,\"payload_indexes\":{\"brand\":"
		"\"keyword\","
		"\"price\":\"float\",\"stock\":\"integer\",\"on\":\"bool\"}}",
		&id1),
	    SH_OK);
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"b\",\"dim\":3}", &id2),
	    SH_OK);
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"b\",\"dim\":5}", NULL),
	    SH_EEXIST);
	assert_true(id2 > id1);
	assert_int_equal(sh_store_coll_drop(f->st, id2), SH_OK);
	assert_int_equal(sh_store_coll_drop(f->st, id2), SH_ENOTFOUND);
	reopen(f);
	/* ids are never reused, even across a restart */
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"b\",\"dim\":5}", &id3),
	    SH_OK);
	assert_true(id3 > id2);
	reopen(f);
	sh_store_coll c;
	assert_int_equal(sh_store_coll_get(f->st, "products", &c), SH_OK);
	assert_int_equal(c.id, id1);
	assert_int_equal(c.params.dim, 128);
	assert_int_equal(c.params.metric, SH_METRIC_COSINE);
	assert_int_equal(c.params.storage, SH_STORAGE_INT8);
	assert_int_equal(c.params.m, 12);
	assert_int_equal(c.params.ef_construction, 100);
	assert_int_equal(c.params.ef_search, 32);
	assert_int_equal(c.params.rescore, 2);
	assert_int_equal(c.nindexes, 4);
	for (uint32_t i = 0; i < c.nindexes; i++) {
		if (strcmp(c.indexes[i].field, "brand") == 0)
			assert_int_equal(c.indexes[i].type, SH_PAYLOAD_KEYWORD);
		else if (strcmp(c.indexes[i].field, "price") == 0)
			assert_int_equal(c.indexes[i].type, SH_PAYLOAD_FLOAT);
		else if (strcmp(c.indexes[i].field, "stock") == 0)
			assert_int_equal(c.indexes[i].type, SH_PAYLOAD_INTEGER);
		else if (strcmp(c.indexes[i].field, "on") == 0)
			assert_int_equal(c.indexes[i].type, SH_PAYLOAD_BOOL);
		else
			fail_msg("unexpected index %s", c.indexes[i].field);
	}
	assert_int_equal(sh_store_coll_get_id(f->st, id3, &c), SH_OK);
	assert_string_equal(c.name, "b");
	assert_int_equal(c.params.dim, 5);
	assert_int_equal(sh_store_coll_get(f->st, "nope", &c), SH_ENOTFOUND);
	char names[256] = "";
	assert_int_equal(sh_store_coll_list(f->st, list_cb, names), SH_OK);
	assert_string_equal(names, "products,b,");
}

static int count_cb(void *ctx, uint16_t slot, const sh_pid *pid,
		    const sh_store_point *p)
{
	(*(size_t *)ctx)++;
	return 0;
}

static size_t count_points(sh_store *st, uint32_t coll)
{
	size_t n = 0;
	assert_int_equal(
	    sh_store_scan_points(st, coll, 0, SH_SLOTS - 1, count_cb, &n),
	    SH_OK);
	return n;
}

static void fill(struct writer *w, size_t n, const float *v, uint64_t seed)
{
	uint64_t rs = seed;
	for (size_t i = 0; i < n; i++) {
		sh_pid p = sh_pid_u64(i);
		w_upsert(w, &p, v + (tu_rand(&rs) % n) * DIM, 1, "{\"x\":1}");
	}
	for (size_t i = 0; i < n; i += 7) {
		sh_pid p = sh_pid_u64(i);
		w_delete(w, &p, 2);
	}
}

static void test_drop_removes_only_that_collection(void **state)
{
	struct fx *f = *state;
	f->st = open_store(f, SH_FSYNC_NEVER);
	uint32_t ia, ib, ic;
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"a\",\"dim\":16}", &ia),
	    SH_OK);
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"b\",\"dim\":16}", &ib),
	    SH_OK);
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"c\",\"dim\":16}", &ic),
	    SH_OK);
	float *v = tu_clustered(300, DIM, 4, 5);
	struct writer w[3];
	const char *names[3] = {"a", "b", "c"};
	for (int i = 0; i < 3; i++) {
		writer_init(&w[i], f->st, names[i]);
		fill(&w[i], 300, v, (uint64_t)i);
	}
	for (int i = 0; i < 3; i++) {
		sh_store_batch_free(w[i].b);
		w[i].b = NULL;
	}
	assert_int_equal(count_points(f->st, ib), 300);
	assert_int_equal(sh_store_coll_drop(f->st, ib), SH_OK);
	assert_int_equal(count_points(f->st, ib), 0);
	float x[DIM];
	assert_int_equal(sh_store_get_vector(f->st, ib, 0, DIM, x),
			 SH_ENOTFOUND);
	sh_hnsw_params pp;
	sh_hnsw_params_default(&pp, DIM);
	sh_hnsw *empty;
	assert_int_equal(sh_hnsw_new(&pp, &empty), SH_OK);
	assert_int_equal(sh_store_load_index(f->st, ib, empty), SH_OK);
	sh_hnsw_info info;
	sh_hnsw_info_get(empty, &info);
	assert_int_equal(info.nodes, 0);
	sh_hnsw_free(empty);
	reopen(f);
	sh_store_coll c;
	assert_int_equal(sh_store_coll_get(f->st, "b", &c), SH_ENOTFOUND);
	assert_int_equal(count_points(f->st, ib), 0);
	/* the neighbours on both sides of the key range are intact */
	assert_int_equal(count_points(f->st, ia), 300);
	assert_int_equal(count_points(f->st, ic), 300);
	sh_hnsw *ha = load(f->st, "a", SH_OK), *hc = load(f->st, "c", SH_OK);
	assert_valid(ha);
	assert_valid(hc);
	compare_search(w[0].h, ha, v, 50);
	compare_search(w[2].h, hc, v, 50);
	sh_hnsw_free(ha);
	sh_hnsw_free(hc);
	for (int i = 0; i < 3; i++)
		sh_hnsw_free(w[i].h);
	free(v);
}

/* ---- Untrusted bytes
 * ----------------------------------------------------------- */

static void test_corrupt_records_give_ecorrupt_not_a_crash(void **state)
{
	struct fx *f = *state;
	f->st = open_store(f, SH_FSYNC_NEVER);
	uint32_t id;
	assert_int_equal(
	    sh_store_coll_create(f->st, "{\"name\":\"a\",\"dim\":16}", &id),
	    SH_OK);
	float *v = tu_clustered(200, DIM, 4, 5);
	struct writer w;
	writer_init(&w, f->st, "a");
	fill(&w, 200, v, 1);
	writer_free(&w);
	sh_store_close(f->st);
	f->st = NULL;

	struct raw r;
	raw_open(&r, f->db);
	/* points: garbage, a bad format byte, and every truncation of a good
	 * record, each under its own id (u64 ids 1000..) in collection id */
	const uint8_t good[] = {1, 0, 5, 0, 0, 0, 0, 0, 0,   0,
				9, 0, 0, 0, 2, 0, 0, 0, '{', '}'};
	size_t nbad = 0;
	for (size_t len = 0; len <= sizeof(good) + 2; len++, nbad++) {
		uint8_t val[64];
		memcpy(val, good, sizeof(good));
		size_t vl = len;
		if (len == sizeof(good)) /* unknown format */
			val[0] = 2, vl = sizeof(good);
		else if (len == sizeof(good) + 1) /* unknown flag */
			val[1] = 0x80, vl = sizeof(good);
		else if (len == sizeof(good) + 2) /* deleted with payload */
			val[1] = 1, vl = sizeof(good);
		sh_pid p = sh_pid_u64(1000 + nbad);
		uint16_t s = sh_slot_of(&p);
		uint8_t k[15] = {id >> 24, id >> 16, id >> 8, id, s >> 8, s, 0};
		for (int i = 0; i < 8; i++)
			k[7 + i] = (uint8_t)(p.num >> (56 - 8 * i));
		raw_put(&r, 2, k, 15, val, vl);
	}
	/* graph: each case in a copy of the good graph, in collection 100+i */
	uint8_t k[10];
	uint8_t lv[16] = {1};
	int ncase = 0;
	for (; ncase < 12; ncase++) {
		uint32_t c = 100 + (uint32_t)ncase;
		raw_copy_coll(&r, 3, id, c);
		switch (ncase) {
		case 0: /* garbage NODE */
			raw_put(&r, 3, k, graph_key(k, c, 0, 1, 0), "xyz", 3);
			break;
		case 1: /* NODE of an unknown format */
			lv[0] = 7;
			raw_put(&r, 3, k, graph_key(k, c, 0, 1, 0), lv, 16);
			break;
		case 2: /* LINKS count beyond the value */
			lv[0] = 1, lv[1] = 0xff, lv[2] = 0xff;
			raw_put(&r, 3, k, graph_key(k, c, 0, 2, 0), lv, 9);
			break;
		case 3: /* a link to a node that does not exist */
			lv[0] = 1, lv[1] = 1, lv[2] = 0, lv[5] = 0xff,
			lv[6] = 0xff, lv[7] = 0x0f;
			raw_put(&r, 3, k, graph_key(k, c, 0, 2, 0), lv, 9);
			break;
		case 4: /* a key of the wrong length */
			raw_put(&r, 3, k, graph_key(k, c, 3, 1, 0) - 1, "x", 1);
			break;
		case 5: /* a tombstone without its node */
			lv[0] = 1;
			raw_put(&r, 3, k, graph_key(k, c, 1u << 20, 0, 0), lv,
				1);
			break;
		case 6: /* an unknown record kind */
			raw_put(&r, 3, k, graph_key(k, c, 0, 9, 0), lv, 1);
			break;
		case 7: /* garbage ENTRY */
			raw_put(&r, 3, k, graph_key(k, c, UINT32_MAX, 3, 0),
				"garbage", 7);
			break;
		case 8: /* LINKS above the node's level */
			lv[0] = 1, lv[1] = 0;
			raw_put(&r, 3, k, graph_key(k, c, 0, 2, 16), lv, 5);
			break;
		case 9: /* ENTRY pointing at no node */
			lv[0] = 1, lv[1] = 0xff, lv[2] = 0xff, lv[3] = 0,
			lv[4] = 0, lv[5] = 0;
			raw_put(&r, 3, k, graph_key(k, c, UINT32_MAX, 3, 0), lv,
				6);
			break;
		case 10: /* no ENTRY at all */
			raw_delete(&r, 3, k, graph_key(k, c, UINT32_MAX, 3, 0));
			break;
		case 11: /* a record after the ENTRY */
			raw_put(&r, 3, k, graph_key(k, c, UINT32_MAX, 4, 0), lv,
				1);
			break;
		}
	}
	/* every truncation and a few bit flips of NODE 0, for get_vector, in
	 * collection 200 (iid = the truncated length) */
	{
		rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
		char *err = NULL;
		size_t nl;
		char *node =
		    rocksdb_get_cf(r.db, ro, r.cf[3], (const char *)k,
				   graph_key(k, id, 0, 1, 0), &nl, &err);
		assert_non_null(node);
		for (size_t len = 0; len < nl; len++)
			raw_put(&r, 3, k,
				graph_key(k, 200, (uint32_t)len, 1, 0), node,
				len);
		for (size_t i = 0; i < 5; i++) { /* header bytes: bad values */
			char *m = malloc(nl);
			memcpy(m, node, nl);
			m[i] = (char)0xee;
			raw_put(&r, 3, k,
				graph_key(k, 200, (uint32_t)(nl + i), 1, 0), m,
				nl);
			free(m);
		}
		/* a string id that is not UTF-8 */
		char *m = malloc(nl + 8);
		m[0] = 1, m[1] = 0, m[2] = 0, m[3] = 1, m[4] = 1, m[5] = '\xff';
		memcpy(m + 6, node + 13, nl - 13 + 4 - 4); /* dim + vec */
		raw_put(&r, 3, k, graph_key(k, 200, 5000, 1, 0), m,
			6 + nl - 13);
		free(m);
		rocksdb_free(node);
		rocksdb_readoptions_destroy(ro);
	}
	/* payload_idx is reserved: garbage there is never read */
	raw_put(&r, 4, "junk", 4, "junk", 4);
	raw_close(&r);

	f->st = open_store(f, SH_FSYNC_NEVER);
	for (size_t i = 0; i < nbad; i++) {
		sh_pid p = sh_pid_u64(1000 + i);
		sh_store_point pt;
		int rc = sh_store_get_point(f->st, id, sh_slot_of(&p), &p, &pt);
		if (rc != SH_ECORRUPT)
			fail_msg("points case %zu: %s", i, sh_errname(rc));
		assert_true(sh_store_last_error()[0] != 0);
		assert_null(pt.payload);
		assert_int_equal(sh_store_check_version(
				     f->st, id, sh_slot_of(&p), &p, 1, NULL),
				 SH_ECORRUPT);
	}
	size_t n = 0;
	assert_int_equal(
	    sh_store_scan_points(f->st, id, 0, SH_SLOTS - 1, count_cb, &n),
	    SH_ECORRUPT);
	/* the good graph still loads */
	sh_hnsw *h = load(f->st, "a", SH_OK);
	sh_hnsw_free(h);
	sh_hnsw_params pp;
	sh_hnsw_params_default(&pp, DIM);
	for (int i = 0; i < ncase; i++) {
		assert_int_equal(sh_hnsw_new(&pp, &h), SH_OK);
		int rc = sh_store_load_index(f->st, 100 + (uint32_t)i, h);
		if (rc != SH_ECORRUPT)
			fail_msg("graph case %d: %s", i, sh_errname(rc));
		sh_hnsw_free(h);
	}
	float x[DIM];
	for (uint32_t iid = 0; iid < 5000; iid++) {
		int rc = sh_store_get_vector(f->st, 200, iid, DIM, x);
		if (rc == SH_ENOTFOUND)
			continue;
		if (rc != SH_ECORRUPT)
			fail_msg("get_vector case %u: %s", iid, sh_errname(rc));
	}
	assert_int_equal(sh_store_get_vector(f->st, 200, 5000, DIM, x),
			 SH_ECORRUPT);
	sh_store_close(f->st);
	f->st = NULL;

	/* meta: a garbage config, a bad counter, an unknown key */
	const struct {
		const char *k;
		size_t kl;
		const char *v;
		size_t vl;
	} metas[] = {
#define M(k, v) {k, sizeof(k) - 1, v, sizeof(v) - 1}
	    M("\0\0\0\x09", "not json"),
	    M("\0\0\0\x09", "{\"name\":\"z\",\"dim\":4}"), /* no format */
	    M("\0\0\0\x09", "{\"format\":1,\"name\":\"a\",\"dim\":4}"),
	    M("\0\0\0\x09", "{\"format\":2,\"name\":\"z\",\"dim\":4}"),
	    M("next_collection_id", "\x01\x01\0\0\0"), /* below the ids */
	    M("next_collection_id", "\x02\x09\0\0\0"), /* format */
	    M("unknown", "x"),
#undef M
	};
	for (size_t i = 0; i < sizeof(metas) / sizeof(metas[0]); i++) {
		raw_open(&r, f->db);
		rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
		char *err = NULL;
		size_t ol;
		char *orig = rocksdb_get_cf(r.db, ro, r.cf[1], metas[i].k,
					    metas[i].kl, &ol, &err);
		rocksdb_readoptions_destroy(ro);
		raw_put(&r, 1, metas[i].k, metas[i].kl, metas[i].v,
			metas[i].vl);
		raw_close(&r);
		char msg[256] = "";
		sh_store *st = NULL;
		int rc = sh_store_open(f->db, NULL, &st, msg, sizeof(msg));
		if (rc != SH_ECORRUPT)
			fail_msg("meta case %zu: %s", i, sh_errname(rc));
		assert_null(st);
		assert_true(msg[0] != 0);
		raw_open(&r, f->db);
		if (orig)
			raw_put(&r, 1, metas[i].k, metas[i].kl, orig, ol);
		else
			raw_delete(&r, 1, metas[i].k, metas[i].kl);
		rocksdb_free(orig);
		raw_close(&r);
	}
	f->st = open_store(f, SH_FSYNC_NEVER);
	h = load(f->st, "a", SH_OK);
	assert_valid(h);
	sh_hnsw_free(h);
	free(v);
}

/* ---- Opening
 * --------------------------------------------------------------------- */

static void test_open_missing_dir_without_create_fails_cleanly(void **state)
{
	struct fx *f = *state;
	sh_store_opts o;
	sh_store_opts_default(&o);
	o.create_if_missing = false;
	sh_store *st = NULL;
	char err[256] = "";
	assert_int_equal(sh_store_open(f->db, &o, &st, err, sizeof(err)),
			 SH_ENOTFOUND);
	assert_null(st);
	assert_true(err[0] != 0);
	assert_int_equal(access(f->db, F_OK), -1); /* nothing was created */
	char deep[160];
	snprintf(deep, sizeof(deep), "%s/no/such/parent", f->root);
	o.create_if_missing = true;
	assert_int_not_equal(sh_store_open(deep, &o, &st, err, sizeof(err)),
			     SH_OK);
	assert_null(st);
	assert_int_equal(sh_store_open(NULL, &o, &st, NULL, 0), SH_EINVAL);
	/* created once, it opens without create afterwards */
	assert_int_equal(sh_store_open(f->db, NULL, &st, err, sizeof(err)),
			 SH_OK);
	/* a second open of the same directory is refused (RocksDB's lock) */
	sh_store *st2 = NULL;
	assert_int_equal(sh_store_open(f->db, &o, &st2, err, sizeof(err)),
			 SH_EIO);
	assert_null(st2);
	sh_store_close(st);
	o.create_if_missing = false;
	assert_int_equal(sh_store_open(f->db, &o, &st, err, sizeof(err)),
			 SH_OK);
	f->st = st;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
		test_open_missing_dir_without_create_fails_cleanly, setup,
		teardown),
	    cmocka_unit_test_setup_teardown(
		test_collection_configs_are_validated_and_persist, setup,
		teardown),
	    cmocka_unit_test_setup_teardown(
		test_delete_tombstone_keeps_its_version, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_batch_error_is_sticky_and_writes_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_restart_reloads_same_index_and_points, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_concurrent_synced_commits_all_land, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_node_resent_without_vector_sets_tombstone, setup,
		teardown),
	    cmocka_unit_test_setup_teardown(
		test_drop_removes_only_that_collection, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_corrupt_records_give_ecorrupt_not_a_crash, setup,
		teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
