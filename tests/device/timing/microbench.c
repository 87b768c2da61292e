/* Microbenchmarks with closed-form cycle counts for the timing model (tests/device/test_timing_model.py).
 * Every benchmark is a marked "call" (odl_timing.h); serial ones run on hart 0 twice (cold, then warm I-cache) and
 * the test reads the warm run; parallel ones run on every hart through the real fork/join. */
#include <stdint.h>
#include "odl_team.h"
#include "odl_timing.h"
#include "platform.h"
#define ARENA 1024u
unsigned char odl_arena[ARENA] __attribute__((section(".odl_arena"), aligned(64)));
const uint32_t odl_arena_bytes = ARENA;
const uint32_t odl_model_num_calls = 0u;
static uint32_t l1buf[8 * 16 * 4] __attribute__((section(".odl_l1"), aligned(64)));
static volatile uint32_t chain;

__attribute__((noinline)) static void empty(void) { __asm__ volatile(""); }
__attribute__((noinline)) static void load_use(void) {
  __asm__ volatile("mv a0, %0\n.rept 256\nlw a0, 0(a0)\n.endr" ::"r"(&chain) : "a0", "memory");
}
__attribute__((noinline)) static void taken(void) {
  __asm__ volatile(".option push\n.option norvc\n.rept 256\nbeq x0, x0, 1f\naddi x0, x0, 0\n1:\n.endr\n.option pop");
}
__attribute__((noinline)) static void not_taken(void) {
  __asm__ volatile(".option push\n.option norvc\n.rept 256\nbne x0, x0, 1f\n1:\n.endr\n.option pop");
}
__attribute__((noinline)) static void fma_chain(void) {
  __asm__ volatile(".rept 256\nfmadd.s ft0, ft0, ft1, ft2\n.endr" ::: "ft0");
}
__attribute__((noinline)) static void widening_fma(void) {
  __asm__ volatile("vsetivli zero, 2, e16, mf2, ta, ma\n.rept 64\nvfwmacc.vv v8, v1, v2\nvfwmacc.vv v12, v1, v2\n"
                   "vfwmacc.vv v16, v1, v2\nvfwmacc.vv v20, v1, v2\n.endr" ::: "v8", "v12", "v16", "v20");
}
__attribute__((noinline)) static void straight(void) {
  __asm__ volatile(".option push\n.option norvc\n.rept 512\naddi x0, x0, 0\n.endr\n.option pop");
}

/* 16 iterations of 64 independent loads from one address per core: a0 = l1buf + core * stride bytes */
static void loads(void *arg) {
  uint32_t stride = (uint32_t)(uintptr_t)arg;
  const unsigned char *p = (const unsigned char *)l1buf + (uint32_t)odl_core_id() * stride;
  __asm__ volatile("li t1, 16\n2:\n.rept 64\nlw t0, 0(%0)\n.endr\naddi t1, t1, -1\nbnez t1, 2b" ::"r"(p)
                   : "t0", "t1", "memory");
}
/* 256 independent FMAs per core (4 accumulators: the latency is hidden), then a loop of 16 x 16 of them */
static void fmas(void *arg) {
  (void)arg;
  __asm__ volatile("li t1, 16\n3:\n.rept 4\nfmadd.s ft4, ft1, ft2, ft4\nfmadd.s ft5, ft1, ft2, ft5\n"
                   "fmadd.s ft6, ft1, ft2, ft6\nfmadd.s ft7, ft1, ft2, ft7\n.endr\naddi t1, t1, -1\nbnez t1, 3b"
                   ::: "t1", "ft4", "ft5", "ft6", "ft7");
}
static void nothing(void *arg) { (void)arg; }
static void racy(void *arg) { (void)arg; l1buf[0] = (uint32_t)odl_core_id(); }
static void private_words(void *arg) { (void)arg; l1buf[odl_core_id() * 16] = (uint32_t)odl_core_id(); }

typedef void (*bench_fn)(void);
static const bench_fn serial[] = {empty, load_use, taken, not_taken, fma_chain, widening_fma, straight};

float odl_model_step(void) {
  chain = (uint32_t)(uintptr_t)&chain;
  ODL_TIMING_MARK(ODL_MARK_STEP_BEGIN, 0);
  uint32_t idx = 0;
  for (uint32_t b = 0; b < sizeof serial / sizeof serial[0]; b++)
    for (int rep = 0; rep < 2; rep++) {                 /* calls 2b (cold) and 2b + 1 (warm) */
      ODL_TIMING_MARK(ODL_MARK_CALL_BEGIN, idx);
      serial[b]();
      ODL_TIMING_MARK(ODL_MARK_CALL_END, idx);
      idx++;
    }
  static const uint32_t strides[3] = {0, 64, 4};       /* 0: unused slot for the empty region */
  for (int k = 0; k < 3; k++)
    for (int rep = 0; rep < 2; rep++) {
      ODL_TIMING_MARK(ODL_MARK_CALL_BEGIN, idx);
      odl_parallel(k == 0 ? nothing : loads, (void *)(uintptr_t)strides[k]);
      ODL_TIMING_MARK(ODL_MARK_CALL_END, idx);
      idx++;
    }
  for (int rep = 0; rep < 2; rep++) {
    ODL_TIMING_MARK(ODL_MARK_CALL_BEGIN, idx);
    odl_parallel(fmas, 0);
    ODL_TIMING_MARK(ODL_MARK_CALL_END, idx);
    idx++;
  }
  ODL_TIMING_MARK(ODL_MARK_CALL_BEGIN, idx);
  odl_parallel(private_words, 0);
  ODL_TIMING_MARK(ODL_MARK_CALL_END, idx);
  idx++;
#ifdef RACY
  ODL_TIMING_MARK(ODL_MARK_CALL_BEGIN, idx);
  odl_parallel(racy, 0);
  ODL_TIMING_MARK(ODL_MARK_CALL_END, idx);
#endif
  ODL_TIMING_MARK(ODL_MARK_STEP_END, 0);
  return 0.0f;
}
