/* odl_store_save / odl_store_load: the training state in flash, safe against power loss at any moment.
 *
 * Two slots, each a whole number of erase blocks: [slot header, 32 B | state blob (odl_params_export's format)].
 * Slot header: magic "ODLS", sequence number, blob bytes, blob CRC, model hash, 2 reserved words, CRC32 of the
 * first 28 bytes (programmed last of all: a header cut short has an erased CRC word and never validates).
 * A slot is valid when its header's CRC holds and its blob passes every import check (magic, version, model hash,
 * size, CRC32 over header and payload).
 *
 * Save: the target is the slot that does not hold the newest valid state. Erase it, program the blob, read it back,
 * program the slot header with sequence = newest + 1, read it back. Until the header's last word is programmed the
 * target is invalid and the other slot (the last completed save) is the newest valid one; after it, the target is.
 * Load: the valid slots, newest first; the first one that imports wins. */
#include "odl.h"
#include "odl_embed.h"
#include "odl_flash.h"
#include "crc32.h"

#define SLOT_MAGIC 0x534C444Fu   /* "ODLS" */
#define SLOT_HDR 32u

typedef struct { uint32_t magic, seq, blob_bytes, blob_crc, model_hash, reserved[2], crc; } slot_header_t;

static uint32_t last_seq;
static unsigned char buf[256] __attribute__((aligned(4)));

uint32_t odl_store_seq(void) { return last_seq; }

static uint32_t slot_bytes(void) {
  uint32_t b = odl_flash_block_size(), need = SLOT_HDR + odl_params_size();
  return (need + b - 1) / b * b;
}

typedef struct { uint32_t base; } flash_ctx_t;

static int flash_read(void *ctx, uint32_t off, void *dst, uint32_t n) {
  return odl_flash_read(((flash_ctx_t *)ctx)->base + off, dst, n);
}

/* header valid (CRC, magic, this model, this size) -> 1, header in *h */
static int read_header(uint32_t slot, slot_header_t *h) {
  if (odl_flash_read(slot * slot_bytes(), h, sizeof *h)) return 0;
  if (h->magic != SLOT_MAGIC || odl_crc32_update(0, h, 28) != h->crc) return 0;
  return h->model_hash == odl_embed_model.model_hash && h->blob_bytes == odl_params_size();
}

/* the blob in the slot passes its CRC (without importing it) */
static int blob_ok(uint32_t slot, const slot_header_t *h) {
  uint32_t base = slot * slot_bytes() + SLOT_HDR;
  odl_blob_header_t bh;
  if (odl_flash_read(base, &bh, sizeof bh) || bh.crc != h->blob_crc || bh.magic != ODL_BLOB_MAGIC) return 0;
  uint32_t crc = odl_crc32_update(0, &bh, 28);
  for (uint32_t off = sizeof bh; off < h->blob_bytes; off += sizeof buf) {
    uint32_t k = h->blob_bytes - off < sizeof buf ? h->blob_bytes - off : sizeof buf;
    if (odl_flash_read(base + off, buf, k)) return 0;
    crc = odl_crc32_update(crc, buf, k);
  }
  return crc == bh.crc;
}

static int verify(uint32_t off, const void *src, uint32_t n) {
  const unsigned char *s = (const unsigned char *)src;
  for (uint32_t done = 0; done < n; done += sizeof buf) {
    uint32_t k = n - done < sizeof buf ? n - done : sizeof buf;
    if (odl_flash_read(off + done, buf, k)) return 1;
    for (uint32_t i = 0; i < k; i++)
      if (buf[i] != s[done + i]) return 1;
  }
  return 0;
}

odl_status odl_store_save(void) {
  if (!odl_initialized()) return ODL_ERR_STATE;
  uint32_t sb = slot_bytes();
  if (2u * sb > odl_flash_size() || odl_flash_write_unit() > 4u || 4u % odl_flash_write_unit()) return ODL_ERR_FLASH_SIZE;
  slot_header_t h[2];
  int valid[2];
  for (uint32_t s = 0; s < 2; s++) valid[s] = read_header(s, &h[s]) && blob_ok(s, &h[s]);
  uint32_t newest = valid[0] && (!valid[1] || h[0].seq > h[1].seq) ? 0u : 1u;
  uint32_t seq = valid[newest] ? h[newest].seq + 1u : 1u;
  uint32_t target = valid[newest] ? 1u - newest : 0u;
  uint32_t base = target * sb;
  for (uint32_t off = 0; off < sb; off += odl_flash_block_size())
    if (odl_flash_erase(base + off)) return ODL_ERR_FLASH;
  odl_blob_header_t bh;
  odl_blob_header(&bh);
  if (odl_flash_program(base + SLOT_HDR, &bh, sizeof bh) ||
      odl_flash_program(base + SLOT_HDR + sizeof bh, odl_arena, odl_embed_model.shared_bytes))
    return ODL_ERR_FLASH;
  if (verify(base + SLOT_HDR, &bh, sizeof bh) || verify(base + SLOT_HDR + sizeof bh, odl_arena, odl_embed_model.shared_bytes))
    return ODL_ERR_FLASH;
  slot_header_t nh = {SLOT_MAGIC, seq, odl_params_size(), bh.crc, odl_embed_model.model_hash, {0, 0}, 0};
  nh.crc = odl_crc32_update(0, &nh, 28);
  if (odl_flash_program(base, &nh, sizeof nh) || verify(base, &nh, sizeof nh)) return ODL_ERR_FLASH;
  last_seq = seq;
  return ODL_OK;
}

odl_status odl_store_load(void) {
  if (!odl_initialized()) return ODL_ERR_STATE;
  uint32_t sb = slot_bytes();
  if (2u * sb > odl_flash_size()) return ODL_ERR_FLASH_SIZE;
  slot_header_t h[2];
  int valid[2];
  for (uint32_t s = 0; s < 2; s++) valid[s] = read_header(s, &h[s]);
  uint32_t first = valid[0] && (!valid[1] || h[0].seq > h[1].seq) ? 0u : 1u;
  for (uint32_t k = 0; k < 2; k++) {
    uint32_t s = k == 0 ? first : 1u - first;
    if (!valid[s]) continue;
    flash_ctx_t ctx = {s * sb + SLOT_HDR};
    if (odl_blob_import_stream(flash_read, &ctx, h[s].blob_bytes) == ODL_OK) {
      last_seq = h[s].seq;
      return ODL_OK;
    }
  }
  return ODL_ERR_NO_STATE;
}
