/* Elementwise kernels: bias add / grad, ReLU and ReLU6 forward / backward, add, copy, dropout, SGD, fill.
 * One source for both precisions: loops step ODL_LANES (SIMD in FP16, scalar in FP32), scalar leftovers.
 * Each core takes a balanced contiguous share (odl_split) of the independent work. */
#include "odl_kernels.h"
#include "odl_simd.h"

void odl_bias_add(void *args) {
  const odl_bias_add_args_t *p = (const odl_bias_add_args_t *)args;
  int hw = p->hw, c = p->c, lo, hi;
  odl_split(p->n * c, &lo, &hi); /* rows (n, c) of length hw */
  for (int row = lo; row < hi; row++) {
    odl_t *y = p->y + (size_t)row * hw;
    odl_t bs = p->bias[row % c];
    odl_vec_t bv = odl_vsplat(bs);
    int i = 0;
    for (; i + 4 * ODL_LANES <= hw; i += 4 * ODL_LANES) {     /* 4 vectors per iteration, as odl_relu_fwd */
      odl_vec_t v0 = odl_vload(y + i), v1 = odl_vload(y + i + ODL_LANES), v2 = odl_vload(y + i + 2 * ODL_LANES),
                v3 = odl_vload(y + i + 3 * ODL_LANES);
      odl_vstore(y + i, v0 + bv);
      odl_vstore(y + i + ODL_LANES, v1 + bv);
      odl_vstore(y + i + 2 * ODL_LANES, v2 + bv);
      odl_vstore(y + i + 3 * ODL_LANES, v3 + bv);
    }
    for (; i + ODL_LANES <= hw; i += ODL_LANES) odl_vstore(y + i, odl_vload(y + i) + bv);
    for (; i < hw; i++) y[i] += bs;
  }
}

/* db[c] = sum over n, hw, blocked and compensated (odl_simd.h, ODL_SUM_BLOCK): every element is added into FP32
 * lanes (vfwadd.wv in FP16: same count as an FP16 add) of a block accumulator, and the block sums go into a
 * compensated total, so a gradient that cancels to ~0 (a conv bias before batch norm) is not buried in the rounding
 * of a long running sum. */
void odl_bias_grad(void *args) {
  const odl_bias_grad_args_t *p = (const odl_bias_grad_args_t *)args;
  int hw = p->hw, c = p->c, lo, hi;
  odl_split(c, &lo, &hi);
  for (int ch = lo; ch < hi; ch++) {
    odl_ksum_t total = odl_ksum_zero();
    int body = hw - hw % ODL_LANES;
    for (int n = 0; n < p->n; n++) {
      const odl_t *d = p->dy + ((size_t)n * c + ch) * hw;
      for (int i = 0; i < body;) {
        int end = odl_min_i(body, i + ODL_SUM_BLOCK);
        odl_wvec_t acc = odl_wzero();
        for (; i + 4 * ODL_LANES <= end; i += 4 * ODL_LANES) {   /* 4 per iteration, still added in order */
          odl_vec_t v0 = odl_vload(d + i), v1 = odl_vload(d + i + ODL_LANES), v2 = odl_vload(d + i + 2 * ODL_LANES),
                    v3 = odl_vload(d + i + 3 * ODL_LANES);
          acc = odl_wadd(odl_wadd(odl_wadd(odl_wadd(acc, v0), v1), v2), v3);
        }
        for (; i < end; i += ODL_LANES) acc = odl_wadd(acc, odl_vload(d + i));
        odl_ksum_add(&total, odl_whsum(acc));
      }
      if (body < hw) odl_ksum_add(&total, (float)d[body]);   /* FP16: the odd element of the plane */
    }
    float t = odl_ksum_value(total);
    p->db[ch] = p->accumulate ? (odl_t)((float)p->db[ch] + t) : (odl_t)t;
  }
}

void odl_relu_fwd(void *args) {
  const odl_relu_args_t *p = (const odl_relu_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *x = p->x;
  odl_t *y = p->y;
  int i = lo;
  /* 4 vectors per iteration (vector loads and stores take no immediate offset: one branch and pointer update
   * per 4 instead of per vector) */
  for (; i + 4 * ODL_LANES <= hi; i += 4 * ODL_LANES) {
    odl_vec_t v0 = odl_vload(x + i), v1 = odl_vload(x + i + ODL_LANES), v2 = odl_vload(x + i + 2 * ODL_LANES),
              v3 = odl_vload(x + i + 3 * ODL_LANES);
    odl_vstore(y + i, odl_vmax0(v0));
    odl_vstore(y + i + ODL_LANES, odl_vmax0(v1));
    odl_vstore(y + i + 2 * ODL_LANES, odl_vmax0(v2));
    odl_vstore(y + i + 3 * ODL_LANES, odl_vmax0(v3));
  }
  for (; i + ODL_LANES <= hi; i += ODL_LANES) odl_vstore(y + i, odl_vmax0(odl_vload(x + i)));
  for (; i < hi; i++) y[i] = x[i] > (odl_t)0 ? x[i] : (odl_t)0;
}

void odl_relu_bwd(void *args) {
  const odl_relu_bwd_args_t *p = (const odl_relu_bwd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *y = p->y, *dy = p->dy;
  odl_t *dx = p->dx;
  int i = lo;
#define RELU_G(o) odl_vand(odl_vload(dy + i + (o)), odl_vpos(odl_vload(y + i + (o))))
  if (p->accumulate) {
    for (; i + ODL_LANES <= hi; i += ODL_LANES)
      odl_vstore(dx + i, odl_vload(dx + i) + RELU_G(0));
    for (; i < hi; i++) dx[i] += y[i] > (odl_t)0 ? dy[i] : (odl_t)0;
  } else {
    for (; i + 4 * ODL_LANES <= hi; i += 4 * ODL_LANES) {   /* 4 vectors per iteration, as odl_relu_fwd */
      odl_vec_t g0 = RELU_G(0), g1 = RELU_G(ODL_LANES), g2 = RELU_G(2 * ODL_LANES), g3 = RELU_G(3 * ODL_LANES);
      odl_vstore(dx + i, g0);
      odl_vstore(dx + i + ODL_LANES, g1);
      odl_vstore(dx + i + 2 * ODL_LANES, g2);
      odl_vstore(dx + i + 3 * ODL_LANES, g3);
    }
    for (; i + ODL_LANES <= hi; i += ODL_LANES) odl_vstore(dx + i, RELU_G(0));
    for (; i < hi; i++) dx[i] = y[i] > (odl_t)0 ? dy[i] : (odl_t)0;
  }
#undef RELU_G
}

void odl_sgd(void *args) {
  const odl_sgd_args_t *p = (const odl_sgd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  odl_t *w = p->w;
  const odl_t *g = p->g;
  odl_t nlr = (odl_t)(-p->lr);
  odl_vec_t vn = odl_vsplat(nlr);
  int i = lo;
  for (; i + 4 * ODL_LANES <= hi; i += 4 * ODL_LANES) {     /* 4 vectors per iteration, as odl_relu_fwd */
    odl_vec_t w0 = odl_vload(w + i), w1 = odl_vload(w + i + ODL_LANES), w2 = odl_vload(w + i + 2 * ODL_LANES),
              w3 = odl_vload(w + i + 3 * ODL_LANES);
    odl_vec_t g0 = odl_vload(g + i), g1 = odl_vload(g + i + ODL_LANES), g2 = odl_vload(g + i + 2 * ODL_LANES),
              g3 = odl_vload(g + i + 3 * ODL_LANES);
    odl_vstore(w + i, odl_vfma(w0, vn, g0));
    odl_vstore(w + i + ODL_LANES, odl_vfma(w1, vn, g1));
    odl_vstore(w + i + 2 * ODL_LANES, odl_vfma(w2, vn, g2));
    odl_vstore(w + i + 3 * ODL_LANES, odl_vfma(w3, vn, g3));
  }
  for (; i + ODL_LANES <= hi; i += ODL_LANES) odl_vstore(w + i, odl_vfma(odl_vload(w + i), vn, odl_vload(g + i)));
  for (; i < hi; i++) w[i] += nlr * g[i];
}

void odl_fill(void *args) {
  const odl_fill_args_t *p = (const odl_fill_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  odl_t v = (odl_t)p->value;
  odl_vec_t vv = odl_vsplat(v);
  odl_t *x = p->x;
  int i = lo;
  for (; i + ODL_LANES <= hi; i += ODL_LANES) odl_vstore(x + i, vv);
  for (; i < hi; i++) x[i] = v;
}

/* ---- ReLU6 ---- */
void odl_relu6_fwd(void *args) {
  const odl_relu_args_t *p = (const odl_relu_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *x = p->x;
  odl_t *y = p->y;
  odl_t six = (odl_t)6.0f;
  odl_vec_t v6 = odl_vsplat(six);
  int i = lo;
  for (; i + ODL_LANES <= hi; i += ODL_LANES)
    odl_vstore(y + i, __builtin_elementwise_min(odl_vmax0(odl_vload(x + i)), v6));
  for (; i < hi; i++) y[i] = x[i] > (odl_t)0 ? (x[i] < six ? x[i] : six) : (odl_t)0;
}

/* dx (+)= dy * (0 < y < 6): the product of two 0/1 masks, pos(y) and pos(6 - y) */
void odl_relu6_bwd(void *args) {
  const odl_relu_bwd_args_t *p = (const odl_relu_bwd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *y = p->y, *dy = p->dy;
  odl_t *dx = p->dx;
  odl_t six = (odl_t)6.0f;
  odl_vec_t v6 = odl_vsplat(six);
  int i = lo;
  if (p->accumulate) {
    for (; i + ODL_LANES <= hi; i += ODL_LANES) {
      odl_vec_t yv = odl_vload(y + i);
      odl_vstore(dx + i, odl_vload(dx + i) + odl_vand(odl_vand(odl_vload(dy + i), odl_vpos(yv)), odl_vpos(v6 - yv)));
    }
  } else {
    for (; i + ODL_LANES <= hi; i += ODL_LANES) {
      odl_vec_t yv = odl_vload(y + i);
      odl_vstore(dx + i, odl_vand(odl_vand(odl_vload(dy + i), odl_vpos(yv)), odl_vpos(v6 - yv)));
    }
  }
  for (; i < hi; i++) {
    odl_t g = (y[i] > (odl_t)0 && y[i] < six) ? dy[i] : (odl_t)0;
    dx[i] = p->accumulate ? dx[i] + g : g;
  }
}

/* ---- add, copy ---- */
void odl_add(void *args) {
  const odl_add_args_t *p = (const odl_add_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *a = p->a, *b = p->b;
  odl_t *y = p->y;
  int i = lo;
  for (; i + ODL_LANES <= hi; i += ODL_LANES) odl_vstore(y + i, odl_vload(a + i) + odl_vload(b + i));
  for (; i < hi; i++) y[i] = a[i] + b[i];
}

void odl_copy(void *args) {
  const odl_copy_args_t *p = (const odl_copy_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  odl_skew(6);          /* the cores' chunks often start in the same TCDM bank: not in the same cycle (odl_team.h) */
  const odl_t *s = p->src;
  odl_t *d = p->dst;
  int i = lo;
  if (p->accumulate) {
    for (; i + ODL_LANES <= hi; i += ODL_LANES) odl_vstore(d + i, odl_vload(d + i) + odl_vload(s + i));
    for (; i < hi; i++) d[i] += s[i];
  } else {
    for (; i + ODL_LANES <= hi; i += ODL_LANES) odl_vstore(d + i, odl_vload(s + i));
    for (; i < hi; i++) d[i] = s[i];
  }
}

/* ---- dropout: the mask is a pure function of (seed, index), so the split cannot change it ---- */
ODL_INLINE uint32_t dropout_mix(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

uint32_t odl_dropout_hash(uint32_t seed, uint32_t i) { return dropout_mix(seed ^ (i * 0x9E3779B9u)); }

/* kept values are scaled in FP32 and rounded once (scale = 1/(1-p) is not exact in FP16); dropped ones are +0.
 * The hash input i * 0x9E3779B9 advances by one add per element. */
void odl_dropout_fwd(void *args) {
  const odl_dropout_fwd_args_t *p = (const odl_dropout_fwd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  uint32_t seed = p->seed, thr = p->threshold, m = (p->base + (uint32_t)lo) * 0x9E3779B9u;
  float sc = p->scale;
  const odl_t *x = p->x;
  odl_t *y = p->y;
  uint8_t *mask = p->mask;
  for (int i = lo; i < hi; i++, m += 0x9E3779B9u) {
    uint32_t keep = dropout_mix(seed ^ m) >= thr;
    mask[i] = (uint8_t)keep;
    odl_t v = (odl_t)((float)x[i] * sc);
    y[i] = keep ? v : (odl_t)0;
  }
}

void odl_dropout_bwd(void *args) {
  const odl_dropout_bwd_args_t *p = (const odl_dropout_bwd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *dy = p->dy;
  odl_t *dx = p->dx;
  const uint8_t *mask = p->mask;
  float sc = p->scale;       /* locals: the stores to dx could alias the argument struct */
  if (p->accumulate) {
    for (int i = lo; i < hi; i++) {
      odl_t g = (odl_t)((float)dy[i] * sc);
      dx[i] = mask[i] ? dx[i] + g : dx[i];
    }
  } else {
    for (int i = lo; i < hi; i++) {
      odl_t g = (odl_t)((float)dy[i] * sc);
      dx[i] = mask[i] ? g : (odl_t)0;
    }
  }
}
