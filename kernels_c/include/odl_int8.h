/* int8 inference kernels (kernels_c/int8.c) of `odl compile --deploy int8` (odl/deploy/int8/; docs/quantization.md,
 * "Deploying int8").
 *
 * Codes: an activation is torch's quint8 code q in [0, 255] stored as the int8 q - 128, its zero point likewise
 * (zp - 128): the difference q - zp, and so the real value (q - zp) * scale, is unchanged. Weights are qint8 codes
 * (symmetric, per output channel, zero point 0). Accumulation is int8 x int8 -> int32, exact.
 * Requantization (every kernel that writes codes): one FP32 multiplier per output channel,
 *   q = clamp(rne((float)acc * mult[c]) + zp, lo, hi)
 * with the product rounded to FP32 on its own (odl_round.h), rne = round half to even (torch's rounding), and lo / hi
 * the code range (-128 / 127) narrowed by a ReLU (lo = zp) or ReLU6 (hi = zp + rne(6 / scale)) folded into it.
 * Every kernel splits its outputs over the harts (odl_split). */
#ifndef ODL_INT8_H
#define ODL_INT8_H
#include <stdint.h>

/* 4 int8 lanes in one 32-bit word (a GCC/clang vector type: RVV e8 on the target, host SIMD in tests) */
typedef int8_t odl_i8x4_t __attribute__((vector_size(4)));

/* odl_i8_quantize: y = clamp(rne(x * inv) + zp, -128, 127) for n floats (the model input; inv = 1 / scale in FP32,
 * as torch multiplies by it). odl_i8_dequantize: y = (float)(x - zp) * scale (the logits). */
typedef struct { const float *x; int8_t *y; int n; float inv; int zp; } odl_i8_quantize_args_t;
void odl_i8_quantize(void *args);
typedef struct { const int8_t *x; float *y; int n; float scale; int zp; } odl_i8_dequantize_args_t;
void odl_i8_dequantize(void *args);

/* odl_i8_im2col: x [C, H, W] -> cols [C * KH * KW, HO * WO]: row (c, kh, kw), in the weight's order, holds that tap
 * for every output pixel; taps outside the image hold `pad` (the input's zero point: a real 0). */
typedef struct { const int8_t *x; int8_t *cols; int c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; int pad; }
  odl_i8_im2col_args_t;
void odl_i8_im2col(void *args);

/* odl_i8_gemm: y[i, j] = requant(sum_k wt[i, k] * a[k, j] + bias[i]) for i < m, j < n: a [K, N], y [M, N] with rows
 * ldy codes apart (a conv: M output channels, N output pixels, a = odl_i8_im2col's cols, ldy = N, or the image's
 * pixels when N is a block of its output rows; a linear: N = 1). The weights wt[i, k] are row-major
 * [M, K] when N = 1, else packed in groups of 8 channels, [ceil(M / 8), K, 8] (wt[i, k] at ((i / 8) * K + k) * 8 +
 * i % 8, rows past M zero): a step of k reads its 8 weights from one place (odl.deploy.int8.lower.pack_gemm). The
 * bias holds the layer's bias at scale s_in * s_w[i] and -zp_in * sum_k wt[i, k] (the input's zero point, folded). */
typedef struct { const int8_t *wt, *a; int8_t *y; const int32_t *bias; const float *mult; int m, n, k, ldy;
                 int zp, lo, hi; }
  odl_i8_gemm_args_t;
void odl_i8_gemm(void *args);

/* odl_i8_dwconv: depthwise conv, x [C, H, W], wt [C, KH, KW] -> y [C, HO, WO];
 * acc = sum over taps inside the image of (x - zp_in) * wt, + bias[c], requantized. */
typedef struct { const int8_t *x, *wt; int8_t *y; const int32_t *bias; const float *mult; int c, h, w, kh, kw, sh, sw,
                 pt, pl, ho, wo; int zp_in, zp, lo, hi; } odl_i8_dwconv_args_t;
void odl_i8_dwconv(void *args);

/* odl_i8_add: y = clamp(rne(((float)(a - za) * sa + (float)(b - zb) * sb) * inv) + zp, lo, hi): the residual add of
 * two quantized tensors in torch's fake-quant arithmetic (each product and the sum rounded to FP32). */
typedef struct { const int8_t *a, *b; int8_t *y; int n; float sa, sb, inv; int za, zb, zp, lo, hi; } odl_i8_add_args_t;
void odl_i8_add(void *args);

/* odl_i8_maxpool: x [C, H, W] -> y [C, HO, WO], the largest code of each window's taps inside the image (exactly the
 * code of the largest value: dequantization is increasing). odl_i8_avgpool: acc = sum of (x - zp_in) over the taps
 * inside the image, divided by cnt (count_include_pad: the window clipped to H + PT x W + PL, else the taps inside),
 * q = clamp(rne((float)acc * (mult / cnt)) + zp, -128, 127), mult = s_in / s_out. */
typedef struct { const int8_t *x; int8_t *y; int c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; } odl_i8_maxpool_args_t;
void odl_i8_maxpool(void *args);
typedef struct { const int8_t *x; int8_t *y; int c, h, w, kh, kw, sh, sw, pt, pl, ho, wo; int count_include_pad;
                 float mult; int zp_in, zp; } odl_i8_avgpool_args_t;
void odl_i8_avgpool(void *args);

#endif
