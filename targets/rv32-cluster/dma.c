/* rv32-cluster cluster DMA on QEMU (see odl_dma.h): a transfer is a copy by the issuing hart. */
#include "odl_dma.h"
#include "platform.h"

static uint32_t issued, done;

static void copy_row(unsigned char *d, const unsigned char *s, uint32_t n) {
  if ((((uintptr_t)d | (uintptr_t)s | n) & 3u) == 0) {
    uint32_t *dw = (uint32_t *)d;
    const uint32_t *sw = (const uint32_t *)s;
    for (uint32_t i = 0; i < n / 4; i++) dw[i] = sw[i];
  } else {
    for (uint32_t i = 0; i < n; i++) d[i] = s[i];
  }
}

uint32_t odl_dma_start(void *dst, const void *src, uint32_t row_bytes, uint32_t rows, uint32_t dst_stride,
                       uint32_t src_stride) {
  unsigned char *d = (unsigned char *)dst;
  const unsigned char *s = (const unsigned char *)src;
  for (uint32_t r = 0; r < rows; r++) copy_row(d + r * dst_stride, s + r * src_stride, row_bytes);
  done = ++issued;
  return issued;
}

void odl_dma_wait(uint32_t ticket) {
  while ((int32_t)(done - ticket) < 0) {
  }
}

void odl_dma_wait_all(void) { odl_dma_wait(issued); }

static void puthex(uint32_t v) {
  static const char d[] = "0123456789abcdef";
  for (int i = 28; i >= 0; i -= 4) uart_putc((uint8_t)d[(v >> i) & 15]);
}

void odl_l1_check(const void *p, const char *what) {
  const unsigned char *q = (const unsigned char *)p;
  if (q >= __odl_l1_start && q < __odl_l1_end) return;
  uart_puts("\n*** odl L1 check (fatal): ");  /* no "OD": that is the frame magic */
  uart_puts(what);
  uart_puts(" points to 0x");
  puthex((uint32_t)(uintptr_t)p);
  uart_puts(", outside L1\n");
  odl_exit(0x7e);
}
