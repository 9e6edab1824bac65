/*
 * Distance kernels.
 *
 * One table of function pointers per instruction set: a portable scalar
 * table, an AVX2+FMA table and an AVX-512 (F, BW, VL, VNNI) table. The best
 * table the CPU supports is chosen once, on first use of sh_kernels_get(), from
 * the CPU's feature bits; the environment variable SHOAL_KERNELS=scalar|avx2|
 * avx512 forces a lower one (for tests and benchmarks; asking for a table the
 * CPU cannot run falls back to the best it can).
 *
 * All kernels are pure functions: no allocation, no global state, callable
 * from any thread. Pointers need no particular alignment. n may be any value
 * >= 1 (tails are handled with masked loads in the SIMD versions, never by
 * reading past the end).
 *
 * Float results of the SIMD kernels differ from the scalar ones only by the
 * order of summation (relative error around 1e-6 for typical data). Integer
 * kernels are exact and agree bit for bit.
 */
#ifndef SH_DISTANCE_H
#define SH_DISTANCE_H

#include <stddef.h>
#include <stdint.h>

typedef float (*sh_kernel_f32_fn)(const float *a, const float *b, size_t n);
typedef int32_t (*sh_kernel_i8_fn)(const int8_t *a, const int8_t *b, size_t n);
typedef int32_t (*sh_kernel_u8i8_fn)(const uint8_t *a, const int8_t *b,
				     size_t n);
typedef uint32_t (*sh_kernel_u8_fn)(const uint8_t *a, const uint8_t *b,
				    size_t n);

typedef struct sh_kernels {
	const char *name; /* "scalar", "avx2" or "avx512" */
	/* sum((a[i] - b[i])^2) */
	sh_kernel_f32_fn l2sq_f32;
	/* sum(a[i] * b[i]) */
	sh_kernel_f32_fn dot_f32;
	/* sum(a[i] * b[i]) over signed bytes; exact for n < 2^17 (n = 2^17
	 * vectors of -128 sum to 2^31) */
	sh_kernel_i8_fn dot_i8;
	/* sum((a[i] - b[i])^2) over signed bytes; exact for n <= 2^15 */
	sh_kernel_i8_fn l2sq_i8;
	/* sum(a[i] * b[i]), a unsigned, b signed: the shape of AVX-512 VNNI's
	 * vpdpbusd; exact for n <= 2^16 */
	sh_kernel_u8i8_fn dot_u8i8;
	/* sum(a[i] * b[i]) over unsigned bytes; exact for n <= 2^16 */
	sh_kernel_u8_fn dot_u8;
} sh_kernels;

/* The table chosen for this process (see above). Never NULL; thread-safe.
 * (Named _get because C keeps types and functions in one namespace.) */
const sh_kernels *sh_kernels_get(void);

/* A specific table, or NULL when it was not compiled in or this CPU cannot
 * run it. sh_kernels_scalar() is never NULL. For tests and benchmarks. */
const sh_kernels *sh_kernels_scalar(void);
const sh_kernels *sh_kernels_avx2(void);
const sh_kernels *sh_kernels_avx512(void);

#endif
