/* Matmul in the three training forms, one source for FP32 (scalar) and FP16 (2-lane SIMD).
 *
 * nn / tn: vectors run along N (rows of B and C are contiguous). A register tile of R rows x V vectors
 *   (R, V <= 4) of accumulators; per k: R scalar loads of A (splatted into vfmacc.vf), V vector loads of B,
 *   R*V fused multiply-adds. Leftover rows use R=1, leftover vectors V=1, an odd last column (FP16) a scalar
 *   loop. The element of A for row r at step k is a[r*rs + k*ks]: nn has (rs, ks) = (K, 1), tn (1, M).
 * nt: vectors run along K (rows of A and B are contiguous): a tile of R rows x C columns of dot products.
 * FP16 accumulates in FP32 lanes with widening fused multiply-adds (vfwmacc.vf / vfwmacc.vv: still one
 * instruction per 2 MACs), and each output is rounded to FP16 once, as PyTorch's FP16 matmuls do: long
 * reductions (conv weight gradients over H*W) stay accurate, and forward activations near zero keep their
 * sign, so the ReLU masks of the backward pass agree with the FP32 reference.
 *
 * Parallel split: whole rows of C (M) or column ranges of C (N, in units of ODL_LANES), whichever gives the
 * smaller padded tile area on the busiest core. Outputs never overlap between cores. */
#include "odl_kernels.h"
#include "odl_simd.h"

#define MM_R 4
#define MM_V 4

ODL_INLINE int pad_to(int x, int b) { return (x + b - 1) / b * b; }

/* This core's block of C: rows [*i0, *i1), columns [*j0, *j1). */
ODL_INLINE void mm_split(int m, int n, int unit, int tile_cols, int *i0, int *i1, int *j0, int *j1) {
  int p = odl_num_cores();
  int rm = (m + p - 1) / p;
  long cost_r = (long)pad_to(rm, MM_R) * pad_to(n, tile_cols);
  int nu = (n + unit - 1) / unit;
  int cn = (nu + p - 1) / p * unit;
  long cost_c = (long)pad_to(m, MM_R) * pad_to(cn, tile_cols);
  if (cost_c < cost_r) {
    int lo, hi;
    odl_split(nu, &lo, &hi);
    *i0 = 0; *i1 = m;
    *j0 = odl_min_i(lo * unit, n); *j1 = odl_min_i(hi * unit, n);
  } else {
    odl_split(m, i0, i1);
    *j0 = 0; *j1 = n;
  }
}

/* ---------------- nn / tn ---------------- */
ODL_INLINE void mm_tile_v(const odl_t *a, int rs, int ks, const odl_t *b, int ldb, odl_t *c, int ldc,
                          int K, int R, int V, int accumulate) {
  odl_wvec_t s[MM_R][MM_V];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < V; v++) s[r][v] = odl_wzero();
  const odl_t *pa = a, *pb = b;
  for (int k = 0; k < K; k++) {
    odl_vec_t bv[MM_V];
    for (int v = 0; v < V; v++) bv[v] = odl_vload(pb + v * ODL_LANES);
    for (int r = 0; r < R; r++) {
      odl_vec_t av = odl_vsplat(pa[r * rs]);
      for (int v = 0; v < V; v++) s[r][v] = odl_wfma(s[r][v], av, bv[v]);
    }
    pa += ks;
    pb += ldb;
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < V; v++) {
      odl_t *pc = c + r * ldc + v * ODL_LANES;
      odl_vstore(pc, odl_narrow(accumulate ? odl_widen(odl_vload(pc)) + s[r][v] : s[r][v]));
    }
}

/* one scalar column (the odd last column of the FP16 path) */
ODL_INLINE void mm_col_s(const odl_t *a, int rs, int ks, const odl_t *b, int ldb, odl_t *c, int ldc,
                         int K, int R, int accumulate) {
  float s[MM_R];
  for (int r = 0; r < R; r++) s[r] = 0;
  const odl_t *pa = a, *pb = b;
  for (int k = 0; k < K; k++) {
    float bk = (float)*pb;
    for (int r = 0; r < R; r++) s[r] += (float)pa[r * rs] * bk;
    pa += ks;
    pb += ldb;
  }
  for (int r = 0; r < R; r++) c[r * ldc] = (odl_t)(accumulate ? (float)c[r * ldc] + s[r] : s[r]);
}

ODL_INLINE void mm_rows_v(const odl_t *a, int rs, int ks, const odl_t *b, int ldb, odl_t *c, int ldc, int K,
                          int j0, int j1, int R, int accumulate) {
  int j = j0;
  for (; j + MM_V * ODL_LANES <= j1; j += MM_V * ODL_LANES)
    mm_tile_v(a, rs, ks, b + j, ldb, c + j, ldc, K, R, MM_V, accumulate);
  for (; j + ODL_LANES <= j1; j += ODL_LANES)
    mm_tile_v(a, rs, ks, b + j, ldb, c + j, ldc, K, R, 1, accumulate);
  if (ODL_LANES > 1 && j < j1) mm_col_s(a, rs, ks, b + j, ldb, c + j, ldc, K, R, accumulate);
}

ODL_INLINE void mm_v_driver(const odl_mm_args_t *p, int rs, int ks) {
  int m = p->m, n = p->n, K = p->k, acc = p->accumulate;
  int ldb = p->ldb ? p->ldb : n, ldc = p->ldc ? p->ldc : n;
  int i0, i1, j0, j1;
  mm_split(m, n, ODL_LANES, MM_V * ODL_LANES, &i0, &i1, &j0, &j1);
  if (j0 >= j1) return;
  int i = i0;
  for (; i + MM_R <= i1; i += MM_R)
    mm_rows_v(p->a + i * rs, rs, ks, p->b, ldb, p->c + i * ldc, ldc, K, j0, j1, MM_R, acc);
  for (; i < i1; i++)
    mm_rows_v(p->a + i * rs, rs, ks, p->b, ldb, p->c + i * ldc, ldc, K, j0, j1, 1, acc);
}

void odl_mm_nn(void *args) {
  const odl_mm_args_t *p = (const odl_mm_args_t *)args;
  mm_v_driver(p, p->lda ? p->lda : p->k, 1);
}

void odl_mm_tn(void *args) {
  const odl_mm_args_t *p = (const odl_mm_args_t *)args;
  mm_v_driver(p, 1, p->lda ? p->lda : p->m);
}

/* ---------------- nt ---------------- */
ODL_INLINE void mm_tile_nt(const odl_t *a, int lda, const odl_t *b, int ldb, odl_t *c, int ldc, int K, int R,
                           int C, int accumulate) {
  odl_wvec_t f[MM_R][MM_R];
  for (int r = 0; r < R; r++)
    for (int q = 0; q < C; q++) f[r][q] = odl_wzero();
  const odl_t *a0 = a, *a1 = a + (R > 1 ? lda : 0), *a2 = a + (R > 2 ? 2 * lda : 0), *a3 = a + (R > 3 ? 3 * lda : 0);
  const odl_t *b0 = b, *b1 = b + (C > 1 ? ldb : 0), *b2 = b + (C > 2 ? 2 * ldb : 0), *b3 = b + (C > 3 ? 3 * ldb : 0);
  int nvec = K / ODL_LANES; /* whole vectors along K */
  if (nvec > 0) {
    const odl_t *aend = a0 + nvec * ODL_LANES;
    do {
      odl_vec_t va[MM_R], vb[MM_R];
      va[0] = odl_vload(a0); a0 += ODL_LANES;
      if (R > 1) { va[1] = odl_vload(a1); a1 += ODL_LANES; }
      if (R > 2) { va[2] = odl_vload(a2); a2 += ODL_LANES; }
      if (R > 3) { va[3] = odl_vload(a3); a3 += ODL_LANES; }
      vb[0] = odl_vload(b0); b0 += ODL_LANES;
      if (C > 1) { vb[1] = odl_vload(b1); b1 += ODL_LANES; }
      if (C > 2) { vb[2] = odl_vload(b2); b2 += ODL_LANES; }
      if (C > 3) { vb[3] = odl_vload(b3); b3 += ODL_LANES; }
      for (int r = 0; r < R; r++)
        for (int q = 0; q < C; q++) f[r][q] = odl_wfma(f[r][q], va[r], vb[q]);
    } while (a0 != aend);
  }
  const odl_t *pa[MM_R] = {a0, a1, a2, a3}, *pb[MM_R] = {b0, b1, b2, b3};
  for (int r = 0; r < R; r++)
    for (int q = 0; q < C; q++) {
      float t = odl_whsum(f[r][q]);
      if (K % ODL_LANES) t += (float)pa[r][0] * (float)pb[q][0]; /* odd K in FP16: last element */
      odl_t *pc = c + r * ldc + q;
      *pc = accumulate ? (odl_t)((float)*pc + t) : (odl_t)t;
    }
}

ODL_INLINE void mm_nt_rows(const odl_t *a, int lda, const odl_t *b, int ldb, odl_t *c, int ldc, int K, int j0,
                           int j1, int R, int acc) {
  int j = j0;
  for (; j + MM_R <= j1; j += MM_R) mm_tile_nt(a, lda, b + j * ldb, ldb, c + j, ldc, K, R, MM_R, acc);
  for (; j < j1; j++) mm_tile_nt(a, lda, b + j * ldb, ldb, c + j, ldc, K, R, 1, acc);
}

void odl_mm_nt(void *args) {
  const odl_mm_args_t *p = (const odl_mm_args_t *)args;
  int m = p->m, n = p->n, K = p->k, acc = p->accumulate;
  int lda = p->lda ? p->lda : K, ldb = p->ldb ? p->ldb : K, ldc = p->ldc ? p->ldc : n;
  int i0, i1, j0, j1;
  mm_split(m, n, 1, MM_R, &i0, &i1, &j0, &j1);
  if (j0 >= j1) return;
  int i = i0;
  for (; i + MM_R <= i1; i += MM_R)
    mm_nt_rows(p->a + i * lda, lda, p->b, ldb, p->c + i * ldc, ldc, K, j0, j1, MM_R, acc);
  for (; i < i1; i++) mm_nt_rows(p->a + i * lda, lda, p->b, ldb, p->c + i * ldc, ldc, K, j0, j1, 1, acc);
}
