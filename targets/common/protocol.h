/* odl host<->device framed protocol (target independent), version 2.
 *
 * Frame:  'O' 'D' | u8 type | u16 LE seq | u32 LE length | u16 LE hcrc | payload | u32 LE CRC32
 *   hcrc  = low 16 bits of CRC32 (IEEE, = zlib.crc32) over type+seq+length: a damaged length is caught before
 *           the receiver waits for (up to 4 GB of) payload that will never come;
 *   CRC32 = CRC32 over type+seq+length+payload.
 * Reliability lives here and in the receive loop (main.c), so every command gets it without code of its own:
 *   - a request whose header or payload fails its CRC is never executed (the receiver resynchronises by scanning
 *     for the magic again, also inside the bytes of the damaged frame: a lost byte makes a frame swallow the start
 *     of the next one);
 *   - a valid request is answered with ACCEPTED(seq) before it runs, then with exactly one reply frame carrying
 *     the same seq, which the device keeps; a repeated request (same seq as the last executed one: the host did
 *     not get the reply) is answered from that copy and never executed again (a STEP is never applied twice);
 *   - seq 0 means "not deduplicated" (the host's first INFO of a session, which also forgets the cached reply);
 *   - the HELLO sent at boot carries seq ODL_SEQ_BOOT (never used by a host), so a host tells a device that restarted
 *     from the answer to its INFO, also when a stale boot HELLO still waits in a tty buffer.
 * The host (odl/run/protocol.py) retransmits on a missing or damaged reply, with bounded retries. */
#ifndef ODL_PROTOCOL_H
#define ODL_PROTOCOL_H
#include <stdint.h>
#include "crc32.h"

#define ODL_PROTO_VERSION 2u
#define ODL_MAGIC0 0x4F
#define ODL_MAGIC1 0x44
#define ODL_HDR_BYTES 9u
#define ODL_SEQ_BOOT 0xFFFFu  /* seq of the HELLO sent at boot */    /* after the magic: type, seq(2), length(4), hcrc(2) */

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
  ODL_MSG_ACCEPTED = 0x83, /* a valid new request arrived and is being executed (the host now waits as long as it runs) */
  ODL_MSG_RUN_DONE = 0x84, /* odl train: a program ran (loss, flags, counters, outputs) */
  ODL_MSG_ERROR = 0xFF,
};

enum {
  ODL_ERR_CRC = 1,
  ODL_ERR_UNKNOWN_TYPE = 2,
  ODL_ERR_RANGE = 3,
  ODL_ERR_MALFORMED = 4,
  ODL_ERR_TOO_LONG = 5,
  ODL_ERR_NOT_CACHED = 6,   /* a repeated request whose reply was too large to keep */
};

/* Largest payload the device accepts in one host->device frame (WRITE: 4-byte offset + data). */
#define ODL_MAX_PAYLOAD (8192u + 64u)
/* Largest reply payload the device keeps for a repeated request (READ replies are chunked below this by the host). */
#define ODL_MAX_CACHED_REPLY (8192u + 64u)

/* Byte transport, provided by the target (the UART). */
void odl_io_putc(uint8_t c);
uint8_t odl_io_getc(void);


/* Receive one frame whose header and payload CRCs hold. Returns 0 on success; ODL_ERR_CRC / ODL_ERR_TOO_LONG when a
 * frame with a valid header was rejected (*seq and *type are then the header's; the caller may say so to the host).
 * Frames with a damaged header are skipped silently. */
int odl_recv_frame(uint8_t *type, uint16_t *seq, uint8_t *payload, uint32_t *len);

/* Request/reply bookkeeping of the receive loop (see the file comment). */
int odl_is_repeat(uint16_t seq);        /* seq == the last executed request's seq (and seq != 0) */
void odl_replay_reply(void);            /* resend the kept reply of that request */
void odl_begin_request(uint16_t seq);   /* a new request runs: send ACCEPTED(seq); replies until the next
                                           request are tagged seq and the last one is kept */
void odl_reply_seq(uint16_t seq);       /* tag the next frames with seq without keeping them (errors on damage) */

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
