/* rv32-cluster platform services (QEMU virt memory map). */
#ifndef ODL_PLATFORM_H
#define ODL_PLATFORM_H
#include <stdint.h>

/* UART (NS16550 at 0x10000000) */
void uart_init(void);
void uart_putc(uint8_t c);
uint8_t uart_getc(void);               /* blocking */
void uart_write(const void *buf, uint32_t n);
void uart_flush(void);                 /* wait until the transmitter is empty */
void uart_puts(const char *s);

/* Exit through the sifive test device: code 0 -> pass (QEMU exit status 0), else QEMU exits with `code`. */
void odl_exit(int code) __attribute__((noreturn));

/* Counters (64-bit, read consistently on RV32). */
uint64_t odl_read_mcycle(void);
uint64_t odl_read_minstret(void);
int odl_hart_id(void);

/* RISC-V semihosting (needs QEMU -semihosting-config enable=on). Return -1 on error. */
int odl_semihost_open(const char *path, int mode);   /* mode 5 = "wb" */
int odl_semihost_write(int fd, const void *buf, uint32_t n); /* returns bytes NOT written (0 = all) */
int odl_semihost_close(int fd);
#define ODL_SH_MODE_WB 5

/* Per-hart stack guard: the first call arms it, every later call stops the run (report + exit) if a hart's stack
 * reached its last words. The generated step calls it after every step. */
void odl_stack_guard_check(void);

/* Called by the trap vector; prints the cause and exits with failure. */
void odl_trap_handler(uint32_t mcause, uint32_t mepc, uint32_t mtval) __attribute__((noreturn));
#endif
