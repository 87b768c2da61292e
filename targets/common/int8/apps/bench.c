/* The int8 deploy's figures (odl compile --deploy int8; odl/embed/bench.py --int8): the cycles of one odl_predict
 * (odl_bench.h) and the bytes odl.h states. One JSON line on the UART. */
#include "odl.h"
#include "odl_bench.h"

static float x[ODL_INPUT_SIZE];

int main(void) {
  float logits[ODL_OUTPUT_SIZE];
  uint32_t s = 1u;
  for (uint32_t i = 0; i < ODL_INPUT_SIZE; i++) { s = s * 1664525u + 1013904223u; x[i] = (float)(s >> 20) / 4096.0f; }
  odl_status st = odl_init();
  uint64_t cp = odl_bench_predict(x, logits, &st);
  printf("{\"predict_cycles\": %u, \"weight_bytes\": %u, \"arena_bytes\": %u, \"stage_bytes\": %u, \"l1_bytes\": %u, "
         "\"predict_bytes\": %u, \"ok\": %d}\n", (uint32_t)cp, ODL_WEIGHT_BYTES, ODL_ARENA_BYTES, ODL_STAGE_BYTES,
         ODL_L1_BYTES, ODL_PREDICT_BYTES, st == ODL_OK);
  return st == ODL_OK ? 0 : 1;
}
