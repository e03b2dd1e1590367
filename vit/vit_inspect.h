/* vit_inspect.h — looking inside a ViT: attention maps, attention rollout,
 * clustering of token features.
 *
 * These work on what vit_context_capture copies out of a forward pass
 * (attention [heads, T, T] per image and layer, tokens [T, D]), one image at a
 * time. None of them allocates: buffers, including scratch space, come from
 * the caller, whose sizes the *_scratch_size functions give. Everything is
 * single-threaded and deterministic: the same inputs (and seed) give the same
 * bits whatever the thread count.
 *
 *   float row[196];
 *   vit_attention_row(attn, heads, 197, 0, -1, 1, row);   // cls -> patches, head mean
 */
#ifndef VIT_INSPECT_H
#define VIT_INSPECT_H

#include <stddef.h>
#include <stdint.h>

#include "base_error.h"

/* Copies query token `query`'s attention over the keys first_key .. T-1 from
 * one image's attention probabilities attn [heads, T, T] (row = query) into
 * out (T - first_key floats): head `head`'s row, or for head < 0 the mean
 * over heads. With query 0 and first_key = the number of prefix tokens this
 * is the class token's attention over the patches, in raster order. */
void vit_attention_row(const float *attn, int heads, int tokens, int query, int head,
                       int first_key, float *out);

/* The mean, over the query tokens first_query .. T-1, of their attention
 * over the keys first_key .. T-1 (vit_attention_row of each, summed in query
 * order, then divided by their count) into out (T - first_key floats). Not
 * renormalised: each value is the mean share of a query's attention that the
 * key gets, so the keys before first_key (class, registers) keep theirs and
 * the map sums to at most 1. This is the map of a model without a class token:
 * first_query = first_key = the number of prefix tokens, i.e. the mean patch
 * query's attention over the patches (and, with heads 1, the mean of the
 * patch rows of a rollout matrix). */
void vit_attention_mean_row(const float *attn, int heads, int tokens, int first_query, int head,
                            int first_key, float *out);

/* Floats of scratch space vit_attention_rollout needs for T tokens (T^2 +
 * T x T rounded up to a multiple of 16: at least 3 T^2 for T >= 15). */
size_t vit_rollout_scratch_size(int tokens);

/* Attention rollout (Abnar & Zuidema 2020) through num_layers layers, in
 * order: layers[l] points to layer l's attention [heads, T, T] for one image.
 * Per layer:
 *   A = mean over heads;
 *   with discard > 0, the floor(T*T*discard) smallest entries of A (ties: the
 *     lower flat index first) are set to 0, except entry (0, 0), the class
 *     token's attention to itself — exactly the entries jacobgil/vit-explain
 *     drops (it never zeroes flat index 0; the class token's row and column
 *     are otherwise not protected);
 *   A = (A + I) / 2, then each row divided by its sum (the paper's
 *     row-normalisation; vit-explain's `a / a.sum(dim=-1)` broadcasts the
 *     row sums over columns instead, which only equals this without discard);
 *   R = A R, starting from R = I.
 * result receives R (T x T, row = query). The class token's rollout over the
 * patches is row 0 from column num_prefix_tokens on; a model without a
 * class token has the mean of the patch rows instead (vit_attention_mean_row
 * with heads 1). Entry (0, 0) is protected whatever token 0 is (a register or
 * the first patch when there is no class token), as vit-explain would. Returns BASE_E_ARG for
 * bad sizes or discard outside [0, 1). */
base_status vit_attention_rollout(const float *const *layers, int num_layers, int heads,
                                 int tokens, float discard, float *result, float *scratch,
                                 base_error *err);

/* Divides each of the n rows (dim floats) of x by its Euclidean norm, as
 * torch.nn.functional.normalize(x, dim=-1) does (norms below 1e-12 count as
 * 1e-12, so zero rows stay zero). */
void vit_l2_normalize_rows(float *x, int n, int dim);

/* doubles of scratch space vit_kmeans needs. */
size_t vit_kmeans_scratch_size(int n, int dim, int k);

/* k-means clustering of the n points (rows of dim floats) into k clusters.
 * Initialisation is greedy k-means++ (as scikit-learn: each new centre is the
 * best, by total squared distance, of 2 + floor(ln k) candidates drawn with
 * probability proportional to the squared distance to the nearest centre so
 * far), drawn from a splitmix64 generator seeded with seed; then Lloyd
 * iterations (nearest centre, ties to the lower index; means recomputed; a
 * centre that loses all its points stays where it was) until no label
 * changes or max_iter iterations. Clusters are finally renumbered in order
 * of first appearance (point 0's cluster is 0), so equal partitions get equal
 * labels. labels gets n ids, centroids (may be NULL) k x dim floats,
 * *iterations (may be NULL) the Lloyd iterations run. Serial and
 * deterministic for a given seed. BASE_E_ARG unless 1 <= k <= n. */
base_status vit_kmeans(const float *points, int n, int dim, int k, uint64_t seed, int max_iter,
                      int *labels, float *centroids, double *scratch, int *iterations,
                      base_error *err);

#endif
