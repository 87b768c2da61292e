/* Optimizers with FP32 state (SGD with momentum / weight decay, Adam) and the MSE loss.
 * Per element in FP32: w is read, updated in FP32 and rounded once. Each core owns a balanced contiguous share. */
#include "odl_kernels.h"
#include "odl_simd.h"

/* fsqrt.s on the target. __builtin_sqrtf keeps errno semantics (a call to sqrtf for negative inputs) unless
 * -fno-math-errno; the elementwise builtin is the bare IEEE square root. */
float odl_sqrtf(float x) { return __builtin_elementwise_sqrt(x); }

void odl_sgd_momentum(void *args) {
  const odl_sgd_momentum_args_t *p = (const odl_sgd_momentum_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  odl_t *w = p->w;
  const odl_t *g = p->g;
  float *buf = p->buf, lr = p->lr, mom = p->momentum, wd = p->wd;
  if (p->center) {   /* FedProx: g + wd*w + mu*(w - center), one pass, with or without momentum */
    const float *c = p->center;
    float mu = p->mu;
    for (int i = lo; i < hi; i++) {
      float wi = (float)w[i], gi = (float)g[i] + wd * wi + mu * (wi - c[i]);
      if (mom != 0.0f) {
        gi = p->first ? gi : mom * buf[i] + gi;
        buf[i] = gi;
      }
      w[i] = (odl_t)(wi - lr * gi);
    }
    return;
  }
  if (mom == 0.0f) {
    for (int i = lo; i < hi; i++) {
      float wi = (float)w[i];
      w[i] = (odl_t)(wi - lr * ((float)g[i] + wd * wi));
    }
  } else if (p->first) {
    for (int i = lo; i < hi; i++) {
      float wi = (float)w[i], gi = (float)g[i] + wd * wi;
      buf[i] = gi;
      w[i] = (odl_t)(wi - lr * gi);
    }
  } else {
    for (int i = lo; i < hi; i++) {
      float wi = (float)w[i], gi = (float)g[i] + wd * wi;
      float b = mom * buf[i] + gi;
      buf[i] = b;
      w[i] = (odl_t)(wi - lr * b);
    }
  }
}

void odl_adam(void *args) {
  const odl_adam_args_t *p = (const odl_adam_args_t *)args;
  int lo, hi;
  odl_split(p->len, &lo, &hi);
  odl_t *w = p->w;
  const odl_t *g = p->g;
  float *m = p->m, *v = p->v;
  float b1 = p->b1, b2 = p->b2, c1 = 1.0f - b1, c2 = 1.0f - b2, wd = p->wd, eps = p->eps;
  float step = p->lr / p->bc1, ibc2 = 1.0f / p->bc2;
  for (int i = lo; i < hi; i++) {
    float wi = (float)w[i], gi = (float)g[i] + wd * wi;
    float mi = b1 * m[i] + c1 * gi;
    float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] = (odl_t)(wi - step * mi / (odl_sqrtf(vi * ibc2) + eps));
  }
}

/* MSE: dpred is split over the cores; the loss (one FP32 number, no barrier to combine partial sums) is summed
 * by core 0 alone, in FP32, blocked and compensated (odl_simd.h). */
void odl_mse(void *args) {
  const odl_mse_args_t *p = (const odl_mse_args_t *)args;
  int lo, hi, len = p->len;
  odl_split(len, &lo, &hi);
  const odl_t *a = p->pred, *b = p->target;
  int total = p->total ? p->total : len;      /* a tile of the tensor (odl/tile/tiler.py): the mean is over all of it */
  float k = 2.0f / (float)total;
  if (p->dpred)
    for (int i = lo; i < hi; i++) p->dpred[i] = (odl_t)(((float)a[i] - (float)b[i]) * k);
  if (odl_core_id() == 0 && p->loss_out) {
    odl_ksum_t k = odl_ksum_zero();   /* blocked and compensated (odl_simd.h) */
    for (int i = 0; i < len;) {
      int end = odl_min_i(len, i + ODL_SUM_BLOCK);
      float s = 0.0f;
      for (; i < end; i++) {
        float d = (float)a[i] - (float)b[i];
        s += d * d;
      }
      odl_ksum_add(&k, s);
    }
    p->loss_out[0] = (p->accumulate ? p->loss_out[0] : 0.0f) + odl_ksum_value(k) / (float)total;
  }
}
