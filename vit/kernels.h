/* kernels.h — the one layer of compute kernels under both the forward pass
 * (forward.c) and training (train.c). Internal.
 *
 * Overview, in the style of llm.c's train_gpt2.c: each layer is a pair
 *   layernorm_forward / layernorm_backward   LayerNorm over rows (mean, rstd kept for backward)
 *   matmul_forward    / matmul_backward      out = inp · Wᵀ + bias (a Linear layer)
 *   residual_matmul_forward                  out = residual + inp · Wᵀ + bias (the residual add)
 *   attention_forward / attention_backward   multi-head softmax(Q Kᵀ / √dh) V over fused qkv
 *   gelu_forward      / gelu_backward        exact (erf) GELU
 *   quick_gelu_forward / quick_gelu_backward x * sigmoid(1.702 x)
 *   layer_scale_add_forward / _backward      x += gamma * branch (LayerScale)
 *   qk_norm_forward   / qk_norm_backward     LayerNorm over each head of Q and K
 *   softmax_forward                          one row, in place
 *   embed_tokens_forward                     prefix tokens and patches plus positions
 *   pool_forward                             final norm + token / mean pooling (the head's input)
 * with the same argument names in both directions: out/dout, inp/dinp,
 * weight/dweight, bias/dbias. Rows are [rows, dim] row-major floats.
 *
 * Threading is explicit: every kernel takes a kernels_threads, says how many
 * OpenMP threads its row-wise loop uses and how its GEMMs run; with one
 * thread it opens no parallel region, so a kernel called from inside one
 * (a thread running whole images) never nests. kernels_threading() is the
 * only place that chooses the GEMM mode.
 *
 * Kernels do not allocate; the caller owns every buffer. */
#ifndef VIT_KERNELS_H
#define VIT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "base_error.h"

/* The instruction-set paths, chosen at run time, one for every dtype: each
 * names an fp32 path (GEMM micro-kernels, LayerNorm, softmax, GELU) and an
 * int8 one. Every path gives the same bits: the fp32 GEMM sums each output
 * over K in one fixed chain of fused multiply-adds (fmaf in C) and every
 * reduction over 16 lane partials in one fixed tree whatever the vector
 * width; int8 sums are exact and its float steps (one fused multiply-add
 * per group, kernels_int8.h) run in the same order in every path. */
typedef enum kernels_isa {
    KERNELS_ISA_GENERIC, /* portable C, any CPU */
    /* AVX2 + FMA: fp32 6 x 16 FMA tiles; int8 vpmaddwd on int16 pairs */
    KERNELS_ISA_AVX2,
    /* AVX-512F: fp32 12 x 32 FMA tiles; int8 as avx2 (no VNNI needed) */
    KERNELS_ISA_AVX512,
    /* AVX-512F + VNNI: fp32 as avx512; int8 vpdpbusd on u8 x s8 quads */
    KERNELS_ISA_AVX512_VNNI,
    /* The VNNI path's int8 data layout (u8 activations, s8 quads, column
     * sums) run by plain C, fp32 generic: tests check that layout on CPUs
     * without VNNI. */
    KERNELS_ISA_VNNI_REFERENCE,
    /* AVX2 + FMA + AVX-VNNI (VEX vpdpbusd on ymm: Intel client CPUs from
     * Alder Lake, which have no AVX-512): fp32 as avx2; int8 vpdpbusd on
     * the u8 x s8 quads of avx512vnni, 8 columns a register. */
    KERNELS_ISA_AVX_VNNI,
    /* aarch64 NEON (always there on aarch64 Linux): fp32 6 x 16 vfmaq
     * tiles; int8 smull/smlal/sadalp on the s8 quads of avx512vnni (the
     * u8 activations turned back into s8) */
    KERNELS_ISA_NEON,
    /* AVX-512 VNNI + AVX512_BF16 (Zen 4/5, Cooper Lake, Sapphire Rapids):
     * fp32 and int8 as avx512vnni; bf16 files' linear layers on vdpbf16ps
     * (kernels_bf16.h), the bits every other path computes with fmas */
    KERNELS_ISA_AVX512_BF16,
    /* NEON + FEAT_DotProd (HWCAP_ASIMDDP: Cortex-A55/A76 on, Pi 5, Graviton
     * 2+): fp32 as neon; int8 sdot on the same quads, 16 products an
     * instruction */
    KERNELS_ISA_NEON_DOTPROD,
    /* NEON + FEAT_I8MM (HWCAP2_I8MM: Cortex-A510/A710 on, Graviton 3+):
     * fp32 as neon; int8 smmla (2 rows x 2 columns x 8 k an instruction)
     * on its own layout, 8 k of 2 columns together */
    KERNELS_ISA_NEON_I8MM,
    KERNELS_ISA_COUNT
} kernels_isa;

/* How a kernel's GEMMs run. */
typedef enum kernels_gemm_mode {
    /* vitc's own GEMM (kernels_linear, attention_forward): weights packed
     * once at load, every output element summed over K in one fixed chain,
     * output panels split statically over the threads. An element's bits
     * depend on nothing but its inputs: not on the thread count, the batch,
     * the instruction-set path or OpenBLAS. Inference. */
    KERNELS_GEMM_VITC,
    /* Training: the blocks' linear layers, attention and the backward
     * GEMMs on vitc's kernels as above (train_packed.h, kernels_train.h);
     * what still has plain weights (the patch embedding and head forward,
     * LayerScale's projections) on OpenBLAS's sgemm, which threads itself
     * with a split fixed for a given thread count. */
    KERNELS_GEMM_OPENBLAS,
} kernels_gemm_mode;

typedef struct kernels_threads {
    int count; /* OpenMP threads for row-wise loops and GEMM panels */
    kernels_gemm_mode gemm;
    kernels_isa isa; /* the path of vitc's own kernels (every path: the same bits) */
    /* Set when every one of the count threads of an enclosing OpenMP
     * parallel region calls the kernel (inference, one image over all
     * threads): the kernel then shares its work with orphaned worksharing
     * (omp for, the panel split by thread number) and ends with a barrier,
     * opening no region of its own. One region per image instead of one or
     * two per kernel: a barrier per step instead of a fork and a join.
     * Same split of the work, same bits. KERNELS_GEMM_VITC only. */
    int in_team;
} kernels_threads;

/* Who runs the kernels: inference (forward.c) or training (train.c). */
typedef enum kernels_pass { KERNELS_INFERENCE, KERNELS_TRAINING } kernels_pass;

/* The one decision on GEMM threading: inference runs vitc's own GEMM on
 * path isa; training runs its plain-weight GEMMs (matmul_forward) on
 * OpenBLAS and every other kernel on path isa. */
kernels_threads kernels_threading(kernels_pass pass, int threads, kernels_isa isa);

/* An activation, after a GEMM's sum (kernels_epilogue) or on its own
 * (kernels_act_forward). */
typedef enum kernels_act {
    KERNELS_ACT_NONE,
    KERNELS_ACT_GELU,       /* exact (erf) GELU */
    KERNELS_ACT_QUICK_GELU, /* x * sigmoid(1.702 x) */
} kernels_act;

/* BASE_OK when the OpenBLAS linked in is its OpenMP build: the threading
 * above relies on OpenBLAS running single-threaded when called inside an
 * OpenMP parallel region, which only that build does. Else
 * BASE_E_UNSUPPORTED and a one-line message. */
base_status kernels_check_blas(base_error *err);

/* count floats, 64-byte aligned (whole AVX-512 vectors per row start) and
 * zeroed; NULL when out of memory. Free with free(). */
float *kernels_alloc_floats(size_t count);

/* LayerNorm (biased variance, as torch) of one row of dim floats; mean and
 * rstd (1/std) are stored when not NULL (training keeps them). */
void layernorm_forward_row(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int dim, float eps);

/* The token rows of count images into out [count*T, dim]: [class (cls)]
 * [distillation (dist)] [registers (reg, [num, dim])] [patches] (cls,
 * dist, reg NULL: none; T - Np prefix tokens in all), each plus its row of
 * pos [T, dim] (zero rows for tokens without one). patches [count*Np,
 * dim]: the patch projections, bias included. The one token assembly of
 * inference and training. */
void embed_tokens_forward(float *out, const float *patches, const float *cls, const float *dist,
                          const float *reg, const float *pos, int count, int T, int Np, int dim,
                          kernels_threads th);

/* How pool_forward pools an image's tokens (vit_global_pool's values). */
typedef enum kernels_pool {
    KERNELS_POOL_TOKEN,    /* the first class_rows tokens side by side (class [, distillation]) */
    KERNELS_POOL_AVG,      /* the mean of tokens prefix..T-1 (the patches) */
    KERNELS_POOL_TOKEN_AVG /* [token 0 ‖ the mean of the patches] */
} kernels_pool;

/* What the head reads from one image's T token rows (before fc_norm):
 * each row pool reads is first LayerNormed with norm_w/norm_b (the final
 * norm; NULL: read as it is, for rows normed already or a model without
 * one), class rows into out, mean rows one by one through scratch [dim]
 * and summed in token order into out, then divided by their count: the
 * one pooling of inference and training. */
void pool_forward(float *out, const float *tokens, int T, int prefix, int class_rows, int dim,
                  kernels_pool pool, const float *norm_w, const float *norm_b, float eps,
                  float *scratch);

/* LayerNorm of rows contiguous rows; mean and rstd [rows] or NULL. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int rows, int dim, float eps,
                       kernels_threads th);

/* LayerNorm backward for rows whose inp and dinp rows sit stride rows apart
 * (1: contiguous; dout is contiguous): dinp += the input gradient, dweight
 * and dbias = column sums of dout·xhat and dout. The sums go through GEMV
 * over scratch [rows, dim] and ones [rows] so their order is fixed. */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int rows, int dim, size_t stride, float *scratch,
                        const float *ones, kernels_threads th);

/* Training's GEMMs on plain weights, on OpenBLAS (inference runs
 * kernels_linear): out[r, j] = (inp · weightᵀ)[r, j] + beta ·
 * out[r, j], out's rows ldo floats apart. */
void matmul_gemm(float *out, int ldo, const float *inp, const float *weight, int rows,
                 int in_dim, int out_dim, float beta, kernels_threads th);

/* out[rows, out_dim] = inp[rows, in_dim] · weight[out_dim, in_dim]ᵀ + bias
 * (bias NULL: none). The bias is written first and the GEMM accumulates
 * onto it (beta = 1), which OpenBLAS runs without another pass over out. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int rows, int in_dim, int out_dim, kernels_threads th);

/* out = residual + (inp · weightᵀ + bias): a sublayer's projection added
 * to the residual stream (out may be residual: x += proj(attn)). Summed as
 * (residual + bias) + inp · weightᵀ, the GEMM accumulating onto the first
 * two, so no extra pass over the rows. */
void residual_matmul_forward(float *out, const float *residual, const float *inp,
                             const float *weight, const float *bias, int rows, int in_dim,
                             int out_dim, kernels_threads th);

/* Given dout [rows, out_dim]: dweight = doutᵀ · inp (kernels_train.h:
 * each element one chain of fmas over the rows in order), dbias = column
 * sums of dout (GEMV with ones [rows]; skipped when dbias is NULL, a layer
 * without bias), dinp = dout · weight on vitc's GEMM, weight packed into
 * scratch first (skipped when dinp is NULL). Training; the gradients'
 * bits depend neither on th.count nor on th.isa. */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, const float *ones, int rows,
                     int in_dim, int out_dim, float *scratch, kernels_threads th);

/* Floats of the scratch training's kernels share (attention_forward and
 * attention_backward on `threads` threads, matmul_backward's packed
 * weight for every linear layer of a model of these sizes: hidden D,
 * mlp, classes over pooled features). */
size_t kernels_train_scratch_floats(int threads, int T, int D, int heads, int mlp, int classes,
                                    int pooled);

/* out = act(inp) over n floats on path th.isa (inference: after the int8
 * GEMM, whose epilogue has no activation); out may be inp. */
void kernels_act_forward(float *out, const float *inp, size_t n, kernels_act act,
                         kernels_threads th);

/* Exact (erf) GELU, as torch.nn.GELU() and HF's "gelu" (kernels_act_forward
 * with KERNELS_ACT_GELU); out may be inp. */
void gelu_forward(float *out, const float *inp, size_t n, kernels_threads th);

/* dinp = dout · GELU'(inp) = dout · (Phi(inp) + inp phi(inp)) on path
 * th.isa, with the forward's erf and exp; dinp may be dout. */
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n,
                   kernels_threads th);

/* Softmax of one row of n values, in place (max subtracted first). */
void softmax_forward(float *values, int n);

/* QuickGELU, x * sigmoid(1.702 x) (OpenAI CLIP), n floats; in place
 * allowed (kernels_act_forward with KERNELS_ACT_QUICK_GELU). */
void quick_gelu_forward(float *out, const float *inp, size_t n, kernels_threads th);

/* dinp = dout · QuickGELU'(inp) = dout · (s + 1.702 inp s (1 - s)),
 * s = sigmoid(1.702 inp); dinp may be dout. */
void quick_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n,
                         kernels_threads th);

/* x += gamma * branch over rows of dim (LayerScale on a residual branch). */
void layer_scale_add_forward(float *x, const float *branch, const float *gamma, int rows, int dim,
                             kernels_threads th);

/* Its backward from dout = d(x after the add) [rows, dim]: dbranch = dout ·
 * gamma, dgamma = column sums of dout · branch (GEMV over scratch [rows,
 * dim] and ones [rows], a fixed order). The residual's gradient is dout
 * itself. */
void layer_scale_add_backward(float *dbranch, float *dgamma, const float *dout,
                              const float *branch, const float *gamma, int rows, int dim,
                              float *scratch, const float *ones, kernels_threads th);

/* qk-norm: LayerNorm over each head's dh = D / heads values of Q (weight
 * qw, bias qb) and of K (kw, kb), in place in fused qkv rows [rows, 3D].
 * mean and rstd, when not NULL, receive [rows, 2 (q, k), heads] statistics
 * for the backward pass. */
void qk_norm_forward(float *qkv, float *mean, float *rstd, int rows, int D, int heads,
                     const float *qw, const float *qb, const float *kw, const float *kb, float eps,
                     kernels_threads th);

/* Its backward, in place on dqkv [rows, 3D]: the Q and K parts hold the
 * gradient of the normed values and receive that of the raw ones (V is
 * left alone). inp: the raw Q and K, rows 2D floats apart ([q ‖ k], as
 * they were before qk_norm_forward). dqw, dqb, dkw, dkb [dh]: column sums
 * over rows and heads (GEMV over scratch [rows, D] and ones [rows], then
 * the heads in order; sums [D] more scratch). */
void qk_norm_backward(float *dqkv, float *dqw, float *dqb, float *dkw, float *dkb,
                      const float *inp, const float *qw, const float *kw, const float *mean,
                      const float *rstd, int rows, int D, int heads, float *scratch, float *sums,
                      const float *ones, kernels_threads th);

/* Multi-head self-attention of batch images of T tokens: qkv [batch*T, 3D]
 * (q; k; v, heads contiguous inside each) into out [batch*T, D]. A task is
 * block_rows query rows of one head of one image, the last block of a head
 * also taking the T % block_rows rows after it. att, when not NULL,
 * receives the probabilities [batch, heads, T, T] (kept for the backward
 * pass, or captured). Both products run on vitc's GEMM, each thread
 * packing the head's K and V into its part of scratch
 * (attention_scratch_floats each), and every element has the same bits
 * whatever block_rows, th and the path. */
size_t attention_scratch_floats(int T, int D, int heads, int block_rows);
void attention_forward(float *out, float *att, const float *qkv, int batch, int T, int D,
                       int heads, int block_rows, float *scratch, kernels_threads th);

/* Attention backward from dout [batch*T, D] and the kept att into dqkv
 * [batch*T, 3D]; scratch as kernels_train_scratch_floats gives it. With P
 * the probabilities and O = P V: dP = dO Vᵀ, dV = Pᵀ dO, dS = P ⊙ (dP -
 * rowsum(dP ⊙ P)), dQ = scale dS K, dK = scale dSᵀ Q (scale folded into
 * dS), on vitc's GEMM and kernels_train.h's aᵀ b: each element one fixed
 * chain, whatever th. */
void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                        const float *att, int batch, int T, int D, int heads,
                        kernels_threads th);

/* ------------------------------------------------------- paths, int8 */

/* "generic", "avx2", "avx512", "avx512vnni", "vnni-reference", "avxvnni". */
const char *kernels_isa_name(kernels_isa isa);

/* The VITC_ISA values this build's architecture knows, "|"-separated
 * (the reference and forcing-only paths left out). */
const char *kernels_isa_choices(void);

/* The path whose int8 kernels path isa runs: avx512 (AVX-512F without
 * VNNI) runs avx2's, every other path its own. */
kernels_isa kernels_isa_int8(kernels_isa isa);

/* Nonzero when this CPU (and OS) can run isa. */
int kernels_isa_supported(kernels_isa isa);

/* The path to use: the fastest this CPU runs, or the one `forced` names
 * (the VITC_ISA environment variable; NULL or "" or "auto": choose). An
 * unknown name or a path this CPU lacks is BASE_E_UNSUPPORTED with a line
 * naming what it has. */
base_status kernels_isa_choose(const char *forced, kernels_isa *isa, base_error *err);

/* An int8 weight matrix [rows, cols] (a Linear layer's weight, rows = its
 * outputs) with one float scale per group of `group` weights along a row,
 * packed for the int8 kernels of one path. Opaque. */
typedef struct kernels_qmatrix kernels_qmatrix;

/* An empty (zero) packed matrix, or NULL when out of memory or the
 * arguments are not positive with group dividing cols. */
kernels_qmatrix *kernels_qmatrix_create(int rows, int cols, int group, kernels_isa isa);

/* Fills rows first_row .. first_row + count - 1 from values [count, cols]
 * and scales [count, cols / group]. */
void kernels_qmatrix_set_rows(kernels_qmatrix *w, int first_row, int count,
                              const signed char *values, const float *scales);

/* Its values times their scales as float32 [rows, cols] (for training from
 * an int8 file). */
void kernels_qmatrix_to_f32(const kernels_qmatrix *w, float *dst);

/* The int8 kernels it runs on: avx512's are avx2's, the others' their own. */
kernels_isa kernels_qmatrix_isa(const kernels_qmatrix *w);
size_t kernels_qmatrix_bytes(const kernels_qmatrix *w);
void kernels_qmatrix_free(kernels_qmatrix *w);

/* Bytes of quantised activations for rows x cols inputs (any path). */
size_t kernels_qinp_bytes(int rows, int cols);

/* Groups along a row of w (cols / group). */
int kernels_qmatrix_groups(const kernels_qmatrix *w);

/* Dynamic quantisation of a quantised layer's inputs, per row and per
 * group of the weights' groups along it (32 inputs, or the whole row):
 * inp_scale[r, g] = max|inp[r, group g]| / 127 ([rows, groups] floats),
 * qinp = round-half-even(inp * (127 / max)) in -127..127, in w's path's
 * layout. A group with a NaN or infinity gets a NaN scale, so its row's
 * outputs are NaN (reported, never hidden). Per group rather than per
 * row: one outlier channel (ViTs have them) then coarsens 32 inputs, not
 * the row; per row, top-1 agreed with float32 on 98.8% of the 500
 * imagenet-sample photos for both real checkpoints. */
void quantize_forward(void *qinp, float *inp_scale, const float *inp, int rows, int cols,
                      const kernels_qmatrix *weight, kernels_threads th);

/* out[rows, weight rows] = act(residual + bias + dequantised(qinp · weightᵀ)):
 *   sum = 0; for each group g in order:
 *       sum = fma((float)(exact int sum over g), scale[n, g] * inp_scale[r, g], sum)
 *   out[r, n] = act((residual[r, n] + bias[n]) + sum)
 * residual and bias may be NULL (out may be residual); act as
 * kernels_act_forward computes it. Each output's arithmetic is fixed by
 * its row and column alone (no batch or thread count changes it); threads
 * split the columns. */
void qmatmul_forward(float *out, const float *residual, const void *qinp,
                     const float *inp_scale, const kernels_qmatrix *weight, const float *bias,
                     kernels_act act, int rows, kernels_threads th);

/* ------------------------------------------------------------ bf16 GEMM */

/* A bfloat16 weight matrix [rows, cols] (a Linear layer's weight stored
 * as BF16 by vit quantize --dtype bf16), packed once as vdpbf16ps reads
 * it: column panels of 16 outputs holding K in pairs, [rows / 16][kpad /
 * 2][16][2] bf16 (kpad = cols rounded up to even; padding 0). One layout
 * for every path. Opaque. */
typedef struct kernels_bmatrix kernels_bmatrix;

/* An empty (zero) packed matrix, or NULL when out of memory or the
 * arguments are not positive. */
kernels_bmatrix *kernels_bmatrix_create(int rows, int cols);

/* Fills rows first_row .. first_row + count - 1 from bf16 bit patterns
 * [count, cols] (host order, any alignment: a file's bytes); subnormal weights become zeros of their sign (what
 * vdpbf16ps reads them as). */
void kernels_bmatrix_set_rows(kernels_bmatrix *w, int first_row, int count,
                              const void *values);

/* Its values as float32 [rows, cols] (exact; training from a bf16 file). */
void kernels_bmatrix_to_f32(const kernels_bmatrix *w, float *dst);
size_t kernels_bmatrix_bytes(const kernels_bmatrix *w);
void kernels_bmatrix_free(kernels_bmatrix *w);

/* Bytes of bf16 activations for rows x cols inputs (bf16_round_forward). */
size_t kernels_binp_bytes(int rows, int cols);

/* A bf16 layer's inputs rounded to bfloat16, per row: round to nearest
 * even, subnormals to zeros of their sign, NaN kept a (quiet) NaN, the
 * row padded with a zero to w's even length: binp [rows][kpad]. */
void bf16_round_forward(uint16_t *binp, const float *inp, int rows, int cols,
                        const kernels_bmatrix *w, kernels_threads th);

/* ------------------------------------------------------------ fp32 GEMM */

/* A float32 weight matrix [rows, cols] (a Linear layer's weight, rows = its
 * outputs), packed once for vitc's GEMM: column panels of 16 outputs,
 * [rows / 16][cols][16] floats, rows padded with zero outputs. One layout
 * for every path. Opaque. */
typedef struct kernels_fmatrix kernels_fmatrix;

/* An empty (zero) packed matrix, or NULL when out of memory or the
 * arguments are not positive. */
kernels_fmatrix *kernels_fmatrix_create(int rows, int cols);

/* Fills rows first_row .. first_row + count - 1 of columns first_col ..
 * first_col + width - 1 from values [count, width] (row stride width),
 * each times scale (1, or a power of two: exact). */
void kernels_fmatrix_set(kernels_fmatrix *w, int first_row, int count, int first_col, int width,
                         const float *values, float scale);

/* Its values as float32 [rows, cols] (training from a packed file whose
 * layer was mapped, never unpacked: vit/packed.c). */
void kernels_fmatrix_to_f32(const kernels_fmatrix *w, float *dst);

int kernels_fmatrix_rows(const kernels_fmatrix *w);
int kernels_fmatrix_cols(const kernels_fmatrix *w);
size_t kernels_fmatrix_bytes(const kernels_fmatrix *w);
void kernels_fmatrix_free(kernels_fmatrix *w);

/* ------------------------------------------- packed matrices in files */

/* A packed matrix as a file stores it (vit quantize's packed copies,
 * docs/quantize.md): its bytes in up to KERNELS_PACKED_PARTS parts, each
 * a multiple of 64 bytes and 64-byte aligned, under a layout name that
 * this layer defines and versions. A load maps the parts in place of
 * packing only when the file's layout name is the one the kernels use now
 * (kernels_*_layout): any change to a packed layout (panel width, element
 * order, padding, what the parts hold) must change its name, so an older
 * file is repacked from its source tensors instead of misread. */
#define KERNELS_PACKED_PARTS 3
typedef struct kernels_packed {
    int count;
    const void *part[KERNELS_PACKED_PARTS];
    size_t bytes[KERNELS_PACKED_PARTS];
} kernels_packed;

/* The layout names, with their version: fp32 matrices (every path),
 * and int8 matrices for path isa's kernels. */
const char *kernels_fmatrix_layout(void);
const char *kernels_qmatrix_layout(kernels_isa isa);
const char *kernels_bmatrix_layout(void);

/* w's packed bytes (pointers into w, valid while it lives). */
void kernels_fmatrix_parts(const kernels_fmatrix *w, kernels_packed *out);
void kernels_qmatrix_parts(const kernels_qmatrix *w, kernels_packed *out);
void kernels_bmatrix_parts(const kernels_bmatrix *w, kernels_packed *out);

/* A matrix over parts the caller keeps alive (a mapped file), not copied,
 * as kernels_*_parts gave them for the same arguments; NULL when the
 * count, a size or an alignment is not what the layout needs, when an int8
 * matrix for a C path holds what packing cannot write (a weight outside
 * -127..127, a column sum not its weights': kernels_int8.c), or out of
 * memory.
 * kernels_*_free frees the matrix and leaves the parts. */
kernels_fmatrix *kernels_fmatrix_wrap(int rows, int cols, const kernels_packed *p);
kernels_qmatrix *kernels_qmatrix_wrap(int rows, int cols, int group, kernels_isa isa,
                                      const kernels_packed *p);
kernels_bmatrix *kernels_bmatrix_wrap(int rows, int cols, const kernels_packed *p);

/* out[r, j] from the sum s = inp[r, 0] w[j, 0] + ... over k in order (a
 * chain of fused multiply-adds from 0), in this order, each step rounded:
 *   v = s * scale (when scaled), v = v + bias[j] (when bias),
 *   v = act(v), then out = residual[r, j] + v, or with LayerScale
 *   out = residual[r, j] + gamma[j] * v (when residual).
 * act and residual are not combined. residual has out's row stride and may
 * be out itself. */
typedef struct kernels_epilogue {
    const float *bias;     /* [cols of out] or NULL */
    int scaled;            /* multiply by scale first */
    float scale;
    kernels_act act;
    const float *residual; /* NULL: none */
    const float *gamma;    /* LayerScale [cols of out] or NULL (residual only) */
} kernels_epilogue;

/* out [rows, w rows] (row stride ldo) = the epilogue of inp [rows, w cols]
 * (row stride lda) times wᵀ, on path th.isa; the output panels are split
 * statically over th's threads. Each element's bits depend on its inputs
 * alone. ep NULL: a plain product. */
void kernels_linear(float *out, int ldo, const float *inp, int lda, int rows,
                    const kernels_fmatrix *w, const kernels_epilogue *ep, kernels_threads th);

/* out [rows, N] (row stride ldo) = a [rows, K] (row stride lda) · b [K, N]
 * (row-major, row stride ldb) by the same GEMM, b packed first into scratch
 * (kernels_matmul_scratch_floats(K, N) floats) by the calling thread, so not
 * from inside a team (th.in_team 0); out may be b (packed before out is
 * written), not a or scratch. The same bits as kernels_linear with b's
 * transpose as weights. */
size_t kernels_matmul_scratch_floats(int K, int N);
void kernels_matmul(float *out, int ldo, const float *a, int lda, int rows, const float *b, int ldb,
                    int K, int N, float *scratch, kernels_threads th);

/* out [rows, w rows] (row stride ldo) = the epilogue (kernels_epilogue) of
 * the bf16 products binp · wᵀ summed in fp32: for each pair of inputs k =
 * 2i, 2i + 1 in order, s = s + a[2i+1] w[2i+1], then s = s + a[2i] w[2i],
 * each an exact product added with one rounding to nearest even, a result
 * below FLT_MIN (after rounding) flushed to zero: vdpbf16ps's arithmetic
 * (kernels_bf16.h), the same bits on every path. Output panels split
 * statically over th's threads. */
void kernels_linear_bf16(float *out, int ldo, const uint16_t *binp, int rows,
                         const kernels_bmatrix *w, const kernels_epilogue *ep,
                         kernels_threads th);

/* What path isa runs a bf16 layer on: "avx512bf16 (vdpbf16ps)", "avx2
 * (fma)", "neon (vfmaq)" or "generic (C)". */
const char *kernels_bf16_path(kernels_isa isa);

#endif
