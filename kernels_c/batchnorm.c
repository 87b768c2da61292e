/* BatchNorm2d forward / backward, x is [N, C, HW], statistics per channel over M = N*HW elements.
 *
 * Training: a core owns whole channels (odl_split over C): it reduces the channel's N planes and then writes
 * them, so no partial sums cross cores and no barrier is needed. Reductions accumulate in FP32: in FP16 every
 * vector add / multiply-add widens into FP32 lanes (vfwadd.wv / vfwmacc.vv, no extra instruction).
 * The variance is two-pass: mean first, then sum((x - mh)^2) with mh = mean rounded to odl_t (exact FP16
 * differences near the mean), corrected by (mean - mh)^2. The backward sums use the same centring.
 * Eval: normalisation is elementwise, split over the N*C planes (balanced when C < cores); only the dgamma /
 * dbeta sums of the backward go by channel. */
#include "odl_kernels.h"
#include "odl_simd.h"

/* Channel sums are blocked: BLOCK elements into a fresh FP32 accumulator (error ~ BLOCK + M/BLOCK ulps instead of ~M;
 * a 48x48 plane at batch 1 is 2,304 elements). The backward's sums (sum dy, sum dy * xhat), which cancel to ~0 when
 * the batch norm's input gradient feeds a conv bias, also add the block sums into a compensated total (odl_simd.h).
 * The forward statistics keep the plain blocked total: compensating them too moved MobileNetV1-VWW FP16's ReLU
 * decisions so that its first depthwise batch norm's weight gradient (a tensor PyTorch's own FP16 gets 20% wrong)
 * came out 2.07x PyTorch's error, over the validation rule's 2x, where the blocked total gives 1.47x. */
#define BLOCK (2 * ODL_SUM_BLOCK)
/* FP32's forward statistics: blocks of STAT_BLOCK elements into a compensated total, so that the mean and the
 * variance are within about an ulp (a per-channel error every output of the channel shares; PyTorch's CPU kernel sums
 * in double). FP16 keeps the plain blocked total (below). */
#define STAT_BLOCK 16

/* The loops below go 4 vectors per iteration (one branch and one pointer update per 4 instead of per vector);
 * sums still add into one accumulator in element order, so results are bit-identical to the plain loops. */
#define BN_U (4 * ODL_LANES)


/* sum of p[0, len) and of (p[i] - mh)^2 in FP32 lanes; len a multiple of ODL_LANES */
ODL_INLINE odl_wvec_t run_sum(const odl_t *p, int len) {
  odl_wvec_t acc = odl_wzero();
  int i = 0;
  for (; i + BN_U <= len; i += BN_U) {
    odl_vec_t v0 = odl_vload(p + i), v1 = odl_vload(p + i + ODL_LANES), v2 = odl_vload(p + i + 2 * ODL_LANES),
              v3 = odl_vload(p + i + 3 * ODL_LANES);
    acc = odl_wadd(odl_wadd(odl_wadd(odl_wadd(acc, v0), v1), v2), v3);
  }
  for (; i < len; i += ODL_LANES) acc = odl_wadd(acc, odl_vload(p + i));
  return acc;
}

ODL_INLINE odl_wvec_t run_sq(const odl_t *p, odl_vec_t mv, int len) {
  odl_wvec_t acc = odl_wzero();
  int i = 0;
  for (; i + BN_U <= len; i += BN_U) {
    odl_vec_t t0 = odl_vload(p + i) - mv, t1 = odl_vload(p + i + ODL_LANES) - mv,
              t2 = odl_vload(p + i + 2 * ODL_LANES) - mv, t3 = odl_vload(p + i + 3 * ODL_LANES) - mv;
    acc = odl_wfma(odl_wfma(odl_wfma(odl_wfma(acc, t0, t0), t1, t1), t2, t2), t3, t3);
  }
  for (; i < len; i += ODL_LANES) {
    odl_vec_t t = odl_vload(p + i) - mv;
    acc = odl_wfma(acc, t, t);
  }
  return acc;
}

/* sum over the channel's N planes of x (FP32) */
ODL_INLINE float chan_sum(const odl_t *x, int n, int c, int hw) {
  odl_wvec_t total = odl_wzero();
  odl_ksum_t k = odl_ksum_zero();   /* FP32: short blocks into a compensated total (STAT_BLOCK) */
  float tail = 0.0f;
  int body = hw - hw % ODL_LANES;
  for (int s = 0; s < n; s++) {
    const odl_t *p = x + (size_t)s * c * hw;
#if ODL_LANES == 1
    for (int i = 0; i < hw; i += STAT_BLOCK) odl_ksum_add(&k, odl_whsum(run_sum(p + i, hw - i < STAT_BLOCK ? hw - i : STAT_BLOCK)));
#else
    for (int i = 0; i < body; i += BLOCK) total += run_sum(p + i, body - i < BLOCK ? body - i : BLOCK);
    for (int i = body; i < hw; i++) tail += (float)p[i];
#endif
  }
  return odl_whsum(total) + tail + odl_ksum_value(k);
}

/* sum of (x - mh)^2 */
ODL_INLINE float chan_sq(const odl_t *x, odl_t mh, int n, int c, int hw) {
  odl_wvec_t total = odl_wzero();
  odl_ksum_t k = odl_ksum_zero();
  odl_vec_t mv = odl_vsplat(mh);
  float tail = 0.0f;
  int body = hw - hw % ODL_LANES;
  for (int s = 0; s < n; s++) {
    const odl_t *p = x + (size_t)s * c * hw;
#if ODL_LANES == 1
    for (int i = 0; i < hw; i += STAT_BLOCK) odl_ksum_add(&k, odl_whsum(run_sq(p + i, mv, hw - i < STAT_BLOCK ? hw - i : STAT_BLOCK)));
#else
    for (int i = 0; i < body; i += BLOCK) total += run_sq(p + i, mv, body - i < BLOCK ? body - i : BLOCK);
    for (int i = body; i < hw; i++) {
      float t = (float)(odl_t)(p[i] - mh);
      tail += t * t;
    }
#endif
  }
  return odl_whsum(total) + tail + odl_ksum_value(k);
}

/* y = (x - mean) * a + b over the channel's N planes (or one plane with n = 1), in FP32 lanes (widened loads, one
 * rounding at the store, as PyTorch's FP16 batch norm): centring at the exact mean cancels nothing at the scale of
 * the mean (x * a + (b - mean * a) loses |mean| / std ulps of y: 3-5x PyTorch's own FP32 error on deep batch-1
 * nets such as MobileNet-VWW), and FP16 arithmetic with a and b rounded to FP16 would put a systematic per-channel
 * scale and shift error on every output (1.26x PyTorch's FP16 error after one batch norm). FP16 cost: a widening,
 * an FP32 subtract and multiply-add, a narrowing, two vtype switches per vector (bn_fwd +18% on MobileNet-VWW). */
ODL_INLINE void chan_affine(const odl_t *x, odl_t *y, float mean, float g, float rstd, float b, int n, int c, int hw) {
  float a = g * rstd;
#if ODL_LANES == 1
  /* FP32: the output is rounded once from (x - mean) * g * rstd + b carried to about twice FP32's precision: the
   * subtraction's rounding error (TwoSum) and the product g * rstd's (FMA) go into the sum, so a channel's outputs
   * share no scale error and each is within ~half an ulp (PyTorch's CPU batch norm: 3.6e-8 rel-L2 against FP64 on
   * [2, 64, 8, 8]; the plain (x - mean) * a + b: 6.6e-8, 1.84x). Four more FP operations per element than FP16's path. */
  float alo = __builtin_elementwise_fma(g, rstd, -a);
  for (int s = 0; s < n; s++) {
    const odl_t *p = x + (size_t)s * c * hw;
    odl_t *q = y + (size_t)s * c * hw;
    for (int i = 0; i < hw; i++) {
      float d = p[i] - mean, t = d - p[i], dl = (p[i] - (d - t)) - (mean + t);
      q[i] = __builtin_elementwise_fma(d, a, __builtin_elementwise_fma(d, alo, __builtin_elementwise_fma(dl, a, b)));
    }
  }
#else
  odl_wvec_t mv = odl_wsplat(mean), av = odl_wsplat(a), bv = odl_wsplat(b);
  for (int s = 0; s < n; s++) {
    const odl_t *p = x + (size_t)s * c * hw;
    odl_t *q = y + (size_t)s * c * hw;
    int i = 0;
    for (; i + BN_U <= hw; i += BN_U) {
      odl_wvec_t w0 = odl_widen(odl_vload(p + i)), w1 = odl_widen(odl_vload(p + i + ODL_LANES)),
                 w2 = odl_widen(odl_vload(p + i + 2 * ODL_LANES)), w3 = odl_widen(odl_vload(p + i + 3 * ODL_LANES));
      w0 = (w0 - mv) * av + bv; w1 = (w1 - mv) * av + bv; w2 = (w2 - mv) * av + bv; w3 = (w3 - mv) * av + bv;
      odl_vstore(q + i, odl_narrow(w0)); odl_vstore(q + i + ODL_LANES, odl_narrow(w1));
      odl_vstore(q + i + 2 * ODL_LANES, odl_narrow(w2)); odl_vstore(q + i + 3 * ODL_LANES, odl_narrow(w3));
    }
    for (; i + ODL_LANES <= hw; i += ODL_LANES) odl_vstore(q + i, odl_narrow((odl_widen(odl_vload(p + i)) - mv) * av + bv));
    for (; i < hw; i++) q[i] = (odl_t)(((float)p[i] - mean) * a + b);
  }
#endif
}

/* 1 / sqrt(v) to within about half an ulp: the FP32 estimate (a square root and a division, up to ~1.5 ulp: a
 * per-channel scale error that every output of the channel shares) refined by one Newton step, whose residual
 * 1 - v r^2 is formed with r^2 split into its rounded value and that rounding's error (exact by FMA). PyTorch's CPU
 * batch norm forms its statistics in double, so its own error has no such per-channel part. */
ODL_INLINE float bn_rsqrt(float v) {
  float r = 1.0f / __builtin_elementwise_sqrt(v);
  float h = r * r, hl = __builtin_elementwise_fma(r, r, -h);
  float e = __builtin_elementwise_fma(-v, h, 1.0f) - v * hl;
  return __builtin_elementwise_fma(0.5f * r, e, r);
}

void odl_bn_fwd(void *args) {
  const odl_bn_fwd_args_t *p = (const odl_bn_fwd_args_t *)args;
  int n = p->n, c = p->c, hw = p->hw, lo, hi;
  if (!p->training) {
    odl_split(c, &lo, &hi);
    for (int ch = lo; ch < hi; ch++) {
      p->mean[ch] = p->running_mean[ch];
      p->rstd[ch] = bn_rsqrt(p->running_var[ch] + p->eps);
    }
    odl_split(n * c, &lo, &hi);
    for (int u = lo; u < hi; u++) {
      int ch = u % c;
      float rstd = bn_rsqrt(p->running_var[ch] + p->eps);
      float g = p->gamma ? (float)p->gamma[ch] : 1.0f, be = p->beta ? (float)p->beta[ch] : 0.0f;
      chan_affine(p->x + (size_t)u * hw, p->y + (size_t)u * hw, p->running_mean[ch], g, rstd, be, 1, c, hw);
    }
    return;
  }
  float m = (float)n * (float)hw;
  odl_split(c, &lo, &hi);
  for (int ch = lo; ch < hi; ch++) {
    const odl_t *x = p->x + (size_t)ch * hw;
    float mean = chan_sum(x, n, c, hw) / m;
    odl_t mh = (odl_t)mean;
    float d = mean - (float)mh;
    float var = chan_sq(x, mh, n, c, hw) / m - d * d;
    if (var < 0.0f) var = 0.0f;
    float rstd = bn_rsqrt(var + p->eps);
    p->mean[ch] = mean;
    p->rstd[ch] = rstd;
    if (p->running_mean) p->running_mean[ch] = (1.0f - p->momentum) * p->running_mean[ch] + p->momentum * mean;
    if (p->running_var) {
      float uv = m > 1.0f ? var * m / (m - 1.0f) : var;
      p->running_var[ch] = (1.0f - p->momentum) * p->running_var[ch] + p->momentum * uv;
    }
    float g = p->gamma ? (float)p->gamma[ch] : 1.0f, be = p->beta ? (float)p->beta[ch] : 0.0f;
    chan_affine(x, p->y + (size_t)ch * hw, mean, g, rstd, be, n, c, hw);
  }
}

/* sdy = sum dy, sdt = sum dy * (x - mh), over the channel */
ODL_INLINE void chan_bwd_sums(const odl_t *x, const odl_t *dy, odl_t mh, int n, int c, int hw, float *sdy,
                              float *sdt) {
  odl_ksum_t a1 = odl_ksum_zero(), a2 = odl_ksum_zero();
  odl_vec_t mv = odl_vsplat(mh);
  for (int s = 0; s < n; s++) {
    const odl_t *px = x + (size_t)s * c * hw, *pd = dy + (size_t)s * c * hw;
    int i = 0;
    for (int end = BLOCK; i + ODL_LANES <= hw; end += BLOCK) {
      odl_wvec_t b1 = odl_wzero(), b2 = odl_wzero();
      if (end > hw) end = hw;
      for (; i + BN_U <= end; i += BN_U) {
        odl_vec_t g0 = odl_vload(pd + i), g1 = odl_vload(pd + i + ODL_LANES), g2 = odl_vload(pd + i + 2 * ODL_LANES),
                  g3 = odl_vload(pd + i + 3 * ODL_LANES);
        odl_vec_t d0 = odl_vload(px + i) - mv, d1 = odl_vload(px + i + ODL_LANES) - mv,
                  d2 = odl_vload(px + i + 2 * ODL_LANES) - mv, d3 = odl_vload(px + i + 3 * ODL_LANES) - mv;
        b1 = odl_wadd(odl_wadd(odl_wadd(odl_wadd(b1, g0), g1), g2), g3);
        b2 = odl_wfma(odl_wfma(odl_wfma(odl_wfma(b2, g0, d0), g1, d1), g2, d2), g3, d3);
      }
      for (; i + ODL_LANES <= end; i += ODL_LANES) {
        odl_vec_t g = odl_vload(pd + i);
        b1 = odl_wadd(b1, g);
        b2 = odl_wfma(b2, g, odl_vload(px + i) - mv);
      }
      odl_ksum_add(&a1, odl_whsum(b1));
      odl_ksum_add(&a2, odl_whsum(b2));
    }
    for (; i < hw; i++) {
      odl_ksum_add(&a1, (float)pd[i]);
      odl_ksum_add(&a2, (float)pd[i] * (float)(odl_t)(px[i] - mh));
    }
  }
  *sdy = odl_ksum_value(a1);
  *sdt = odl_ksum_value(a2);
}

/* dx (+)= k1 * (dy - ((x - mean) * kb + ka)) over the channel's N planes (or one plane with n = 1), computed in
 * FP32 lanes (widened loads, one rounding at the store): in FP16 arithmetic the rounded ka / kb / (x - mean) put a
 * systematic bias on every element, which shows up as a non-zero mean of dx (e.g. in the bias gradient of the
 * convolution before, which must be ~0). The cancellation happens at the scale of dy, before the factor
 * k1 = gamma * rstd. */
ODL_INLINE void chan_dx(const odl_t *x, const odl_t *dy, odl_t *dx, float mean, float k1, float kb, float ka, int n,
                        int c, int hw, int accumulate) {
  odl_wvec_t w1 = odl_wsplat(k1), wb = odl_wsplat(kb), wa = odl_wsplat(ka), wm = odl_wsplat(mean);
  for (int s = 0; s < n; s++) {
    size_t off = (size_t)s * c * hw;
    const odl_t *px = x + off, *pd = dy + off;
    odl_t *q = dx + off;
    int i = 0;
#define BN_DX(o) (odl_widen(odl_vload(pd + i + (o))) - ((odl_widen(odl_vload(px + i + (o))) - wm) * wb + wa))
    if (accumulate) {
      for (; i + BN_U <= hw; i += BN_U) {
        odl_wvec_t r0 = BN_DX(0), r1 = BN_DX(ODL_LANES), r2 = BN_DX(2 * ODL_LANES), r3 = BN_DX(3 * ODL_LANES);
        odl_vstore(q + i, odl_narrow(odl_widen(odl_vload(q + i)) + r0 * w1));
        odl_vstore(q + i + ODL_LANES, odl_narrow(odl_widen(odl_vload(q + i + ODL_LANES)) + r1 * w1));
        odl_vstore(q + i + 2 * ODL_LANES, odl_narrow(odl_widen(odl_vload(q + i + 2 * ODL_LANES)) + r2 * w1));
        odl_vstore(q + i + 3 * ODL_LANES, odl_narrow(odl_widen(odl_vload(q + i + 3 * ODL_LANES)) + r3 * w1));
      }
      for (; i + ODL_LANES <= hw; i += ODL_LANES) {
        odl_wvec_t r = odl_widen(odl_vload(pd + i)) - ((odl_widen(odl_vload(px + i)) - wm) * wb + wa);
        odl_vstore(q + i, odl_narrow(odl_widen(odl_vload(q + i)) + r * w1));
      }
      for (; i < hw; i++) q[i] = (odl_t)((float)q[i] + ((float)pd[i] - (((float)px[i] - mean) * kb + ka)) * k1);
    } else {
      for (; i + BN_U <= hw; i += BN_U) {
        odl_wvec_t r0 = BN_DX(0), r1 = BN_DX(ODL_LANES), r2 = BN_DX(2 * ODL_LANES), r3 = BN_DX(3 * ODL_LANES);
        odl_vstore(q + i, odl_narrow(r0 * w1));
        odl_vstore(q + i + ODL_LANES, odl_narrow(r1 * w1));
        odl_vstore(q + i + 2 * ODL_LANES, odl_narrow(r2 * w1));
        odl_vstore(q + i + 3 * ODL_LANES, odl_narrow(r3 * w1));
      }
      for (; i + ODL_LANES <= hw; i += ODL_LANES) {
        odl_wvec_t r = odl_widen(odl_vload(pd + i)) - ((odl_widen(odl_vload(px + i)) - wm) * wb + wa);
        odl_vstore(q + i, odl_narrow(r * w1));
      }
      for (; i < hw; i++) q[i] = (odl_t)(((float)pd[i] - (((float)px[i] - mean) * kb + ka)) * k1);
    }
#undef BN_DX
  }
}

void odl_bn_bwd(void *args) {
  const odl_bn_bwd_args_t *p = (const odl_bn_bwd_args_t *)args;
  int n = p->n, c = p->c, hw = p->hw, lo, hi;
  float m = (float)n * (float)hw, inv_m = 1.0f / m;
  if (p->training || p->dgamma || p->dbeta) {
    odl_split(c, &lo, &hi);
    for (int ch = lo; ch < hi; ch++) {
      const odl_t *x = p->x + (size_t)ch * hw, *dy = p->dy + (size_t)ch * hw;
      float mean = p->mean[ch], rstd = p->rstd[ch];
      odl_t mh = (odl_t)mean;
      float d = mean - (float)mh, sdy, sdt;
      chan_bwd_sums(x, dy, mh, n, c, hw, &sdy, &sdt);
      float sdxh = rstd * (sdt - d * sdy); /* sum dy * xhat */
      if (p->dgamma) p->dgamma[ch] = (odl_t)sdxh;
      if (p->dbeta) p->dbeta[ch] = (odl_t)sdy;
      if (p->training && p->dx) {
        /* dx = g*rstd*(dy - sdy/M - xhat*sdxh/M), xhat = ((x - mh) - d) * rstd */
        float g = p->gamma ? (float)p->gamma[ch] : 1.0f;
        float kb = rstd * sdxh * inv_m, ka = sdy * inv_m;
        chan_dx(x, dy, p->dx + (size_t)ch * hw, mean, g * rstd, kb, ka, n, c, hw, p->accumulate);
      }
    }
  }
  if (!p->training && p->dx) {
    odl_split(n * c, &lo, &hi);
    for (int u = lo; u < hi; u++) {
      int ch = u % c;
      float k1 = (p->gamma ? (float)p->gamma[ch] : 1.0f) * p->rstd[ch];
      size_t off = (size_t)u * hw;
      chan_dx(p->x + off, p->dy + off, p->dx + off, 0.0f, k1, 0.0f, 0.0f, 1, c, hw, p->accumulate);
    }
  }
}
