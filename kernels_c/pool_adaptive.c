/* Adaptive average pooling to any output size, x [N, C, H, W] -> y [N, C, HO, WO] (1-D: H = HO = 1).
 * PyTorch's windows: rows [floor(oh*H/HO), ceil((oh+1)*H/HO)), columns likewise; windows may overlap when HO
 * does not divide H, and each output is the mean of its window.
 * Forward: the work unit is one output row (plane, oh), split evenly over cores, FP32 sums (window rows added
 * plainly, the row sums compensated).
 * Backward is a gather: the unit is one input row (plane, ih); its core adds dy/count of every output whose
 * window covers that row (accumulated over overlapping windows in FP32, one rounding per dx element), so cores
 * own disjoint rows of dx. Sizes that divide evenly take the plain average-pooling kernels instead. */
#include "odl_kernels.h"
#include "odl_simd.h"

ODL_INLINE int ad_start(int o, int in, int out) { return (o * in) / out; }
ODL_INLINE int ad_end(int o, int in, int out) { return ((o + 1) * in + out - 1) / out; }

void odl_adaptive_avgpool_fwd(void *args) {
  const odl_adaptive_avgpool_fwd_args_t *p = (const odl_adaptive_avgpool_fwd_args_t *)args;
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, lo, hi;
  odl_split(p->n * p->c * ho, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int plane = u / ho, oh = u - plane * ho;
    const odl_t *x = p->x + (size_t)plane * h * w;
    odl_t *y = p->y + (size_t)u * wo;
    int h0 = ad_start(oh, h, ho), h1 = ad_end(oh, h, ho);
    for (int ow = 0; ow < wo; ow++) {
      int w0 = ad_start(ow, w, wo), w1 = ad_end(ow, w, wo);
      odl_ksum_t s = odl_ksum_zero();   /* each window row summed plainly, the rows compensated (odl_simd.h) */
      for (int ih = h0; ih < h1; ih++) {
        float r = 0.0f;
        for (int iw = w0; iw < w1; iw++) r += (float)x[ih * w + iw];
        odl_ksum_add(&s, r);
      }
      y[ow] = (odl_t)(odl_ksum_value(s) / (float)((h1 - h0) * (w1 - w0)));
    }
  }
}

void odl_adaptive_avgpool_bwd(void *args) {
  const odl_adaptive_avgpool_bwd_args_t *p = (const odl_adaptive_avgpool_bwd_args_t *)args;
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, lo, hi;
  odl_split(p->n * p->c * h, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int plane = u / h, ih = u - plane * h;
    const odl_t *dy = p->dy + (size_t)plane * ho * wo;
    odl_t *dx = p->dx + (size_t)u * w;
    for (int iw = 0; iw < w; iw++) {
      float s = p->accumulate ? (float)dx[iw] : 0.0f;
      /* outputs whose windows cover (ih, iw): a contiguous range of oh and of ow */
      for (int oh = (ih * ho) / h; oh < ho && ad_start(oh, h, ho) <= ih; oh++) {
        if (ih >= ad_end(oh, h, ho)) continue;
        int rows = ad_end(oh, h, ho) - ad_start(oh, h, ho);
        for (int ow = (iw * wo) / w; ow < wo && ad_start(ow, w, wo) <= iw; ow++) {
          int w0 = ad_start(ow, w, wo), w1 = ad_end(ow, w, wo);
          if (iw >= w1) continue;
          s += (float)dy[oh * wo + ow] / (float)(rows * (w1 - w0));
        }
      }
      dx[iw] = (odl_t)s;
    }
  }
}
