/* The programs of a generated firmware (templates/programs.c.j2) as the code around them sees them: odl train's
 * host-driven firmware (templates/train.c.j2) and the embedded library (targets/common/embed/odl_api.c). */
#ifndef ODL_PROGRAMS_H
#define ODL_PROGRAMS_H
#include <stdint.h>

/* Training state that persists across steps and travels with checkpoints (host: odl/train/loop.py CTL_FIELDS). */
typedef struct {
  uint32_t step;      /* training steps run (dropout seeds) */
  uint32_t updates;   /* updates applied (optimizer first-step rule, Adam bias corrections) */
  float b1t, b2t;     /* Adam: beta1^updates, beta2^updates, by repeated FP32 multiplication */
  float scale;        /* loss scale (mixed) */
  uint32_t clean;     /* consecutive clean (finite-gradient) steps since the scale last changed */
  int32_t overflow;   /* this step saw an Inf/NaN gradient */
  uint32_t skipped;   /* updates skipped for Inf/NaN gradients */
  uint32_t interval;  /* dynamic scaling: clean steps before the scale doubles */
  uint32_t dynamic;   /* 1: dynamic loss scaling, 0: fixed */
} odl_train_ctl_t;
typedef struct {
  float (*fn)(void);
  uint32_t eval;                 /* 1: forward-only evaluation program */
  uint32_t batch;
  uint32_t x_off, x_bytes;       /* input buffer and bytes per sample */
  uint32_t y_off, y_bytes;       /* labels/targets buffer and bytes per sample (0: none) */
  uint32_t out_off, out_classes; /* logits [batch, classes] */
  uint32_t out_bytes;
} odl_prog_t;

extern const uint32_t odl_num_programs;
extern const odl_prog_t odl_programs[];

/* Optimizer settings the embedded library reads at run time (odl_set_lr, ...); odl train's firmware compiles its
 * settings in as literals and does not use these. */
typedef struct { float lr, momentum, weight_decay; } odl_hparams_t;
extern odl_hparams_t odl_hp;
#endif
