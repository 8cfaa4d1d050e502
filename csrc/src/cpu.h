/*
 * Run-time choice of the AVX-512 code paths (the encoder's estimation pass,
 * the DQ trellis): compiled where the compiler can target AVX-512, taken
 * where the CPU has it.
 */
#ifndef DCABAC_CPU_H
#define DCABAC_CPU_H

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define DCABAC_HAVE_AVX512 1
#else
#define DCABAC_HAVE_AVX512 0
#endif

/* Whether the CPU runs the AVX-512 paths (F, BW, VL and CD; every AVX-512
 * CPU with BW and VL has CD).  No cached state: the compiler's CPU model is
 * initialised before main, and each query is a few loads. */
static inline int dcabac_cpu_avx512(void)
{
#if DCABAC_HAVE_AVX512
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
#else
    return 0;
#endif
}

#endif
