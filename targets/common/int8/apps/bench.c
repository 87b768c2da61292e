/* The int8 deploy's figures (odl compile --deploy int8; odl/embed/bench.py --int8): cycles of one odl_predict after a
 * warm-up call, and the bytes odl.h states. One JSON line on the UART. Cycles are QEMU's with -icount shift=0: every
 * hart's instructions, interleaved, between the two reads. */
#include "odl.h"
#include "odl_timing.h"   /* built with -DODL_TIMED: the measured odl_predict is one step of the timing model */

static float x[ODL_INPUT_SIZE];

int main(void) {
  float logits[ODL_OUTPUT_SIZE];
  uint32_t s = 1u;
  for (uint32_t i = 0; i < ODL_INPUT_SIZE; i++) { s = s * 1664525u + 1013904223u; x[i] = (float)(s >> 20) / 4096.0f; }
  odl_status st = odl_init();
  st |= odl_predict(x, logits);
  uint64_t c0 = odl_cycles();
  ODL_TIMING_MARK(ODL_MARK_STEP_BEGIN, 0);
  st |= odl_predict(x, logits);
  ODL_TIMING_MARK(ODL_MARK_STEP_END, 0);
  uint64_t cp = odl_cycles() - c0;
  printf("{\"predict_cycles\": %u, \"weight_bytes\": %u, \"arena_bytes\": %u, \"predict_bytes\": %u, \"ok\": %d}\n",
         (uint32_t)cp, ODL_WEIGHT_BYTES, ODL_ARENA_BYTES, ODL_PREDICT_BYTES, st == ODL_OK);
  return st == ODL_OK ? 0 : 1;
}
