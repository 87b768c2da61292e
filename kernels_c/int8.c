/* int8 inference kernels of `odl compile --deploy int8` (odl_int8.h: the codes, the requantization, each kernel's
 * contract). int8 x int8 products accumulate exactly in int32, 4 lanes per 32-bit word (odl_i8x4_t); every
 * requantization rounds as torch's fake quantization does (odl_round.h). One source for the target and the host tests
 * (tests/kernels/test_kernels_native_int8.py: bit exact against an integer numpy reference). */
#include "odl_kernels.h"
#include "odl_int8.h"
#include "odl_round.h"
#include "odl_range.h"

typedef int8_t i8x4_u __attribute__((vector_size(4), aligned(1)));   /* an unaligned 4-lane load */
typedef int16_t i16x4_t __attribute__((vector_size(8)));
typedef int16_t i16x4_u __attribute__((vector_size(8), aligned(1)));   /* 8 codes, unaligned */
typedef int32_t i32x4_t __attribute__((vector_size(16)));
typedef float f32x4_t __attribute__((vector_size(16)));

/* clamp(rne(v) + zp, lo, hi); v is already rounded to FP32 on its own (ODL_ROUNDED). Clamping v to the integers
 * [lo - zp, hi - zp] first gives the same code (rounding is monotone and keeps integers) and keeps odl_rne's range. */
static inline int8_t i8_code(float v, int zp, int lo, int hi) {
  float l = (float)(lo - zp), h = (float)(hi - zp);
  v = v < l ? l : (v > h ? h : v);
  return (int8_t)((int)odl_rne(v) + zp);
}

static inline int8_t i8_requant(int32_t acc, float mult, int zp, int lo, int hi) {
  float v = (float)acc * mult;
  ODL_ROUNDED(v);
  return i8_code(v, zp, lo, hi);
}

/* sum_k a[k] * b[k]: 4 lanes at a time (products in int16, accumulated in int32 lanes), the rest one by one */
static inline int32_t i8_dot(const int8_t *a, const int8_t *b, int k) {
  i32x4_t acc = {0, 0, 0, 0};
  int i = 0;
  for (; i + 4 <= k; i += 4) {
    odl_i8x4_t va = *(const i8x4_u *)(a + i), vb = *(const i8x4_u *)(b + i);
    i16x4_t prod = __builtin_convertvector(va, i16x4_t) * __builtin_convertvector(vb, i16x4_t);
    acc += __builtin_convertvector(prod, i32x4_t);
  }
  int32_t s = acc[0] + acc[1] + acc[2] + acc[3];
  for (; i < k; i++) s += (int32_t)a[i] * b[i];
  return s;
}

/* dst[0 .. n) = src[0 .. n) and dst[0 .. n) = v, a word (4 codes, one 4-lane load or store) at a time, then bytes */
static inline void i8_copy(int8_t *dst, const int8_t *src, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) *(i8x4_u *)(dst + i) = *(const i8x4_u *)(src + i);
  for (; i < n; i++) dst[i] = src[i];
}

static inline void i8_fill(int8_t *dst, int8_t v, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) *(i8x4_u *)(dst + i) = (odl_i8x4_t){v, v, v, v};
  for (; i < n; i++) dst[i] = v;
}

void odl_i8_quantize(void *args) {
  const odl_i8_quantize_args_t *p = (const odl_i8_quantize_args_t *)args;
  int lo, hi;
  odl_split(p->n, &lo, &hi);
  for (int i = lo; i < hi; i++) {
    float v = p->x[i] * p->inv;
    ODL_ROUNDED(v);
    p->y[i] = i8_code(v, p->zp, -128, 127);
  }
}

void odl_i8_dequantize(void *args) {
  const odl_i8_dequantize_args_t *p = (const odl_i8_dequantize_args_t *)args;
  int lo, hi;
  odl_split(p->n, &lo, &hi);
  for (int i = lo; i < hi; i++) p->y[i] = (float)(p->x[i] - p->zp) * p->scale;
}

/* rows of cols split over the cores: row (c, i, t) holds tap (i, t) of channel c for every output pixel; per output
 * row the pixels whose tap lies in the image are a range (odl_out_range), the others hold the pad code */
void odl_i8_im2col(void *args) {
  const odl_i8_im2col_args_t *p = (const odl_i8_im2col_args_t *)args;
  int lo, hi, taps = p->kh * p->kw, sw = p->sw;
  int8_t pad = (int8_t)p->pad;
  odl_split(p->c * taps, &lo, &hi);
  for (int r = lo; r < hi; r++) {
    int c = r / taps, i = (r % taps) / p->kw, t = r % p->kw, x0, x1;
    odl_out_range(t, p->w, sw, p->pl, p->wo, &x0, &x1);
    const int8_t *x = p->x + (size_t)c * p->h * p->w + t - p->pl;
    int8_t *col = p->cols + (size_t)r * p->ho * p->wo;
    for (int oy = 0; oy < p->ho; oy++, col += p->wo) {
      int iy = oy * p->sh - p->pt + i;
      if (iy < 0 || iy >= p->h) {
        i8_fill(col, pad, p->wo);
        continue;
      }
      const int8_t *xr = x + iy * p->w;   /* xr[ox * sw]: this tap of output ox, inside the image for ox in [x0, x1) */
      i8_fill(col, pad, x0);
      if (sw == 1) {
        i8_copy(col + x0, xr + x0, x1 - x0);
      } else {
        int ox = x0;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* stride 2: 8 codes loaded as 4 int16 lanes, whose low bytes are the even codes (one narrowing); while the
         * eighth code read, xr[2 * ox + 7], is still in the image row (column 2 * ox + 7 + t - pl < w) */
        if (sw == 2)
          for (; ox + 4 <= x1 && 2 * ox + 7 + t - p->pl < p->w; ox += 4)
            *(i8x4_u *)(col + ox) = __builtin_convertvector(*(const i16x4_u *)(xr + 2 * ox), odl_i8x4_t);
#endif
        for (; ox < x1; ox++) col[ox] = xr[ox * sw];
      }
      i8_fill(col + x1, pad, p->wo - x1);
    }
  }
}

static inline void i8_store(const odl_i8_gemm_args_t *p, int i, int j, int32_t acc) {
  p->y[(size_t)i * p->ldy + j] = i8_requant(acc + p->bias[i], p->mult[i], p->zp, p->lo, p->hi);
}

#if defined(__has_builtin) && __has_builtin(__builtin_elementwise_min) && __has_builtin(__builtin_elementwise_max) && \
    __has_builtin(__builtin_elementwise_roundeven)
#define I8_LANES4 1   /* the 4-lane requantizations below; else their scalar loops */
/* i8_code's clamp bounds [lo - zp, hi - zp] in 4 lanes (outside a loop that codes many vectors) */
static inline f32x4_t i8_bound4(int b, int zp) {
  float f = (float)(b - zp);
  return (f32x4_t){f, f, f, f};
}

/* i8_code in 4 lanes: v (each lane already rounded to FP32 on its own) clamped to [l, h] (i8_bound4), rounded half to
 * even and converted in one instruction on RVV (vfcvt.x.f.v under round-to-nearest-even), plus zp */
static inline odl_i8x4_t i8_code4(f32x4_t v, f32x4_t l, f32x4_t h, int zp) {
  v = __builtin_elementwise_min(__builtin_elementwise_max(v, l), h);
  return __builtin_convertvector(__builtin_convertvector(__builtin_elementwise_roundeven(v), i32x4_t) + zp,
                                 odl_i8x4_t);
}
#endif

/* i8_requant in 4 lanes (the same operations: the product rounded to FP32 on its own, clamped, rounded half to even) */
static inline odl_i8x4_t i8_requant4(i32x4_t acc, float mult, int zp, int lo, int hi) {
#ifdef I8_LANES4
  return i8_code4(__builtin_convertvector(acc, f32x4_t) * mult, i8_bound4(lo, zp), i8_bound4(hi, zp), zp);
#else
  odl_i8x4_t q;
  for (int l = 0; l < 4; l++) q[l] = i8_requant(acc[l], mult, zp, lo, hi);
  return q;
#endif
}

/* y[i, j .. j + 3] from channel i's 4 accumulators, stored as one word */
static inline void i8_store4(const odl_i8_gemm_args_t *p, int i, int j, i32x4_t acc) {
  *(i8x4_u *)(p->y + (size_t)i * p->ldy + j) = i8_requant4(acc + p->bias[i], p->mult[i], p->zp, p->lo, p->hi);
}

/* acc += the steps [t0, t1) of k of one tile (i8_tile) */
static inline __attribute__((always_inline)) void i8_steps(i32x4_t acc[2][8], const int8_t *wg, const int8_t *a, int n,
                                                           int t0, int t1, const int nv) {
  wg += (size_t)t0 * 8;
  a += (size_t)t0 * n;
  for (int t = t0; t < t1; t++, wg += 8, a += n) {
    int32_t c[8];
    for (int r = 0; r < 8; r++) c[r] = wg[r];
    for (int h = 0; h < nv; h++) {
      i32x4_t v = __builtin_convertvector(*(const i8x4_u *)(a + 4 * h), i32x4_t);
      for (int r = 0; r < 8; r++) acc[h][r] += v * c[r];
    }
  }
}

/* 8 output channels (one packed group, wg[t * 8 + r]) x 4 * nv pixels (nv = 1 or 2, a constant once inlined): each
 * step of k loads the group's 8 weights (scalars) and the pixels' codes a word (4 lanes) at a time, widens each word
 * once and accumulates it times each weight into int32 lanes: 64 products per 8 weights and 2 words loaded (nv = 2).
 * The steps run from t0 to k and then from 0 to t0 (integer sums: any order gives the same one): each core starts at
 * its own step, so that cores working in step do not read the same L1 bank (the weights and pixels of one step) in
 * the same cycle. Rows past m (the zero weights padding the last group) are computed and not stored. */
static inline __attribute__((always_inline)) void i8_tile(const odl_i8_gemm_args_t *p, const int8_t *wg, int i, int j,
                                                          int t0, const int nv) {
  i32x4_t acc[2][8];
  for (int h = 0; h < 2; h++)
    for (int r = 0; r < 8; r++) acc[h][r] = (i32x4_t){0, 0, 0, 0};
  i8_steps(acc, wg, p->a + j, p->n, t0, p->k, nv);
  i8_steps(acc, wg, p->a + j, p->n, 0, t0, nv);
  const int rows = p->m - i;
#pragma clang loop unroll(full)   /* constant indices into acc: it stays in registers */
  for (int h = 0; h < nv; h++)
#pragma clang loop unroll(full)
    for (int r = 0; r < 8; r++)
      if (r < rows) i8_store4(p, i + r, j + 4 * h, acc[h][r]);
}

/* one output (n of 2 or 3 pixels: too few for a tile) from the packed weights */
static inline void i8_one(const odl_i8_gemm_args_t *p, int i, int j) {
  const int8_t *w = p->wt + (size_t)(i / 8) * p->k * 8 + i % 8, *a = p->a + j;
  int32_t acc = 0;
  for (int t = 0; t < p->k; t++) acc += (int32_t)w[(size_t)t * 8] * a[(size_t)t * p->n];
  i8_store(p, i, j, acc);
}

/* n == 1 (a linear layer, row-major weights): output channels split over the cores, each a dot product along k
 * (4 lanes). n of 2 or 3: single outputs. Otherwise (packed weights) units of one group of 8 channels x 8 pixels
 * split over the cores, the last unit of a group taking the n % 8 pixels left as well: tiles of 8 and 4 pixels, and
 * a last tile of 4 ending at the unit's end that recomputes (and stores again, the same codes) up to 3 pixels of the
 * tile before it, so no pixel is left to a scalar loop. */
void odl_i8_gemm(void *args) {
  const odl_i8_gemm_args_t *p = (const odl_i8_gemm_args_t *)args;
  int lo, hi;
  if (p->n == 1) {
    odl_split(p->m, &lo, &hi);
    for (int i = lo; i < hi; i++) i8_store(p, i, 0, i8_dot(p->wt + (size_t)i * p->k, p->a, p->k));
    return;
  }
  if (p->n < 4) {
    odl_split(p->m * p->n, &lo, &hi);
    for (int u = lo; u < hi; u++) i8_one(p, u / p->n, u % p->n);
    return;
  }
  int nb = p->n >= 8 ? p->n / 8 : 1;   /* units of 8 channels x 8 pixels (the last of a group 4 to 15 pixels) */
  odl_split(((p->m + 7) / 8) * nb, &lo, &hi);
  const int t0 = odl_core_id() % p->k;
  for (int u = lo; u < hi; u++) {
    int g = u / nb, b = u % nb, i = g * 8, l = b * 8, end = b == nb - 1 ? p->n : l + 8;
    const int8_t *wg = p->wt + (size_t)g * p->k * 8;
    for (; l + 8 <= end; l += 8) i8_tile(p, wg, i, l, t0, 2);
    if (l + 4 <= end) {
      i8_tile(p, wg, i, l, t0, 1);
      l += 4;
    }
    if (l < end) i8_tile(p, wg, i, end - 4, t0, 1);
  }
}

#define I8_DW_CHUNK 64   /* outputs of a row accumulated at once (int32 on the hart's stack) */
typedef int32_t i32x4_u __attribute__((vector_size(16), aligned(4)));

/* acc[o] += (x[o * sw] - zp) * wv for o in [0, n): 4 lanes a step when the taps are contiguous (stride 1) */
static inline void i8_dw_tap(int32_t *acc, const int8_t *x, int n, int sw, int zp, int32_t wv) {
  int o = 0;
  if (sw == 1) {
    for (; o + 4 <= n; o += 4) {
      i32x4_t v = __builtin_convertvector(*(const i8x4_u *)(x + o), i32x4_t) - zp;
      *(i32x4_u *)(acc + o) += v * wv;
    }
  }
  for (; o < n; o++) acc[o] += (x[o * sw] - zp) * wv;
}

/* output rows (c, oy) of any stride split over the cores; per row and tap, the outputs whose tap lies in the image
 * are a range (odl_out_range, once per call), accumulated in chunks of I8_DW_CHUNK */
static void i8_dw_rows(const odl_i8_dwconv_args_t *p) {
  /* the geometry in locals: the accumulator stores could alias the argument struct's fields */
  const int h = p->h, w = p->w, kh = p->kh, kw = p->kw, sh = p->sh, sw = p->sw, pt = p->pt, ho = p->ho, wo = p->wo;
  const int zp_in = p->zp_in, zp = p->zp, qlo = p->lo, qhi = p->hi;
  int lo, hi, ra[kw], rb[kw];   /* per tap column, the outputs whose tap lies in the image */
  int32_t acc[I8_DW_CHUNK];
  for (int t = 0; t < kw; t++) odl_out_range(t, w, sw, p->pl, wo, &ra[t], &rb[t]);
  odl_split(p->c * ho, &lo, &hi);
  for (int r = lo; r < hi; r++) {
    int c = r / ho, oy = r % ho;
    const int8_t *x = p->x + (size_t)c * h * w - p->pl, *wt = p->wt + (size_t)c * kh * kw;
    int32_t bias = p->bias[c];
    float mult = p->mult[c];
    for (int o0 = 0; o0 < wo; o0 += I8_DW_CHUNK) {
      int n = wo - o0 < I8_DW_CHUNK ? wo - o0 : I8_DW_CHUNK;
      for (int o = 0; o < n; o++) acc[o] = bias;
      for (int i = 0; i < kh; i++) {
        int iy = oy * sh - pt + i;
        if (iy < 0 || iy >= h) continue;
        for (int t = 0; t < kw; t++) {
          int a = ra[t] < o0 ? o0 : ra[t], b = rb[t] > o0 + n ? o0 + n : rb[t];
          if (a < b) i8_dw_tap(acc + a - o0, x + iy * w + a * sw + t, b - a, sw, zp_in, wt[i * kw + t]);
        }
      }
      int8_t *y = p->y + (size_t)r * wo + o0;
      for (int o = 0; o < n; o++) y[o] = i8_requant(acc[o], mult, zp, qlo, qhi);
    }
  }
}

/* Stride 1: a block of output rows of one channel from a copy of its input rows padded with the zero point (a padded
 * tap then adds zp_in * w, taken out of the start value with the whole kernel's sum), wp = wo + kw - 1 codes wide.
 * At that width every tap is one offset, i * wp + t, for all outputs of the block: they are computed 4 at a time (one
 * word of codes, as the gemm), branch free, wp - wo of each row's positions wasted (DS-CNN's 25 x 5 maps: 7 positions
 * a row for 5 outputs). Measured on DS-CNN (QEMU instruction clock, 8 harts, per depthwise layer): the row kernel
 * above about 1.1 M instructions (per row and per tap, ranges for rows of 5 outputs), these blocks about 0.32 M. */
#define I8_DW_IN 288    /* bytes of padded input rows of a block (the hart's 2 KiB stack; DS-CNN's plane: 27 x 7) */
#define I8_DW_OUT 256   /* bytes of a block's outputs at the padded width (DS-CNN's: 25 x 7) */

/* xp [nr, wp] = input rows iy0 .. iy0 + nr - 1 of plane x, columns -pl .. wp - pl - 1, the zero point outside the
 * image; then kw + 3 codes of slack that the last positions' taps read (for results that are thrown away) */
static void i8_dw_pad(int8_t *xp, const int8_t *x, int h, int w, int iy0, int nr, int wp, int pl, int kw, int8_t zp) {
  int a = pl < wp ? pl : wp, b = pl + w < wp ? pl + w : wp;   /* the image's columns: [a, b) */
  i8_fill(xp, zp, nr * wp + kw + 3);   /* the zero point everywhere (one pass of words), then the image's rows */
  for (int r = 0; r < nr; r++) {
    int iy = iy0 + r;
    if (iy >= 0 && iy < h) i8_copy(xp + r * wp + a, x + iy * w - pl + a, b - a);
  }
}

/* yp[j .. j + 3] for j < n (n rounded up to 4): the taps of [kh, kw] (constants once inlined for 3 x 3, so the weights
 * stay in registers) at offsets i * wp + t of xp, in 4 int32 lanes from acc0, requantized in 4 lanes */
static inline __attribute__((always_inline)) void i8_dw_block(int8_t *yp, const int8_t *xp, const int8_t *wt, int n,
                                                              int wp, const int kh, const int kw, int32_t acc0,
                                                              float mult, int zp, int lo, int hi) {
  int32_t wv[kh * kw];   /* local copies: the stores to yp could alias wt */
  for (int k = 0; k < kh * kw; k++) wv[k] = wt[k];
  for (int j = 0; j < n; j += 4) {
    i32x4_t acc = (i32x4_t){0, 0, 0, 0} + acc0;
    for (int i = 0; i < kh; i++)
      for (int t = 0; t < kw; t++)
        acc += __builtin_convertvector(*(const i8x4_u *)(xp + j + i * wp + t), i32x4_t) * wv[i * kw + t];
    *(i8x4_u *)(yp + j) = i8_requant4(acc, mult, zp, lo, hi);
  }
}

/* output rows [oy0, oy0 + ob) of channel c (stride 1) */
static void i8_dw_plane(const odl_i8_dwconv_args_t *p, int c, int oy0, int ob) {
  int8_t xp[I8_DW_IN], yp[I8_DW_OUT];
  const int kh = p->kh, kw = p->kw, wo = p->wo, wp = wo + kw - 1, n = ob * wp;
  const int8_t *wt = p->wt + (size_t)c * kh * kw;
  int32_t sum = 0;
  for (int k = 0; k < kh * kw; k++) sum += wt[k];
  i8_dw_pad(xp, p->x + (size_t)c * p->h * p->w, p->h, p->w, oy0 - p->pt, ob + kh - 1, wp, p->pl, kw,
            (int8_t)p->zp_in);
  int32_t acc0 = p->bias[c] - p->zp_in * sum;
  if (kh == 3 && kw == 3)
    i8_dw_block(yp, xp, wt, n, wp, 3, 3, acc0, p->mult[c], p->zp, p->lo, p->hi);
  else
    i8_dw_block(yp, xp, wt, n, wp, kh, kw, acc0, p->mult[c], p->zp, p->lo, p->hi);
  int8_t *y = p->y + ((size_t)c * p->ho + oy0) * wo;
  for (int oy = 0; oy < ob; oy++, y += wo) i8_copy(y, yp + oy * wp, wo);
}

/* stride 1 with a block of at least one row within the buffers: units of (channel, block of rows) over the cores,
 * the blocks as large as the buffers allow (a whole plane of DS-CNN); otherwise the row kernel */
void odl_i8_dwconv(void *args) {
  const odl_i8_dwconv_args_t *p = (const odl_i8_dwconv_args_t *)args;
  int wp = p->wo + p->kw - 1, rows = 0, lo, hi;
  if (p->sh == 1 && p->sw == 1) {
    int ri = (I8_DW_IN - p->kw - 3) / wp - (p->kh - 1), ro = (I8_DW_OUT - 3) / wp;
    rows = ri < ro ? ri : ro;
  }
  if (rows < 1 || p->ho < 1) {
    i8_dw_rows(p);
    return;
  }
  int nb = (p->ho + rows - 1) / rows;   /* blocks per channel, of equal rows but the last */
  rows = (p->ho + nb - 1) / nb;
  odl_split(p->c * nb, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int c = u / nb, oy0 = (u % nb) * rows, ob = p->ho - oy0 < rows ? p->ho - oy0 : rows;
    if (ob > 0) i8_dw_plane(p, c, oy0, ob);
  }
}

void odl_i8_add(void *args) {
  const odl_i8_add_args_t *p = (const odl_i8_add_args_t *)args;
  int lo, hi;
  odl_split(p->n, &lo, &hi);
  int i = lo;
#ifdef I8_LANES4
  /* 4 lanes: each product kept apart from the add by a max with -inf (the identity on these finite values, which the
   * compiler may not drop without no-NaNs math), as ODL_ROUNDED keeps the scalar ones */
  const float ninf = -__builtin_inff();
  const f32x4_t nv = {ninf, ninf, ninf, ninf}, lv = i8_bound4(p->lo, p->zp), hv = i8_bound4(p->hi, p->zp);
  for (; i + 4 <= hi; i += 4) {
    f32x4_t a = __builtin_convertvector(__builtin_convertvector(*(const i8x4_u *)(p->a + i), i32x4_t) - p->za,
                                        f32x4_t) * p->sa;
    f32x4_t b = __builtin_convertvector(__builtin_convertvector(*(const i8x4_u *)(p->b + i), i32x4_t) - p->zb,
                                        f32x4_t) * p->sb;
    f32x4_t v = (__builtin_elementwise_max(a, nv) + __builtin_elementwise_max(b, nv)) * p->inv;
    *(i8x4_u *)(p->y + i) = i8_code4(v, lv, hv, p->zp);
  }
#endif
  for (; i < hi; i++) {
    float a = (float)(p->a[i] - p->za) * p->sa, b = (float)(p->b[i] - p->zb) * p->sb;
    ODL_ROUNDED(a);
    ODL_ROUNDED(b);
    float v = (a + b) * p->inv;
    ODL_ROUNDED(v);
    p->y[i] = i8_code(v, p->zp, p->lo, p->hi);
  }
}

/* the taps of output (oy, ox) inside the image: rows [*y0, *y1), columns [*x0, *x1) */
static inline void i8_window(int oy, int ox, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int *y0,
                             int *y1, int *x0, int *x1) {
  int ty = oy * sh - pt, tx = ox * sw - pl;
  *y0 = ty < 0 ? 0 : ty;
  *x0 = tx < 0 ? 0 : tx;
  *y1 = ty + kh > h ? h : ty + kh;
  *x1 = tx + kw > w ? w : tx + kw;
}

/* output rows (c, oy) split over the cores */
void odl_i8_maxpool(void *args) {
  const odl_i8_maxpool_args_t *p = (const odl_i8_maxpool_args_t *)args;
  int lo, hi;
  odl_split(p->c * p->ho, &lo, &hi);
  for (int r = lo; r < hi; r++) {
    int c = r / p->ho, oy = r % p->ho, y0, y1, x0, x1;
    const int8_t *x = p->x + (size_t)c * p->h * p->w;
    int8_t *y = p->y + (size_t)r * p->wo;
    for (int ox = 0; ox < p->wo; ox++) {
      i8_window(oy, ox, p->h, p->w, p->kh, p->kw, p->sh, p->sw, p->pt, p->pl, &y0, &y1, &x0, &x1);
      int m = -128;
      for (int iy = y0; iy < y1; iy++)
        for (int ix = x0; ix < x1; ix++) m = x[iy * p->w + ix] > m ? x[iy * p->w + ix] : m;
      y[ox] = (int8_t)m;
    }
  }
}

void odl_i8_avgpool(void *args) {
  const odl_i8_avgpool_args_t *p = (const odl_i8_avgpool_args_t *)args;
  int lo, hi, plane = p->ho * p->wo;
  odl_split(p->c * plane, &lo, &hi);
  for (int o = lo; o < hi; o++) {
    int c = o / plane, oy = (o % plane) / p->wo, ox = o % p->wo, y0, y1, x0, x1;
    i8_window(oy, ox, p->h, p->w, p->kh, p->kw, p->sh, p->sw, p->pt, p->pl, &y0, &y1, &x0, &x1);
    const int8_t *x = p->x + (size_t)c * p->h * p->w;
    int32_t acc = 0;
    for (int iy = y0; iy < y1; iy++)
      for (int ix = x0; ix < x1; ix++) acc += x[iy * p->w + ix] - p->zp_in;
    int cnt = (y1 - y0) * (x1 - x0);
    if (p->count_include_pad) {   /* the window clipped to the padded extent, as torch counts it */
      int ty = oy * p->sh - p->pt, tx = ox * p->sw - p->pl;
      int ye = ty + p->kh > p->h + p->pt ? p->h + p->pt : ty + p->kh;
      int xe = tx + p->kw > p->w + p->pl ? p->w + p->pl : tx + p->kw;
      cnt = (ye - ty) * (xe - tx);
    }
    float m = p->mult / (float)cnt;
    p->y[o] = i8_requant(acc, m, p->zp, -128, 127);
  }
}
