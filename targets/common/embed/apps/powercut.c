/* Power-cut campaign app (make powercut; embed/powercut.sh drives it). Linked with the flash driver built with -DODL_POWERCUT (make POWERCUT=1): it stops
 * the machine before the operation numbered by the word at ODL_POWERCUT_ADDR (0: never). The word after it is
 * the mode:
 *   1 prepare: save Z (the initial state), then A (after one step): the store holds Z and A, A newest.
 *   2 cut:     train to B (two steps), odl_store_save with the cut armed; without a cut it prints the save's flash
 *              operations and cycles.
 *   3 verify:  odl_store_load, export, compare by value with A and B (recomputed here from the initial state):
 *              prints "recovered old", "recovered new" or "lost".
 * A and B are deterministic (same samples, same steps), so every boot recomputes them bitwise. */
#include "odl.h"
#include "odl_flash.h"

#ifndef ODL_POWERCUT_ADDR
#define ODL_POWERCUT_ADDR 0x87FFFF00u
#endif

static float x[ODL_BATCH * ODL_INPUT_SIZE];
static int32_t y[ODL_BATCH];
static unsigned char a[ODL_PARAMS_BYTES], b[ODL_PARAMS_BYTES], got[ODL_PARAMS_BYTES];

static int same(const unsigned char *p, const unsigned char *q) {
  for (uint32_t i = 0; i < ODL_PARAMS_BYTES; i++)
    if (p[i] != q[i]) return 0;
  return 1;
}

static odl_status step(void) {
  float loss;
  odl_status s = odl_train_step(x, y, &loss);
  return s == ODL_SKIPPED ? ODL_OK : s;
}

int main(void) {
  uint32_t mode = ((volatile uint32_t *)ODL_POWERCUT_ADDR)[1];
  uint32_t lcg = 777u, w;
  for (uint32_t i = 0; i < ODL_BATCH * ODL_INPUT_SIZE; i++) { lcg = lcg * 1664525u + 1013904223u; x[i] = (float)((lcg >> 8) % 17u); }
  for (uint32_t i = 0; i < ODL_BATCH; i++) { lcg = lcg * 1664525u + 1013904223u; y[i] = (int32_t)((lcg >> 8) % ODL_OUTPUT_SIZE); }
  odl_status s = odl_init();
  if (mode == 1) {
    if ((s = odl_store_save()) != ODL_OK || (s = step()) != ODL_OK || (s = odl_store_save()) != ODL_OK) {
      printf("prepare %s\n", odl_status_str(s));
      return 1;
    }
    printf("prepared seq %u\n", odl_store_seq());
    return 0;
  }
  if ((s = step()) != ODL_OK) return 2;
  odl_params_export(a, sizeof a, &w);
  if ((s = step()) != ODL_OK) return 2;
  odl_params_export(b, sizeof b, &w);
  if (mode == 2) {
    uint32_t ops0 = odl_flash_ops;
    uint64_t c0 = odl_cycles();
    s = odl_store_save();
    printf("save %s ops %u cycles %u seq %u\n", odl_status_str(s), odl_flash_ops - ops0, (uint32_t)(odl_cycles() - c0),
           odl_store_seq());
    return s == ODL_OK ? 0 : 1;
  }
  odl_init();
  s = odl_store_load();
  if (s != ODL_OK) { printf("lost (%s)\n", odl_status_str(s)); return 0; }
  odl_params_export(got, sizeof got, &w);
  printf("%s seq %u\n", same(got, a) ? "recovered old" : same(got, b) ? "recovered new" : "lost (another state)",
         odl_store_seq());
  return 0;
}
