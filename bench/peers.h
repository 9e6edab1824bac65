/*
 * The C ABI between shoal-bench (C) and its peer engines (C++ adapters).
 *
 * Each adapter fills one sh_peer_ops table. Nothing C++ crosses this line:
 * the adapters catch every exception and turn it into an error return with
 * a message (sh_peer_ops.errmsg, per thread).
 *
 * A table is defined only when its adapter was compiled (HAVE_HNSWLIB /
 * HAVE_FAISS in shoal_config.h).
 */
#ifndef SH_BENCH_PEERS_H
#define SH_BENCH_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Same numbers as sh_metric. Cosine: the adapter normalises what it adds
 * and every query (into its own copies) and searches by inner product. */
enum sh_peer_metric {
	SH_PEER_L2 = 0,
	SH_PEER_IP = 1,
	SH_PEER_COSINE = 2,
};

/* Which base points a search may return: base index i passes when bit
 * (i & 7) of bits[i >> 3] is set; indices >= n fail. */
typedef struct sh_peer_filter {
	const uint8_t *bits;
	size_t n;
} sh_peer_filter;

typedef struct sh_peer sh_peer;

typedef struct sh_peer_ops {
	const char *name;
	/* Whether search() honours a filter; when false, filter_why says why
	 * and search() with a filter fails. */
	bool filter_ok;
	const char *filter_why;
	/* How mem_bytes() is counted, for the report. */
	const char *mem_how;

	/* An empty index for up to max_n points, ids 0..max_n-1. NULL on
	 * error, with a message in err. */
	sh_peer *(*create)(uint32_t dim, int metric, uint32_t m, uint32_t efc,
			   uint64_t seed, size_t max_n, char *err,
			   size_t errlen);
	/* Adds one point with id i (the base index). 0 or -1. */
	int (*add)(sh_peer *p, uint64_t i, const float *vec);
	/* Adds points 0..n-1 of base (n x dim, row-major) the engine's own
	 * parallel way with `threads` threads. 0 or -1. */
	int (*add_all)(sh_peer *p, const float *base, size_t n,
		       unsigned threads);
	/* Search-time candidate list size. Not concurrent with search(). */
	void (*set_ef)(sh_peer *p, size_t ef);
	/* Up to k nearest base ids, closest first, into out_ids; *nout gets
	 * the count. f may be NULL. Any number of threads at once. 0 or -1. */
	int (*search)(sh_peer *p, const float *q, size_t k,
		      const sh_peer_filter *f, int64_t *out_ids, size_t *nout);
	uint64_t (*mem_bytes)(const sh_peer *p);
	void (*free)(sh_peer *p);
	/* The last error of the calling thread ("" if none). */
	const char *(*errmsg)(void);
} sh_peer_ops;

extern const sh_peer_ops sh_peer_hnswlib_ops;
extern const sh_peer_ops sh_peer_faiss_ops;

#ifdef __cplusplus
}
#endif

#endif
