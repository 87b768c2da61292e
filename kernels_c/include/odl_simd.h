/* Tiny SIMD abstraction shared by all kernels: one source, two precisions.
 *   ODL_LANES == 2 (FP16): odl_vec_t = odl_v2_t, 2 x _Float16 in 32 bits (RVV at VL=2 on rv32, host SIMD elsewhere)
 *   ODL_LANES == 1 (FP32): odl_vec_t = odl_t, the scalar path.
 * Kernels loop with step ODL_LANES and finish leftovers with scalar code, so the same loop is the SIMD path in
 * FP16 and the scalar path in FP32. Loads/stores only need element alignment (they go through a 2-byte aligned
 * vector type, which clang lowers to vle16.v/vse16.v on RVV). */
#ifndef ODL_SIMD_H
#define ODL_SIMD_H
#include "odl_types.h"

#define ODL_INLINE static inline __attribute__((always_inline))

/* Long reductions (bias gradients, batch-norm and norm statistics and their backward sums, average pooling, sums
 * and means, loss sums) are blocked and compensated, so that a sum that cancels (a conv bias gradient before a
 * batch norm: ~0 in exact arithmetic) is no noisier than PyTorch's cascade sums: at most ODL_SUM_BLOCK elements
 * are added plainly in FP32 (FP16 values widened) into a fresh accumulator (the batch-norm kernels: twice as many),
 * and each block's sum goes into a compensated FP32 total (odl_ksum_t). The error is then ~ODL_SUM_BLOCK ulps of the block sums instead of
 * ~M ulps of the running total, for a few instructions per block. Each core reduces its own share (the split over
 * cores is unchanged) and partials are combined in a fixed order: results do not depend on timing. */
#define ODL_SUM_BLOCK 64

typedef struct { float s, c; } odl_ksum_t;   /* total s, and the rounding errors of forming it, c */
ODL_INLINE odl_ksum_t odl_ksum_zero(void) { odl_ksum_t k = {0.0f, 0.0f}; return k; }
/* s + c += x: the rounding error of s + x, exact in FP32 (Knuth's TwoSum, branch-free: 6 adds), is kept in c
 * (Neumaier's compensated sum) */
ODL_INLINE void odl_ksum_add(odl_ksum_t *k, float x) {
  float t = k->s + x, z = t - k->s;
  k->c += (k->s - (t - z)) + (x - z);
  k->s = t;
}
/* the total; a non-finite total stays non-finite (inf may come out as NaN) */
ODL_INLINE float odl_ksum_value(odl_ksum_t k) { return k.s + k.c; }

#if ODL_LANES == 2
typedef odl_v2_t odl_vec_t;
typedef odl_t odl_vec_u_t __attribute__((vector_size(2 * sizeof(odl_t)), aligned(sizeof(odl_t))));
typedef odl_v2_t odl_vmask_t; /* 0.0 / 1.0 per lane */
ODL_INLINE odl_vec_t odl_vload(const odl_t *p) { return *(const odl_vec_u_t *)p; }
ODL_INLINE void odl_vstore(odl_t *p, odl_vec_t v) { *(odl_vec_u_t *)p = v; }
ODL_INLINE odl_vec_t odl_vsplat(odl_t s) { return (odl_vec_t){s, s}; }
ODL_INLINE odl_vec_t odl_vzero(void) { return (odl_vec_t){0, 0}; }
/* acc + a*b, contracted into one fused multiply-add (-ffp-contract=fast): vfmacc.vv / vfmacc.vf */
ODL_INLINE odl_vec_t odl_vfma(odl_vec_t acc, odl_vec_t a, odl_vec_t b) { return acc + a * b; }
ODL_INLINE float odl_vhsum(odl_vec_t v) { return (float)v[0] + (float)v[1]; }
/* FP32 vector partner of odl_vec_t for blocked long reductions: acc (FP32 x lanes) += widen(v) */
typedef float odl_wvec_t __attribute__((vector_size(2 * sizeof(float))));
ODL_INLINE odl_wvec_t odl_wzero(void) { return (odl_wvec_t){0.0f, 0.0f}; }
ODL_INLINE odl_wvec_t odl_wsplat(float s) { return (odl_wvec_t){s, s}; }
ODL_INLINE odl_wvec_t odl_wadd(odl_wvec_t acc, odl_vec_t v) { return acc + __builtin_convertvector(v, odl_wvec_t); }
ODL_INLINE float odl_whsum(odl_wvec_t w) { return w[0] + w[1]; }
/* acc (FP32 x lanes) += widen(a) * widen(b): one widening FMA (vfwmacc.vv) in the e16 vtype */
ODL_INLINE odl_wvec_t odl_wfma(odl_wvec_t acc, odl_vec_t a, odl_vec_t b) {
  return acc + __builtin_convertvector(a, odl_wvec_t) * __builtin_convertvector(b, odl_wvec_t);
}
/* widen(a) * widen(b): one widening multiply (vfwmul.vf / .vv) */
ODL_INLINE odl_wvec_t odl_wmul(odl_vec_t a, odl_vec_t b) {
  return __builtin_convertvector(a, odl_wvec_t) * __builtin_convertvector(b, odl_wvec_t);
}
ODL_INLINE odl_wvec_t odl_widen(odl_vec_t v) { return __builtin_convertvector(v, odl_wvec_t); }
ODL_INLINE odl_vec_t odl_narrow(odl_wvec_t w) { return __builtin_convertvector(w, odl_vec_t); }
ODL_INLINE odl_vec_t odl_vmax0(odl_vec_t v) { return __builtin_elementwise_max(v, odl_vzero()); }
/* per-lane mask (1 where y > 0, else 0) as FP16 values: y * 65504 * 65504 saturates every positive FP16
 * (denormals included) to >= 1; clamping to [0, 1] keeps everything in e16 arithmetic (no int/float vtype
 * switches). odl_vand(v, m) = m ? v : 0. */
ODL_INLINE odl_vmask_t odl_vpos(odl_vec_t y) {
  odl_vec_t big = odl_vsplat((odl_t)65504.0f);
  odl_vec_t t = (y * big) * big;
  return (odl_vmask_t)__builtin_elementwise_max(__builtin_elementwise_min(t, odl_vsplat((odl_t)1.0f)), odl_vzero());
}
ODL_INLINE odl_vec_t odl_vand(odl_vec_t v, odl_vmask_t m) { return v * (odl_vec_t)m; }
#else
typedef odl_t odl_vec_t;
typedef int odl_vmask_t;
ODL_INLINE odl_vec_t odl_vload(const odl_t *p) { return *p; }
ODL_INLINE void odl_vstore(odl_t *p, odl_vec_t v) { *p = v; }
ODL_INLINE odl_vec_t odl_vsplat(odl_t s) { return s; }
ODL_INLINE odl_vec_t odl_vzero(void) { return (odl_t)0; }
ODL_INLINE odl_vec_t odl_vfma(odl_vec_t acc, odl_vec_t a, odl_vec_t b) { return acc + a * b; }
ODL_INLINE float odl_vhsum(odl_vec_t v) { return (float)v; }
typedef float odl_wvec_t;
ODL_INLINE odl_wvec_t odl_wzero(void) { return 0.0f; }
ODL_INLINE odl_wvec_t odl_wsplat(float s) { return s; }
ODL_INLINE odl_wvec_t odl_wadd(odl_wvec_t acc, odl_vec_t v) { return acc + v; }
ODL_INLINE float odl_whsum(odl_wvec_t w) { return w; }
ODL_INLINE odl_wvec_t odl_wfma(odl_wvec_t acc, odl_vec_t a, odl_vec_t b) { return acc + a * b; }
ODL_INLINE odl_wvec_t odl_wmul(odl_vec_t a, odl_vec_t b) { return a * b; }
ODL_INLINE odl_wvec_t odl_widen(odl_vec_t v) { return v; }
ODL_INLINE odl_vec_t odl_narrow(odl_wvec_t w) { return w; }
ODL_INLINE odl_vec_t odl_vmax0(odl_vec_t v) { return v > (odl_t)0 ? v : (odl_t)0; }
ODL_INLINE odl_vmask_t odl_vpos(odl_vec_t y) { return y > (odl_t)0; }
ODL_INLINE odl_vec_t odl_vand(odl_vec_t v, odl_vmask_t m) { return m ? v : (odl_t)0; }
#endif

/* Copies p[0] and p[stride] (elements) to d[0], d[1]: one strided vector load (vlse16.v, 2 lanes) and one store on
 * RVV, two element copies elsewhere. Raw bits: no arithmetic. */
#if ODL_LANES == 2 && defined(__riscv_vector)
#include <riscv_vector.h>
ODL_INLINE void odl_copy_pair_strided(odl_t *d, const odl_t *p, int stride) {
  __riscv_vse16_v_i16mf2((int16_t *)d, __riscv_vlse16_v_i16mf2((const int16_t *)p, (long)stride * 2, 2), 2);
}
#else
ODL_INLINE void odl_copy_pair_strided(odl_t *d, const odl_t *p, int stride) {
  d[0] = p[0];
  d[1] = p[stride];
}
#endif

ODL_INLINE int odl_min_i(int a, int b) { return a < b ? a : b; }
ODL_INLINE int odl_max_i(int a, int b) { return a > b ? a : b; }
#endif
