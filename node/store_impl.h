/*
 * Private to node/store*.c: the record layout constants, the store's
 * structures and the helpers its files share. store.h describes the layout.
 */
#ifndef SH_STORE_IMPL_H
#define SH_STORE_IMPL_H

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdint.h>
#include <string.h>

#include "store.h"

/* Sets this thread's sh_store_last_error() message; returns code. */
__attribute__((format(printf, 2, 3))) int store_fail(int code, const char *fmt,
						     ...);

/* The same for a RocksDB error string, which it frees; returns SH_EIO. */
int store_fail_rocks(char *rerr, const char *what);

/* Reads the meta CF into st's collection table (at open). */
int store_meta_load(sh_store *st);

/* ---- Byte order ---------------------------------------------------------- */

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static inline uint32_t get_le32(const uint8_t *p)
{
	return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[1] << 8) | p[0];
}

static inline uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* n float32 to/from little-endian bytes (a memcpy on every machine we run
 * on; the loop keeps the format defined elsewhere). */
static inline void put_floats(uint8_t *p, const float *v, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(p, v, n * sizeof(float));
#else
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, &v[i], 4);
		put_le32(p + 4 * i, u);
	}
#endif
}

static inline void get_floats(float *v, const uint8_t *p, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(v, p, n * sizeof(float));
#else
	for (size_t i = 0; i < n; i++) {
		uint32_t u = get_le32(p + 4 * i);
		memcpy(&v[i], &u, 4);
	}
#endif
}

/* ---- The store ----------------------------------------------------------- */

enum { CF_DEFAULT, CF_META, CF_POINTS, CF_GRAPH, CF_PAYLOAD_IDX, NCF };

/* Graph record kinds: the key byte after the iid. TOMB sorts before NODE so
 * the loader knows a node's flag when it reaches the NODE record. */
enum { GK_TOMB = 0, GK_NODE = 1, GK_LINKS = 2, GK_ENTRY = 3 };
#define GRAPH_KEY_LEN 10 /* coll u32, iid u32, kind u8, level u8 */
#define ENTRY_IID UINT32_MAX

#define POINT_HDR 19 /* format, flags, version u64, iid u32, len u32 */
#define POINT_KEY_MAX (4 + 2 + 1 + SH_PID_MAX_STR)
#define PF_DELETED 0x01

#define NODE_HDR 5 /* format, level, tombstone, pid kind, pid len */

struct sh_store {
	rocksdb_t *db;
	rocksdb_options_t *dbopts;
	rocksdb_options_t *cfopts[NCF];
	rocksdb_block_based_table_options_t *tbl[NCF];
	rocksdb_cache_t *cache;
	rocksdb_column_family_handle_t *cf[NCF];
	rocksdb_writeoptions_t *wopts;	    /* per the fsync policy */
	rocksdb_writeoptions_t *wopts_sync; /* collection create / drop */
	rocksdb_readoptions_t *ropts;	    /* point reads */
	sh_fsync fsync;

	/* The collection table, a copy of the meta CF kept sorted by id.
	 * meta_lock guards colls, ncolls, capcolls and next_id, and
	 * serialises create and drop (so name checks and id assignment are
	 * atomic with the meta write). */
	pthread_mutex_t meta_lock;
	sh_store_coll *colls;
	size_t ncolls, capcolls;
	uint32_t next_id;
};

struct sh_store_batch {
	sh_store *st;
	rocksdb_writebatch_t *wb;
	int err;      /* first failing add; SH_OK if none */
	uint8_t *buf; /* value scratch, grown on demand */
	size_t cap;
};

#endif
