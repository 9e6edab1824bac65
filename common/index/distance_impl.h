/*
 * Distance kernels: declarations shared by the kernel files and the
 * dispatcher (distance.c). Private to common/index; users include distance.h.
 *
 * Each distance_<isa>.c defines one table. distance.c references the SIMD
 * tables only when their file was compiled (SH_HAVE_AVX2, SH_HAVE_AVX512) and
 * hands them out only when the CPU can run them.
 */
#ifndef SH_DISTANCE_IMPL_H
#define SH_DISTANCE_IMPL_H

#include "distance.h"

extern const sh_kernels sh_kernels_scalar_table, sh_kernels_avx2_table,
    sh_kernels_avx512_table;

#endif
