/* One collection's partition on a node: see partition.h. */
#include "partition.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <roaring/roaring.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "hnsw_impl.h" /* hnsw_tls_get: liburcu thread registration */
#include "payload.h"
#include "slots.h"

/* What the residual check needs of a point, by iid. */
typedef struct pentry {
	sh_pid pid;
	cJSON *payload; /* NULL: none */
} pentry;

struct sh_partition {
	sh_store *st;
	sh_store_coll coll;
	uint32_t dim;
	sh_hnsw *h;

	pthread_mutex_t wmu;   /* the writer mutex */
	sh_store_batch *batch; /* the writer's batch (under wmu) */
	atomic_bool failed;    /* a commit failed: refuse everything */
	atomic_bool fail_next; /* test hook */

	pthread_rwlock_t rw; /* guards idx, map, mapcap */
	sh_payload_index *idx;
	pentry **map; /* iid -> entry, NULL when not live */
	size_t mapcap;

	/* Per slot: live points, and the presence bit (see
	 * sh_partition_slots_present). Written by the writer (under wmu),
	 * read by anyone with relaxed atomics. */
	_Atomic uint32_t *slot_live; /* SH_SLOTS counters */
	atomic_uint_fast64_t present[SH_SLOTS / 64];
};

/* ---- Slots --------------------------------------------------------------- */

/* Writer: a point is about to enter slot s. The bit is set before the
 * index can show the point, so a search that sees the bit clear cannot
 * find a point of that slot inserted later without it. */
static void slot_enter(sh_partition *p, uint16_t s)
{
	atomic_fetch_or_explicit(&p->present[s / 64], 1ull << (s % 64),
				 memory_order_seq_cst);
}

/* Writer: live points of slot s went up (+1) or down (-1). */
static void slot_count(sh_partition *p, uint16_t s, int delta)
{
	uint32_t v =
	    atomic_load_explicit(&p->slot_live[s], memory_order_relaxed);
	if (delta < 0 && v == 0)
		return;
	v = delta > 0 ? v + 1 : v - 1;
	atomic_store_explicit(&p->slot_live[s], v, memory_order_relaxed);
	if (v == 0)
		atomic_fetch_and_explicit(&p->present[s / 64],
					  ~(1ull << (s % 64)),
					  memory_order_relaxed);
}

uint64_t sh_partition_slot_points(const sh_partition *p, uint16_t slot)
{
	return atomic_load_explicit(&p->slot_live[slot], memory_order_relaxed);
}

void sh_partition_slots_present(const sh_partition *p, uint64_t *bits)
{
	sh_partition *m = (sh_partition *)p;
	for (size_t i = 0; i < SH_SLOTS / 64; i++)
		bits[i] |=
		    atomic_load_explicit(&m->present[i], memory_order_seq_cst);
}

/* ---- Helpers ------------------------------------------------------------- */

static void on_change(void *ctx, const sh_hnsw_change *c, size_t n)
{
	sh_partition *p = ctx;
	if (p->batch)
		sh_store_batch_index_changes(p->batch, p->coll.id, p->dim, c,
					     n);
}

static const float *fetch_vec(void *ctx, uint32_t iid, const sh_pid *pid,
			      float *scratch)
{
	(void)pid;
	sh_partition *p = ctx;
	if (sh_store_get_vector(p->st, p->coll.id, iid, p->dim, scratch))
		return NULL;
	return scratch;
}

/* Writer, rwlock held for writing. */
static int map_reserve(sh_partition *p, uint32_t iid)
{
	if (iid < p->mapcap)
		return SH_OK;
	size_t cap = p->mapcap ? p->mapcap : 1024;
	while (cap <= iid)
		cap *= 2;
	pentry **m = realloc(p->map, cap * sizeof(*m));
	if (!m)
		return SH_ENOMEM;
	memset(m + p->mapcap, 0, (cap - p->mapcap) * sizeof(*m));
	p->map = m;
	p->mapcap = cap;
	return SH_OK;
}

static void entry_free(pentry *e)
{
	if (!e)
		return;
	cJSON_Delete(e->payload);
	free(e);
}

/* Writer, rwlock held for writing: unindexes iid (if mapped). */
static void unindex_iid(sh_partition *p, uint32_t iid)
{
	if (iid == SH_IID_NONE || iid >= p->mapcap || !p->map[iid])
		return;
	pentry *e = p->map[iid];
	sh_payload_index_remove(p->idx, iid, e->payload);
	p->map[iid] = NULL;
	entry_free(e);
}

/* Writer, rwlock held for writing: indexes e under iid (takes e). */
static int index_iid(sh_partition *p, uint32_t iid, pentry *e)
{
	int rc = map_reserve(p, iid);
	if (rc) {
		entry_free(e);
		return rc;
	}
	rc = sh_payload_index_add(p->idx, iid, e->payload);
	if (rc) {
		sh_payload_index_remove(p->idx, iid, e->payload);
		entry_free(e);
		return rc;
	}
	p->map[iid] = e;
	return SH_OK;
}

static int commit(sh_partition *p)
{
	int rc;
	if (atomic_exchange(&p->fail_next, false)) {
		sh_store_batch_clear(p->batch);
		rc = SH_EIO;
	} else {
		rc = sh_store_batch_commit(p->batch);
	}
	if (rc) {
		atomic_store(&p->failed, true);
		return SH_EIO;
	}
	return SH_OK;
}

/* ---- Open / close -------------------------------------------------------- */

struct scan_ctx {
	sh_partition *p;
	int rc;
};

static int scan_point(void *ctx, uint16_t slot, const sh_pid *pid,
		      const sh_store_point *sp)
{
	struct scan_ctx *sc = ctx;
	if (sp->deleted)
		return 0;
	slot_enter(sc->p, slot);
	slot_count(sc->p, slot, +1);
	pentry *e = calloc(1, sizeof(*e));
	if (!e) {
		sc->rc = SH_ENOMEM;
		return 1;
	}
	e->pid = *pid;
	if (sp->payload_len) {
		e->payload =
		    cJSON_ParseWithLength(sp->payload, sp->payload_len);
		if (!e->payload || !cJSON_IsObject(e->payload)) {
			entry_free(e);
			sc->rc = SH_ECORRUPT;
			return 1;
		}
	}
	int rc = index_iid(sc->p, sp->iid, e);
	if (rc) {
		sc->rc = rc;
		return 1;
	}
	return 0;
}

int sh_partition_open(sh_store *st, uint32_t coll_id, const sh_store_coll *cfg,
		      sh_partition **out)
{
	if (!st || !out)
		return SH_EINVAL;
	*out = NULL;
	sh_partition *p = calloc(1, sizeof(*p));
	if (!p)
		return SH_ENOMEM;
	p->st = st;
	if (cfg) {
		p->coll = *cfg;
	} else if (sh_store_coll_get_id(st, coll_id, &p->coll) != SH_OK) {
		free(p);
		return SH_ENOCOLLECTION;
	}
	if (p->coll.id != coll_id) {
		free(p);
		return SH_EINVAL;
	}
	p->dim = p->coll.params.dim;
	p->slot_live = calloc(SH_SLOTS, sizeof(*p->slot_live));
	if (!p->slot_live) {
		free(p);
		return SH_ENOMEM;
	}
	pthread_mutex_init(&p->wmu, NULL);
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(
	    &ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&p->rw, &ra);
	pthread_rwlockattr_destroy(&ra);

	int rc = sh_hnsw_new(&p->coll.params, &p->h);
	if (rc)
		goto fail;
	rc = sh_store_load_index(st, coll_id, p->h);
	if (rc)
		goto fail;

	sh_payload_field fields[SH_STORE_MAX_INDEXES];
	for (uint32_t i = 0; i < p->coll.nindexes; i++) {
		fields[i].name = p->coll.indexes[i].field;
		fields[i].type = p->coll.indexes[i].type;
	}
	rc = sh_payload_index_new(fields, p->coll.nindexes, &p->idx);
	if (rc)
		goto fail;
	struct scan_ctx sc = {p, SH_OK};
	rc =
	    sh_store_scan_points(st, coll_id, 0, SH_SLOTS - 1, scan_point, &sc);
	if (rc) {
		rc = sc.rc ? sc.rc : rc;
		goto fail;
	}
	p->batch = sh_store_batch_new(st);
	if (!p->batch) {
		rc = SH_ENOMEM;
		goto fail;
	}
	sh_hnsw_set_change_fn(p->h, on_change, p);
	if (p->coll.params.storage == SH_STORAGE_INT8)
		sh_hnsw_set_fetch_fn(p->h, fetch_vec, p);
	*out = p;
	return SH_OK;
fail:
	sh_partition_close(p);
	return rc;
}

void sh_partition_close(sh_partition *p)
{
	if (!p)
		return;
	sh_hnsw_free(p->h);
	sh_payload_index_free(p->idx);
	for (size_t i = 0; i < p->mapcap; i++)
		entry_free(p->map[i]);
	free(p->map);
	sh_store_batch_free(p->batch);
	pthread_rwlock_destroy(&p->rw);
	pthread_mutex_destroy(&p->wmu);
	free((void *)p->slot_live);
	free(p);
}

const sh_store_coll *sh_partition_coll(const sh_partition *p)
{
	return &p->coll;
}

bool sh_partition_failed(const sh_partition *p)
{
	return atomic_load(&((sh_partition *)p)->failed);
}

void sh_partition_test_fail_next_commit(sh_partition *p)
{
	atomic_store(&p->fail_next, true);
}

/* ---- Writes -------------------------------------------------------------- */

static bool pid_ok(const sh_pid *id)
{
	if (id->kind == SH_PID_U64)
		return true;
	return id->kind == SH_PID_STR && id->len >= 1 &&
	       id->len <= SH_PID_MAX_STR && sh_utf8_valid(id->str, id->len);
}

/* The version stored for pts[i].id before point i: from the latest earlier
 * applied entry of the same request, else from the store. *have: a record
 * exists. */
static int prior_version(sh_partition *p, const sh_pid *ids,
			 const uint64_t *vers, const int *status, size_t i,
			 uint64_t *v, bool *have)
{
	for (size_t j = i; j-- > 0;) {
		if (status[j] == SH_OK && sh_pid_eq(&ids[j], &ids[i])) {
			*v = vers[j];
			*have = true;
			return SH_OK;
		}
	}
	sh_store_point sp;
	int rc = sh_store_get_point(p->st, p->coll.id, sh_slot_of(&ids[i]),
				    &ids[i], &sp);
	if (rc == SH_ENOTFOUND) {
		*have = false;
		*v = 0;
		return SH_OK;
	}
	if (rc)
		return rc == SH_ENOMEM ? rc : SH_EIO;
	*have = true;
	*v = sp.version;
	sh_store_point_clear(&sp);
	return SH_OK;
}

/* Ends a write request (writer mutex held): points from `reached` on get
 * rc, the batch is committed, the mutex released and the statuses copied
 * out. Returns rc, or the commit's error when it failed. */
static int end_write(sh_partition *p, int rc, int *st, size_t reached, size_t n,
		     int *status)
{
	for (size_t j = reached; j < n; j++)
		st[j] = rc;
	int crc = commit(p);
	pthread_mutex_unlock(&p->wmu);
	if (crc) {
		/* Nothing of the batch reached the store: no point may be
		 * reported applied (the memory holds them, but the partition
		 * now refuses everything until it is reopened from the
		 * store). Found by jepsen/ (set x disk-full): a full disk
		 * made the node acknowledge writes it never stored. */
		rc = crc;
		for (size_t j = 0; j < n; j++)
			st[j] = crc;
	}
	if (status)
		memcpy(status, st, n * sizeof(*st));
	return rc;
}

int sh_partition_upsert(sh_partition *p, const sh_partition_point *pts,
			size_t n, int *status)
{
	if (!p || (n && !pts))
		return SH_EINVAL;
	if (atomic_load(&p->failed))
		return SH_EIO;
	if (n == 0)
		return SH_OK;

	/* Validate and parse everything before changing anything. */
	cJSON **parsed = calloc(n, sizeof(*parsed));
	sh_pid *ids = malloc(n * sizeof(*ids));
	uint64_t *vers = malloc(n * sizeof(*vers));
	int *st = malloc(n * sizeof(*st));
	int rc = SH_OK;
	if (!parsed || !ids || !vers || !st) {
		rc = SH_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n && !rc; i++) {
		const sh_partition_point *pt = &pts[i];
		ids[i] = pt->id;
		vers[i] = pt->version;
		st[i] = SH_ESTALE;
		if (!pid_ok(&pt->id)) {
			rc = SH_EINVAL;
			break;
		}
		if (!pt->vec || pt->vec_len != p->dim) {
			rc = SH_EDIM;
			break;
		}
		for (uint32_t d = 0; d < p->dim; d++) {
			if (!isfinite(pt->vec[d])) {
				rc = SH_ENAN;
				break;
			}
		}
		if (rc)
			break;
		if (pt->payload_json) {
			if (pt->payload_len > SH_STORE_MAX_PAYLOAD) {
				rc = SH_ETOOBIG;
				break;
			}
			parsed[i] = cJSON_ParseWithLength(pt->payload_json,
							  pt->payload_len);
			if (!parsed[i] || !cJSON_IsObject(parsed[i])) {
				rc = SH_EINVAL;
				break;
			}
		}
	}
	if (rc)
		goto out;

	pthread_mutex_lock(&p->wmu);
	if (atomic_load(&p->failed)) {
		pthread_mutex_unlock(&p->wmu);
		rc = SH_EIO;
		goto out;
	}
	size_t i;
	for (i = 0; i < n; i++) {
		const sh_partition_point *pt = &pts[i];
		uint64_t v;
		bool have;
		rc = prior_version(p, ids, vers, st, i, &v, &have);
		if (rc)
			break;
		if (have && pt->version < v) {
			st[i] = SH_ESTALE;
			continue;
		}
		pentry *e = calloc(1, sizeof(*e));
		if (!e) {
			rc = SH_ENOMEM;
			break;
		}
		e->pid = pt->id;
		e->payload = parsed[i];
		parsed[i] = NULL;
		uint32_t iid, old;
		uint16_t slot = sh_slot_of(&pt->id);
		slot_enter(p, slot);
		rc = sh_hnsw_upsert(p->h, &pt->id, pt->vec, &iid, &old);
		if (rc) {
			entry_free(e);
			break;
		}
		if (old == SH_IID_NONE)
			slot_count(p, slot, +1);
		pthread_rwlock_wrlock(&p->rw);
		unindex_iid(p, old);
		rc = index_iid(p, iid, e);
		pthread_rwlock_unlock(&p->rw);
		if (rc) {
			/* The point is in the graph but not in the payload
			 * index: take it out of the graph again. */
			sh_hnsw_delete(p->h, &pt->id, NULL);
			slot_count(p, slot, -1);
			sh_store_batch_delete_point(p->batch, p->coll.id,
						    sh_slot_of(&pt->id),
						    &pt->id, pt->version);
			break;
		}
		sh_store_batch_put_point(
		    p->batch, p->coll.id, sh_slot_of(&pt->id), &pt->id,
		    pt->version, iid, pt->payload_json,
		    pt->payload_json ? pt->payload_len : 0);
		st[i] = SH_OK;
	}
	rc = end_write(p, rc, st, i, n, status);
out:
	if (parsed)
		for (size_t j = 0; j < n; j++)
			cJSON_Delete(parsed[j]);
	free(parsed);
	free(ids);
	free(vers);
	free(st);
	return rc;
}

int sh_partition_delete(sh_partition *p, const sh_pid *ids,
			const uint64_t *versions, size_t n, int *status)
{
	if (!p || (n && !ids))
		return SH_EINVAL;
	if (atomic_load(&p->failed))
		return SH_EIO;
	for (size_t i = 0; i < n; i++)
		if (!pid_ok(&ids[i]))
			return SH_EINVAL;
	if (n == 0)
		return SH_OK;
	uint64_t *vers = malloc(n * sizeof(*vers));
	int *st = malloc(n * sizeof(*st));
	int rc = SH_OK;
	if (!vers || !st) {
		rc = SH_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		vers[i] = versions ? versions[i] : 0;
		st[i] = SH_ESTALE;
	}
	pthread_mutex_lock(&p->wmu);
	if (atomic_load(&p->failed)) {
		pthread_mutex_unlock(&p->wmu);
		rc = SH_EIO;
		goto out;
	}
	size_t i;
	for (i = 0; i < n; i++) {
		uint64_t v;
		bool have;
		rc = prior_version(p, ids, vers, st, i, &v, &have);
		if (rc)
			break;
		if (have && vers[i] < v)
			continue;
		uint32_t iid = SH_IID_NONE;
		st[i] = SH_ENOTFOUND;
		if (sh_hnsw_delete(p->h, &ids[i], &iid) == SH_OK) {
			pthread_rwlock_wrlock(&p->rw);
			unindex_iid(p, iid);
			pthread_rwlock_unlock(&p->rw);
			slot_count(p, sh_slot_of(&ids[i]), -1);
			st[i] = SH_OK;
		}
		sh_store_batch_delete_point(p->batch, p->coll.id,
					    sh_slot_of(&ids[i]), &ids[i],
					    vers[i]);
	}
	rc = end_write(p, rc, st, i, n, status);
out:
	free(vers);
	free(st);
	return rc;
}

int sh_partition_maybe_vacuum(sh_partition *p, double ratio, bool *ran)
{
	if (ran)
		*ran = false;
	if (!p)
		return SH_EINVAL;
	if (atomic_load(&p->failed))
		return SH_EIO;
	sh_hnsw_info info;
	sh_hnsw_info_get(p->h, &info);
	uint64_t all = info.live + info.tombstones;
	if (info.tombstones == 0 ||
	    (double)info.tombstones <= ratio * (double)all)
		return SH_OK;
	pthread_mutex_lock(&p->wmu);
	int rc = SH_EIO;
	if (!atomic_load(&p->failed)) {
		rc = sh_hnsw_vacuum(p->h, NULL);
		/* Whatever the vacuum changed before an error was reported
		 * through the change log: commit it. */
		int crc = commit(p);
		if (crc)
			rc = crc;
		else if (ran && !rc)
			*ran = true;
	}
	pthread_mutex_unlock(&p->wmu);
	return rc;
}

/* ---- Dropping slots ------------------------------------------------------ */

/* Records erased per batch: bounds one WriteBatch and how long the writer
 * mutex is held at a time. */
#define DROP_CHUNK 1024

struct drop_item {
	uint16_t slot;
	bool live;
	sh_pid pid;
};

struct drop_ctx {
	struct drop_item *items;
	size_t n;
};

static int drop_collect(void *ctx, uint16_t slot, const sh_pid *pid,
			const sh_store_point *sp)
{
	struct drop_ctx *dc = ctx;
	dc->items[dc->n].slot = slot;
	dc->items[dc->n].live = !sp->deleted;
	dc->items[dc->n].pid = *pid;
	return ++dc->n == DROP_CHUNK ? 1 : 0;
}

int sh_partition_drop_slots(sh_partition *p, const uint64_t *slots,
			    uint64_t *removed)
{
	if (removed)
		*removed = 0;
	if (!p || !slots)
		return SH_EINVAL;
	if (atomic_load(&p->failed))
		return SH_EIO;
	struct drop_ctx dc = {malloc(DROP_CHUNK * sizeof(struct drop_item)), 0};
	if (!dc.items)
		return SH_ENOMEM;
	int rc = SH_OK;
	for (uint32_t lo = 0; lo < SH_SLOTS && rc == SH_OK; lo++) {
		if (!((slots[lo / 64] >> (lo % 64)) & 1))
			continue;
		uint32_t hi = lo;
		while (hi + 1 < SH_SLOTS &&
		       ((slots[(hi + 1) / 64] >> ((hi + 1) % 64)) & 1))
			hi++;
		/* Erased records are gone from the next scan, which starts
		 * at the slot the last chunk ended in. */
		uint32_t from = lo;
		for (;;) {
			dc.n = 0;
			int src = sh_store_scan_points(
			    p->st, p->coll.id, (uint16_t)from, (uint16_t)hi,
			    drop_collect, &dc);
			if (src != SH_OK && src != 1) {
				rc = src;
				break;
			}
			if (dc.n == 0)
				break;
			pthread_mutex_lock(&p->wmu);
			for (size_t i = 0; i < dc.n; i++) {
				struct drop_item *it = &dc.items[i];
				uint32_t iid = SH_IID_NONE;
				if (it->live && sh_hnsw_delete(p->h, &it->pid,
							       &iid) == SH_OK) {
					pthread_rwlock_wrlock(&p->rw);
					unindex_iid(p, iid);
					pthread_rwlock_unlock(&p->rw);
					slot_count(p, it->slot, -1);
				}
				sh_store_batch_erase_point(p->batch, p->coll.id,
							   it->slot, &it->pid);
			}
			int crc = commit(p);
			pthread_mutex_unlock(&p->wmu);
			if (crc) {
				rc = crc;
				break;
			}
			if (removed)
				*removed += dc.n;
			from = dc.items[dc.n - 1].slot;
			if (dc.n < DROP_CHUNK)
				break;
		}
		lo = hi;
	}
	free(dc.items);
	return rc;
}

/* ---- Reads --------------------------------------------------------------- */

void sh_partition_record_clear(sh_partition_record *r)
{
	if (!r)
		return;
	free(r->payload);
	free(r->vector);
	memset(r, 0, sizeof(*r));
}

int sh_partition_get(sh_partition *p, const sh_pid *id, bool with_vector,
		     sh_partition_record *out)
{
	if (!out)
		return SH_EINVAL;
	memset(out, 0, sizeof(*out));
	if (!p || !id || !pid_ok(id))
		return SH_EINVAL;
	if (atomic_load(&p->failed))
		return SH_EIO;
	for (int attempt = 0; attempt < 3; attempt++) {
		sh_store_point sp;
		int rc = sh_store_get_point(p->st, p->coll.id, sh_slot_of(id),
					    id, &sp);
		if (rc)
			return rc;
		if (sp.deleted) {
			sh_store_point_clear(&sp);
			return SH_ENOTFOUND;
		}
		out->version = sp.version;
		out->payload = sp.payload;
		out->payload_len = sp.payload_len;
		if (!with_vector)
			return SH_OK;
		out->vector = malloc(p->dim * sizeof(float));
		if (!out->vector) {
			sh_partition_record_clear(out);
			return SH_ENOMEM;
		}
		rc = sh_store_get_vector(p->st, p->coll.id, sp.iid, p->dim,
					 out->vector);
		if (rc == SH_OK)
			return SH_OK;
		sh_partition_record_clear(out);
		/* The node was replaced and vacuumed between the two reads:
		 * read the record again. */
		if (rc != SH_ENOTFOUND)
			return rc;
	}
	return SH_EIO;
}

struct resid_ctx {
	sh_partition *p;
	const sh_filter *f;
};

static bool residual(void *ctx, uint32_t iid)
{
	struct resid_ctx *rcx = ctx;
	sh_partition *p = rcx->p;
	bool pass = false;
	pthread_rwlock_rdlock(&p->rw);
	if (iid < p->mapcap && p->map[iid]) {
		const pentry *e = p->map[iid];
		pass = sh_filter_eval(rcx->f, &e->pid, e->payload);
	}
	pthread_rwlock_unlock(&p->rw);
	return pass;
}

void sh_partition_hits_clear(sh_partition_hit *hits, size_t n)
{
	if (!hits)
		return;
	for (size_t i = 0; i < n; i++) {
		free(hits[i].payload);
		hits[i].payload = NULL;
		hits[i].payload_len = 0;
	}
}

void sh_partition_info(const sh_partition *p, sh_hnsw_info *out)
{
	sh_hnsw_info_get(p->h, out);
}

int sh_partition_search(sh_partition *p, const float *q, size_t k, size_t ef,
			const sh_filter *f, bool with_payload,
			sh_partition_hit *out, size_t *nout,
			sh_hnsw_search_stats *st)
{
	return sh_partition_search_ex(
	    p, q, k, ef, f, with_payload ? SH_PARTITION_WITH_PAYLOAD : 0, out,
	    nout, st);
}

int sh_partition_search_ex(sh_partition *p, const float *q, size_t k, size_t ef,
			   const sh_filter *f, unsigned flags,
			   sh_partition_hit *out, size_t *nout,
			   sh_hnsw_search_stats *st)
{
	return sh_partition_search_slots(p, q, k, ef, f, flags, NULL, out, nout,
					 st);
}

bool sh_partition_outside_slots(const sh_partition *p, const uint64_t *slots)
{
	uint64_t pres[SH_SLOTS / 64];
	memset(pres, 0, sizeof(pres));
	sh_partition_slots_present(p, pres);
	for (size_t i = 0; i < SH_SLOTS / 64; i++)
		if (pres[i] & ~slots[i])
			return true;
	return false;
}

/* The share of p's live points in `slots`, for the planner's estimate. */
static double slots_share(const sh_partition *p, const uint64_t *slots)
{
	uint64_t in = 0, all = 0;
	for (uint32_t s = 0; s < SH_SLOTS; s++) {
		uint64_t c = atomic_load_explicit(&p->slot_live[s],
						  memory_order_relaxed);
		all += c;
		if ((slots[s / 64] >> (s % 64)) & 1)
			in += c;
	}
	return all ? (double)in / (double)all : 0.0;
}

struct slot_ctx {
	sh_partition *p;
	const uint64_t *slots;
	struct resid_ctx *resid; /* also checked when set */
};

/* Candidate check: the point's slot is in the set (and it passes the
 * residual filter, if any). */
static bool slot_pass(void *ctx, uint32_t iid)
{
	struct slot_ctx *sc = ctx;
	sh_pid pid;
	if (sh_hnsw_pid_of(sc->p->h, iid, &pid) != SH_OK)
		return false;
	uint16_t s = sh_slot_of(&pid);
	if (!((sc->slots[s / 64] >> (s % 64)) & 1))
		return false;
	return !sc->resid || residual(sc->resid, iid);
}

int sh_partition_search_slots(sh_partition *p, const float *q, size_t k,
			      size_t ef, const sh_filter *f, unsigned flags,
			      const uint64_t *slots, sh_partition_hit *out,
			      size_t *nout, sh_hnsw_search_stats *st)
{
	bool with_payload = flags & SH_PARTITION_WITH_PAYLOAD;
	bool exact = flags & SH_PARTITION_EXACT;
	if (!p || !out || !nout)
		return SH_EINVAL;
	*nout = 0;
	if (!q)
		return SH_EDIM;
	if (k == 0 || k > SH_HNSW_MAX_EF)
		return SH_EINVAL;
	if (atomic_load(&p->failed))
		return SH_EIO;
	sh_hnsw_hit *hits = malloc(k * sizeof(*hits));
	if (!hits)
		return SH_ENOMEM;

	sh_filter_plan plan;
	memset(&plan, 0, sizeof(plan));
	sh_hnsw_filter hf;
	memset(&hf, 0, sizeof(hf));
	struct resid_ctx rcx = {p, f};
	bool filtered = f && !sh_filter_is_empty(f);
	int rc = SH_OK;
	if (filtered) {
		/* Plan and search in one read-side section (see "The allow
		 * bitmap" in partition.h). Registers the thread first. */
		if (!hnsw_tls_get()) {
			free(hits);
			return SH_ENOMEM;
		}
		urcu_memb_read_lock();
		pthread_rwlock_rdlock(&p->rw);
		rc = sh_payload_index_plan(
		    p->idx, f, sh_payload_index_count(p->idx), &plan);
		pthread_rwlock_unlock(&p->rw);
		if (rc) {
			urcu_memb_read_unlock();
			free(hits);
			return rc;
		}
		hf.allow = plan.allow;
		hf.fn = plan.residual ? residual : NULL;
		hf.ctx = &rcx;
		hf.est_pass = plan.est_pass;
	}
	/* A slot restriction the data makes necessary joins the filter as a
	 * per-candidate check (chained before the residual one). */
	struct slot_ctx scx = {p, slots, plan.residual ? &rcx : NULL};
	bool by_slot = slots != NULL;
	if (by_slot) {
		double share = slots_share(p, slots);
		uint64_t base =
		    filtered ? plan.est_pass : sh_payload_index_count(p->idx);
		hf.fn = slot_pass;
		hf.ctx = &scx;
		hf.est_pass = (uint64_t)((double)base * share) + 1;
		if (filtered && !plan.residual && plan.allow)
			hf.est_pass = 0; /* the index counts the bitmap */
	}
	size_t nh = 0;
	if (filtered && plan.est_pass == 0 && !plan.residual) {
		/* Nothing can pass. */
		if (st) {
			memset(st, 0, sizeof(*st));
			st->plan = SH_PLAN_EXACT_SCAN;
		}
	} else {
		if (exact)
			hf.force_plan = 1 + SH_PLAN_EXACT_SCAN;
		rc = sh_hnsw_search(p->h, q, k, ef,
				    filtered || exact || by_slot ? &hf : NULL,
				    hits, &nh, st);
	}
	if (filtered)
		urcu_memb_read_unlock();
	sh_filter_plan_clear(&plan);
	if (rc) {
		free(hits);
		return rc;
	}
	/* With payloads, a hit deleted between the search and the read of
	 * its record is left out: it is gone, and a hit without its payload
	 * would be a torn result. */
	size_t j = 0;
	for (size_t i = 0; i < nh; i++) {
		sh_partition_hit *o = &out[j];
		o->id = hits[i].pid;
		o->dist = hits[i].dist;
		o->payload = NULL;
		o->payload_len = 0;
		o->version = 0;
		if (!with_payload) {
			j++;
			continue;
		}
		sh_store_point sp;
		int grc = sh_store_get_point(p->st, p->coll.id,
					     sh_slot_of(&hits[i].pid),
					     &hits[i].pid, &sp);
		if (grc == SH_OK && !sp.deleted) {
			o->payload = sp.payload;
			o->payload_len = sp.payload_len;
			o->version = sp.version;
			j++;
		} else if (grc == SH_OK || grc == SH_ENOTFOUND) {
			sh_store_point_clear(&sp);
		} else {
			sh_partition_hits_clear(out, j);
			free(hits);
			return grc;
		}
	}
	nh = j;
	*nout = nh;
	free(hits);
	return SH_OK;
}

static bool count_one(uint32_t iid, void *ctx)
{
	void **a = ctx;
	struct resid_ctx *rcx = a[0];
	uint64_t *c = a[1];
	sh_partition *p = rcx->p;
	if (iid < p->mapcap && p->map[iid] &&
	    sh_filter_eval(rcx->f, &p->map[iid]->pid, p->map[iid]->payload))
		(*c)++;
	return true;
}

/* count_one with a slot set: the point must be in it too. */
static bool count_one_slots(uint32_t iid, void *ctx)
{
	void **a = ctx;
	struct resid_ctx *rcx = a[0];
	uint64_t *c = a[1];
	const uint64_t *slots = a[2];
	sh_partition *p = rcx->p;
	if (iid >= p->mapcap || !p->map[iid])
		return true;
	uint16_t s = sh_slot_of(&p->map[iid]->pid);
	if (((slots[s / 64] >> (s % 64)) & 1) &&
	    (!rcx->f ||
	     sh_filter_eval(rcx->f, &p->map[iid]->pid, p->map[iid]->payload)))
		(*c)++;
	return true;
}

int sh_partition_count_slots(sh_partition *p, const sh_filter *f,
			     const uint64_t *slots, uint64_t *out)
{
	if (!p || !out || !slots)
		return SH_EINVAL;
	*out = 0;
	if (atomic_load(&p->failed))
		return SH_EIO;
	bool filtered = f && !sh_filter_is_empty(f);
	if (!filtered) {
		/* The per-slot counters are exact for live points. */
		for (uint32_t s = 0; s < SH_SLOTS; s++)
			if ((slots[s / 64] >> (s % 64)) & 1)
				*out +=
				    sh_partition_slot_points(p, (uint16_t)s);
		return SH_OK;
	}
	int rc;
	pthread_rwlock_rdlock(&p->rw);
	sh_filter_plan plan;
	rc = sh_payload_index_plan(p->idx, f, sh_payload_index_count(p->idx),
				   &plan);
	if (rc == SH_OK) {
		struct resid_ctx rcx = {p, plan.residual ? f : NULL};
		uint64_t c = 0;
		void *a[3] = {&rcx, &c, (void *)slots};
		if (plan.allow)
			roaring_iterate(plan.allow, count_one_slots, a);
		else
			for (size_t i = 0; i < p->mapcap; i++)
				count_one_slots((uint32_t)i, a);
		*out = c;
		sh_filter_plan_clear(&plan);
	}
	pthread_rwlock_unlock(&p->rw);
	return rc;
}

int sh_partition_count(sh_partition *p, const sh_filter *f, uint64_t *out)
{
	if (!p || !out)
		return SH_EINVAL;
	*out = 0;
	if (atomic_load(&p->failed))
		return SH_EIO;
	int rc = SH_OK;
	pthread_rwlock_rdlock(&p->rw);
	uint64_t live = sh_payload_index_count(p->idx);
	if (!f || sh_filter_is_empty(f)) {
		*out = live;
	} else {
		sh_filter_plan plan;
		rc = sh_payload_index_plan(p->idx, f, live, &plan);
		if (rc == SH_OK) {
			if (!plan.residual) {
				*out = plan.allow
					   ? roaring_bitmap_get_cardinality(
						 plan.allow)
					   : live;
			} else {
				struct resid_ctx rcx = {p, f};
				uint64_t c = 0;
				void *a[2] = {&rcx, &c};
				if (plan.allow) {
					roaring_iterate(plan.allow, count_one,
							a);
				} else {
					for (size_t i = 0; i < p->mapcap; i++)
						count_one((uint32_t)i, a);
				}
				*out = c;
			}
			sh_filter_plan_clear(&plan);
		}
	}
	pthread_rwlock_unlock(&p->rw);
	return rc;
}

/* ---- Scroll -------------------------------------------------------------- */

/* The order of ids in the points CF's keys (store.c: kind, then 8 BE bytes
 * or the string bytes). */
static int key_cmp(const sh_pid *a, const sh_pid *b)
{
	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	if (a->kind == SH_PID_U64)
		return a->num < b->num ? -1 : a->num > b->num;
	size_t n = a->len < b->len ? a->len : b->len;
	int c = memcmp(a->str, b->str, n);
	if (c)
		return c;
	return a->len < b->len ? -1 : a->len > b->len;
}

struct scroll_ctx {
	const sh_filter *f;
	sh_partition_cursor *cur;
	size_t limit, n;
	sh_partition_scroll_fn fn;
	void *ctx;
	int rc;
	bool full;
};

static int scroll_point(void *ctx, uint16_t slot, const sh_pid *pid,
			const sh_store_point *sp)
{
	struct scroll_ctx *sc = ctx;
	if (sp->deleted)
		return 0;
	if (sc->cur->started && slot == sc->cur->slot &&
	    key_cmp(pid, &sc->cur->id) < 0)
		return 0;
	if (sc->f) {
		cJSON *pl = NULL;
		if (sp->payload_len) {
			pl =
			    cJSON_ParseWithLength(sp->payload, sp->payload_len);
			if (!pl) {
				sc->rc = SH_ECORRUPT;
				return 1;
			}
		}
		bool pass = sh_filter_eval(sc->f, pid, pl);
		cJSON_Delete(pl);
		if (!pass)
			return 0;
	}
	if (sc->n == sc->limit) {
		sc->cur->started = true;
		sc->cur->slot = slot;
		sc->cur->id = *pid;
		sc->full = true;
		return 1;
	}
	int rc = sc->fn(sc->ctx, pid, sp->version,
			sp->payload_len ? sp->payload : NULL, sp->payload_len);
	if (rc == SH_PARTITION_SCROLL_SKIP)
		return 0;
	if (rc) {
		sc->rc = rc;
		return 1;
	}
	sc->n++;
	return 0;
}

int sh_partition_scroll(sh_partition *p, const sh_filter *f,
			sh_partition_cursor *cur, size_t limit,
			sh_partition_scroll_fn fn, void *ctx)
{
	return sh_partition_scroll_to(p, f, cur, SH_SLOTS - 1, limit, fn, ctx);
}

int sh_partition_scroll_to(sh_partition *p, const sh_filter *f,
			   sh_partition_cursor *cur, uint16_t last_slot,
			   size_t limit, sh_partition_scroll_fn fn, void *ctx)
{
	if (!p || !cur || !fn || limit == 0 || last_slot >= SH_SLOTS)
		return SH_EINVAL;
	if (atomic_load(&p->failed))
		return SH_EIO;
	if (cur->done)
		return SH_OK;
	struct scroll_ctx sc = {
	    .f = f && !sh_filter_is_empty(f) ? f : NULL,
	    .cur = cur,
	    .limit = limit,
	    .fn = fn,
	    .ctx = ctx,
	};
	uint16_t from = cur->started ? cur->slot : 0;
	if (from > last_slot) {
		cur->done = true;
		return SH_OK;
	}
	int rc = sh_store_scan_points(p->st, p->coll.id, from, last_slot,
				      scroll_point, &sc);
	if (sc.full)
		return SH_OK;
	if (rc)
		return sc.rc ? sc.rc : rc;
	cur->done = true;
	return SH_OK;
}
