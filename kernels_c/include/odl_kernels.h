/* The odl kernel library. Every kernel is a task for odl_parallel(): void odl_xxx(void *args), args being
 * a pointer to its odl_xxx_args_t. Each core computes its own balanced share (odl_split) of the work.
 * Tensors are dense, row-major, NCHW for activations, PyTorch layouts for parameters.
 * "accumulate" = 0: the output is overwritten; 1: the result is added to what the output holds. */
#ifndef ODL_KERNELS_H
#define ODL_KERNELS_H
#include "odl_types.h"
#include "odl_team.h"

/* ---- matmul in the three training forms; M, N, K >= 1, any value ----
 * nn: C[M,N] (+)= A[M,K]   . B[K,N]      (conv forward W.col, linear input grad dY.W)
 * nt: C[M,N] (+)= A[M,K]   . B[N,K]^T    (conv weight grad dY.col^T, linear forward X.W^T)
 * tn: C[M,N] (+)= A[K,M]^T . B[K,N]      (conv input grad W^T.dY, linear weight grad dY^T.X) */
typedef struct { const odl_t *a, *b; odl_t *c; int m, n, k; int accumulate;
                 int lda, ldb, ldc; /* row strides in elements of A, B, C as stored; 0 = dense (K or M, N or K, N) */
                 int ct; /* nn / tn only: 1 = C is stored transposed, C^T[N,M] with row stride ldc (0 = M) */
                 const odl_t *bias; /* NULL, or (nn / tn) bias[i] added to row i of C (a conv's bias), (nt) bias[j]
                                     * added to column j (a linear layer's), in FP32 before the single rounding */
                 int plan; /* nn / tn only: 0 = the kernel plans its core grid; else the grid planned ahead
                            * (odl/ir/kernels.py mm_plan_field): pr | swap << 8 | cores << 16, used when the call
                            * runs on that many cores (pr dividing them) */
} odl_mm_args_t;
void odl_mm_nn(void *args);
void odl_mm_nt(void *args);
void odl_mm_tn(void *args);

/* ---- convolution shape transforms (one sample: x is [C,H,W]) ----
 * col is [C*KH*KW, HO*WO], row index (c*KH + i)*KW + j, column index oh*WO + ow, holding
 * x[c, oh*SH - PT + i, ow*SW - PL + j] or 0 outside the image (zero padding; bottom/right padding is
 * whatever HO, WO imply, so asymmetric padding works). */
typedef struct { const odl_t *x; odl_t *col; int c, h, w, kh, kw, sh, sw, pt, pl, ho, wo;
                 int dh, dw; /* odl_im2col_dilated only: tap (i, j) reads x[c, oh*SH - PT + i*DH, ow*SW - PL + j*DW]
                              * (odl_im2col ignores them: no dilation) */
                 int pad_only; /* odl_im2col: the DMA has already put every in-image element in col (odl_dma_im2col,
                                * memory hierarchy); write only the zero padding (x is not read) */
} odl_im2col_args_t;
void odl_im2col(void *args);
void odl_im2col_dilated(void *args);
/* col2im: the adjoint of im2col. dx[C,H,W] (+)= sum of the col entries that im2col took from each pixel.
 * col is scratch: the FP16 stride-1 same-width path zeroes col's padding entries (those im2col zero-fills) in place. */
typedef struct { const odl_t *col; odl_t *dx; int c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; int accumulate;
                 int dh, dw; /* dilation as in im2col (odl_col2im_dilated only) */ } odl_col2im_args_t;
void odl_col2im(void *args);
void odl_col2im_dilated(void *args);
/* transpose: dst[j*ldo + i] = src[i*ldi + j], src is [rows, cols] (row stride ldi, 0 = cols), dst [cols, rows]
 * (row stride ldo, 0 = rows) */
typedef struct { const odl_t *src; odl_t *dst; int rows, cols, ldi, ldo; } odl_transpose_args_t;
void odl_transpose(void *args);
/* conv weights for the input gradient computed as a conv of dy (stride 1): src W [cout, cin, kk] (kk = KH*KW),
 * dst the taps reversed with cin and cout swapped, W'(ci, co*kk + t) = W[co, ci, kk-1-t], stored [cin, cout*kk]
 * (row stride ld, 0 = cout*kk) when t == 0, or transposed [cout*kk, cin] when t == 1. */
typedef struct { const odl_t *src; odl_t *dst; int cout, cin, kk, t, ld; } odl_conv_wflip_args_t;
void odl_conv_wflip(void *args);

/* ---- bias: y is [N, C, HW] (HW = 1 for linear layers) ---- */
typedef struct { odl_t *y; const odl_t *bias; int n, c, hw; } odl_bias_add_args_t;
void odl_bias_add(void *args);                /* y[n,c,:] += bias[c] */
typedef struct { const odl_t *dy; odl_t *db; int n, c, hw; int accumulate; } odl_bias_grad_args_t;
void odl_bias_grad(void *args);               /* db[c] (+)= sum over n, hw of dy[n,c,hw]  (FP32 partial sums) */

/* ---- ReLU ---- */
typedef struct { const odl_t *x; odl_t *y; int len; } odl_relu_args_t;
void odl_relu_fwd(void *args);                /* y = max(x, 0); y may alias x */
typedef struct { const odl_t *y; const odl_t *dy; odl_t *dx; int len; int accumulate; } odl_relu_bwd_args_t;
void odl_relu_bwd(void *args);                /* dx (+)= dy * (y > 0); y is the forward output */

/* ---- softmax cross-entropy, mean over the batch ----
 * logits [N, C], labels int32 [N]; loss_out[0] = mean_n (logsumexp(logits[n]) - logits[n, label[n]]) (FP32);
 * dlogits[N, C] = (softmax(logits[n]) - onehot(label[n])) / N. Computed internally in FP32. */
typedef struct { const odl_t *logits; const int32_t *labels; odl_t *dlogits; float *loss_out; int n, c; } odl_softmax_xent_args_t;
void odl_softmax_xent(void *args);

/* ---- SGD: w -= lr * g ---- */
typedef struct { odl_t *w; const odl_t *g; int len; float lr; } odl_sgd_args_t;
void odl_sgd(void *args);

/* ---- fill: x[0..len) = value ---- */
typedef struct { odl_t *x; int len; float value; } odl_fill_args_t;
void odl_fill(void *args);

/* FP32 math without libc (exp, log), used by softmax and friends. */
float odl_expf(float x);
float odl_logf(float x);

/* ==== ops for ResNet8 / DS-CNN and friends (x is [N, C, HW] unless said otherwise) ==== */

/* ---- BatchNorm2d. Statistics over N*HW per channel, FP32 accumulation.
 * training=1: mean/var of the batch (biased var for normalisation), writes mean[c] and rstd[c] = 1/sqrt(var+eps),
 *   and if running_mean/var are non-NULL updates them: r = (1-momentum)*r + momentum*stat, with the UNBIASED
 *   variance (var * M/(M-1), M = N*HW; M == 1 -> use the biased one) for running_var, as PyTorch does.
 * training=0: mean = running_mean, rstd = 1/sqrt(running_var + eps) (also written to mean/rstd for the backward).
 * y = gamma[c] * (x - mean[c]) * rstd[c] + beta[c]; gamma/beta may be NULL (1 and 0). y may alias x? no. */
typedef struct { const odl_t *x; odl_t *y; const odl_t *gamma, *beta; float *mean, *rstd;
                 float *running_mean, *running_var; int n, c, hw; float eps, momentum; int training; } odl_bn_fwd_args_t;
void odl_bn_fwd(void *args);
/* xhat = (x - mean) * rstd. dbeta (+)= sum dy; dgamma (+)= sum dy*xhat (each may be NULL: frozen);
 * dx (may be NULL) (+)= training ? gamma*rstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)) : gamma*rstd*dy.
 * The sums are always computed in FP32 internally (needed for dx even when dgamma/dbeta are NULL).
 * accumulate applies to dx only; dgamma/dbeta are overwritten. */
typedef struct { const odl_t *x; const odl_t *dy; odl_t *dx; const odl_t *gamma; const float *mean, *rstd;
                 odl_t *dgamma, *dbeta; int n, c, hw; int training; int accumulate; } odl_bn_bwd_args_t;
void odl_bn_bwd(void *args);

/* ---- ReLU6: y = min(max(x, 0), 6); dx (+)= dy * (0 < y < 6). Same argument structs as ReLU. */
void odl_relu6_fwd(void *args);
void odl_relu6_bwd(void *args);

/* ---- elementwise add y = a + b (y may alias a or b), and copy/accumulate dst (+)= src ---- */
typedef struct { const odl_t *a, *b; odl_t *y; int len; } odl_add_args_t;
void odl_add(void *args);
typedef struct { const odl_t *src; odl_t *dst; int len; int accumulate; } odl_copy_args_t;
void odl_copy(void *args);

/* ---- pooling over one batch: x [N, C, H, W] -> y [N, C, HO, WO]; window KH x KW, stride SH/SW, zero-size
 * padding PT/PL on top/left (bottom/right implied by HO/WO; with ceil_mode the last window may pass them).
 * max: padding never wins (acts as -inf); argmax[n,c,oh,ow] = index ih*W+iw of the first maximum (int32).
 * avg: count_include_pad=1 divides by the window clipped to H+PT x W+PL (KH*KW unless ceil_mode), 0 divides
 * by the number of in-image pixels of the window.
 * Global average pooling = avg with KH=H, KW=W, stride 1, no padding. */
typedef struct { const odl_t *x; odl_t *y; int32_t *argmax; int n, c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; } odl_maxpool_fwd_args_t;
void odl_maxpool_fwd(void *args);
typedef struct { const odl_t *dy; const int32_t *argmax; odl_t *dx; int n, c, h, w, ho, wo; int accumulate; } odl_maxpool_bwd_args_t;
void odl_maxpool_bwd(void *args);   /* dx (+)= scatter of dy to the argmax positions (split over n*c planes) */
typedef struct { const odl_t *x; odl_t *y; int n, c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; int count_include_pad; } odl_avgpool_fwd_args_t;
void odl_avgpool_fwd(void *args);
typedef struct { const odl_t *dy; odl_t *dx; int n, c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; int count_include_pad; int accumulate; } odl_avgpool_bwd_args_t;
void odl_avgpool_bwd(void *args);

/* ---- dropout (training): keep element i iff odl_dropout_hash(seed, i) >= threshold, where
 * threshold = (uint32_t)(p * 4294967296.0) (p in [0, 1)); kept elements are scaled by scale = 1/(1-p).
 * mask[i] = 1 or 0 (uint8). The hash is a pure function so the host can reproduce the mask:
 *   odl_dropout_hash(seed, i): h = seed ^ (i * 0x9E3779B9u); h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13;
 *   h *= 0xC2B2AE35u; h ^= h >> 16; return h;   (all uint32 arithmetic) */
/* base: index of element 0 in the whole tensor (a tile of it, odl/tile/tiler.py), so the mask does not depend on tiling */
typedef struct { const odl_t *x; odl_t *y; uint8_t *mask; int len; uint32_t seed; uint32_t threshold; float scale;
                 uint32_t base; } odl_dropout_fwd_args_t;
void odl_dropout_fwd(void *args);
typedef struct { const odl_t *dy; const uint8_t *mask; odl_t *dx; int len; float scale; int accumulate; } odl_dropout_bwd_args_t;
void odl_dropout_bwd(void *args);   /* dx (+)= dy * mask * scale */
uint32_t odl_dropout_hash(uint32_t seed, uint32_t i);

/* ---- MSE loss, mean over all len elements: loss = mean((pred-target)^2) (FP32), dpred = 2*(pred-target)/len ---- */
/* total: elements of the whole tensor when this call is a tile of it (0: len); accumulate: add to *loss_out */
typedef struct { const odl_t *pred; const odl_t *target; odl_t *dpred; float *loss_out; int len; int total;
                 int accumulate; } odl_mse_args_t;
void odl_mse(void *args);

/* ---- optimizers (state in FP32) ----
 * SGD as torch.optim.SGD (dampening 0, not nesterov): g' = g + wd*w; buf = first ? g' : momentum*buf + g';
 * w -= lr * (momentum != 0 ? buf : g'). buf may be NULL when momentum == 0. */
/* center (optional, FP32): FedProx's proximal term mu * (w - center) is added to the gradient */
typedef struct { odl_t *w; const odl_t *g; float *buf; int len; float lr, momentum, wd; int first;
                 const float *center; float mu; } odl_sgd_momentum_args_t;
void odl_sgd_momentum(void *args);
/* Adam as torch.optim.Adam (L2 weight decay added to the gradient, not AdamW):
 * g' = g + wd*w; m = b1*m + (1-b1)*g'; v = b2*v + (1-b2)*g'^2;
 * w -= lr * (m / bc1) / (sqrt(v / bc2) + eps), with bc1 = 1 - b1^t, bc2 = 1 - b2^t given by the caller. */
typedef struct { odl_t *w; const odl_t *g; float *m, *v; int len; float lr, b1, b2, eps, wd, bc1, bc2; } odl_adam_args_t;
void odl_adam(void *args);
float odl_sqrtf(float x);

/* ---- depthwise Conv2d (groups = C, one filter per channel), one sample: x [C,H,W], w [C,KH,KW], y [C,HO,WO].
 * Direct kernels (no im2col), work split over (channel, output row) so C < cores still balances. */
/* bias: per channel, added in FP32 before the output's single rounding (NULL: none) */
typedef struct { const odl_t *x; const odl_t *w; odl_t *y; int c, h, w_, kh, kw, sh, sw, pt, pl, ho, wo; const odl_t *bias; } odl_dwconv_fwd_args_t;
void odl_dwconv_fwd(void *args);
/* dw[c] (+)= sum over positions of dy * x-window (FP32 partial sums); split over channels. */
typedef struct { const odl_t *x; const odl_t *dy; odl_t *dw; int c, h, w_, kh, kw, sh, sw, pt, pl, ho, wo; int accumulate; } odl_dwconv_wgrad_args_t;
void odl_dwconv_wgrad(void *args);
/* dx (+)= transposed depthwise conv of dy with w; split over (channel, input row). */
typedef struct { const odl_t *dy; const odl_t *w; odl_t *dx; int c, h, w_, kh, kw, sh, sw, pt, pl, ho, wo; int accumulate; } odl_dwconv_igrad_args_t;
void odl_dwconv_igrad(void *args);

/* ==== spatial and normalisation ops (Conv1d / groups / dilation use the conv kernels above) ==== */

/* ---- adaptive average pooling to any size, x [N, C, H, W] -> y [N, C, HO, WO]: PyTorch's windows
 * [floor(o*H/HO), ceil((o+1)*H/HO)) per axis (overlapping when HO does not divide H); dx (+)= dy spread evenly
 * over each window, summed over the windows covering a pixel (FP32). */
typedef struct { const odl_t *x; odl_t *y; int n, c, h, w, ho, wo; } odl_adaptive_avgpool_fwd_args_t;
void odl_adaptive_avgpool_fwd(void *args);
typedef struct { const odl_t *dy; odl_t *dx; int n, c, h, w, ho, wo; int accumulate; } odl_adaptive_avgpool_bwd_args_t;
void odl_adaptive_avgpool_bwd(void *args);

/* ---- LayerNorm / GroupNorm / InstanceNorm (kernels_c/norm.c): x is rows [R, M], statistics per row (biased
 * variance, FP32; mean[R], rstd[R] = 1/sqrt(var + eps) written for the backward); the affine index of element m
 * of row r is ((r % G)*M + m) / S (LayerNorm: G = S = 1; GroupNorm: R = N*G, S = HW; InstanceNorm: G = C,
 * S = HW). Each row is cut into `chunks` element ranges (work unit: one (row, chunk)); part is FP32 scratch of
 * 2*R*chunks floats. Forward: odl_norm_stats (partials) then odl_norm_fwd: y = (x - mean)*rstd*gamma[k] + beta[k]
 * (gamma/beta may be NULL: 1 and 0). Input gradient: odl_norm_bwd_stats then odl_norm_bwd:
 * dx (+)= rstd*(g*dy - mean(g*dy) - xhat*mean(g*dy*xhat)); dx may be dy. odl_norm_wgrad (before odl_norm_bwd when
 * dx overwrites dy): dgamma[k] (+)= sum dy*xhat, dbeta[k] (+)= sum dy (accumulate_w), either may be NULL. */
typedef struct { const odl_t *x; odl_t *y; const odl_t *gamma, *beta; float *mean, *rstd; float *part;
                 int rows, m, g, s, chunks; float eps; } odl_norm_fwd_args_t;
void odl_norm_stats(void *args);
void odl_norm_fwd(void *args);
typedef struct { const odl_t *x; const odl_t *dy; odl_t *dx; const odl_t *gamma; const float *mean, *rstd;
                 odl_t *dgamma, *dbeta; float *part; int rows, m, g, s, chunks; int accumulate, accumulate_w;
} odl_norm_bwd_args_t;
void odl_norm_bwd_stats(void *args);
void odl_norm_bwd(void *args);
void odl_norm_wgrad(void *args);

/* ---- Upsample / interpolate (kernels_c/upsample.c), x [N, C, H, W] -> y [N, C, HO, WO]; mode 0 nearest,
 * 1 (bi)linear; rh, rw: PyTorch's source-index scales (see upsample.c). bwd: dx (+)= the adjoint of fwd. */
typedef struct { const odl_t *x; odl_t *y; int n, c, h, w, ho, wo; int mode, align_corners; float rh, rw; } odl_upsample_args_t;
void odl_upsample_fwd(void *args);
typedef struct { const odl_t *dy; odl_t *dx; int n, c, h, w, ho, wo; int mode, align_corners; float rh, rw;
                 int accumulate; } odl_upsample_bwd_args_t;
void odl_upsample_bwd(void *args);
/* ==== activations, reductions, concatenation, softmax, NLL / BCE losses (kernels_c/activation.c, reduce.c) ==== */
/* ---- elementwise activation, op code below; alpha = LeakyReLU negative_slope or ELU alpha (else unused).
 * Computed in FP32 per element, rounded once. y may alias x. */
enum { ODL_ACT_SIGMOID = 0, ODL_ACT_TANH = 1, ODL_ACT_LEAKY_RELU = 2, ODL_ACT_ELU = 3, ODL_ACT_HARDSWISH = 4,
       ODL_ACT_HARDSIGMOID = 5, ODL_ACT_SILU = 6, ODL_ACT_GELU = 7 /* erf form */, ODL_ACT_GELU_TANH = 8 };
typedef struct { const odl_t *x; odl_t *y; int len; int op; float alpha; } odl_act_args_t;
void odl_act_fwd(void *args);
/* dx (+)= dy * act'(.), from s = the forward output (odl_act_bwd_reads_output(op)) or else the forward input.
 * dx may alias dy. */
typedef struct { const odl_t *s; const odl_t *dy; odl_t *dx; int len; int op; float alpha; int accumulate; } odl_act_bwd_args_t;
void odl_act_bwd(void *args);
int odl_act_bwd_reads_output(int op);
float odl_expm1f(float x);
float odl_tanhf(float x);
float odl_erff(float x);
float odl_erfcf(float x);

/* ==== elementwise ops of the torch.export frontend (kernels_c/broadcast.c); FP32 arithmetic, rounded once ==== */
/* y = x * scale + shift (tensor with a scalar: add, sub, mul, div); y may alias x. Backward: dx (+)= scale * dy */
typedef struct { const odl_t *x; odl_t *y; int len; float scale, shift; } odl_affine_args_t;
void odl_affine_fwd(void *args);
typedef struct { const odl_t *dy; odl_t *dx; int len; float scale; int accumulate; } odl_affine_bwd_args_t;
void odl_affine_bwd(void *args);
/* y = clamp(x, lo, hi) (bounds used where has_lo / has_hi). Backward: dx (+)= dy where x is within the bounds,
 * inclusive (clamp) or not (hardtanh) */
typedef struct { const odl_t *x; odl_t *y; int len; float lo, hi; int has_lo, has_hi; } odl_clamp_args_t;
void odl_clamp_fwd(void *args);
typedef struct { const odl_t *x; const odl_t *dy; odl_t *dx; int len; float lo, hi; int has_lo, has_hi, inclusive;
                 int accumulate; } odl_clamp_bwd_args_t;
void odl_clamp_bwd(void *args);
/* y[r, i] = x[r, i] * g[r] over c rows of hw (a gate broadcast over the trailing dims; hw = 1: elementwise).
 * Backward: dx[r, i] (+)= dy[r, i] * g[r]; dg[r] (+)= sum_i dy[r, i] * x[r, i] (FP32 sum) */
typedef struct { const odl_t *x; const odl_t *g; odl_t *y; int c, hw; } odl_rowmul_args_t;
void odl_rowmul_fwd(void *args);
typedef struct { const odl_t *dy; const odl_t *g; odl_t *dx; int c, hw; int accumulate; } odl_rowmul_dx_args_t;
void odl_rowmul_dx(void *args);
typedef struct { const odl_t *dy; const odl_t *x; odl_t *dg; int c, hw; int accumulate; } odl_rowmul_dg_args_t;
void odl_rowmul_dg(void *args);

/* ---- sum over the middle axis of x [outer, r, inner]: y[o, i] = scale * sum_k x[o, k, i] (mean: scale = 1/r) */
typedef struct { const odl_t *x; odl_t *y; int outer, r, inner; float scale; } odl_sum_args_t;
void odl_sum_fwd(void *args);
typedef struct { const odl_t *dy; odl_t *dx; int outer, r, inner; float scale; int accumulate; } odl_sum_bwd_args_t;
void odl_sum_bwd(void *args);   /* dx[o, k, i] (+)= scale * dy[o, i] */
/* ---- block copy: dst[o*dst_stride + i] (+)= src[o*src_stride + i] for o < outer, i < len (cat / stack) */
typedef struct { const odl_t *src; odl_t *dst; int outer, len, src_stride, dst_stride; int accumulate; } odl_block_copy_args_t;
void odl_block_copy(void *args);
/* ---- softmax (log = 0) / log_softmax (log = 1) over the middle axis of [outer, r, inner] ---- */
typedef struct { const odl_t *x; odl_t *y; int outer, r, inner; int log; } odl_softmax_args_t;
void odl_softmax_fwd(void *args);
/* from the output y: dx (+)= y * (dy - sum dy*y)  |  dy - exp(y) * sum dy */
typedef struct { const odl_t *y; const odl_t *dy; odl_t *dx; int outer, r, inner; int log; int accumulate; } odl_softmax_bwd_args_t;
void odl_softmax_bwd(void *args);
/* ---- NLL loss on log-probabilities logp [N, C], labels int32 [N]: loss = -mean logp[n, label[n]] (FP32),
 * dlogp = -onehot(label) / N */
typedef struct { const odl_t *logp; const int32_t *labels; odl_t *dlogp; float *loss_out; int n, c; } odl_nll_args_t;
void odl_nll(void *args);
/* ---- BCE with logits, mean over len: loss = mean(max(z,0) - z*t + log(1 + exp(-|z|))), dz = (sigmoid(z) - t)/len.
 * partial[core id] = the sum of the core's share of loss terms (partial has >= odl_num_cores() entries); then
 * odl_sum_partials with scale = 1/len gives the loss. */
typedef struct { const odl_t *z; const odl_t *target; odl_t *dz; float *partial; int len; } odl_bce_logits_args_t;
void odl_bce_logits(void *args);
typedef struct { const float *partial; float *out; float scale; } odl_sum_partials_args_t;
void odl_sum_partials(void *args);   /* out[0] = scale * sum of partial[0 .. odl_num_cores()), on core 0 */
/* ---- mixed precision (kernels_c/mixed.c): loss scaling, overflow check, updates on FP32 master weights ---- */
typedef struct { odl_t *x; int len; float s; } odl_scale_args_t;
void odl_scale(void *args);                 /* x *= s */
typedef struct { const odl_t *g; int len; int32_t *flag; } odl_grad_check_args_t;
void odl_grad_check(void *args);            /* *flag = 1 if any g is Inf/NaN */
typedef struct { odl_t *w; float *master; const odl_t *g; float *buf; int len; float lr, momentum, wd, inv_scale; int first; } odl_sgd_mixed_args_t;
void odl_sgd_mixed(void *args);
typedef struct { odl_t *w; float *master; const odl_t *g; float *m, *v; int len; float lr, b1, b2, eps, wd, bc1, bc2, inv_scale; } odl_adam_mixed_args_t;
void odl_adam_mixed(void *args);

/* ---- FP8 storage (kernels_c/fp8.c, --store fp8): formats ODL_FP8_E4M3 / ODL_FP8_E5M2, per-tensor scales ----
 * A scaled tensor's state is ODL_FP8_STATE_HEAD + hist floats: [scale, amax[ODL_FP8_AMAX_SLOTS], history[hist]],
 * one amax slot per core (at most ODL_FP8_AMAX_SLOTS cores). */
#define ODL_FP8_E4M3 0
#define ODL_FP8_E5M2 1
#define ODL_FP8_AMAX_SLOTS 8
#define ODL_FP8_STATE_HEAD (1 + ODL_FP8_AMAX_SLOTS)
typedef struct { const odl_t *x; uint8_t *q; int len; int fmt; const float *scale; float *amax; } odl_fp8_pack_args_t;
void odl_fp8_pack(void *args);    /* q = fp8(clamp(x / scale)); amax[core] = max(amax[core], |x|) (may be NULL) */
typedef struct { const uint8_t *q; odl_t *x; int len; int fmt; const float *scale; } odl_fp8_unpack_args_t;
void odl_fp8_unpack(void *args);  /* x = q * scale */
typedef struct { float *state; int count; int hist; int fmt; } odl_fp8_scale_args_t;
void odl_fp8_scale(void *args);   /* per tensor: push the amax into the history, scale from it, amax = 0 (core 0) */

/* ---- fake quantization (quantization-aware training, --qat int8; kernels_c/fakequant.c) ----
 * A tensor is [c, inner]: c channels (a weight [Cout, ...], per channel) or c = 1 (per tensor). Observer state and
 * qparams are FP32 vectors of c: the running range run_min / run_max (+inf / -inf before the first observation),
 * scale and zp (an integer value). part: [c][ODL_FQ_PART][2] floats of scratch, the cores' partial min / max (a team
 * has at most ODL_FQ_PART cores).
 * odl_fq_minmax: part[ch][k] = (min, max) of core k's share of x[ch, :] (accumulate: combined with part's values).
 * odl_fq_observe: update = 1: run = this step's range the first time, else run += avg * (cur - run); then (update or
 * not) scale / zp from run as torch.ao.quantization's _calculate_qparams (range widened to 0, eps; symmetric:
 * scale = max|.| / ((qmax - qmin) / 2); affine: scale = (max - min) / (qmax - qmin), zp = qmin - round(min / scale)).
 * odl_fq_fwd: y = (clamp(q, qmin, qmax) - zp) * scale, q = zp + round_half_even(x * (1 / scale)); mask = q in range;
 *   element i is in channel (base + i) / inner (base: element 0's index in the whole tensor).
 * odl_fq_bwd: dx (+)= dy where mask (straight-through), else 0. */
#define ODL_FQ_PART 8
typedef struct { const odl_t *x; float *part; int c, inner; int accumulate; } odl_fq_minmax_args_t;
void odl_fq_minmax(void *args);
typedef struct { const float *part; float *run_min, *run_max, *scale, *zp; int c; float avg; int qmin, qmax;
                 int symmetric, update; } odl_fq_observe_args_t;
void odl_fq_observe(void *args);
typedef struct { const odl_t *x; odl_t *y; uint8_t *mask; const float *scale, *zp; int len, inner, base; int qmin, qmax;
               } odl_fq_fwd_args_t;
void odl_fq_fwd(void *args);
typedef struct { const odl_t *dy; const uint8_t *mask; odl_t *dx; int len; int accumulate; } odl_fq_bwd_args_t;
void odl_fq_bwd(void *args);

#endif
