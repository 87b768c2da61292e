/* Host implementation of odl_team.h for tests and native runs: odl_parallel() runs fn once per simulated core
 * id 0..P-1, sequentially, on the calling thread. Deterministic and dependency-free.
 * The kernel library never calls odl_barrier() inside a kernel (every kernel's per-core share is independent),
 * so a sequential team is exact. A barrier inside a parallel region with P > 1 cannot be honoured here and traps. */
#include "odl_team.h"

static int g_cores = 1;
static int g_id = 0;
static int g_in_parallel = 0;

void odl_host_set_cores(int p) { g_cores = p < 1 ? 1 : p; }
int odl_host_get_cores(void) { return g_cores; }

int odl_core_id(void) { return g_id; }
int odl_num_cores(void) { return g_cores; }

void odl_parallel(odl_task_fn fn, void *args) {
  g_in_parallel = 1;
  for (int id = 0; id < g_cores; id++) {
    g_id = id;
    fn(args);
  }
  g_id = 0;
  g_in_parallel = 0;
}

void odl_barrier(void) {
  if (g_in_parallel && g_cores > 1) __builtin_trap();
}
