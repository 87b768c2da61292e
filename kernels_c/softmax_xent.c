/* Softmax cross-entropy (mean over the batch) and the FP32 math it needs, without libc.
 * The batch is small, so core 0 does all of it (no barrier needed); the other cores return at once. */
#include "odl_kernels.h"
#include "odl_simd.h"

typedef union { float f; uint32_t u; } odl_fbits_t;

/* exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n*ln2 in [-ln2/2, ln2/2] (Cody-Waite split of ln2),
 * exp(r) by its degree-7 Taylor polynomial (truncation < 6e-9 relative). Results below 2^-126 are scaled in
 * two steps so denormals come out right; x < -104 gives 0 and x > 88.7228 gives +inf. */
float odl_expf(float x) {
  if (x != x) return x;
  if (x > 88.72283935546875f) { odl_fbits_t inf = {.u = 0x7f800000u}; return inf.f; }
  if (x < -104.0f) return 0.0f;
  float fn = x * 1.44269504088896341f;
  int n = (int)(fn + (fn >= 0.0f ? 0.5f : -0.5f));
  float r = (x - (float)n * 0.693145751953125f) - (float)n * 1.42860682030941723212e-6f;
  float q = 1.0f / 5040.0f;
  q = q * r + 1.0f / 720.0f;
  q = q * r + 1.0f / 120.0f;
  q = q * r + 1.0f / 24.0f;
  q = q * r + 1.0f / 6.0f;
  q = q * r + 0.5f;
  q = q * r + 1.0f;
  q = q * r + 1.0f;
  odl_fbits_t s;
  if (n > 127) { q *= 2.0f; n--; }
  if (n >= -126) {
    s.u = (uint32_t)(n + 127) << 23;
    return q * s.f;
  }
  s.u = (uint32_t)(n + 126 + 127) << 23; /* 2^(n+126) is normal here (n >= -150) */
  return (q * s.f) * 1.17549435082228751e-38f; /* * 2^-126 */
}

/* log(x) = e*ln2 + log(m), m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172,
 * odd series to s^11 (truncation < 1e-9 relative). Denormals are normalised first. */
float odl_logf(float x) {
  odl_fbits_t b = {.f = x};
  if (x != x) return x;
  if (x <= 0.0f) {
    odl_fbits_t r = {.u = x == 0.0f ? 0xff800000u : 0x7fc00000u}; /* -inf, NaN */
    return r.f;
  }
  if (b.u >= 0x7f800000u) return x; /* +inf */
  int e = 0;
  if (b.u < 0x00800000u) { b.f *= 8388608.0f; e = -23; } /* denormal: * 2^23 */
  e += (int)(b.u >> 23) - 127;
  b.u = (b.u & 0x007fffffu) | 0x3f800000u; /* m in [1, 2) */
  if (b.f > 1.41421356237f) { b.f *= 0.5f; e++; }
  float f = b.f - 1.0f;
  float s = f / (2.0f + f), z = s * s;
  float q = 2.0f / 11.0f;
  q = q * z + 2.0f / 9.0f;
  q = q * z + 2.0f / 7.0f;
  q = q * z + 2.0f / 5.0f;
  q = q * z + 2.0f / 3.0f;
  float lm = f - s * (f - q * z); /* 2s + s*q*z == f - s*f + s*q*z since 2s = f - s*f */
  float fe = (float)e;
  return fe * 0.693145751953125f + (lm + fe * 1.42860682030941723212e-6f);
}

void odl_softmax_xent(void *args) {
  const odl_softmax_xent_args_t *p = (const odl_softmax_xent_args_t *)args;
  if (odl_core_id() != 0) return;
  int n = p->n, c = p->c;
  float inv_n = 1.0f / (float)n;
  odl_ksum_t loss = odl_ksum_zero();   /* the batch's losses, compensated (odl_simd.h) */
  for (int s = 0; s < n; s++) {
    const odl_t *z = p->logits + (size_t)s * c;
    odl_t *dz = p->dlogits + (size_t)s * c;
    float mx = (float)z[0];
    for (int k = 1; k < c; k++) mx = (float)z[k] > mx ? (float)z[k] : mx;
    float sum = 0.0f;
    for (int k = 0; k < c; k++) sum += odl_expf((float)z[k] - mx);
    float lse = mx + odl_logf(sum);
    int lab = p->labels[s];
    odl_ksum_add(&loss, lse - (float)z[lab]);
    float scale = inv_n / sum;
    for (int k = 0; k < c; k++) {
      float g = odl_expf((float)z[k] - mx) * scale;
      if (k == lab) g -= inv_n;
      dz[k] = (odl_t)g;
    }
  }
  p->loss_out[0] = odl_ksum_value(loss) * inv_n;
}
