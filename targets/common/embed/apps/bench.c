/* The embedded library's figures for odl/embed/bench.py: cycles of odl_predict and odl_train_step (one call each,
 * after a warm-up call), the memory each needs (odl.h's defines), the state blob's size, and the flash operations
 * and cycles of one odl_store_save (into an erased store). One JSON line on the UART. Cycles are QEMU's with
 * -icount shift=0: every hart's instructions, interleaved, between the two reads (not the cost model of odl
 * profile). */
#include "odl.h"
#include "odl_bench.h"
#include "odl_flash.h"

static float x[ODL_BATCH * ODL_INPUT_SIZE];
static int32_t y[ODL_BATCH];

int main(void) {
  float logits[ODL_OUTPUT_SIZE], loss;
  uint32_t s = 1u;
  for (uint32_t i = 0; i < ODL_BATCH * ODL_INPUT_SIZE; i++) { s = s * 1664525u + 1013904223u; x[i] = (float)(s >> 20) / 4096.0f; }
  for (uint32_t i = 0; i < ODL_BATCH; i++) y[i] = (int32_t)(i % ODL_OUTPUT_SIZE);
  odl_status st = odl_init();
  uint64_t cp = odl_bench_predict(x, logits, &st);
  odl_status ts = odl_train_step(x, y, &loss);
  uint64_t c0 = odl_cycles();
  ts = odl_train_step(x, y, &loss);
  uint64_t ct = odl_cycles() - c0;
  uint32_t ops0 = odl_flash_ops;
  c0 = odl_cycles();
  odl_status ss = odl_store_save();
  uint64_t cs = odl_cycles() - c0;
  printf("{\"predict_cycles\": %u, \"train_step_cycles\": %u, \"train_status\": \"%s\", \"predict_bytes\": %u, "
         "\"train_step_bytes\": %u, \"predict_l1_bytes\": %u, \"train_step_l1_bytes\": %u, \"state_bytes\": %u, "
         "\"blob_bytes\": %u, \"save_status\": \"%s\", \"save_flash_ops\": %u, \"save_cycles\": %u, \"ok\": %d}\n",
         (uint32_t)cp, (uint32_t)ct, odl_status_str(ts), ODL_PREDICT_BYTES, ODL_TRAIN_STEP_BYTES,
         ODL_PREDICT_L1_BYTES, ODL_TRAIN_STEP_L1_BYTES, ODL_STATE_BYTES, odl_params_size(), odl_status_str(ss),
         odl_flash_ops - ops0, (uint32_t)cs, st == ODL_OK);
  return st == ODL_OK && ss == ODL_OK ? 0 : 1;
}
