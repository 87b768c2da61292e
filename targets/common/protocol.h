/* odl host<->device framed protocol (target independent).
 * Frame: 'O' 'D' | u8 type | u32 LE length | payload | u32 LE CRC32 (IEEE, = zlib.crc32) over type+length+payload. */
#ifndef ODL_PROTOCOL_H
#define ODL_PROTOCOL_H
#include <stdint.h>

#define ODL_PROTO_VERSION 1u
#define ODL_MAGIC0 0x4F
#define ODL_MAGIC1 0x44

enum {
  ODL_MSG_HELLO = 0x01,
  ODL_MSG_WRITE = 0x10,
  ODL_MSG_READ = 0x11,
  ODL_MSG_STEP = 0x12,
  ODL_MSG_DUMP = 0x13,
  ODL_MSG_EXIT = 0x14,
  ODL_MSG_INFO = 0x15, /* host asks for the HELLO frame again (a board may have booted before the host connected) */
  ODL_MSG_DATASET = 0x20, /* odl train: where the samples are in the device's data region (QEMU fast path) */
  ODL_MSG_RUN = 0x21,     /* odl train: gather a batch by sample indices (or use what WRITE put), run a program */
  ODL_MSG_ACK = 0x80,
  ODL_MSG_DATA = 0x81,
  ODL_MSG_STEP_DONE = 0x82,
  ODL_MSG_RUN_DONE = 0x83,
  ODL_MSG_ERROR = 0xFF,
};

enum {
  ODL_ERR_CRC = 1,
  ODL_ERR_UNKNOWN_TYPE = 2,
  ODL_ERR_RANGE = 3,
  ODL_ERR_MALFORMED = 4,
  ODL_ERR_TOO_LONG = 5,
};

/* Largest payload the device accepts in one host->device frame (WRITE: 4-byte offset + data). */
#define ODL_MAX_PAYLOAD (8192u + 64u)

/* Byte transport, provided by the target (the UART). */
void odl_io_putc(uint8_t c);
uint8_t odl_io_getc(void);

void odl_crc32_init(void);
uint32_t odl_crc32_update(uint32_t crc, const void *buf, uint32_t n);  /* crc starts at 0 */

/* Receive one frame. Returns 0 on success; nonzero = error code (ODL_ERR_*) after the frame was consumed. */
int odl_recv_frame(uint8_t *type, uint8_t *payload, uint32_t *len);

/* Send a frame whose payload is the concatenation of up to two buffers (header part + data part). */
void odl_send_frame2(uint8_t type, const void *a, uint32_t na, const void *b, uint32_t nb);
void odl_send_frame(uint8_t type, const void *payload, uint32_t n);
void odl_send_error(uint32_t code, const char *msg);

static inline uint32_t odl_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void odl_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
#endif
