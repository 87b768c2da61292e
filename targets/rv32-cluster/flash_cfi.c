/* Flash HAL (targets/common/embed/odl_flash.h) on a CFI flash with the Intel/Sharp command set (cfi.pflash01), as
 * QEMU virt maps it: bank 1 at 0x22000000, 32 MiB, 256 KiB erase blocks, two 16-bit devices side by side (a 32-bit
 * bank: commands go to both halves, 0x00XX00XX). Reads are plain loads in read-array mode. Program: 0x40, then the
 * word; erase: 0x20, 0xD0 at the block; both end with polling the status register (0x70) until bit 7 (ready),
 * checking its error bits (erase 5, program 4, VPP 3, protection 1), clearing it (0x50) and returning to read-array
 * mode (0xFF). QEMU writes every program and erase through to the -drive file, so the image persists.
 *
 * Power-cut campaign builds (-DODL_POWERCUT): the word at ODL_POWERCUT_ADDR (set by QEMU's loader before reset)
 * names an operation K, counted from 1 (0: never). K: the machine stops right after operation K completed. K with
 * bit 31 set: operation K is torn, as power lost in the middle of it, then the machine stops. A torn program leaves
 * the word with only some of its bits programmed (half the bytes still erased); a torn erase leaves the block
 * unerased with its first 64 words overwritten by garbage (an interrupted NOR erase leaves indeterminate data). */
#include "odl_flash.h"
#include "platform.h"

#ifndef ODL_FLASH_BASE
#define ODL_FLASH_BASE 0x22000000u
#endif
#ifndef ODL_FLASH_BYTES
#define ODL_FLASH_BYTES (32u << 20)
#endif
#ifndef ODL_FLASH_BLOCK
#define ODL_FLASH_BLOCK (256u << 10)
#endif

#define CMD(c) (((uint32_t)(c) << 16) | (uint32_t)(c))
#define ST_READY 0x80u
#define ST_ERRORS 0x3Au
#define REG(off) (*(volatile uint32_t *)(ODL_FLASH_BASE + (off)))

uint32_t odl_flash_ops;

#ifdef ODL_POWERCUT
#ifndef ODL_POWERCUT_ADDR
#define ODL_POWERCUT_ADDR 0x87FFFF00u
#endif
#define ODL_POWERCUT_EXIT 0x42
#define TORN 0x80000000u
static uint32_t cut_at(void) { return *(volatile uint32_t *)ODL_POWERCUT_ADDR; }
static int torn_now(void) { return cut_at() == (TORN | odl_flash_ops); }   /* this operation is cut half-way */
static void op_end(void) {                                                   /* power lost right after it */
  if (cut_at() == odl_flash_ops || torn_now()) odl_exit(ODL_POWERCUT_EXIT);
}
#else
static int torn_now(void) { return 0; }
static void op_end(void) {}
#endif

uint32_t odl_flash_size(void) { return ODL_FLASH_BYTES; }
uint32_t odl_flash_block_size(void) { return ODL_FLASH_BLOCK; }
uint32_t odl_flash_write_unit(void) { return 4u; }

/* wait for ready, check the error bits, clear the status, back to read-array mode */
static int finish(uint32_t off) {
  uint32_t st;
  REG(off) = CMD(0x70);
  do {
    st = REG(off);
  } while ((st & CMD(ST_READY)) != CMD(ST_READY));
  int err = (st & CMD(ST_ERRORS)) != 0;
  REG(off) = CMD(0x50);
  REG(off) = CMD(0xFF);
  return err;
}

int odl_flash_read(uint32_t off, void *dst, uint32_t n) {
  if (off > ODL_FLASH_BYTES || n > ODL_FLASH_BYTES - off) return 1;
  const volatile uint8_t *s = (const volatile uint8_t *)(ODL_FLASH_BASE + off);
  uint8_t *d = (uint8_t *)dst;
  for (uint32_t i = 0; i < n; i++) d[i] = s[i];
  return 0;
}

int odl_flash_program(uint32_t off, const void *src, uint32_t n) {
  if ((off | n) & 3u || off > ODL_FLASH_BYTES || n > ODL_FLASH_BYTES - off) return 1;
  const uint8_t *s = (const uint8_t *)src;
  for (uint32_t i = 0; i < n; i += 4) {
    uint32_t w = (uint32_t)s[i] | (uint32_t)s[i + 1] << 8 | (uint32_t)s[i + 2] << 16 | (uint32_t)s[i + 3] << 24;
    odl_flash_ops++;
    REG(off + i) = CMD(0x40);
    REG(off + i) = torn_now() ? (w | 0xFF00FF00u) : w;
    if (finish(off + i)) return 1;
    op_end();
  }
  return 0;
}

int odl_flash_erase(uint32_t off) {
  if (off & (ODL_FLASH_BLOCK - 1u) || off >= ODL_FLASH_BYTES) return 1;
  odl_flash_ops++;
  if (torn_now()) {
    for (uint32_t i = 0; i < 64; i++) {
      REG(off + 4 * i) = CMD(0x40);
      REG(off + 4 * i) = 0xA5C3A5C3u ^ (i * 0x9E3779B9u);
      finish(off + 4 * i);
    }
    op_end();
  }
  REG(off) = CMD(0x20);
  REG(off) = CMD(0xD0);
  int err = finish(off);
  op_end();
  return err;
}
