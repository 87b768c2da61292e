/* A plain C app written only against odl.h (tests/device/test_embed.py): one batch of pseudo-random samples (an LCG the
 * test repeats in Python), predict, one step, the state blob before and after, import/export round trips, damaged
 * blobs refused without a change, bad arguments refused, then the batch learned by repeated steps. */
#include "odl.h"

static float x[ODL_BATCH * ODL_INPUT_SIZE];
static int32_t y[ODL_BATCH];
static unsigned char blob0[ODL_PARAMS_BYTES], blob1[ODL_PARAMS_BYTES], blob2[ODL_PARAMS_BYTES], bad[ODL_PARAMS_BYTES];

static uint32_t lcg = 12345u;
static uint32_t next(void) { lcg = lcg * 1664525u + 1013904223u; return lcg >> 8; }

static void hex(const char *tag, const unsigned char *b, uint32_t n) {
  static const char d[] = "0123456789abcdef";
  printf("%s ", tag);
  for (uint32_t i = 0; i < n; i++) printf("%c%c", d[b[i] >> 4], d[b[i] & 15]);
  printf("\n");
}

static int same(const unsigned char *a, const unsigned char *b, uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    if (a[i] != b[i]) return 0;
  return 1;
}

static int fails;
static void expect(const char *what, odl_status got, odl_status want) {
  printf("check %s %s %s\n", what, odl_status_str(got), got == want ? "ok" : "FAIL");
  if (got != want) fails++;
}

/* a damaged copy of blob1 must be refused with `want` and leave the state (blob0 loaded) as it was */
static void refused(const char *what, uint32_t n, odl_status want) {
  uint32_t w;
  expect(what, odl_params_import(bad, n), want);
  odl_params_export(blob2, sizeof blob2, &w);
  printf("check %s-unchanged %s\n", what, same(blob2, blob0, ODL_PARAMS_BYTES) ? "ok" : "FAIL");
  if (!same(blob2, blob0, ODL_PARAMS_BYTES)) fails++;
}

int main(void) {
  expect("init", odl_init(), ODL_OK);
  for (uint32_t i = 0; i < ODL_BATCH * ODL_INPUT_SIZE; i++) x[i] = (float)(next() % 17u);   /* raw pixels 0..16 */
  for (uint32_t i = 0; i < ODL_BATCH; i++) y[i] = (int32_t)(next() % ODL_OUTPUT_SIZE);
  float logits[ODL_OUTPUT_SIZE];
  expect("predict", odl_predict(x, logits), ODL_OK);
  printf("logits");
  for (uint32_t c = 0; c < ODL_OUTPUT_SIZE; c++) printf(" %.9f", logits[c]);
  printf("\n");
  uint32_t w = 0;
  expect("export-small", odl_params_export(blob0, ODL_PARAMS_BYTES - 1, &w), ODL_ERR_CAPACITY);
  expect("export", odl_params_export(blob0, sizeof blob0, &w), ODL_OK);
  printf("size %u %u\n", w, odl_params_size());
  hex("blob0", blob0, w);
  float loss = 0.0f;
  odl_status s = odl_train_step(x, y, &loss);
  printf("step1 %s %.9f\n", odl_status_str(s), loss);
  odl_params_export(blob1, sizeof blob1, &w);
  hex("blob1", blob1, w);
  /* round trip: import the state before the step, export it again: bitwise the same */
  expect("import", odl_params_import(blob0, ODL_PARAMS_BYTES), ODL_OK);
  odl_params_export(blob2, sizeof blob2, &w);
  printf("check roundtrip %s\n", same(blob2, blob0, ODL_PARAMS_BYTES) ? "ok" : "FAIL");
  /* damaged blobs */
  for (uint32_t i = 0; i < ODL_PARAMS_BYTES; i++) bad[i] = blob1[i];
  bad[ODL_PARAMS_BYTES / 2] ^= 0x10u;
  refused("crc", ODL_PARAMS_BYTES, ODL_ERR_BLOB_CRC);
  for (uint32_t i = 0; i < ODL_PARAMS_BYTES; i++) bad[i] = blob1[i];
  bad[0] ^= 1u;
  refused("magic", ODL_PARAMS_BYTES, ODL_ERR_BLOB_MAGIC);
  for (uint32_t i = 0; i < ODL_PARAMS_BYTES; i++) bad[i] = blob1[i];
  bad[8] ^= 1u;
  refused("model", ODL_PARAMS_BYTES, ODL_ERR_BLOB_MODEL);
  for (uint32_t i = 0; i < ODL_PARAMS_BYTES; i++) bad[i] = blob1[i];
  bad[4] = 2u;
  refused("version", ODL_PARAMS_BYTES, ODL_ERR_BLOB_VERSION);
  for (uint32_t i = 0; i < ODL_PARAMS_BYTES; i++) bad[i] = blob1[i];
  refused("size", ODL_PARAMS_BYTES - 4, ODL_ERR_BLOB_SIZE);
  /* bad arguments change nothing either */
  y[0] = ODL_OUTPUT_SIZE;
  expect("label-range", odl_train_step(x, y, &loss), ODL_ERR_ARG);
  y[0] = 0;
  float keep = x[3];
  x[3] = 0.0f / 0.0f;
  expect("nan-input", odl_train_step(x, y, &loss), ODL_ERR_NOT_FINITE);
  x[3] = keep;
  expect("null", odl_predict(0, logits), ODL_ERR_ARG);
  expect("lr-negative", odl_set_lr(-1.0f), ODL_ERR_ARG);
  odl_params_export(blob2, sizeof blob2, &w);
  printf("check args-unchanged %s\n", same(blob2, blob0, ODL_PARAMS_BYTES) ? "ok" : "FAIL");
  /* back to the state after step 1: bitwise what the step gave */
  expect("import1", odl_params_import(blob1, ODL_PARAMS_BYTES), ODL_OK);
  printf("steps %u\n", odl_step_count());
  /* the flash store (make run gives an erased flash): empty, then a save, a step, a load back to the saved state */
  expect("load-empty", odl_store_load(), ODL_ERR_NO_STATE);
  expect("save", odl_store_save(), ODL_OK);
  s = odl_train_step(x, y, &loss);
  expect("step-after-save", s == ODL_SKIPPED ? ODL_OK : s, ODL_OK);
  expect("load", odl_store_load(), ODL_OK);
  odl_params_export(blob2, sizeof blob2, &w);
  printf("seq %u\n", odl_store_seq());
  printf("check store-roundtrip %s\n", same(blob2, blob1, ODL_PARAMS_BYTES) ? "ok" : "FAIL");
  if (!same(blob2, blob1, ODL_PARAMS_BYTES)) fails++;
  /* learn the batch */
  float acc = 0.0f, eloss = 0.0f;
  expect("evaluate", odl_evaluate(x, y, ODL_BATCH, &acc, &eloss), ODL_OK);
  printf("before acc %.6f loss %.6f\n", acc, eloss);
  expect("set-lr", odl_set_lr(odl_get_lr() * 2.0f), ODL_OK);
  uint32_t skipped = 0;
  for (int k = 0; k < 30; k++) {
    s = odl_train_step(x, y, &loss);
    if (s == ODL_SKIPPED) skipped++;
    else if (s != ODL_OK) { printf("step %s\n", odl_status_str(s)); fails++; }
  }
  expect("evaluate2", odl_evaluate(x, y, ODL_BATCH, &acc, &eloss), ODL_OK);
  printf("after acc %.6f loss %.6f skipped %u scale %f steps %u\n", acc, eloss, skipped, odl_loss_scale(),
         odl_step_count());
  printf("done fails %d\n", fails);
  return fails ? 1 : 0;
}
