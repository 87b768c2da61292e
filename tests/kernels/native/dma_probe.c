/* Host build of the firmware's DMA (targets/rv32-cluster/dma.c) for tests/kernels/test_dma_gather_native.py: the same
 * translation unit, a queue long enough to keep every transfer of one gather, and stubs for the platform. */
#include <stdint.h>
#include <stdlib.h>
#define ODL_DMA_QUEUE 65536
#include "dma.c"

unsigned char __odl_l1_start[1], __odl_l1_end[1];
void uart_putc(uint8_t c) { (void)c; }
void uart_puts(const char *s) { (void)s; }
void odl_exit(int code) { exit(code); }

/* Runs odl_dma_im2col, then lists its transfers in issue order (rec: 6 per transfer: destination offset from col,
 * source offset from x or -1 for the zero row, row bytes, rows, destination and source strides) and carries them
 * out. Returns the number of transfers, or -1 if more than max. */
int dma_probe_im2col(void *col, const void *x, uint32_t es, int c, int h, int w, int kh, int kw, int sh, int sw,
                     int pt, int pl, int ho, int wo, int mode, long *rec, int max) {
  uint32_t first = issued;
  odl_dma_im2col(col, x, es, c, h, w, kh, kw, sh, sw, pt, pl, ho, wo, mode);
  int n = (int)(issued - first);
  if (n > max || n > ODL_DMA_QUEUE) return -1;
  for (int k = 0; k < n; k++) {
    const dma_job_t *j = &queue[(first + k) % ODL_DMA_QUEUE];
    long *r = rec + 6 * k;
    r[0] = (long)(j->d - (unsigned char *)col);
    r[1] = j->s == zero_row ? -1 : (long)(j->s - (const unsigned char *)x);
    r[2] = j->row_bytes;
    r[3] = j->rows;
    r[4] = j->dst_stride;
    r[5] = j->src_stride;
  }
  odl_dma_wait_all();
  return n;
}
