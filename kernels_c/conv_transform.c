/* im2col / col2im (one sample, x is [C,H,W]); see odl_kernels.h for the layout.
 * im2col: the work unit is one (col row, oh) pair = WO outputs; units are split evenly over cores, and each core
 * walks its units one col row (c, i, j) at a time: the row's tap geometry is computed once, and with stride 1 and
 * WO == W (same-size convs) the row's valid output rows are ONE contiguous copy from x (src and dst both advance
 * W per output row), after which only the padding columns are zeroed.
 * col2im is written as a gather: the unit is one row (c, ih) of dx, and each core sums into dx the col entries
 * that im2col took from that row, all kernel taps at once (one load + one add per col entry, one store per dx
 * entry). Cores own disjoint rows of dx, so nothing races and no barrier is needed, and the split stays
 * balanced even when C < number of cores.
 * pad_only (the memory hierarchy's DMA gathers the in-image elements, odl_dma_im2col): zeroes only, per tap.
 * Element copies move raw bits (16- or 32-bit integers) through an empty asm so clang cannot merge neighbouring
 * copies into vectors wider than the target's 2 x 16 bits (the target also builds with
 * -mllvm -combiner-store-merging=false, which keeps 2-lane vector copies 2-lane). */
#include "odl_kernels.h"
#include "odl_range.h"
#include "odl_simd.h"


#define CT_OPAQUE(x) __asm__("" : "+r"(x))

#if ODL_LANES == 2
typedef uint16_t ct_e_t; /* one element's bits */
#else
typedef uint32_t ct_e_t;
#endif
typedef uint32_t ct_w_t __attribute__((may_alias, aligned(4)));
typedef ct_e_t ct_ea_t __attribute__((may_alias));

/* Contiguous copy of n elements. FP16: 32-bit words (8 per iteration, immediate offsets) when source and
 * destination have the same alignment modulo 4 bytes, else halfwords.
 * FP32: words. */
ODL_INLINE void copy_elems(odl_t *dp, const odl_t *sp, int n) {
  ct_ea_t *d = (ct_ea_t *)dp;
  const ct_ea_t *s = (const ct_ea_t *)sp;
  if (sizeof(odl_t) == 2 && ((((uintptr_t)d ^ (uintptr_t)s) & 3) == 0)) {
    if (n && ((uintptr_t)d & 2)) { ct_e_t x = *s++; *d++ = x; n--; }
    ct_w_t *dw = (ct_w_t *)d;
    const ct_w_t *sw = (const ct_w_t *)s;
    int nw = n >> 1;
    const ct_w_t *se = sw + (nw & ~7);
    for (; sw != se; sw += 8, dw += 8) {
      uint32_t x[8];
      for (int t = 0; t < 8; t++) { x[t] = sw[t]; CT_OPAQUE(x[t]); }
      for (int t = 0; t < 8; t++) dw[t] = x[t];
    }
    for (nw &= 7; nw > 0; nw--) { uint32_t x = *sw++; CT_OPAQUE(x); *dw++ = x; }
    if (n & 1) *(ct_ea_t *)dw = *(const ct_ea_t *)sw;
    return;
  }
#if ODL_LANES == 2
  /* source and destination differ in alignment by one element: halfword copies, 16 per iteration (immediate
   * offsets: 2.3 instructions per element; 2-lane vector copies compile to the same lhu/sh pairs, 8 at a time) */
  int q = 0;
  for (; q + 16 <= n; q += 16) {
    ct_e_t x[16];
    for (int t = 0; t < 16; t++) { x[t] = s[q + t]; CT_OPAQUE(x[t]); }
    for (int t = 0; t < 16; t++) d[q + t] = x[t];
  }
  for (; q < n; q++) { ct_e_t x = s[q]; CT_OPAQUE(x); d[q] = x; }
#else
  int q = 0;
  for (; q + 4 <= n; q += 4) {
    ct_e_t x0 = s[q], x1 = s[q + 1], x2 = s[q + 2], x3 = s[q + 3];
    CT_OPAQUE(x0); CT_OPAQUE(x1); CT_OPAQUE(x2); CT_OPAQUE(x3);
    d[q] = x0; d[q + 1] = x1; d[q + 2] = x2; d[q + 3] = x3;
  }
  for (; q < n; q++) { ct_e_t x = s[q]; CT_OPAQUE(x); d[q] = x; }
#endif
}

ODL_INLINE void zero_elems(odl_t *dp, int n) {
  ct_ea_t *d = (ct_ea_t *)dp;
  int nw = n, odd = 0; /* 32-bit words to zero (FP32: the elements themselves) */
  if (sizeof(odl_t) == 2) {
    if (n < 4) {
      for (; n > 0; n--) { ct_e_t z = 0; CT_OPAQUE(z); *d++ = z; }
      return;
    }
    if ((uintptr_t)d & 2) { *d++ = 0; n--; }
    nw = n >> 1;
    odd = n & 1;
  }
  ct_w_t *dw = (ct_w_t *)d;
  uint32_t z = 0;
  CT_OPAQUE(z);
  for (ct_w_t *de = dw + (nw & ~7); dw != de; dw += 8)
    for (int t = 0; t < 8; t++) dw[t] = z;
  for (nw &= 7; nw > 0; nw--) *dw++ = z;
  if (odd) *(ct_ea_t *)dw = 0;
}

/* zero a few elements (the padding columns of one output row): a plain loop, small enough to inline anywhere */
ODL_INLINE void zero_few(odl_t *dp, int n) {
  ct_ea_t *d = (ct_ea_t *)dp;
  for (; n > 0; n--) { ct_e_t z = 0; CT_OPAQUE(z); *d++ = z; }
}

/* strided gather of n elements (stride > 1 convs) */
ODL_INLINE void gather_elems(odl_t *dp, const odl_t *sp, int stride, int n) {
  ct_ea_t *d = (ct_ea_t *)dp;
  const ct_ea_t *s = (const ct_ea_t *)sp;
  int q = 0;
  if (stride == 2) /* stride-2 convs: 8 per iteration at immediate offsets */
    for (; q + 8 <= n; q += 8, s += 16) {
      ct_e_t x[8];
      for (int t = 0; t < 8; t++) { x[t] = s[2 * t]; CT_OPAQUE(x[t]); }
      for (int t = 0; t < 8; t++) d[q + t] = x[t];
    }
  for (; q + 4 <= n; q += 4, s += 4 * stride) {
    ct_e_t x0 = s[0], x1 = s[stride], x2 = s[2 * stride], x3 = s[3 * stride];
    CT_OPAQUE(x0); CT_OPAQUE(x1); CT_OPAQUE(x2); CT_OPAQUE(x3);
    d[q] = x0; d[q + 1] = x1; d[q + 2] = x2; d[q + 3] = x3;
  }
  for (; q < n; q++, s += stride) { ct_e_t x = *s; CT_OPAQUE(x); d[q] = x; }
}

/* Dilated im2col (its own entry point, so the undilated kernel below does not pay for a test): a plain
 * per-element gather, same work unit as the fast path (one (col row, oh) pair). */
void odl_im2col_dilated(void *args) {
  const odl_im2col_args_t *p = (const odl_im2col_args_t *)args;
  int dh = odl_max_i(p->dh, 1), dw = odl_max_i(p->dw, 1);
  int kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, h = p->h, w = p->w, sh = p->sh, sw = p->sw;
  int lo, hi;
  odl_split(p->c * kh * kw * ho, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int row = u / ho, oh = u - row * ho;
    int j = row % kw, i = (row / kw) % kh, c = row / (kw * kh);
    ct_ea_t *d = (ct_ea_t *)(p->col + (size_t)u * wo);
    int ih = oh * sh - p->pt + i * dh;
    if (ih < 0 || ih >= h) {
      for (int ow = 0; ow < wo; ow++) { ct_e_t z = 0; CT_OPAQUE(z); d[ow] = z; }
      continue;
    }
    const ct_ea_t *xs = (const ct_ea_t *)(p->x + ((size_t)c * h + ih) * w);
    int a, b;
    odl_out_range(j * dw, w, sw, p->pl, wo, &a, &b);
    int ow = 0;
    for (; ow < a; ow++) { ct_e_t z = 0; CT_OPAQUE(z); d[ow] = z; }
    for (int iw = a * sw - p->pl + j * dw; ow < b; ow++, iw += sw) { ct_e_t x = xs[iw]; CT_OPAQUE(x); d[ow] = x; }
    for (; ow < wo; ow++) { ct_e_t z = 0; CT_OPAQUE(z); d[ow] = z; }
  }
}

/* zero the padding columns [0, a) and [b, wo) of output rows [0, nrows) starting at z */
ODL_INLINE void zero_pad_cols(odl_t *z, int nrows, int wo, int a, int b) {
  if (a + (wo - b) == 1) {
    /* one padding column (3x3 'same' convs): one store per output row */
    ct_ea_t *zc = (ct_ea_t *)(z + (a ? 0 : b)), *ze = zc + (size_t)nrows * wo;
    for (; zc != ze; zc += wo) { ct_e_t zz = 0; CT_OPAQUE(zz); *zc = zz; }
  } else if (a > 0 || b < wo) {
    for (int r = 0; r < nrows; r++, z += wo) {
      zero_elems(z, a);
      zero_elems(z + b, wo - b);
    }
  }
}

/* nrows output rows of a col row from z on, their inputs sh*w apart from src on: padding columns [0, a) and
 * [b, wo), a copy or a strided gather between (a function of its own: inlined into odl_im2col, register
 * pressure made its per-row code several times longer) */
static __attribute__((noinline)) void im2col_rows(odl_t *z, const odl_t *src, int nrows, int wo, int a, int b,
                                                   int sstep, int sw) {
  for (int r = 0; r < nrows; r++, z += wo, src += sstep) {
    zero_few(z, a);
    if (sw == 1) copy_elems(z + a, src, b - a);
    else gather_elems(z + a, src, sw, b - a);
    zero_few(z + b, wo - b);
  }
}

/* Stride 1 with WO == W (same-width convs, the common case): the tap geometry (valid output columns per kernel
 * column) is computed once per call, and each col row is one contiguous copy plus its padding. */
#define CT_MAXK 16
static __attribute__((noinline)) void im2col_s1(const odl_im2col_args_t *p, int lo, int hi) {
  int kh = p->kh, kw = p->kw, ho = p->ho, h = p->h, w = p->w, pt = p->pt, pl = p->pl;
  int ja[CT_MAXK], jb[CT_MAXK];
  for (int j = 0; j < kw; j++) odl_out_range(j, w, 1, pl, w, &ja[j], &jb[j]);
  int row = lo / ho, oh = lo - row * ho;
  int j = row % kw, ci = row / kw, i = ci % kh, c = ci / kh;
  const odl_t *xc = p->x + (size_t)c * h * w - pl;
  odl_t *drow = p->col + (size_t)row * ho * w;
  for (int u = lo; u < hi;) {
    int oe = odl_min_i(ho, oh + (hi - u));
    int a = ja[j], b = jb[j];
    /* output rows whose input row oh - pt + i lies inside the image: [v0, v1) */
    int v0 = odl_max_i(pt - i, oh), v1 = odl_min_i(h + pt - i, oe);
    if (v1 <= v0 || a >= b) {
      zero_elems(drow + oh * w, (oe - oh) * w);
    } else {
      zero_elems(drow + oh * w, (v0 - oh) * w);
      copy_elems(drow + v0 * w + a, xc + (v0 - pt + i) * w + j + a, (v1 - 1 - v0) * w + (b - a));
      zero_pad_cols(drow + v0 * w, v1 - v0, w, a, b);
      zero_elems(drow + v1 * w, (oe - v1) * w);
    }
    u += oe - oh;
    oh = 0;
    drow += ho * w;
    if (++j == kw) {
      j = 0;
      if (++i == kh) { i = 0; xc += h * w; }
    }
  }
}

/* pad_only: the padding of a column row depends on its tap (i, j) only, so each core zeroes the padding of every
 * tap for its channels */
static __attribute__((noinline)) void im2col_pad(const odl_im2col_args_t *p) {
  int kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, h = p->h, sh = p->sh, P = ho * wo;
  int lo, hi;
  odl_split(p->c, &lo, &hi);
  for (int i = 0; i < kh; i++) {
    int v0, v1;
    odl_out_range(i, h, sh, p->pt, ho, &v0, &v1);
    for (int j = 0; j < kw; j++) {
      int a, b;
      odl_out_range(j, p->w, p->sw, p->pl, wo, &a, &b);
      odl_t *drow = p->col + ((size_t)(lo * kh + i) * kw + j) * P;
      for (int c = lo; c < hi; c++, drow += (size_t)kh * kw * P) {
        if (v1 <= v0 || a >= b) {
          zero_elems(drow, P);
          continue;
        }
        if (v0 > 0) zero_elems(drow, v0 * wo);
        zero_pad_cols(drow + v0 * wo, v1 - v0, wo, a, b);
        if (v1 < ho) zero_elems(drow + v1 * wo, (ho - v1) * wo);
      }
    }
  }
}

void odl_im2col(void *args) {
  const odl_im2col_args_t *p = (const odl_im2col_args_t *)args;
  if (p->pad_only) {
    im2col_pad(p);
    return;
  }
  int kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, h = p->h, w = p->w, sh = p->sh, sw = p->sw;
  int pt = p->pt, pl = p->pl;
  int lo, hi;
  odl_split(p->c * kh * kw * ho, &lo, &hi);
  if (lo >= hi) return;
  if (sw == 1 && sh == 1 && wo == w && kw <= CT_MAXK) {
    im2col_s1(p, lo, hi);
    return;
  }
  int row = lo / ho, oh = lo - row * ho;
  int j = row % kw, ci = row / kw, i = ci % kh, c = ci / kh;
  int run = sw == 1 && sh * w == wo; /* consecutive output rows are contiguous in x too */
  for (int u = lo; u < hi;) {
    int oe = odl_min_i(ho, oh + (hi - u)); /* this core's output rows [oh, oe) of col row `row` */
    odl_t *drow = p->col + (size_t)row * ho * wo;
    int a, b;
    odl_out_range(j, w, sw, pl, wo, &a, &b);
    /* output rows whose input row ih = oh*sh - pt + i lies inside the image, of this core's [oh, oe): [v0, v1) */
    int v0, v1;
    odl_out_range(i, h, sh, pt, ho, &v0, &v1);
    v0 = odl_max_i(v0, oh);
    v1 = odl_min_i(v1, oe);
    if (v1 <= v0 || a >= b) {
      zero_elems(drow + oh * wo, (oe - oh) * wo);
    } else {
      zero_elems(drow + oh * wo, (v0 - oh) * wo);
      const odl_t *xs = p->x + (size_t)c * h * w + (j - pl); /* x element of (oh, ow) is xs[(oh*sh-pt+i)*w + ow*sw] */
      if (run) {
        /* one copy from (v0, a) to (v1 - 1, b); the wrapped padding columns are zeroed after */
        odl_t *d0 = drow + v0 * wo + a;
        copy_elems(d0, xs + (v0 * sh - pt + i) * w + a, (v1 - 1 - v0) * wo + (b - a));
        zero_pad_cols(drow + v0 * wo, v1 - v0, wo, a, b);
      } else {
        im2col_rows(drow + v0 * wo, xs + (v0 * sh - pt + i) * w + a * sw, v1 - v0, wo, a, b, sh * w, sw);
      }
      zero_elems(drow + v1 * wo, (oe - v1) * wo);
    }
    u += oe - oh;
    oh = 0;
    row++;
    if (++j == kw) {
      j = 0;
      if (++i == kh) { i = 0; c++; }
    }
  }
}

/* d[q] += s[q] for q in [a, b) (2-lane vectors, a scalar last element) */
ODL_INLINE void add_elems(odl_t *d, const odl_t *s, int a, int b) {
  if (a >= b) return;
  odl_t *pd = d + a, *pe = d + b;
  const odl_t *ps = s + a;
  for (; pd + ODL_LANES <= pe; pd += ODL_LANES, ps += ODL_LANES) odl_vstore(pd, odl_vload(pd) + odl_vload(ps));
  if (pd != pe) *pd = (odl_t)((float)*pd + (float)*ps);
}

/* col2im, stride-1 columns: dx row d[0, w) (+)= the sum over taps; tap t adds col row segment src[t] at
 * columns [lo[t], hi[t]) of d (src[t] already offset so that d[q] pairs with src[t][q]). The columns where
 * every tap is valid run as one vector loop, the rest per tap. */
#define CT_MAXT 9
ODL_INLINE void col2im_row_s1(odl_t *d, int w, int nt, const odl_t *const *src, const int *lo, const int *hi,
                              int acc) {
  int ilo = 0, ihi = w;
  for (int t = 0; t < nt; t++) { ilo = odl_max_i(ilo, lo[t]); ihi = odl_min_i(ihi, hi[t]); }
  if (ihi < ilo) ihi = ilo;
  /* edges [0, ilo) and [ihi, w): one vector pass per tap over its part of each edge */
  if (!acc) {
    zero_elems(d, ilo);
    zero_elems(d + ihi, w - ihi);
  }
  for (int t = 0; t < nt; t++) {
    add_elems(d, src[t], odl_max_i(lo[t], 0), odl_min_i(hi[t], ilo));
    add_elems(d, src[t], odl_max_i(lo[t], ihi), odl_min_i(hi[t], w));
  }
  if (ihi <= ilo) return;
  int q = ilo, nv = (ihi - ilo) / ODL_LANES;
  if (nv && (nt == 9 || nt == 6 || nt == 3)) {
    /* explicit pointer increments: one addi per vector load (vle16 has no immediate offset) */
    const odl_t *s0 = src[0] + q, *s1 = src[1] + q, *s2 = src[2] + q, *s3 = src[nt > 3 ? 3 : 0] + q,
                *s4 = src[nt > 3 ? 4 : 0] + q, *s5 = src[nt > 3 ? 5 : 0] + q, *s6 = src[nt > 6 ? 6 : 0] + q,
                *s7 = src[nt > 6 ? 7 : 0] + q, *s8 = src[nt > 6 ? 8 : 0] + q;
    odl_t *pd = d + q, *pe = pd + nv * ODL_LANES;
#define CT_TAPS3(v, a, b, c) v = odl_vload(a) + odl_vload(b) + odl_vload(c); a += ODL_LANES; b += ODL_LANES; c += ODL_LANES
#define CT_LOOP(NT, ACC)                                                                                  \
    do {                                                                                                  \
      odl_vec_t v, u, t;                                                                                  \
      CT_TAPS3(v, s0, s1, s2);                                                                            \
      if (NT > 3) { CT_TAPS3(u, s3, s4, s5); v += u; }                                                    \
      if (NT > 6) { CT_TAPS3(t, s6, s7, s8); v += t; }                                                    \
      if (ACC) v += odl_vload(pd);                                                                        \
      odl_vstore(pd, v);                                                                                  \
      pd += ODL_LANES;                                                                                    \
    } while (pd != pe)
    if (nt == 9) { if (acc) CT_LOOP(9, 1); else CT_LOOP(9, 0); }
    else if (nt == 6) { if (acc) CT_LOOP(6, 1); else CT_LOOP(6, 0); }
    else { if (acc) CT_LOOP(3, 1); else CT_LOOP(3, 0); }
#undef CT_LOOP
#undef CT_TAPS3
    q += nv * ODL_LANES;
  }
  for (; q + ODL_LANES <= ihi; q += ODL_LANES) {
    odl_vec_t v = acc ? odl_vload(d + q) : odl_vzero();
    for (int t = 0; t < nt; t++) v += odl_vload(src[t] + q);
    odl_vstore(d + q, v);
  }
  for (; q < ihi; q++) {
    float s = acc ? (float)d[q] : 0.0f;
    for (int t = 0; t < nt; t++) s += (float)src[t][q];
    d[q] = (odl_t)s;
  }
}

/* col2im, stride 1 and WO == W (same-width convs), FP16: each channel plane of dx is one flat row of H*W, and
 * tap (i, j) pairs dx[p] with col row (c, i, j) at p - off, off = (i - pt)*W + (j - pl): a contiguous range of p
 * per tap. The col entries that im2col zeroed (input columns outside the image, which the flat mapping would
 * pair with the neighbouring row's edge pixels) are zeroed in col first, so whole planes run through the
 * vector gather and only the first/last row + 1 of each plane take the per-tap edge passes. Work unit: ODL_LANES
 * consecutive dx elements of the C*H*W range; each core zeroes the pad entries of the output rows its range
 * reads (overlapping zeroing between cores writes the same zeros, and a core reads only entries it zeroed). */
static void col2im_flat(const odl_col2im_args_t *p) {
  int kh = p->kh, kw = p->kw, ho = p->ho, w = p->w, pt = p->pt, pl = p->pl;
  int HW = p->h * w, P = ho * w, nt = kh * kw;
  long tot = (long)p->c * HW;
  int lo, hi;
  odl_split((int)((tot + ODL_LANES - 1) / ODL_LANES), &lo, &hi);
  long g0 = (long)lo * ODL_LANES, g1 = odl_min_i(hi * ODL_LANES, (int)tot);
  odl_t *col = (odl_t *)p->col;
  while (g0 < g1) {
    int c = (int)(g0 / HW), s = (int)(g0 - (long)c * HW), e = (int)odl_min_i(HW, s + (int)(g1 - g0));
    const odl_t *src[CT_MAXT];
    int tlo[CT_MAXT], thi[CT_MAXT];
    for (int t = 0; t < nt; t++) {
      int i = t / kw, j = t - i * kw, off = (i - pt) * w + (j - pl);
      odl_t *crow = col + (size_t)(c * nt + t) * P;
      int a = odl_max_i(odl_max_i(0, off), s), b = odl_min_i(odl_min_i(HW, P + off), e);
      if (b < a) b = a;
      /* zero the pad columns [0, pl - j) or [w - (j - pl), w) of the output rows read here */
      if (j != pl && a < b) {
        int z0 = j < pl ? 0 : w - (j - pl), z1 = j < pl ? pl - j : w;
        z0 = odl_max_i(z0, 0);
        z1 = odl_min_i(z1, w);
        int r1 = (b - 1 - off) / w;
        odl_t *zr = crow + (size_t)((a - off) / w) * w;
        for (odl_t *ze = crow + (size_t)r1 * w; zr <= ze; zr += w) zero_elems(zr + z0, z1 - z0);
      }
      src[t] = crow - off + s;
      tlo[t] = a - s;
      thi[t] = b - s;
    }
    col2im_row_s1(p->dx + (size_t)c * HW + s, e - s, nt, src, tlo, thi, p->accumulate);
    g0 += e - s;
  }
}

/* Dilated col2im (its own entry point): the gather of the generic path with taps DH / DW apart; cores own
 * disjoint rows of dx. */
void odl_col2im_dilated(void *args) {
  const odl_col2im_args_t *p = (const odl_col2im_args_t *)args;
  int dh = odl_max_i(p->dh, 1), dw = odl_max_i(p->dw, 1);
  int kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, h = p->h, w = p->w, sh = p->sh, sw = p->sw;
  int lo, hi;
  odl_split(p->c * h, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int c = u / h, ih = u - c * h;
    odl_t *dst = p->dx + (size_t)u * w;
    if (!p->accumulate) zero_elems(dst, w);
    for (int i = 0; i < kh; i++) {
      int t = ih + p->pt - i * dh; /* = oh*sh */
      if (t < 0 || t % sh) continue;
      int oh = t / sh;
      if (oh >= ho) continue;
      for (int j = 0; j < kw; j++) {
        int a, b;
        odl_out_range(j * dw, w, sw, p->pl, wo, &a, &b);
        const odl_t *src = p->col + ((size_t)((c * kh + i) * kw + j) * ho + oh) * wo;
        for (int ow = a, iw = a * sw - p->pl + j * dw; ow < b; ow++, iw += sw) dst[iw] += src[ow];
      }
    }
  }
}

void odl_col2im(void *args) {
  const odl_col2im_args_t *p = (const odl_col2im_args_t *)args;
  int kh = p->kh, kw = p->kw, ho = p->ho, wo = p->wo, h = p->h, w = p->w, sh = p->sh, sw = p->sw;
  int pt = p->pt, pl = p->pl, P = ho * wo;
  int lo, hi;
  if (ODL_LANES == 2 && sw == 1 && sh == 1 && wo == w && kh * kw <= CT_MAXT && (long)p->c * h * w < (1L << 30)) {
    col2im_flat(p);
    return;
  }
  odl_split(p->c * h, &lo, &hi);
  if (lo >= hi) return;
  int jlo[16], jhi[16];
  int fast = ODL_LANES == 2 && sw == 1 && kw <= 16; /* FP32: per-tap passes (flw/fsw take immediate offsets) */
  if (fast)
    for (int j = 0; j < kw; j++) {
      int a, b;
      odl_out_range(j, w, sw, pl, wo, &a, &b);
      jlo[j] = a - pl + j; /* dx columns [jlo, jhi) receive tap j */
      jhi[j] = b - pl + j;
    }
  int c = lo / h, ih = lo - c * h;
  for (int u = lo; u < hi; u++) {
    odl_t *dst = p->dx + (size_t)u * w;
    if (fast) {
      const odl_t *src[CT_MAXT];
      int tlo[CT_MAXT], thi[CT_MAXT], nt = 0;
      int acc = p->accumulate;
      for (int i = 0; i < kh; i++) {
        int t = ih + pt - i; /* = oh*sh */
        if (t < 0 || t % sh) continue;
        int oh = t / sh;
        if (oh >= ho) continue;
        const odl_t *base = p->col + ((size_t)(c * kh + i) * kw) * P + (size_t)oh * wo + pl;
        for (int j = 0; j < kw; j++) {
          if (jlo[j] >= jhi[j]) continue;
          src[nt] = base + (size_t)j * P - j; /* col element (oh, ow = q + pl - j) pairs with dx column q */
          tlo[nt] = jlo[j];
          thi[nt] = jhi[j];
          if (++nt == CT_MAXT) {
            col2im_row_s1(dst, w, nt, src, tlo, thi, acc);
            nt = 0;
            acc = 1;
          }
        }
      }
      if (nt || !acc) col2im_row_s1(dst, w, nt, src, tlo, thi, acc);
    } else {
      if (!p->accumulate) zero_elems(dst, w);
      for (int i = 0; i < kh; i++) {
        int t = ih + pt - i; /* = oh*sh */
        if (t < 0 || t % sh) continue;
        int oh = t / sh;
        if (oh >= ho) continue;
        for (int j = 0; j < kw; j++) {
          int a, b;
          odl_out_range(j, w, sw, pl, wo, &a, &b);
          if (a >= b) continue;
          const odl_t *src = p->col + ((size_t)((c * kh + i) * kw + j) * ho + oh) * wo + a;
          odl_t *d = dst + (a * sw - pl + j);
          int q = 0;
          /* strides 1 and 2 (FP32 same convs, stride-2 convs): 4 taps per iteration at immediate offsets */
          if (sw == 1)
            for (; q + 4 <= b - a; q += 4, d += 4) {
              odl_t s0 = src[q], s1 = src[q + 1], s2 = src[q + 2], s3 = src[q + 3];
              d[0] += s0; d[1] += s1; d[2] += s2; d[3] += s3;
            }
          else if (sw == 2)
            for (; q + 4 <= b - a; q += 4, d += 8) {
              odl_t s0 = src[q], s1 = src[q + 1], s2 = src[q + 2], s3 = src[q + 3];
              d[0] += s0; d[2] += s1; d[4] += s2; d[6] += s3;
            }
          for (; q < b - a; q++, d += sw) *d += src[q];
        }
      }
    }
    if (++ih == h) { ih = 0; c++; }
  }
}

/* dst[j*ldo + i] = src[i*ldi + j] for i < rows, j < cols: each core writes whole rows of dst. */
/* transpose and the weight flip: each core's share starts a few cycles after the previous core's (odl_skew): their
 * strided reads otherwise meet in the same TCDM banks in lockstep */
#ifndef CT_SKEW
#define CT_SKEW 6
#endif

void odl_transpose(void *args) {
  const odl_transpose_args_t *p = (const odl_transpose_args_t *)args;
  int rows = p->rows, ldi = p->ldi ? p->ldi : p->cols, ldo = p->ldo ? p->ldo : rows;
  int lo, hi;
  odl_split(p->cols, &lo, &hi);
  odl_skew(CT_SKEW);
  for (int j = lo; j < hi; j++) {
    const ct_ea_t *s = (const ct_ea_t *)p->src + j;
    ct_ea_t *d = (ct_ea_t *)p->dst + (size_t)j * ldo;
    int i = 0;
#if ODL_LANES == 2
    /* FP16: pairs of rows with one strided 2-lane load and one store, 4 pairs per iteration */
    const odl_t *sv = p->src + j;
    odl_t *dv = p->dst + (size_t)j * ldo;
    for (; i + 8 <= rows; i += 8, sv += 8 * ldi) {
      odl_copy_pair_strided(dv + i, sv, ldi);
      odl_copy_pair_strided(dv + i + 2, sv + 2 * ldi, ldi);
      odl_copy_pair_strided(dv + i + 4, sv + 4 * ldi, ldi);
      odl_copy_pair_strided(dv + i + 6, sv + 6 * ldi, ldi);
    }
    s += (size_t)i * ldi;
#endif
    for (; i + 4 <= rows; i += 4, s += 4 * ldi) {
      ct_e_t x0 = s[0], x1 = s[ldi], x2 = s[2 * ldi], x3 = s[3 * ldi];
      CT_OPAQUE(x0); CT_OPAQUE(x1); CT_OPAQUE(x2); CT_OPAQUE(x3);
      d[i] = x0; d[i + 1] = x1; d[i + 2] = x2; d[i + 3] = x3;
    }
    for (; i < rows; i++, s += ldi) d[i] = *s;
  }
}

/* W'(ci, co*kk + t) = W[co, ci, kk-1-t] (see odl_kernels.h); each core takes a range of (co, ci) filter rows.
 * 3x3 filters (kk = 9) copy at immediate offsets: all 9 loads, then the 9 stores. */
void odl_conv_wflip(void *args) {
  const odl_conv_wflip_args_t *p = (const odl_conv_wflip_args_t *)args;
  int cin = p->cin, kk = p->kk, ld = p->ld ? p->ld : p->cout * kk, tr = p->t;
  int lo, hi;
  odl_split(p->cout * cin, &lo, &hi);
  if (lo >= hi) return;
  odl_skew(CT_SKEW);
  int co = lo / cin, ci = lo - co * cin;
  const ct_ea_t *s = (const ct_ea_t *)p->src + (size_t)lo * kk;
  for (int u = lo; u < hi; u++, s += kk) {
    ct_ea_t *d = (ct_ea_t *)p->dst + (tr ? (size_t)co * kk * cin + ci : (size_t)ci * ld + co * kk);
    int step = tr ? cin : 1;
    if (kk == 9) {
      ct_e_t e[9];
      for (int t = 0; t < 9; t++) { e[t] = s[8 - t]; CT_OPAQUE(e[t]); }
      if (tr)
        for (int t = 0; t < 9; t++, d += step) *d = e[t];
      else
        for (int t = 0; t < 9; t++) d[t] = e[t];
    } else {
      for (int t = 0; t < kk; t++, d += step) { ct_e_t e = s[kk - 1 - t]; CT_OPAQUE(e); *d = e; }
    }
    if (++ci == cin) { ci = 0; co++; }
  }
}
