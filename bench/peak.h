/* peak.h — this machine's arithmetic peaks per instruction set (vit_peak,
 * and the per-layer "% of peak" of vit_gemm): each loop keeps ACC
 * independent accumulators (more than the latency x throughput of any core
 * we have) and does nothing but the one instruction, so it runs at the
 * core's issue limit for it:
 *   fp32 FMA       vfmadd231ps zmm (AVX-512F), ymm (AVX2 + FMA): 2 flops per lane
 *   bf16 dot       vdpbf16ps zmm (AVX-512 BF16): 2 products + 2 adds per fp32 lane
 *   int8 dot       vpdpbusd zmm (AVX-512 VNNI), ymm (AVX-VNNI): 4 products + 4 adds per lane
 *   int16 pairs    vpmaddwd + vpaddd ymm (AVX2, the avx2 int8 path): 2 + 2 per lane */
#ifndef VITC_BENCH_PEAK_H
#define VITC_BENCH_PEAK_H

#include <omp.h>
#include <string.h>
#include <time.h>

typedef struct peak_path {
    const char *name;
    float (*run)(float);
    double ops_per_instruction; /* flops (or int ops) per instruction */
    int (*supported)(void);
} peak_path;

#define ACC 12
#define REPS 1000000L /* instructions per accumulator per call */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Each loop returns a value depending on every accumulator, so nothing is
 * optimised away. */
#define PEAK_LOOP(vtype, zero, op, reduce)                                           \
    vtype acc[ACC];                                                                  \
    for (int i = 0; i < ACC; i++) acc[i] = zero;                                     \
    for (long r = 0; r < REPS; r++)                                                  \
        for (int i = 0; i < ACC; i++) acc[i] = op;                                   \
    for (int i = 1; i < ACC; i++) acc[0] = reduce;                                   \
    float out[sizeof(vtype) / sizeof(float)];                                         \
    memcpy(out, &acc[0], sizeof out);                                                 \
    return out[0];

__attribute__((target("avx512f"))) static float fp32_avx512(float seed) {
    const __m512 a = _mm512_set1_ps(seed), b = _mm512_set1_ps(0.999f);
    PEAK_LOOP(__m512, _mm512_set1_ps(seed), _mm512_fmadd_ps(a, b, acc[i]),
              _mm512_add_ps(acc[0], acc[i]))
}

__attribute__((target("avx2,fma"))) static float fp32_avx2(float seed) {
    const __m256 a = _mm256_set1_ps(seed), b = _mm256_set1_ps(0.999f);
    PEAK_LOOP(__m256, _mm256_set1_ps(seed), _mm256_fmadd_ps(a, b, acc[i]),
              _mm256_add_ps(acc[0], acc[i]))
}

__attribute__((target("avx512f,avx512bf16"))) static float bf16_avx512(float seed) {
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = a; /* 1.0 in bf16 */
    PEAK_LOOP(__m512, _mm512_set1_ps(seed), _mm512_dpbf16_ps(acc[i], a, b),
              _mm512_add_ps(acc[0], acc[i]))
}

__attribute__((target("avx512f,avx512vnni"))) static float int8_avx512vnni(float seed) {
    const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8((char)seed);
    PEAK_LOOP(__m512i, _mm512_setzero_si512(), _mm512_dpbusd_epi32(acc[i], a, b),
              _mm512_add_epi32(acc[0], acc[i]))
}

__attribute__((target("avx2,avxvnni"))) static float int8_avxvnni(float seed) {
    const __m256i a = _mm256_set1_epi8(1), b = _mm256_set1_epi8((char)seed);
    PEAK_LOOP(__m256i, _mm256_setzero_si256(), _mm256_dpbusd_avx_epi32(acc[i], a, b),
              _mm256_add_epi32(acc[0], acc[i]))
}

/* The product takes the accumulator as its second operand: with two
 * constants gcc would hoist vpmaddwd out of the loop. */
__attribute__((target("avx2"))) static float int16_avx2(float seed) {
    const __m256i a = _mm256_set1_epi16((short)seed);
    PEAK_LOOP(__m256i, _mm256_setzero_si256(),
              _mm256_add_epi32(acc[i], _mm256_madd_epi16(a, acc[i])), _mm256_add_epi32(acc[0], acc[i]))
}

static int has_avx512f(void) { return __builtin_cpu_supports("avx512f"); }
static int has_avx2_fma(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
static int has_avx2(void) { return __builtin_cpu_supports("avx2"); }
static int has_vnni(void) { return __builtin_cpu_supports("avx512vnni"); }
/* gcc 12's __builtin_cpu_supports knows neither avx512bf16 nor avxvnni:
 * CPUID leaf 7 subleaf 1, EAX bits 5 (AVX512_BF16) and 4 (AVX-VNNI). */
static int leaf7_1_eax_bit(int bit) {
    unsigned a = 7, b = 0, c = 1, d = 0;
    __asm__("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    return (a >> bit) & 1;
}
static int has_bf16(void) { return has_avx512f() && leaf7_1_eax_bit(5); }
static int has_avxvnni(void) { return has_avx2() && leaf7_1_eax_bit(4); }

static const peak_path PEAK_PATHS[] = {
    {"fp32_avx512", fp32_avx512, 16 * 2, has_avx512f},
    {"fp32_avx2", fp32_avx2, 8 * 2, has_avx2_fma},
    {"bf16_avx512", bf16_avx512, 16 * 4, has_bf16},
    {"int8_avx512vnni", int8_avx512vnni, 16 * 8, has_vnni},
    {"int8_avxvnni", int8_avxvnni, 8 * 8, has_avxvnni},
    {"int16_avx2", int16_avx2, 8 * 4, has_avx2},
};
#define NUM_PEAK_PATHS (sizeof PEAK_PATHS / sizeof PEAK_PATHS[0])
#else
static const peak_path PEAK_PATHS[1] = {{"none", NULL, 0, NULL}};
#define NUM_PEAK_PATHS 0
#endif

/* Seconds: on one thread its CPU time (other processes' turns on the core
 * not counted), on more the wall time. */
static inline double peak_clock(int threads) {
    if (threads > 1) return omp_get_wtime();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The best of `tries` timed calls on each of `threads` threads, in
 * GFLOP/s (giga operations) over all of them. */
static inline double peak_measure(const peak_path *p, int threads, int tries) {
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int t = 0; t < tries; t++) {
        double start = peak_clock(threads), end = start;
#pragma omp parallel num_threads(threads)
        {
            const float v = p->run(1.0f + (float)omp_get_thread_num() * 1e-7f);
#pragma omp critical
            sink += v;
#pragma omp barrier
#pragma omp master
            end = peak_clock(threads);
        }
        const double ops = (double)threads * REPS * ACC * p->ops_per_instruction;
        const double rate = ops / (end - start) / 1e9;
        best = rate > best ? rate : best;
    }
    return best;
}

/* The path named name (NULL: none). */
static inline const peak_path *peak_find(const char *name) {
    for (size_t i = 0; i < NUM_PEAK_PATHS; i++)
        if (strcmp(PEAK_PATHS[i].name, name) == 0) return &PEAK_PATHS[i];
    return NULL;
}

#endif
