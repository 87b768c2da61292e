/* NS16550 UART at 0x10000000 (QEMU virt), registers at byte stride. Polled. */
#include "platform.h"

#define UART_BASE 0x10000000u
#define REG(o) (*(volatile uint8_t *)(UART_BASE + (o)))
#define RBR 0
#define THR 0
#define IER 1
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define LSR_DR   0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

void uart_init(void) {
  REG(IER) = 0x00;       /* no interrupts: polled */
  REG(LCR) = 0x80;       /* DLAB */
  REG(0) = 0x01;         /* divisor (ignored by QEMU, 115200 on real 16550 @1.8432 MHz) */
  REG(1) = 0x00;
  REG(LCR) = 0x03;       /* 8N1 */
  REG(FCR) = 0x07;       /* FIFO on, clear rx/tx */
  REG(MCR) = 0x03;       /* DTR, RTS */
}

void uart_putc(uint8_t c) {
  while (!(REG(LSR) & LSR_THRE)) { }
  REG(THR) = c;
}

uint8_t uart_getc(void) {
  while (!(REG(LSR) & LSR_DR)) { }
  return REG(RBR);
}

void uart_write(const void *buf, uint32_t n) {
  const uint8_t *p = (const uint8_t *)buf;
  for (uint32_t i = 0; i < n; i++) uart_putc(p[i]);
}

void uart_flush(void) {
  while (!(REG(LSR) & LSR_TEMT)) { }
}

void uart_puts(const char *s) {
  while (*s) uart_putc((uint8_t)*s++);
}
