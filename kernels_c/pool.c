/* Max / average pooling over a batch, x [N, C, H, W] -> y [N, C, HO, WO] (see odl_kernels.h).
 * Forward: the work unit is one output row (plane, oh), split evenly over cores.
 * Max backward: a scatter to the argmax positions, split over whole planes (a plane's outputs may hit the same
 * input pixel, so planes are never shared). Average backward is a gather: the unit is one input row (plane, ih),
 * and its core sums every output whose window covers it. Global average pooling (window = the whole plane) has
 * its own path: one vector reduction per plane (FP32, blocked and compensated: odl_simd.h) forward, one broadcast backward. */
#include "odl_kernels.h"
#include "odl_simd.h"

void odl_maxpool_fwd(void *args) {
  const odl_maxpool_fwd_args_t *p = (const odl_maxpool_fwd_args_t *)args;
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, lo, hi;
  odl_split(p->n * p->c * ho, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int plane = u / ho, oh = u - plane * ho;
    const odl_t *x = p->x + (size_t)plane * h * w;
    odl_t *y = p->y + (size_t)u * wo;
    int32_t *am = p->argmax + (size_t)u * wo;
    int ih0 = oh * p->sh - p->pt, ih1 = odl_min_i(ih0 + p->kh, h);
    ih0 = odl_max_i(ih0, 0);
    for (int ow = 0; ow < wo; ow++) {
      int iw0 = ow * p->sw - p->pl, iw1 = odl_min_i(iw0 + p->kw, w);
      iw0 = odl_max_i(iw0, 0);
      int best = -1;
      odl_t mx = (odl_t)0;
      for (int ih = ih0; ih < ih1; ih++)
        for (int iw = iw0; iw < iw1; iw++) {
          odl_t v = x[ih * w + iw];
          if (best < 0 || v > mx) { mx = v; best = ih * w + iw; }
        }
      y[ow] = mx; /* a window entirely in the padding (not possible in PyTorch) gives 0 and argmax -1 */
      am[ow] = best;
    }
  }
}

void odl_maxpool_bwd(void *args) {
  const odl_maxpool_bwd_args_t *p = (const odl_maxpool_bwd_args_t *)args;
  int hw = p->h * p->w, howo = p->ho * p->wo, lo, hi;
  odl_split(p->n * p->c, &lo, &hi);
  for (int plane = lo; plane < hi; plane++) {
    odl_t *dx = p->dx + (size_t)plane * hw;
    const odl_t *dy = p->dy + (size_t)plane * howo;
    const int32_t *am = p->argmax + (size_t)plane * howo;
    if (!p->accumulate) {
      odl_vec_t z = odl_vzero();
      int i = 0;
      for (; i + ODL_LANES <= hw; i += ODL_LANES) odl_vstore(dx + i, z);
      for (; i < hw; i++) dx[i] = 0;
    }
    for (int o = 0; o < howo; o++)
      if (am[o] >= 0) dx[am[o]] += dy[o];
  }
}

ODL_INLINE int is_global(int h, int w, int kh, int kw, int ho, int wo, int pt, int pl) {
  return kh == h && kw == w && ho == 1 && wo == 1 && pt == 0 && pl == 0;
}

static void avgpool_fwd_windows(const odl_avgpool_fwd_args_t *p);

void odl_avgpool_fwd(void *args) {
  const odl_avgpool_fwd_args_t *p = (const odl_avgpool_fwd_args_t *)args;
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, kh = p->kh, kw = p->kw, lo, hi;
  if (is_global(h, w, kh, kw, ho, wo, p->pt, p->pl)) {
    int hw = h * w;
    float inv = 1.0f / (float)hw;
    odl_split(p->n * p->c, &lo, &hi);
    for (int plane = lo; plane < hi; plane++) {
      const odl_t *x = p->x + (size_t)plane * hw;
      /* blocked and compensated (odl_simd.h), with short blocks: a plane's values are often all of one sign
       * (post-ReLU), and this runs once a model */
      odl_ksum_t total = odl_ksum_zero();
      int i = 0;
      while (i + ODL_LANES <= hw) {
        int end = odl_min_i(hw - hw % ODL_LANES, i + ODL_SUM_BLOCK / 4);
        odl_wvec_t acc = odl_wzero();
        for (; i < end; i += ODL_LANES) acc = odl_wadd(acc, odl_vload(x + i));
        odl_ksum_add(&total, odl_whsum(acc));
      }
      for (; i < hw; i++) odl_ksum_add(&total, (float)x[i]);
      p->y[plane] = (odl_t)(odl_ksum_value(total) * inv);
    }
    return;
  }
  avgpool_fwd_windows(p);
}

/* windows smaller than the plane: the work unit is one output row (plane, oh) */
static __attribute__((noinline)) void avgpool_fwd_windows(const odl_avgpool_fwd_args_t *p) {
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, kh = p->kh, kw = p->kw, lo, hi;
  float inv_k = 1.0f / (float)(kh * kw);
  odl_split(p->n * p->c * ho, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int plane = u / ho, oh = u - plane * ho;
    const odl_t *x = p->x + (size_t)plane * h * w;
    odl_t *y = p->y + (size_t)u * wo;
    int ih0 = oh * p->sh - p->pt, ih1 = odl_min_i(ih0 + kh, h);
    int prows = odl_min_i(ih0 + kh, h + p->pt) - ih0; /* window rows inside input + padding (ceil_mode: < kh) */
    ih0 = odl_max_i(ih0, 0);
    for (int ow = 0; ow < wo; ow++) {
      int iw0 = ow * p->sw - p->pl, iw1 = odl_min_i(iw0 + kw, w);
      int pk = prows * (odl_min_i(iw0 + kw, w + p->pl) - iw0);
      iw0 = odl_max_i(iw0, 0);
      float s = 0.0f;
      for (int ih = ih0; ih < ih1; ih++)
        for (int iw = iw0; iw < iw1; iw++) s += (float)x[ih * w + iw];
      int cnt = (ih1 - ih0) * (iw1 - iw0);
      /* PyTorch: count_include_pad divides by the window clipped to input + padding (kh*kw unless ceil_mode) */
      y[ow] = (odl_t)(p->count_include_pad ? (pk == kh * kw ? s * inv_k : s / (float)pk)
                                           : (cnt > 0 ? s / (float)cnt : 0.0f));
    }
  }
}

void odl_avgpool_bwd(void *args) {
  const odl_avgpool_bwd_args_t *p = (const odl_avgpool_bwd_args_t *)args;
  int h = p->h, w = p->w, ho = p->ho, wo = p->wo, kh = p->kh, kw = p->kw, sh = p->sh, sw = p->sw, lo, hi;
  if (is_global(h, w, kh, kw, ho, wo, p->pt, p->pl)) {
    int hw = h * w;
    float inv = 1.0f / (float)hw;
    odl_split(p->n * p->c, &lo, &hi);
    for (int plane = lo; plane < hi; plane++) {
      odl_t *dx = p->dx + (size_t)plane * hw;
      odl_t g = (odl_t)((float)p->dy[plane] * inv);
      odl_vec_t gv = odl_vsplat(g);
      int i = 0;
      if (p->accumulate) {
        for (; i + ODL_LANES <= hw; i += ODL_LANES) odl_vstore(dx + i, odl_vload(dx + i) + gv);
        for (; i < hw; i++) dx[i] += g;
      } else {
        for (; i + ODL_LANES <= hw; i += ODL_LANES) odl_vstore(dx + i, gv);
        for (; i < hw; i++) dx[i] = g;
      }
    }
    return;
  }
  float inv_k = 1.0f / (float)(kh * kw);
  odl_split(p->n * p->c * h, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int plane = u / h, ih = u - plane * h;
    const odl_t *dy = p->dy + (size_t)plane * ho * wo;
    odl_t *dx = p->dx + (size_t)u * w;
    if (!p->accumulate)
      for (int t = 0; t < w; t++) dx[t] = 0;
    /* outputs oh whose window rows [oh*sh - pt, +kh) contain ih */
    int t0 = ih + p->pt - kh + 1; /* oh*sh >= t0 */
    int oh0 = t0 <= 0 ? 0 : (t0 + sh - 1) / sh;
    int oh1 = odl_min_i((ih + p->pt) / sh + 1, ho);
    for (int oh = oh0; oh < oh1; oh++) {
      int r0 = oh * sh - p->pt, r1 = odl_min_i(r0 + kh, h);
      int rows = r1 - odl_max_i(r0, 0), prows = odl_min_i(r0 + kh, h + p->pt) - r0;
      for (int ow = 0; ow < wo; ow++) {
        int c0 = ow * sw - p->pl, c1 = odl_min_i(c0 + kw, w);
        int pk = prows * (odl_min_i(c0 + kw, w + p->pl) - c0);
        c0 = odl_max_i(c0, 0);
        if (c0 >= c1) continue;
        float g = (float)dy[oh * wo + ow] * (p->count_include_pad ? (pk == kh * kw ? inv_k : 1.0f / (float)pk)
                                                                  : 1.0f / (float)(rows * (c1 - c0)));
        odl_t gh = (odl_t)g;
        for (int iw = c0; iw < c1; iw++) dx[iw] += gh;
      }
    }
  }
}
