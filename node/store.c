/* The shard node's storage layer on RocksDB. See store.h for the layout,
 * the durability rules and the thread rules. */
#include "store_impl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "slots.h"

/* ---- Errors: one message per thread -------------------------------------- */

static _Thread_local char tl_err[512];

const char *sh_store_last_error(void)
{
	return tl_err;
}

int store_fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tl_err, sizeof(tl_err), fmt, ap);
	va_end(ap);
	return code;
}

/* Takes ownership of a RocksDB error string. */
int store_fail_rocks(char *rerr, const char *what)
{
	snprintf(tl_err, sizeof(tl_err), "%s: %s", what,
		 rerr ? rerr : "unknown RocksDB error");
	rocksdb_free(rerr);
	return SH_EIO;
}

/* ---- The store ----------------------------------------------------------- */

static const char *const cf_names[NCF] = {"default", "meta", "points", "graph",
					  "payload_idx"};

void sh_store_opts_default(sh_store_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->fsync = SH_FSYNC_ALWAYS;
	o->block_cache_mib = 256;
	o->create_if_missing = true;
}

/* ---- Opening and closing ------------------------------------------------- */

static void store_free(sh_store *st)
{
	if (st->db) {
		for (int i = 0; i < NCF; i++)
			if (st->cf[i])
				rocksdb_column_family_handle_destroy(st->cf[i]);
		rocksdb_close(st->db);
	}
	for (int i = 0; i < NCF; i++) {
		if (st->cfopts[i])
			rocksdb_options_destroy(st->cfopts[i]);
		if (st->tbl[i])
			rocksdb_block_based_options_destroy(st->tbl[i]);
	}
	if (st->dbopts)
		rocksdb_options_destroy(st->dbopts);
	if (st->cache)
		rocksdb_cache_destroy(st->cache);
	if (st->wopts)
		rocksdb_writeoptions_destroy(st->wopts);
	if (st->wopts_sync)
		rocksdb_writeoptions_destroy(st->wopts_sync);
	if (st->ropts)
		rocksdb_readoptions_destroy(st->ropts);
	pthread_mutex_destroy(&st->meta_lock);
	free(st->colls);
	free(st);
}

/* Per-CF tuning. The graph CF holds float vectors, which do not compress,
 * and is read back whole at restart: no compression, larger blocks. The
 * points CF holds JSON payloads: LZ4. Point lookups (versions, rescoring
 * vectors) get a bloom filter. */
static int cf_options(sh_store *st, int i)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_block_based_table_options_t *t =
	    rocksdb_block_based_options_create();
	if (!o || !t) {
		if (o)
			rocksdb_options_destroy(o);
		if (t)
			rocksdb_block_based_options_destroy(t);
		return SH_ENOMEM;
	}
	st->cfopts[i] = o;
	st->tbl[i] = t;
	rocksdb_block_based_options_set_block_cache(t, st->cache);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
	rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(
	    t, 1);
	if (i == CF_POINTS || i == CF_GRAPH)
		rocksdb_block_based_options_set_filter_policy(
		    t, rocksdb_filterpolicy_create_bloom_full(10));
	rocksdb_block_based_options_set_block_size(t, i == CF_GRAPH ? 32768
								    : 8192);
	rocksdb_options_set_block_based_table_factory(o, t);
	rocksdb_options_set_compression(o, i == CF_GRAPH
					       ? rocksdb_no_compression
					       : rocksdb_lz4_compression);
	rocksdb_options_set_level_compaction_dynamic_level_bytes(o, 1);
	rocksdb_options_set_write_buffer_size(
	    o, (i == CF_GRAPH || i == CF_POINTS) ? 64u << 20 : 4u << 20);
	return SH_OK;
}

int sh_store_open(const char *dir, const sh_store_opts *o, sh_store **out,
		  char *err, size_t errlen)
{
	int rc;
	sh_store_opts def;
	char *rerr = NULL;
	sh_store *st = NULL;
	tl_err[0] = 0;
	if (!o) {
		sh_store_opts_default(&def);
		o = &def;
	}
	if (!dir || !*dir || !out || o->fsync > SH_FSYNC_NEVER) {
		rc = store_fail(SH_EINVAL, "open: bad arguments");
		goto fail;
	}
	if (!o->create_if_missing) {
		char path[PATH_MAX];
		struct stat sb;
		snprintf(path, sizeof(path), "%s/CURRENT", dir);
		if (stat(path, &sb) != 0) {
			rc = store_fail(SH_ENOTFOUND,
					"open: no database in %s (and "
					"create_if_missing is off)",
					dir);
			goto fail;
		}
	} else if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		rc = store_fail(SH_EIO, "open: mkdir %s: %s", dir,
				strerror(errno));
		goto fail;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto fail;
	}
	pthread_mutex_init(&st->meta_lock, NULL);
	st->fsync = o->fsync;
	st->cache = rocksdb_cache_create_lru(
	    (size_t)(o->block_cache_mib ? o->block_cache_mib : 8) << 20);
	st->dbopts = rocksdb_options_create();
	st->wopts = rocksdb_writeoptions_create();
	st->wopts_sync = rocksdb_writeoptions_create();
	st->ropts = rocksdb_readoptions_create();
	if (!st->cache || !st->dbopts || !st->wopts || !st->wopts_sync ||
	    !st->ropts) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto fail;
	}
	rocksdb_writeoptions_set_sync(st->wopts,
				      o->fsync == SH_FSYNC_ALWAYS ? 1 : 0);
	rocksdb_writeoptions_disable_WAL(st->wopts, 0);
	rocksdb_writeoptions_set_sync(st->wopts_sync, 1);
	rocksdb_writeoptions_disable_WAL(st->wopts_sync, 0);

	rocksdb_options_t *dbo = st->dbopts;
	rocksdb_options_set_create_if_missing(dbo, o->create_if_missing);
	rocksdb_options_set_create_missing_column_families(dbo, 1);
	rocksdb_options_set_paranoid_checks(dbo, 1);
	rocksdb_options_increase_parallelism(dbo, 2);
	rocksdb_options_set_max_background_jobs(dbo, 2);
	/* Bound the WAL that a restart after a crash replays into the
	 * memtables (about 1 s per 100 MiB on the 2-core dev machine): past
	 * this, the column families holding the oldest WAL are flushed. A
	 * clean close flushes everything and replays nothing. */
	rocksdb_options_set_max_total_wal_size(dbo, 128u << 20);
	rocksdb_options_set_keep_log_file_num(dbo, 4);
	rocksdb_options_set_bytes_per_sync(dbo, 1u << 20);
	for (int i = 0; i < NCF; i++)
		if ((rc = cf_options(st, i))) {
			store_fail(rc, "out of memory");
			goto fail;
		}
	/* The CF options need the DB-wide ones too (parallelism etc.). */
	const rocksdb_options_t *cfo[NCF];
	for (int i = 0; i < NCF; i++)
		cfo[i] = st->cfopts[i];
	st->db = rocksdb_open_column_families(dbo, dir, NCF, cf_names, cfo,
					      st->cf, &rerr);
	if (rerr || !st->db) {
		st->db = NULL;
		rc = store_fail_rocks(rerr, "open");
		goto fail;
	}
	if ((rc = store_meta_load(st)))
		goto fail;
	*out = st;
	return SH_OK;
fail:
	if (err && errlen)
		snprintf(err, errlen, "%s", tl_err);
	if (st)
		store_free(st);
	return rc;
}

void sh_store_close(sh_store *st)
{
	if (!st)
		return;
	rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
	if (fo) {
		rocksdb_flushoptions_set_wait(fo, 1);
		for (int i = 0; i < NCF; i++) {
			char *rerr = NULL;
			rocksdb_flush_cf(st->db, fo, st->cf[i], &rerr);
			rocksdb_free(rerr); /* the WAL still has it all */
		}
		rocksdb_flushoptions_destroy(fo);
	}
	store_free(st);
}

int sh_store_sync(sh_store *st)
{
	char *rerr = NULL;
	rocksdb_flush_wal(st->db, 1, &rerr);
	return rerr ? store_fail_rocks(rerr, "sync") : SH_OK;
}

/* ---- Keys ---------------------------------------------------------------- */

static bool pid_ok(const sh_pid *p)
{
	return p && (p->kind == SH_PID_U64 ||
		     (p->kind == SH_PID_STR && p->len >= 1 &&
		      p->len <= SH_PID_MAX_STR));
}

/* Points key; returns its length. */
static size_t point_key(uint8_t *k, uint32_t coll, uint16_t slot,
			const sh_pid *p)
{
	put_be32(k, coll);
	put_be16(k + 4, slot);
	k[6] = p->kind;
	if (p->kind == SH_PID_U64) {
		put_be64(k + 7, p->num);
		return 15;
	}
	memcpy(k + 7, p->str, p->len);
	return 7 + (size_t)p->len;
}

/* Decodes the id part of a points key. */
static int point_key_decode(const uint8_t *k, size_t kl, uint16_t *slot,
			    sh_pid *p)
{
	if (kl < 8)
		return store_fail(SH_ECORRUPT, "points: key of %zu bytes", kl);
	*slot = get_be16(k + 4);
	if (*slot >= SH_SLOTS)
		return store_fail(SH_ECORRUPT, "points: slot %u out of range",
				  *slot);
	if (k[6] == SH_PID_U64 && kl == 15) {
		*p = sh_pid_u64(get_be64(k + 7));
		return SH_OK;
	}
	if (k[6] == SH_PID_STR &&
	    sh_pid_str((const char *)k + 7, kl - 7, p) == SH_OK)
		return SH_OK;
	return store_fail(SH_ECORRUPT, "points: bad point id in key");
}

static void graph_key(uint8_t *k, uint32_t coll, uint32_t iid, uint8_t kind,
		      uint8_t level)
{
	put_be32(k, coll);
	put_be32(k + 4, iid);
	k[8] = kind;
	k[9] = level;
}

/* ---- Values -------------------------------------------------------------- */

/* Decodes a points value. The payload pointer aliases v. */
static int point_decode(const uint8_t *v, size_t vl, sh_store_point *p)
{
	if (vl < POINT_HDR)
		return store_fail(SH_ECORRUPT, "points: record of %zu bytes",
				  vl);
	if (v[0] != SH_STORE_FORMAT)
		return store_fail(SH_ECORRUPT, "points: unknown format %u",
				  v[0]);
	if (v[1] & ~PF_DELETED)
		return store_fail(SH_ECORRUPT, "points: unknown flags 0x%x",
				  v[1]);
	p->deleted = (v[1] & PF_DELETED) != 0;
	p->version = get_le64(v + 2);
	p->iid = get_le32(v + 10);
	p->payload_len = get_le32(v + 14);
	if (p->payload_len > SH_STORE_MAX_PAYLOAD ||
	    p->payload_len != vl - POINT_HDR)
		return store_fail(
		    SH_ECORRUPT,
		    "points: payload length %zu in a record of %zu "
		    "bytes",
		    p->payload_len, vl);
	if (p->deleted && (p->payload_len || p->iid != SH_IID_NONE))
		return store_fail(SH_ECORRUPT,
				  "points: deleted record with data");
	p->payload = p->payload_len ? (char *)(v + POINT_HDR) : NULL;
	return SH_OK;
}

struct node_rec {
	uint32_t level;
	bool tombstone;
	sh_pid pid;
	uint32_t dim;
	const uint8_t *vec; /* dim LE floats, aliases the value */
};

/* Decodes a NODE value; want_dim 0 accepts any dimension. */
static int node_decode(const uint8_t *v, size_t vl, uint32_t want_dim,
		       struct node_rec *r)
{
	if (vl < NODE_HDR)
		return store_fail(SH_ECORRUPT,
				  "graph: NODE record of %zu bytes", vl);
	if (v[0] != SH_STORE_FORMAT)
		return store_fail(SH_ECORRUPT, "graph: NODE unknown format %u",
				  v[0]);
	r->level = v[1];
	if (r->level > SH_HNSW_MAX_LEVEL || v[2] > 1)
		return store_fail(SH_ECORRUPT, "graph: NODE bad level or flag");
	r->tombstone = v[2] != 0;
	uint8_t kind = v[3], len = v[4];
	size_t off = NODE_HDR + (size_t)len;
	if (vl < off + 4)
		return store_fail(SH_ECORRUPT, "graph: NODE record truncated");
	if (kind == SH_PID_U64 && len == 8) {
		uint64_t num = 0;
		for (int i = 7; i >= 0; i--)
			num = (num << 8) | v[NODE_HDR + i];
		r->pid = sh_pid_u64(num);
	} else if (kind != SH_PID_STR ||
		   sh_pid_str((const char *)v + NODE_HDR, len, &r->pid)) {
		return store_fail(SH_ECORRUPT, "graph: NODE bad point id");
	}
	r->dim = get_le32(v + off);
	off += 4;
	if (r->dim == 0 || r->dim > SH_HNSW_MAX_DIM ||
	    (want_dim && r->dim != want_dim))
		return store_fail(SH_ECORRUPT,
				  "graph: NODE dimension %u (want %u)", r->dim,
				  want_dim);
	if (vl != off + (size_t)r->dim * 4)
		return store_fail(SH_ECORRUPT,
				  "graph: NODE record of %zu bytes for dim %u",
				  vl, r->dim);
	r->vec = v + off;
	return SH_OK;
}

/* ---- Batches ------------------------------------------------------------- */

sh_store_batch *sh_store_batch_new(sh_store *st)
{
	sh_store_batch *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->st = st;
	b->wb = rocksdb_writebatch_create();
	if (!b->wb) {
		free(b);
		return NULL;
	}
	return b;
}

void sh_store_batch_free(sh_store_batch *b)
{
	if (!b)
		return;
	rocksdb_writebatch_destroy(b->wb);
	free(b->buf);
	free(b);
}

void sh_store_batch_clear(sh_store_batch *b)
{
	rocksdb_writebatch_clear(b->wb);
	b->err = SH_OK;
}

size_t sh_store_batch_count(const sh_store_batch *b)
{
	return (size_t)rocksdb_writebatch_count(b->wb);
}

/* Records the batch's first error. */
static int berr(sh_store_batch *b, int rc)
{
	if (rc && !b->err)
		b->err = rc;
	return rc;
}

static uint8_t *bbuf(sh_store_batch *b, size_t n)
{
	if (n > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		while (nc < n)
			nc *= 2;
		uint8_t *nb = realloc(b->buf, nc);
		if (!nb)
			return NULL;
		b->buf = nb;
		b->cap = nc;
	}
	return b->buf;
}

static int point_put(sh_store_batch *b, uint32_t coll, uint16_t slot,
		     const sh_pid *pid, uint64_t version, uint32_t iid,
		     uint8_t flags, const char *payload, size_t len)
{
	if (b->err)
		return b->err;
	if (coll == 0 || coll > SH_STORE_MAX_COLL_ID || slot >= SH_SLOTS ||
	    !pid_ok(pid) || (len && !payload))
		return berr(b,
			    store_fail(SH_EINVAL, "put point: bad argument"));
	if (len > SH_STORE_MAX_PAYLOAD)
		return berr(
		    b, store_fail(SH_ETOOBIG, "payload of %zu bytes", len));
	uint8_t k[POINT_KEY_MAX];
	size_t kl = point_key(k, coll, slot, pid);
	uint8_t *v = bbuf(b, POINT_HDR + len);
	if (!v)
		return berr(b, store_fail(SH_ENOMEM, "out of memory"));
	v[0] = SH_STORE_FORMAT;
	v[1] = flags;
	put_le64(v + 2, version);
	put_le32(v + 10, iid);
	put_le32(v + 14, (uint32_t)len);
	if (len)
		memcpy(v + POINT_HDR, payload, len);
	rocksdb_writebatch_put_cf(b->wb, b->st->cf[CF_POINTS], (const char *)k,
				  kl, (const char *)v, POINT_HDR + len);
	return SH_OK;
}

int sh_store_batch_put_point(sh_store_batch *b, uint32_t coll, uint16_t slot,
			     const sh_pid *pid, uint64_t version, uint32_t iid,
			     const char *payload, size_t len)
{
	if (iid == SH_IID_NONE && !b->err)
		return berr(b, store_fail(SH_EINVAL, "put point: no iid"));
	return point_put(b, coll, slot, pid, version, iid, 0, payload, len);
}

int sh_store_batch_delete_point(sh_store_batch *b, uint32_t coll, uint16_t slot,
				const sh_pid *pid, uint64_t version)
{
	return point_put(b, coll, slot, pid, version, SH_IID_NONE, PF_DELETED,
			 NULL, 0);
}

int sh_store_batch_erase_point(sh_store_batch *b, uint32_t coll, uint16_t slot,
			       const sh_pid *pid)
{
	if (b->err)
		return b->err;
	if (coll == 0 || coll > SH_STORE_MAX_COLL_ID || slot >= SH_SLOTS ||
	    !pid_ok(pid))
		return berr(b,
			    store_fail(SH_EINVAL, "erase point: bad argument"));
	uint8_t k[POINT_KEY_MAX];
	size_t kl = point_key(k, coll, slot, pid);
	rocksdb_writebatch_delete_cf(b->wb, b->st->cf[CF_POINTS],
				     (const char *)k, kl);
	return SH_OK;
}

static int change_one(sh_store_batch *b, uint32_t coll, uint32_t dim,
		      const sh_hnsw_change *c)
{
	rocksdb_column_family_handle_t *cf = b->st->cf[CF_GRAPH];
	uint8_t k[GRAPH_KEY_LEN], k2[8];
	uint8_t *v;
	if (c->kind != SH_CHANGE_ENTRY && c->iid >= SH_HNSW_MAX_NODES)
		return store_fail(SH_EINVAL, "change: iid %u out of range",
				  c->iid);
	switch (c->kind) {
	case SH_CHANGE_NODE:
		graph_key(k, coll, c->iid, GK_TOMB, 0);
		if (!c->vec) { /* re-sent only for its tombstone flag */
			if (c->tombstone)
				rocksdb_writebatch_put_cf(
				    b->wb, cf, (const char *)k, sizeof(k),
				    (const char[]){SH_STORE_FORMAT}, 1);
			else
				rocksdb_writebatch_delete_cf(
				    b->wb, cf, (const char *)k, sizeof(k));
			return SH_OK;
		}
		if (c->level > SH_HNSW_MAX_LEVEL || !pid_ok(c->pid))
			return store_fail(SH_EINVAL, "change: bad NODE record");
		{
			uint8_t pb[8];
			size_t pl;
			const void *pbytes = sh_pid_bytes(c->pid, pb, &pl);
			size_t vl = NODE_HDR + pl + 4 + (size_t)dim * 4;
			if (!(v = bbuf(b, vl)))
				return store_fail(SH_ENOMEM, "out of memory");
			v[0] = SH_STORE_FORMAT;
			v[1] = (uint8_t)c->level;
			v[2] = c->tombstone ? 1 : 0;
			v[3] = c->pid->kind;
			v[4] = (uint8_t)pl;
			memcpy(v + NODE_HDR, pbytes, pl);
			put_le32(v + NODE_HDR + pl, dim);
			put_floats(v + NODE_HDR + pl + 4, c->vec, dim);
			graph_key(k, coll, c->iid, GK_NODE, 0);
			rocksdb_writebatch_put_cf(b->wb, cf, (const char *)k,
						  sizeof(k), (const char *)v,
						  vl);
		}
		return SH_OK;
	case SH_CHANGE_LINKS: {
		if (c->level > SH_HNSW_MAX_LEVEL ||
		    c->nlinks > 2 * SH_HNSW_MAX_M || (c->nlinks && !c->links))
			return store_fail(SH_EINVAL,
					  "change: bad LINKS record");
		size_t vl = 5 + (size_t)c->nlinks * 4;
		if (!(v = bbuf(b, vl)))
			return store_fail(SH_ENOMEM, "out of memory");
		v[0] = SH_STORE_FORMAT;
		put_le32(v + 1, c->nlinks);
		for (uint32_t i = 0; i < c->nlinks; i++)
			put_le32(v + 5 + 4 * i, c->links[i]);
		graph_key(k, coll, c->iid, GK_LINKS, (uint8_t)c->level);
		rocksdb_writebatch_put_cf(b->wb, cf, (const char *)k, sizeof(k),
					  (const char *)v, vl);
		return SH_OK;
	}
	case SH_CHANGE_TOMBSTONE:
		graph_key(k, coll, c->iid, GK_TOMB, 0);
		rocksdb_writebatch_put_cf(b->wb, cf, (const char *)k, sizeof(k),
					  (const char[]){SH_STORE_FORMAT}, 1);
		return SH_OK;
	case SH_CHANGE_FREE:
		/* [coll][iid] .. [coll][iid + 1]: the TOMB, NODE and every
		 * LINKS key of the iid (iid + 1 <= ENTRY_IID, whose key is
		 * longer and so sorts after the end) */
		put_be32(k, coll);
		put_be32(k + 4, c->iid);
		put_be32(k2, coll);
		put_be32(k2 + 4, c->iid + 1);
		rocksdb_writebatch_delete_range_cf(b->wb, cf, (const char *)k,
						   8, (const char *)k2, 8);
		return SH_OK;
	case SH_CHANGE_ENTRY: {
		uint8_t ev[6];
		if (c->level > SH_HNSW_MAX_LEVEL)
			return store_fail(SH_EINVAL, "change: bad ENTRY level");
		ev[0] = SH_STORE_FORMAT;
		put_le32(ev + 1, c->iid);
		ev[5] = (uint8_t)c->level;
		graph_key(k, coll, ENTRY_IID, GK_ENTRY, 0);
		rocksdb_writebatch_put_cf(b->wb, cf, (const char *)k, sizeof(k),
					  (const char *)ev, sizeof(ev));
		return SH_OK;
	}
	}
	return store_fail(SH_EINVAL, "change: unknown kind %d", (int)c->kind);
}

int sh_store_batch_index_changes(sh_store_batch *b, uint32_t coll, uint32_t dim,
				 const sh_hnsw_change *c, size_t n)
{
	if (b->err)
		return b->err;
	if (coll == 0 || coll > SH_STORE_MAX_COLL_ID || dim == 0 ||
	    dim > SH_HNSW_MAX_DIM || (n && !c))
		return berr(
		    b, store_fail(SH_EINVAL, "index changes: bad argument"));
	for (size_t i = 0; i < n; i++) {
		int rc = change_one(b, coll, dim, &c[i]);
		if (rc)
			return berr(b, rc);
	}
	return SH_OK;
}

int sh_store_batch_commit(sh_store_batch *b)
{
	int rc = b->err;
	if (!rc && rocksdb_writebatch_count(b->wb) > 0) {
		char *rerr = NULL;
		rocksdb_write(b->st->db, b->st->wopts, b->wb, &rerr);
		if (rerr)
			rc = store_fail_rocks(rerr, "commit");
	}
	sh_store_batch_clear(b);
	return rc;
}

/* ---- Reads --------------------------------------------------------------- */

/* Point read of key k in cf: SH_OK with *ps (destroy it), SH_ENOTFOUND or
 * SH_EIO. */
static int get_pinned(sh_store *st, int cf, const uint8_t *k, size_t kl,
		      rocksdb_pinnableslice_t **ps)
{
	char *rerr = NULL;
	*ps = rocksdb_get_pinned_cf(st->db, st->ropts, st->cf[cf],
				    (const char *)k, kl, &rerr);
	if (rerr)
		return store_fail_rocks(rerr, "read");
	if (!*ps)
		return store_fail(SH_ENOTFOUND, "not found");
	return SH_OK;
}

int sh_store_get_point(sh_store *st, uint32_t coll, uint16_t slot,
		       const sh_pid *pid, sh_store_point *out)
{
	int rc;
	rocksdb_pinnableslice_t *ps = NULL;
	memset(out, 0, sizeof(*out));
	if (slot >= SH_SLOTS || !pid_ok(pid))
		return store_fail(SH_EINVAL, "get point: bad argument");
	uint8_t k[POINT_KEY_MAX];
	size_t kl = point_key(k, coll, slot, pid);
	if ((rc = get_pinned(st, CF_POINTS, k, kl, &ps)))
		return rc;
	size_t vl;
	const uint8_t *v =
	    (const uint8_t *)rocksdb_pinnableslice_value(ps, &vl);
	sh_store_point p;
	if ((rc = point_decode(v, vl, &p)))
		goto out;
	if (p.payload_len) {
		char *copy = malloc(p.payload_len + 1);
		if (!copy) {
			rc = store_fail(SH_ENOMEM, "out of memory");
			goto out;
		}
		memcpy(copy, p.payload, p.payload_len);
		copy[p.payload_len] = 0;
		p.payload = copy;
	}
	*out = p;
out:
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

void sh_store_point_clear(sh_store_point *p)
{
	free(p->payload);
	memset(p, 0, sizeof(*p));
}

int sh_store_check_version(sh_store *st, uint32_t coll, uint16_t slot,
			   const sh_pid *pid, uint64_t version,
			   uint64_t *stored)
{
	int rc;
	rocksdb_pinnableslice_t *ps = NULL;
	if (stored)
		*stored = 0;
	if (slot >= SH_SLOTS || !pid_ok(pid))
		return store_fail(SH_EINVAL, "check version: bad argument");
	uint8_t k[POINT_KEY_MAX];
	size_t kl = point_key(k, coll, slot, pid);
	rc = get_pinned(st, CF_POINTS, k, kl, &ps);
	if (rc == SH_ENOTFOUND)
		return SH_OK;
	if (rc)
		return rc;
	size_t vl;
	const uint8_t *v =
	    (const uint8_t *)rocksdb_pinnableslice_value(ps, &vl);
	sh_store_point p;
	if (!(rc = point_decode(v, vl, &p))) {
		if (stored)
			*stored = p.version;
		if (p.version > version)
			rc = store_fail(
			    SH_ESTALE,
			    "stale write: version %llu < stored %llu",
			    (unsigned long long)version,
			    (unsigned long long)p.version);
	}
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

int sh_store_get_vector(sh_store *st, uint32_t coll, uint32_t iid, uint32_t dim,
			float *out)
{
	int rc;
	rocksdb_pinnableslice_t *ps = NULL;
	if (dim == 0 || dim > SH_HNSW_MAX_DIM || !out)
		return store_fail(SH_EINVAL, "get vector: bad argument");
	uint8_t k[GRAPH_KEY_LEN];
	graph_key(k, coll, iid, GK_NODE, 0);
	if ((rc = get_pinned(st, CF_GRAPH, k, sizeof(k), &ps)))
		return rc;
	size_t vl;
	const uint8_t *v =
	    (const uint8_t *)rocksdb_pinnableslice_value(ps, &vl);
	struct node_rec r;
	if (!(rc = node_decode(v, vl, dim, &r)))
		get_floats(out, r.vec, dim);
	rocksdb_pinnableslice_destroy(ps);
	return rc;
}

/* A loader error: EINVAL from sh_hnsw_load_* means the records are bad. */
static int load_err(int rc, uint32_t coll, uint32_t iid, const char *what)
{
	if (rc == SH_ENOMEM)
		return store_fail(rc, "load: out of memory");
	return store_fail(SH_ECORRUPT,
			  "graph: collection %u iid %u: %s rejected (%s)", coll,
			  iid, what, sh_errname(rc));
}

int sh_store_load_index(sh_store *st, uint32_t coll, sh_hnsw *h)
{
	int rc = SH_OK;
	const uint32_t dim = sh_hnsw_params_of(h)->dim;
	if (coll == 0 || coll > SH_STORE_MAX_COLL_ID)
		return store_fail(SH_EINVAL, "load: bad collection id %u",
				  coll);
	uint8_t lo[4], hi[4];
	put_be32(lo, coll);
	put_be32(hi, coll + 1);
	float *vec = malloc((size_t)dim * sizeof(float));
	uint32_t *links = malloc(2 * SH_HNSW_MAX_M * sizeof(uint32_t));
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_iterator_t *it = NULL;
	if (!vec || !links || !ro) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto out;
	}
	/* one pass over the whole range: read ahead, do not churn the cache */
	rocksdb_readoptions_set_fill_cache(ro, 0);
	rocksdb_readoptions_set_readahead_size(ro, 4u << 20);
	rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, 4);
	it = rocksdb_create_iterator_cf(st->db, ro, st->cf[CF_GRAPH]);
	if (!it) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto out;
	}
	uint32_t tomb_iid = SH_IID_NONE; /* a TOMB key waiting for its NODE */
	bool have_entry = false;
	for (rocksdb_iter_seek(it, (const char *)lo, 4); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);
		if (kl != GRAPH_KEY_LEN || get_be32(k) != coll) {
			rc = store_fail(
			    SH_ECORRUPT,
			    "graph: collection %u: bad key of %zu bytes", coll,
			    kl);
			goto out;
		}
		uint32_t iid = get_be32(k + 4);
		uint8_t kind = k[8], level = k[9];
		if (tomb_iid != SH_IID_NONE &&
		    (kind != GK_NODE || iid != tomb_iid)) {
			rc =
			    store_fail(SH_ECORRUPT,
				       "graph: collection %u iid %u: tombstone "
				       "without a node",
				       coll, tomb_iid);
			goto out;
		}
		if (have_entry) {
			rc = store_fail(
			    SH_ECORRUPT,
			    "graph: collection %u: record after ENTRY", coll);
			goto out;
		}
		switch (kind) {
		case GK_TOMB:
			if (vl != 1 || v[0] != SH_STORE_FORMAT || level ||
			    iid >= SH_HNSW_MAX_NODES) {
				rc = store_fail(
				    SH_ECORRUPT,
				    "graph: collection %u iid %u: bad "
				    "TOMB record",
				    coll, iid);
				goto out;
			}
			tomb_iid = iid;
			break;
		case GK_NODE: {
			struct node_rec r;
			if (level || iid >= SH_HNSW_MAX_NODES) {
				rc = store_fail(
				    SH_ECORRUPT,
				    "graph: collection %u iid %u: bad "
				    "NODE key",
				    coll, iid);
				goto out;
			}
			if ((rc = node_decode(v, vl, dim, &r)))
				goto out;
			get_floats(vec, r.vec, dim);
			rc = sh_hnsw_load_node(h, iid, &r.pid, r.level,
					       r.tombstone || tomb_iid == iid,
					       vec);
			if (rc) {
				rc = load_err(rc, coll, iid, "NODE");
				goto out;
			}
			tomb_iid = SH_IID_NONE;
			break;
		}
		case GK_LINKS: {
			uint32_t n = vl >= 5 ? get_le32(v + 1) : 0;
			if (vl < 5 || v[0] != SH_STORE_FORMAT ||
			    n > 2 * SH_HNSW_MAX_M || vl != 5 + (size_t)n * 4) {
				rc = store_fail(
				    SH_ECORRUPT,
				    "graph: collection %u iid %u: bad "
				    "LINKS record",
				    coll, iid);
				goto out;
			}
			for (uint32_t i = 0; i < n; i++)
				links[i] = get_le32(v + 5 + 4 * i);
			rc = sh_hnsw_load_links(h, iid, level, links, n);
			if (rc) {
				rc = load_err(rc, coll, iid, "LINKS");
				goto out;
			}
			break;
		}
		case GK_ENTRY: {
			if (iid != ENTRY_IID || level || vl != 6 ||
			    v[0] != SH_STORE_FORMAT ||
			    v[5] > SH_HNSW_MAX_LEVEL) {
				rc = store_fail(
				    SH_ECORRUPT,
				    "graph: collection %u: bad ENTRY "
				    "record",
				    coll);
				goto out;
			}
			uint32_t e = get_le32(v + 1);
			if ((rc = sh_hnsw_load_entry(h, e, v[5]))) {
				rc = load_err(rc, coll, e, "ENTRY");
				goto out;
			}
			have_entry = true;
			break;
		}
		default:
			rc = store_fail(
			    SH_ECORRUPT,
			    "graph: collection %u iid %u: unknown record "
			    "kind %u",
			    coll, iid, kind);
			goto out;
		}
	}
	char *rerr = NULL;
	rocksdb_iter_get_error(it, &rerr);
	if (rerr) {
		rc = store_fail_rocks(rerr, "load index");
		goto out;
	}
	if (tomb_iid != SH_IID_NONE) {
		rc = store_fail(
		    SH_ECORRUPT,
		    "graph: collection %u iid %u: tombstone without a "
		    "node",
		    coll, tomb_iid);
		goto out;
	}
	if ((rc = sh_hnsw_load_finish(h)))
		rc = rc == SH_ENOMEM
			 ? store_fail(rc, "load: out of memory")
			 : store_fail(
			       SH_ECORRUPT,
			       "graph: collection %u: the records do not form "
			       "a valid index",
			       coll);
out:
	if (it)
		rocksdb_iter_destroy(it);
	if (ro)
		rocksdb_readoptions_destroy(ro);
	free(vec);
	free(links);
	return rc;
}

/* The scan behind sh_store_scan_points and sh_store_stream_points: one
 * snapshot, points in key order; with dim > 0 the vector of every live
 * point is read from the same snapshot (vec: dim floats of scratch). */
static int scan_range(sh_store *st, uint32_t coll, uint16_t slot_lo,
		      uint16_t slot_hi, uint32_t dim, sh_store_point_fn fn,
		      sh_store_stream_fn sfn, void *ctx)
{
	int rc = SH_OK;
	if (slot_lo > slot_hi || slot_hi >= SH_SLOTS || (!fn && !sfn) ||
	    coll == 0 || coll > SH_STORE_MAX_COLL_ID || dim > SH_HNSW_MAX_DIM)
		return store_fail(SH_EINVAL, "scan: bad slot range");
	uint8_t lo[6], hi[6];
	put_be32(lo, coll);
	put_be16(lo + 4, slot_lo);
	put_be32(hi, coll);
	put_be16(hi + 4, (uint16_t)(slot_hi + 1)); /* <= SH_SLOTS */
	const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(st->db);
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_readoptions_t *vo = dim ? rocksdb_readoptions_create() : NULL;
	float *vec = dim ? malloc(dim * sizeof(float)) : NULL;
	rocksdb_iterator_t *it = NULL;
	if (!snap || !ro || (dim && (!vo || !vec))) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto out;
	}
	rocksdb_readoptions_set_snapshot(ro, snap);
	rocksdb_readoptions_set_fill_cache(ro, 0);
	rocksdb_readoptions_set_readahead_size(ro, 2u << 20);
	rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, 6);
	if (vo) {
		rocksdb_readoptions_set_snapshot(vo, snap);
		rocksdb_readoptions_set_fill_cache(vo, 0);
	}
	it = rocksdb_create_iterator_cf(st->db, ro, st->cf[CF_POINTS]);
	if (!it) {
		rc = store_fail(SH_ENOMEM, "out of memory");
		goto out;
	}
	for (rocksdb_iter_seek(it, (const char *)lo, 6); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);
		uint16_t slot = 0;
		sh_pid pid;
		sh_store_point p;
		if (kl < 4 || get_be32(k) != coll) {
			rc = store_fail(SH_ECORRUPT,
					"points: key outside the range");
			goto out;
		}
		if ((rc = point_key_decode(k, kl, &slot, &pid)) ||
		    (rc = point_decode(v, vl, &p)))
			goto out;
		if (fn) {
			if ((rc = fn(ctx, slot, &pid, &p)))
				goto out;
			continue;
		}
		const float *pv = NULL;
		if (!p.deleted) {
			/* The vector as of the same snapshot: after it, the
			 * iid may have been freed and given to another
			 * point. */
			uint8_t gk[GRAPH_KEY_LEN];
			graph_key(gk, coll, p.iid, GK_NODE, 0);
			char *rerr = NULL;
			rocksdb_pinnableslice_t *ps = rocksdb_get_pinned_cf(
			    st->db, vo, st->cf[CF_GRAPH], (const char *)gk,
			    sizeof(gk), &rerr);
			if (rerr) {
				rc = store_fail_rocks(rerr, "stream: vector");
				goto out;
			}
			if (!ps) {
				rc = store_fail(SH_ECORRUPT,
						"points: live point without "
						"its graph node (iid %u)",
						p.iid);
				goto out;
			}
			size_t gl;
			const uint8_t *gv =
			    (const uint8_t *)rocksdb_pinnableslice_value(ps,
									 &gl);
			struct node_rec r;
			rc = node_decode(gv, gl, dim, &r);
			if (rc == SH_OK)
				get_floats(vec, r.vec, dim);
			rocksdb_pinnableslice_destroy(ps);
			if (rc)
				goto out;
			pv = vec;
		}
		if ((rc = sfn(ctx, slot, &pid, &p, pv)))
			goto out;
	}
	char *rerr = NULL;
	rocksdb_iter_get_error(it, &rerr);
	if (rerr)
		rc = store_fail_rocks(rerr, "scan");
out:
	if (it)
		rocksdb_iter_destroy(it);
	if (ro)
		rocksdb_readoptions_destroy(ro);
	if (vo)
		rocksdb_readoptions_destroy(vo);
	if (snap)
		rocksdb_release_snapshot(st->db, snap);
	free(vec);
	return rc;
}

int sh_store_scan_points(sh_store *st, uint32_t coll, uint16_t slot_lo,
			 uint16_t slot_hi, sh_store_point_fn fn, void *ctx)
{
	if (!fn)
		return store_fail(SH_EINVAL, "scan: no callback");
	return scan_range(st, coll, slot_lo, slot_hi, 0, fn, NULL, ctx);
}

int sh_store_stream_points(sh_store *st, uint32_t coll, uint16_t slot_lo,
			   uint16_t slot_hi, uint32_t dim,
			   sh_store_stream_fn fn, void *ctx)
{
	if (!fn || dim == 0)
		return store_fail(SH_EINVAL, "stream: bad argument");
	return scan_range(st, coll, slot_lo, slot_hi, dim, NULL, fn, ctx);
}
