/* FP8 storage (--store fp8, docs/formats.md): tensors kept for the backward pass as 8-bit floats with a per-tensor
 * scale. One source for both formats (the `fmt` argument) and both compute precisions (odl_t):
 *   ODL_FP8_E4M3 (0): E4M3 "fn": 4 exponent bits (bias 7), 3 mantissa bits, no infinity, NaN = S.1111.111, max 448;
 *   ODL_FP8_E5M2 (1): E5M2: 5 exponent bits (bias 15), 2 mantissa bits, IEEE-like (inf, NaN), max 57344.
 * pack:   q = fp8(clamp(x / scale, -max, max)), round to nearest even, in integer arithmetic on the FP32 bits of
 *         x / scale (x widened to FP32; scale is a power of two, so the division is exact). NaN stays NaN (S.1111111),
 *         as torch's .to(torch.float8_e4m3fn / float8_e5m2) of the same clamped FP32 value: bitwise equal.
 *         Each core also folds the largest |x| of its share into its own amax slot (no two cores write one word;
 *         the slots' maximum is the tensor's amax, the delayed-scaling history's next entry).
 * unpack: x = (odl_t)(fp8 value * scale), the product exact in FP32, rounded once to the compute type.
 * scale:  one core, at the start of a step: per tensor, push the amax the last step recorded (the largest of its
 *         slots) into its history, take scale = the smallest power of two with max(history) <= fmt max * scale
 *         (odl/common/precision.py fp8_scale is the same rule), and zero the amax slots for this step's packs.
 * State of a tensor (float): [scale, amax[ODL_FP8_AMAX_SLOTS] (one per core), history[hist]]
 * (ODL_FP8_STATE_HEAD + hist floats). */
#include "odl_kernels.h"

/* min_bits: FP32 bits of the smallest normal value; rebias: (127 - bias) << 23, FP32 exponent -> FP8 exponent;
 * top: the largest code of a finite normal value (the codes above are NaN / inf) */
typedef struct { int mbits, bias; uint32_t max_bits; uint8_t max_code; uint32_t min_bits, rebias; uint8_t top; }
  fp8_fmt_t;

static const fp8_fmt_t FMTS[2] = {
  {3, 7, 0x43E00000u, 0x7Eu, 121u << 23, 120u << 23, 0x7Eu},    /* E4M3: 448 = 1.75 * 2^8, normals from 2^-6 */
  {2, 15, 0x47600000u, 0x7Bu, 113u << 23, 112u << 23, 0x7Bu},   /* E5M2: 57344 = 1.75 * 2^15, normals from 2^-14 */
};

static inline uint32_t f_bits(float f) { union { float f; uint32_t u; } v = {f}; return v.u; }
static inline float bits_f(uint32_t u) { union { uint32_t u; float f; } v = {u}; return v.f; }

/* mant >> sh rounded to nearest, ties to even (sh >= 1) */
static inline uint32_t rne_shift(uint32_t mant, int sh) {
  if (sh > 25) return 0;              /* mant < 2^24: below half of the last place */
  uint32_t q = mant >> sh, rem = mant & ((1u << sh) - 1u), half = 1u << (sh - 1);
  return q + (rem > half || (rem == half && (q & 1u)));
}

/* FP32 value (already divided by the scale) -> FP8 code of format f, saturating to +-max */
static inline uint8_t fp8_encode(float v, const fp8_fmt_t *f) {
  uint32_t u = f_bits(v), a = u & 0x7FFFFFFFu;
  uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
  if (a > 0x7F800000u) return sign | 0x7Fu;                 /* NaN */
  if (a >= f->max_bits) return sign | f->max_code;           /* +-max and beyond (inf): saturate */
  if ((a >> 23) == 0) return sign;                           /* FP32 zero / subnormal: far below FP8's range */
  int e = (int)(a >> 23) - 127, emin = 1 - f->bias;
  int ee = e < emin ? emin : e;                              /* subnormal: the last place is that of emin */
  uint32_t n = rne_shift((a & 0x7FFFFFu) | 0x800000u, 23 - f->mbits + (ee - e));
  return sign | (uint8_t)((uint32_t)(ee + f->bias - 1) * (1u << f->mbits) + n);   /* a carry moves the exponent */
}

/* FP8 code -> its FP32 value */
static inline float fp8_decode(uint8_t c, int fmt) {
  const fp8_fmt_t *f = &FMTS[fmt];
  int mb = f->mbits;
  uint32_t ex = (c & 0x7Fu) >> mb, m = c & ((1u << mb) - 1u), sign = (uint32_t)(c & 0x80u) << 24;
  uint32_t emax = (1u << (7 - mb)) - 1u;
  if (ex == emax && (fmt == ODL_FP8_E4M3 ? m == (1u << mb) - 1u : 1)) {
    return bits_f(sign | (fmt == ODL_FP8_E5M2 && m == 0 ? 0x7F800000u : 0x7FC00000u));
  }
  if (ex == 0) {                                             /* m * 2^(1 - bias - mbits), exact in FP32 */
    float v = (float)m * bits_f((uint32_t)(127 + 1 - f->bias - mb) << 23);
    return bits_f(sign | f_bits(v));
  }
  return bits_f(sign | ((ex - f->bias + 127u) << 23) | (m << (23 - mb)));
}

void odl_fp8_pack(void *args) {
  const odl_fp8_pack_args_t *p = (const odl_fp8_pack_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const fp8_fmt_t *f = &FMTS[p->fmt];
  float inv = 1.0f / p->scale[0];                            /* a power of two: exact */
  uint32_t amax = 0, lo_bits = f->min_bits, hi_bits = f->max_bits, rebias = f->rebias;
  int sh = 23 - f->mbits;
  uint32_t half = (1u << (sh - 1)) - 1u;
  for (int i = lo; i < hi; i++) {
    float v = (float)p->x[i];
    uint32_t a = f_bits(v) & 0x7FFFFFFFu;                    /* |x| as bits: ordered as the values (NaN on top) */
    if (a > amax) amax = a;
    uint32_t u = f_bits(v * inv), b = u & 0x7FFFFFFFu;
    if (b - lo_bits < hi_bits - lo_bits) {                   /* a normal FP8 value: rebias, round to nearest even */
      uint32_t r = b - rebias;                               /* (a carry moves the exponent; never past max) */
      p->q[i] = (uint8_t)(((u >> 24) & 0x80u) | ((r + half + ((r >> sh) & 1u)) >> sh));
    } else {
      p->q[i] = fp8_encode(bits_f(u), f);                    /* subnormal, zero, +-max and beyond, NaN */
    }
  }
  if (p->amax && hi > lo) {                                  /* this core's slot: max with the earlier tiles' */
    float *slot = p->amax + odl_core_id();
    if (amax > f_bits(*slot)) *slot = bits_f(amax);
  }
}

void odl_fp8_unpack(void *args) {
  const odl_fp8_unpack_args_t *p = (const odl_fp8_unpack_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  float s = p->scale[0];
  const fp8_fmt_t *f = &FMTS[p->fmt];
  uint32_t first = 1u << f->mbits, top = f->top, rebias = f->rebias;
  int sh = 23 - f->mbits;
  for (int i = lo; i < hi; i++) {
    uint32_t c = p->q[i], m = c & 0x7Fu;
    float v = m - first <= top - first                     /* a normal value: its bits, rebiased */
      ? bits_f(((c & 0x80u) << 24) | ((m << sh) + rebias))
      : fp8_decode((uint8_t)c, p->fmt);                    /* subnormal, zero, inf, NaN */
    p->x[i] = (odl_t)(v * s);
  }
}

/* the smallest power of two s (2^-64 .. 2^64) with m <= fmt max * s; 1 when no finite positive amax was seen */
static float fp8_scale_of(float m, const fp8_fmt_t *f) {
  uint32_t a = f_bits(m);
  if (a == 0 || a >= 0x7F800000u) return 1.0f;
  int k = (int)(a >> 23) - (int)(f->max_bits >> 23);
  if ((a >> 23) != 0 && (a & 0x7FFFFFu) > (f->max_bits & 0x7FFFFFu)) k++;
  if (k < -64) k = -64;
  if (k > 64) k = 64;
  return bits_f((uint32_t)(127 + k) << 23);
}

void odl_fp8_scale(void *args) {
  const odl_fp8_scale_args_t *p = (const odl_fp8_scale_args_t *)args;
  if (odl_core_id() != 0) return;
  const fp8_fmt_t *f = &FMTS[p->fmt];
  int stride = ODL_FP8_STATE_HEAD + p->hist;
  for (int t = 0; t < p->count; t++) {
    float *s = p->state + t * stride, *h = s + ODL_FP8_STATE_HEAD, m = 0.0f;
    uint32_t last = 0;
    for (int c = 0; c < ODL_FP8_AMAX_SLOTS; c++) {
      uint32_t b = f_bits(s[1 + c]) & 0x7FFFFFFFu;            /* |amax| bits: NaN above inf above the rest */
      if (b > last) last = b;
      s[1 + c] = 0.0f;
    }
    for (int j = p->hist - 1; j > 0; j--) h[j] = h[j - 1];
    h[0] = bits_f(last);
    for (int j = 0; j < p->hist; j++) {
      uint32_t b = f_bits(h[j]) & 0x7FFFFFFFu;              /* the largest finite entry (inf / NaN: skipped) */
      if (b < 0x7F800000u && b > f_bits(m)) m = bits_f(b);
    }
    s[0] = fp8_scale_of(m, f);
  }
}
