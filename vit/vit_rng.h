/* vit_rng.h — the one splitmix64 step (Steele, Lea, Flood 2014) behind every
 * seeded stream: it seeds training's xoshiro256** (vit_train_rng) and is the
 * k-means generator of vit/inspect.c. Internal. The state is the caller's,
 * so a run depends on nothing but its seed; the constants fix the streams
 * that saved models and tests depend on, so they must not change. */
#ifndef VIT_RNG_H
#define VIT_RNG_H

#include <stdint.h>

/* Advances *state and returns the next 64 random bits. */
static inline uint64_t vit_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
