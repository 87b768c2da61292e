/* The odl_predict measurement of the bench apps (odl/embed/bench.py: the embedded library's embed/apps/bench.c and
 * the int8 deploy's apps/bench.c): one call after a warm-up call, its cycles by QEMU's clock (-icount shift=0: every
 * hart's instructions, interleaved, between the two reads); built with -DODL_TIMED, the measured call is one step
 * of the timing model. Include after odl.h. */
#ifndef ODL_BENCH_H
#define ODL_BENCH_H
#include "odl_timing.h"

static inline uint64_t odl_bench_predict(const float *x, float *logits, odl_status *st) {
  *st |= odl_predict(x, logits);
  uint64_t c0 = odl_cycles();
  ODL_TIMING_MARK(ODL_MARK_STEP_BEGIN, 0);
  *st |= odl_predict(x, logits);
  ODL_TIMING_MARK(ODL_MARK_STEP_END, 0);
  return odl_cycles() - c0;
}
#endif
