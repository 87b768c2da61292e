/* Elementwise ops the torch.export frontend brings (odl/ops/elementwise.py): y = x * scale + shift (a tensor with a
 * scalar: add, sub, mul, div), clamp with any bounds, and the multiply of x [rows, hw] by g broadcast along hw
 * (a squeeze-excitation gate [N, C, 1, 1] times [N, C, H, W]; hw = 1 is the plain elementwise product), with their
 * backward kernels. One source for both precisions: arithmetic in FP32 per element, rounded once to odl_t, as
 * PyTorch computes FP16 elementwise ops on the CPU. Each core takes a balanced contiguous share (odl_split). */
#include "odl_kernels.h"
#include "odl_simd.h"

void odl_affine_fwd(void *args) {
  const odl_affine_args_t *p = (const odl_affine_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  float s = p->scale, b = p->shift;
  for (int i = lo; i < hi; i++) p->y[i] = (odl_t)((float)p->x[i] * s + b);
}

void odl_affine_bwd(void *args) {
  const odl_affine_bwd_args_t *p = (const odl_affine_bwd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  float s = p->scale;
  if (p->accumulate)
    for (int i = lo; i < hi; i++) p->dx[i] = (odl_t)((float)p->dx[i] + (float)p->dy[i] * s);
  else
    for (int i = lo; i < hi; i++) p->dx[i] = (odl_t)((float)p->dy[i] * s);
}

void odl_clamp_fwd(void *args) {
  const odl_clamp_args_t *p = (const odl_clamp_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  for (int i = lo; i < hi; i++) {
    float v = (float)p->x[i];
    if (p->has_lo && v < p->lo) v = p->lo;
    if (p->has_hi && v > p->hi) v = p->hi;
    p->y[i] = (odl_t)v;
  }
}

/* the gradient passes where the input lies within the bounds: inclusive (clamp) lo <= x <= hi, else (hardtanh)
 * lo < x < hi */
void odl_clamp_bwd(void *args) {
  const odl_clamp_bwd_args_t *p = (const odl_clamp_bwd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  for (int i = lo; i < hi; i++) {
    float v = (float)p->x[i];
    int pass = p->inclusive ? ((!p->has_lo || v >= p->lo) && (!p->has_hi || v <= p->hi))
                            : ((!p->has_lo || v > p->lo) && (!p->has_hi || v < p->hi));
    float d = pass ? (float)p->dy[i] : 0.0f;
    p->dx[i] = p->accumulate ? (odl_t)((float)p->dx[i] + d) : (odl_t)d;
  }
}

/* y[r, i] = x[r, i] * g[r], rows r < c, i < hw; split over the elements */
void odl_rowmul_fwd(void *args) {
  const odl_rowmul_args_t *p = (const odl_rowmul_args_t *)args;
  int hw = p->hw, lo, hi;
  odl_split(p->c * hw, &lo, &hi);
  for (int u = lo; u < hi; u++) p->y[u] = (odl_t)((float)p->x[u] * (float)p->g[u / hw]);
}

/* dx[r, i] (+)= dy[r, i] * g[r] */
void odl_rowmul_dx(void *args) {
  const odl_rowmul_dx_args_t *p = (const odl_rowmul_dx_args_t *)args;
  int hw = p->hw, lo, hi;
  odl_split(p->c * hw, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    float d = (float)p->dy[u] * (float)p->g[u / hw];
    p->dx[u] = p->accumulate ? (odl_t)((float)p->dx[u] + d) : (odl_t)d;
  }
}

/* dg[r] (+)= sum over i of dy[r, i] * x[r, i], summed in FP32; split over the rows */
void odl_rowmul_dg(void *args) {
  const odl_rowmul_dg_args_t *p = (const odl_rowmul_dg_args_t *)args;
  int hw = p->hw, lo, hi;
  odl_split(p->c, &lo, &hi);
  for (int r = lo; r < hi; r++) {
    const odl_t *dy = p->dy + (size_t)r * hw, *x = p->x + (size_t)r * hw;
    odl_ksum_t k = odl_ksum_zero();   /* blocked and compensated (odl_simd.h) */
    for (int i = 0; i < hw;) {
      int end = odl_min_i(hw, i + ODL_SUM_BLOCK);
      float b = 0.0f;
      for (; i < end; i++) b += (float)dy[i] * (float)x[i];
      odl_ksum_add(&k, b);
    }
    float s = odl_ksum_value(k);
    p->dg[r] = p->accumulate ? (odl_t)((float)p->dg[r] + s) : (odl_t)s;
  }
}
