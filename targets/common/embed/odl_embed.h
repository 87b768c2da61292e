/* The generated model as the embedded library (odl_api.c, odl_store.c) sees it: which program trains and which
 * predicts, where the training state lies in the arena, its hash, the input normalisation and the initial state.
 * templates/embed/model.c.j2 defines these. */
#ifndef ODL_EMBED_H
#define ODL_EMBED_H
#include <stdint.h>
#include "odl_programs.h"

typedef struct {
  uint32_t train_prog, predict_prog;   /* indices into odl_programs */
  uint32_t shared_bytes, ctl_offset;   /* training state: arena [0, shared_bytes), control block at ctl_offset */
  uint32_t model_hash;                 /* odl/embed/blob.py model_hash: model, precision, optimizer, layout */
  uint32_t norm_channels, norm_plane;  /* x' = (x - mean[c]) / std[c], c = (i / plane) % channels */
  uint32_t has_momentum, has_weight_decay;   /* the compiled update has these terms (settable at run time) */
  uint32_t mixed;                      /* mixed precision: loss scaling */
} odl_embed_model_t;

extern const odl_embed_model_t odl_embed_model;
extern const odl_hparams_t odl_hp_compiled;   /* the settings given to odl compile */
extern const float odl_norm_mean[], odl_norm_std[];
extern const uint32_t odl_initial_state[];
extern unsigned char odl_arena[];
extern const uint32_t odl_arena_bytes;

/* Blob header (little-endian u32 words; odl/embed/blob.py reads and writes the same). */
#define ODL_BLOB_MAGIC 0x424C444Fu      /* "ODLB" */
#define ODL_BLOB_VERSION 1u
#define ODL_BLOB_HEADER_BYTES 32u
typedef struct {
  uint32_t magic, version, model_hash, payload_bytes, step, header_bytes, reserved;
  uint32_t crc;      /* CRC32 of header bytes [0, 28) followed by the payload */
} odl_blob_header_t;

/* Streamed import used by odl_params_import (memory) and odl_store_load (flash): read(ctx, off, dst, n) copies n
 * bytes of the blob at byte off. Checks everything before it changes anything. */
typedef int (*odl_blob_read_fn)(void *ctx, uint32_t off, void *dst, uint32_t n);
int odl_blob_import_stream(odl_blob_read_fn read, void *ctx, uint32_t n);   /* returns an odl_status */
void odl_blob_header(odl_blob_header_t *h);   /* the header of the current state */
int odl_initialized(void);                     /* odl_init has run */
#endif
