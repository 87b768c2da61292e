/* rv32-cluster platform: exit device, counters, semihosting, trap report. */
#include "platform.h"
#include "odl_timing.h"

/* The timing model's mark word (odl_timing.h); written only by -DODL_TIMED builds. */
volatile uint32_t odl_timing_port;
#define ODL_MAX_HARTS_GUARD 8u   /* link.ld ODL_MAX_HARTS */

#define TEST_DEVICE 0x00100000u
#define TEST_PASS   0x5555u
#define TEST_FAIL   0x3333u

void odl_exit(int code) {
  uart_flush();
  volatile uint32_t *t = (volatile uint32_t *)TEST_DEVICE;
  uint32_t v = code == 0 ? TEST_PASS : (((uint32_t)code & 0xffffu) << 16) | TEST_FAIL;
  for (;;) {
    *t = v;
    __asm__ volatile("wfi");
  }
}

#define READ64(hi, lo)                                              \
  uint32_t h0, l, h1;                                               \
  do {                                                              \
    __asm__ volatile("csrr %0, " hi : "=r"(h0));                    \
    __asm__ volatile("csrr %0, " lo : "=r"(l));                     \
    __asm__ volatile("csrr %0, " hi : "=r"(h1));                    \
  } while (h0 != h1);                                               \
  return ((uint64_t)h1 << 32) | l;

uint64_t odl_read_mcycle(void) { READ64("mcycleh", "mcycle") }
uint64_t odl_read_minstret(void) { READ64("minstreth", "minstret") }

int odl_hart_id(void) {
  int id;
  __asm__ volatile("csrr %0, mhartid" : "=r"(id));
  return id;
}

/* The semihosting trap: must be exactly these three uncompressed instructions, not crossing a page. */
static __attribute__((noinline)) int semihost_call(int op, void *arg) {
  register int a0 __asm__("a0") = op;
  register void *a1 __asm__("a1") = arg;
  __asm__ volatile(
      ".option push\n"
      ".option norvc\n"
      ".balign 16\n"
      "slli x0, x0, 0x1f\n"
      "ebreak\n"
      "srai x0, x0, 7\n"
      ".option pop\n"
      : "+r"(a0)
      : "r"(a1)
      : "memory");
  return a0;
}

static uint32_t slen(const char *s) { uint32_t n = 0; while (s[n]) n++; return n; }

int odl_semihost_open(const char *path, int mode) {
  uint32_t args[3] = {(uint32_t)(uintptr_t)path, (uint32_t)mode, slen(path)};
  return semihost_call(0x01, args);
}

int odl_semihost_write(int fd, const void *buf, uint32_t n) {
  uint32_t args[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)buf, n};
  return semihost_call(0x05, args);
}

int odl_semihost_close(int fd) {
  uint32_t args[1] = {(uint32_t)fd};
  return semihost_call(0x02, args);
}

static void puthex(uint32_t v) {
  static const char d[] = "0123456789abcdef";
  for (int i = 28; i >= 0; i -= 4) uart_putc((uint8_t)d[(v >> i) & 15]);
}

void odl_trap_handler(uint32_t mcause, uint32_t mepc, uint32_t mtval) {
  /* Only hart 0 owns the UART for the protocol; a trap is fatal anyway, so say what happened. */
  uart_puts("\n*** odl trap (fatal): hart="); /* no "OD": that is the frame magic */
  puthex((uint32_t)odl_hart_id());
  uart_puts(" mcause=");
  puthex(mcause);
  uart_puts(" mepc=");
  puthex(mepc);
  uart_puts(" mtval=");
  puthex(mtval);
  uart_puts("\n");
  odl_exit(0x7f);
}

/* Stack guard: the per-hart stacks are small (2 KiB each, in L1; link.ld). The lowest words of every hart's stack
 * hold a pattern written before the first step; odl_stack_guard_check() (after every step) stops the run with a
 * report naming the hart whose stack reached them. */
extern unsigned char __stack_bottom[], __stack_top[];
#define GUARD_WORDS 64
#define GUARD_PATTERN 0x57ac6a2du
static int guard_set;

void odl_stack_guard_check(void) {
  uint32_t per = (uint32_t)(__stack_top - __stack_bottom) / ODL_MAX_HARTS_GUARD;
  for (uint32_t h = 0; h < ODL_MAX_HARTS_GUARD; h++) {
    volatile uint32_t *g = (volatile uint32_t *)(__stack_top - (h + 1) * per);
    for (int i = 0; i < GUARD_WORDS; i++) {
      if (!guard_set) {
        g[i] = GUARD_PATTERN;
      } else if (g[i] != GUARD_PATTERN) {
        uart_puts("\n*** odl stack overflow (fatal): hart=");
        puthex(h);
        uart_puts(" reached the bottom of its stack\n");
        odl_exit(0x7d);
      }
    }
  }
  guard_set = 1;
}
