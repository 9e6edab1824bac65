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

#define MAP_FORMAT 1
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
	for (uint32_t s = 0; s < SH_SLOTS; s++)
		m->owner[s] = (uint32_t)((uint64_t)s * n / SH_SLOTS) + 1;
	m->epoch = 1;
	return SH_OK;
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
	uint32_t max = 0;
	for (uint32_t i = 0; i < m->nnodes; i++) {
		if (strcmp(m->nodes[i].address, address) == 0)
			return sh_errf(err, errlen, SH_EEXIST,
				       "node %s is already node %u", address,
				       m->nodes[i].id);
		if (m->nodes[i].id > max)
			max = m->nodes[i].id;
	}
	if (m->nnodes == SH_MAP_MAX_NODES)
		return sh_errf(err, errlen, SH_EFULL, "the map holds %d nodes",
			       SH_MAP_MAX_NODES);
	sh_map_node *nd = &m->nodes[m->nnodes++];
	nd->id = max + 1;
	snprintf(nd->address, sizeof(nd->address), "%s", address);
	m->epoch++;
	*id = nd->id;
	return SH_OK;
}

/* ---- The file ---------------------------------------------------------- */

static int corrupt(char *err, size_t errlen, const char *path, const char *why)
{
	return sh_errf(err, errlen, SH_ECORRUPT, "cluster map %s: %s", path,
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

static bool get_uint(const cJSON *o, const char *key, double max, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > max ||
	    v->valuedouble != (double)(uint64_t)v->valuedouble)
		return false;
	*out = v->valuedouble;
	return true;
}

static int parse(sh_map *m, const char *text, size_t len, const char *path,
		 char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	cJSON *o = cJSON_ParseWithLength(text, len);
	int rc = SH_OK;
	double v;
	static const char *const top[] = {"format", "epoch", "nodes", "slots"};
	static const char *const nkeys[] = {"id", "address"};
	static const char *const skeys[] = {"first", "last", "node"};
	if (!cJSON_IsObject(o)) {
		rc = corrupt(err, errlen, path, "not a JSON object");
		goto out;
	}
	if (!only_keys(o, top, 4) || !get_uint(o, "format", 1e6, &v) ||
	    v != MAP_FORMAT) {
		rc = corrupt(err, errlen, path,
			     "unknown format or members (this router reads "
			     "format 1)");
		goto out;
	}
	if (!get_uint(o, "epoch", 9007199254740992.0, &v) || v < 1) {
		rc = corrupt(err, errlen, path, "epoch: a positive integer");
		goto out;
	}
	m->epoch = (uint64_t)v;
	const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(o, "nodes");
	const cJSON *slots = cJSON_GetObjectItemCaseSensitive(o, "slots");
	if (!cJSON_IsArray(nodes) || !cJSON_IsArray(slots)) {
		rc = corrupt(err, errlen, path, "nodes and slots: arrays");
		goto out;
	}
	const cJSON *n;
	cJSON_ArrayForEach(n, nodes)
	{
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(n, "address");
		if (!cJSON_IsObject(n) || !only_keys(n, nkeys, 2) ||
		    !get_uint(n, "id", 1e9, &v) || v < 1 ||
		    !cJSON_IsString(a) || !addr_ok(a->valuestring) ||
		    m->nnodes == SH_MAP_MAX_NODES) {
			rc = corrupt(err, errlen, path, "bad node entry");
			goto out;
		}
		for (uint32_t i = 0; i < m->nnodes; i++)
			if (m->nodes[i].id >= (uint32_t)v ||
			    strcmp(m->nodes[i].address, a->valuestring) == 0) {
				rc = corrupt(err, errlen, path,
					     "node ids must ascend and "
					     "addresses be unique");
				goto out;
			}
		m->nodes[m->nnodes].id = (uint32_t)v;
		snprintf(m->nodes[m->nnodes].address,
			 sizeof(m->nodes[m->nnodes].address), "%s",
			 a->valuestring);
		m->nnodes++;
	}
	if (m->nnodes == 0) {
		rc = corrupt(err, errlen, path, "no nodes");
		goto out;
	}
	uint32_t next = 0; /* slots must be covered in order, once */
	const cJSON *s;
	cJSON_ArrayForEach(s, slots)
	{
		double first, last, node;
		if (!cJSON_IsObject(s) || !only_keys(s, skeys, 3) ||
		    !get_uint(s, "first", SH_SLOTS - 1, &first) ||
		    !get_uint(s, "last", SH_SLOTS - 1, &last) ||
		    !get_uint(s, "node", 1e9, &node) ||
		    (uint32_t)first != next || last < first ||
		    sh_map_node_index(m, (uint32_t)node) < 0) {
			rc = corrupt(err, errlen, path,
				     "slots must be ranges covering 0..16383 "
				     "in order, each owned by a listed node");
			goto out;
		}
		for (uint32_t x = (uint32_t)first; x <= (uint32_t)last; x++)
			m->owner[x] = (uint32_t)node;
		next = (uint32_t)last + 1;
	}
	if (next != SH_SLOTS)
		rc = corrupt(err, errlen, path, "slots do not cover 0..16383");
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
		rc = parse(m, buf, len, path, err, errlen);
	free(buf);
	return rc;
}

int sh_map_save(const sh_map *m, const char *path, char *err, size_t errlen)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *nodes = cJSON_AddArrayToObject(o, "nodes");
	cJSON *slots = cJSON_AddArrayToObject(o, "slots");
	bool ok = o && nodes && slots &&
		  cJSON_AddNumberToObject(o, "format", MAP_FORMAT) &&
		  cJSON_AddNumberToObject(o, "epoch", (double)m->epoch);
	for (uint32_t i = 0; ok && i < m->nnodes; i++) {
		cJSON *n = cJSON_CreateObject();
		ok = n && cJSON_AddItemToArray(nodes, n) &&
		     cJSON_AddNumberToObject(n, "id", m->nodes[i].id) &&
		     cJSON_AddStringToObject(n, "address", m->nodes[i].address);
	}
	for (uint32_t s = 0; ok && s < SH_SLOTS; s++) {
		uint32_t e = s;
		while (e + 1 < SH_SLOTS && m->owner[e + 1] == m->owner[s])
			e++;
		cJSON *r = cJSON_CreateObject();
		ok = r && cJSON_AddItemToArray(slots, r) &&
		     cJSON_AddNumberToObject(r, "first", s) &&
		     cJSON_AddNumberToObject(r, "last", e) &&
		     cJSON_AddNumberToObject(r, "node", m->owner[s]);
		s = e;
	}
	char *text = ok ? cJSON_Print(o) : NULL;
	cJSON_Delete(o);
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
