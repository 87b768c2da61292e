/* odl device firmware main: say HELLO, then serve host commands forever (runs on core 0).
 * The native fuzzer (tests/fuzz) builds this file with -Dmain=odl_firmware_main and leaves the loop by longjmp.
 * The generated model provides odl_arena, odl_arena_bytes and odl_model_step(). */
#include <stdint.h>
#include "odl_types.h"
#include "odl_team.h"
#include "platform.h"
#include "protocol.h"

extern unsigned char odl_arena[];
extern const uint32_t odl_arena_bytes;
float odl_model_step(void);

static uint8_t rx[ODL_MAX_PAYLOAD] __attribute__((aligned(8)));
/* Messages this loop does not know go to the generated model first (odl train's firmware serves DATASET and RUN
 * there); it returns 1 when it handled (and answered) the message. */
__attribute__((weak)) int odl_model_message(uint8_t type, const uint8_t *payload, uint32_t n) {
  (void)type; (void)payload; (void)n;
  return 0;
}

static char fname[256];

static int in_arena(uint32_t off, uint32_t len) {
  return off <= odl_arena_bytes && len <= odl_arena_bytes - off;
}

static void ack(uint32_t status) {
  uint8_t p[4];
  odl_put_u32(p, status);
  odl_send_frame(ODL_MSG_ACK, p, 4);
}

static void send_hello(void) {
  uint8_t p[20];
  odl_put_u32(p + 0, ODL_PROTO_VERSION);
  odl_put_u32(p + 4, (uint32_t)odl_num_cores());
  odl_put_u32(p + 8, ODL_PRECISION_BITS);
  odl_put_u32(p + 12, (uint32_t)(uintptr_t)odl_arena);
  odl_put_u32(p + 16, odl_arena_bytes);
  odl_send_frame(ODL_MSG_HELLO, p, sizeof p);
}

static void do_step(uint32_t count) {
  float loss = 0.0f;
  uint64_t c0 = odl_read_mcycle(), i0 = odl_read_minstret();
  for (uint32_t k = 0; k < count; k++) loss = odl_model_step();
  uint64_t c1 = odl_read_mcycle(), i1 = odl_read_minstret();
  uint64_t dc = c1 - c0, di = i1 - i0;
  uint8_t p[24];
  union { float f; uint32_t u; } lv = {.f = loss};
  odl_put_u32(p + 0, lv.u);
  odl_put_u32(p + 4, count);
  odl_put_u32(p + 8, (uint32_t)dc);
  odl_put_u32(p + 12, (uint32_t)(dc >> 32));
  odl_put_u32(p + 16, (uint32_t)di);
  odl_put_u32(p + 20, (uint32_t)(di >> 32));
  odl_send_frame(ODL_MSG_STEP_DONE, p, sizeof p);
}

static void do_dump(uint32_t off, uint32_t len, const uint8_t *name, uint32_t nlen) {
  if (nlen == 0 || nlen >= sizeof fname) { odl_send_error(ODL_ERR_MALFORMED, "DUMP: bad filename length"); return; }
  for (uint32_t i = 0; i < nlen; i++) fname[i] = (char)name[i];
  fname[nlen] = 0;
  int fd = odl_semihost_open(fname, ODL_SH_MODE_WB);
  if (fd < 0) { ack(1); return; }
  int rest = len ? odl_semihost_write(fd, odl_arena + off, len) : 0;
  int rc = odl_semihost_close(fd);
  ack(rest != 0 ? 2u : (rc != 0 ? 3u : 0u));
}

int main(void) {
  uart_init();
  odl_crc32_init();
  odl_reply_seq(ODL_SEQ_BOOT);
  send_hello();
  for (;;) {
    /* Reliability is handled here once for every command (protocol.h): a frame that fails its CRC is never
     * executed (the host is told, under the frame's seq, so it resends at once); a repeated request is answered
     * from the kept reply; a new one is ACCEPTED, then dispatched. A handler answers with exactly one frame
     * (odl_send_frame / odl_send_error / ack), which is kept for a repeat. */
    uint8_t type;
    uint16_t seq;
    uint32_t n;
    int err = odl_recv_frame(&type, &seq, rx, &n);
    if (err) {
      odl_reply_seq(seq);
      odl_send_error((uint32_t)err, err == ODL_ERR_CRC ? "bad CRC" : "frame too long");
      continue;
    }
    if (odl_is_repeat(seq)) { odl_replay_reply(); continue; }
    odl_begin_request(seq);
    switch (type) {
      case ODL_MSG_WRITE: {
        if (n < 4) { odl_send_error(ODL_ERR_MALFORMED, "WRITE: short payload"); break; }
        uint32_t off = odl_get_u32(rx), len = n - 4;
        if (!in_arena(off, len)) { odl_send_error(ODL_ERR_RANGE, "WRITE: outside the arena"); break; }
        for (uint32_t i = 0; i < len; i++) odl_arena[off + i] = rx[4 + i];
        ack(0);
        break;
      }
      case ODL_MSG_READ: {
        if (n != 8) { odl_send_error(ODL_ERR_MALFORMED, "READ: payload must be 8 bytes"); break; }
        uint32_t off = odl_get_u32(rx), len = odl_get_u32(rx + 4);
        if (!in_arena(off, len)) { odl_send_error(ODL_ERR_RANGE, "READ: outside the arena"); break; }
        odl_send_frame(ODL_MSG_DATA, odl_arena + off, len);
        break;
      }
      case ODL_MSG_STEP: {
        if (n != 4) { odl_send_error(ODL_ERR_MALFORMED, "STEP: payload must be 4 bytes"); break; }
        do_step(odl_get_u32(rx));
        break;
      }
      case ODL_MSG_DUMP: {
        if (n < 9) { odl_send_error(ODL_ERR_MALFORMED, "DUMP: short payload"); break; }
        uint32_t off = odl_get_u32(rx), len = odl_get_u32(rx + 4);
        if (!in_arena(off, len)) { odl_send_error(ODL_ERR_RANGE, "DUMP: outside the arena"); break; }
        do_dump(off, len, rx + 8, n - 8);
        break;
      }
      case ODL_MSG_INFO:
        send_hello();
        break;
      case ODL_MSG_EXIT: {
        if (n != 4) { odl_send_error(ODL_ERR_MALFORMED, "EXIT: payload must be 4 bytes"); break; }
        uint32_t code = odl_get_u32(rx);
        ack(0);
        odl_exit((int)code);
      }
      default:
        if (odl_model_message(type, rx, n)) break;
        odl_send_error(ODL_ERR_UNKNOWN_TYPE, "unknown message type");
        break;
    }
  }
}
