/* Fork/join team of cores. Implemented once per target (targets/<t>/team.c) and once for host tests
 * (kernels_c/host/team_host.c). Kernels only use these four calls. */
#ifndef ODL_TEAM_H
#define ODL_TEAM_H
typedef void (*odl_task_fn)(void *args);
int  odl_core_id(void);                       /* 0 .. odl_num_cores()-1 */
#ifdef ODL_NUM_CORES                          /* a target build: the team's size is a constant (divisions by it fold) */
static inline int odl_num_cores(void) { return ODL_NUM_CORES; }
#else
int  odl_num_cores(void);                     /* cores in the team */
#endif
void odl_parallel(odl_task_fn fn, void *args);/* run fn(args) on every core of the team; returns when all are done */
void odl_barrier(void);                       /* all cores of the running team meet here */

/* Core k waits k * iters empty loop iterations (a few cycles each) before its share: cores that would read the same
 * words, or words in the same TCDM bank, in lockstep no longer ask one bank in the same cycle (docs/performance.md). */
static inline void odl_skew(int iters) {
  for (int s = odl_core_id() * iters; s > 0; s--) __asm__ volatile("");
}

/* Split [0, n) into odl_num_cores() balanced chunks; this core gets [*lo, *hi). */
static inline void odl_split(int n, int *lo, int *hi) {
  int p = odl_num_cores(), id = odl_core_id();
  int q = n / p, r = n % p;
  *lo = id * q + (id < r ? id : r);
  *hi = *lo + q + (id < r ? 1 : 0);
}
#endif
