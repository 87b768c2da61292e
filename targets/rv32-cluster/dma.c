/* rv32-cluster cluster DMA on QEMU (see odl_dma.h). Transfers are queued in issue order and carried out (copied by
 * the hart that waits) only when a wait needs them, or when the queue is full (the oldest first): the latest a DMA
 * engine could finish them. A schedule that reads a tile before waiting for it, or overwrites L1 a write-back has
 * not copied yet, therefore computes with stale data here and fails validation, instead of passing by luck. The
 * generated code issues and waits from hart 0 only, between kernel calls. */
#include "odl_dma.h"
#include "odl_range.h"
#include "platform.h"

#ifndef ODL_DMA_QUEUE /* a host test (tests/kernels/test_dma_gather_native.py) records every transfer in a longer queue */
#define ODL_DMA_QUEUE 64
#endif
typedef struct {
  unsigned char *d;
  const unsigned char *s;
  uint32_t row_bytes, rows, dst_stride, src_stride;
} dma_job_t;
static dma_job_t queue[ODL_DMA_QUEUE];
static uint32_t issued, done; /* transfer k (1-based) is queue[(k - 1) % ODL_DMA_QUEUE]; done: carried out */

static void copy_row(unsigned char *d, const unsigned char *s, uint32_t n) {
  if ((((uintptr_t)d | (uintptr_t)s | n) & 3u) == 0) {
    uint32_t *dw = (uint32_t *)d;
    const uint32_t *sw = (const uint32_t *)s;
    for (uint32_t i = 0; i < n / 4; i++) dw[i] = sw[i];
  } else {
    for (uint32_t i = 0; i < n; i++) d[i] = s[i];
  }
}

/* QEMU's stand-in for the DMA engine: carries out the oldest queued transfer. Not inlined, so that the timing model
 * (qemu_plugins/timing.c) can leave its instructions uncharged: on the MCU the DMA engine does this copy. */
__attribute__((noinline)) void odl_dma_engine_run(void);
__attribute__((noinline)) void odl_dma_engine_run(void) {
  const dma_job_t *j = &queue[done % ODL_DMA_QUEUE];
  for (uint32_t r = 0; r < j->rows; r++)
    copy_row(j->d + r * j->dst_stride, j->s + r * j->src_stride, j->row_bytes);
  done++;
}

static inline uint32_t enqueue(void *dst, const void *src, uint32_t row_bytes, uint32_t rows, uint32_t dst_stride,
                               uint32_t src_stride) {
  dma_job_t *j = &queue[issued % ODL_DMA_QUEUE];
  j->d = (unsigned char *)dst;
  j->s = (const unsigned char *)src;
  j->row_bytes = row_bytes;
  j->rows = rows;
  j->dst_stride = dst_stride;
  j->src_stride = src_stride;
  return ++issued;
}

/* A full queue first waits for its oldest transfer. A function of its own, entered by a tail call, so that
 * odl_dma_start's common path saves no registers (it is hart 0's most frequent call between kernels). */
__attribute__((noinline, cold)) static uint32_t start_when_full(void *dst, const void *src, uint32_t row_bytes,
                                                                uint32_t rows, uint32_t dst_stride, uint32_t src_stride) {
  odl_dma_engine_run();
  return enqueue(dst, src, row_bytes, rows, dst_stride, src_stride);
}

/* odl_dma_start and odl_dma_wait stay functions of their own (not inlined): the timing model watches their entries. */
__attribute__((noinline)) uint32_t odl_dma_start(void *dst, const void *src, uint32_t row_bytes, uint32_t rows,
                                                 uint32_t dst_stride, uint32_t src_stride) {
  if (__builtin_expect(issued - done == ODL_DMA_QUEUE, 0))
    return start_when_full(dst, src, row_bytes, rows, dst_stride, src_stride);
  return enqueue(dst, src, row_bytes, rows, dst_stride, src_stride);
}

#define ODL_IM2COL_MAX_K 11 /* kernel rows/columns whose ranges odl_dma_im2col computes once */
static const unsigned char zero_row[ODL_DMA_ZERO_BYTES]; /* the source of the zero-filling transfers */

/* rows x n zero elements from element off on, rows `stride` elements apart */
static uint32_t zero_rows(unsigned char *d, uint32_t es, uint32_t off, int rows, int n, uint32_t stride) {
  return odl_dma_start(d + off * es, zero_row, (uint32_t)n * es, (uint32_t)rows, stride * es, 0);
}

/* ODL_IM2COL_WIDE (odl.ir.program.Gather.wide): per tap, one transfer over all channels, then the padding columns it ran
 * over, per output row; with zero, the output rows outside the image */
static uint32_t im2col_wide(unsigned char *d, const unsigned char *s, uint32_t es, int c, int h, int w, int kh,
                            int kw, int pt, int pl, int ho, int wo, int zero) {
  uint32_t t = issued, cs = (uint32_t)(kh * kw * ho * wo); /* channel stride in col */
  for (int i = 0; i < kh; i++) {
    int v0, v1;
    odl_out_range(i, h, 1, pt, ho, &v0, &v1);
    for (int j = 0; j < kw; j++) {
      int a, b;
      odl_out_range(j, w, 1, pl, wo, &a, &b);
      uint32_t base = (uint32_t)((i * kw + j) * ho * wo);
      if (v1 <= v0) {
        if (zero) t = zero_rows(d, es, base, c, ho * wo, cs);
        continue;
      }
      int s0 = (v0 - pt + i) * w - pl + j, n = (v1 - v0) * w;
      int skip = s0 < 0 ? -s0 : 0, over = s0 + n - h * w > 0 ? s0 + n - h * w : 0;
      if (n - skip - over > 0)
        t = odl_dma_start(d + (base + (uint32_t)(v0 * wo + skip)) * es, s + (uint32_t)(s0 + skip) * es,
                          (uint32_t)(n - skip - over) * es, (uint32_t)c, cs * es, (uint32_t)(h * w) * es);
      for (int r = v0; r < v1; r++) {
        if (a) t = zero_rows(d, es, base + (uint32_t)(r * wo), c, a, cs);
        if (b < wo) t = zero_rows(d, es, base + (uint32_t)(r * wo + b), c, wo - b, cs);
      }
      if (!zero) continue;
      if (v0) t = zero_rows(d, es, base, c, v0 * wo, cs);
      if (v1 < ho) t = zero_rows(d, es, base + (uint32_t)(v1 * wo), c, (ho - v1) * wo, cs);
    }
  }
  return t;
}

uint32_t odl_dma_im2col(void *col, const void *x, uint32_t es, int c, int h, int w, int kh, int kw, int sh, int sw,
                        int pt, int pl, int ho, int wo, int mode) {
  unsigned char *d = (unsigned char *)col;
  const unsigned char *s = (const unsigned char *)x;
  int zero = mode & ODL_IM2COL_ZERO;
  if (mode & ODL_IM2COL_WIDE) return im2col_wide(d, s, es, c, h, w, kh, kw, pt, pl, ho, wo, zero);
  uint32_t t = issued; /* no transfer: the last ticket issued */
  /* the output ranges of each kernel row and column, the same for every channel: computed once (they divide) */
  int rv0[ODL_IM2COL_MAX_K], rv1[ODL_IM2COL_MAX_K], ca[ODL_IM2COL_MAX_K], cb[ODL_IM2COL_MAX_K];
  int cache = kh <= ODL_IM2COL_MAX_K && kw <= ODL_IM2COL_MAX_K;
  if (cache) {
    for (int i = 0; i < kh; i++) odl_out_range(i, h, sh, pt, ho, &rv0[i], &rv1[i]);
    for (int j = 0; j < kw; j++) odl_out_range(j, w, sw, pl, wo, &ca[j], &cb[j]);
  }
  for (int ci = 0; ci < c; ci++)
    for (int i = 0; i < kh; i++) {
      int v0, v1;
      if (cache) v0 = rv0[i], v1 = rv1[i];
      else odl_out_range(i, h, sh, pt, ho, &v0, &v1);
      for (int j = 0; j < kw; j++) {
        int a, b;
        if (cache) a = ca[j], b = cb[j];
        else odl_out_range(j, w, sw, pl, wo, &a, &b);
        uint32_t base = (uint32_t)((ci * kh + i) * kw + j) * ho * wo;
        if (v1 <= v0 || b <= a) { /* no input reaches this column row: all padding */
          if (zero) t = zero_rows(d, es, base, ho, wo, (uint32_t)wo);
          continue;
        }
        unsigned char *dp = d + (base + (uint32_t)v0 * wo + a) * es;
        const unsigned char *sp = s + ((uint32_t)(ci * h + v0 * sh - pt + i) * w + a * sw - pl + j) * es;
        if (sw == 1) {
          t = odl_dma_start(dp, sp, (uint32_t)(b - a) * es, (uint32_t)(v1 - v0), (uint32_t)wo * es,
                            (uint32_t)(sh * w) * es);
        } else { /* one transfer per output row: rows of one element, sw apart in x */
          for (int r = v0; r < v1; r++, dp += (uint32_t)wo * es, sp += (uint32_t)(sh * w) * es)
            t = odl_dma_start(dp, sp, es, (uint32_t)(b - a), es, (uint32_t)sw * es);
        }
        if (!zero) continue;
        /* the padding (odl.ir.program.Gather.zeros): output rows outside the image, then the padding columns */
        if (v0) t = zero_rows(d, es, base, v0, wo, (uint32_t)wo);
        if (v1 < ho) t = zero_rows(d, es, base + (uint32_t)v1 * wo, ho - v1, wo, (uint32_t)wo);
        if (a) t = zero_rows(d, es, base + (uint32_t)v0 * wo, v1 - v0, a, (uint32_t)wo);
        if (b < wo) t = zero_rows(d, es, base + (uint32_t)v0 * wo + b, v1 - v0, wo - b, (uint32_t)wo);
      }
    }
  return t;
}

__attribute__((noinline)) void odl_dma_wait(uint32_t ticket) {
  while ((int32_t)(done - ticket) < 0) odl_dma_engine_run();
}

void odl_dma_wait_all(void) { odl_dma_wait(issued); }

static void puthex(uint32_t v) {
  static const char d[] = "0123456789abcdef";
  for (int i = 28; i >= 0; i -= 4) uart_putc((uint8_t)d[(v >> i) & 15]);
}

void odl_l1_check(const void *p, const char *what) {
  const unsigned char *q = (const unsigned char *)p;
  if (q >= __odl_l1_start && q < __odl_l1_end) return;
  uart_puts("\n*** odl L1 check (fatal): ");  /* no "OD": that is the frame magic */
  uart_puts(what);
  uart_puts(" points to 0x");
  puthex((uint32_t)(uintptr_t)p);
  uart_puts(", outside L1\n");
  odl_exit(0x7e);
}
