/* Personalisation with no host (odl compile --app personalize): the samples of --data sit in the read-only image
 * (src/odl_app_data.c) standing in for what the device's sensor collected. First boot (empty store): evaluate,
 * train odl_app_epochs epochs (full batches, in order), evaluate, save. A boot that finds a saved state: load it,
 * evaluate, stop. One JSON line per phase on the UART. */
#include "odl.h"

extern const uint32_t odl_app_epochs, odl_app_n_train, odl_app_n_val;
extern const float odl_app_x[], odl_app_x_val[];
extern const int32_t odl_app_y[], odl_app_y_val[];

static int fail(const char *what, odl_status s) {
  printf("{\"phase\": \"error\", \"what\": \"%s\", \"status\": \"%s\"}\n", what, odl_status_str(s));
  return 1;
}

int main(void) {
  float acc, loss;
  odl_status s = odl_init();
  if (s != ODL_OK) return fail("init", s);
  s = odl_store_load();
  if (s == ODL_OK) {
    if ((s = odl_evaluate(odl_app_x_val, odl_app_y_val, odl_app_n_val, &acc, &loss)) != ODL_OK) return fail("evaluate", s);
    printf("{\"phase\": \"restored\", \"val_acc\": %.6f, \"val_loss\": %.6f, \"step\": %u, \"seq\": %u}\n", acc, loss,
           odl_step_count(), odl_store_seq());
    return 0;
  }
  if (s != ODL_ERR_NO_STATE) return fail("load", s);
  if ((s = odl_evaluate(odl_app_x_val, odl_app_y_val, odl_app_n_val, &acc, &loss)) != ODL_OK) return fail("evaluate", s);
  printf("{\"phase\": \"before\", \"val_acc\": %.6f, \"val_loss\": %.6f}\n", acc, loss);
  uint32_t per_epoch = odl_app_n_train / ODL_BATCH, skipped = 0;
  uint64_t c0 = odl_cycles();
  float sum = 0.0f;          /* the last epoch's mean loss over its applied steps */
  uint32_t applied = 0;
  for (uint32_t e = 0; e < odl_app_epochs; e++) {
    sum = 0.0f;
    applied = 0;
    for (uint32_t b = 0; b < per_epoch; b++) {
      s = odl_train_step(odl_app_x + (uint64_t)b * ODL_BATCH * ODL_INPUT_SIZE, odl_app_y + b * ODL_BATCH, &loss);
      if (s == ODL_SKIPPED) skipped++;
      else if (s != ODL_OK) return fail("train_step", s);
      else { sum += loss; applied++; }
    }
  }
  uint64_t cycles = odl_cycles() - c0;
  if ((s = odl_evaluate(odl_app_x_val, odl_app_y_val, odl_app_n_val, &acc, &loss)) != ODL_OK) return fail("evaluate", s);
  printf("{\"phase\": \"after\", \"val_acc\": %.6f, \"val_loss\": %.6f, \"train_loss\": %.6f, \"epochs\": %u, "
         "\"steps\": %u, \"skipped\": %u, \"cycles_per_step\": %u}\n", acc, loss,
         applied ? sum / (float)applied : 0.0f, odl_app_epochs, odl_step_count(), skipped,
         (uint32_t)(cycles / (odl_app_epochs * per_epoch)));
  if ((s = odl_store_save()) != ODL_OK) return fail("save", s);
  printf("{\"phase\": \"saved\", \"step\": %u, \"seq\": %u, \"bytes\": %u}\n", odl_step_count(), odl_store_seq(),
         odl_params_size());
  return 0;
}
