/* Flash HAL: what a port supplies for odl_store_save / odl_store_load (targets/<target>/flash_*.c). Offsets are
 * bytes from the start of the region the store may use (the whole device or a partition of it).
 * Every function returns 0 on success, non-zero on a device error (reported as ODL_ERR_FLASH). */
#ifndef ODL_FLASH_H
#define ODL_FLASH_H
#include <stdint.h>

uint32_t odl_flash_size(void);          /* bytes of the region */
uint32_t odl_flash_block_size(void);    /* erase unit (bytes, a power of two) */
uint32_t odl_flash_write_unit(void);    /* program unit: offsets and lengths of programs are multiples of it */
int odl_flash_read(uint32_t off, void *dst, uint32_t n);
/* program n bytes at off (erased before: a program may only clear bits); returns when the device is ready */
int odl_flash_program(uint32_t off, const void *src, uint32_t n);
int odl_flash_erase(uint32_t off);      /* erase the block at off (block aligned) to 0xFF */

/* Operations issued since reset (one per erased block, one per programmed write unit): for the benchmark and the
 * power-cut campaign. */
extern uint32_t odl_flash_ops;
#endif
