/*
 * Where the cluster map lives: a JSON file of the router's (one router, the
 * default), or one etcd key that several routers share (--etcd). Either
 * way every change is a compare-and-swap on the store's version of the map,
 * so two changes made at once cannot both win: the second gets SH_ESTALE
 * and must re-read.
 *
 *   file  version = the map's epoch; only this process writes the file,
 *         so the compare is against what it last read or wrote.
 *   etcd  version = the key's mod_revision; the swap is one etcd
 *         transaction, and routers wait for changes with a watch.
 *
 * Any thread may call; calls on one store are not serialised here (the
 * router serialises its changes with its admin mutex).
 */
#ifndef SH_MAPSTORE_H
#define SH_MAPSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "map.h"

typedef struct sh_mapstore sh_mapstore;

/* The map in the file at path. Returns SH_OK or SH_ENOMEM. */
int sh_mapstore_file(const char *path, sh_mapstore **out, char *err,
		     size_t errlen);

/* The map in etcd key `key` at endpoints ("http://h:2379[,...]"). Returns
 * SH_OK, SH_EINVAL (bad endpoints or key) or SH_ENOMEM. Nothing is asked
 * of etcd yet. */
int sh_mapstore_etcd(const char *endpoints, const char *key, int timeout_ms,
		     sh_mapstore **out, char *err, size_t errlen);

void sh_mapstore_close(sh_mapstore *s); /* NULL is a no-op */

/* Reads the map. SH_OK with *m and *version; SH_ENOTFOUND when there is
 * none yet; SH_ECORRUPT (not a valid map), SH_EIO (unreachable),
 * SH_ETIMEDOUT, SH_ENOMEM, with a message. */
int sh_mapstore_load(sh_mapstore *s, sh_map *m, int64_t *version, char *err,
		     size_t errlen);

/* Stores m if the stored map is still at `expect` (0: only if there is
 * none). SH_OK with *version; SH_ESTALE when it changed meanwhile (nothing
 * written); SH_EIO, SH_ETIMEDOUT (etcd: the outcome is unknown, re-read),
 * SH_ETOOBIG, SH_ENOMEM. */
int sh_mapstore_cas(sh_mapstore *s, const sh_map *m, int64_t expect,
		    int64_t *version, char *err, size_t errlen);

/* Blocks until the stored map changes after `version` or timeout_ms
 * passes: SH_OK (changed: re-read), SH_ETIMEDOUT, SH_EIO. A file store has
 * no other writer: SH_EUNSUPPORTED at once. */
int sh_mapstore_wait(sh_mapstore *s, int64_t version, int timeout_ms, char *err,
		     size_t errlen);

/* Whether other routers may change the map (etcd). */
bool sh_mapstore_shared(const sh_mapstore *s);

/* "file /path" or "etcd key /shoal/map at http://...", for messages. */
const char *sh_mapstore_where(const sh_mapstore *s);

#endif
