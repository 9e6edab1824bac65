/* Shared helpers for the unit tests: deterministic data and recall. */
#ifndef SH_TESTUTIL_H
#define SH_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "hnsw.h"

static inline uint64_t tu_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static inline float tu_unif(uint64_t *s)
{
	return (float)((tu_rand(s) >> 11) * (1.0 / 9007199254740992.0));
}

static inline float tu_gauss(uint64_t *s)
{
	float u = tu_unif(s), v = tu_unif(s);
	if (u < 1e-12f)
		u = 1e-12f;
	return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* n vectors of dim floats around `nclus` random centres (malloc'd). */
static inline float *tu_clustered(size_t n, size_t dim, size_t nclus,
				  uint64_t seed)
{
	uint64_t s = seed;
	float *c = malloc(nclus * dim * sizeof(float));
	float *v = malloc(n * dim * sizeof(float));
	for (size_t i = 0; i < nclus * dim; i++)
		c[i] = tu_gauss(&s) * 3.0f;
	for (size_t i = 0; i < n; i++) {
		size_t k = tu_rand(&s) % nclus;
		float spread = 0.5f + (float)(k % 3) * 0.5f;
		for (size_t j = 0; j < dim; j++)
			v[i * dim + j] = c[k * dim + j] + tu_gauss(&s) * spread;
	}
	free(c);
	return v;
}

/* |a ∩ b| / k over point ids. */
static inline double tu_overlap(const sh_hnsw_hit *a, size_t na,
				const sh_hnsw_hit *b, size_t nb, size_t k)
{
	size_t hit = 0;
	for (size_t i = 0; i < na && i < k; i++)
		for (size_t j = 0; j < nb && j < k; j++)
			if (sh_pid_eq(&a[i].pid, &b[j].pid)) {
				hit++;
				break;
			}
	size_t denom = nb < k ? nb : k;
	return denom ? (double)hit / (double)denom : 1.0;
}

#endif
