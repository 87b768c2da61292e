/* CRC32 (IEEE, = zlib.crc32): one implementation for the protocol and the state blobs. */
#ifndef ODL_CRC32_H
#define ODL_CRC32_H
#include <stdint.h>
void odl_crc32_init(void);                                              /* once, before the first update */
uint32_t odl_crc32_update(uint32_t crc, const void *buf, uint32_t n);  /* crc starts at 0 */
#endif
