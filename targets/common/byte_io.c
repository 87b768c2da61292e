/* The protocol's byte transport (protocol.h: odl_io_putc / odl_io_getc) on the target's UART. Its own file so
 * that the frame layer (protocol.c) depends only on these two hooks and never on the command loop (main.c):
 * main.c -> protocol.c -> byte_io.c -> the target's uart.c, one direction. A port with another transport (USB
 * CDC, SPI) replaces this file. */
#include <stdint.h>
#include "platform.h"
#include "protocol.h"

void odl_io_putc(uint8_t c) { uart_putc(c); }
uint8_t odl_io_getc(void) { return uart_getc(); }
