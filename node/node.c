/* The shard node's core: collection table, slots, request dispatch,
 * metrics. See node.h. The operations themselves are in node_ops.c. */
#include "node_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatch.h"
#include "log.h"
#include "shoal_config.h"

/* ---- Collection table ---------------------------------------------------- */

struct coll_entry *coll_get_id(sh_node *n, uint32_t id)
{
	struct coll_entry *e = NULL;
	pthread_rwlock_rdlock(&n->tlock);
	for (size_t i = 0; i < n->ncolls; i++)
		if (n->colls[i]->id == id) {
			e = n->colls[i];
			pthread_rwlock_rdlock(&e->use);
			break;
		}
	pthread_rwlock_unlock(&n->tlock);
	return e;
}

struct coll_entry *coll_get(sh_node *n, const char *name)
{
	struct coll_entry *e = NULL;
	pthread_rwlock_rdlock(&n->tlock);
	for (size_t i = 0; i < n->ncolls; i++)
		if (strcmp(n->colls[i]->name, name) == 0) {
			e = n->colls[i];
			pthread_rwlock_rdlock(&e->use);
			break;
		}
	pthread_rwlock_unlock(&n->tlock);
	return e;
}

void coll_put(struct coll_entry *e)
{
	if (e)
		pthread_rwlock_unlock(&e->use);
}

static void entry_free(struct coll_entry *e)
{
	if (!e)
		return;
	sh_partition_close(e->p);
	pthread_rwlock_destroy(&e->use);
	free(e);
}

/* Opens collection c and adds it to the table (the caller holds ddl). */
static int table_add(sh_node *n, const sh_store_coll *c, char *err,
		     size_t errlen)
{
	struct coll_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	snprintf(e->name, sizeof(e->name), "%s", c->name);
	e->id = c->id;
	pthread_rwlock_init(&e->use, NULL);
	int rc = sh_partition_open(n->st, c->id, c, &e->p);
	if (rc) {
		entry_free(e);
		return sh_errf(err, errlen, rc, "collection %s: %s", c->name,
			       sh_store_last_error());
	}
	pthread_rwlock_wrlock(&n->tlock);
	if (n->ncolls == n->capcolls) {
		size_t cap = n->capcolls ? 2 * n->capcolls : 8;
		struct coll_entry **t = realloc(n->colls, cap * sizeof(*t));
		if (!t) {
			pthread_rwlock_unlock(&n->tlock);
			entry_free(e);
			return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		}
		n->colls = t;
		n->capcolls = cap;
	}
	n->colls[n->ncolls++] = e;
	pthread_rwlock_unlock(&n->tlock);
	return SH_OK;
}

/* Removes collection name from the table and returns its entry once no
 * request holds it (the caller holds ddl). NULL when there is none. */
static struct coll_entry *table_take(sh_node *n, const char *name)
{
	struct coll_entry *e = NULL;
	pthread_rwlock_wrlock(&n->tlock);
	for (size_t i = 0; i < n->ncolls; i++)
		if (strcmp(n->colls[i]->name, name) == 0) {
			e = n->colls[i];
			n->colls[i] = n->colls[--n->ncolls];
			break;
		}
	pthread_rwlock_unlock(&n->tlock);
	if (e) {
		/* wait for the requests that hold it (a move's copy job
		 * holding it sees `dropping` and lets go) */
		atomic_store(&e->dropping, true);
		pthread_rwlock_wrlock(&e->use);
		pthread_rwlock_unlock(&e->use);
	}
	return e;
}

int node_table_create(sh_node *n, const char *json, char *err, size_t errlen)
{
	pthread_mutex_lock(&n->ddl);
	uint32_t id;
	int rc = sh_store_coll_create(n->st, json, &id);
	if (rc) {
		rc = sh_errf(err, errlen, rc, "create_collection: %s",
			     sh_store_last_error());
	} else {
		sh_store_coll c;
		rc = sh_store_coll_get_id(n->st, id, &c);
		if (rc == SH_OK)
			rc = table_add(n, &c, err, errlen);
		if (rc) /* do not leave a collection nobody serves */
			sh_store_coll_drop(n->st, id);
		else
			sh_info("node", "collection %s created (id %u, dim %u)",
				c.name, id, c.params.dim);
	}
	pthread_mutex_unlock(&n->ddl);
	return rc;
}

int node_table_drop(sh_node *n, const char *name, char *err, size_t errlen)
{
	pthread_mutex_lock(&n->ddl);
	int rc = SH_OK;
	struct coll_entry *e = table_take(n, name);
	if (!e) {
		rc = sh_errf(err, errlen, SH_ENOCOLLECTION,
			     "collection \"%s\" does not exist", name);
	} else {
		/* The partition's writer is idle (no request holds it), so
		 * no batch can follow the drop. */
		uint32_t id = e->id;
		entry_free(e);
		rc = sh_store_coll_drop(n->st, id);
		if (rc)
			rc = sh_errf(err, errlen, rc, "drop_collection: %s",
				     sh_store_last_error());
		else
			sh_info("node", "collection %s dropped", name);
	}
	pthread_mutex_unlock(&n->ddl);
	return rc;
}

/* ---- Lifecycle ----------------------------------------------------------- */

void sh_node_opts_default(sh_node_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->fsync = SH_FSYNC_ALWAYS;
	sh_wire_limits_default(&o->limits);
	o->vacuum_ratio = 0.1;
}

struct open_ctx {
	sh_node *n;
	sh_store_coll *colls;
	size_t ncolls, cap;
	int rc;
};

static int collect_coll(void *ctx, const sh_store_coll *c)
{
	struct open_ctx *oc = ctx;
	if (oc->ncolls == oc->cap) {
		size_t cap = oc->cap ? 2 * oc->cap : 8;
		sh_store_coll *t = realloc(oc->colls, cap * sizeof(*t));
		if (!t)
			return SH_ENOMEM;
		oc->colls = t;
		oc->cap = cap;
	}
	oc->colls[oc->ncolls++] = *c;
	return 0;
}

int sh_node_open(const sh_node_opts *o, sh_node **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!o || !o->data_dir || !*o->data_dir)
		return sh_errf(err, errlen, SH_EINVAL, "no data directory");
	sh_node *n = calloc(1, sizeof(*n));
	if (!n)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	n->o = *o;
	clock_gettime(CLOCK_MONOTONIC, &n->started);
	pthread_rwlock_init(&n->tlock, NULL);
	pthread_mutex_init(&n->ddl, NULL);
	pthread_rwlockattr_t wa;
	pthread_rwlockattr_init(&wa);
	pthread_rwlockattr_setkind_np(
	    &wa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&n->wgate, &wa);
	pthread_rwlockattr_destroy(&wa);
	pthread_rwlock_init(&n->slock, NULL);
	pthread_mutex_init(&n->mig_mu, NULL);
	pthread_mutex_init(&n->vac_mu, NULL);
	atomic_store(&n->state, SH_NODE_STARTING);

	sh_store_opts so;
	sh_store_opts_default(&so);
	so.fsync = o->fsync;
	if (o->block_cache_mib)
		so.block_cache_mib = o->block_cache_mib;
	int rc = sh_store_open(o->data_dir, &so, &n->st, err, errlen);
	if (rc) {
		sh_node_close(n);
		return rc;
	}
	if ((rc = node_slots_load(n, err, errlen))) {
		sh_node_close(n);
		return rc;
	}
	struct open_ctx oc = {.n = n};
	rc = sh_store_coll_list(n->st, collect_coll, &oc);
	for (size_t i = 0; rc == SH_OK && i < oc.ncolls; i++) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		rc = table_add(n, &oc.colls[i], err, errlen);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (rc == SH_OK) {
			sh_hnsw_info info;
			sh_partition_info(n->colls[n->ncolls - 1]->p, &info);
			sh_info("node",
				"collection %s loaded: %llu points in %.3f s",
				oc.colls[i].name, (unsigned long long)info.live,
				(double)(t1.tv_sec - t0.tv_sec) +
				    (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
		}
	}
	free(oc.colls);
	if (rc) {
		if (rc == SH_ENOMEM && err && !*err)
			sh_errf(err, errlen, rc, "out of memory");
		sh_node_close(n);
		return rc;
	}
	*out = n;
	return SH_OK;
}

void sh_node_close(sh_node *n)
{
	if (!n)
		return;
	node_migrate_close(n);
	for (size_t i = 0; i < n->ncolls; i++)
		entry_free(n->colls[i]);
	free(n->colls);
	sh_store_close(n->st);
	pthread_rwlock_destroy(&n->tlock);
	pthread_mutex_destroy(&n->ddl);
	pthread_rwlock_destroy(&n->wgate);
	pthread_rwlock_destroy(&n->slock);
	pthread_mutex_destroy(&n->mig_mu);
	pthread_mutex_destroy(&n->vac_mu);
	free(n);
}

void sh_node_set_state(sh_node *n, sh_node_state s)
{
	atomic_store(&n->state, (int)s);
}

sh_node_state sh_node_get_state(const sh_node *n)
{
	return (sh_node_state)atomic_load(&((sh_node *)n)->state);
}

int sh_node_sync(sh_node *n)
{
	return sh_store_sync(n->st);
}

int sh_node_vacuum_tick(sh_node *n)
{
	int ran_total = 0;
	pthread_mutex_lock(&n->vac_mu);
	/* Snapshot the names: a drop may remove entries meanwhile. */
	pthread_rwlock_rdlock(&n->tlock);
	size_t nc = n->ncolls;
	char(*names)[SH_STORE_MAX_NAME + 1] =
	    nc ? malloc(nc * sizeof(*names)) : NULL;
	for (size_t i = 0; names && i < nc; i++)
		memcpy(names[i], n->colls[i]->name, sizeof(names[i]));
	pthread_rwlock_unlock(&n->tlock);
	for (size_t i = 0; names && i < nc; i++) {
		struct coll_entry *e = coll_get(n, names[i]);
		if (!e)
			continue;
		bool ran = false;
		int rc =
		    sh_partition_maybe_vacuum(e->p, n->o.vacuum_ratio, &ran);
		if (rc)
			sh_warn("node", "vacuum of %s: %s", e->name,
				sh_strerror(rc));
		if (ran) {
			atomic_fetch_add(&e->vacuums, 1);
			ran_total++;
			sh_info("node", "collection %s vacuumed", e->name);
		}
		coll_put(e);
	}
	free(names);
	pthread_mutex_unlock(&n->vac_mu);
	return ran_total;
}

/* ---- Dispatch ------------------------------------------------------------ */

static const node_op_fn op_table[NODE_NOPS - 1] = {
    op_create_collection,
    op_drop_collection,
    op_list_collections,
    op_upsert,
    op_delete,
    op_get,
    op_search,
    op_scroll,
    op_count,
    op_stats,
    op_health,
    op_set_slots,
    op_stream_slot,
    op_migrate,
    op_import,
};

static const char *const op_names[NODE_NOPS] = {
    "create_collection",
    "drop_collection",
    "list_collections",
    "upsert",
    "delete",
    "get",
    "search",
    "scroll",
    "count",
    "stats",
    "health",
    "set_slots",
    "stream_slot",
    "migrate",
    "import_points",
    "invalid",
};

static void observe(sh_node *n, int op, int code, uint64_t us)
{
	sh_op_metrics_observe(&n->ops[op], code, us);
}

static int node_op_index(Shoal__V1__Request__OpCase c)
{
	int op = (int)c - 10;
	return op >= 0 && op < NODE_NOPS - 1 ? op : -1;
}

static int node_state(void *ctx)
{
	sh_node_state st = sh_node_get_state(ctx);
	return st == SH_NODE_SERVING ? 1 : st == SH_NODE_STOPPING ? 2 : 0;
}

static uint64_t node_epoch(void *ctx)
{
	return node_epoch_now(ctx);
}

static int node_run(void *ctx, int op, const Shoal__V1__Request *rq,
		    uint64_t t0_us, Shoal__V1__Response *rs, sh_arena *a,
		    char *err, size_t errlen)
{
	return op_table[op](ctx, rq, rs, a, err, errlen);
}

static void node_observe(void *ctx, int op, int code, uint64_t us)
{
	observe(ctx, op, code, us);
}

static bool node_quiet(int code)
{
	return code == SH_ESTALE || code == SH_EMOVED ||
	       code == SH_ENOCOLLECTION;
}

int sh_node_handle(sh_node *n, const uint8_t *buf, size_t len, uint8_t **out,
		   size_t *outlen)
{
	const sh_dispatch d = {
	    .ctx = n,
	    .limits = &n->o.limits,
	    .component = "node",
	    .op_index = node_op_index,
	    .invalid_op = NODE_OP_INVALID,
	    .unsupported = "is not served by a node (cluster administration "
			   "goes to the router, embedding to shoal-embed)",
	    .state = node_state,
	    .epoch = node_epoch,
	    .run = node_run,
	    .observe = node_observe,
	    .quiet = node_quiet,
	    .op_names = op_names,
	};
	atomic_fetch_add(&n->bytes_in, len);
	int enc = sh_dispatch_handle(&d, buf, len, out, outlen);
	if (enc == SH_OK)
		atomic_fetch_add(&n->bytes_out, *outlen);
	return enc;
}

/* ---- Metrics ------------------------------------------------------------- */

static uint64_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;
	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &res) != 2)
		res = 0;
	fclose(f);
	return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

void sh_node_metrics(sh_node *n, FILE *f)
{
	sh_op_metrics_write(n->ops, NODE_NOPS, op_names, "shoal_", f);
	fprintf(f,
		"# HELP shoal_network_bytes_total Request and response bytes.\n"
		"# TYPE shoal_network_bytes_total counter\n"
		"shoal_network_bytes_total{direction=\"in\"} %llu\n"
		"shoal_network_bytes_total{direction=\"out\"} %llu\n",
		(unsigned long long)atomic_load(&n->bytes_in),
		(unsigned long long)atomic_load(&n->bytes_out));

	static const char *const gauges[][2] = {
	    {"points", "Live points, by collection."},
	    {"tombstones", "Deleted points not yet vacuumed."},
	    {"index_bytes", "Memory held by the HNSW index."},
	};
	pthread_rwlock_rdlock(&n->tlock);
	size_t nc = n->ncolls;
	sh_hnsw_info *infos = nc ? calloc(nc, sizeof(*infos)) : NULL;
	char(*names)[SH_STORE_MAX_NAME + 1] =
	    nc ? calloc(nc, sizeof(*names)) : NULL;
	uint64_t *vac = nc ? calloc(nc, sizeof(*vac)) : NULL;
	if (!infos || !names || !vac)
		nc = 0;
	for (size_t i = 0; i < nc; i++) {
		sh_partition_info(n->colls[i]->p, &infos[i]);
		memcpy(names[i], n->colls[i]->name, sizeof(names[i]));
		vac[i] = atomic_load(&n->colls[i]->vacuums);
	}
	pthread_rwlock_unlock(&n->tlock);
	for (int g = 0; g < 3; g++) {
		fprintf(f, "# HELP shoal_%s %s\n# TYPE shoal_%s gauge\n",
			gauges[g][0], gauges[g][1], gauges[g][0]);
		for (size_t i = 0; i < nc; i++) {
			uint64_t v = g == 0   ? infos[i].live
				     : g == 1 ? infos[i].tombstones
					      : infos[i].mem_bytes;
			fprintf(f, "shoal_%s{collection=\"%s\"} %llu\n",
				gauges[g][0], names[i], (unsigned long long)v);
		}
	}
	fprintf(f, "# HELP shoal_vacuums_total Vacuum passes since start.\n"
		   "# TYPE shoal_vacuums_total counter\n");
	for (size_t i = 0; i < nc; i++)
		fprintf(f, "shoal_vacuums_total{collection=\"%s\"} %llu\n",
			names[i], (unsigned long long)vac[i]);
	free(infos);
	free(names);
	free(vac);

	static const char *const props[][3] = {
	    {"rocksdb.total-sst-files-size", "shoal_rocksdb_sst_bytes",
	     "Bytes of RocksDB's SST files."},
	    {"rocksdb.cur-size-all-mem-tables", "shoal_rocksdb_memtable_bytes",
	     "Bytes in RocksDB's memtables."},
	    {"rocksdb.estimate-num-keys", "shoal_rocksdb_keys",
	     "RocksDB's estimate of its keys."},
	    {"rocksdb.block-cache-usage", "shoal_rocksdb_block_cache_bytes",
	     "Bytes in the block cache."},
	};
	for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
		uint64_t v;
		if (sh_store_property(n->st, props[i][0], &v) == SH_OK)
			fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n",
				props[i][1], props[i][2], props[i][1],
				props[i][1], (unsigned long long)v);
	}
	node_migrate_metrics(n, f);
	pthread_rwlock_rdlock(&n->slock);
	uint64_t epoch = n->slots.epoch;
	uint32_t nowned = n->slots.nowned;
	uint32_t nimp = slots_count(n->slots.importing);
	uint32_t nfenced = slots_count(n->slots.fenced);
	uint32_t nhanded = slots_count(n->slots.handed);
	pthread_rwlock_unlock(&n->slock);
	fprintf(f,
		"# HELP shoal_slots_importing Slots this node imports (a "
		"move's target).\n"
		"# TYPE shoal_slots_importing gauge\n"
		"shoal_slots_importing %u\n"
		"# HELP shoal_slots_fenced Slots whose writes this node "
		"refuses while it hands them over.\n"
		"# TYPE shoal_slots_fenced gauge\n"
		"shoal_slots_fenced %u\n"
		"# HELP shoal_slots_handed_over Slots this node handed over "
		"and no longer serves.\n"
		"# TYPE shoal_slots_handed_over gauge\n"
		"shoal_slots_handed_over %u\n",
		nimp, nfenced, nhanded);
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	fprintf(f,
		"# HELP shoal_resident_bytes Resident memory of the process.\n"
		"# TYPE shoal_resident_bytes gauge\n"
		"shoal_resident_bytes %llu\n"
		"# HELP shoal_map_epoch Cluster-map epoch the node knows.\n"
		"# TYPE shoal_map_epoch gauge\n"
		"shoal_map_epoch %llu\n"
		"# HELP shoal_slots_owned Hash slots this node owns.\n"
		"# TYPE shoal_slots_owned gauge\n"
		"shoal_slots_owned %u\n"
		"# HELP shoal_serving 1 while the node serves requests.\n"
		"# TYPE shoal_serving gauge\n"
		"shoal_serving %d\n"
		"# HELP shoal_uptime_seconds Seconds since the node started.\n"
		"# TYPE shoal_uptime_seconds gauge\n"
		"shoal_uptime_seconds %.3f\n"
		"# HELP shoal_build_info Software version.\n"
		"# TYPE shoal_build_info gauge\n"
		"shoal_build_info{version=\"%s\"} 1\n",
		(unsigned long long)rss_bytes(), (unsigned long long)epoch,
		nowned, sh_node_get_state(n) == SH_NODE_SERVING,
		(double)(t.tv_sec - n->started.tv_sec) +
		    (double)(t.tv_nsec - n->started.tv_nsec) * 1e-9,
		SHOAL_VERSION);
}
