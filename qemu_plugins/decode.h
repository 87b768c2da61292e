/* RISC-V instruction classes for odl's timing model (qemu_plugins/timing.c): what an instruction reads, writes and
 * which pipeline resource it uses, decoded once when QEMU translates it. RV32IMAFC + Zicsr + Zfh + Zve32f/Zvfh, the
 * subset odl's firmware is compiled for; an instruction outside it decodes as K_OTHER (one cycle, no registers),
 * and the plugin counts how many it saw. Registers: x0..x31 = 0..31, f0..f31 = 32..63, v0..v31 = 64..95. */
#ifndef ODL_DECODE_H
#define ODL_DECODE_H
#include <stdint.h>

#define R_NONE 255
#define R_F 32
#define R_V 64

enum kind {
  K_ALU, K_LOAD, K_STORE, K_BRANCH, K_JAL, K_JALR, K_MUL, K_MULH, K_DIV,
  K_FP,      /* fadd/fsub/fmul/fmadd...: pipelined FPU op, latency fp_latency */
  K_FPS,     /* sign-inject, min/max, compare, class, moves between files: one cycle */
  K_FDIV, K_FSQRT, K_FCVT, K_FLOAD, K_FSTORE,
  K_CSR, K_AMO, K_FENCE, K_WFI, K_SYS,
  K_VSET,    /* vsetvli / vsetivli / vsetvl */
  K_VLOAD, K_VSTORE,
  K_VFP,     /* vector FP arithmetic (FPU) */
  K_VINT,    /* vector integer / permutation / mask arithmetic */
  K_VRED,    /* vector reductions */
  K_VMV,     /* vector <-> scalar element moves (vmv.x.s, vfmv.f.s, vfmv.s.f, vmv.s.x) */
  K_OTHER,
  K_COUNT
};

typedef struct {
  uint32_t pc;
  uint8_t size;      /* 2 or 4 bytes */
  uint8_t kind;
  uint8_t rd;        /* written register or R_NONE (x0 decodes as R_NONE) */
  uint8_t rs[3];     /* read registers or R_NONE */
  uint8_t vmask;     /* vector op masked by v0 */
  uint8_t widen;     /* vector: 1 = destination elements 2*SEW (widening), 2 = sources 2*SEW (narrowing) */
  uint8_t eew;       /* vector loads/stores: element width in bits (8, 16, 32, 64) */
  uint8_t avl;       /* K_VSET: 0 = AVL from rs[0], 1 = immediate (avl_imm), 2 = VLMAX (rs1 = x0, rd != x0), 3 = keep vl */
  uint8_t avl_imm;
  uint8_t vtype_reg; /* K_VSET: vtype comes from rs[1] (vsetvl) */
  uint16_t vtype;    /* K_VSET immediate vtype */
  uint8_t special;   /* set by the plugin: the entry of a function it watches */
} insn_t;

/* Decodes the instruction at pc from its bytes (little-endian, 2 or 4 of them). */
void odl_decode(insn_t *d, uint32_t pc, const uint8_t *bytes, unsigned size);
#endif
