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
typedef struct { const odl_t *a, *b; odl_t *c; int m, n, k; int accumulate; } odl_mm_args_t;
void odl_mm_nn(void *args);
void odl_mm_nt(void *args);
void odl_mm_tn(void *args);

/* ---- convolution shape transforms (one sample: x is [C,H,W]) ----
 * col is [C*KH*KW, HO*WO], row index (c*KH + i)*KW + j, column index oh*WO + ow, holding
 * x[c, oh*SH - PT + i, ow*SW - PL + j] or 0 outside the image (zero padding; bottom/right padding is
 * whatever HO, WO imply, so asymmetric padding works). */
typedef struct { const odl_t *x; odl_t *col; int c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; } odl_im2col_args_t;
void odl_im2col(void *args);
/* col2im: the adjoint of im2col. dx[C,H,W] (+)= sum of the col entries that im2col took from each pixel. */
typedef struct { const odl_t *col; odl_t *dx; int c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; int accumulate; } odl_col2im_args_t;
void odl_col2im(void *args);

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
#endif
