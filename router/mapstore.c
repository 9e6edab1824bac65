/* The cluster map's store: a file or an etcd key. See mapstore.h. */
#include "mapstore.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "etcd.h"

struct sh_mapstore {
	char where[600];
	char path[4096]; /* file */
	int64_t version; /* file: the epoch last read or written */
	sh_etcd *etcd;	 /* etcd; NULL for a file */
	char key[SH_ETCD_MAX_KEY + 1];
};

int sh_mapstore_file(const char *path, sh_mapstore **out, char *err,
		     size_t errlen)
{
	sh_mapstore *s = calloc(1, sizeof(*s));
	if (!s)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	snprintf(s->path, sizeof(s->path), "%s", path);
	snprintf(s->where, sizeof(s->where), "file %s", path);
	*out = s;
	return SH_OK;
}

int sh_mapstore_etcd(const char *endpoints, const char *key, int timeout_ms,
		     sh_mapstore **out, char *err, size_t errlen)
{
	*out = NULL;
	size_t kl = key ? strlen(key) : 0;
	if (kl == 0 || kl > SH_ETCD_MAX_KEY)
		return sh_errf(err, errlen, SH_EINVAL, "etcd key: 1..%d bytes",
			       SH_ETCD_MAX_KEY);
	sh_mapstore *s = calloc(1, sizeof(*s));
	if (!s)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	int rc = sh_etcd_open(endpoints, timeout_ms, &s->etcd, err, errlen);
	if (rc) {
		free(s);
		return rc;
	}
	snprintf(s->key, sizeof(s->key), "%s", key);
	snprintf(s->where, sizeof(s->where), "etcd key %.200s at %.300s", key,
		 endpoints);
	*out = s;
	return SH_OK;
}

void sh_mapstore_close(sh_mapstore *s)
{
	if (!s)
		return;
	sh_etcd_close(s->etcd);
	free(s);
}

bool sh_mapstore_shared(const sh_mapstore *s)
{
	return s->etcd != NULL;
}

const char *sh_mapstore_where(const sh_mapstore *s)
{
	return s->where;
}

int sh_mapstore_load(sh_mapstore *s, sh_map *m, int64_t *version, char *err,
		     size_t errlen)
{
	if (!s->etcd) {
		int rc = sh_map_load(m, s->path, err, errlen);
		if (rc == SH_OK)
			*version = s->version = (int64_t)m->epoch;
		return rc;
	}
	sh_etcd_kv kv;
	int rc = sh_etcd_get(s->etcd, s->key, &kv, err, errlen);
	if (rc == SH_ENOTFOUND)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "no cluster map in %s", s->where);
	if (rc)
		return rc;
	rc = sh_map_parse(m, kv.value, kv.len, s->key, err, errlen);
	if (rc == SH_OK)
		*version = kv.mod_revision;
	sh_etcd_kv_clear(&kv);
	return rc;
}

int sh_mapstore_cas(sh_mapstore *s, const sh_map *m, int64_t expect,
		    int64_t *version, char *err, size_t errlen)
{
	if (!s->etcd) {
		if (expect != s->version)
			return sh_errf(err, errlen, SH_ESTALE,
				       "the cluster map changed meanwhile "
				       "(epoch %lld, not %lld)",
				       (long long)s->version,
				       (long long)expect);
		int rc = sh_map_save(m, s->path, err, errlen);
		if (rc == SH_OK)
			*version = s->version = (int64_t)m->epoch;
		return rc;
	}
	char *text = sh_map_to_json(m, false);
	if (!text)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	int rc = sh_etcd_cas(s->etcd, s->key, text, strlen(text), expect,
			     version, err, errlen);
	cJSON_free(text);
	if (rc == SH_ESTALE)
		return sh_errf(
		    err, errlen, SH_ESTALE,
		    "the cluster map in %s changed meanwhile (another "
		    "router or shoalctl): re-read it",
		    s->where);
	return rc;
}

int sh_mapstore_wait(sh_mapstore *s, int64_t version, int timeout_ms, char *err,
		     size_t errlen)
{
	if (!s->etcd)
		return sh_errf(err, errlen, SH_EUNSUPPORTED,
			       "a map file has no other writer to wait for");
	return sh_etcd_wait(s->etcd, s->key, version, timeout_ms, NULL, err,
			    errlen);
}
