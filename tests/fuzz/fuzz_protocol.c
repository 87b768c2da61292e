/* libFuzzer harness for the device side of the protocol: targets/common/protocol.c (frame parser, resync, kept
 * replies) and main.c's command handler, compiled natively with ASan. The fuzz input is the byte stream the UART
 * receives. Checked, besides ASan's out-of-bounds and use-after-scope reports:
 *   - a command runs (the device sends ACCEPTED) only for bytes that form a frame whose header CRC and CRC32 hold,
 *     checked here with an independent bitwise CRC32 over the input bytes the parser consumed;
 *   - a STEP runs at most once per ACCEPTED, and a request repeated with the same seq is never ACCEPTED (run)
 *     twice in a row: it is answered from the kept reply;
 *   - every frame the device sends is well formed (its own CRCs hold).
 * Build: clang-19 -g -O1 -fsanitize=fuzzer,address -Dmain=odl_firmware_main -DODL_FUZZ -Itests/fuzz/include
 *        -Itargets/common tests/fuzz/fuzz_protocol.c targets/common/protocol.c targets/common/crc32.c
 *        targets/common/byte_io.c targets/common/main.c */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocol.h"

unsigned char odl_arena[4096] __attribute__((aligned(8)));
const uint32_t odl_arena_bytes = sizeof odl_arena;
int odl_firmware_main(void);   /* targets/common/main.c's main, renamed */
uint32_t odl_fuzz_pending(void);
void odl_fuzz_reset(void);

static const uint8_t *in;
static size_t in_n, in_pos;
static jmp_buf done;
static int steps_run, accepted, step_token, mcycle_reads;
static long last_accepted_seq;   /* -1: none */

/* device output, reassembled into frames */
static uint8_t out[16 + ODL_MAX_CACHED_REPLY + 64];
static size_t out_n;

static uint32_t crc32_ref(const uint8_t *p, size_t n, uint32_t crc) {   /* bitwise, independent of the table */
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* Is there a CRC-valid frame ending exactly at input offset `end`? */
static int valid_frame_ends_at(size_t end) {
  if (end < 15 || end > in_n) return 0;
  for (size_t s = 0; s + 15 <= end; s++) {
    const uint8_t *f = in + s;
    if (f[0] != 'O' || f[1] != 'D') continue;
    uint32_t n = rd32(f + 5);
    if ((size_t)n != end - s - 15) continue;
    if ((crc32_ref(f + 2, 7, 0) & 0xFFFF) != (uint32_t)(f[9] | f[10] << 8)) continue;
    uint32_t c = crc32_ref(f + 11, n, crc32_ref(f + 2, 7, 0));
    if (c == rd32(f + 11 + n)) return 1;
  }
  return 0;
}

uint8_t uart_getc(void) {
  if (in_pos >= in_n) longjmp(done, 1);
  return in[in_pos++];
}

void uart_putc(uint8_t c) {
  if (out_n >= sizeof out) abort();               /* a frame larger than any reply can be */
  out[out_n++] = c;
  if (out_n == 11) {                              /* a header: check it, and check ACCEPTED against the input */
    if (out[0] != 'O' || out[1] != 'D' || (crc32_ref(out + 2, 7, 0) & 0xFFFF) != (uint32_t)(out[9] | out[10] << 8)) {
      fprintf(stderr, "device sent a malformed header\n");
      abort();
    }
    if (out[2] == ODL_MSG_ACCEPTED) {
      size_t end = in_pos - odl_fuzz_pending();   /* input offset where the accepted frame ended */
      if (!valid_frame_ends_at(end)) {
        fprintf(stderr, "a command was accepted from bytes that are not a CRC-valid frame (ending at %zu)\n", end);
        abort();
      }
      long seq = out[3] | out[4] << 8;
      if (seq != 0 && seq == last_accepted_seq) {   /* a repeated request must be answered, not run again */
        fprintf(stderr, "request seq %ld was run twice\n", seq);
        abort();
      }
      last_accepted_seq = seq;
      accepted++;
      step_token = 1;
    }
  }
  if (out_n >= 15 && out_n == 15 + (size_t)rd32(out + 5)) {   /* a whole frame: its CRC32 must hold */
    uint32_t n = rd32(out + 5);
    if (crc32_ref(out + 11, n, crc32_ref(out + 2, 7, 0)) != rd32(out + 11 + n)) {
      fprintf(stderr, "device sent a frame with a bad CRC\n");
      abort();
    }
    out_n = 0;
  }
}

void uart_init(void) {}
void odl_exit(int code) { (void)code; longjmp(done, 2); }
/* do_step reads mcycle once before and once after its steps: each "before" must follow its own ACCEPTED, so a
 * STEP runs once per accepted request and never for a repeated one (answered from the kept reply) */
uint64_t odl_read_mcycle(void) {
  if (mcycle_reads++ % 2 == 0) {
    if (!step_token) {
      fprintf(stderr, "a STEP ran without a new accepted request\n");
      abort();
    }
    step_token = 0;
  }
  return 1000;
}
uint64_t odl_read_minstret(void) { return 1000; }
int odl_semihost_open(const char *path, int mode) { (void)mode; return strlen(path) ? 3 : -1; }
int odl_semihost_write(int fd, const void *buf, uint32_t n) {
  volatile uint8_t s = 0;                          /* touch every byte: ASan checks the range is inside the arena */
  for (uint32_t i = 0; i < n; i++) s ^= ((const uint8_t *)buf)[i];
  (void)fd; (void)s;
  return 0;
}
int odl_semihost_close(int fd) { (void)fd; return 0; }

float odl_model_step(void) {
  if (++steps_run > 1000) longjmp(done, 3);   /* STEP 4000000000 from a fuzz input: stop this input there */
  odl_arena[0]++;
  return 1.0f;
}

/* Structured inputs (first byte odd): records [type][seq][len][damage][payload: len bytes] become frames with valid
 * CRCs, so the command handlers see real requests (random bytes almost never carry a valid CRC32); `damage` then
 * flips (bit 0x40), drops (0x80) or duplicates (0x20) the frame's byte at position (damage & 0x1f) * 3. */
static uint8_t built[1 << 16];

static size_t build_stream(const uint8_t *d, size_t n) {
  size_t k = 0, i = 0;
  while (i + 4 <= n) {
    uint8_t type = d[i], seq = d[i + 1], len = d[i + 2], dmg = d[i + 3];
    i += 4;
    if (len > n - i) len = (uint8_t)(n - i);
    uint8_t f[15 + 255];
    f[0] = 'O'; f[1] = 'D'; f[2] = type; f[3] = seq; f[4] = 0;
    f[5] = len; f[6] = f[7] = f[8] = 0;
    uint32_t hc = crc32_ref(f + 2, 7, 0);
    f[9] = (uint8_t)hc; f[10] = (uint8_t)(hc >> 8);
    memcpy(f + 11, d + i, len);
    i += len;
    uint32_t c = crc32_ref(f + 11, len, crc32_ref(f + 2, 7, 0));
    for (int b = 0; b < 4; b++) f[11 + len + b] = (uint8_t)(c >> (8 * b));
    size_t fl = 15u + len, pos = (size_t)(dmg & 0x1f) * 3 % fl;
    if (k + fl + 1 > sizeof built) break;
    for (size_t j = 0; j < fl; j++) {
      if (j == pos && (dmg & 0x80)) continue;
      built[k++] = (j == pos && (dmg & 0x40)) ? (uint8_t)(f[j] ^ 0x5A) : f[j];
      if (j == pos && (dmg & 0x20)) built[k++] = f[j];
    }
  }
  return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int init;
  if (!init) { odl_crc32_init(); init = 1; }
  if (size && (data[0] & 1)) {
    in_n = build_stream(data + 1, size - 1);
    in = built;
  } else {
    in = data;
    in_n = size;
  }
  in_pos = 0;
  out_n = 0;
  steps_run = accepted = step_token = mcycle_reads = 0;
  last_accepted_seq = -1;
  if (setjmp(done) == 0) {
    odl_firmware_main();   /* serves frames until the input ends (longjmp) */
  }
  odl_fuzz_reset();
  return 0;
}
