/* Upsample / F.interpolate, nearest and (bi)linear, x [N, C, H, W] -> y [N, C, HO, WO] (1-D: H = HO = 1).
 * Source coordinates follow PyTorch (aten/src/ATen/native/UpSample.h), with rh / rw the scales it uses
 * (align_corners: (in-1)/(out-1); otherwise 1/scale_factor when one is given, else in/out), computed on the host:
 *   nearest:  src = min(floor(dst * r), in - 1)
 *   linear:   src = align_corners ? dst * r : max(r * (dst + 0.5) - 0.5, 0); i0 = (int)src,
 *             i1 = i0 + (i0 < in - 1), weights 1 - (src - i0) and src - i0 (FP32).
 * Forward: the work unit is one output row (plane, oh). Backward is the adjoint scatter: cores own whole planes
 * of dx (outputs of one plane hit overlapping inputs), and each dx element is accumulated in the precision's type
 * after being zeroed (accumulate = 0). */
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
        y[ow] = (odl_t)(a0 * (b0 * (float)r0[w0] + b1 * (float)r0[w1]) + a1 * (b0 * (float)r1[w0] + b1 * (float)r1[w1]));
      }
    }
  }
}

void odl_upsample_bwd(void *args) {
  const odl_upsample_bwd_args_t *p = (const odl_upsample_bwd_args_t *)args;
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, lo, hi;
  odl_split(p->n * p->c, &lo, &hi);
  for (int plane = lo; plane < hi; plane++) {
    odl_t *dx = p->dx + (size_t)plane * h * w;
    const odl_t *dy = p->dy + (size_t)plane * ho * wo;
    if (!p->accumulate)
      for (int i = 0; i < h * w; i++) dx[i] = 0;
    for (int oh = 0; oh < ho; oh++) {
      int h0, h1, w0, w1;
      float a1, b1;
      up_coord(oh, h, p->rh, p->mode, p->align_corners, &h0, &h1, &a1);
      odl_t *r0 = dx + (size_t)h0 * w, *r1 = dx + (size_t)h1 * w;
      for (int ow = 0; ow < wo; ow++) {
        float g = (float)dy[oh * wo + ow];
        up_coord(ow, w, p->rw, p->mode, p->align_corners, &w0, &w1, &b1);
        if (p->mode == 0) {
          r0[w0] = (odl_t)((float)r0[w0] + g);
        } else {
          float a0 = 1.0f - a1, b0 = 1.0f - b1;
          r0[w0] = (odl_t)((float)r0[w0] + a0 * b0 * g);
          r0[w1] = (odl_t)((float)r0[w1] + a0 * b1 * g);
          r1[w0] = (odl_t)((float)r1[w0] + a1 * b0 * g);
          r1[w1] = (odl_t)((float)r1[w1] + a1 * b1 * g);
        }
      }
    }
  }
}
