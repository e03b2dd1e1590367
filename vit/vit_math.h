/* vit_math.h — elementwise math of training's GELU and its gradient
 * (kernels.c). Internal. expf and erff are written so that loops over them
 * vectorise (libm's are scalar calls, which took a third of the forward
 * pass) without fused multiply-adds. Inference (and training's LayerNorm
 * and softmax) use kernels_rows.h's, with FMA, the same on every path. */
#ifndef VIT_MATH_H
#define VIT_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) to about 2 ulp: x = n ln2 + r with |r| <= ln2 / 2, a degree-6
 * polynomial for e^r, and 2^n built in the exponent bits. */
static inline float fast_expf(float x) {
    /* Below -87.3 the result would be under FLT_MIN: 0 (so exp(-inf) = 0). */
    const int underflow = x < -87.3f;
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* NaN passes the clamp above; converting it to int would be undefined
     * behaviour, so it takes 2^0 and the NaN in p carries through. */
    const int32_t bits = ((int32_t)(n == n ? n : 0.0f) + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return underflow ? 0.0f : p * scale;
}

/* erf(x) within 1.5e-7 absolute (Abramowitz & Stegun 7.1.26). */
static inline float fast_erff(float x) {
    const float a = fabsf(x);
    const float t = 1.0f / (1.0f + 0.3275911f * a);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const float y = 1.0f - p * t * fast_expf(-a * a);
    return x < 0.0f ? -y : y;
}

#endif
