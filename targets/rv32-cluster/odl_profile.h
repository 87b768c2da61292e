/* rv32-cluster profiling support (beyond odl_team.h).
 * odl_parallel_profiled(fn, args, counts): like odl_parallel, but the cores run their shares one at a
 * time (core 0, then 1, 2, ...) while the others sleep, and counts[k] receives the exact number of
 * instructions core k retired inside fn (plus a constant call overhead of a few instructions). Exact and
 * deterministic on QEMU -icount, whose minstret is one counter shared by all harts.
 * fn must not call odl_barrier. counts must have odl_num_cores() entries. */
#ifndef ODL_PROFILE_H
#define ODL_PROFILE_H
#include <stdint.h>
#include "odl_team.h"
void odl_parallel_profiled(odl_task_fn fn, void *args, uint64_t *core_instret);
#endif
