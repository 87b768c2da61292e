/* im2col / col2im (one sample, x is [C,H,W]); see odl_kernels.h for the layout.
 * im2col: the work unit is one (col row, oh) pair = WO outputs; units are split evenly over cores.
 * col2im is written as a gather: the unit is one row (c, ih) of dx, and each core sums into dx the col entries
 * that im2col took from that row. Cores own disjoint rows of dx, so nothing races and no barrier is needed,
 * and the split stays balanced even when C < number of cores. */
#include "odl_kernels.h"
#include "odl_simd.h"

/* Valid output columns [*lo, *hi) for kernel column j: 0 <= ow*sw - pl + j < w. */
ODL_INLINE void ow_range(int j, int w, int sw, int pl, int wo, int *lo, int *hi) {
  int t = pl - j; /* need ow*sw >= t */
  int l = t <= 0 ? 0 : (t + sw - 1) / sw;
  int u = w - 1 + pl - j; /* need ow*sw <= u */
  int h = u < 0 ? 0 : u / sw + 1;
  *lo = odl_min_i(l, wo);
  *hi = odl_max_i(*lo, odl_min_i(h, wo));
}

void odl_im2col(void *args) {
  const odl_im2col_args_t *p = (const odl_im2col_args_t *)args;
  int kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, h = p->h, w = p->w, sw = p->sw;
  int lo, hi;
  odl_split(p->c * kh * kw * ho, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int row = u / ho, oh = u - row * ho;
    int j = row % kw, ci = row / kw, i = ci % kh, c = ci / kh;
    odl_t *dst = p->col + (size_t)row * ho * wo + (size_t)oh * wo;
    int ih = oh * p->sh - p->pt + i;
    int a = 0, b = 0;
    if (ih >= 0 && ih < h) ow_range(j, w, sw, p->pl, wo, &a, &b);
    int ow = 0;
    for (; ow < a; ow++) dst[ow] = 0;
    if (a < b) {
      const odl_t *src = p->x + ((size_t)c * h + ih) * w + (a * sw - p->pl + j);
      if (sw == 1) {
        int n = b - a, t = 0;
        odl_t *d = dst + a;
        for (; t + ODL_LANES <= n; t += ODL_LANES) odl_vstore(d + t, odl_vload(src + t));
        for (; t < n; t++) d[t] = src[t];
      } else {
        for (int t = a; t < b; t++, src += sw) dst[t] = *src;
      }
      ow = b;
    }
    for (; ow < wo; ow++) dst[ow] = 0;
  }
}

void odl_col2im(void *args) {
  const odl_col2im_args_t *p = (const odl_col2im_args_t *)args;
  int kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, h = p->h, w = p->w, sh = p->sh, sw = p->sw;
  int lo, hi;
  odl_split(p->c * h, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int c = u / h, ih = u - c * h;
    odl_t *dst = p->dx + (size_t)u * w;
    if (!p->accumulate)
      for (int t = 0; t < w; t++) dst[t] = 0;
    for (int i = 0; i < kh; i++) {
      int t = ih + p->pt - i; /* = oh*sh */
      if (t < 0 || t % sh) continue;
      int oh = t / sh;
      if (oh >= ho) continue;
      for (int j = 0; j < kw; j++) {
        int a, b;
        ow_range(j, w, sw, p->pl, wo, &a, &b);
        if (a >= b) continue;
        const odl_t *src = p->col + ((size_t)((c * kh + i) * kw + j) * ho + oh) * wo + a;
        odl_t *d = dst + (a * sw - p->pl + j);
        int n = b - a;
        if (sw == 1) {
          int q = 0;
          for (; q + ODL_LANES <= n; q += ODL_LANES) odl_vstore(d + q, odl_vload(d + q) + odl_vload(src + q));
          for (; q < n; q++) d[q] += src[q];
        } else {
          for (int q = 0; q < n; q++, d += sw) *d += src[q];
        }
      }
    }
  }
}
