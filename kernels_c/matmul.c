/* Matmul in the three training forms, one source for FP32 (scalar) and FP16 (2-lane SIMD).
 *
 * nn / tn: vectors run along N (rows of B and C are contiguous). A register tile of R rows x V vectors of
 *   accumulators (FP16 7 x 4, FP32 4 x 4; see MM_R below); per k: R scalar loads of A (splatted into
 *   vfwmacc.vf), V vector loads of B, R*V fused multiply-adds. Leftover rows and vectors run as one smaller tile
 *   each (12 rows as 7 + 5, 7 vectors as 4 + 3). The element of A for row r at step k is a[r*rs + k*ks]: nn has
 *   (rs, ks) = (K, 1), tn (1, M).
 *   tn may instead run as C^T = B^T A (both operands are contiguous along their rows at each k: vectors along
 *   M, C stored transposed), and its odd last column (FP16) always does; nn's odd column is a scalar loop.
 * nt: vectors run along K (rows of A and B are contiguous): a tile of R rows x C columns of dot products.
 * FP16 accumulates in FP32 lanes with widening fused multiply-adds (vfwmacc.vf / vfwmacc.vv: still one
 * instruction per 2 MACs), and each output is rounded to FP16 once, as PyTorch's FP16 matmuls do: long
 * reductions (conv weight gradients over H*W) stay accurate, and forward activations near zero keep their
 * sign, so the ReLU masks of the backward pass agree with the FP32 reference.
 *
 * Parallel split (nn / tn): a grid of pr x (cores / pr) blocks of C (rows, and column ranges in units of
 * ODL_LANES), pr and (tn) the orientation chosen by an instruction estimate of the busiest block (mm_block_est,
 * calibrated on QEMU). nt: whole rows of C or column ranges, whichever gives the smaller padded tile area on the
 * busiest core. Outputs never overlap between cores.
 * Measured (odl profile resnet8 --precision fp16 --cores 8, busiest core x 16 / MACs): nn 1.83, tn 1.76
 * instructions per 2 MACs (inner loops 1.62 / 1.61; the rest is stores, leftover tiles and short K). */
#include "odl_kernels.h"
#include "odl_simd.h"

ODL_INLINE int pad_to(int x, int b) { return (x + b - 1) / b * b; }
#define MM_NT 4 /* nt tile: 4 x 4 dot products */

/* Register tile of the nn / tn forms: MM_R rows x MM_V vectors of accumulators. FP16: 7 x 4 = 28 FP32-lane
 * accumulators + 4 B vectors (all 32 vector registers). Per k step: R flh (splatted by vfwmacc.vf) + V vle16,
 * each vle16 with its own address add (RVV loads take no immediate offset) + R*V widening FMAs; tn unrolls k by 2
 * (the A scalars of a step are contiguous: immediate offsets from one pointer, one pointer per step), nn by 4
 * (one pointer per row, immediate offsets along k, one add per row per 4 steps). Inner loops measured from the
 * disassembly (llvm-objdump of the FP16 build): tn 89 instructions per 56 FMAs (1.59 per 2 MACs), nn 180 per 112
 * (1.61). FP32 (scalar registers, flw/fmadd.s with immediate offsets): 4 x 4. */
#if ODL_LANES == 2
#define MM_R 7
#define MM_V 4
#else
#define MM_R 4
#define MM_V 4
#endif

/* FP16: the FP16->FP32 extends fold into widening FMAs (vfwmacc.vf) only if clang's extension web limit
 * covers a whole tile (each B vector is shared by all R rows): the target builds with
 * -mllvm -riscv-lower-ext-max-web-size=64 (default 18, which would leave vfwcvt + spills in the loop). */
#define MM_UNROLL _Pragma("clang loop unroll(full)")

/* Accumulators. By default FP16 accumulates in FP32 lanes (above). Built with -DODL_MM_ACC16 (odl's
 * --accumulate fp16) it accumulates in FP16 lanes, as PULP-TrainLib's FP16 matmuls do: vfmacc at VL=2 writes 32
 * bits (one cycle per 2 MACs on a 32-bit FPU, where vfwmacc's two FP32 results take two), at the price of an FP16
 * rounding per multiply-add; whether a model still validates so is for odl validate to say. */
#if ODL_LANES == 2 && defined(ODL_MM_ACC16)
typedef odl_vec_t mm_acc_t;
#define mm_fma(s, a, b) odl_vfma((s), (a), (b))
#define mm_mul(a, b) ((a) * (b))
#define mm_splat(x) odl_vsplat((odl_t)(x))
#define mm_from(v) (v)
#define mm_to(s) (s)
#define mm_hsum(s) odl_vhsum(s)
#define mm_zero() odl_vzero()
#else
typedef odl_wvec_t mm_acc_t;
#define mm_fma(s, a, b) odl_wfma((s), (a), (b))
#define mm_mul(a, b) odl_wmul((a), (b))
#define mm_splat(x) odl_wsplat((float)(x))
#define mm_from(v) odl_widen(v)
#define mm_to(s) odl_narrow(s)
#define mm_hsum(s) odl_whsum(s)
#define mm_zero() odl_wzero()
#endif

/* C element (i, j) of a tile lives at c[i*ldc + j*cjs] (cjs = 1: row-major C; ldc = 1: C stored transposed). */
ODL_INLINE void mm_store(odl_t *pc, int cjs, mm_acc_t s, int accumulate) {
  if (cjs == 1) {
    odl_vstore(pc, mm_to(accumulate ? mm_from(odl_vload(pc)) + s : s));
  } else {
#if ODL_LANES == 2
    odl_vec_t v = mm_to(s);
    if (accumulate) {
      pc[0] = (odl_t)((float)pc[0] + (float)s[0]);
      pc[cjs] = (odl_t)((float)pc[cjs] + (float)s[1]);
    } else {
      pc[0] = v[0];
      pc[cjs] = v[1];
    }
#else
    *pc = accumulate ? (odl_t)((float)*pc + s) : (odl_t)s;
#endif
  }
}

/* Keeps clang from hoisting the next k step's B loads above this step's FMAs (with all 32 vector registers
 * holding the tile, hoisting spills). */
#if defined(__riscv)
#define MM_SCHED_BARRIER() __asm__ volatile("" ::: "memory")
#define MM_OPAQUE(x) __asm__("" : "+r"(x))
#else
#define MM_SCHED_BARRIER() ((void)0)
#define MM_OPAQUE(x) ((void)0)
#endif

/* one k step of an R x V tile: B vectors at pb, A scalar of row r at pa[r * rs] */
#define MM_STEP(PA, RS, PB)                                                                             \
  do {                                                                                                  \
    odl_vec_t bv_[MM_V];                                                                                \
    MM_UNROLL for (int v = 0; v < V; v++) bv_[v] = odl_vload((PB) + v * ODL_LANES);                     \
    MM_UNROLL for (int r = 0; r < R; r++) {                                                             \
      odl_vec_t av_ = odl_vsplat((PA)[r * (RS)]);                                                       \
      MM_UNROLL for (int v = 0; v < V; v++) s[r][v] = mm_fma(s[r][v], av_, bv_[v]);                     \
    }                                                                                                   \
  } while (0)

/* One R x V tile over all of K. a(r, k) = a[r*rs + k*ks]. ptrmode = 0: rs == 1 (tn); ptrmode = 1: ks == 1 (nn).
 * The first k is peeled (a widening multiply initialises the accumulators) so the loop body stays in one
 * vtype. Bias (added once, in FP32, before the single rounding): br[r] per row of the tile, or bc[j] per column
 * (NULL: none); it initialises the accumulators, one move each. */
ODL_INLINE void mm_tile_v(const odl_t *a, int rs, int ks, const odl_t *b, int ldb, odl_t *c, int ldc, int cjs,
                          int K, int R, int V, int ptrmode, int accumulate, const odl_t *br, const odl_t *bc) {
  mm_acc_t s[MM_R][MM_V];
  if (br) {
    MM_UNROLL for (int r = 0; r < R; r++) {
      mm_acc_t t = mm_splat(br[r]);
      MM_UNROLL for (int v = 0; v < V; v++) s[r][v] = t;
    }
    MM_STEP(a, rs, b);
  } else if (bc) {
    MM_UNROLL for (int v = 0; v < V; v++) {
      mm_acc_t t = mm_from(odl_vload(bc + v * ODL_LANES));
      MM_UNROLL for (int r = 0; r < R; r++) s[r][v] = t;
    }
    MM_STEP(a, rs, b);
  } else {
    odl_vec_t bv[MM_V];
    MM_UNROLL for (int v = 0; v < V; v++) bv[v] = odl_vload(b + v * ODL_LANES);
    MM_UNROLL for (int r = 0; r < R; r++) {
      odl_vec_t av = odl_vsplat(a[r * rs]);
      MM_UNROLL for (int v = 0; v < V; v++) s[r][v] = mm_mul(av, bv[v]);
    }
  }
  const odl_t *pb = b + ldb;
  if (!ptrmode) {
    const odl_t *pa = a + ks, *pa1 = a + 2 * ks;
    int n2 = (K - 1) >> 1;
    const odl_t *pe = pb + (size_t)n2 * 2 * ldb;
    for (; pb != pe; pa += 2 * ks, pa1 += 2 * ks, pb += 2 * ldb) {
      MM_STEP(pa, 1, pb);
      MM_STEP(pa1, 1, pb + ldb);
    }
    if ((K - 1) & 1) MM_STEP(pa, 1, pb);
  } else {
    const odl_t *ap[MM_R];
    MM_UNROLL for (int r = 0; r < R; r++) ap[r] = a + r * rs + 1;
    int n4 = (K - 1) >> 2;
    const odl_t *pe = pb + (size_t)n4 * 4 * ldb;
    for (; pb != pe; pb += 4 * ldb) {
      MM_UNROLL for (int u = 0; u < 4; u++) {
        odl_t av[MM_R];
        MM_UNROLL for (int r = 0; r < R; r++) av[r] = ap[r][u];
        MM_UNROLL for (int v = 0; v < V; v++) {
          odl_vec_t bv = odl_vload(pb + u * ldb + v * ODL_LANES);
          MM_UNROLL for (int r = 0; r < R; r++) s[r][v] = mm_fma(s[r][v], odl_vsplat(av[r]), bv);
        }
        if (u == 1) MM_SCHED_BARRIER();
      }
      MM_UNROLL for (int r = 0; r < R; r++) ap[r] += 4;
    }
    for (int k = (K - 1) & 3; k > 0; k--) {
      MM_STEP(ap[0], rs, pb);
      ap[0] += 1;
      pb += ldb;
    }
  }
  MM_UNROLL for (int r = 0; r < R; r++)
    MM_UNROLL for (int v = 0; v < V; v++) mm_store(c + r * ldc + v * ODL_LANES * cjs, cjs, s[r][v], accumulate);
}

/* one scalar column (the odd last column of the FP16 path); bias br[r] per row, or *bc for all (NULL: none) */
ODL_INLINE void mm_col_s(const odl_t *a, int rs, int ks, const odl_t *b, int ldb, odl_t *c, int ldc,
                         int K, int R, int accumulate, const odl_t *br, const odl_t *bc) {
  float s[MM_R];
  for (int r = 0; r < R; r++) s[r] = br ? (float)br[r] : bc ? (float)*bc : 0.0f;
  const odl_t *pa = a, *pb = b;
  for (int k = 0; k < K; k++) {
    float bk = (float)*pb;
    for (int r = 0; r < R; r++) s[r] += (float)pa[r * rs] * bk;
    pa += ks;
    pb += ldb;
  }
  for (int r = 0; r < R; r++) c[r * ldc] = (odl_t)(accumulate ? (float)c[r * ldc] + s[r] : s[r]);
}

ODL_INLINE void mm_rows_v(const odl_t *a, int rs, int ks, const odl_t *b, int ldb, odl_t *c, int ldc, int cjs,
                          int K, int j0, int j1, int R, int pm, int accumulate, const odl_t *br,
                          const odl_t *bc) {
  int j = j0;
#define MM_BC(j) (bc ? bc + (j) : (const odl_t *)0)
  for (; j + MM_V * ODL_LANES <= j1; j += MM_V * ODL_LANES)
    mm_tile_v(a, rs, ks, b + j, ldb, c + j * cjs, ldc, cjs, K, R, MM_V, pm, accumulate, br, MM_BC(j));
  /* leftover vectors (1 .. MM_V - 1) as one tile */
  int lv = (j1 - j) / ODL_LANES;
#if MM_V > 3
  if (lv == 3) mm_tile_v(a, rs, ks, b + j, ldb, c + j * cjs, ldc, cjs, K, R, 3, pm, accumulate, br, MM_BC(j));
#endif
  if (lv == 2) mm_tile_v(a, rs, ks, b + j, ldb, c + j * cjs, ldc, cjs, K, R, 2, pm, accumulate, br, MM_BC(j));
  if (lv == 1) mm_tile_v(a, rs, ks, b + j, ldb, c + j * cjs, ldc, cjs, K, R, 1, pm, accumulate, br, MM_BC(j));
  j += lv * ODL_LANES;
  if (ODL_LANES > 1 && j < j1) {
    int r = 0;
    if (pm == 0 && R >= 2) {
      /* tn: A is contiguous along M at each k, so the odd column runs as a 1-row tile of C^T = B^T A
       * (vectors along M, the column's B element splatted) */
      mm_tile_v(b + j, 1, ldb, a, ks, c + j * cjs, cjs, ldc, K, 1, R / 2, 0, accumulate, MM_BC(j), br);
      r = R & ~1;
    }
    if (r < R)
      mm_col_s(a + r * rs, rs, ks, b + j, ldb, c + j * cjs + r * ldc, ldc, K, R - r, accumulate, br ? br + r : br,
               MM_BC(j));
  }
#undef MM_BC
}

/* Rows in tiles of MM_R, the leftover rows (1 .. MM_R - 1) as one tile: ceil(rows / MM_R) row tiles, each paying
 * its per-k A loads and pointer upkeep once (12 rows as 7 + 5, not 7 + 4 + 1). */
ODL_INLINE void mm_block(const odl_t *a, int rs, int ks, const odl_t *b, int ldb, odl_t *c, int ldc, int cjs,
                         int K, int i0, int i1, int j0, int j1, int pm, int acc, const odl_t *bias, int bcols) {
  const odl_t *bc = bcols ? bias : (const odl_t *)0, *br = bcols ? (const odl_t *)0 : bias;
  int i = i0;
  for (; i + MM_R <= i1; i += MM_R)
    mm_rows_v(a + i * rs, rs, ks, b, ldb, c + i * ldc, ldc, cjs, K, j0, j1, MM_R, pm, acc, br ? br + i : br, bc);
  const odl_t *ai = a + i * rs, *bri = br ? br + i : br;
  odl_t *ci = c + i * ldc;
  switch (i1 - i) {
#if MM_R > 6
  case 6: mm_rows_v(ai, rs, ks, b, ldb, ci, ldc, cjs, K, j0, j1, 6, pm, acc, bri, bc); break;
#endif
#if MM_R > 5
  case 5: mm_rows_v(ai, rs, ks, b, ldb, ci, ldc, cjs, K, j0, j1, 5, pm, acc, bri, bc); break;
#endif
#if MM_R > 4
  case 4: mm_rows_v(ai, rs, ks, b, ldb, ci, ldc, cjs, K, j0, j1, 4, pm, acc, bri, bc); break;
#endif
  case 3: mm_rows_v(ai, rs, ks, b, ldb, ci, ldc, cjs, K, j0, j1, 3, pm, acc, bri, bc); break;
  case 2: mm_rows_v(ai, rs, ks, b, ldb, ci, ldc, cjs, K, j0, j1, 2, pm, acc, bri, bc); break;
  case 1: mm_rows_v(ai, rs, ks, b, ldb, ci, ldc, cjs, K, j0, j1, 1, pm, acc, bri, bc); break;
  default: break;
  }
}

/* Estimated instructions of a rows x cols block (the tiling of mm_block / mm_rows_v), from the disassembly of
 * the loops above: an R x V tile costs per k R*V FMAs + R flh + V (FP16: vle16 + address add; FP32: flw at an
 * immediate offset) + pointer/loop upkeep (tn 2, nn (R+1)/4 + 1), and per accumulator a store (row-major C 3:
 * vfncvt, address, vse16, + 2 to accumulate; C stored transposed 7, lane by lane, + 9 to accumulate), plus ~15
 * per tile. Summed over the tiles in closed form: it runs for every grid candidate on every call, so it must
 * stay a few dozen instructions (QEMU calibration: within 3% of the measured counts). */
static long mm_block_est(int rows, int cols, int K, int pm, int tstore, int acc, int R0, int V0) {
  int cv = cols / ODL_LANES, odd = cols % ODL_LANES;
  int rem = rows % R0;
  long rt1 = rows / R0 + (rem > 0);                                   /* row tiles */
  long rtc = pm ? (long)(rows / R0) * ((R0 + 1) / 4 + 1) + (rem > 0) * ((rem + 1) / 4 + 1) : 2 * rt1;
  long ct1 = cv / V0 + (cv % V0 > 0);                                 /* column tiles */
  long perk = (long)rows * cv + rows * ct1 + (ODL_LANES == 2 ? 2 : 1) * rt1 * cv + rtc * ct1;
  long t = perk * K + (long)rows * cv * (tstore ? 7 + 9 * acc : 3 + 2 * acc) + 15 * rt1 * ct1;
  if (odd) t += pm ? (2 * rt1 + 5L * rows) * K : (3 * rt1 + 2L * rows + 5L * (rows & 1)) * K + 8L * rows;
  return t;
}

/* The grid of pr x pc core blocks (pr * pc = cores; columns split in units of ODL_LANES) whose busiest block is
 * estimated cheapest: *pr, and that block's estimate. (Splitting columns in whole tiles instead was never
 * cheaper on the QEMU calibration shapes and doubled the search.) */
static long mm_plan(int m, int n, int K, int pm, int tstore, int acc, int *bpr, int *bunit) {
  int p = odl_num_cores();
  long best = -1;
  int R0 = MM_R, V0 = MM_V;
  MM_OPAQUE(R0); /* divisions by the tile size as single div instructions, not multiply-shift sequences */
  MM_OPAQUE(V0);
  int nu = (n + ODL_LANES - 1) / ODL_LANES;
  *bunit = ODL_LANES;
  for (int pr = 1; pr <= p; pr++) {
    if (p % pr) continue;
    int pc = p / pr;
    int rows = (m + pr - 1) / pr, cols = odl_min_i((nu + pc - 1) / pc * ODL_LANES, n);
    long e = mm_block_est(rows, cols, K, pm, tstore, acc, R0, V0);
    if (best < 0 || e <= best) { best = e; *bpr = pr; } /* ties: more row blocks (measured slightly cheaper) */
  }
  return best;
}

#ifndef MM_SKEW
#define MM_SKEW 6
#endif

/* This core's block of the pr x (cores / pr) grid: rows [*i0, *i1), columns [*j0, *j1). */
static void mm_grid_block(int m, int n, int pr, int unit, int *i0, int *i1, int *j0, int *j1) {
  int pc = odl_num_cores() / pr, id = odl_core_id(), ri = id / pc, ci = id % pc, q, r;
  q = m / pr; r = m % pr;
  *i0 = ri * q + (ri < r ? ri : r);
  *i1 = *i0 + q + (ri < r ? 1 : 0);
  int nu = (n + unit - 1) / unit;
  q = nu / pc; r = nu % pc;
  int lo = ci * q + (ci < r ? ci : r), hi = lo + q + (ci < r ? 1 : 0);
  *j0 = odl_min_i(lo * unit, n);
  *j1 = odl_min_i(hi * unit, n);
}

/* FP32 sums K in chunks of at most MM_KB terms, each into fresh accumulators, the chunk sums added to C one after
 * another (blocked summation, as BLAS kernels block K): the rounding error of one long running sum grows with K (a
 * 3x3 convolution of K = 432 came out 1.69x PyTorch's FP32 error on its output, a linear layer of K = 4,096 1.2-1.6x),
 * a chunked one with MM_KB + K / MM_KB. Chunks are of equal length (K = 432: 7 of 61-62). Each chunk after the first
 * costs a load, an add and a store per element of C. FP16 accumulates in FP32 lanes and rounds once to FP16, which
 * hides the running sum's error: one pass. */
#define MM_KB 64
ODL_INLINE int mm_k_chunks(int K) {
#if ODL_LANES == 1
  return (K + MM_KB - 1) / MM_KB;
#else
  (void)K;
  return 1;
#endif
}
/* the end of chunk q of the nk chunks of K (equal lengths) */
ODL_INLINE int mm_k_end(int K, int nk, int q) { return (int)((long)K * (q + 1) / nk); }

/* C(i, j) = bias(i or j) + sum_k a[i*rs + k*ks] * b[k*ldb + j], stored at c[i*ldc + j*cjs]; bias[i] (bcols = 0) or
 * bias[j] (bcols = 1: the swapped orientation of tn), NULL: none. */
ODL_INLINE void mm_v_run(const odl_t *a, int rs, int ks, const odl_t *b, int ldb, odl_t *c, int ldc, int cjs,
                         int m, int n, int K, int pm, int acc, int pr, int unit, const odl_t *bias, int bcols) {
  int i0, i1, j0, j1;
  mm_grid_block(m, n, pr, unit, &i0, &i1, &j0, &j1);
  if (j0 >= j1 || i0 >= i1) return;
  /* Skew: core k starts k * MM_SKEW empty iterations (a few cycles each) later. The cores of a row block read the same
   * A elements, and of a column block the same B vectors, in the same order; started together they ask one TCDM
   * bank for the same word in the same cycle, again and again (the banks serve one request a cycle, no broadcast).
   * Measured under the timed model (odl profile resnet8 --precision fp16 --budget 512K --dma-controller
   * --accumulate fp16): 6,679,214 cycles without, 6,374,098 with MM_SKEW 6 (1: 6,419,190; 12: 6,385,226). */
  odl_skew(MM_SKEW);
#if ODL_LANES == 1
  /* FP32: K in chunks (mm_k_chunks), each summed into fresh accumulators and added to C */
  int nk = mm_k_chunks(K);
  for (int q = 0, k0 = 0; q < nk; q++) {
    int k1 = mm_k_end(K, nk, q);
    mm_block(a + (size_t)k0 * ks, rs, ks, b + (size_t)k0 * ldb, ldb, c, ldc, cjs, k1 - k0, i0, i1, j0, j1, pm,
             acc || q, q ? (const odl_t *)0 : bias, bcols);
    k0 = k1;
  }
#else   /* one pass: a loop of one chunk here costs FP16 ResNet8 2.5 K instructions a step */
  mm_block(a, rs, ks, b, ldb, c, ldc, cjs, K, i0, i1, j0, j1, pm, acc, bias, bcols);
#endif
}

/* The plan of the last shape each core ran, per form: the grid search costs ~800 instructions per orientation
 * (a tenth of a small call), and the lowering issues runs of same-shape calls (the chunks of a conv). One slot
 * per core (a core only reads its own slot; .bss starts zeroed and m >= 1, so an empty slot never matches). */
typedef struct { int m, n, k, acc, ldc, cjs, cores, sw, pr, unit; } mm_plan_t;
#define MM_PLAN_SLOTS 16
static mm_plan_t mm_plans[2][MM_PLAN_SLOTS];

static mm_plan_t *mm_plan_slot(int form, int m, int n, int K, int acc, int ldc, int cjs) {
  mm_plan_t *s = &mm_plans[form][odl_core_id() % MM_PLAN_SLOTS];
  int p = odl_num_cores();
  if (s->m == m && s->n == n && s->k == K && s->acc == acc && s->ldc == ldc && s->cjs == cjs && s->cores == p)
    return s;
  s->m = 0; /* invalid while it is rewritten */
  s->sw = 0;
  s->pr = 1;
  s->unit = ODL_LANES;
  if (form == 0) {
    mm_plan(m, n, K, 1, cjs != 1, acc, &s->pr, &s->unit);
  } else {
    /* tn: both operands are contiguous along their row at each k, so C^T = B^T A is the same loop with A
     * and B swapped (vectors along M, C stored transposed): taken when the estimate says its tiles fit the
     * shape better (e.g. M = 16 rows, which 7-row tiles cover badly) */
    int spr = 1, sunit = ODL_LANES;
    long e = mm_plan(m, n, K, 0, cjs != 1, acc, &s->pr, &s->unit);
    long es = mm_plan(n, m, K, 0, ldc != 1, acc, &spr, &sunit);
    if (es < e) { s->sw = 1; s->pr = spr; s->unit = sunit; }
  }
  s->n = n; s->k = K; s->acc = acc; s->ldc = ldc; s->cjs = cjs; s->cores = p;
  s->m = m;
  return s;
}

/* The core grid of a call: planned ahead (p->plan, for this many cores), else searched here (cached per shape).
 * The search costs every core ~800 instructions per orientation whenever the shape changes, which a tiled step
 * does at most calls. */
ODL_INLINE void mm_grid_of(const odl_mm_args_t *p, int form, int ldc, int cjs, int *pr, int *sw, int *unit) {
  int cores = odl_num_cores(), q = p->plan & 0xff;
  if (p->plan && (p->plan >> 16) == cores && q >= 1 && cores % q == 0) {
    *pr = q;
    *sw = form ? (p->plan >> 8) & 1 : 0;
    *unit = ODL_LANES;
    return;
  }
  const mm_plan_t *pl = mm_plan_slot(form, p->m, p->n, p->k, p->accumulate, ldc, cjs);
  *pr = pl->pr;
  *sw = pl->sw;
  *unit = pl->unit;
}

void odl_mm_nn(void *args) {
  const odl_mm_args_t *p = (const odl_mm_args_t *)args;
  int m = p->m, n = p->n, K = p->k, acc = p->accumulate;
  int lda = p->lda ? p->lda : K, ldb = p->ldb ? p->ldb : n;
  int ldc = p->ct ? 1 : (p->ldc ? p->ldc : n), cjs = p->ct ? (p->ldc ? p->ldc : m) : 1;
  int pr, sw, unit;
  mm_grid_of(p, 0, ldc, cjs, &pr, &sw, &unit);
  mm_v_run(p->a, lda, 1, p->b, ldb, p->c, ldc, cjs, m, n, K, 1, acc, pr, unit, p->bias, 0);
}

void odl_mm_tn(void *args) {
  const odl_mm_args_t *p = (const odl_mm_args_t *)args;
  int m = p->m, n = p->n, K = p->k, acc = p->accumulate;
  int lda = p->lda ? p->lda : m, ldb = p->ldb ? p->ldb : n;
  int ldc = p->ct ? 1 : (p->ldc ? p->ldc : n), cjs = p->ct ? (p->ldc ? p->ldc : m) : 1;
  int pr, sw, unit;
  mm_grid_of(p, 1, ldc, cjs, &pr, &sw, &unit);
  if (sw)
    mm_v_run(p->b, 1, ldb, p->a, lda, p->c, cjs, ldc, n, m, K, 0, acc, pr, unit, p->bias, 1);
  else
    mm_v_run(p->a, 1, lda, p->b, ldb, p->c, ldc, cjs, m, n, K, 0, acc, pr, unit, p->bias, 0);
}

/* ---------------- nt ---------------- */
/* nt: whole rows of C (M) or column ranges of C (N), whichever gives the smaller padded tile area on the
 * busiest core. */
ODL_INLINE void mm_split(int m, int n, int unit, int tile_cols, int *i0, int *i1, int *j0, int *j1) {
  int p = odl_num_cores();
  int rm = (m + p - 1) / p;
  long cost_r = (long)pad_to(rm, MM_NT) * pad_to(n, tile_cols);
  int nu = (n + unit - 1) / unit;
  int cn = (nu + p - 1) / p * unit;
  long cost_c = (long)pad_to(m, MM_NT) * pad_to(cn, tile_cols);
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

ODL_INLINE void mm_tile_nt(const odl_t *a, int lda, const odl_t *b, int ldb, odl_t *c, int ldc, int K, int R,
                           int C, int accumulate, const odl_t *bj) {
  mm_acc_t f[MM_NT][MM_NT];
  for (int r = 0; r < R; r++)
    for (int q = 0; q < C; q++) f[r][q] = mm_zero();
  const odl_t *a0 = a, *a1 = a + (R > 1 ? lda : 0), *a2 = a + (R > 2 ? 2 * lda : 0), *a3 = a + (R > 3 ? 3 * lda : 0);
  const odl_t *b0 = b, *b1 = b + (C > 1 ? ldb : 0), *b2 = b + (C > 2 ? 2 * ldb : 0), *b3 = b + (C > 3 ? 3 * ldb : 0);
  int nvec = K / ODL_LANES; /* whole vectors along K */
  if (nvec > 0) {
    const odl_t *aend = a0 + nvec * ODL_LANES;
    do {
      odl_vec_t va[MM_NT], vb[MM_NT];
      va[0] = odl_vload(a0); a0 += ODL_LANES;
      if (R > 1) { va[1] = odl_vload(a1); a1 += ODL_LANES; }
      if (R > 2) { va[2] = odl_vload(a2); a2 += ODL_LANES; }
      if (R > 3) { va[3] = odl_vload(a3); a3 += ODL_LANES; }
      vb[0] = odl_vload(b0); b0 += ODL_LANES;
      if (C > 1) { vb[1] = odl_vload(b1); b1 += ODL_LANES; }
      if (C > 2) { vb[2] = odl_vload(b2); b2 += ODL_LANES; }
      if (C > 3) { vb[3] = odl_vload(b3); b3 += ODL_LANES; }
      for (int r = 0; r < R; r++)
        for (int q = 0; q < C; q++) f[r][q] = mm_fma(f[r][q], va[r], vb[q]);
    } while (a0 != aend);
  }
  const odl_t *pa[MM_NT] = {a0, a1, a2, a3}, *pb[MM_NT] = {b0, b1, b2, b3};
  for (int r = 0; r < R; r++)
    for (int q = 0; q < C; q++) {
      float t = mm_hsum(f[r][q]);
      if (K % ODL_LANES) t += (float)pa[r][0] * (float)pb[q][0]; /* odd K in FP16: last element */
      if (bj) t += (float)bj[q];                                  /* column bias, before the rounding */
      odl_t *pc = c + r * ldc + q;
      *pc = accumulate ? (odl_t)((float)*pc + t) : (odl_t)t;
    }
}

ODL_INLINE void mm_nt_rows(const odl_t *a, int lda, const odl_t *b, int ldb, odl_t *c, int ldc, int K, int j0,
                           int j1, int R, int acc, const odl_t *bias) {
  int j = j0;
#define MM_BJ(j) (bias ? bias + (j) : (const odl_t *)0)
  for (; j + MM_NT <= j1; j += MM_NT) mm_tile_nt(a, lda, b + j * ldb, ldb, c + j, ldc, K, R, MM_NT, acc, MM_BJ(j));
  for (; j < j1; j++) mm_tile_nt(a, lda, b + j * ldb, ldb, c + j, ldc, K, R, 1, acc, MM_BJ(j));
#undef MM_BJ
}

void odl_mm_nt(void *args) {
  const odl_mm_args_t *p = (const odl_mm_args_t *)args;
  int m = p->m, n = p->n, K = p->k, acc = p->accumulate;
  int lda = p->lda ? p->lda : K, ldb = p->ldb ? p->ldb : K, ldc = p->ldc ? p->ldc : n;
  int i0, i1, j0, j1;
  mm_split(m, n, 1, MM_NT, &i0, &i1, &j0, &j1);
  if (j0 >= j1) return;
  int nk = mm_k_chunks(K);   /* FP32: K in chunks, as mm_v_run */
  for (int q = 0, k0 = 0; q < nk; q++) {
    int k1 = mm_k_end(K, nk, q), i = i0;
    const odl_t *pa = p->a + k0, *pb = p->b + k0, *bias = q ? (const odl_t *)0 : p->bias;
    for (; i + MM_NT <= i1; i += MM_NT)
      mm_nt_rows(pa + i * lda, lda, pb, ldb, p->c + i * ldc, ldc, k1 - k0, j0, j1, MM_NT, acc || q, bias);
    for (; i < i1; i++)
      mm_nt_rows(pa + i * lda, lda, pb, ldb, p->c + i * ldc, ldc, k1 - k0, j0, j1, 1, acc || q, bias);
    k0 = k1;
  }
}
