/* Stand-in for targets/<target>/platform.h in the native fuzz build of the firmware's command loop. */
#ifndef ODL_PLATFORM_H
#define ODL_PLATFORM_H
#include <stdint.h>
void uart_init(void);
void uart_putc(uint8_t c);
uint8_t uart_getc(void);
void odl_exit(int code) __attribute__((noreturn));
uint64_t odl_read_mcycle(void);
uint64_t odl_read_minstret(void);
int odl_semihost_open(const char *path, int mode);
int odl_semihost_write(int fd, const void *buf, uint32_t n);
int odl_semihost_close(int fd);
#define ODL_SH_MODE_WB 5
#endif
