/* Mixed precision (odl train --precision mixed): FP16 compute with FP32 master weights and FP32 optimizer state,
 * and loss scaling as torch.cuda.amp.GradScaler does it: the loss gradient is multiplied by the scale S, every
 * parameter gradient is checked for Inf/NaN (any one skips the whole update), and the update unscales by 1/S in
 * FP32 before applying it to the master weights, then rounds the master once into the FP16 working copy.
 * Written once against odl_t like every kernel; only FP16 programs call them. Work: each core its odl_split share. */
#include "odl_kernels.h"
#include "odl_simd.h"

/* x *= s (the loss gradient by the loss scale; S is a power of two, so this is exact unless it overflows) */
void odl_scale(void *args) {
  const odl_scale_args_t *p = (const odl_scale_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  for (int i = lo; i < hi; i++) p->x[i] = (odl_t)((float)p->x[i] * p->s);
}

/* *flag = 1 when some g[i] is Inf or NaN (all exponent bits set). Cores only ever store 1, so the race between
 * them is benign; the caller zeroes the flag before the first check of a step. */
void odl_grad_check(void *args) {
  const odl_grad_check_args_t *p = (const odl_grad_check_args_t *)args;
  int lo, hi, bad = 0;
  odl_split(p->len, &lo, &hi);
  if (sizeof(odl_t) == 2) {
    const uint16_t *g = (const uint16_t *)p->g;
    for (int i = lo; i < hi; i++) bad |= (g[i] & 0x7C00u) == 0x7C00u;
  } else {
    const uint32_t *g = (const uint32_t *)p->g;
    for (int i = lo; i < hi; i++) bad |= (g[i] & 0x7F800000u) == 0x7F800000u;
  }
  if (bad) *p->flag = 1;
}

/* SGD (torch.optim.SGD semantics, see odl_sgd_momentum) on the FP32 master with the unscaled gradient
 * g' = g * inv_scale + wd * master; then w = (odl_t)master. buf may be NULL when momentum == 0. */
void odl_sgd_mixed(void *args) {
  const odl_sgd_mixed_args_t *p = (const odl_sgd_mixed_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  float *mw = p->master, *buf = p->buf, lr = p->lr, mom = p->momentum, wd = p->wd, is = p->inv_scale;
  for (int i = lo; i < hi; i++) {
    float wi = mw[i], gi = (float)p->g[i] * is + wd * wi, d = gi;
    if (mom != 0.0f) {
      d = p->first ? gi : mom * buf[i] + gi;
      buf[i] = d;
    }
    wi -= lr * d;
    mw[i] = wi;
    p->w[i] = (odl_t)wi;
  }
}

/* Adam (torch.optim.Adam semantics, see odl_adam) on the FP32 master with the unscaled gradient. */
void odl_adam_mixed(void *args) {
  const odl_adam_mixed_args_t *p = (const odl_adam_mixed_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  float *mw = p->master, *m = p->m, *v = p->v;
  float b1 = p->b1, b2 = p->b2, c1 = 1.0f - b1, c2 = 1.0f - b2, wd = p->wd, eps = p->eps, is = p->inv_scale;
  float step = p->lr / p->bc1, ibc2 = 1.0f / p->bc2;
  for (int i = lo; i < hi; i++) {
    float wi = mw[i], gi = (float)p->g[i] * is + wd * wi;
    float mi = b1 * m[i] + c1 * gi;
    float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    wi -= step * mi / (odl_sqrtf(vi * ibc2) + eps);
    mw[i] = wi;
    p->w[i] = (odl_t)wi;
  }
}
