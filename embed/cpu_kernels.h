/*
 * The element-wise and attention kernels of the CPU backend (cpu.c), one
 * table per instruction set. cpu_kernels.c is compiled once per set
 * (EMBED_KVARIANT = generic, avx2, avx512; see meson.build) and cpu.c picks
 * the best one the CPU has when a context is created.
 *
 * Matrices are row-major float32; "ld" is the distance between rows in
 * floats. All functions are pure (no state), any thread.
 */
#ifndef EMBED_CPU_KERNELS_H
#define EMBED_CPU_KERNELS_H

#include <stdint.h>

struct embed_kernels {
	const char *name;
	/* x[r][c] += b[c] for rows x cols. */
	void (*add_bias)(float *x, const float *b, int rows, int cols);
	/* x[r][c] = gelu(x[r][c] + b[c]), the exact erf form (erf evaluated
	 * to ~1.5e-7 absolute). */
	void (*bias_gelu)(float *x, const float *b, int rows, int cols);
	/* x[r] = LayerNorm(x[r] + y[r] + b) * g + beta, post-norm BERT.
	 * y and b may be NULL (plain LayerNorm). */
	void (*add_layernorm)(float *x, const float *y, const float *b,
			      const float *g, const float *beta, int rows,
			      int cols, float eps);
	/* One head of one text, by hand (short texts): out[i] =
	 * softmax(scale * q[i] . k[j], j < n) @ v, for i < n; q, k, v, out
	 * rows of d floats, ld apart. scratch: n floats. */
	void (*attend)(const float *q, const float *k, const float *v, int ld,
		       float *out, int ldo, int n, int d, float scale,
		       float *scratch);
	/* s[r][0..cols) = softmax(s[r][0..cols)) for rows rows, ld apart. */
	void (*softmax_rows)(float *s, int rows, int cols, int ld);
	/* out[rows, n] = x[rows, k] . w[n, k]^T for a few rows (short
	 * texts), where sgemm would spend its time packing w. */
	void (*linear_small)(const float *x, int rows, int k, const float *w,
			     int n, float *out);
	/* The same with IEEE half weights (the model's own F16 values, so
	 * no precision is lost): half the bytes to stream, which is what a
	 * few rows are bound by. NULL where the CPU cannot convert halves
	 * (no F16C). */
	void (*linear_small_h)(const float *x, int rows, int k,
			       const uint16_t *w, int n, float *out);
};

extern const struct embed_kernels embed_kernels_generic;
extern const struct embed_kernels embed_kernels_avx2;
extern const struct embed_kernels embed_kernels_avx512;

#endif
