/* Element type and 2-lane SIMD type for one precision.
 * Every kernel source is written once against odl_t / odl_v2_t and compiled per precision:
 *   -DODL_FP16=1  -> odl_t = _Float16, odl_v2_t = 2 x _Float16 in 32 bits (packed FP16 SIMD, RVV at VL=2)
 *   (default)     -> odl_t = float,    odl_v2_t = 2 x float (host SIMD; the rv32 FP32 build uses the scalar path)
 * ODL_LANES is the number of elements one SIMD op of the 32-bit datapath handles (2 for FP16, 1 for FP32). */
#ifndef ODL_TYPES_H
#define ODL_TYPES_H
#include <stdint.h>
#include <stddef.h>

#if defined(ODL_FP16) && ODL_FP16
typedef _Float16 odl_t;
#define ODL_LANES 2
#define ODL_PRECISION_BITS 16
#else
typedef float odl_t;
#define ODL_LANES 1
#define ODL_PRECISION_BITS 32
#endif
typedef odl_t odl_v2_t __attribute__((vector_size(2 * sizeof(odl_t))));

/* Accumulator type for long reductions (partial sums are combined in FP32). */
typedef float odl_acc_t;

#endif
