/* Marks for the timing model (qemu_plugins/timing.c, docs/performance.md): with -DODL_TIMED the generated step
 * stores its step and kernel-call boundaries to odl_timing_port, which the QEMU plugin watches; without it the marks
 * compile to nothing. A mark is (code << 24) | argument, one store. */
#ifndef ODL_TIMING_H
#define ODL_TIMING_H
#include <stdint.h>
extern volatile uint32_t odl_timing_port;
#define ODL_MARK_STEP_BEGIN 1u
#define ODL_MARK_STEP_END 2u
#define ODL_MARK_CALL_BEGIN 3u
#define ODL_MARK_CALL_END 4u
#ifdef ODL_TIMED
#define ODL_TIMING_MARK(code, arg) (odl_timing_port = ((uint32_t)(code) << 24) | (uint32_t)(arg))
#else
#define ODL_TIMING_MARK(code, arg) ((void)0)
#endif
/* A kernel call through the real fork, marked (the generated code's ODL_RUN in timed builds). */
#define ODL_TIMED_RUN(idx, fn, args) \
  do { ODL_TIMING_MARK(ODL_MARK_CALL_BEGIN, (idx)); odl_parallel((fn), (args)); ODL_TIMING_MARK(ODL_MARK_CALL_END, (idx)); } while (0)
#endif
