/* Upsample / F.interpolate, nearest and (bi)linear, x [N, C, H, W] -> y [N, C, HO, WO] (1-D: H = HO = 1).
 * Source coordinates follow PyTorch (aten/src/ATen/native/UpSample.h), with rh / rw the scales it uses
 * (align_corners: (in-1)/(out-1); otherwise 1/scale_factor when one is given, else in/out), computed on the host:
 *   nearest:  src = min(floor(dst * r), in - 1)
 *   linear:   src = align_corners ? dst * r : max(r * (dst + 0.5) - 0.5, 0); i0 = (int)src,
 *             i1 = i0 + (i0 < in - 1), weights 1 - (src - i0) and src - i0 (FP32).
 * Forward: the work unit is one output row (plane, oh). Backward is the adjoint written as a gather: the unit is
 * one row (plane, ih) of dx, each element sums in FP32 the dy entries that read it (a contiguous range of oh and
 * of ow, since source indices never decrease) and is rounded once; cores own disjoint rows of dx. */
#include "odl_kernels.h"
#include "odl_simd.h"

ODL_INLINE void up_coord(int d, int in, float r, int mode, int align, int *i0, int *i1, float *l1) {
  if (mode == 0) {
    int s = (int)((float)d * r); /* floor: non-negative */
    *i0 = *i1 = s < in - 1 ? s : in - 1;
    *l1 = 0.0f;
    return;
  }
  float src = align ? r * (float)d : r * ((float)d + 0.5f) - 0.5f;
  if (src < 0.0f) src = 0.0f;
  int s = (int)src;
  if (s > in - 1) s = in - 1;
  *i0 = s;
  *i1 = s + (s < in - 1 ? 1 : 0);
  *l1 = src - (float)s;
}

void odl_upsample_fwd(void *args) {
  const odl_upsample_args_t *p = (const odl_upsample_args_t *)args;
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, lo, hi;
  odl_split(p->n * p->c * ho, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int plane = u / ho, oh = u - plane * ho;
    const odl_t *x = p->x + (size_t)plane * h * w;
    odl_t *y = p->y + (size_t)u * wo;
    int h0, h1, w0, w1;
    float a1, b1;
    up_coord(oh, h, p->rh, p->mode, p->align_corners, &h0, &h1, &a1);
    const odl_t *r0 = x + (size_t)h0 * w, *r1 = x + (size_t)h1 * w;
    for (int ow = 0; ow < wo; ow++) {
      up_coord(ow, w, p->rw, p->mode, p->align_corners, &w0, &w1, &b1);
      if (p->mode == 0) {
        y[ow] = r0[w0];
      } else {
        float a0 = 1.0f - a1, b0 = 1.0f - b1;
        y[ow] = (odl_t)(a0 * (b0 * (float)r0[w0] + b1 * (float)r0[w1]) +
                        a1 * (b0 * (float)r1[w0] + b1 * (float)r1[w1]));
      }
    }
  }
}

/* weight of input index i in output index d: (i0 == i ? 1 - l1 : 0) + (i1 == i ? l1 : 0) */
ODL_INLINE float up_weight(int i, int i0, int i1, float l1) {
  return (i0 == i ? 1.0f - l1 : 0.0f) + (i1 == i ? l1 : 0.0f);
}

#define UP_MAXW 32 /* cached source weights per dx row / column; more (upsampling by > 16) takes the plain loop */

void odl_upsample_bwd(void *args) {
  const odl_upsample_bwd_args_t *p = (const odl_upsample_bwd_args_t *)args;
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, mode = p->mode, al = p->align_corners, lo, hi;
  odl_split(p->n * p->c * h, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int plane = u / h, ih = u - plane * h;
    const odl_t *dy = p->dy + (size_t)plane * ho * wo;
    odl_t *dx = p->dx + (size_t)u * w;
    int h0, h1, w0, w1, oh0 = 0, ow0 = 0, nr = 0, oh;
    float a1, b1, wrow[UP_MAXW], wcol[UP_MAXW];
    /* source indices are non-decreasing in the output index: the outputs reading ih start at the first oh
     * whose upper source index reaches ih and end before the first whose lower one passes it */
    for (; oh0 < ho; oh0++) {
      up_coord(oh0, h, p->rh, mode, al, &h0, &h1, &a1);
      if (h1 >= ih) break;
    }
    for (oh = oh0; oh < ho && nr < UP_MAXW; oh++, nr++) {
      up_coord(oh, h, p->rh, mode, al, &h0, &h1, &a1);
      if (h0 > ih) break;
      wrow[nr] = up_weight(ih, h0, h1, a1);
    }
    int rows_cached = oh >= ho || nr < UP_MAXW;
    for (int iw = 0; iw < w; iw++) {
      for (; ow0 < wo; ow0++) {
        up_coord(ow0, w, p->rw, mode, al, &w0, &w1, &b1);
        if (w1 >= iw) break;
      }
      int nc = 0, ow = ow0;
      for (; ow < wo && nc < UP_MAXW; ow++, nc++) {
        up_coord(ow, w, p->rw, mode, al, &w0, &w1, &b1);
        if (w0 > iw) break;
        wcol[nc] = up_weight(iw, w0, w1, b1);
      }
      float s = p->accumulate ? (float)dx[iw] : 0.0f;
      if (rows_cached && (ow >= wo || nc < UP_MAXW)) {
        const odl_t *d = dy + (size_t)oh0 * wo + ow0;
        for (int i = 0; i < nr; i++, d += wo) {
          float t = 0.0f;
          for (int j = 0; j < nc; j++) t += wcol[j] * (float)d[j];
          s += wrow[i] * t;
        }
      } else {
        for (oh = oh0; oh < ho; oh++) {
          up_coord(oh, h, p->rh, mode, al, &h0, &h1, &a1);
          if (h0 > ih) break;
          float wr = up_weight(ih, h0, h1, a1), t = 0.0f;
          for (ow = ow0; ow < wo; ow++) {
            up_coord(ow, w, p->rw, mode, al, &w0, &w1, &b1);
            if (w0 > iw) break;
            t += up_weight(iw, w0, w1, b1) * (float)dy[oh * wo + ow];
          }
          s += wr * t;
        }
      }
      dx[iw] = (odl_t)s;
    }
  }
}
