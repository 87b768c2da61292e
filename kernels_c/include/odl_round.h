/* FP32 rounding to an integer code as PyTorch's fake quantization rounds (std::nearbyint: half to even), shared by
 * the fake-quantization kernels (fakequant.c) and the int8 inference kernels (int8.c).
 * The target builds with -ffp-contract=fast, which fuses a product into the add that follows it (across statements,
 * ignoring `#pragma clang fp contract`) and changes codes: a product that must be rounded on its own goes through
 * ODL_ROUNDED first. */
#ifndef ODL_ROUND_H
#define ODL_ROUND_H

/* v as rounded to FP32 here: an empty asm the value must pass through, so the product that made it cannot be
 * fused into the add that follows */
#if defined(__riscv)
#define ODL_ROUNDED(v) __asm__("" : "+f"(v))
#elif defined(__x86_64__) || defined(__i386__)
#define ODL_ROUNDED(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define ODL_ROUNDED(v) __asm__("" : "+w"(v))
#else
#define ODL_ROUNDED(v) do { volatile float odl_v_ = (v); (v) = odl_v_; } while (0)
#endif

/* Round half to even (std::nearbyint in the default rounding mode) without libm: adding and subtracting 1.5 * 2^23
 * leaves the integer nearest v, ties to even, for |v| < 2^22; larger magnitudes are clamped away anyway (they lie
 * beyond any 8-bit code), so they pass unchanged. */
static inline float odl_rne(float v) {
  const float big = 12582912.0f; /* 0x1.8p23 */
  if (v < 4194304.0f && v > -4194304.0f) {
    float t = v + big; /* rounded to FP32 (no excess precision, no reassociation without -ffast-math) */
    return t - big;
  }
  return v;
}
#endif
