/* LayerNorm, GroupNorm and InstanceNorm as one family: x is viewed as rows [R, M] (R = N*G), each row is
 * normalised by its own mean and biased variance (as PyTorch does), then scaled and shifted per affine index.
 *   LayerNorm over the last dims D:  R = N * (numel / prod(D)), M = prod(D), G = 1, S = 1  (gamma[m])
 *   GroupNorm(G groups) on [N,C,HW]: R = N*G, M = C/G*HW, S = HW  (gamma[channel])
 *   InstanceNorm on [N,C,HW]:        R = N*C, M = HW, G = C, S = HW  (gamma[channel])
 * The affine index of element m of row r is ((r % G)*M + m) / S. Statistics and the backward's sums are FP32
 * in both precisions (as the batch-norm kernels do); the variance is two-pass (mean first, then squares).
 * Work split: forward and input gradient by rows (a core owns whole rows, so dx may overwrite dy); the affine
 * gradients by affine index (a core owns whole dgamma/dbeta entries, summing over the N samples), as its own
 * kernel called before the input gradient. */
#include "odl_kernels.h"
#include "odl_simd.h"

void odl_norm_fwd(void *args) {
  const odl_norm_fwd_args_t *p = (const odl_norm_fwd_args_t *)args;
  int M = p->m, G = p->g, S = p->s, lo, hi;
  odl_split(p->rows, &lo, &hi);
  for (int r = lo; r < hi; r++) {
    const odl_t *x = p->x + (size_t)r * M;
    odl_t *y = p->y + (size_t)r * M;
    float s = 0.0f;
    for (int m = 0; m < M; m++) s += (float)x[m];
    float mean = s / (float)M, q = 0.0f;
    for (int m = 0; m < M; m++) {
      float t = (float)x[m] - mean;
      q += t * t;
    }
    float rstd = 1.0f / odl_sqrtf(q / (float)M + p->eps);
    p->mean[r] = mean;
    p->rstd[r] = rstd;
    int k = (r % G) * (M / S);   /* affine index of the row's first element */
    for (int m0 = 0; m0 < M; m0 += S, k++) {
      float a = rstd * (p->gamma ? (float)p->gamma[k] : 1.0f), b = p->beta ? (float)p->beta[k] : 0.0f;
      for (int m = m0; m < m0 + S; m++) y[m] = (odl_t)(((float)x[m] - mean) * a + b);
    }
  }
}

/* dx (+)= rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)), g = gamma of the element (1 without affine) */
void odl_norm_bwd(void *args) {
  const odl_norm_bwd_args_t *p = (const odl_norm_bwd_args_t *)args;
  int M = p->m, G = p->g, S = p->s, lo, hi;
  odl_split(p->rows, &lo, &hi);
  for (int r = lo; r < hi; r++) {
    const odl_t *x = p->x + (size_t)r * M, *dy = p->dy + (size_t)r * M;
    odl_t *dx = p->dx + (size_t)r * M;
    float mean = p->mean[r], rstd = p->rstd[r], sa = 0.0f, sb = 0.0f;
    int k0 = (r % G) * (M / S), k = k0;
    for (int m0 = 0; m0 < M; m0 += S, k++) {
      float g = p->gamma ? (float)p->gamma[k] : 1.0f;
      for (int m = m0; m < m0 + S; m++) {
        float gd = g * (float)dy[m];
        sa += gd;
        sb += gd * ((float)x[m] - mean) * rstd;
      }
    }
    sa /= (float)M;
    sb /= (float)M;
    k = k0;
    for (int m0 = 0; m0 < M; m0 += S, k++) {
      float g = p->gamma ? (float)p->gamma[k] : 1.0f;
      for (int m = m0; m < m0 + S; m++) {
        float v = rstd * (g * (float)dy[m] - sa - ((float)x[m] - mean) * rstd * sb);
        dx[m] = (odl_t)(p->accumulate ? (float)dx[m] + v : v);
      }
    }
  }
}

/* dgamma[k] (+)= sum dy * xhat, dbeta[k] (+)= sum dy over the elements with affine index k (either may be NULL) */
void odl_norm_wgrad(void *args) {
  const odl_norm_bwd_args_t *p = (const odl_norm_bwd_args_t *)args;
  int M = p->m, G = p->g, S = p->s, P = G * (M / S), N = p->rows / G, lo, hi;
  odl_split(P, &lo, &hi);
  for (int k = lo; k < hi; k++) {
    int rg = (k * S) / M, off = (k * S) - rg * M;  /* row within the sample, offset within the row */
    float sg = 0.0f, sb = 0.0f;
    for (int n = 0; n < N; n++) {
      int r = n * G + rg;
      const odl_t *x = p->x + (size_t)r * M + off, *dy = p->dy + (size_t)r * M + off;
      float mean = p->mean[r], rstd = p->rstd[r];
      for (int s = 0; s < S; s++) {
        float d = (float)dy[s];
        sb += d;
        sg += d * ((float)x[s] - mean) * rstd;
      }
    }
    if (p->dgamma) p->dgamma[k] = (odl_t)(p->accumulate_w ? (float)p->dgamma[k] + sg : sg);
    if (p->dbeta) p->dbeta[k] = (odl_t)(p->accumulate_w ? (float)p->dbeta[k] + sb : sb);
  }
}
