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

/* Contiguous copy of n elements. FP16: 32-bit words (2 elements per lw/sw, immediate offsets, 4 words per
 * iteration) when source and destination have the same alignment modulo 4 bytes, else unrolled half-word
 * copies. FP32: unrolled word copies. */
typedef uint32_t odl_w32_t __attribute__((may_alias, aligned(4)));
ODL_INLINE void copy_elems(odl_t *d, const odl_t *src, int n) {
  if (sizeof(odl_t) == 2 && ((((uintptr_t)d ^ (uintptr_t)src) & 3) == 0)) {
    if (n && ((uintptr_t)d & 2)) { *d++ = *src++; n--; }
    odl_w32_t *dw = (odl_w32_t *)d;
    const odl_w32_t *sw = (const odl_w32_t *)src;
    int nw = n >> 1;
    for (; nw >= 4; nw -= 4, dw += 4, sw += 4) {
      uint32_t x0 = sw[0], x1 = sw[1], x2 = sw[2], x3 = sw[3];
      dw[0] = x0; dw[1] = x1; dw[2] = x2; dw[3] = x3;
    }
    for (; nw > 0; nw--) *dw++ = *sw++;
    if (n & 1) *(odl_t *)dw = *(const odl_t *)sw;
    return;
  }
  for (; n >= 4; n -= 4, d += 4, src += 4) {
    odl_t x0 = src[0], x1 = src[1], x2 = src[2], x3 = src[3];
    d[0] = x0; d[1] = x1; d[2] = x2; d[3] = x3;
  }
  for (; n > 0; n--) *d++ = *src++;
}

ODL_INLINE void zero_elems(odl_t *d, int n) {
  for (; n > 0; n--) *d++ = 0;
}

void odl_im2col(void *args) {
  const odl_im2col_args_t *p = (const odl_im2col_args_t *)args;
  int kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, h = p->h, w = p->w, sw = p->sw;
  int lo, hi;
  odl_split(p->c * kh * kw * ho, &lo, &hi);
  if (lo >= hi) return;
  /* unit u = (row, oh), row = (c*kh + i)*kw + j: decomposed once, then stepped */
  int row = lo / ho, oh = lo - row * ho;
  int j = row % kw, ci = row / kw, i = ci % kh, c = ci / kh;
  int a = 0, b = 0;
  ow_range(j, w, sw, p->pl, wo, &a, &b);
  odl_t *dst = p->col + (size_t)row * ho * wo + (size_t)oh * wo;
  for (int u = lo; u < hi; u++, dst += wo) {
    int ih = oh * p->sh - p->pt + i;
    if (ih >= 0 && ih < h && a < b) {
      zero_elems(dst, a);
      const odl_t *src = p->x + ((size_t)c * h + ih) * w + (a * sw - p->pl + j);
      if (sw == 1) {
        copy_elems(dst + a, src, b - a);
      } else {
        for (int t = a; t < b; t++, src += sw) dst[t] = *src;
      }
      zero_elems(dst + b, wo - b);
    } else {
      zero_elems(dst, wo);
    }
    if (++oh == ho) {
      oh = 0;
      if (++j == kw) {
        j = 0;
        if (++i == kh) { i = 0; c++; }
      }
      ow_range(j, w, sw, p->pl, wo, &a, &b);
    }
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

/* dst[j*ldo + i] = src[i*ldi + j] for i < rows, j < cols: each core writes whole rows of dst. */
void odl_transpose(void *args) {
  const odl_transpose_args_t *p = (const odl_transpose_args_t *)args;
  int rows = p->rows, ldi = p->ldi ? p->ldi : p->cols, ldo = p->ldo ? p->ldo : rows;
  int lo, hi;
  odl_split(p->cols, &lo, &hi);
  for (int j = lo; j < hi; j++) {
    const odl_t *s = p->src + j;
    odl_t *d = p->dst + (size_t)j * ldo;
    int i = 0;
    for (; i + 4 <= rows; i += 4, s += 4 * ldi) {
      odl_t x0 = s[0], x1 = s[ldi], x2 = s[2 * ldi], x3 = s[3 * ldi];
      d[i] = x0; d[i + 1] = x1; d[i + 2] = x2; d[i + 3] = x3;
    }
    for (; i < rows; i++, s += ldi) d[i] = *s;
  }
}
