/* rv32-cluster reset code. With -bios none QEMU starts every hart at 0x80000000 (this code). */
#define MSTATUS_FS_INITIAL (1 << 13)
#define MSTATUS_VS_INITIAL (1 << 9)
#define MIE_MSIE           (1 << 3)
#define STACK_SHIFT        11          /* 2 KiB per hart, in L1 (link.ld) */
#define MAX_HARTS          8

  .section .text.init, "ax", @progbits
  .option push
  .option norvc
  .globl _start
_start:
  .option push
  .option norelax
  la    gp, __global_pointer$
  .option pop
  csrr  t0, mhartid
  li    t1, MAX_HARTS
  bltu  t0, t1, 4f
  bne   t0, t1, park                 /* harts beyond the stack area and the controller's: park forever */
  la    sp, __ctrl_stack_top         /* hart MAX_HARTS: the DMA controller of an 8-core build (team.c, ODL_DMA_CTRL) */
  j     5f
4:
  /* sp = __stack_top - hartid * 2 KiB */
  la    sp, __stack_top
  slli  t1, t0, STACK_SHIFT
  sub   sp, sp, t1
5:
  /* trap vector: report and exit */
  la    t1, odl_trap_entry
  csrw  mtvec, t1
  /* FP and vector units on (state Initial); interrupts globally off */
  li    t1, MSTATUS_FS_INITIAL | MSTATUS_VS_INITIAL
  csrs  mstatus, t1
  li    t1, 0x8
  csrc  mstatus, t1                  /* MIE = 0 */
  li    t1, MIE_MSIE                 /* software interrupts only: they end a wfi (never taken: MIE = 0) */
  csrw  mie, t1
  csrw  fcsr, zero
  bnez  t0, secondary
  /* hart 0: zero .bss (not the arena), then main */
  la    t1, __bss_start
  la    t2, __bss_end
1:
  bgeu  t1, t2, 2f
  sw    zero, 0(t1)
  addi  t1, t1, 4
  j     1b
2:
  call  main
  /* main returned: exit with its code */
  call  odl_exit
  j     park
secondary:
  mv    a0, t0
  call  odl_team_worker_main          /* never returns */
park:
  csrw  mie, zero
3:
  wfi
  j     3b

  /* Any trap is a bug (interrupts are never taken: MIE stays 0). */
  .align 4
odl_trap_entry:
  csrr  a0, mcause
  csrr  a1, mepc
  csrr  a2, mtval
  call  odl_trap_handler
  j     park
  .option pop
