/* odl framed protocol: CRC32, frame receive/send. Target independent; bytes go through odl_io_putc/getc. */
#include "protocol.h"

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

static void put_bytes(const uint8_t *p, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) odl_io_putc(p[i]);
}

int odl_recv_frame(uint8_t *type, uint8_t *payload, uint32_t *len) {
  /* sync on the magic */
  uint8_t prev = 0;
  for (;;) {
    uint8_t c = odl_io_getc();
    if (prev == ODL_MAGIC0 && c == ODL_MAGIC1) break;
    prev = c;
  }
  uint8_t hdr[5];
  for (int i = 0; i < 5; i++) hdr[i] = odl_io_getc();
  uint32_t n = odl_get_u32(hdr + 1);
  *type = hdr[0];
  *len = n;
  if (n > ODL_MAX_PAYLOAD) return ODL_ERR_TOO_LONG;   /* do not try to swallow a garbage length: resync */
  for (uint32_t i = 0; i < n; i++) payload[i] = odl_io_getc();
  uint8_t t[4];
  for (int i = 0; i < 4; i++) t[i] = odl_io_getc();
  uint32_t crc = odl_crc32_update(0, hdr, 5);
  crc = odl_crc32_update(crc, payload, n);
  if (crc != odl_get_u32(t)) return ODL_ERR_CRC;
  return 0;
}

void odl_send_frame2(uint8_t type, const void *a, uint32_t na, const void *b, uint32_t nb) {
  uint8_t hdr[7] = {ODL_MAGIC0, ODL_MAGIC1, type};
  odl_put_u32(hdr + 3, na + nb);
  uint32_t crc = odl_crc32_update(0, hdr + 2, 5);
  if (na) crc = odl_crc32_update(crc, a, na);
  if (nb) crc = odl_crc32_update(crc, b, nb);
  put_bytes(hdr, 7);
  if (na) put_bytes((const uint8_t *)a, na);
  if (nb) put_bytes((const uint8_t *)b, nb);
  uint8_t t[4];
  odl_put_u32(t, crc);
  put_bytes(t, 4);
}

void odl_send_frame(uint8_t type, const void *payload, uint32_t n) { odl_send_frame2(type, payload, n, 0, 0); }

void odl_send_error(uint32_t code, const char *msg) {
  uint8_t c[4];
  odl_put_u32(c, code);
  uint32_t n = 0;
  while (msg[n]) n++;
  odl_send_frame2(ODL_MSG_ERROR, c, 4, msg, n);
}
