/*
 * Reading and writing the TEXMEX vector formats used by ANN benchmarks.
 *
 * .fvecs / .ivecs: per vector, a little-endian int32 dimension followed by
 * that many float32 / int32 values. .labels: one byte per vector.
 *
 * The readers trust nothing in the file: every dimension header is checked
 * against the first, the file length must be a whole number of records,
 * sizes are checked for overflow before anything is allocated, and floats
 * must be finite. On error they return -1 with a message (naming the file
 * and the record) in err and leave *out NULL; they never abort.
 */
#ifndef SH_BENCH_FVECS_H
#define SH_BENCH_FVECS_H

#include <stddef.h>
#include <stdint.h>

/* Largest dimension a header may claim (a sanity bound, not shoal's). */
#define FV_MAX_DIM (1u << 20)

/* Reads the first min(limit, count) vectors (limit 0: all). *n gets how many
 * were read, *n_file how many the file holds (optional), *dim the
 * dimension. The array is malloc'd: free() it. */
int fv_read_fvecs(const char *path, size_t limit, float **out, size_t *n,
		  size_t *n_file, uint32_t *dim, char *err, size_t errlen);
int fv_read_ivecs(const char *path, size_t limit, int32_t **out, size_t *n,
		  size_t *n_file, uint32_t *dim, char *err, size_t errlen);

/* Reads a .labels file; *n gets its length (one label per vector). */
int fv_read_labels(const char *path, uint8_t **out, size_t *n, char *err,
		   size_t errlen);

int fv_write_fvecs(const char *path, const float *v, size_t n, uint32_t dim,
		   char *err, size_t errlen);
int fv_write_ivecs(const char *path, const int32_t *v, size_t n, uint32_t dim,
		   char *err, size_t errlen);
int fv_write_labels(const char *path, const uint8_t *v, size_t n, char *err,
		    size_t errlen);

#endif
