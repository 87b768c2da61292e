/* odl framed protocol v2: frame receive (with resynchronisation) and send, the reply kept for a repeated
 * request. Target independent; bytes go through odl_io_putc/getc. See protocol.h for the frame and the rules. */
#include "protocol.h"

static void put_bytes(const uint8_t *p, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) odl_io_putc(p[i]);
}

/* -- receive ------------------------------------------------------------------------------------------------
 * Bytes of a rejected frame (everything after its magic) go back in front of the unread input and are scanned
 * again: after a lost byte, the damaged frame has swallowed the start of the host's retransmission, which is
 * found there. Each rejection drops at least the two magic bytes, so rescanning always ends. The buffer never
 * overflows: what goes back was read either from it (so it fits where it came from) or from the UART once it
 * was empty (at most one frame). */
#define PB_CAP (ODL_HDR_BYTES + ODL_MAX_PAYLOAD + 4u)
static uint8_t pb[PB_CAP];
static uint32_t pb_pos, pb_len;

static uint8_t get_byte(void) { return pb_pos < pb_len ? pb[pb_pos++] : odl_io_getc(); }

static void unget3(const uint8_t *a, uint32_t na, const uint8_t *b, uint32_t nb, const uint8_t *c, uint32_t nc) {
  uint32_t rest = pb_len - pb_pos, total = na + nb + nc;
  if (total + rest > PB_CAP) { pb_pos = pb_len = 0; return; }   /* cannot happen (see above); drop, never overflow */
  for (uint32_t i = rest; i-- > 0;) pb[total + i] = pb[pb_pos + i];
  uint32_t k = 0;
  for (uint32_t i = 0; i < na; i++) pb[k++] = a[i];
  for (uint32_t i = 0; i < nb; i++) pb[k++] = b[i];
  for (uint32_t i = 0; i < nc; i++) pb[k++] = c[i];
  pb_pos = 0;
  pb_len = total + rest;
}

int odl_recv_frame(uint8_t *type, uint16_t *seq, uint8_t *payload, uint32_t *len) {
  for (;;) {
    uint8_t prev = 0;
    for (;;) {   /* sync on the magic */
      uint8_t c = get_byte();
      if (prev == ODL_MAGIC0 && c == ODL_MAGIC1) break;
      prev = c;
    }
    uint8_t hdr[ODL_HDR_BYTES];
    for (uint32_t i = 0; i < ODL_HDR_BYTES; i++) hdr[i] = get_byte();
    uint32_t hc = odl_crc32_update(0, hdr, 7) & 0xFFFFu;
    if (hc != ((uint32_t)hdr[7] | ((uint32_t)hdr[8] << 8))) {   /* damaged header: its length means nothing */
      unget3(hdr, ODL_HDR_BYTES, 0, 0, 0, 0);
      continue;
    }
    uint32_t n = odl_get_u32(hdr + 3);
    *type = hdr[0];
    *seq = (uint16_t)(hdr[1] | (hdr[2] << 8));
    *len = n;
    if (n > ODL_MAX_PAYLOAD) return ODL_ERR_TOO_LONG;   /* a sound header asking too much: refuse, resync on the rest */
    for (uint32_t i = 0; i < n; i++) payload[i] = get_byte();
    uint8_t t[4];
    for (int i = 0; i < 4; i++) t[i] = get_byte();
    uint32_t crc = odl_crc32_update(0, hdr, 7);
    crc = odl_crc32_update(crc, payload, n);
    if (crc != odl_get_u32(t)) {
      unget3(hdr, ODL_HDR_BYTES, payload, n, t, 4);
      return ODL_ERR_CRC;
    }
    return 0;
  }
}

/* -- send, and the reply kept for a repeated request --------------------------------------------------------- */
static uint16_t tx_seq;          /* seq of the frames sent now */
static int keeping;              /* frames sent now are the reply to keep */
static uint16_t last_seq;        /* last executed request (0: none) */
static uint8_t kept[ODL_MAX_CACHED_REPLY];
static uint32_t kept_n;
static uint8_t kept_type;
static enum { KEPT_NONE, KEPT_OK, KEPT_TOO_LARGE } kept_state;

void odl_send_frame2(uint8_t type, const void *a, uint32_t na, const void *b, uint32_t nb) {
  uint8_t hdr[2 + ODL_HDR_BYTES] = {ODL_MAGIC0, ODL_MAGIC1, type, (uint8_t)tx_seq, (uint8_t)(tx_seq >> 8)};
  odl_put_u32(hdr + 5, na + nb);
  uint32_t hc = odl_crc32_update(0, hdr + 2, 7);
  hdr[9] = (uint8_t)hc;
  hdr[10] = (uint8_t)(hc >> 8);
  uint32_t crc = hc;
  if (na) crc = odl_crc32_update(crc, a, na);
  if (nb) crc = odl_crc32_update(crc, b, nb);
  put_bytes(hdr, sizeof hdr);
  if (na) put_bytes((const uint8_t *)a, na);
  if (nb) put_bytes((const uint8_t *)b, nb);
  uint8_t t[4];
  odl_put_u32(t, crc);
  put_bytes(t, 4);
  if (keeping) {
    if (na + nb <= ODL_MAX_CACHED_REPLY) {
      const uint8_t *pa = (const uint8_t *)a, *pbb = (const uint8_t *)b;
      for (uint32_t i = 0; i < na; i++) kept[i] = pa[i];
      for (uint32_t i = 0; i < nb; i++) kept[na + i] = pbb[i];
      kept_n = na + nb;
      kept_type = type;
      kept_state = KEPT_OK;
    } else {
      kept_state = KEPT_TOO_LARGE;
    }
  }
}

void odl_send_frame(uint8_t type, const void *payload, uint32_t n) { odl_send_frame2(type, payload, n, 0, 0); }

void odl_send_error(uint32_t code, const char *msg) {
  uint8_t c[4];
  odl_put_u32(c, code);
  uint32_t n = 0;
  while (msg[n]) n++;
  odl_send_frame2(ODL_MSG_ERROR, c, 4, msg, n);
}

int odl_is_repeat(uint16_t seq) { return seq != 0 && seq == last_seq; }

void odl_reply_seq(uint16_t seq) {
  keeping = 0;
  tx_seq = seq;
}

void odl_replay_reply(void) {
  odl_reply_seq(last_seq);
  if (kept_state == KEPT_OK) odl_send_frame(kept_type, kept, kept_n);
  else odl_send_error(ODL_ERR_NOT_CACHED, kept_state == KEPT_TOO_LARGE ? "reply too large to repeat" : "no reply kept");
}

void odl_begin_request(uint16_t seq) {
  odl_reply_seq(seq);
  odl_send_frame(ODL_MSG_ACCEPTED, 0, 0);
  last_seq = seq;              /* seq 0 (session start) forgets the previous request */
  keeping = seq != 0;
  kept_state = KEPT_NONE;
}

#ifdef ODL_FUZZ
/* Native fuzz build only (tests/fuzz): bytes put back and not yet rescanned, and a fresh start per input. */
uint32_t odl_fuzz_pending(void) { return pb_len - pb_pos; }
void odl_fuzz_reset(void) {
  pb_pos = pb_len = 0;
  tx_seq = last_seq = 0;
  keeping = 0;
  kept_state = KEPT_NONE;
}
#endif
