/* Depthwise Conv2d (groups = C), one sample: x [C,H,W], w [C,KH,KW], y [C,HO,WO]. Direct kernels, no im2col.
 *
 * Fast path: 3x3, stride 1, top padding <= 2, input width >= 2 (DS-CNN, MobileNet). Vectors run along the output
 * width: a "column" is ODL_LANES adjacent outputs (a pair in FP16, one output in FP32). For one column the
 * kernel walks down the rows keeping the three input rows' tap vectors in registers (rolling window, loop
 * unrolled by 3 so the rotation costs no moves): per output row 3 loads, 9 multiply-adds (vfwmacc.vf with the
 * weights in scalar registers), a narrowing and a store. A tap vector x[o], x[o+1] (o = ow + j - pl) is either a plain load
 * (F), or at the image edge a load plus one slide with a zero: (0, x[0]) (LZ) or (x[w-1], 0) (HZ), or zero (Z,
 * skipped). The tap modes of a column do not change down the rows, so each column runs an instance specialised
 * for its modes; columns with other mode patterns fall back to per-output scalar code. An odd last output
 * (FP16) is computed as a pair whose second lane is ignored.
 * The input gradient with stride 1 is the same correlation of dy with the flipped filter and padding
 * (2 - pt, 2 - pl), so it uses the same code. The weight gradient walks the columns the same way with 9
 * accumulators. FP16 accumulates in FP32 lanes (widening multiply-adds vfwmacc.vf / vfwmacc.vv, still one
 * instruction per 2 MACs, no vtype switch) and each output is rounded to FP16 once, as PyTorch's FP16 does: a
 * 9-tap sum rounded at every tap (and a weight gradient summed in FP16 blocks) put 1.3-1.5x PyTorch's own error
 * on every activation of MobileNet-VWW, which its batch-1 batch norms on 3x3 maps amplify in the gradients.
 * Anything else (other kernel sizes, strides) takes direct scalar loops summing in FP32; the strided input
 * gradient visits only the taps that reach each input.
 *
 * A bias (forward) starts the sums, so conv + bias is rounded once, as PyTorch's FP16 does (a separate pass after
 * the rounded conv put 1.38x PyTorch's FP16 error on the output).
 *
 * Splits: forward over (channel, output row), input gradient over (channel, input row): a core's range is cut
 * into per-channel row runs; weight gradient over channels. Outputs never overlap between cores. */
#include "odl_kernels.h"
#include "odl_simd.h"

enum { TF = 0, TLZ = 1, THZ = 2, TZ = 3 };

/* mode of tap offset o (first lane) for a column in a row of width w; junk: the second lane is ignored */
ODL_INLINE int tap_mode(int o, int w, int junk) {
  if (o >= 0 && o + ODL_LANES - 1 < w) return TF;
  if (ODL_LANES == 2) {
    if (junk) return (o >= 0 && o < w) ? THZ : TZ;
    if (o == -1) return TLZ;
    if (o == w - 1) return THZ;
  }
  return TZ;
}

ODL_INLINE odl_vec_t tap(const odl_t *row, int o, int w, const int m) {
  if (m == TF) return odl_vload(row + o);
#if ODL_LANES == 2
  if (m == TLZ) return __builtin_shufflevector(odl_vzero(), odl_vload(row), 0, 2);
  if (m == THZ) return __builtin_shufflevector(odl_vload(row + w - 2), odl_vzero(), 1, 2);
#endif
  (void)w;
  return odl_vzero();
}

typedef struct { odl_vec_t t0, t1, t2; } taps3_t;

ODL_INLINE taps3_t load3(const odl_t *row, int o, int w, const int m0, const int m1, const int m2) {
  taps3_t r = {tap(row, o, w, m0), tap(row, o + 1, w, m1), tap(row, o + 2, w, m2)};
  return r;
}
ODL_INLINE taps3_t zero3(void) {
  taps3_t r = {odl_vzero(), odl_vzero(), odl_vzero()};
  return r;
}

/* ---------------- forward-type correlation, 3x3 stride 1 ---------------- */
typedef struct { odl_t k[9]; } k9_t;

/* Makes the weights look loop-variant (no instruction): otherwise clang hoists their FP16->FP32 extension out of
 * the row loop as FP32 vectors, and then widens every tap (vfwcvt) for FP32 vfmacc.vv instead of one vfwmacc.vf. */
ODL_INLINE void k9_opaque(k9_t *k) {
#if ODL_LANES == 2 && defined(__riscv)
  for (int t = 0; t < 9; t++) __asm__("" : "+f"(k->k[t]));
#else
  (void)k;
#endif
}

ODL_INLINE odl_wvec_t row_fma(odl_wvec_t s, taps3_t a, odl_t k0, odl_t k1, odl_t k2, const int m0, const int m1,
                              const int m2) {
  if (m0 != TZ) s = odl_wfma(s, a.t0, odl_vsplat(k0));
  if (m1 != TZ) s = odl_wfma(s, a.t1, odl_vsplat(k1));
  if (m2 != TZ) s = odl_wfma(s, a.t2, odl_vsplat(k2));
  return s;
}

ODL_INLINE void out3(odl_t *yp, taps3_t a, taps3_t b, taps3_t c, k9_t k, const int m0, const int m1,
                     const int m2, const int junk, const int acc, float b0) {
  odl_wvec_t s = odl_wsplat(b0);   /* the bias (0: none); accumulate: y instead */
  if (acc) {
#if ODL_LANES == 2
    s = odl_widen(junk ? (odl_vec_t){yp[0], 0} : odl_vload(yp));
#else
    s = odl_vload(yp);
#endif
  }
  s = row_fma(s, a, k.k[0], k.k[1], k.k[2], m0, m1, m2);
  s = row_fma(s, b, k.k[3], k.k[4], k.k[5], m0, m1, m2);
  s = row_fma(s, c, k.k[6], k.k[7], k.k[8], m0, m1, m2);
  odl_vec_t v = odl_narrow(s);
#if ODL_LANES == 2
  if (junk) { yp[0] = v[0]; return; }
#endif
  odl_vstore(yp, v);
}

/* One column (outputs ow .. ow+LANES-1) of output rows [oh0, oh1) of y[., ldy] = x[h][w] (*) k, pads pt, pl. */
ODL_INLINE void corr3_col(const odl_t *x, odl_t *y, int ldy, const odl_t *kp, int h, int w, int pt, int o, int oh0,
                          int oh1, const int m0, const int m1, const int m2, const int junk, const int acc,
                          float b0) {
  k9_t k = *(const k9_t *)kp; /* a private copy: the stores to y cannot alias it, so it stays in registers */
  taps3_t A, B, C;
  int r = oh0 - pt;
  A = (r >= 0 && r < h) ? load3(x + (size_t)r * w, o, w, m0, m1, m2) : zero3();
  r++;
  B = (r >= 0 && r < h) ? load3(x + (size_t)r * w, o, w, m0, m1, m2) : zero3();
  int mid = odl_max_i(odl_min_i(oh1, h + pt - 2), oh0); /* rows with a new input row r = oh - pt + 2 < h */
  int oh = oh0;
  odl_t *yp = y + (size_t)oh0 * ldy;
  if (mid > oh0) {
    const odl_t *rp = x + (size_t)(oh0 - pt + 2) * w;
    for (; oh + 3 <= mid; oh += 3) {
      k9_opaque(&k);
      C = load3(rp, o, w, m0, m1, m2);
      out3(yp, A, B, C, k, m0, m1, m2, junk, acc, b0);
      A = load3(rp + w, o, w, m0, m1, m2);
      out3(yp + ldy, B, C, A, k, m0, m1, m2, junk, acc, b0);
      B = load3(rp + 2 * w, o, w, m0, m1, m2);
      out3(yp + 2 * ldy, C, A, B, k, m0, m1, m2, junk, acc, b0);
      rp += 3 * w;
      yp += 3 * ldy;
    }
    for (; oh < mid; oh++) {
      k9_opaque(&k);
      C = load3(rp, o, w, m0, m1, m2);
      out3(yp, A, B, C, k, m0, m1, m2, junk, acc, b0);
      A = B;
      B = C;
      rp += w;
      yp += ldy;
    }
  }
  for (; oh < oh1; oh++) {
    k9_opaque(&k);
    out3(yp, A, B, zero3(), k, m0, m1, m2, junk, acc, b0);
    A = B;
    B = zero3();
    yp += ldy;
  }
}

/* Generic stride-1 correlation for single outputs (fallback columns): y[oh][ow] (+)= sum k[i][j] x[oh-pt+i][ow-pl+j] */
static void corr3_scalar(const odl_t *x, odl_t *y, int ldy, const odl_t *k, int h, int w, int pt, int pl, int ow0,
                         int ow1, int oh0, int oh1, int acc, float b0) {
  for (int oh = oh0; oh < oh1; oh++)
    for (int ow = ow0; ow < ow1; ow++) {
      float s = acc ? (float)y[(size_t)oh * ldy + ow] : b0;
      for (int i = 0; i < 3; i++) {
        int ih = oh - pt + i;
        if (ih < 0 || ih >= h) continue;
        for (int j = 0; j < 3; j++) {
          int iw = ow - pl + j;
          if (iw >= 0 && iw < w) s += (float)k[i * 3 + j] * (float)x[(size_t)ih * w + iw];
        }
      }
      y[(size_t)oh * ldy + ow] = (odl_t)s;
    }
}

#define MODES(a, b, c) ((a) * 16 + (b) * 4 + (c))

/* Output rows [oh0, oh1) of one plane: y[ho][wo] (+)= x[h][w] (*) k (3x3, stride 1, pads pt <= 2, pl; w >= 2). */
ODL_INLINE void corr3_rows_acc(const odl_t *x, odl_t *y, const odl_t *k, int h, int w, int wo, int pt, int pl,
                               int oh0, int oh1, const int acc, float b0) {
  for (int ow = 0; ow < wo; ow += ODL_LANES) {
    int junk = ow + ODL_LANES > wo;
    int o = ow - pl;
    int m0 = tap_mode(o, w, junk), m1 = tap_mode(o + 1, w, junk), m2 = tap_mode(o + 2, w, junk);
    odl_t *yc = y + ow;
    switch (junk * 64 + MODES(m0, m1, m2)) {
      case MODES(TF, TF, TF): corr3_col(x, yc, wo, k, h, w, pt, o, oh0, oh1, TF, TF, TF, 0, acc, b0); break;
      case MODES(TZ, TF, TF): corr3_col(x, yc, wo, k, h, w, pt, o, oh0, oh1, TZ, TF, TF, 0, acc, b0); break;
      case MODES(TF, TF, TZ): corr3_col(x, yc, wo, k, h, w, pt, o, oh0, oh1, TF, TF, TZ, 0, acc, b0); break;
#if ODL_LANES == 2
      case MODES(TLZ, TF, TF): corr3_col(x, yc, wo, k, h, w, pt, o, oh0, oh1, TLZ, TF, TF, 0, acc, b0); break;
      case MODES(TF, TF, THZ): corr3_col(x, yc, wo, k, h, w, pt, o, oh0, oh1, TF, TF, THZ, 0, acc, b0); break;
      case 64 + MODES(TF, TF, TF): corr3_col(x, yc, wo, k, h, w, pt, o, oh0, oh1, TF, TF, TF, 1, acc, b0); break;
      case 64 + MODES(TF, THZ, TZ): corr3_col(x, yc, wo, k, h, w, pt, o, oh0, oh1, TF, THZ, TZ, 1, acc, b0); break;
      case 64 + MODES(TF, TF, THZ): corr3_col(x, yc, wo, k, h, w, pt, o, oh0, oh1, TF, TF, THZ, 1, acc, b0); break;
#endif
      default: corr3_scalar(x, y, wo, k, h, w, pt, pl, ow, odl_min_i(ow + ODL_LANES, wo), oh0, oh1, acc, b0);
    }
  }
}

static void corr3_rows(const odl_t *x, odl_t *y, const odl_t *k, int h, int w, int wo, int pt, int pl, int oh0,
                       int oh1, int acc, float b0) {
  if (acc) corr3_rows_acc(x, y, k, h, w, wo, pt, pl, oh0, oh1, 1, 0.0f);
  else corr3_rows_acc(x, y, k, h, w, wo, pt, pl, oh0, oh1, 0, b0);
}

ODL_INLINE int fast3(int kh, int kw, int sh, int sw, int pt, int win) {
  return kh == 3 && kw == 3 && sh == 1 && sw == 1 && pt >= 0 && pt <= 2 && win >= 2;
}

/* ---------------- forward ---------------- */
void odl_dwconv_fwd(void *args) {
  const odl_dwconv_fwd_args_t *p = (const odl_dwconv_fwd_args_t *)args;
  int h = p->h, w = p->w_, kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, lo, hi;
  odl_split(p->c * ho, &lo, &hi);
  if (fast3(kh, kw, p->sh, p->sw, p->pt, w)) {
    for (int u = lo; u < hi;) {
      int ch = u / ho, oh0 = u - ch * ho, oh1 = odl_min_i(ho, oh0 + hi - u);
      k9_t k;
      for (int t = 0; t < 9; t++) k.k[t] = p->w[ch * 9 + t];
      float b0 = p->bias ? (float)p->bias[ch] : 0.0f;   /* the sums start at the bias: one rounding */
      corr3_rows(p->x + (size_t)ch * h * w, p->y + (size_t)ch * ho * wo, k.k, h, w, wo, p->pt, p->pl, oh0, oh1, 0,
                 b0);
      u += oh1 - oh0;
    }
    return;
  }
  for (int u = lo; u < hi; u++) {
    int ch = u / ho, oh = u - ch * ho;
    const odl_t *x = p->x + (size_t)ch * h * w, *k = p->w + (size_t)ch * kh * kw;
    odl_t *y = p->y + (size_t)u * wo;
    int ih0 = oh * p->sh - p->pt;
    float b = p->bias ? (float)p->bias[ch] : 0.0f;
    for (int ow = 0; ow < wo; ow++) {
      int iw0 = ow * p->sw - p->pl;
      float s = b;
      for (int i = odl_max_i(0, -ih0); i < odl_min_i(kh, h - ih0); i++)
        for (int j = odl_max_i(0, -iw0); j < odl_min_i(kw, w - iw0); j++)
          s += (float)k[i * kw + j] * (float)x[(size_t)(ih0 + i) * w + iw0 + j];
      y[ow] = (odl_t)s;
    }
  }
}

/* ---------------- input gradient ---------------- */
void odl_dwconv_igrad(void *args) {
  const odl_dwconv_igrad_args_t *p = (const odl_dwconv_igrad_args_t *)args;
  int h = p->h, w = p->w_, kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, sh = p->sh, sw = p->sw, lo, hi;
  odl_split(p->c * h, &lo, &hi);
  if (fast3(kh, kw, sh, sw, 2 - p->pt, wo) && p->pl <= 2) {
    /* dx = dy (*) flip(w) with pads (2 - pt, 2 - pl) */
    for (int u = lo; u < hi;) {
      int ch = u / h, ih0 = u - ch * h, ih1 = odl_min_i(h, ih0 + hi - u);
      k9_t k;
      for (int t = 0; t < 9; t++) k.k[t] = p->w[ch * 9 + 8 - t];
      corr3_rows(p->dy + (size_t)ch * ho * wo, p->dx + (size_t)ch * h * w, k.k, ho, wo, w, 2 - p->pt, 2 - p->pl, ih0,
                 ih1, p->accumulate, 0.0f);
      u += ih1 - ih0;
    }
    return;
  }
  for (int u = lo; u < hi; u++) {
    int ch = u / h, ih = u - ch * h;
    const odl_t *dy = p->dy + (size_t)ch * ho * wo, *k = p->w + (size_t)ch * kh * kw;
    odl_t *dx = p->dx + (size_t)u * w;
    /* the taps reaching dx[ih][iw]: i = ih + pt - oh * sh (every sh-th filter row from i0, oh falling by one),
     * likewise j = iw + pl - ow * sw; no per-tap divisibility tests */
    int t0 = ih + p->pt, i0 = ((t0 % sh) + sh) % sh, oh0 = (t0 - i0) / sh;
    for (int iw = 0; iw < w; iw++) {
      float s = p->accumulate ? (float)dx[iw] : 0.0f;
      int q0 = iw + p->pl, j0 = ((q0 % sw) + sw) % sw, ow0 = (q0 - j0) / sw;
      for (int i = i0, oh = oh0; i < kh && oh >= 0; i += sh, oh--) {
        if (oh >= ho) continue;
        const odl_t *kr = k + i * kw, *dr = dy + (size_t)oh * wo;
        for (int j = j0, ow = ow0; j < kw && ow >= 0; j += sw, ow--)
          if (ow < wo) s += (float)kr[j] * (float)dr[ow];
      }
      dx[iw] = (odl_t)s;
    }
  }
}

/* ---------------- weight gradient ---------------- */
typedef struct { odl_wvec_t a[9]; } acc9_t;

ODL_INLINE void wg_row(acc9_t *acc, int i, odl_vec_t d, taps3_t t, const int m0, const int m1, const int m2) {
  if (m0 != TZ) acc->a[i * 3 + 0] = odl_wfma(acc->a[i * 3 + 0], d, t.t0);
  if (m1 != TZ) acc->a[i * 3 + 1] = odl_wfma(acc->a[i * 3 + 1], d, t.t1);
  if (m2 != TZ) acc->a[i * 3 + 2] = odl_wfma(acc->a[i * 3 + 2], d, t.t2);
}

ODL_INLINE odl_vec_t dy_load(const odl_t *p, const int junk) {
#if ODL_LANES == 2
  if (junk) return (odl_vec_t){p[0], 0};
#endif
  (void)junk;
  return odl_vload(p);
}

ODL_INLINE void wg_out(acc9_t *acc, const odl_t *dp, taps3_t a, taps3_t b, taps3_t c, const int m0, const int m1,
                       const int m2, const int junk) {
  odl_vec_t d = dy_load(dp, junk);
  wg_row(acc, 0, d, a, m0, m1, m2);
  wg_row(acc, 1, d, b, m0, m1, m2);
  wg_row(acc, 2, d, c, m0, m1, m2);
}

/* one column of all ho output rows: acc[i][j] += dy[oh][ow..] * x[oh-pt+i][ow-pl+j..] (FP32 lanes) */
ODL_INLINE void wg_col(acc9_t *acc, const odl_t *x, const odl_t *dy, int wo, int h, int w, int pt, int o, int ho,
                       const int m0, const int m1, const int m2, const int junk) {
  taps3_t A, B, C;
  int r = -pt;
  A = (r >= 0 && r < h) ? load3(x + (size_t)r * w, o, w, m0, m1, m2) : zero3();
  r++;
  B = (r >= 0 && r < h) ? load3(x + (size_t)r * w, o, w, m0, m1, m2) : zero3();
  int mid = odl_max_i(odl_min_i(ho, h + pt - 2), 0);
  int oh = 0;
  const odl_t *dp = dy;
  const odl_t *rp = x + (size_t)(2 - pt) * w;
  acc9_t hs; /* fresh per column, added into the total at the end (a blocked sum: ~sqrt(ho) + sqrt(wo) roundings
              * instead of ~sqrt(ho * wo), which matters in FP32) */
  for (int t = 0; t < 9; t++) hs.a[t] = odl_wzero();
  for (; oh + 3 <= mid; oh += 3) {
    C = load3(rp, o, w, m0, m1, m2);
    wg_out(&hs, dp, A, B, C, m0, m1, m2, junk);
    A = load3(rp + w, o, w, m0, m1, m2);
    wg_out(&hs, dp + wo, B, C, A, m0, m1, m2, junk);
    B = load3(rp + 2 * w, o, w, m0, m1, m2);
    wg_out(&hs, dp + 2 * wo, C, A, B, m0, m1, m2, junk);
    rp += 3 * w;
    dp += 3 * wo;
  }
  for (; oh < mid; oh++) {
    C = load3(rp, o, w, m0, m1, m2);
    wg_out(&hs, dp, A, B, C, m0, m1, m2, junk);
    A = B;
    B = C;
    rp += w;
    dp += wo;
  }
  for (; oh < ho; oh++) {
    wg_out(&hs, dp, A, B, zero3(), m0, m1, m2, junk);
    A = B;
    B = zero3();
    dp += wo;
  }
  for (int t = 0; t < 9; t++) acc->a[t] += hs.a[t];
}

void odl_dwconv_wgrad(void *args) {
  const odl_dwconv_wgrad_args_t *p = (const odl_dwconv_wgrad_args_t *)args;
  int h = p->h, w = p->w_, kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, sh = p->sh, sw = p->sw, lo, hi;
  int pt = p->pt, pl = p->pl;
  odl_split(p->c, &lo, &hi);
  for (int ch = lo; ch < hi; ch++) {
    const odl_t *x = p->x + (size_t)ch * h * w, *dy = p->dy + (size_t)ch * ho * wo;
    odl_t *dw = p->dw + (size_t)ch * kh * kw;
    if (fast3(kh, kw, sh, sw, pt, w)) {
      acc9_t acc;
      float sc[9];
      for (int t = 0; t < 9; t++) { acc.a[t] = odl_wzero(); sc[t] = 0.0f; }
      for (int ow = 0; ow < wo; ow += ODL_LANES) {
        int junk = ow + ODL_LANES > wo;
        int o = ow - pl;
        int m0 = tap_mode(o, w, junk), m1 = tap_mode(o + 1, w, junk), m2 = tap_mode(o + 2, w, junk);
        switch (junk * 64 + MODES(m0, m1, m2)) {
          case MODES(TF, TF, TF): wg_col(&acc, x, dy + ow, wo, h, w, pt, o, ho, TF, TF, TF, 0); break;
          case MODES(TZ, TF, TF): wg_col(&acc, x, dy + ow, wo, h, w, pt, o, ho, TZ, TF, TF, 0); break;
          case MODES(TF, TF, TZ): wg_col(&acc, x, dy + ow, wo, h, w, pt, o, ho, TF, TF, TZ, 0); break;
#if ODL_LANES == 2
          case MODES(TLZ, TF, TF): wg_col(&acc, x, dy + ow, wo, h, w, pt, o, ho, TLZ, TF, TF, 0); break;
          case MODES(TF, TF, THZ): wg_col(&acc, x, dy + ow, wo, h, w, pt, o, ho, TF, TF, THZ, 0); break;
          case 64 + MODES(TF, TF, TF): wg_col(&acc, x, dy + ow, wo, h, w, pt, o, ho, TF, TF, TF, 1); break;
          case 64 + MODES(TF, THZ, TZ): wg_col(&acc, x, dy + ow, wo, h, w, pt, o, ho, TF, THZ, TZ, 1); break;
          case 64 + MODES(TF, TF, THZ): wg_col(&acc, x, dy + ow, wo, h, w, pt, o, ho, TF, TF, THZ, 1); break;
#endif
          default:
            for (int c1 = ow; c1 < odl_min_i(ow + ODL_LANES, wo); c1++)
              for (int oh = 0; oh < ho; oh++) {
                float g = (float)dy[oh * wo + c1];
                for (int i = 0; i < 3; i++) {
                  int ih = oh - pt + i;
                  if (ih < 0 || ih >= h) continue;
                  for (int j = 0; j < 3; j++) {
                    int iw = c1 - pl + j;
                    if (iw >= 0 && iw < w) sc[i * 3 + j] += g * (float)x[ih * w + iw];
                  }
                }
              }
        }
      }
      for (int t = 0; t < 9; t++) {
        float s = odl_whsum(acc.a[t]) + sc[t];
        dw[t] = p->accumulate ? (odl_t)((float)dw[t] + s) : (odl_t)s;
      }
      continue;
    }
    for (int i = 0; i < kh; i++)
      for (int j = 0; j < kw; j++) {
        float s = 0.0f;
        for (int oh = 0; oh < ho; oh++) {
          int ih = oh * sh - pt + i;
          if (ih < 0 || ih >= h) continue;
          for (int ow = 0; ow < wo; ow++) {
            int iw = ow * sw - pl + j;
            if (iw >= 0 && iw < w) s += (float)dy[oh * wo + ow] * (float)x[ih * w + iw];
          }
        }
        odl_t *d = dw + i * kw + j;
        *d = p->accumulate ? (odl_t)((float)*d + s) : (odl_t)s;
      }
  }
}
