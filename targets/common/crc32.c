/* CRC32 (IEEE 802.3, reflected, = zlib.crc32), table driven: the framed protocol's checksums and the embedded
 * library's state blobs. odl_crc32_init() fills the table once before the first use. */
#include "crc32.h"

static uint32_t crc_table[256];

void odl_crc32_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

uint32_t odl_crc32_update(uint32_t crc, const void *buf, uint32_t n) {
  const uint8_t *p = (const uint8_t *)buf;
  crc = ~crc;
  for (uint32_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}
