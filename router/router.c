/* shoal-router's core: the map, the node connections, fan-out, dispatch,
 * cluster administration and metrics. See router.h; the data operations
 * are in router_ops.c. */
#include "router_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "dispatch.h"
#include "log.h"
#include "shoal_config.h"

void sh_router_opts_default(sh_router_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->read_timeout_ms = 1000;
	o->write_timeout_ms = 30000;
	sh_wire_limits_default(&o->limits);
}

const char *router_node_name(sh_router *r, int idx, char *buf, size_t cap)
{
	snprintf(buf, cap, "node %u (%s)", r->nodes[idx].id,
		 r->nodes[idx].address);
	return buf;
}

/* ---- Nodes ----------------------------------------------------------------
 */

/* Adds a connection for every map node the router does not know yet. The
 * caller holds the write lock. */
static int connect_nodes_locked(sh_router *r, char *err, size_t errlen)
{
	for (uint32_t i = 0; i < r->map->nnodes; i++) {
		const sh_map_node *mn = &r->map->nodes[i];
		bool known = false;
		for (uint32_t j = 0; j < r->nnodes && !known; j++)
			known = r->nodes[j].id == mn->id;
		if (known)
			continue;
		if (r->nnodes == ROUTER_MAX_CONNS)
			return sh_errf(err, errlen, SH_EFULL,
				       "the router has made %d node "
				       "connections: restart it",
				       ROUTER_MAX_CONNS);
		struct rnode *n = &r->nodes[r->nnodes];
		memset(n, 0, sizeof(*n));
		n->id = mn->id;
		snprintf(n->address, sizeof(n->address), "%s", mn->address);
		int rc = sh_rpc_dial(mn->address, r->o.read_timeout_ms,
				     r->o.limits.max_message_bytes, &n->rpc,
				     err, errlen);
		if (rc)
			return rc;
		r->nnodes++;
	}
	return SH_OK;
}

/* After a call that got no answer: when its client replaced the node's
 * connection for answering nothing (rpc.h), say so, once per replacement.
 * Expected while a network fault cuts the node off; anything else is a
 * node that stopped answering without closing its connection. */
static void note_replaced(struct rnode *n)
{
	uint64_t now = sh_rpc_replaced(n->rpc);
	uint64_t seen = atomic_load(&n->replaced_seen);
	while (now > seen &&
	       !atomic_compare_exchange_weak(&n->replaced_seen, &seen, now))
		;
	if (now > seen)
		sh_warn("router",
			"node %u (%s) answered nothing for 5 s while calls "
			"timed out: its connection was replaced (%llu so far)",
			n->id, n->address, (unsigned long long)now);
}

size_t router_all_nodes(sh_router *r, int *idx)
{
	pthread_rwlock_rdlock(&r->lock);
	size_t n = 0;
	for (uint32_t i = 0; i < r->nnodes; i++)
		if (sh_map_node_index(r->map, r->nodes[i].id) >= 0)
			idx[n++] = (int)i;
	pthread_rwlock_unlock(&r->lock);
	return n;
}

size_t router_owning_nodes(sh_router *r, int *idx)
{
	pthread_rwlock_rdlock(&r->lock);
	bool owns[ROUTER_MAX_CONNS] = {false};
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		if (r->owner_idx[s] >= 0)
			owns[r->owner_idx[s]] = true;
	size_t n = 0;
	for (uint32_t i = 0; i < r->nnodes; i++)
		if (owns[i])
			idx[n++] = (int)i;
	pthread_rwlock_unlock(&r->lock);
	return n;
}

int router_owner_locked(sh_router *r, uint16_t slot)
{
	return r->owner_idx[slot];
}

/* Recomputes owner_idx and owned_bits after the map or the connections
 * changed. The caller holds the write lock. */
static int reindex_locked(sh_router *r)
{
	uint64_t(*bits)[SH_SLOTS / 64] =
	    calloc(r->nnodes ? r->nnodes : 1, sizeof(*bits));
	if (!bits)
		return SH_ENOMEM;
	free(r->owned_bits);
	r->owned_bits = bits;
	int16_t by_id[SH_MAP_MAX_NODES + 1];
	uint32_t ids[SH_MAP_MAX_NODES];
	uint32_t n = 0;
	/* map node ids are small and few: a short search per distinct id */
	for (uint32_t s = 0; s < SH_SLOTS; s++) {
		uint32_t id = r->map->owner[s];
		uint32_t k = 0;
		while (k < n && ids[k] != id)
			k++;
		if (k == n) {
			ids[n] = id;
			by_id[n] = -1;
			for (uint32_t i = 0; i < r->nnodes; i++)
				if (r->nodes[i].id == id)
					by_id[n] = (int16_t)i;
			n++;
		}
		r->owner_idx[s] = by_id[k];
		if (by_id[k] >= 0)
			bits[by_id[k]][s / 64] |= 1ull << (s % 64);
	}
	return SH_OK;
}

int router_node_index(sh_router *r, uint32_t id)
{
	int idx = -1;
	pthread_rwlock_rdlock(&r->lock);
	for (uint32_t i = 0; i < r->nnodes && idx < 0; i++)
		if (r->nodes[i].id == id)
			idx = (int)i;
	pthread_rwlock_unlock(&r->lock);
	return idx;
}

sh_map *router_map_copy(sh_router *r)
{
	sh_map *m = malloc(sizeof(*m));
	if (!m)
		return NULL;
	pthread_rwlock_rdlock(&r->lock);
	*m = *r->map;
	pthread_rwlock_unlock(&r->lock);
	return m;
}

int router_install_map(sh_router *r, sh_map *m, int64_t version, char *err,
		       size_t errlen)
{
	pthread_rwlock_wrlock(&r->lock);
	int rc = SH_OK;
	if (m->epoch >= r->map->epoch) {
		sh_map *old = r->map;
		r->map = m;
		r->map_version = version;
		m = old;
		rc = connect_nodes_locked(r, err, errlen);
		if (reindex_locked(r) != SH_OK && rc == SH_OK)
			rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	}
	pthread_rwlock_unlock(&r->lock);
	free(m);
	return rc;
}

int router_refresh_map(sh_router *r)
{
	if (!sh_mapstore_shared(r->ms))
		return SH_OK;
	sh_map *m = malloc(sizeof(*m));
	if (!m)
		return SH_ENOMEM;
	char err[512];
	int64_t version;
	int rc = sh_mapstore_load(r->ms, m, &version, err, sizeof(err));
	if (rc) {
		sh_warn("router", "re-reading the map: %s", err);
		free(m);
		return rc;
	}
	pthread_rwlock_rdlock(&r->lock);
	bool newer = m->epoch > r->map->epoch;
	pthread_rwlock_unlock(&r->lock);
	if (!newer) {
		free(m);
		return SH_OK;
	}
	uint64_t epoch = m->epoch;
	rc = router_install_map(r, m, version, err, sizeof(err));
	if (rc)
		sh_warn("router", "installing map epoch %llu: %s",
			(unsigned long long)epoch, err);
	else
		sh_debug("router", "map epoch %llu from %s",
			 (unsigned long long)epoch, sh_mapstore_where(r->ms));
	atomic_fetch_add(&r->map_reloads, 1);
	return rc;
}

int router_change_map_locked(sh_router *r, router_map_fn fn, void *ctx,
			     uint64_t *epoch, char *err, size_t errlen)
{
	router_refresh_map(r);
	sh_map *m = malloc(sizeof(*m));
	if (!m)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	pthread_rwlock_rdlock(&r->lock);
	*m = *r->map;
	int64_t expect = r->map_version;
	pthread_rwlock_unlock(&r->lock);
	int rc = fn(r, m, ctx, err, errlen);
	if (rc) {
		free(m);
		return rc;
	}
	m->epoch++;
	int64_t version;
	rc = sh_mapstore_cas(r->ms, m, expect, &version, err, errlen);
	if (rc) {
		free(m);
		if (rc == SH_ESTALE)
			router_refresh_map(r);
		return rc;
	}
	uint64_t e = m->epoch;
	rc = router_install_map(r, m, version, err, errlen);
	if (epoch)
		*epoch = e;
	return rc;
}

int router_change_map(sh_router *r, router_map_fn fn, void *ctx,
		      uint64_t *epoch, char *err, size_t errlen)
{
	pthread_mutex_lock(&r->admin);
	int rc = router_change_map_locked(r, fn, ctx, epoch, err, errlen);
	pthread_mutex_unlock(&r->admin);
	return rc;
}

/* etcd: waits for changes of the map and installs them. */
static void *watch_main(void *arg)
{
	sh_router *r = arg;
	while (!atomic_load(&r->stopping)) {
		pthread_rwlock_rdlock(&r->lock);
		int64_t version = r->map_version;
		pthread_rwlock_unlock(&r->lock);
		char err[512];
		int rc =
		    sh_mapstore_wait(r->ms, version, 1000, err, sizeof(err));
		if (atomic_load(&r->stopping))
			break;
		if (rc == SH_OK) {
			router_refresh_map(r);
		} else if (rc != SH_ETIMEDOUT) {
			sh_debug("router", "watching the map: %s", err);
			/* do not spin on an unreachable etcd */
			for (int i = 0; i < 10 && !atomic_load(&r->stopping);
			     i++)
				sh_sleep_ms(100);
			router_refresh_map(r);
		}
	}
	return NULL;
}

int router_push_slots(sh_router *r, int idx, char *err, size_t errlen)
{
	uint32_t(*ranges)[2] = malloc(SH_SLOTS * sizeof(*ranges));
	if (!ranges)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	pthread_rwlock_rdlock(&r->lock);
	uint64_t epoch = r->map->epoch;
	uint32_t id = r->nodes[idx].id;
	size_t nr = sh_map_ranges(r->map, id, ranges, SH_SLOTS);
	pthread_rwlock_unlock(&r->lock);
	Shoal__V1__SlotRange *sr = calloc(nr ? nr : 1, sizeof(*sr));
	Shoal__V1__SlotRange **srp = calloc(nr ? nr : 1, sizeof(*srp));
	int rc = SH_ENOMEM;
	if (sr && srp) {
		for (size_t i = 0; i < nr; i++) {
			shoal__v1__slot_range__init(&sr[i]);
			sr[i].first = ranges[i][0];
			sr[i].last = ranges[i][1];
			srp[i] = &sr[i];
		}
		Shoal__V1__SlotSet set = SHOAL__V1__SLOT_SET__INIT;
		set.ranges = srp;
		set.n_ranges = nr;
		Shoal__V1__SetSlotsRequest ss =
		    SHOAL__V1__SET_SLOTS_REQUEST__INIT;
		ss.map_epoch = epoch;
		ss.node_id = id;
		ss.owned = &set;
		Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
		rq.op_case = SHOAL__V1__REQUEST__OP_SET_SLOTS;
		rq.set_slots = &ss;
		rq.map_epoch = epoch;
		Shoal__V1__Response *rs = NULL;
		rc = sh_rpc_call(r->nodes[idx].rpc, &rq, &rs, err, errlen);
		if (rc == SH_ETIMEDOUT)
			note_replaced(&r->nodes[idx]);
		if (rc == SH_OK) {
			rc = (int)rs->code;
			if (rc == SH_ESTALE)
				rc = sh_errf(err, errlen, SH_EMOVED,
					     "node %u knows map epoch %llu, "
					     "newer than the router's %llu",
					     id,
					     (unsigned long long)rs->map_epoch,
					     (unsigned long long)epoch);
			else if (rc)
				sh_errf(err, errlen, rc, "%s", rs->message);
		}
		sh_wire_free_response(rs);
	}
	free(sr);
	free(srp);
	free(ranges);
	return rc;
}

/* ---- Fan-out --------------------------------------------------------------
 */

void call_init(struct call *c, int node, const Shoal__V1__Request *orig)
{
	memset(c, 0, sizeof(*c));
	c->node = node;
	shoal__v1__request__init(&c->rq);
	c->rq.protocol_version = SH_WIRE_PROTOCOL_VERSION;
	c->rq.request_id = orig ? orig->request_id : 0;
	c->rq.timeout_ms = orig ? orig->timeout_ms : 0;
}

static void call_start(sh_router *r, struct call *c, int timeout_ms)
{
	pthread_rwlock_rdlock(&r->lock);
	c->rq.map_epoch = r->map->epoch;
	pthread_rwlock_unlock(&r->lock);
	uint8_t *buf;
	size_t len;
	c->t0 = sh_now_us();
	c->rc = sh_wire_encode_request(&c->rq, &buf, &len);
	if (c->rc) {
		snprintf(c->err, sizeof(c->err), "encoding: out of memory");
		return;
	}
	c->rc =
	    sh_rpc_start(r->nodes[c->node].rpc, buf, len, timeout_ms, &c->op);
	free(buf);
	if (c->rc)
		snprintf(c->err, sizeof(c->err), "%s", sh_strerror(c->rc));
}

static void call_finish(sh_router *r, struct call *c)
{
	if (!c->op)
		return;
	uint8_t *out;
	size_t outlen;
	c->rc = sh_rpc_finish(c->op, &out, &outlen, c->err, sizeof(c->err));
	c->op = NULL;
	struct rnode *n = &r->nodes[c->node];
	sh_histogram_observe(&n->latency, sh_now_us() - c->t0);
	if (c->rc) {
		atomic_fetch_add(&n->errors, 1);
		if (c->rc == SH_ETIMEDOUT)
			note_replaced(n);
		return;
	}
	c->rc = sh_wire_decode_response(out, outlen, &r->o.limits, &c->resp,
					c->err, sizeof(c->err));
	free(out);
	if (c->rc)
		atomic_fetch_add(&n->errors, 1);
}

void fanout(sh_router *r, struct call *calls, size_t n, int timeout_ms,
	    bool write)
{
	if (timeout_ms <= 0)
		timeout_ms =
		    write ? r->o.write_timeout_ms : r->o.read_timeout_ms;
	for (size_t i = 0; i < n; i++)
		call_start(r, &calls[i], timeout_ms);
	for (size_t i = 0; i < n; i++)
		call_finish(r, &calls[i]);
	/* A node that answered EMOVED with an older epoch than ours missed a
	 * set_slots: send it and retry once. */
	for (size_t i = 0; i < n; i++) {
		struct call *c = &calls[i];
		if (c->rc || !c->resp || (int)c->resp->code != SH_EMOVED ||
		    c->retried || c->resp->map_epoch >= c->rq.map_epoch)
			continue;
		char err[256];
		int prc = router_push_slots(r, c->node, err, sizeof(err));
		if (prc) {
			sh_warn("router", "sending slots to node %u: %s",
				r->nodes[c->node].id, err);
			continue;
		}
		atomic_fetch_add(&r->retries, 1);
		sh_wire_free_response(c->resp);
		c->resp = NULL;
		c->retried = true;
		call_start(r, c, timeout_ms);
		call_finish(r, c);
	}
}

int router_node_call(sh_router *r, uint32_t id, Shoal__V1__Request *rq,
		     int timeout_ms, Shoal__V1__Response **resp, char *err,
		     size_t errlen)
{
	*resp = NULL;
	int idx = router_node_index(r, id);
	if (idx < 0)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "node %u is not known to this router", id);
	struct call c;
	call_init(&c, idx, rq);
	c.rq.op_case = rq->op_case;
	c.rq.search = rq->search; /* the op union: one pointer */
	fanout(r, &c, 1, timeout_ms, true);
	if (c.rc) {
		char name[300];
		int rc = sh_errf(err, errlen, c.rc, "%s: %s",
				 router_node_name(r, idx, name, sizeof(name)),
				 c.err);
		calls_free(&c, 1);
		return rc;
	}
	*resp = c.resp;
	return SH_OK;
}

void calls_free(struct call *calls, size_t n)
{
	for (size_t i = 0; calls && i < n; i++) {
		if (calls[i].op) {
			uint8_t *out;
			size_t len;
			sh_rpc_finish(calls[i].op, &out, &len, NULL, 0);
			free(out);
		}
		sh_wire_free_response(calls[i].resp);
		calls[i].resp = NULL;
	}
}

int calls_error(sh_router *r, const struct call *calls, size_t n,
		const int *ok_codes, char *err, size_t errlen)
{
	char name[300];
	for (size_t i = 0; i < n; i++) {
		const struct call *c = &calls[i];
		if (c->rc)
			return sh_errf(
			    err, errlen, c->rc, "%s: %s",
			    router_node_name(r, c->node, name, sizeof(name)),
			    c->err);
		int code = (int)c->resp->code;
		bool ok = code == SH_OK;
		for (size_t j = 0; ok_codes && ok_codes[j] && !ok; j++)
			ok = code == ok_codes[j];
		if (!ok)
			return sh_errf(
			    err, errlen, code, "%s: %s",
			    router_node_name(r, c->node, name, sizeof(name)),
			    c->resp->message && *c->resp->message
				? c->resp->message
				: sh_strerror(code));
	}
	return SH_OK;
}

/* ---- Administration -------------------------------------------------------
 */

static int rop_health(sh_router *r, const Shoal__V1__Request *rq,
		      Shoal__V1__Response *rs, sh_arena *a, char *err,
		      size_t errlen)
{
	Shoal__V1__HealthResult *h = sh_arena_alloc(a, sizeof(*h));
	if (!h)
		return SH_ENOMEM;
	shoal__v1__health_result__init(h);
	int st = sh_router_get_state(r);
	h->status = st == 1   ? SHOAL__V1__HEALTH__SERVING
		    : st == 2 ? SHOAL__V1__HEALTH__STOPPING
			      : SHOAL__V1__HEALTH__STARTING;
	pthread_rwlock_rdlock(&r->lock);
	h->map_epoch = r->map->epoch;
	pthread_rwlock_unlock(&r->lock);
	h->version = (char *)SHOAL_VERSION;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_HEALTH;
	rs->health = h;
	return SH_OK;
}

static int rop_get_map(sh_router *r, const Shoal__V1__Request *rq,
		       Shoal__V1__Response *rs, sh_arena *a, char *err,
		       size_t errlen)
{
	Shoal__V1__ClusterMap *cm = sh_arena_alloc(a, sizeof(*cm));
	sh_map *m = malloc(sizeof(*m));
	if (!cm || !m) {
		free(m);
		return SH_ENOMEM;
	}
	shoal__v1__cluster_map__init(cm);
	pthread_rwlock_rdlock(&r->lock);
	*m = *r->map;
	pthread_rwlock_unlock(&r->lock);
	cm->epoch = m->epoch;
	cm->nodes = sh_arena_alloc(a, m->nnodes * sizeof(void *));
	for (uint32_t i = 0; cm->nodes && i < m->nnodes; i++) {
		Shoal__V1__NodeInfo *ni = sh_arena_alloc(a, sizeof(*ni));
		if (!ni)
			break;
		shoal__v1__node_info__init(ni);
		ni->id = m->nodes[i].id;
		ni->address = sh_arena_strndup(a, m->nodes[i].address,
					       strlen(m->nodes[i].address));
		cm->nodes[cm->n_nodes++] = ni;
	}
	size_t nruns = 0;
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		nruns += s == 0 || m->owner[s] != m->owner[s - 1] ||
			 m->slot_epoch[s] != m->slot_epoch[s - 1] ||
			 m->moving_to[s] != m->moving_to[s - 1];
	cm->slots = sh_arena_alloc(a, nruns * sizeof(void *));
	for (uint32_t s = 0; cm->slots && s < SH_SLOTS; s++) {
		uint32_t e = s;
		while (e + 1 < SH_SLOTS && m->owner[e + 1] == m->owner[s] &&
		       m->slot_epoch[e + 1] == m->slot_epoch[s] &&
		       m->moving_to[e + 1] == m->moving_to[s])
			e++;
		Shoal__V1__SlotOwner *so = sh_arena_alloc(a, sizeof(*so));
		if (!so)
			break;
		shoal__v1__slot_owner__init(so);
		so->first = s;
		so->last = e;
		so->node_id = m->owner[s];
		so->epoch = m->slot_epoch[s];
		so->moving_to = m->moving_to[s];
		cm->slots[cm->n_slots++] = so;
		s = e;
	}
	if (m->job.id)
		cm->job = router_job_out(m, a);
	free(m);
	if (a->oom)
		return SH_ENOMEM;

	if (rq->get_map->with_health) {
		/* Ask every node for health and stats, at once. */
		int idx[SH_MAP_MAX_NODES];
		size_t n = router_all_nodes(r, idx);
		struct call *calls = calloc(2 * n + 1, sizeof(*calls));
		if (!calls)
			return SH_ENOMEM;
		Shoal__V1__HealthRequest hr = SHOAL__V1__HEALTH_REQUEST__INIT;
		Shoal__V1__StatsRequest sr = SHOAL__V1__STATS_REQUEST__INIT;
		for (size_t i = 0; i < n; i++) {
			call_init(&calls[2 * i], idx[i], rq);
			calls[2 * i].rq.op_case = SHOAL__V1__REQUEST__OP_HEALTH;
			calls[2 * i].rq.health = &hr;
			call_init(&calls[2 * i + 1], idx[i], rq);
			calls[2 * i + 1].rq.op_case =
			    SHOAL__V1__REQUEST__OP_STATS;
			calls[2 * i + 1].rq.stats = &sr;
		}
		fanout(r, calls, 2 * n, 0, false);
		for (size_t i = 0; i < n; i++) {
			Shoal__V1__NodeInfo *ni = NULL;
			for (size_t j = 0; j < cm->n_nodes; j++)
				if (cm->nodes[j]->id == r->nodes[idx[i]].id)
					ni = cm->nodes[j];
			if (!ni)
				continue;
			struct call *h = &calls[2 * i], *s = &calls[2 * i + 1];
			if (h->rc || h->resp->code || !h->resp->health) {
				const char *why =
				    h->rc ? h->err
					  : (h->resp->message ? h->resp->message
							      : "");
				ni->error =
				    sh_arena_strndup(a, why, strlen(why));
				continue;
			}
			ni->health = h->resp->health->status;
			if (!s->rc && !s->resp->code && s->resp->stats)
				for (size_t c = 0;
				     c < s->resp->stats->n_collections; c++)
					ni->points +=
					    s->resp->stats->collections[c]
						->points;
		}
		calls_free(calls, 2 * n);
		free(calls);
	}
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_GET_MAP;
	rs->get_map = cm;
	return a->oom ? SH_ENOMEM : SH_OK;
}

struct add_ctx {
	const char *address;
	uint32_t id;
};

static int add_fn(sh_router *r, sh_map *m, void *ctx, char *err, size_t errlen)
{
	struct add_ctx *c = ctx;
	int rc = sh_map_add_node(m, c->address, &c->id, err, errlen);
	if (rc == SH_OK)
		m->epoch--; /* router_change_map bumps it */
	return rc;
}

/* Every node learns the map's epoch (a new node: that it owns none). */
static void push_all(sh_router *r)
{
	int idx[SH_MAP_MAX_NODES];
	size_t n = router_all_nodes(r, idx);
	for (size_t i = 0; i < n; i++) {
		char e2[256];
		if (router_push_slots(r, idx[i], e2, sizeof(e2)))
			sh_warn("router", "sending slots to node %u: %s",
				r->nodes[idx[i]].id, e2);
	}
}

static int rop_add_node(sh_router *r, const Shoal__V1__Request *rq,
			Shoal__V1__Response *rs, sh_arena *a, char *err,
			size_t errlen)
{
	struct add_ctx c = {.address = rq->add_node->address};
	uint64_t epoch;
	int rc = router_change_map(r, add_fn, &c, &epoch, err, errlen);
	if (rc)
		return rc;
	sh_info("router", "node %u (%s) added; map epoch %llu", c.id, c.address,
		(unsigned long long)epoch);
	push_all(r);
	Shoal__V1__AddNodeResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__add_node_result__init(res);
	res->node_id = c.id;
	res->map_epoch = epoch;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_ADD_NODE;
	rs->add_node = res;
	return SH_OK;
}

static int remove_fn(sh_router *r, sh_map *m, void *ctx, char *err,
		     size_t errlen)
{
	int rc = sh_map_remove_node(m, *(uint32_t *)ctx, err, errlen);
	if (rc == SH_OK)
		m->epoch--; /* router_change_map bumps it */
	return rc;
}

static int rop_remove_node(sh_router *r, const Shoal__V1__Request *rq,
			   Shoal__V1__Response *rs, sh_arena *a, char *err,
			   size_t errlen)
{
	uint32_t id = rq->remove_node->node_id;
	uint64_t epoch;
	int rc = router_change_map(r, remove_fn, &id, &epoch, err, errlen);
	if (rc)
		return rc;
	sh_info("router", "node %u removed; map epoch %llu", id,
		(unsigned long long)epoch);
	push_all(r);
	Shoal__V1__RemoveNodeResult *res = sh_arena_alloc(a, sizeof(*res));
	if (!res)
		return SH_ENOMEM;
	shoal__v1__remove_node_result__init(res);
	res->map_epoch = epoch;
	rs->result_case = SHOAL__V1__RESPONSE__RESULT_REMOVE_NODE;
	rs->remove_node = res;
	return SH_OK;
}

static int rop_node_only(sh_router *r, const Shoal__V1__Request *rq,
			 Shoal__V1__Response *rs, sh_arena *a, char *err,
			 size_t errlen)
{
	return sh_errf(err, errlen, SH_EUNSUPPORTED,
		       "a node operation: send it to the node itself");
}

/* ---- Dispatch ---------------------------------------------------------------
 */

static const router_op_fn op_table[ROUTER_NOPS - 1] = {
    rop_create_collection,
    rop_drop_collection,
    rop_list_collections,
    rop_upsert,
    rop_delete,
    rop_get,
    rop_search,
    rop_scroll,
    rop_count,
    rop_stats,
    rop_health,
    rop_node_only,
    rop_node_only,
    rop_node_only,
    rop_node_only,
    rop_get_map,
    rop_add_node,
    rop_move_job,
    rop_remove_node,
};

static const char *const op_names[ROUTER_NOPS] = {
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
    "get_map",
    "add_node",
    "move_job",
    "remove_node",
    "invalid",
};

static int op_index(Shoal__V1__Request__OpCase c)
{
	if (c >= 10 && c <= 24)
		return (int)c - 10;
	if (c >= 60 && c <= 63)
		return (int)c - 60 + 15;
	return ROUTER_OP_INVALID;
}

static int r_op_index(Shoal__V1__Request__OpCase c)
{
	int i = op_index(c);
	return i == ROUTER_OP_INVALID || op_table[i] == NULL ? -1 : i;
}

static int r_state(void *ctx)
{
	return sh_router_get_state(ctx);
}

static uint64_t r_epoch(void *ctx)
{
	sh_router *r = ctx;
	pthread_rwlock_rdlock(&r->lock);
	uint64_t epoch = r->map->epoch;
	pthread_rwlock_unlock(&r->lock);
	return epoch;
}

static int r_run(void *ctx, int op, const Shoal__V1__Request *rq,
		 uint64_t t0_us, Shoal__V1__Response *rs, sh_arena *a,
		 char *err, size_t errlen)
{
	return op_table[op](ctx, rq, rs, a, err, errlen);
}

static void r_observe(void *ctx, int op, int code, uint64_t us)
{
	sh_router *r = ctx;
	sh_op_metrics_observe(&r->ops[op], code, us);
}

static bool r_quiet(int code)
{
	return code == SH_ENOCOLLECTION || code == SH_EEXIST;
}

int sh_router_handle(sh_router *r, const uint8_t *buf, size_t len,
		     uint8_t **out, size_t *outlen)
{
	const sh_dispatch d = {
	    .ctx = r,
	    .limits = &r->o.limits,
	    .component = "router",
	    .op_index = r_op_index,
	    .invalid_op = ROUTER_OP_INVALID,
	    .unsupported = "is not served by the router (embedding goes to "
			   "shoal-embed)",
	    .state = r_state,
	    .epoch = r_epoch,
	    .run = r_run,
	    .observe = r_observe,
	    .quiet = r_quiet,
	    .op_names = op_names,
	};
	return sh_dispatch_handle(&d, buf, len, out, outlen);
}

/* ---- Lifecycle ----------------------------------------------------------- */

int sh_router_open(const sh_router_opts *o, sh_router **out, char *err,
		   size_t errlen)
{
	*out = NULL;
	bool etcd = o->etcd && *o->etcd;
	if (!etcd && (!o->data_dir || !*o->data_dir))
		return sh_errf(err, errlen, SH_EINVAL, "no data directory");
	if (!etcd && mkdir(o->data_dir, 0755) != 0 && errno != EEXIST)
		return sh_errf(err, errlen, SH_EIO, "creating %s: %s",
			       o->data_dir, strerror(errno));
	sh_router *r = calloc(1, sizeof(*r));
	if (!r || !(r->map = malloc(sizeof(*r->map)))) {
		free(r);
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	}
	r->o = *o;
	r->o.bootstrap = NULL;
	r->o.nbootstrap = 0;
	pthread_rwlock_init(&r->lock, NULL);
	pthread_mutex_init(&r->admin, NULL);
	int rc;
	if (etcd) {
		rc = sh_mapstore_etcd(
		    o->etcd,
		    o->etcd_key && *o->etcd_key ? o->etcd_key
						: "/shoal/cluster-map",
		    o->read_timeout_ms > 2000 ? o->read_timeout_ms : 2000,
		    &r->ms, err, errlen);
	} else {
		char path[4096];
		snprintf(path, sizeof(path), "%s/cluster.json", o->data_dir);
		rc = sh_mapstore_file(path, &r->ms, err, errlen);
	}
	if (rc) {
		sh_router_close(r);
		return rc;
	}
	const char *where = sh_mapstore_where(r->ms);
	rc = sh_mapstore_load(r->ms, r->map, &r->map_version, err, errlen);
	if (rc == SH_ENOTFOUND) {
		if (!o->nbootstrap) {
			sh_router_close(r);
			return sh_errf(err, errlen, SH_ENOTFOUND,
				       "no cluster map in %s: give --nodes "
				       "to create one",
				       where);
		}
		rc = sh_map_init(r->map, o->bootstrap, o->nbootstrap, err,
				 errlen);
		if (rc == SH_OK)
			rc = sh_mapstore_cas(r->ms, r->map, 0, &r->map_version,
					     err, errlen);
		if (rc == SH_ESTALE) /* another router made it first */
			rc = sh_mapstore_load(r->ms, r->map, &r->map_version,
					      err, errlen);
		else if (rc == SH_OK)
			sh_info("router",
				"new cluster map: %zu nodes, epoch 1, in %s",
				o->nbootstrap, where);
	} else if (rc == SH_OK && o->nbootstrap) {
		sh_info("router",
			"using the cluster map in %s (--nodes is "
			"only read when there is none)",
			where);
	}
	if (rc == SH_OK) {
		pthread_rwlock_wrlock(&r->lock);
		rc = connect_nodes_locked(r, err, errlen);
		if (rc == SH_OK && reindex_locked(r) != SH_OK)
			rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		pthread_rwlock_unlock(&r->lock);
	}
	if (rc == SH_OK && etcd) {
		if (pthread_create(&r->watcher, NULL, watch_main, r) != 0)
			rc = sh_errf(err, errlen, SH_ENOMEM,
				     "cannot start the map watcher");
		else
			r->watching = true;
	}
	if (rc) {
		sh_router_close(r);
		return rc;
	}
	for (uint32_t i = 0; i < r->nnodes; i++) {
		char e2[256];
		int prc = router_push_slots(r, (int)i, e2, sizeof(e2));
		if (prc)
			sh_warn("router",
				"node %u (%s) not told its slots "
				"yet: %s",
				r->nodes[i].id, r->nodes[i].address, e2);
	}
	*out = r;
	return SH_OK;
}

void sh_router_close(sh_router *r)
{
	if (!r)
		return;
	atomic_store(&r->stopping, true);
	if (r->watching)
		pthread_join(r->watcher, NULL);
	for (uint32_t i = 0; i < r->nnodes; i++)
		sh_rpc_close(r->nodes[i].rpc);
	sh_mapstore_close(r->ms);
	free(r->owned_bits);
	pthread_rwlock_destroy(&r->lock);
	pthread_mutex_destroy(&r->admin);
	free(r->map);
	free(r);
}

void sh_router_set_state(sh_router *r, int state)
{
	atomic_store(&r->state, state);
}

int sh_router_get_state(const sh_router *r)
{
	return atomic_load(&((sh_router *)r)->state);
}

/* ---- Metrics --------------------------------------------------------------
 */

static uint64_t node_errors(struct rnode *n)
{
	return atomic_load(&n->errors);
}

static uint64_t node_reconnects(struct rnode *n)
{
	return sh_rpc_replaced(n->rpc);
}

/* A counter with one sample per node (labels node and address). */
static void node_counter(sh_router *r, uint32_t nn, FILE *f,
			 const char *name, const char *help,
			 uint64_t (*value)(struct rnode *))
{
	sh_metric_head(f, name, "counter", help);
	for (uint32_t i = 0; i < nn; i++)
		fprintf(f, "%s{node=\"%u\",address=\"%s\"} %llu\n", name,
			r->nodes[i].id, r->nodes[i].address,
			(unsigned long long)value(&r->nodes[i]));
}

void sh_router_metrics(sh_router *r, FILE *f)
{
	sh_op_metrics_write(r->ops, ROUTER_NOPS, op_names, "shoal_router_", f);
	pthread_rwlock_rdlock(&r->lock);
	uint32_t nn = r->nnodes;
	uint32_t nmap = r->map->nnodes;
	uint64_t epoch = r->map->epoch;
	pthread_rwlock_unlock(&r->lock);
	fprintf(f, "# HELP shoal_router_node_duration_seconds Time of calls "
		   "to each node.\n"
		   "# TYPE shoal_router_node_duration_seconds histogram\n");
	for (uint32_t i = 0; i < nn; i++) {
		char labels[320];
		snprintf(labels, sizeof(labels), "node=\"%u\",address=\"%s\"",
			 r->nodes[i].id, r->nodes[i].address);
		sh_histogram_write(&r->nodes[i].latency, f,
				   "shoal_router_node_duration_seconds",
				   labels);
	}
	node_counter(r, nn, f, "shoal_router_node_errors_total",
		     "Calls to a node that got no answer (timeout, connection).",
		     node_errors);
	node_counter(r, nn, f, "shoal_router_node_reconnects_total",
		     "Connections to a node closed and dialled again because "
		     "it answered nothing for 5 s while calls timed out.",
		     node_reconnects);
	fprintf(
	    f,
	    "# HELP shoal_router_searches_partial_total Searches answered "
	    "with partial coverage (min_coverage).\n"
	    "# TYPE shoal_router_searches_partial_total counter\n"
	    "shoal_router_searches_partial_total %llu\n"
	    "# HELP shoal_router_searches_failed_total Searches failed for "
	    "lack of coverage.\n"
	    "# TYPE shoal_router_searches_failed_total counter\n"
	    "shoal_router_searches_failed_total %llu\n"
	    "# HELP shoal_router_retries_total Requests retried after a "
	    "node was sent its slots again.\n"
	    "# TYPE shoal_router_retries_total counter\n"
	    "shoal_router_retries_total %llu\n"
	    "# HELP shoal_router_rerouted_total Points and slots sent "
	    "again after a node said they moved (EMOVED) or did not "
	    "cover them.\n"
	    "# TYPE shoal_router_rerouted_total counter\n"
	    "shoal_router_rerouted_total %llu\n"
	    "# HELP shoal_router_map_reloads_total Newer maps installed "
	    "from the shared store (etcd).\n"
	    "# TYPE shoal_router_map_reloads_total counter\n"
	    "shoal_router_map_reloads_total %llu\n"
	    "# HELP shoal_router_move_steps_total Steps of slot moves run "
	    "by this router.\n"
	    "# TYPE shoal_router_move_steps_total counter\n"
	    "shoal_router_move_steps_total %llu\n"
	    "# HELP shoal_router_move_errors_total Steps of slot moves that "
	    "failed (and may be retried).\n"
	    "# TYPE shoal_router_move_errors_total counter\n"
	    "shoal_router_move_errors_total %llu\n"
	    "# HELP shoal_router_map_epoch Epoch of the cluster map.\n"
	    "# TYPE shoal_router_map_epoch gauge\n"
	    "shoal_router_map_epoch %llu\n"
	    "# HELP shoal_router_nodes Nodes in the cluster map.\n"
	    "# TYPE shoal_router_nodes gauge\n"
	    "shoal_router_nodes %u\n"
	    "# HELP shoal_build_info Software version.\n"
	    "# TYPE shoal_build_info gauge\n"
	    "shoal_build_info{version=\"%s\"} 1\n",
	    (unsigned long long)atomic_load(&r->searches_partial),
	    (unsigned long long)atomic_load(&r->searches_failed),
	    (unsigned long long)atomic_load(&r->retries),
	    (unsigned long long)atomic_load(&r->rerouted),
	    (unsigned long long)atomic_load(&r->map_reloads),
	    (unsigned long long)atomic_load(&r->move_steps),
	    (unsigned long long)atomic_load(&r->move_errors),
	    (unsigned long long)epoch, nmap, SHOAL_VERSION);
}
