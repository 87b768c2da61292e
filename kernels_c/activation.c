/* Smooth and piecewise activations, forward and backward, one parametrised kernel pair (op code ODL_ACT_*):
 * Sigmoid, Tanh, LeakyReLU(alpha = negative_slope), ELU(alpha), Hardswish, Hardsigmoid, SiLU, GELU (erf form and
 * tanh form). Formulas and branch boundaries follow PyTorch's CPU kernels (aten/src/ATen/native/cpu/
 * Activation.cpp, checked at the branch points), e.g. Hardswish' = 0 for x <= -3, x/3 + 1/2 for -3 < x < 3, 1 from 3.
 *
 * Every element is computed in FP32 from the stored value and rounded once to odl_t (PyTorch's CPU FP16 kernels
 * also compute in FP32). The transcendentals below need no libc. Work splits over cores in balanced contiguous
 * chunks (odl_split); the switch on the op code sits outside the loops. Cost: scalar FP32 per element (~10-40
 * instructions with an exp), which is small beside the matmuls of the layers around an activation.
 *
 * The backward reads one saved tensor `s`: the forward OUTPUT for Sigmoid and Tanh (dy*y*(1-y), dy*(1-y^2)), the
 * forward INPUT for the others (odl_act_bwd_reads_output tells which; the lowering keeps that tensor alive). */
#include "odl_kernels.h"
#include "odl_simd.h"

typedef union { float f; uint32_t u; } odl_abits_t;

/* expm1(x): Taylor to x^9 for |x| < ln2/2 (truncation < 3e-10 relative), exp(x) - 1 elsewhere (no cancellation:
 * |exp(x) - 1| >= 0.29 there). */
float odl_expm1f(float x) {
  if (x > -0.34657359f && x < 0.34657359f) {
    float q = 1.0f / 362880.0f;
    q = q * x + 1.0f / 40320.0f;
    q = q * x + 1.0f / 5040.0f;
    q = q * x + 1.0f / 720.0f;
    q = q * x + 1.0f / 120.0f;
    q = q * x + 1.0f / 24.0f;
    q = q * x + 1.0f / 6.0f;
    q = q * x + 0.5f;
    return x + x * x * q;
  }
  return odl_expf(x) - 1.0f;
}

/* tanh(x) = sign(x) * e / (e + 2), e = expm1(2|x|): relative error a few ulp everywhere (no cancellation near 0);
 * |x| > 9: +-1 (tanh(9) rounds to 1 in FP32). */
float odl_tanhf(float x) {
  if (x != x) return x;
  float a = x < 0.0f ? -x : x;
  float r;
  if (a > 9.0f) {
    r = 1.0f;
  } else {
    float e = odl_expm1f(2.0f * a);
    r = e / (e + 2.0f);
  }
  return x < 0.0f ? -r : r;
}

/* erfc(x) for x >= 0 with small RELATIVE error (the tail of GELU's negative side needs it):
 * erfc(x) = t * exp(-x^2 + P(t)), t = 1 / (1 + x/2), P of degree 9 least-squares fitted (weighted towards
 * minimax) to log(erfc(x)/t) + x^2 on [0, 10] in float64 for odl: fit error 8e-8 relative; x > 10: 0. */
static float erfc_pos(float x) {
  if (x > 10.0f) return 0.0f;
  float t = 1.0f / (1.0f + 0.5f * x);
  float q = 0.1421959549188614f;
  q = q * t - 0.6660646796226501f;
  q = q * t + 1.122383952140808f;
  q = q * t - 0.6511942148208618f;
  q = q * t - 0.11686204373836517f;
  q = q * t + 0.02025328204035759f;
  q = q * t + 0.028330927714705467f;
  q = q * t + 0.3879067301750183f;
  q = q * t + 0.9984915256500244f;
  q = q * t - 1.2654414176940918f;
  return t * odl_expf(q - x * x);
}

float odl_erfcf(float x) {
  if (x != x) return x;
  return x >= 0.0f ? erfc_pos(x) : 2.0f - erfc_pos(-x);
}

/* erf(x): Maclaurin series to x^23 for |x| < 0.75 (alternating, terms < 1e-10 at the edge; no cancellation of
 * 1 - erfc near 0), else sign * (1 - erfc(|x|)). */
float odl_erff(float x) {
  if (x != x) return x;
  float a = x < 0.0f ? -x : x;
  if (a < 0.75f) {
    float z = x * x;
    /* 2/sqrt(pi) * sum_n (-1)^n z^n / (n! (2n+1)) */
    float q = -1.0f / (39916800.0f * 23.0f);
    q = q * z + 1.0f / (3628800.0f * 21.0f);
    q = q * z - 1.0f / (362880.0f * 19.0f);
    q = q * z + 1.0f / (40320.0f * 17.0f);
    q = q * z - 1.0f / (5040.0f * 15.0f);
    q = q * z + 1.0f / (720.0f * 13.0f);
    q = q * z - 1.0f / (120.0f * 11.0f);
    q = q * z + 1.0f / (24.0f * 9.0f);
    q = q * z - 1.0f / (6.0f * 7.0f);
    q = q * z + 1.0f / (2.0f * 5.0f);
    q = q * z - 1.0f / 3.0f;
    q = q * z + 1.0f;
    return 1.1283791670955126f * x * q;
  }
  float r = 1.0f - erfc_pos(a);
  return x < 0.0f ? -r : r;
}

ODL_INLINE float sigm(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + odl_expf(-x));
  float e = odl_expf(x);
  return e / (1.0f + e);
}

/* Phi(x) = P(N(0,1) <= x) = erfc(-x/sqrt2)/2, accurate in relative terms on both sides */
ODL_INLINE float phi_cdf(float x) {
  return x < 0.0f ? 0.5f * erfc_pos(-x * 0.70710678118654752f) : 1.0f - 0.5f * erfc_pos(x * 0.70710678118654752f);
}

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f

ODL_INLINE float act_fwd1(int op, float x, float alpha) {
  switch (op) {
    case ODL_ACT_SIGMOID: return sigm(x);
    case ODL_ACT_TANH: return odl_tanhf(x);
    case ODL_ACT_LEAKY_RELU: return x > 0.0f ? x : x * alpha;
    case ODL_ACT_ELU: return x > 0.0f ? x : alpha * odl_expm1f(x);
    case ODL_ACT_HARDSWISH: return x <= -3.0f ? 0.0f : (x >= 3.0f ? x : x * (x + 3.0f) / 6.0f);
    case ODL_ACT_HARDSIGMOID: return x <= -3.0f ? 0.0f : (x >= 3.0f ? 1.0f : x / 6.0f + 0.5f);
    case ODL_ACT_SILU: return x * sigm(x);
    case ODL_ACT_GELU: return x * phi_cdf(x);
    /* 0.5 x (1 + tanh(u)) = x * sigmoid(2u): no cancellation for negative x */
    case ODL_ACT_GELU_TANH: return x * sigm(2.0f * GELU_K0 * (x + GELU_K1 * x * x * x));
    default: return 0.0f;
  }
}

/* d(act)/dx at saved value s (the output for sigmoid/tanh, the input otherwise), times dy */
ODL_INLINE float act_bwd1(int op, float s, float dy, float alpha) {
  switch (op) {
    case ODL_ACT_SIGMOID: return dy * (1.0f - s) * s;
    case ODL_ACT_TANH: return dy * (1.0f - s * s);
    case ODL_ACT_LEAKY_RELU: return s > 0.0f ? dy : dy * alpha;
    case ODL_ACT_ELU: return s > 0.0f ? dy : dy * alpha * odl_expf(s);
    case ODL_ACT_HARDSWISH: return s <= -3.0f ? 0.0f : (s < 3.0f ? dy * (s / 3.0f + 0.5f) : dy);
    case ODL_ACT_HARDSIGMOID: return (s > -3.0f && s < 3.0f) ? dy * (1.0f / 6.0f) : 0.0f;
    case ODL_ACT_SILU: {
      float g = sigm(s);
      return dy * g * (1.0f + s * (1.0f - g));
    }
    case ODL_ACT_GELU: /* Phi(x) + x * phi(x) */
      return dy * (phi_cdf(s) + s * 0.3989422804014327f * odl_expf(-0.5f * s * s));
    case ODL_ACT_GELU_TANH: {
      float u2 = 2.0f * GELU_K0 * (s + GELU_K1 * s * s * s);
      float g = sigm(u2);
      return dy * (g + s * g * (1.0f - g) * 2.0f * GELU_K0 * (1.0f + 3.0f * GELU_K1 * s * s));
    }
    default: return 0.0f;
  }
}

int odl_act_bwd_reads_output(int op) { return op == ODL_ACT_SIGMOID || op == ODL_ACT_TANH; }

/* Every activation, once: each kernel expands X(op) into a switch case whose loop has op as a constant, so the
 * per-element function inlines to that activation alone. */
#define ODL_ACT_OPS(X) X(ODL_ACT_SIGMOID) X(ODL_ACT_TANH) X(ODL_ACT_LEAKY_RELU) X(ODL_ACT_ELU) X(ODL_ACT_HARDSWISH) \
  X(ODL_ACT_HARDSIGMOID) X(ODL_ACT_SILU) X(ODL_ACT_GELU) X(ODL_ACT_GELU_TANH)

void odl_act_fwd(void *args) {
  const odl_act_args_t *p = (const odl_act_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *x = p->x;
  odl_t *y = p->y;
  float alpha = p->alpha;
#define ODL_ACT_CASE(OP)                                                          \
  case OP:                                                                        \
    for (int i = lo; i < hi; i++) y[i] = (odl_t)act_fwd1(OP, (float)x[i], alpha); \
    break;
  switch (p->op) {
    ODL_ACT_OPS(ODL_ACT_CASE)
    default: break;
  }
#undef ODL_ACT_CASE
}

void odl_act_bwd(void *args) {
  const odl_act_bwd_args_t *p = (const odl_act_bwd_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  const odl_t *s = p->s, *dy = p->dy;
  odl_t *dx = p->dx;
  float alpha = p->alpha;
  int acc = p->accumulate;
#define ODL_ACT_CASE(OP)                                                          \
  case OP:                                                                        \
    for (int i = lo; i < hi; i++) {                                               \
      float g = act_bwd1(OP, (float)s[i], (float)dy[i], alpha);                  \
      dx[i] = (odl_t)(acc ? (float)dx[i] + g : g);                                \
    }                                                                             \
    break;
  switch (p->op) {
    ODL_ACT_OPS(ODL_ACT_CASE)
    default: break;
  }
#undef ODL_ACT_CASE
}
