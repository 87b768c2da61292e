/* The embedded library behind odl.h: entry points over the generated programs (odl_embed.h), the state blob.
 * Target independent: the programs run on the team (odl_team.h), the store sits on the flash HAL (odl_store.c).
 * Inputs are normalised here with the checkpoint's statistics, x' = (x - mean) / std in FP32 exactly as the host
 * does (odl/data.py), then rounded to the device's element type. */
#include "odl.h"
#include "odl_embed.h"
#include "odl_kernels.h"
#include "crc32.h"
#include "platform.h"

#define CTL ((odl_train_ctl_t *)(odl_arena + odl_embed_model.ctl_offset))

static int inited;

int odl_initialized(void) { return inited; }

const char *odl_status_str(odl_status s) {
  static const char *const names[] = {"ODL_OK", "ODL_SKIPPED", "ODL_ERR_ARG", "ODL_ERR_NOT_FINITE", "ODL_ERR_STATE",
                                      "ODL_ERR_CAPACITY", "ODL_ERR_BLOB_MAGIC", "ODL_ERR_BLOB_VERSION",
                                      "ODL_ERR_BLOB_MODEL", "ODL_ERR_BLOB_SIZE", "ODL_ERR_BLOB_CRC", "ODL_ERR_FLASH",
                                      "ODL_ERR_NO_STATE", "ODL_ERR_UNSUPPORTED", "ODL_ERR_FLASH_SIZE"};
  return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "ODL_UNKNOWN_STATUS";
}

static int finite(float v) { return v == v && v - v == 0.0f; }

static void copy_bytes(void *dst, const void *src, uint32_t n) {
  unsigned char *d = (unsigned char *)dst;
  const unsigned char *s = (const unsigned char *)src;
  for (uint32_t i = 0; i < n; i++) d[i] = s[i];
}

odl_status odl_init(void) {
  uart_init();
  odl_crc32_init();
  for (uint32_t i = 0; i < odl_arena_bytes; i++) odl_arena[i] = 0;
  copy_bytes(odl_arena, odl_initial_state, odl_embed_model.shared_bytes);
  odl_hp = odl_hp_compiled;
  odl_stack_guard_check();      /* arms the per-hart stack guard (checked after every program) */
  inited = 1;
  return ODL_OK;
}

/* n raw samples -> the program's input buffer (normalised, in the device's element type). */
static odl_status load_inputs(const odl_prog_t *p, const float *x, uint32_t n) {
  odl_t *dst = (odl_t *)(odl_arena + p->x_off);
  const uint32_t per = ODL_INPUT_SIZE, plane = odl_embed_model.norm_plane, ch = odl_embed_model.norm_channels;
  for (uint32_t i = 0; i < n * per; i++)
    if (!finite(x[i])) return ODL_ERR_NOT_FINITE;
  for (uint32_t i = 0; i < n * per; i++) {
    uint32_t c = ((i % per) / plane) % ch;
    dst[i] = (odl_t)((x[i] - odl_norm_mean[c]) / odl_norm_std[c]);
  }
  return ODL_OK;
}

static float run(const odl_prog_t *p) {
  float loss = p->fn();
  odl_stack_guard_check();
  return loss;
}

odl_status odl_predict(const float *x, float *logits) {
  if (!inited) return ODL_ERR_STATE;
  if (!x || !logits) return ODL_ERR_ARG;
  const odl_prog_t *p = &odl_programs[odl_embed_model.predict_prog];
  odl_status s = load_inputs(p, x, 1);
  if (s != ODL_OK) return s;
  run(p);
  const odl_t *out = (const odl_t *)(odl_arena + p->out_off);
  for (uint32_t c = 0; c < ODL_OUTPUT_SIZE; c++) logits[c] = (float)out[c];
  return ODL_OK;
}

odl_status odl_train_step(const float *x, const int32_t *y, float *loss) {
  if (!inited) return ODL_ERR_STATE;
  if (!x || !y) return ODL_ERR_ARG;
  const odl_prog_t *p = &odl_programs[odl_embed_model.train_prog];
  for (uint32_t i = 0; i < ODL_BATCH; i++)
    if (y[i] < 0 || y[i] >= ODL_OUTPUT_SIZE) return ODL_ERR_ARG;
  odl_status s = load_inputs(p, x, ODL_BATCH);
  if (s != ODL_OK) return s;
  copy_bytes(odl_arena + p->y_off, y, ODL_BATCH * sizeof(int32_t));
  uint32_t skipped0 = CTL->skipped;
  float l = run(p);
  if (loss) *loss = l;
  return CTL->skipped != skipped0 ? ODL_SKIPPED : ODL_OK;
}

odl_status odl_evaluate(const float *x, const int32_t *y, uint32_t n, float *accuracy, float *loss) {
  if (!inited) return ODL_ERR_STATE;
  if (!x || !y || n == 0) return ODL_ERR_ARG;
  for (uint32_t i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= ODL_OUTPUT_SIZE) return ODL_ERR_ARG;
  const odl_prog_t *p = &odl_programs[odl_embed_model.predict_prog];
  uint32_t correct = 0;
  float sum = 0.0f;
  for (uint32_t i = 0; i < n; i++) {
    odl_status s = load_inputs(p, x + (uint64_t)i * ODL_INPUT_SIZE, 1);
    if (s != ODL_OK) return s;
    run(p);
    const odl_t *out = (const odl_t *)(odl_arena + p->out_off);
    uint32_t best = 0;      /* first maximum, as torch.argmax */
    float mx = (float)out[0];
    for (uint32_t c = 1; c < ODL_OUTPUT_SIZE; c++)
      if ((float)out[c] > mx) { mx = (float)out[c]; best = c; }
    correct += best == (uint32_t)y[i];
    float se = 0.0f;
    for (uint32_t c = 0; c < ODL_OUTPUT_SIZE; c++) se += odl_expf((float)out[c] - mx);
    sum += mx + odl_logf(se) - (float)out[y[i]];
  }
  if (accuracy) *accuracy = (float)correct / (float)n;
  if (loss) *loss = sum / (float)n;
  return ODL_OK;
}

/* ---- the state blob ---- */
uint32_t odl_params_size(void) { return ODL_BLOB_HEADER_BYTES + odl_embed_model.shared_bytes; }

void odl_blob_header(odl_blob_header_t *h) {
  h->magic = ODL_BLOB_MAGIC;
  h->version = ODL_BLOB_VERSION;
  h->model_hash = odl_embed_model.model_hash;
  h->payload_bytes = odl_embed_model.shared_bytes;
  h->step = CTL->step;
  h->header_bytes = ODL_BLOB_HEADER_BYTES;
  h->reserved = 0;
  h->crc = odl_crc32_update(odl_crc32_update(0, h, 28), odl_arena, odl_embed_model.shared_bytes);
}

odl_status odl_params_export(void *dst, uint32_t cap, uint32_t *written) {
  if (!inited) return ODL_ERR_STATE;
  if (!dst) return ODL_ERR_ARG;
  uint32_t n = odl_params_size();
  if (written) *written = 0;
  if (cap < n) return ODL_ERR_CAPACITY;
  odl_blob_header_t h;
  odl_blob_header(&h);
  copy_bytes(dst, &h, sizeof h);
  copy_bytes((unsigned char *)dst + sizeof h, odl_arena, odl_embed_model.shared_bytes);
  if (written) *written = n;
  return ODL_OK;
}

int odl_blob_import_stream(odl_blob_read_fn read, void *ctx, uint32_t n) {
  if (!inited) return ODL_ERR_STATE;
  odl_blob_header_t h;
  if (n < sizeof h) return ODL_ERR_BLOB_SIZE;
  if (read(ctx, 0, &h, sizeof h)) return ODL_ERR_FLASH;
  if (h.magic != ODL_BLOB_MAGIC) return ODL_ERR_BLOB_MAGIC;
  if (h.version != ODL_BLOB_VERSION || h.header_bytes != ODL_BLOB_HEADER_BYTES) return ODL_ERR_BLOB_VERSION;
  if (h.model_hash != odl_embed_model.model_hash) return ODL_ERR_BLOB_MODEL;
  if (h.payload_bytes != odl_embed_model.shared_bytes || n != ODL_BLOB_HEADER_BYTES + h.payload_bytes)
    return ODL_ERR_BLOB_SIZE;
  /* pass 1: the CRC over the blob as it is; pass 2 (only when it holds): copy it in */
  static unsigned char chunk[256];
  uint32_t crc = odl_crc32_update(0, &h, 28);
  for (uint32_t off = 0; off < h.payload_bytes; off += sizeof chunk) {
    uint32_t k = h.payload_bytes - off < sizeof chunk ? h.payload_bytes - off : sizeof chunk;
    if (read(ctx, ODL_BLOB_HEADER_BYTES + off, chunk, k)) return ODL_ERR_FLASH;
    crc = odl_crc32_update(crc, chunk, k);
  }
  if (crc != h.crc) return ODL_ERR_BLOB_CRC;
  if (read(ctx, ODL_BLOB_HEADER_BYTES, odl_arena, h.payload_bytes)) return ODL_ERR_FLASH;
  return ODL_OK;
}

static int mem_read(void *ctx, uint32_t off, void *dst, uint32_t n) {
  copy_bytes(dst, (const unsigned char *)ctx + off, n);
  return 0;
}

odl_status odl_params_import(const void *src, uint32_t n) {
  if (!src) return ODL_ERR_ARG;
  return (odl_status)odl_blob_import_stream(mem_read, (void *)src, n);
}

/* ---- settings and counters ---- */
odl_status odl_set_lr(float lr) {
  if (!finite(lr) || lr < 0.0f) return ODL_ERR_ARG;
  odl_hp.lr = lr;
  return ODL_OK;
}

odl_status odl_set_momentum(float m) {
  if (!finite(m) || m < 0.0f) return ODL_ERR_ARG;
  if (!odl_embed_model.has_momentum && m != 0.0f) return ODL_ERR_UNSUPPORTED;
  odl_hp.momentum = m;
  return ODL_OK;
}

odl_status odl_set_weight_decay(float wd) {
  if (!finite(wd) || wd < 0.0f) return ODL_ERR_ARG;
  if (!odl_embed_model.has_weight_decay && wd != 0.0f) return ODL_ERR_UNSUPPORTED;
  odl_hp.weight_decay = wd;
  return ODL_OK;
}

float odl_get_lr(void) { return odl_hp.lr; }
uint32_t odl_step_count(void) { return inited ? CTL->step : 0; }
uint32_t odl_skipped_count(void) { return inited ? CTL->skipped : 0; }
float odl_loss_scale(void) { return inited && odl_embed_model.mixed ? CTL->scale : 1.0f; }
uint64_t odl_cycles(void) { return odl_read_mcycle(); }
