/* int8 inference kernels of `odl compile --deploy int8` (odl_int8.h: the codes, the requantization, each kernel's
 * contract). int8 x int8 products accumulate exactly in int32, 4 lanes per 32-bit word (odl_i8x4_t); every
 * requantization rounds as torch's fake quantization does (odl_round.h). One source for the target and the host tests
 * (tests/kernels/test_kernels_native_int8.py: bit exact against an integer numpy reference). */
#include "odl_kernels.h"
#include "odl_int8.h"
#include "odl_round.h"

typedef int8_t i8x4_u __attribute__((vector_size(4), aligned(1)));   /* an unaligned 4-lane load */
typedef int16_t i16x4_t __attribute__((vector_size(8)));
typedef int32_t i32x4_t __attribute__((vector_size(16)));

/* clamp(rne(v) + zp, lo, hi); v is already rounded to FP32 on its own (ODL_ROUNDED) */
static inline int8_t i8_code(float v, int zp, int lo, int hi) {
  v = v < -1024.0f ? -1024.0f : (v > 1024.0f ? 1024.0f : v); /* beyond any code: (int) stays defined */
  int q = (int)odl_rne(v) + zp;
  return (int8_t)(q < lo ? lo : (q > hi ? hi : q));
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

/* rows split over the cores: output pixel j's patch is row j */
void odl_i8_im2row(void *args) {
  const odl_i8_im2row_args_t *p = (const odl_i8_im2row_args_t *)args;
  int lo, hi, k = p->c * p->kh * p->kw;
  odl_split(p->ho * p->wo, &lo, &hi);
  for (int j = lo; j < hi; j++) {
    int oy = j / p->wo, ox = j % p->wo;
    int8_t *row = p->rows + (size_t)j * k;
    for (int c = 0; c < p->c; c++) {
      const int8_t *x = p->x + (size_t)c * p->h * p->w;
      for (int i = 0; i < p->kh; i++) {
        int iy = oy * p->sh - p->pt + i;
        for (int t = 0; t < p->kw; t++) {
          int ix = ox * p->sw - p->pl + t;
          *row++ = (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w) ? x[iy * p->w + ix] : (int8_t)p->pad;
        }
      }
    }
  }
}

/* outputs (i, j) split over the cores in row-major order: balanced for convs (many j) and linears (n = 1) alike */
void odl_i8_gemm(void *args) {
  const odl_i8_gemm_args_t *p = (const odl_i8_gemm_args_t *)args;
  int lo, hi;
  odl_split(p->m * p->n, &lo, &hi);
  int i = lo / p->n, j = lo % p->n;   /* one division per core; (i, j) advance with o */
  for (int o = lo; o < hi; o++) {
    int32_t acc = i8_dot(p->wt + (size_t)i * p->k, p->a + (size_t)j * p->k, p->k) + p->bias[i];
    p->y[o] = i8_requant(acc, p->mult[i], p->zp, p->lo, p->hi);
    if (++j == p->n) {
      j = 0;
      i++;
    }
  }
}

void odl_i8_dwconv(void *args) {
  const odl_i8_dwconv_args_t *p = (const odl_i8_dwconv_args_t *)args;
  int lo, hi, plane = p->ho * p->wo;
  odl_split(p->c * plane, &lo, &hi);
  for (int o = lo; o < hi; o++) {
    int c = o / plane, oy = (o % plane) / p->wo, ox = o % p->wo;
    const int8_t *x = p->x + (size_t)c * p->h * p->w, *wt = p->wt + (size_t)c * p->kh * p->kw;
    int32_t acc = p->bias[c];
    for (int i = 0; i < p->kh; i++) {
      int iy = oy * p->sh - p->pt + i;
      if (iy < 0 || iy >= p->h) continue;
      for (int t = 0; t < p->kw; t++) {
        int ix = ox * p->sw - p->pl + t;
        if (ix >= 0 && ix < p->w) acc += (int32_t)(x[iy * p->w + ix] - p->zp_in) * wt[i * p->kw + t];
      }
    }
    p->y[o] = i8_requant(acc, p->mult[c], p->zp, p->lo, p->hi);
  }
}

void odl_i8_add(void *args) {
  const odl_i8_add_args_t *p = (const odl_i8_add_args_t *)args;
  int lo, hi;
  odl_split(p->n, &lo, &hi);
  for (int i = lo; i < hi; i++) {
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

void odl_i8_maxpool(void *args) {
  const odl_i8_maxpool_args_t *p = (const odl_i8_maxpool_args_t *)args;
  int lo, hi, plane = p->ho * p->wo;
  odl_split(p->c * plane, &lo, &hi);
  for (int o = lo; o < hi; o++) {
    int c = o / plane, y0, y1, x0, x1;
    i8_window((o % plane) / p->wo, o % p->wo, p->h, p->w, p->kh, p->kw, p->sh, p->sw, p->pt, p->pl, &y0, &y1, &x0,
              &x1);
    const int8_t *x = p->x + (size_t)c * p->h * p->w;
    int m = -128;
    for (int iy = y0; iy < y1; iy++)
      for (int ix = x0; ix < x1; ix++) m = x[iy * p->w + ix] > m ? x[iy * p->w + ix] : m;
    p->y[o] = (int8_t)m;
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
