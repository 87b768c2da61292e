/* Fake quantization for quantization-aware training (odl/lower/ops/fakequant.py): the observer's min/max, its
 * update and qparams, the fake-quantized values with their straight-through mask, and the masked gradient.
 * Everything matches torch.ao.quantization bit for bit in FP32 (tests/kernels/test_kernels_native_fakequant.py):
 *   q = zp + round_half_even(x * (1.0f / scale))          (torch.fake_quantize_per_{tensor,channel}_affine)
 *   y = (clamp(q, qmin, qmax) - zp) * scale,  mask = qmin <= q <= qmax
 * Each operation is rounded as PyTorch rounds it: no multiply-add may be fused here, and the target builds with
 * -ffp-contract=fast, which fuses across statements and ignores `#pragma clang fp contract`: every product that an
 * add follows (x * inv before the rounding, avg * d of the moving average) goes through ODL_ROUNDED (odl_round.h).
 * One source for both precisions: the values are odl_t, the arithmetic and the observer state FP32. */
#include "odl_kernels.h"
#include "odl_round.h" /* ODL_ROUNDED, odl_rne */

#define FQ_EPS 1.1920928955078125e-07f /* torch.finfo(torch.float32).eps, the smallest scale torch allows */

/* part[(ch * ODL_FQ_PART + k) * 2 + {0, 1}] (+)= min / max of core k's share of x[ch, :] (x is [c, inner]); a core
 * with an empty share writes +inf / -inf. accumulate: combine with what part holds (a later tile of the same tensor).
 * A channel's partials are contiguous, so a range of channels is a tile of x and of part alike. */
void odl_fq_minmax(void *args) {
  const odl_fq_minmax_args_t *p = (const odl_fq_minmax_args_t *)args;
  int c = p->c, inner = p->inner, lo, hi, k = odl_core_id();
  odl_split(inner, &lo, &hi);
  for (int ch = 0; ch < c; ch++) {
    const odl_t *x = p->x + (size_t)ch * inner;
    float mn = __builtin_inff(), mx = -__builtin_inff();
    for (int i = lo; i < hi; i++) {
      float v = (float)x[i];
      mn = v < mn ? v : mn;
      mx = v > mx ? v : mx;
    }
    float *o = p->part + ((size_t)ch * ODL_FQ_PART + k) * 2;
    if (p->accumulate) {
      mn = o[0] < mn ? o[0] : mn;
      mx = o[1] > mx ? o[1] : mx;
    }
    o[0] = mn;
    o[1] = mx;
  }
}

/* torch.ao.quantization's _calculate_qparams for one channel's range [mn, mx] */
static void fq_qparams(float mn, float mx, int qmin, int qmax, int symmetric, float *scale, float *zp) {
  if (mn == __builtin_inff() && mx == -__builtin_inff()) { /* nothing observed: torch's default qparams */
    *scale = 1.0f;
    *zp = 0.0f;
    return;
  }
  float neg = mn < 0.0f ? mn : 0.0f, pos = mx > 0.0f ? mx : 0.0f, s, z = 0.0f;
  if (symmetric) {
    float m = -neg > pos ? -neg : pos;
    s = m / ((float)(qmax - qmin) / 2.0f);
    if (qmin >= 0) z = (float)((qmin + qmax) / 2); /* unsigned symmetric: the midpoint of the range */
  } else {
    s = (pos - neg) / (float)(qmax - qmin);
  }
  s = s > FQ_EPS ? s : FQ_EPS;
  if (!symmetric) {
    z = (float)qmin - odl_rne(neg / s);
    z = z < (float)qmin ? (float)qmin : (z > (float)qmax ? (float)qmax : z);
  }
  *scale = s;
  *zp = z;
}

/* The observer's step and the qparams, channels split over the cores. update: the running range takes this step's
 * min/max (the cores' partials in part): the first time (run_min = +inf, run_max = -inf) it is set to them, after
 * that run += avg * (cur - run) (MovingAverage(PerChannel)MinMaxObserver); update = 0: the qparams of the running
 * range as it is (an evaluation pass). */
void odl_fq_observe(void *args) {
  const odl_fq_observe_args_t *p = (const odl_fq_observe_args_t *)args;
  int c = p->c, lo, hi, cores = odl_num_cores();
  odl_split(c, &lo, &hi);
  for (int ch = lo; ch < hi; ch++) {
    float rmn = p->run_min[ch], rmx = p->run_max[ch];
    if (p->update) {
      float mn = __builtin_inff(), mx = -__builtin_inff();
      for (int k = 0; k < cores; k++) {
        const float *o = p->part + ((size_t)ch * ODL_FQ_PART + k) * 2;
        mn = o[0] < mn ? o[0] : mn;
        mx = o[1] > mx ? o[1] : mx;
      }
      if (rmn == __builtin_inff() && rmx == -__builtin_inff()) {
        rmn = mn;
        rmx = mx;
      } else {
        float a = p->avg, dmn = mn - rmn, dmx = mx - rmx;
        float tmn = a * dmn, tmx = a * dmx;
        ODL_ROUNDED(tmn);
        ODL_ROUNDED(tmx);
        rmn = rmn + tmn;
        rmx = rmx + tmx;
      }
      p->run_min[ch] = rmn;
      p->run_max[ch] = rmx;
    }
    fq_qparams(rmn, rmx, p->qmin, p->qmax, p->symmetric, &p->scale[ch], &p->zp[ch]);
  }
}

/* y = fake-quantized x, mask = 1 where the code lies in [qmin, qmax] (the straight-through gradient passes).
 * Element i belongs to channel (base + i) / inner (per tensor: inner >= every index, one channel); base is the
 * index of element 0 in the whole tensor (a tile of it). */
void odl_fq_fwd(void *args) {
  const odl_fq_fwd_args_t *p = (const odl_fq_fwd_args_t *)args;
  int lo, hi, inner = p->inner;
  odl_split(p->len, &lo, &hi);
  const odl_t *x = p->x;
  odl_t *y = p->y;
  uint8_t *mask = p->mask;
  float qmin = (float)p->qmin, qmax = (float)p->qmax;
  int i = lo;
  while (i < hi) {
    int g = p->base + i, ch = g / inner, end = hi < i + (ch + 1) * inner - g ? hi : i + (ch + 1) * inner - g;
    float s = p->scale[ch], z = p->zp[ch], inv = 1.0f / s;
    for (; i < end; i++) {
      float v = (float)x[i] * inv;
      ODL_ROUNDED(v);
      float q = z + odl_rne(v);
      mask[i] = (uint8_t)(q >= qmin && q <= qmax);
      float qc = q < qmin ? qmin : (q > qmax ? qmax : q);
      y[i] = (odl_t)((qc - z) * s);
    }
  }
}

/* dx (+)= dy where mask, 0 elsewhere: the straight-through gradient of the fake quantization */
void odl_fq_bwd(void *args) {
  const odl_fq_bwd_args_t *p = (const odl_fq_bwd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *dy = p->dy;
  const uint8_t *mask = p->mask;
  odl_t *dx = p->dx;
  if (p->accumulate) {
    for (int i = lo; i < hi; i++) dx[i] = mask[i] ? dx[i] + dy[i] : dx[i];
  } else {
    for (int i = lo; i < hi; i++) dx[i] = mask[i] ? dy[i] : (odl_t)0;
  }
}
