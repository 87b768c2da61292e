/* LayerNorm, GroupNorm and InstanceNorm as one family: x is viewed as rows [R, M] (R = N*G), each row is
 * normalised by its own mean and biased variance (as PyTorch does), then scaled and shifted per affine index.
 *   LayerNorm over the last dims D:  R = N * (numel / prod(D)), M = prod(D), G = 1, S = 1  (gamma[m])
 *   GroupNorm(G groups) on [N,C,HW]: R = N*G, M = C/G*HW, S = HW  (gamma[channel])
 *   InstanceNorm on [N,C,HW]:        R = N*C, M = HW, G = C, S = HW  (gamma[channel])
 * The affine index of element m of row r is ((r % G)*M + m) / S. Statistics and the backward's sums are FP32
 * in both precisions (as the batch-norm kernels do), blocked and compensated (odl_simd.h), partials combined in
 * a fixed order.
 * Work split: every row is cut into `chunks` equal element ranges and the work unit is one (row, chunk) pair, so
 * the cores stay busy when there are fewer rows than cores (LayerNorm over [C, H, W] at batch 1: one row). A
 * statistics kernel writes per-unit partials (forward: the chunk's mean and sum of squared deviations from it,
 * combined exactly per row as in Chan et al.'s parallel variance; backward: the chunk's sums of g*dy and
 * g*dy*xhat) and the apply kernel combines the row's partials and writes its unit's elements: no barrier, and dx
 * may overwrite dy (a unit reads only its own dy range once the sums are known). The affine gradients are split
 * by affine index (a core owns whole dgamma/dbeta entries, summing over the N samples), a kernel called before
 * the input gradient. */
#include "odl_kernels.h"
#include "odl_simd.h"

/* elements [*a, *b) of chunk ch of a row of m elements cut into chunks */
ODL_INLINE void chunk_range(int ch, int chunks, int m, int *a, int *b) {
  *a = (int)((long)ch * m / chunks);
  *b = (int)((long)(ch + 1) * m / chunks);
}

/* runs the body (the last arguments) on each S-block [M0, M1) of the elements [a, b) of row r, K being the
 * block's affine index */
#define NORM_BLOCKS(r, a, b, M, G, S, K, M0, M1, ...)                                                          \
  for (int M0 = (a); M0 < (b);) {                                                                              \
    int K = ((r) % (G)) * ((M) / (S)) + M0 / (S);                                                              \
    int M1 = odl_min_i((b), (M0 / (S) + 1) * (S));                                                             \
    __VA_ARGS__                                                                                                \
    M0 = M1;                                                                                                   \
  }

void odl_norm_stats(void *args) {
  const odl_norm_fwd_args_t *p = (const odl_norm_fwd_args_t *)args;
  int M = p->m, ch = p->chunks, lo, hi;
  odl_split(p->rows * ch, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int r = u / ch, a, b;
    chunk_range(u - r * ch, ch, M, &a, &b);
    const odl_t *x = p->x + (size_t)r * M;
    odl_ksum_t s = odl_ksum_zero(), q = odl_ksum_zero();   /* blocked and compensated (odl_simd.h) */
    for (int m = a; m < b;) {
      int e = odl_min_i(b, m + ODL_SUM_BLOCK);
      float t = 0.0f;
      for (; m < e; m++) t += (float)x[m];
      odl_ksum_add(&s, t);
    }
    float mean = b > a ? odl_ksum_value(s) / (float)(b - a) : 0.0f;
    for (int m = a; m < b;) {
      int e = odl_min_i(b, m + ODL_SUM_BLOCK);
      float t2 = 0.0f;
      for (; m < e; m++) {
        float t = (float)x[m] - mean;
        t2 += t * t;
      }
      odl_ksum_add(&q, t2);
    }
    p->part[2 * u] = mean;
    p->part[2 * u + 1] = odl_ksum_value(q);
  }
}

void odl_norm_fwd(void *args) {
  const odl_norm_fwd_args_t *p = (const odl_norm_fwd_args_t *)args;
  int M = p->m, G = p->g, S = p->s, ch = p->chunks, lo, hi;
  odl_split(p->rows * ch, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int r = u / ch, c = u - r * ch, a, b;
    /* the row's statistics from its chunks' partials */
    const float *pt = p->part + (size_t)2 * r * ch;
    odl_ksum_t ks = odl_ksum_zero(), kq = odl_ksum_zero();   /* in chunk order, compensated */
    for (int i = 0; i < ch; i++) {
      chunk_range(i, ch, M, &a, &b);
      odl_ksum_add(&ks, pt[2 * i] * (float)(b - a));
    }
    float mean = odl_ksum_value(ks) / (float)M;
    for (int i = 0; i < ch; i++) {
      chunk_range(i, ch, M, &a, &b);
      float d = pt[2 * i] - mean;
      odl_ksum_add(&kq, pt[2 * i + 1] + d * d * (float)(b - a));
    }
    float rstd = 1.0f / odl_sqrtf(odl_ksum_value(kq) / (float)M + p->eps);
    if (c == 0) {
      p->mean[r] = mean;
      p->rstd[r] = rstd;
    }
    chunk_range(c, ch, M, &a, &b);
    const odl_t *x = p->x + (size_t)r * M;
    odl_t *y = p->y + (size_t)r * M;
    NORM_BLOCKS(r, a, b, M, G, S, k, m0, m1, {
      float ga = rstd * (p->gamma ? (float)p->gamma[k] : 1.0f), be = p->beta ? (float)p->beta[k] : 0.0f;
      for (int m = m0; m < m1; m++) y[m] = (odl_t)(((float)x[m] - mean) * ga + be);
    })
  }
}

/* per (row, chunk): part = (sum g*dy, sum g*dy*xhat), g = gamma of the element (1 without affine) */
void odl_norm_bwd_stats(void *args) {
  const odl_norm_bwd_args_t *p = (const odl_norm_bwd_args_t *)args;
  int M = p->m, G = p->g, S = p->s, ch = p->chunks, lo, hi;
  odl_split(p->rows * ch, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int r = u / ch, a, b;
    chunk_range(u - r * ch, ch, M, &a, &b);
    const odl_t *x = p->x + (size_t)r * M, *dy = p->dy + (size_t)r * M;
    float mean = p->mean[r], rstd = p->rstd[r];
    odl_ksum_t sa = odl_ksum_zero(), sb = odl_ksum_zero();   /* blocked and compensated (odl_simd.h) */
    NORM_BLOCKS(r, a, b, M, G, S, k, m0, m1, {
      float g = p->gamma ? (float)p->gamma[k] : 1.0f;
      for (int m = m0; m < m1;) {
        int e = odl_min_i(m1, m + ODL_SUM_BLOCK);
        float ba = 0.0f, bb = 0.0f;
        for (; m < e; m++) {
          float gd = g * (float)dy[m];
          ba += gd;
          bb += gd * ((float)x[m] - mean) * rstd;
        }
        odl_ksum_add(&sa, ba);
        odl_ksum_add(&sb, bb);
      }
    })
    p->part[2 * u] = odl_ksum_value(sa);
    p->part[2 * u + 1] = odl_ksum_value(sb);
  }
}

/* dx (+)= rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)) */
void odl_norm_bwd(void *args) {
  const odl_norm_bwd_args_t *p = (const odl_norm_bwd_args_t *)args;
  int M = p->m, G = p->g, S = p->s, ch = p->chunks, lo, hi;
  odl_split(p->rows * ch, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int r = u / ch, a, b;
    const float *pt = p->part + (size_t)2 * r * ch;
    odl_ksum_t ka = odl_ksum_zero(), kb = odl_ksum_zero();   /* in chunk order, compensated */
    for (int i = 0; i < ch; i++) {
      odl_ksum_add(&ka, pt[2 * i]);
      odl_ksum_add(&kb, pt[2 * i + 1]);
    }
    float sa = odl_ksum_value(ka) / (float)M, sb = odl_ksum_value(kb) / (float)M;
    chunk_range(u - r * ch, ch, M, &a, &b);
    const odl_t *x = p->x + (size_t)r * M, *dy = p->dy + (size_t)r * M;
    odl_t *dx = p->dx + (size_t)r * M;
    float mean = p->mean[r], rstd = p->rstd[r];
    NORM_BLOCKS(r, a, b, M, G, S, k, m0, m1, {
      float g = p->gamma ? (float)p->gamma[k] : 1.0f;
      for (int m = m0; m < m1; m++) {
        float v = rstd * (g * (float)dy[m] - sa - ((float)x[m] - mean) * rstd * sb);
        dx[m] = (odl_t)(p->accumulate ? (float)dx[m] + v : v);
      }
    })
  }
}

/* dgamma[k] (+)= sum dy * xhat, dbeta[k] (+)= sum dy over the elements with affine index k (either may be NULL) */
void odl_norm_wgrad(void *args) {
  const odl_norm_bwd_args_t *p = (const odl_norm_bwd_args_t *)args;
  int M = p->m, G = p->g, S = p->s, P = G * (M / S), N = p->rows / G, lo, hi;
  odl_split(P, &lo, &hi);
  for (int k = lo; k < hi; k++) {
    int rg = (k * S) / M, off = (k * S) - rg * M;  /* row within the sample, offset within the row */
    odl_ksum_t kg = odl_ksum_zero(), kb = odl_ksum_zero();   /* blocked and compensated (odl_simd.h) */
    for (int n = 0; n < N; n++) {
      int r = n * G + rg;
      const odl_t *x = p->x + (size_t)r * M + off, *dy = p->dy + (size_t)r * M + off;
      float mean = p->mean[r], rstd = p->rstd[r];
      for (int s = 0; s < S;) {
        int e = odl_min_i(S, s + ODL_SUM_BLOCK);
        float bg = 0.0f, bb = 0.0f;
        for (; s < e; s++) {
          float d = (float)dy[s];
          bb += d;
          bg += d * ((float)x[s] - mean) * rstd;
        }
        odl_ksum_add(&kg, bg);
        odl_ksum_add(&kb, bb);
      }
    }
    float sg = odl_ksum_value(kg), sb = odl_ksum_value(kb);
    if (p->dgamma) p->dgamma[k] = (odl_t)(p->accumulate_w ? (float)p->dgamma[k] + sg : sg);
    if (p->dbeta) p->dbeta[k] = (odl_t)(p->accumulate_w ? (float)p->dbeta[k] + sb : sb);
  }
}
