/* The cluster map and its file. See map.h. */
#include "map.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "pid.h"

#define MAP_FORMAT 2
/* A map file is small (a few KiB); anything far larger is not one. */
#define MAP_MAX_FILE (4u << 20)

static int addr_ok(const char *a)
{
	size_t n = a ? strlen(a) : 0;
	return n > 0 && n <= SH_MAP_MAX_ADDR && sh_utf8_valid(a, n);
}

int sh_map_init(sh_map *m, const char *const *addresses, size_t n, char *err,
		size_t errlen)
{
	memset(m, 0, sizeof(*m));
	if (n == 0 || n > SH_MAP_MAX_NODES)
		return sh_errf(err, errlen, SH_EINVAL,
			       "a cluster needs 1..%d nodes, not %zu",
			       SH_MAP_MAX_NODES, n);
	for (size_t i = 0; i < n; i++) {
		if (!addr_ok(addresses[i]))
			return sh_errf(err, errlen, SH_EINVAL,
				       "node address %zu: 1..%d bytes", i + 1,
				       SH_MAP_MAX_ADDR);
		for (size_t j = 0; j < i; j++)
			if (strcmp(addresses[i], addresses[j]) == 0)
				return sh_errf(err, errlen, SH_EINVAL,
					       "node address %s given twice",
					       addresses[i]);
		m->nodes[i].id = (uint32_t)i + 1;
		snprintf(m->nodes[i].address, sizeof(m->nodes[i].address), "%s",
			 addresses[i]);
	}
	m->nnodes = (uint32_t)n;
	for (uint32_t s = 0; s < SH_SLOTS; s++) {
		m->owner[s] = (uint32_t)((uint64_t)s * n / SH_SLOTS) + 1;
		m->slot_epoch[s] = 1;
	}
	m->epoch = 1;
	m->next_id = 1;
	m->next_node = (uint32_t)n + 1;
	return SH_OK;
}

static const char *const state_names[] = {
    "",		  "pending",  "prepared", "copying", "fenced",
    "handed_off", "switched", "done",	  "aborted",
};

const char *sh_move_state_name(int state)
{
	return state >= SH_MOVE_PENDING && state <= SH_MOVE_ABORTED
		   ? state_names[state]
		   : "unknown";
}

bool sh_move_terminal(int state)
{
	return state == SH_MOVE_DONE || state == SH_MOVE_ABORTED;
}

sh_map_move *sh_map_current_move(sh_map *m)
{
	for (uint32_t i = 0; m->job.id && i < m->job.nmoves; i++)
		if (!sh_move_terminal(m->job.moves[i].state))
			return &m->job.moves[i];
	return NULL;
}

sh_map_move *sh_map_find_move(sh_map *m, uint64_t id)
{
	for (uint32_t i = 0; m->job.id && i < m->job.nmoves; i++)
		if (m->job.moves[i].id == id)
			return &m->job.moves[i];
	return NULL;
}

bool sh_map_job_active(const sh_map *m)
{
	return sh_map_current_move((sh_map *)m) != NULL;
}

uint32_t sh_map_slot_count(const sh_map *m, uint32_t id)
{
	uint32_t n = 0;
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		n += m->owner[s] == id;
	return n;
}

int sh_map_node_index(const sh_map *m, uint32_t id)
{
	for (uint32_t i = 0; i < m->nnodes; i++)
		if (m->nodes[i].id == id)
			return (int)i;
	return -1;
}

size_t sh_map_ranges(const sh_map *m, uint32_t id, uint32_t (*ranges)[2],
		     size_t cap)
{
	size_t n = 0;
	for (uint32_t s = 0; s < SH_SLOTS; s++) {
		if (m->owner[s] != id)
			continue;
		uint32_t e = s;
		while (e + 1 < SH_SLOTS && m->owner[e + 1] == id)
			e++;
		if (n < cap) {
			ranges[n][0] = s;
			ranges[n][1] = e;
		}
		n++;
		s = e;
	}
	return n;
}

int sh_map_add_node(sh_map *m, const char *address, uint32_t *id, char *err,
		    size_t errlen)
{
	if (!addr_ok(address))
		return sh_errf(err, errlen, SH_EINVAL,
			       "node address: 1..%d bytes of UTF-8",
			       SH_MAP_MAX_ADDR);
	for (uint32_t i = 0; i < m->nnodes; i++) {
		if (strcmp(m->nodes[i].address, address) == 0)
			return sh_errf(err, errlen, SH_EEXIST,
				       "node %s is already node %u", address,
				       m->nodes[i].id);
		if (m->nodes[i].id >= m->next_node)
			m->next_node = m->nodes[i].id + 1;
	}
	if (m->nnodes == SH_MAP_MAX_NODES)
		return sh_errf(err, errlen, SH_EFULL, "the map holds %d nodes",
			       SH_MAP_MAX_NODES);
	sh_map_node *nd = &m->nodes[m->nnodes++];
	nd->id = m->next_node++;
	snprintf(nd->address, sizeof(nd->address), "%s", address);
	m->epoch++;
	*id = nd->id;
	return SH_OK;
}

int sh_map_remove_node(sh_map *m, uint32_t id, char *err, size_t errlen)
{
	int i = sh_map_node_index(m, id);
	if (i < 0)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "node %u is not in the map", id);
	uint32_t owned = sh_map_slot_count(m, id);
	if (owned)
		return sh_errf(err, errlen, SH_EBUSY,
			       "node %u still owns %u slots: drain it first",
			       id, owned);
	for (uint32_t k = 0; m->job.id && k < m->job.nmoves; k++) {
		const sh_map_move *mv = &m->job.moves[k];
		if (!sh_move_terminal(mv->state) &&
		    (mv->from == id || mv->to == id))
			return sh_errf(err, errlen, SH_EBUSY,
				       "node %u takes part in move %llu, "
				       "which is not finished",
				       id, (unsigned long long)mv->id);
	}
	if (m->nnodes == 1)
		return sh_errf(err, errlen, SH_EBUSY,
			       "node %u is the last node", id);
	memmove(&m->nodes[i], &m->nodes[i + 1],
		(m->nnodes - (uint32_t)i - 1) * sizeof(m->nodes[0]));
	m->nnodes--;
	m->epoch++;
	return SH_OK;
}

/* ---- The file ---------------------------------------------------------- */

static int corrupt(char *err, size_t errlen, const char *where, const char *why)
{
	return sh_errf(err, errlen, SH_ECORRUPT, "cluster map %s: %s", where,
		       why);
}

static bool only_keys(const cJSON *o, const char *const *keys, size_t n)
{
	for (const cJSON *c = o->child; c; c = c->next) {
		bool ok = false;
		for (size_t i = 0; i < n && !ok; i++)
			ok = c->string && strcmp(c->string, keys[i]) == 0;
		if (!ok)
			return false;
	}
	return true;
}

/* An integer member in 0..max (exact in a double: max <= 2^53). */
static bool get_uint(const cJSON *o, const char *key, double max, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > max ||
	    v->valuedouble != (double)(uint64_t)v->valuedouble)
		return false;
	*out = v->valuedouble;
	return true;
}

/* An optional integer member: absent gives def. */
static bool opt_uint(const cJSON *o, const char *key, double max, double def,
		     double *out)
{
	if (!cJSON_GetObjectItemCaseSensitive(o, key)) {
		*out = def;
		return true;
	}
	return get_uint(o, key, max, out);
}

#define MAX_EXACT 9007199254740992.0 /* 2^53 */

static int parse_job(sh_map *m, const cJSON *j, const char *where, char *err,
		     size_t errlen)
{
	static const char *const jkeys[] = {
	    "id",	"description",	 "max_bytes_per_sec",
	    "grace_ms", "started_at_ms", "aborted",
	    "moves"};
	static const char *const mkeys[] = {
	    "id",    "first",  "last",		 "from", "to",
	    "state", "points", "switched_at_ms", "error"};
	double v;
	sh_map_job *job = &m->job;
	if (!cJSON_IsObject(j) || !only_keys(j, jkeys, 7) ||
	    !get_uint(j, "id", MAX_EXACT, &v) || v < 1)
		return corrupt(err, errlen, where, "job: bad entry");
	job->id = (uint64_t)v;
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "description");
	if (d &&
	    (!cJSON_IsString(d) || strlen(d->valuestring) > SH_MAP_MAX_DESC ||
	     !sh_utf8_valid(d->valuestring, strlen(d->valuestring))))
		return corrupt(err, errlen, where, "job: bad description");
	if (d)
		snprintf(job->description, sizeof(job->description), "%s",
			 d->valuestring);
	if (!opt_uint(j, "max_bytes_per_sec", MAX_EXACT, 0, &v))
		return corrupt(err, errlen, where,
			       "job: bad max_bytes_per_sec");
	job->max_bps = (uint64_t)v;
	if (!opt_uint(j, "grace_ms", 86400000, 0, &v))
		return corrupt(err, errlen, where, "job: bad grace_ms");
	job->grace_ms = (uint32_t)v;
	if (!opt_uint(j, "started_at_ms", MAX_EXACT, 0, &v))
		return corrupt(err, errlen, where, "job: bad started_at_ms");
	job->started_at_ms = (uint64_t)v;
	const cJSON *ab = cJSON_GetObjectItemCaseSensitive(j, "aborted");
	if (ab && !cJSON_IsBool(ab))
		return corrupt(err, errlen, where, "job: bad aborted");
	job->aborted = ab && cJSON_IsTrue(ab);
	const cJSON *moves = cJSON_GetObjectItemCaseSensitive(j, "moves");
	if (!cJSON_IsArray(moves))
		return corrupt(err, errlen, where,
			       "job: moves must be an array");
	const cJSON *mv;
	cJSON_ArrayForEach(mv, moves)
	{
		if (job->nmoves == SH_MAP_MAX_MOVES)
			return corrupt(err, errlen, where,
				       "job: too many moves");
		sh_map_move *x = &job->moves[job->nmoves];
		memset(x, 0, sizeof(*x));
		double id, first, last, from, to, pts, sw;
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(mv, "state");
		const cJSON *er = cJSON_GetObjectItemCaseSensitive(mv, "error");
		if (!cJSON_IsObject(mv) || !only_keys(mv, mkeys, 9) ||
		    !get_uint(mv, "id", MAX_EXACT, &id) || id < 1 ||
		    !get_uint(mv, "first", SH_SLOTS - 1, &first) ||
		    !get_uint(mv, "last", SH_SLOTS - 1, &last) ||
		    last < first || !get_uint(mv, "from", 1e9, &from) ||
		    !get_uint(mv, "to", 1e9, &to) || from == to ||
		    !opt_uint(mv, "points", MAX_EXACT, 0, &pts) ||
		    !opt_uint(mv, "switched_at_ms", MAX_EXACT, 0, &sw) ||
		    !cJSON_IsString(st) ||
		    (er && (!cJSON_IsString(er) ||
			    strlen(er->valuestring) > SH_MAP_MAX_ERROR)))
			return corrupt(err, errlen, where, "job: bad move");
		int state = 0;
		for (int k = SH_MOVE_PENDING; k <= SH_MOVE_ABORTED; k++)
			if (strcmp(st->valuestring, state_names[k]) == 0)
				state = k;
		if (!state)
			return corrupt(err, errlen, where,
				       "job: unknown move state");
		/* A finished move may name a node removed since. */
		if (!sh_move_terminal(state) &&
		    (sh_map_node_index(m, (uint32_t)from) < 0 ||
		     sh_map_node_index(m, (uint32_t)to) < 0))
			return corrupt(err, errlen, where,
				       "job: a move in flight names a node "
				       "not in the map");
		x->id = (uint64_t)id;
		x->first = (uint32_t)first;
		x->last = (uint32_t)last;
		x->from = (uint32_t)from;
		x->to = (uint32_t)to;
		x->state = (uint8_t)state;
		x->points = (uint64_t)pts;
		x->switched_at_ms = (uint64_t)sw;
		if (er)
			snprintf(x->error, sizeof(x->error), "%s",
				 er->valuestring);
		job->nmoves++;
	}
	return SH_OK;
}

int sh_map_parse(sh_map *m, const char *text, size_t len, const char *where,
		 char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	cJSON *o = cJSON_ParseWithLength(text, len);
	int rc = SH_OK;
	double v, format;
	static const char *const top[] = {
	    "format", "epoch", "next_id", "next_node", "nodes", "slots", "job"};
	static const char *const nkeys[] = {"id", "address"};
	static const char *const s1keys[] = {"first", "last", "node"};
	static const char *const s2keys[] = {"first", "last", "node", "epoch",
					     "moving_to"};
	if (!cJSON_IsObject(o)) {
		rc = corrupt(err, errlen, where, "not a JSON object");
		goto out;
	}
	static const char *const top1[] = {"format", "epoch", "nodes", "slots"};
	if (!get_uint(o, "format", 1e6, &format) ||
	    (format != 1 && format != MAP_FORMAT) ||
	    !only_keys(o, format == 1 ? top1 : top, format == 1 ? 4 : 7)) {
		rc = corrupt(err, errlen, where,
			     "unknown format or members (this router reads "
			     "formats 1 and 2)");
		goto out;
	}
	if (!get_uint(o, "epoch", MAX_EXACT, &v) || v < 1) {
		rc = corrupt(err, errlen, where, "epoch: a positive integer");
		goto out;
	}
	m->epoch = (uint64_t)v;
	if (!opt_uint(o, "next_id", MAX_EXACT, 1, &v) || v < 1) {
		rc = corrupt(err, errlen, where, "next_id: a positive integer");
		goto out;
	}
	m->next_id = (uint64_t)v;
	const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(o, "nodes");
	const cJSON *slots = cJSON_GetObjectItemCaseSensitive(o, "slots");
	if (!cJSON_IsArray(nodes) || !cJSON_IsArray(slots)) {
		rc = corrupt(err, errlen, where, "nodes and slots: arrays");
		goto out;
	}
	const cJSON *n;
	uint32_t max_id = 0;
	cJSON_ArrayForEach(n, nodes)
	{
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(n, "address");
		if (!cJSON_IsObject(n) || !only_keys(n, nkeys, 2) ||
		    !get_uint(n, "id", 1e9, &v) || v < 1 ||
		    !cJSON_IsString(a) || !addr_ok(a->valuestring) ||
		    m->nnodes == SH_MAP_MAX_NODES) {
			rc = corrupt(err, errlen, where, "bad node entry");
			goto out;
		}
		for (uint32_t i = 0; i < m->nnodes; i++)
			if (m->nodes[i].id >= (uint32_t)v ||
			    strcmp(m->nodes[i].address, a->valuestring) == 0) {
				rc = corrupt(err, errlen, where,
					     "node ids must ascend and "
					     "addresses be unique");
				goto out;
			}
		m->nodes[m->nnodes].id = (uint32_t)v;
		snprintf(m->nodes[m->nnodes].address,
			 sizeof(m->nodes[m->nnodes].address), "%s",
			 a->valuestring);
		m->nnodes++;
		max_id = (uint32_t)v;
	}
	if (m->nnodes == 0) {
		rc = corrupt(err, errlen, where, "no nodes");
		goto out;
	}
	if (!opt_uint(o, "next_node", 1e9, max_id + 1, &v) || v <= max_id) {
		rc = corrupt(err, errlen, where,
			     "next_node: above every node id");
		goto out;
	}
	m->next_node = (uint32_t)v;
	uint32_t next = 0; /* slots must be covered in order, once */
	const cJSON *s;
	cJSON_ArrayForEach(s, slots)
	{
		double first, last, node, ep, to;
		if (!cJSON_IsObject(s) ||
		    !only_keys(s, format == 1 ? s1keys : s2keys,
			       format == 1 ? 3 : 5) ||
		    !get_uint(s, "first", SH_SLOTS - 1, &first) ||
		    !get_uint(s, "last", SH_SLOTS - 1, &last) ||
		    !get_uint(s, "node", 1e9, &node) ||
		    !opt_uint(s, "epoch", (double)m->epoch, 1, &ep) ||
		    !opt_uint(s, "moving_to", 1e9, 0, &to) ||
		    (uint32_t)first != next || last < first ||
		    sh_map_node_index(m, (uint32_t)node) < 0 ||
		    (to != 0 &&
		     (to == node || sh_map_node_index(m, (uint32_t)to) < 0))) {
			rc = corrupt(err, errlen, where,
				     "slots must be ranges covering 0..16383 "
				     "in order, each owned by a listed node "
				     "(and moving to another listed one)");
			goto out;
		}
		for (uint32_t x = (uint32_t)first; x <= (uint32_t)last; x++) {
			m->owner[x] = (uint32_t)node;
			m->slot_epoch[x] = (uint64_t)ep;
			m->moving_to[x] = (uint32_t)to;
		}
		next = (uint32_t)last + 1;
	}
	if (next != SH_SLOTS) {
		rc = corrupt(err, errlen, where, "slots do not cover 0..16383");
		goto out;
	}
	const cJSON *job = cJSON_GetObjectItemCaseSensitive(o, "job");
	if (job && !cJSON_IsNull(job))
		rc = parse_job(m, job, where, err, errlen);
	if (rc == SH_OK && m->job.id) {
		for (uint32_t i = 0; i < m->job.nmoves; i++)
			if (m->job.moves[i].id >= m->next_id ||
			    m->job.id >= m->next_id) {
				rc = corrupt(err, errlen, where,
					     "next_id: above every move and "
					     "job id");
				break;
			}
	}
out:
	cJSON_Delete(o);
	return rc;
}

int sh_map_load(sh_map *m, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return errno == ENOENT
			   ? sh_errf(err, errlen, SH_ENOTFOUND,
				     "no cluster map at %s", path)
			   : sh_errf(err, errlen, SH_EIO, "cluster map %s: %s",
				     path, strerror(errno));
	char *buf = malloc(MAP_MAX_FILE + 1);
	if (!buf) {
		fclose(f);
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	}
	size_t len = fread(buf, 1, MAP_MAX_FILE + 1, f);
	int bad = ferror(f);
	fclose(f);
	int rc;
	if (bad)
		rc = sh_errf(err, errlen, SH_EIO, "cluster map %s: read error",
			     path);
	else if (len > MAP_MAX_FILE)
		rc = corrupt(err, errlen, path, "too large");
	else
		rc = sh_map_parse(m, buf, len, path, err, errlen);
	free(buf);
	return rc;
}

static bool add_job(cJSON *o, const sh_map_job *job)
{
	cJSON *j = cJSON_AddObjectToObject(o, "job");
	cJSON *moves = j ? cJSON_AddArrayToObject(j, "moves") : NULL;
	bool ok = j && moves &&
		  cJSON_AddNumberToObject(j, "id", (double)job->id) &&
		  cJSON_AddStringToObject(j, "description", job->description) &&
		  cJSON_AddNumberToObject(j, "max_bytes_per_sec",
					  (double)job->max_bps) &&
		  cJSON_AddNumberToObject(j, "grace_ms", job->grace_ms) &&
		  cJSON_AddNumberToObject(j, "started_at_ms",
					  (double)job->started_at_ms) &&
		  cJSON_AddBoolToObject(j, "aborted", job->aborted);
	for (uint32_t i = 0; ok && i < job->nmoves; i++) {
		const sh_map_move *mv = &job->moves[i];
		cJSON *x = cJSON_CreateObject();
		ok = x && cJSON_AddItemToArray(moves, x) &&
		     cJSON_AddNumberToObject(x, "id", (double)mv->id) &&
		     cJSON_AddNumberToObject(x, "first", mv->first) &&
		     cJSON_AddNumberToObject(x, "last", mv->last) &&
		     cJSON_AddNumberToObject(x, "from", mv->from) &&
		     cJSON_AddNumberToObject(x, "to", mv->to) &&
		     cJSON_AddStringToObject(x, "state",
					     sh_move_state_name(mv->state)) &&
		     cJSON_AddNumberToObject(x, "points", (double)mv->points) &&
		     cJSON_AddNumberToObject(x, "switched_at_ms",
					     (double)mv->switched_at_ms) &&
		     cJSON_AddStringToObject(x, "error", mv->error);
	}
	return ok;
}

char *sh_map_to_json(const sh_map *m, bool pretty)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *nodes = cJSON_AddArrayToObject(o, "nodes");
	cJSON *slots = cJSON_AddArrayToObject(o, "slots");
	bool ok = o && nodes && slots &&
		  cJSON_AddNumberToObject(o, "format", MAP_FORMAT) &&
		  cJSON_AddNumberToObject(o, "epoch", (double)m->epoch) &&
		  cJSON_AddNumberToObject(o, "next_id", (double)m->next_id) &&
		  cJSON_AddNumberToObject(o, "next_node", m->next_node);
	for (uint32_t i = 0; ok && i < m->nnodes; i++) {
		cJSON *n = cJSON_CreateObject();
		ok = n && cJSON_AddItemToArray(nodes, n) &&
		     cJSON_AddNumberToObject(n, "id", m->nodes[i].id) &&
		     cJSON_AddStringToObject(n, "address", m->nodes[i].address);
	}
	for (uint32_t s = 0; ok && s < SH_SLOTS; s++) {
		uint32_t e = s;
		while (e + 1 < SH_SLOTS && m->owner[e + 1] == m->owner[s] &&
		       m->slot_epoch[e + 1] == m->slot_epoch[s] &&
		       m->moving_to[e + 1] == m->moving_to[s])
			e++;
		cJSON *r = cJSON_CreateObject();
		ok = r && cJSON_AddItemToArray(slots, r) &&
		     cJSON_AddNumberToObject(r, "first", s) &&
		     cJSON_AddNumberToObject(r, "last", e) &&
		     cJSON_AddNumberToObject(r, "node", m->owner[s]) &&
		     cJSON_AddNumberToObject(r, "epoch",
					     (double)m->slot_epoch[s]);
		if (ok && m->moving_to[s])
			ok = cJSON_AddNumberToObject(r, "moving_to",
						     m->moving_to[s]) != NULL;
		s = e;
	}
	if (ok && m->job.id)
		ok = add_job(o, &m->job);
	char *text =
	    ok ? (pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o)) : NULL;
	cJSON_Delete(o);
	return text;
}

int sh_map_save(const sh_map *m, const char *path, char *err, size_t errlen)
{
	char *text = sh_map_to_json(m, true);
	if (!text)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int rc = SH_OK;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t len = strlen(text);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len ||
	    write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
		rc = sh_errf(err, errlen, SH_EIO, "writing %s: %s", tmp,
			     strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
	} else if (close(fd) != 0 || rename(tmp, path) != 0) {
		rc = sh_errf(err, errlen, SH_EIO, "replacing %s: %s", path,
			     strerror(errno));
		unlink(tmp);
	} else {
		char dir[4200];
		snprintf(dir, sizeof(dir), "%s", path);
		int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	cJSON_free(text);
	return rc;
}
