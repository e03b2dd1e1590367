/* The int8 kernels (kernels.h): choosing a path, packing weights, dynamic
 * activation quantisation, and the portable C micro-kernels (the driver
 * is the fp32 GEMM's, kernels_gemm.c gemm_run). Compiled with
 * -ffp-contract=off (CMakeLists.txt), as are the AVX2, AVX-VNNI and AVX-512
 * files, so the one fused multiply-add per group (kernels_int8.h) is
 * written out (fmaf here, an FMA instruction there) and no path fuses
 * another: every path gives the same bits, and the tests compare them
 * exactly. */
#include "kernels_int8.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP /* the kernel's bits (arch/arm64/include/uapi/asm/hwcap.h) */
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1UL << 13)
#endif
#endif
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_parallel.h"

static const char *const ISA_NAMES[KERNELS_ISA_COUNT] = {
    "generic", "avx2",       "avx512",       "avx512vnni", "vnni-reference",
    "avxvnni", "neon",       "avx512bf16",   "neon-dotprod", "neon-i8mm"};

const char *kernels_isa_choices(void) {
#if defined(__aarch64__)
    return "generic|neon|neon-dotprod|neon-i8mm";
#else
    return "generic|avx2|avxvnni|avx512|avx512vnni|avx512bf16";
#endif
}

const char *kernels_isa_name(kernels_isa isa) {
    return (unsigned)isa < KERNELS_ISA_COUNT ? ISA_NAMES[isa] : "?";
}

#if defined(__x86_64__) || defined(__i386__)
/* AVX-VNNI: CPUID leaf 7, subleaf 1, EAX bit 4 (clang 14's
 * __builtin_cpu_supports does not know "avxvnni"; the OS's saving of the
 * ymm state is checked with avx2). */
static int cpu_has_avx_vnni(void) {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1u);
}

/* AVX512_BF16: CPUID leaf 7, subleaf 1, EAX bit 5 (gcc 12's
 * __builtin_cpu_supports does not know "avx512bf16"; bench/peak.h). */
static int cpu_has_avx512_bf16(void) {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1u);
}
#endif

int kernels_isa_supported(kernels_isa isa) {
    switch (isa) {
    case KERNELS_ISA_GENERIC:
    case KERNELS_ISA_VNNI_REFERENCE: return 1;
#if defined(__x86_64__) || defined(__i386__)
    /* __builtin_cpu_supports also checks the OS saves the vector state.
     * Every path above generic runs fp32 FMA tiles (kernels_gemm.h). */
    case KERNELS_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case KERNELS_ISA_AVX512:
        return kernels_isa_supported(KERNELS_ISA_AVX2) && __builtin_cpu_supports("avx512f");
    case KERNELS_ISA_AVX512_VNNI:
        return kernels_isa_supported(KERNELS_ISA_AVX512) && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
    case KERNELS_ISA_AVX_VNNI:
        return kernels_isa_supported(KERNELS_ISA_AVX2) && cpu_has_avx_vnni();
    /* Every CPU with it has VNNI too (its fp32 and int8 are avx512vnni's). */
    case KERNELS_ISA_AVX512_BF16:
        return kernels_isa_supported(KERNELS_ISA_AVX512_VNNI) && __builtin_cpu_supports("avx512vl") &&
               cpu_has_avx512_bf16();
#endif
#if defined(__aarch64__)
    case KERNELS_ISA_NEON: return 1; /* Advanced SIMD is part of the AArch64 base */
    /* What the kernel reports the CPU (and itself) supports: the ID
     * registers are not readable from user space everywhere. */
    case KERNELS_ISA_NEON_DOTPROD: return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    case KERNELS_ISA_NEON_I8MM: return (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0;
#endif
    default: return 0;
    }
}

base_status kernels_isa_choose(const char *forced, kernels_isa *isa, base_error *err) {
    if (!forced || !*forced || strcmp(forced, "auto") == 0) {
        *isa = kernels_isa_supported(KERNELS_ISA_NEON_I8MM)   ? KERNELS_ISA_NEON_I8MM
               : kernels_isa_supported(KERNELS_ISA_NEON_DOTPROD) ? KERNELS_ISA_NEON_DOTPROD
               : kernels_isa_supported(KERNELS_ISA_NEON)      ? KERNELS_ISA_NEON
               : kernels_isa_supported(KERNELS_ISA_AVX512_BF16) ? KERNELS_ISA_AVX512_BF16
               : kernels_isa_supported(KERNELS_ISA_AVX512_VNNI) ? KERNELS_ISA_AVX512_VNNI
               : kernels_isa_supported(KERNELS_ISA_AVX512)    ? KERNELS_ISA_AVX512
               : kernels_isa_supported(KERNELS_ISA_AVX_VNNI)  ? KERNELS_ISA_AVX_VNNI
               : kernels_isa_supported(KERNELS_ISA_AVX2)      ? KERNELS_ISA_AVX2
                                                              : KERNELS_ISA_GENERIC;
        return BASE_OK;
    }
    char have[128] = "";
    size_t used = 0;
    for (int i = 0; i < KERNELS_ISA_COUNT; i++) {
        if (strcmp(forced, ISA_NAMES[i]) == 0 && kernels_isa_supported((kernels_isa)i)) {
            *isa = (kernels_isa)i;
            return BASE_OK;
        }
        if (kernels_isa_supported((kernels_isa)i) && used < sizeof have)
            used += (size_t)snprintf(have + used, sizeof have - used, "%s%s", used ? ", " : "",
                                     ISA_NAMES[i]);
    }
    for (int i = 0; i < KERNELS_ISA_COUNT; i++)
        if (strcmp(forced, ISA_NAMES[i]) == 0)
            return base_error_set(err, BASE_E_UNSUPPORTED,
                                 "VITC_ISA=%s: this CPU cannot run it (it runs: %s)", forced, have);
    return base_error_set(err, BASE_E_UNSUPPORTED,
                         "VITC_ISA=%.40s: unknown (auto, generic, avx2, avx512, avx512vnni, "
                         "vnni-reference, avxvnni, neon, avx512bf16, neon-dotprod, neon-i8mm)",
                         forced);
}

kernels_isa kernels_isa_int8(kernels_isa isa) {
    if (isa == KERNELS_ISA_AVX512_BF16) return KERNELS_ISA_AVX512_VNNI;
    return isa == KERNELS_ISA_AVX512 ? KERNELS_ISA_AVX2 : isa;
}

/* The s8 quads with their offsets (kernels_int8.h): the VNNI paths' and
 * the NEON ones' but i8mm's. */
static int quad_layout(kernels_isa isa) {
    isa = kernels_isa_int8(isa); /* avx512bf16 packs as avx512vnni */
    return isa == KERNELS_ISA_AVX512_VNNI || isa == KERNELS_ISA_VNNI_REFERENCE ||
           isa == KERNELS_ISA_AVX_VNNI || isa == KERNELS_ISA_NEON ||
           isa == KERNELS_ISA_NEON_DOTPROD;
}

/* smmla's s8 octs: [panels][kpad/8][QPANEL][8], kpad a multiple of 8, no offsets. */
static int oct_layout(kernels_isa isa) { return isa == KERNELS_ISA_NEON_I8MM; }

/* One byte a weight (quads, octs), else int16 pairs. */
static int byte_layout(kernels_isa isa) { return quad_layout(isa) || oct_layout(isa); }

/* Activations as bytes: q + 128 for vpdpbusd's u8 (ACT_U8), q itself for
 * the NEON kernels' signed products (ACT_S8), else int16 (ACT_S16). */
enum { ACT_S16, ACT_U8, ACT_S8 };
static int act_format(kernels_isa isa) {
    if (isa == KERNELS_ISA_NEON || isa == KERNELS_ISA_NEON_DOTPROD || isa == KERNELS_ISA_NEON_I8MM)
        return ACT_S8;
    return quad_layout(isa) ? ACT_U8 : ACT_S16;
}

/* 64-byte aligned and zeroed (padding weights and sums must be 0). */
static void *alloc_zeroed(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p) memset(p, 0, bytes ? bytes : 64);
    return p;
}

/* The shape fields of kernels_qmatrix_create, without the arrays; 0 when
 * the arguments are not packable. */
static int qmatrix_shape(kernels_qmatrix *w, int rows, int cols, int group, kernels_isa isa) {
    if (rows <= 0 || cols <= 0 || group <= 0 || cols % group != 0 ||
        (unsigned)isa >= KERNELS_ISA_COUNT || cols > (1 << 16))
        return 0;
    *w = (kernels_qmatrix){.isa = kernels_isa_int8(isa), .rows = rows, .cols = cols, .group = group};
    w->groups = cols / group;
    /* smmla takes 8 k at a time: groups of another multiple of 4 (no vitc
     * file has them) run on the dotprod quads, which every I8MM CPU has. */
    if (oct_layout(w->isa) && w->groups > 1 && group % 8 != 0) w->isa = KERNELS_ISA_NEON_DOTPROD;
    w->kpad = oct_layout(w->isa) ? (cols + 7) / 8 * 8 : (cols + 3) / 4 * 4;
    /* Padding lands in the last group; a group of 4k stays 4k. */
    w->kgroup = w->groups == 1 ? w->kpad : group;
    w->panels = (rows + QPANEL - 1) / QPANEL;
    return w->groups == 1 || group % 4 == 0; /* cannot pad inside groups */
}

/* cols is at most 2^16: a group's int32 sum, up to 255 * 127 per weight on
 * the u8 path, then cannot overflow even when the group is the whole row. */
kernels_qmatrix *kernels_qmatrix_create(int rows, int cols, int group, kernels_isa isa) {
    kernels_qmatrix shape;
    if (!qmatrix_shape(&shape, rows, cols, group, isa)) return NULL;
    kernels_qmatrix *w = malloc(sizeof *w);
    if (!w) return NULL;
    *w = shape;
    const size_t slots = (size_t)w->panels * QPANEL;
    const size_t value_bytes = slots * w->kpad * (byte_layout(w->isa) ? 1 : 2);
    w->values = alloc_zeroed(value_bytes);
    w->scales = alloc_zeroed(slots * w->groups * sizeof(float));
    w->offsets = quad_layout(w->isa) ? alloc_zeroed(slots * w->groups * sizeof(int32_t)) : NULL;
    if (!w->values || !w->scales || (quad_layout(w->isa) && !w->offsets)) {
        kernels_qmatrix_free(w);
        return NULL;
    }
    return w;
}

/* Where weight (n, k) lives in the packed values. */
static size_t packed_index(const kernels_qmatrix *w, int n, int k) {
    const size_t panel = (size_t)(n / QPANEL), c = (size_t)(n % QPANEL);
    if (quad_layout(w->isa))
        return ((panel * (w->kpad / 4) + (size_t)(k / 4)) * QPANEL + c) * 4 + (size_t)(k % 4);
    if (oct_layout(w->isa))
        return ((panel * (w->kpad / 8) + (size_t)(k / 8)) * QPANEL + c) * 8 + (size_t)(k % 8);
    return ((panel * (w->kpad / 2) + (size_t)(k / 2)) * QPANEL + c) * 2 + (size_t)(k % 2);
}

/* Where the scale (or offset) of weight row n, group g lives. */
static size_t group_index(const kernels_qmatrix *w, int n, int g) {
    return ((size_t)(n / QPANEL) * w->groups + (size_t)g) * QPANEL + (size_t)(n % QPANEL);
}

void kernels_qmatrix_set_rows(kernels_qmatrix *w, int first_row, int count,
                              const signed char *values, const float *scales) {
    for (int i = 0; i < count; i++) {
        const int n = first_row + i;
        const signed char *row = values + (size_t)i * w->cols;
        for (int k = 0; k < w->cols; k++) {
            if (byte_layout(w->isa))
                ((int8_t *)w->values)[packed_index(w, n, k)] = (int8_t)row[k];
            else
                ((int16_t *)w->values)[packed_index(w, n, k)] = (int16_t)row[k];
        }
        for (int g = 0; g < w->groups; g++) {
            w->scales[group_index(w, n, g)] = scales[(size_t)i * w->groups + g];
            if (!w->offsets) continue;
            int32_t sum = 0;
            for (int k = g * w->group; k < (g + 1) * w->group; k++) sum += row[k];
            w->offsets[group_index(w, n, g)] = -128 * sum;
        }
    }
}

void kernels_qmatrix_to_f32(const kernels_qmatrix *w, float *dst) {
    for (int n = 0; n < w->rows; n++)
        for (int k = 0; k < w->cols; k++) {
            const size_t at = packed_index(w, n, k);
            const int q = byte_layout(w->isa) ? ((const int8_t *)w->values)[at]
                                              : ((const int16_t *)w->values)[at];
            dst[(size_t)n * w->cols + k] = (float)q * w->scales[group_index(w, n, k / w->group)];
        }
}

kernels_isa kernels_qmatrix_isa(const kernels_qmatrix *w) { return w->isa; }

size_t kernels_qmatrix_bytes(const kernels_qmatrix *w) {
    const size_t slots = (size_t)w->panels * QPANEL;
    return slots * w->kpad * (byte_layout(w->isa) ? 1 : 2) +
           slots * w->groups * (sizeof(float) + (w->offsets ? sizeof(int32_t) : 0));
}

void kernels_qmatrix_free(kernels_qmatrix *w) {
    if (!w) return;
    if (!w->wrapped) {
        free(w->values);
        free(w->scales);
        free(w->offsets);
    }
    free(w);
}

/* The pairs' version 1, the quads' version 2 and the octs' version 1
 * (kernels_int8.h): parts values, scales and, for the quads, offsets (-128
 * x each group's weight sum; version 1 held the sums themselves), in
 * panels of 16 outputs. The NEON paths but i8mm share the x86 VNNI
 * paths' quads (their activations differ, their weights not), so one
 * packed file maps on both. */
const char *kernels_qmatrix_layout(kernels_isa isa) {
    isa = kernels_isa_int8(isa);
    if (oct_layout(isa)) return "qmatrix-s8-oct-panel16-v1";
    return quad_layout(isa) ? "qmatrix-u8s8-quad-panel16-v2" : "qmatrix-s16-pair-panel16-v1";
}

void kernels_qmatrix_parts(const kernels_qmatrix *w, kernels_packed *out) {
    const size_t slots = (size_t)w->panels * QPANEL;
    *out = (kernels_packed){.count = w->offsets ? 3 : 2,
                            .part = {w->values, w->scales, w->offsets},
                            .bytes = {slots * w->kpad * (byte_layout(w->isa) ? 1 : 2),
                                      slots * w->groups * sizeof(float),
                                      w->offsets ? slots * w->groups * sizeof(int32_t) : 0}};
}

/* What set_rows can write, checked in one pass over mapped parts: weights
 * in -127..127 and, for the quads, each group's offset -128 x their sum. Beyond
 * them the int32 sums of the C paths (generic, vnni-reference) could
 * overflow, which C leaves undefined, so a file's bytes are checked before
 * they run on them. The vector paths' sums wrap (vpmaddwd, vpdpbusd): a
 * damaged file gives wrong numbers there, as damaged float weights do,
 * and the pass (a third of `vit info`'s CPU on the default model) is
 * skipped. */
static int qmatrix_valid(const kernels_qmatrix *w) {
    const size_t slots = (size_t)w->panels * QPANEL;
    if (!quad_layout(w->isa)) {
        const int16_t *v = w->values;
        int16_t bad = 0;
        for (size_t i = 0; i < slots * w->kpad; i++) bad |= (int16_t)(v[i] < -127 || v[i] > 127);
        return !bad;
    }
    const int8_t *v = w->values;
    const int quads = w->kgroup / 4;
    int bad = 0;
    for (int panel = 0; panel < w->panels && !bad; panel++)
        for (int g = 0; g < w->groups && !bad; g++) {
            int32_t sum[QPANEL] = {0};
            for (int q = g * quads; q < (g + 1) * quads; q++) {
                const int8_t *quad = v + ((size_t)panel * (w->kpad / 4) + (size_t)q) * QPANEL * 4;
                for (int c = 0; c < QPANEL; c++) {
                    const int8_t *e = quad + 4 * c;
                    bad |= (e[0] == -128) | (e[1] == -128) | (e[2] == -128) | (e[3] == -128);
                    sum[c] += e[0] + e[1] + e[2] + e[3];
                }
            }
            const int32_t *want = w->offsets + ((size_t)panel * w->groups + (size_t)g) * QPANEL;
            for (int c = 0; c < QPANEL; c++) bad |= want[c] != -128 * sum[c];
        }
    return !bad;
}

kernels_qmatrix *kernels_qmatrix_wrap(int rows, int cols, int group, kernels_isa isa,
                                      const kernels_packed *p) {
    kernels_qmatrix shape;
    if (!qmatrix_shape(&shape, rows, cols, group, isa)) return NULL;
    shape.values = (void *)p->part[0];
    shape.scales = (float *)p->part[1];
    shape.offsets = quad_layout(shape.isa) ? (int32_t *)p->part[2] : NULL;
    kernels_packed want;
    kernels_qmatrix_parts(&shape, &want);
    if (p->count != want.count) return NULL;
    for (int i = 0; i < want.count; i++)
        if (p->bytes[i] != want.bytes[i] || (uintptr_t)p->part[i] % 64 != 0) return NULL;
    const int c_path = shape.isa == KERNELS_ISA_GENERIC || shape.isa == KERNELS_ISA_VNNI_REFERENCE;
    if (c_path && !qmatrix_valid(&shape)) return NULL;
    kernels_qmatrix *w = malloc(sizeof *w);
    if (!w) return NULL;
    *w = shape;
    w->wrapped = 1;
    return w;
}

size_t kernels_qinp_bytes(int rows, int cols) {
    return (size_t)rows * (size_t)((cols + 3) / 4 * 4) * sizeof(int16_t);
}

/* max |x[k]| of a row, by the bit patterns: for non-negative floats they
 * order as integers, so the reduction vectorises (fmaxf would be a call),
 * and a NaN or infinity is any value at or above the infinity pattern. */
static float row_max_abs(const float *x, int cols, int *finite) {
    uint32_t max_bits = 0;
    for (int k = 0; k < cols; k++) {
        uint32_t bits;
        memcpy(&bits, &x[k], sizeof bits);
        bits &= 0x7fffffffu;
        max_bits = bits > max_bits ? bits : max_bits;
    }
    *finite = max_bits < 0x7f800000u;
    float max_abs;
    memcpy(&max_abs, &max_bits, sizeof max_abs);
    return max_abs;
}

/* round-half-even(x * inv) clamped to -127..127 (rintf: the default
 * rounding mode, to nearest even; inlined, unlike nearbyintf). x * inv is
 * never NaN (qinv keeps inv finite, and x is finite here). */
static inline float quantized(float x, float inv) {
    const float v = rintf(x * inv);
    return v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
}

/* Values x[0 .. len) of a row, at k = first onward, into activation
 * format `format` (act_format: int16 q, u8 q + 128 or s8 q); returns
 * their scale. */
static inline __attribute__((always_inline)) float quantize_span(const float *x, int len,
                                                                 int first, int format,
                                                                 void *dst) {
    int finite;
    const float max_abs = row_max_abs(x, len, &finite);
    /* Non-finite values: a NaN scale (the outputs become NaN) over zeros. */
    const float inv = finite ? qinv(max_abs) : 0.0f;
    if (format != ACT_S16) { /* s8 as its two's complement byte */
        const int zero = format == ACT_U8 ? 128 : 0;
        uint8_t *q = (uint8_t *)dst + first;
        for (int k = 0; k < len; k++)
            q[k] = (uint8_t)(finite ? (int)(quantized(x[k], inv) + (float)zero) : zero);
    } else {
        int16_t *q = (int16_t *)dst + first;
        for (int k = 0; k < len; k++) q[k] = finite ? (int16_t)quantized(x[k], inv) : 0;
    }
    if (!finite) return NAN;
    return max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
}

/* Groups of 32 (every layer of a vitc int8 file but rows of other widths)
 * with the length known to the compiler, which then vectorises the group
 * whole: a third of the time of the general loop on fc2's inputs. */
static float quantize_span32(const float *x, int first, int format, void *dst) {
    return quantize_span(x, 32, first, format, dst);
}

static float quantize_span_any(const float *x, int len, int first, int format, void *dst) {
    return quantize_span(x, len, first, format, dst);
}

int kernels_qmatrix_groups(const kernels_qmatrix *w) { return w->groups; }

/* One group of a row into dst (the row's quantised values) at k = first:
 * the vector paths' own code where they have it, the C otherwise. */
static inline float quantize_group(kernels_isa isa, const float *x, int len, int first,
                                   void *dst) {
    switch (isa) {
    case KERNELS_ISA_AVX512_VNNI:
        if (len % 16 == 0) return qspan_u8_avx512(x, len, (uint8_t *)dst + first);
        break;
    case KERNELS_ISA_AVX_VNNI:
        if (len % 8 == 0) return qspan_u8_avx2(x, len, (uint8_t *)dst + first);
        break;
    case KERNELS_ISA_AVX2:
        if (len == 32) return qspan32_avx2(x, (int16_t *)dst + first);
        break;
    default: break;
    }
    const int format = act_format(isa);
    return len == 32 ? quantize_span32(x, first, format, dst)
                     : quantize_span_any(x, len, first, format, dst);
}

void quantize_forward(void *qinp, float *inp_scale, const float *inp, int rows, int cols,
                      const kernels_qmatrix *weight, kernels_threads th) {
    const int kpad = weight->kpad, format = act_format(weight->isa), groups = weight->groups;
    const size_t row_bytes = (size_t)kpad * (format != ACT_S16 ? 1 : 2);
    PARALLEL_FOR(for (int r = 0; r < rows; r++) {
        char *dst = (char *)qinp + r * row_bytes;
        const float *row = inp + (size_t)r * cols;
        const int group = weight->group;
        for (int g = 0; g < groups; g++)
            inp_scale[(size_t)r * groups + g] =
                quantize_group(weight->isa, row + g * group, group, g * group, dst);
        for (int k = cols; k < kpad; k++) { /* padding: q = 0 */
            if (format != ACT_S16) ((uint8_t *)dst)[k] = format == ACT_U8 ? 128 : 0;
            else ((int16_t *)dst)[k] = 0;
        }
    });
}

/* Columns of panel p that exist (a last panel may be part). */
static int panel_width(const kernels_qmatrix *w, int p) {
    const int here = w->rows - p * QPANEL;
    return here < QPANEL ? here : QPANEL;
}

/* acc = the exact int32 sums of group g of row a in panel p's columns:
 * int16 pairs (the generic path's layout) or u8 quads starting from the
 * group's offsets (vnni-reference's: avx512vnni's layout and arithmetic). */
static inline void group_sums(const kernels_qmatrix *w, const void *row, int p, int g, int quads,
                              int32_t acc[QPANEL]) {
    const size_t panel = (size_t)p * w->kpad * QPANEL;
    if (!quads) {
        const int16_t *a = row, *v = (const int16_t *)w->values + panel;
        for (int k = 0; k < QPANEL; k++) acc[k] = 0;
        for (int i = g * w->kgroup / 2; i < (g + 1) * w->kgroup / 2; i++) {
            const int32_t a0 = a[2 * i], a1 = a[2 * i + 1];
            const int16_t *pair = v + (size_t)i * QPANEL * 2;
            for (int k = 0; k < QPANEL; k++) acc[k] += a0 * pair[2 * k] + a1 * pair[2 * k + 1];
        }
        return;
    }
    const uint8_t *a = row;
    const int8_t *v = (const int8_t *)w->values + panel;
    const int32_t *offsets = w->offsets + ((size_t)p * w->groups + (size_t)g) * QPANEL;
    for (int k = 0; k < QPANEL; k++) acc[k] = offsets[k];
    for (int i = g * w->kgroup / 4; i < (g + 1) * w->kgroup / 4; i++) {
        const int8_t *quad = v + (size_t)i * QPANEL * 4;
        for (int k = 0; k < QPANEL; k++)
            for (int e = 0; e < 4; e++) acc[k] += a[4 * i + e] * quad[4 * k + e];
    }
}

/* Row r of panel p as kernels_int8.h defines it: per group the one fmaf
 * into the float sum, then qmatmul_output. quads: the layout, a constant
 * where inlined. */
static inline __attribute__((always_inline)) void c_row(const qmatmul_call *c, int r, int p,
                                                        int quads) {
    const kernels_qmatrix *w = c->w;
    const size_t bytes = quads ? 1 : 2;
    const void *row = (const char *)c->qinp + (size_t)r * w->kpad * bytes;
    const float *panel_scales = w->scales + (size_t)p * w->groups * QPANEL;
    const float *row_scales = c->inp_scale + (size_t)r * w->groups;
    float sum[QPANEL] = {0};
    for (int g = 0; g < w->groups; g++) {
        int32_t acc[QPANEL];
        group_sums(w, row, p, g, quads, acc);
        for (int k = 0; k < QPANEL; k++)
            sum[k] = fmaf((float)acc[k], panel_scales[g * QPANEL + k] * row_scales[g], sum[k]);
    }
    const int first = p * QPANEL;
    for (int k = 0; k < panel_width(w, p); k++)
        c->d.out[(size_t)r * c->d.ldo + first + k] =
            qmatmul_output(c->d.ep.residual, c->d.ep.bias, c->d.ldo, r, first + k, sum[k]);
}

/* The C micro-kernels: a row at a time. */
#define PAIRS_ROW(m) c_row(call, r0, p, 0)
#define QUADS_ROW(m) c_row(call, r0, p, 1)
GEMM_TILE_FN(tile_generic, , 1, PAIRS_ROW)
GEMM_TILE_FN(tile_vnni_reference, , 1, QUADS_ROW)

const gemm_tiles qtiles_generic = {tile_generic, 1, &kernels_path_generic};
const gemm_tiles qtiles_vnni_reference = {tile_vnni_reference, 1, &kernels_path_generic};

/* By int8 path (kernels_isa_int8: never KERNELS_ISA_AVX512, whose slot is avx2's). */
static const gemm_tiles *const TILES[KERNELS_ISA_COUNT] = {
    &qtiles_generic,     &qtiles_avx2,         &qtiles_avx2,          &qtiles_avx512_vnni,
    &qtiles_vnni_reference, &qtiles_avx_vnni,  &qtiles_neon,          &qtiles_avx512_vnni,
    &qtiles_neon_dotprod, &qtiles_neon_i8mm};

void qmatmul_forward(float *out, const float *residual, const void *qinp,
                     const float *inp_scale, const kernels_qmatrix *weight, const float *bias,
                     kernels_act act, int rows, kernels_threads th) {
    const kernels_epilogue ep = {.bias = bias, .residual = residual, .act = act};
    const qmatmul_call call = {{out, weight->rows, rows, weight->rows, ep}, qinp, inp_scale, weight};
    gemm_run(&call, TILES[weight->isa], th);
}

/* The paths of another architecture: never chosen (kernels_isa_supported),
 * kept linkable. */
#if !defined(__x86_64__) && !defined(__i386__)
const gemm_tiles qtiles_avx2 = {0}, qtiles_avx_vnni = {0}, qtiles_avx512_vnni = {0};

float qspan32_avx2(const float *x, int16_t *q) {
    (void)x, (void)q;
    return 0.0f;
}

float qspan_u8_avx2(const float *x, int len, uint8_t *q) {
    (void)x, (void)len, (void)q;
    return 0.0f;
}

float qspan_u8_avx512(const float *x, int len, uint8_t *q) {
    (void)x, (void)len, (void)q;
    return 0.0f;
}
#endif
#if !defined(__aarch64__)
const gemm_tiles qtiles_neon = {0}, qtiles_neon_dotprod = {0}, qtiles_neon_i8mm = {0};
#endif
