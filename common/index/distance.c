/*
 * Distance kernels: choosing a table at run time.
 *
 * The SIMD tables live in files compiled with their instruction set enabled
 * (distance_avx2.c, distance_avx512.c); this file is compiled without, and
 * references a table only when meson compiled it (SH_HAVE_AVX2,
 * SH_HAVE_AVX512) and only calls into it after the CPU has reported every
 * feature the table's file was compiled for.
 *
 * sh_kernels_get() decides once per process, under pthread_once: the best table
 * the CPU can run, or the one SHOAL_KERNELS names if the CPU can run it.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "distance_impl.h"

const sh_kernels *sh_kernels_scalar(void)
{
	return &sh_kernels_scalar_table;
}

const sh_kernels *sh_kernels_avx2(void)
{
#if SH_HAVE_AVX2
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return &sh_kernels_avx2_table;
#endif
	return NULL;
}

const sh_kernels *sh_kernels_avx512(void)
{
#if SH_HAVE_AVX512
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vl") &&
	    __builtin_cpu_supports("avx512vnni") &&
	    __builtin_cpu_supports("fma"))
		return &sh_kernels_avx512_table;
#endif
	return NULL;
}

static const sh_kernels *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static const sh_kernels *best(void)
{
	const sh_kernels *k;

	if ((k = sh_kernels_avx512()) != NULL)
		return k;
	if ((k = sh_kernels_avx2()) != NULL)
		return k;
	return sh_kernels_scalar();
}

/* The table SHOAL_KERNELS names, or NULL if it names none or one this CPU
 * cannot run. */
static const sh_kernels *requested(void)
{
	const char *want = getenv("SHOAL_KERNELS");

	if (want == NULL)
		return NULL;
	if (strcmp(want, "scalar") == 0)
		return sh_kernels_scalar();
	if (strcmp(want, "avx2") == 0)
		return sh_kernels_avx2();
	if (strcmp(want, "avx512") == 0)
		return sh_kernels_avx512();
	return NULL;
}

static void choose(void)
{
	const sh_kernels *k = requested();

	chosen = k != NULL ? k : best();
}

const sh_kernels *sh_kernels_get(void)
{
	pthread_once(&chosen_once, choose);
	return chosen;
}
