/* RISC-V instruction classes for the timing model (see decode.h). */
#include "decode.h"

#include <string.h>

static uint8_t X(uint32_t r) { return r ? (uint8_t)r : R_NONE; }   /* x0 is never a dependency */
static uint32_t bits(uint32_t v, int hi, int lo) { return (v >> lo) & ((1u << (hi - lo + 1)) - 1u); }

static void set(insn_t *d, int kind, uint8_t rd, uint8_t a, uint8_t b, uint8_t c) {
  d->kind = (uint8_t)kind;
  d->rd = rd;
  d->rs[0] = a;
  d->rs[1] = b;
  d->rs[2] = c;
}

static void decode16(insn_t *d, uint32_t w) {
  uint32_t q = w & 3u, f3 = bits(w, 15, 13);
  uint32_t rdp = 8 + bits(w, 4, 2), rs1p = 8 + bits(w, 9, 7), r = bits(w, 11, 7), r2 = bits(w, 6, 2);
  if (q == 0) {
    switch (f3) {
      case 0: set(d, K_ALU, X(rdp), 2, R_NONE, R_NONE); return;                     /* c.addi4spn */
      case 1: case 3: set(d, K_FLOAD, (uint8_t)(R_F + rdp), X(rs1p), R_NONE, R_NONE); return; /* c.fld, c.flw */
      case 2: set(d, K_LOAD, X(rdp), X(rs1p), R_NONE, R_NONE); return;              /* c.lw */
      case 5: case 7: set(d, K_FSTORE, R_NONE, X(rs1p), (uint8_t)(R_F + rdp), R_NONE); return;
      case 6: set(d, K_STORE, R_NONE, X(rs1p), X(rdp), R_NONE); return;             /* c.sw */
      default: set(d, K_OTHER, R_NONE, R_NONE, R_NONE, R_NONE); return;
    }
  }
  if (q == 1) {
    switch (f3) {
      case 0: case 2: set(d, K_ALU, X(r), f3 == 0 ? X(r) : R_NONE, R_NONE, R_NONE); return; /* c.addi, c.li */
      case 1: set(d, K_JAL, 1, R_NONE, R_NONE, R_NONE); return;                     /* c.jal (RV32) */
      case 3: set(d, K_ALU, X(r), r == 2 ? 2 : R_NONE, R_NONE, R_NONE); return;     /* c.lui, c.addi16sp */
      case 4:
        if (bits(w, 11, 10) == 3) set(d, K_ALU, X(rs1p), X(rs1p), X(rdp), R_NONE);  /* c.sub .. c.and */
        else set(d, K_ALU, X(rs1p), X(rs1p), R_NONE, R_NONE);                       /* c.srli, c.srai, c.andi */
        return;
      case 5: set(d, K_JAL, R_NONE, R_NONE, R_NONE, R_NONE); return;                /* c.j */
      default: set(d, K_BRANCH, R_NONE, X(rs1p), R_NONE, R_NONE); return;           /* c.beqz, c.bnez */
    }
  }
  switch (f3) {                                                                      /* quadrant 2 */
    case 0: set(d, K_ALU, X(r), X(r), R_NONE, R_NONE); return;                       /* c.slli */
    case 1: case 3: set(d, K_FLOAD, (uint8_t)(R_F + r), 2, R_NONE, R_NONE); return;  /* c.fldsp, c.flwsp */
    case 2: set(d, K_LOAD, X(r), 2, R_NONE, R_NONE); return;                         /* c.lwsp */
    case 4:
      if (!bits(w, 12, 12)) {
        if (r2 == 0) set(d, K_JALR, R_NONE, X(r), R_NONE, R_NONE);                   /* c.jr */
        else set(d, K_ALU, X(r), X(r2), R_NONE, R_NONE);                             /* c.mv */
      } else if (r == 0 && r2 == 0) {
        set(d, K_SYS, R_NONE, R_NONE, R_NONE, R_NONE);                               /* c.ebreak */
      } else if (r2 == 0) {
        set(d, K_JALR, 1, X(r), R_NONE, R_NONE);                                     /* c.jalr */
      } else {
        set(d, K_ALU, X(r), X(r), X(r2), R_NONE);                                    /* c.add */
      }
      return;
    case 5: case 7: set(d, K_FSTORE, R_NONE, 2, (uint8_t)(R_F + r2), R_NONE); return;
    default: set(d, K_STORE, R_NONE, 2, X(r2), R_NONE); return;                      /* c.swsp */
  }
}

static const uint8_t vmem_eew[8] = {8, 0, 0, 0, 0, 16, 32, 64};

static void decode_vmem(insn_t *d, uint32_t w, int store) {
  uint32_t vd = bits(w, 11, 7), rs1 = bits(w, 19, 15), rs2 = bits(w, 24, 20), mop = bits(w, 27, 26);
  uint8_t idx = (mop == 1 || mop == 3) ? (uint8_t)(R_V + rs2) : (mop == 2 ? X(rs2) : R_NONE);
  d->eew = vmem_eew[bits(w, 14, 12)];
  d->vmask = !bits(w, 25, 25);
  if (store) set(d, K_VSTORE, R_NONE, X(rs1), (uint8_t)(R_V + vd), idx);
  else set(d, K_VLOAD, (uint8_t)(R_V + vd), X(rs1), idx, R_NONE);
}

static void decode_opv(insn_t *d, uint32_t w) {
  uint32_t f3 = bits(w, 14, 12), vd = bits(w, 11, 7), s1 = bits(w, 19, 15), vs2 = bits(w, 24, 20);
  uint32_t f6 = bits(w, 31, 26);
  if (f3 == 7) {                                       /* vsetvli, vsetivli, vsetvl */
    set(d, K_VSET, X(vd), R_NONE, R_NONE, R_NONE);
    if (!bits(w, 31, 31)) {
      d->vtype = (uint16_t)bits(w, 30, 20);
      d->rs[0] = X(s1);
      d->avl = s1 ? 0 : (vd ? 2 : 3);
    } else if (bits(w, 30, 30)) {
      d->vtype = (uint16_t)bits(w, 29, 20);
      d->avl = 1;
      d->avl_imm = (uint8_t)s1;
    } else {
      d->rs[0] = X(s1);
      d->rs[1] = X(vs2);
      d->vtype_reg = 1;
      d->avl = s1 ? 0 : (vd ? 2 : 3);
    }
    return;
  }
  d->vmask = !bits(w, 25, 25);
  uint8_t src1 = R_NONE;
  if (f3 == 0 || f3 == 1 || f3 == 2) src1 = (uint8_t)(R_V + s1);      /* .vv */
  else if (f3 == 4 || f3 == 6) src1 = X(s1);                          /* .vx */
  else if (f3 == 5) src1 = (uint8_t)(R_F + s1);                       /* .vf */
  int fp = (f3 == 1 || f3 == 5), mvx = (f3 == 2 || f3 == 6);
  uint8_t dst = (uint8_t)(R_V + vd);
  int kind = fp ? K_VFP : K_VINT;
  if (f6 == 0x10 && (f3 == 1 || f3 == 2)) {                           /* vfmv.f.s, vmv.x.s, vcpop, vfirst */
    set(d, K_VMV, (uint8_t)(f3 == 1 ? R_F + vd : X(vd)), (uint8_t)(R_V + vs2), R_NONE, R_NONE);
    return;
  }
  if (f6 == 0x10 && (f3 == 5 || f3 == 6)) {                           /* vfmv.s.f, vmv.s.x */
    set(d, K_VMV, dst, src1, R_NONE, R_NONE);
    return;
  }
  if (fp && (f6 == 0x01 || f6 == 0x03 || f6 == 0x05 || f6 == 0x07 || f6 == 0x31 || f6 == 0x33)) kind = K_VRED;
  if (mvx && f6 <= 0x07) kind = K_VRED;                                /* vredsum .. vredmax */
  if ((fp || mvx) && f6 >= 0x30) d->widen = 1;                         /* vfw*, vw* */
  if (fp && f6 == 0x12 && s1 >= 8 && s1 < 16) d->widen = 1;            /* vfwcvt */
  if (fp && f6 == 0x12 && s1 >= 16) d->widen = 2;                      /* vfncvt */
  /* multiply-accumulate forms also read the destination */
  int acc = (fp && (f6 >= 0x28 && f6 <= 0x2f)) || (fp && f6 >= 0x3c) || (mvx && (f6 == 0x2d || f6 == 0x2f ||
            f6 == 0x29 || f6 == 0x2b || f6 >= 0x3c));
  set(d, kind, dst, (uint8_t)(R_V + vs2), src1, acc ? dst : R_NONE);
}

static void decode32(insn_t *d, uint32_t w) {
  uint32_t op = w & 0x7fu, rd = bits(w, 11, 7), f3 = bits(w, 14, 12), rs1 = bits(w, 19, 15), rs2 = bits(w, 24, 20);
  uint32_t f7 = bits(w, 31, 25), f5 = bits(w, 31, 27);
  switch (op) {
    case 0x37: case 0x17: set(d, K_ALU, X(rd), R_NONE, R_NONE, R_NONE); return;     /* lui, auipc */
    case 0x6f: set(d, K_JAL, X(rd), R_NONE, R_NONE, R_NONE); return;
    case 0x67: set(d, K_JALR, X(rd), X(rs1), R_NONE, R_NONE); return;
    case 0x63: set(d, K_BRANCH, R_NONE, X(rs1), X(rs2), R_NONE); return;
    case 0x03: set(d, K_LOAD, X(rd), X(rs1), R_NONE, R_NONE); return;
    case 0x23: set(d, K_STORE, R_NONE, X(rs1), X(rs2), R_NONE); return;
    case 0x13: set(d, K_ALU, X(rd), X(rs1), R_NONE, R_NONE); return;
    case 0x33:
      if (f7 == 1) set(d, f3 == 0 ? K_MUL : (f3 < 4 ? K_MULH : K_DIV), X(rd), X(rs1), X(rs2), R_NONE);
      else set(d, K_ALU, X(rd), X(rs1), X(rs2), R_NONE);
      return;
    case 0x0f: set(d, K_FENCE, R_NONE, R_NONE, R_NONE, R_NONE); return;
    case 0x73:
      if (w == 0x10500073u) set(d, K_WFI, R_NONE, R_NONE, R_NONE, R_NONE);
      else if (f3 == 0) set(d, K_SYS, R_NONE, R_NONE, R_NONE, R_NONE);
      else set(d, K_CSR, X(rd), f3 < 4 ? X(rs1) : R_NONE, R_NONE, R_NONE);
      return;
    case 0x2f: set(d, K_AMO, X(rd), X(rs1), X(rs2), R_NONE); return;
    case 0x07:
      if (f3 == 1 || f3 == 2 || f3 == 3) set(d, K_FLOAD, (uint8_t)(R_F + rd), X(rs1), R_NONE, R_NONE);
      else decode_vmem(d, w, 0);
      return;
    case 0x27:
      if (f3 == 1 || f3 == 2 || f3 == 3) set(d, K_FSTORE, R_NONE, X(rs1), (uint8_t)(R_F + rs2), R_NONE);
      else decode_vmem(d, w, 1);
      return;
    case 0x43: case 0x47: case 0x4b: case 0x4f:                                      /* fmadd .. fnmadd */
      set(d, K_FP, (uint8_t)(R_F + rd), (uint8_t)(R_F + rs1), (uint8_t)(R_F + rs2), (uint8_t)(R_F + f5));
      return;
    case 0x53: {
      uint8_t fd = (uint8_t)(R_F + rd), fs1 = (uint8_t)(R_F + rs1), fs2 = (uint8_t)(R_F + rs2);
      switch (f5) {
        case 0x00: case 0x01: case 0x02: set(d, K_FP, fd, fs1, fs2, R_NONE); return;
        case 0x03: set(d, K_FDIV, fd, fs1, fs2, R_NONE); return;
        case 0x0b: set(d, K_FSQRT, fd, fs1, R_NONE, R_NONE); return;
        case 0x04: case 0x05: set(d, K_FPS, fd, fs1, fs2, R_NONE); return;
        case 0x08: set(d, K_FCVT, fd, fs1, R_NONE, R_NONE); return;
        case 0x14: set(d, K_FPS, X(rd), fs1, fs2, R_NONE); return;                   /* feq, flt, fle */
        case 0x18: set(d, K_FCVT, X(rd), fs1, R_NONE, R_NONE); return;               /* fcvt.w.s */
        case 0x1a: set(d, K_FCVT, fd, X(rs1), R_NONE, R_NONE); return;               /* fcvt.s.w */
        case 0x1c: set(d, K_FPS, X(rd), fs1, R_NONE, R_NONE); return;                /* fmv.x.w, fclass */
        case 0x1e: set(d, K_FPS, fd, X(rs1), R_NONE, R_NONE); return;                /* fmv.w.x */
        default: set(d, K_OTHER, R_NONE, R_NONE, R_NONE, R_NONE); return;
      }
    }
    case 0x57: decode_opv(d, w); return;
    default: set(d, K_OTHER, R_NONE, R_NONE, R_NONE, R_NONE); return;
  }
}

void odl_decode(insn_t *d, uint32_t pc, const uint8_t *b, unsigned size) {
  memset(d, 0, sizeof *d);
  d->pc = pc;
  d->size = (uint8_t)size;
  if (size == 2) decode16(d, (uint32_t)b[0] | (uint32_t)b[1] << 8);
  else decode32(d, (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
}
