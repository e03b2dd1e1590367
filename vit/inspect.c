/* inspect.c — attention maps, attention rollout and k-means on token
 * features (vit_inspect.h). Serial on purpose: the sizes are small (a few
 * hundred tokens) and the results must not depend on the thread count. */
#include "vit_inspect.h"

#include <math.h>
#include <string.h>

#include "kernels.h"
#include "vit_rng.h"

void vit_attention_row(const float *attn, int heads, int tokens, int query, int head,
                       int first_key, float *out) {
    const int n = tokens - first_key;
    const size_t plane = (size_t)tokens * tokens;
    const float *row0 = attn + (size_t)query * tokens + first_key;
    if (head >= 0) {
        memcpy(out, row0 + (size_t)head * plane, (size_t)n * sizeof *out);
        return;
    }
    /* Sum in head order, then divide, as torch's mean(dim=heads) does. */
    for (int j = 0; j < n; j++) {
        float sum = 0.0f;
        for (int h = 0; h < heads; h++) sum += row0[(size_t)h * plane + j];
        out[j] = sum / (float)heads;
    }
}

void vit_attention_mean_row(const float *attn, int heads, int tokens, int first_query, int head,
                            int first_key, float *out) {
    const int n = tokens - first_key, queries = tokens - first_query;
    const size_t plane = (size_t)tokens * tokens;
    for (int j = 0; j < n; j++) out[j] = 0.0f;
    for (int q = first_query; q < tokens; q++) {
        const float *row = attn + (size_t)q * tokens + first_key;
        for (int j = 0; j < n; j++) {
            float v;
            if (head >= 0) {
                v = row[(size_t)head * plane + j];
            } else {
                /* The head mean first, as vit_attention_row: the map of one
                 * query is the same whichever function draws it. */
                float sum = 0.0f;
                for (int h = 0; h < heads; h++) sum += row[(size_t)h * plane + j];
                v = sum / (float)heads;
            }
            out[j] += v;
        }
    }
    for (int j = 0; j < n; j++) out[j] /= (float)queries;
}

/* The head mean, then (during discard) a copy of it, later R packed for the
 * product (kernels_matmul). */
size_t vit_rollout_scratch_size(int tokens) {
    return (size_t)tokens * tokens + kernels_matmul_scratch_floats(tokens, tokens);
}

/* The value of rank k (0-based) among v[0..n-1] if they were sorted; v is
 * reordered. Iterative quickselect with a median-of-three pivot. */
static float select_rank(float *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        float a = v[lo], b = v[mid], c = v[hi];
        float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return v[k];
    }
    return v[k];
}

/* Zeroes the `count` smallest entries of a (n values; ties: lower index
 * first), except a[0]. copy is n floats of scratch. */
static void discard_smallest(float *a, size_t n, size_t count, float *copy) {
    if (count == 0) return;
    memcpy(copy, a, n * sizeof *a);
    const float threshold = select_rank(copy, n, count - 1);
    size_t below = 0;
    for (size_t i = 0; i < n; i++) below += a[i] < threshold;
    size_t ties = count - below; /* entries equal to threshold that are dropped */
    for (size_t i = 0; i < n; i++) {
        const int drop = a[i] < threshold || (a[i] == threshold && ties > 0);
        if (a[i] == threshold && ties > 0) ties--;
        if (drop && i != 0) a[i] = 0.0f;
    }
}

base_status vit_attention_rollout(const float *const *layers, int num_layers, int heads,
                                 int tokens, float discard, float *result, float *scratch,
                                 base_error *err) {
    if (num_layers < 1 || heads < 1 || tokens < 1 || !layers || !result || !scratch)
        return base_error_set(err, BASE_E_ARG, "attention rollout: bad arguments");
    if (!(discard >= 0.0f && discard < 1.0f))
        return base_error_set(err, BASE_E_ARG, "attention rollout: discard ratio %g is not in [0, 1)",
                             (double)discard);
    const int T = tokens;
    const size_t plane = (size_t)T * T;
    float *fused = scratch, *copy = scratch + plane, *packed = copy;
    /* R = A R on vitc's GEMM, one thread, the CPU's best path (every path
     * gives the same bits). */
    kernels_isa isa;
    if (kernels_isa_choose(NULL, &isa, err) != BASE_OK) return err->code;
    const kernels_threads th = kernels_threading(KERNELS_INFERENCE, 1, isa);
    /* Same rounding as vit-explain's int(flat.size(-1) * discard_ratio). */
    const size_t count = (size_t)((double)plane * (double)discard);

    memset(result, 0, plane * sizeof *result);
    for (int i = 0; i < T; i++) result[(size_t)i * T + i] = 1.0f;
    for (int l = 0; l < num_layers; l++) {
        const float *attn = layers[l];
        for (size_t i = 0; i < plane; i++) {
            float sum = 0.0f;
            for (int h = 0; h < heads; h++) sum += attn[(size_t)h * plane + i];
            fused[i] = sum / (float)heads;
        }
        discard_smallest(fused, plane, count, copy);
        for (int i = 0; i < T; i++) {
            float *row = fused + (size_t)i * T;
            row[i] += 1.0f;
            float sum = 0.0f;
            for (int j = 0; j < T; j++) sum += row[j] * 0.5f;
            for (int j = 0; j < T; j++) row[j] = row[j] * 0.5f / sum;
        }
        kernels_matmul(result, T, fused, T, T, result, T, T, T, packed, th);
    }
    return BASE_OK;
}

void vit_l2_normalize_rows(float *x, int n, int dim) {
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * dim;
        double ss = 0.0;
        for (int j = 0; j < dim; j++) ss += (double)row[j] * row[j];
        double norm = sqrt(ss);
        if (norm < 1e-12) norm = 1e-12;
        const float inv = (float)(1.0 / norm);
        for (int j = 0; j < dim; j++) row[j] *= inv;
    }
}

/* ------------------------------------------------------------- k-means */

/* splitmix64 (vit_rng.h): tiny, well mixed, and the state is ours, so a run
 * depends on nothing but the seed. */
typedef struct rng { uint64_t state; } rng;

static uint64_t rng_next(rng *r) { return vit_splitmix64(&r->state); }

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static double sq_dist(const float *a, const double *c, int dim) {
    double s = 0.0;
    for (int j = 0; j < dim; j++) {
        const double d = a[j] - c[j];
        s += d * d;
    }
    return s;
}

static void set_centre(double *c, const float *p, int dim) {
    for (int j = 0; j < dim; j++) c[j] = p[j];
}

/* Index i with cumulative weight first above u * total (D^2 sampling). */
static int sample_weighted(const double *w, int n, double total, rng *r) {
    const double target = rng_uniform(r) * total;
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += w[i];
        if (acc > target && w[i] > 0) return i;
    }
    /* Rounding left target at the very end: the last point with weight. */
    for (int i = n - 1; i >= 0; i--)
        if (w[i] > 0) return i;
    return (int)(rng_uniform(r) * n); /* all points coincide with centres */
}

size_t vit_kmeans_scratch_size(int n, int dim, int k) {
    return 2 * (size_t)k * dim + 2 * (size_t)n + (size_t)k;
}

/* Greedy k-means++ seeding of the k centres; mind gets each point's squared
 * distance to its nearest centre. */
static void seed_centres(const float *points, int n, int dim, int k, double *centre, double *mind,
                         rng *r) {
    const int trials = 2 + (int)log((double)k);
    set_centre(centre, points + (size_t)(int)(rng_uniform(r) * n) * dim, dim);
    double total = 0.0;
    for (int i = 0; i < n; i++) total += mind[i] = sq_dist(points + (size_t)i * dim, centre, dim);
    for (int c = 1; c < k; c++) {
        double *cc = centre + (size_t)c * dim;
        int best = -1;
        double best_total = 0.0;
        for (int t = 0; t < trials; t++) {
            const int cand = sample_weighted(mind, n, total, r);
            set_centre(cc, points + (size_t)cand * dim, dim);
            double cand_total = 0.0;
            for (int i = 0; i < n; i++) {
                const double d = sq_dist(points + (size_t)i * dim, cc, dim);
                cand_total += d < mind[i] ? d : mind[i];
            }
            if (best < 0 || cand_total < best_total) {
                best = cand;
                best_total = cand_total;
            }
        }
        set_centre(cc, points + (size_t)best * dim, dim);
        total = 0.0;
        for (int i = 0; i < n; i++) {
            const double d = sq_dist(points + (size_t)i * dim, cc, dim);
            if (d < mind[i]) mind[i] = d;
            total += mind[i];
        }
    }
}

/* Lloyd iterations from the seeded centres, until no label changes or
 * max_iter; labels start invalid so the first pass counts as a change.
 * sums and counts are scratch. Returns the iterations done. */
static int lloyd(const float *points, int n, int dim, int k, int max_iter, int *labels,
                 double *centre, double *sums, double *counts) {
    for (int i = 0; i < n; i++) labels[i] = -1;
    int iter = 0;
    for (;;) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float *p = points + (size_t)i * dim;
            int best = 0;
            double best_d = sq_dist(p, centre, dim);
            for (int c = 1; c < k; c++) {
                const double d = sq_dist(p, centre + (size_t)c * dim, dim);
                if (d < best_d) {
                    best_d = d;
                    best = c;
                }
            }
            changed += labels[i] != best;
            labels[i] = best;
        }
        if (!changed || iter >= max_iter) break;
        iter++;
        memset(sums, 0, (size_t)k * dim * sizeof *sums);
        memset(counts, 0, (size_t)k * sizeof *counts);
        for (int i = 0; i < n; i++) {
            double *s = sums + (size_t)labels[i] * dim;
            const float *p = points + (size_t)i * dim;
            for (int j = 0; j < dim; j++) s[j] += p[j];
            counts[labels[i]] += 1.0;
        }
        for (int c = 0; c < k; c++)
            if (counts[c] > 0)
                for (int j = 0; j < dim; j++)
                    centre[(size_t)c * dim + j] = sums[(size_t)c * dim + j] / counts[c];
    }
    return iter;
}

/* Renumbers clusters by first appearance (empty ones last, in their order),
 * so the same partition always gets the same ids; counts is scratch. */
static void renumber_clusters(int n, int dim, int k, int *labels, const double *centre,
                              float *centroids, double *counts) {
    /* counts holds old -> new (or -1). */
    for (int c = 0; c < k; c++) counts[c] = -1.0;
    int next = 0;
    for (int i = 0; i < n; i++)
        if (counts[labels[i]] < 0) counts[labels[i]] = next++;
    for (int c = 0; c < k; c++) /* empty clusters go last, in their order */
        if (counts[c] < 0) counts[c] = next++;
    for (int i = 0; i < n; i++) labels[i] = (int)counts[labels[i]];
    if (centroids)
        for (int c = 0; c < k; c++)
            for (int j = 0; j < dim; j++)
                centroids[(size_t)(int)counts[c] * dim + j] = (float)centre[(size_t)c * dim + j];
}

base_status vit_kmeans(const float *points, int n, int dim, int k, uint64_t seed, int max_iter,
                      int *labels, float *centroids, double *scratch, int *iterations,
                      base_error *err) {
    if (!points || !labels || !scratch || n < 1 || dim < 1 || max_iter < 0)
        return base_error_set(err, BASE_E_ARG, "k-means: bad arguments");
    if (k < 1 || k > n)
        return base_error_set(err, BASE_E_ARG, "k-means: %d clusters for %d points", k, n);
    double *centre = scratch, *sums = centre + (size_t)k * dim, *mind = sums + (size_t)k * dim,
           *trial = mind + n, *counts = trial + n;
    rng r = {seed};

    seed_centres(points, n, dim, k, centre, mind, &r);
    const int iter = lloyd(points, n, dim, k, max_iter, labels, centre, sums, counts);
    renumber_clusters(n, dim, k, labels, centre, centroids, counts);
    if (iterations) *iterations = iter;
    return BASE_OK;
}
