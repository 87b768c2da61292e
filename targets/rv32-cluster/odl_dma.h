/* rv32-cluster cluster DMA: moves tiles between the L2 arena and L1 (the memory hierarchy, odl/tile/tiler.py).
 *
 * A transfer copies `rows` rows of `row_bytes` bytes; source rows are `src_stride` bytes apart, destination rows
 * `dst_stride` bytes apart (rows == 1: a 1-D transfer). Transfers run in issue order (one FIFO channel).
 * odl_dma_start returns a ticket; odl_dma_wait(t) returns once transfer t and every earlier one are complete.
 *
 * On QEMU the copy is done by the calling hart when the transfer is issued, outside the kernels' counted work: the
 * cores are not charged for it, and its time comes from the DMA model (odl/tile/memory.py: setup + bytes / bandwidth on
 * one FIFO engine), deterministically. A board's port implements the same three calls with its DMA engine. */
#ifndef ODL_DMA_H
#define ODL_DMA_H
#include <stdint.h>

uint32_t odl_dma_start(void *dst, const void *src, uint32_t row_bytes, uint32_t rows, uint32_t dst_stride,
                       uint32_t src_stride);
void odl_dma_wait(uint32_t ticket);
/* im2col by DMA (memory hierarchy, no dilation): for each column row (ci, i, j) of col [c*kh*kw, ho*wo], the output
 * rows whose input row lies in the image, over the output columns whose input column does. sw = 1: one 2-D
 * transfer per column row (rows sh*w elements apart in x, wo apart in col); sw > 1: one per output row, its rows
 * single elements sw apart in x. The zero padding is the DMA's (zero) or the im2col kernel's (pad_only). es: element
 * bytes. Returns
 * the ticket of the last transfer (none: the last ticket issued). The same transfers as odl.ir.program.Gather. */
uint32_t odl_dma_im2col(void *col, const void *x, uint32_t es, int c, int h, int w, int kh, int kw, int sh, int sw,
                        int pt, int pl, int ho, int wo, int mode);
/* mode & ODL_IM2COL_ZERO: odl_dma_im2col also zero-fills the padding (2-D transfers from a zero row, source stride
 * 0), rows of at most ODL_DMA_ZERO_BYTES (odl/tile/tiler.py zero-fills by DMA only when they fit).
 * mode & ODL_IM2COL_WIDE (stride 1, wo == w): one 2-D transfer per tap (i, j) over all c channels instead, each row
 * a contiguous run of x across the output rows; the elements that run past a row's edge land on padding columns,
 * which zero fills after the data overwrite (always). */
#define ODL_IM2COL_ZERO 1
#define ODL_IM2COL_WIDE 2
#define ODL_DMA_ZERO_BYTES 256
void odl_dma_wait_all(void);

/* DMA programming off the cores' path (-DODL_DMA_CTRL): a controller hart (hart ODL_NUM_CORES, as a PULP cluster's
 * controller core) runs the statements that issue a tile's prefetches and write-backs, fn(n), while the cores run the
 * tile's kernel; odl_dma_ctrl_join() waits until it has. Without ODL_DMA_CTRL the issuing hart runs fn(n) itself,
 * before the kernel, as it always did. The generated code uses the ODL_ISSUE macros. */
typedef void (*odl_issue_fn)(int n);
void odl_dma_ctrl_post(odl_issue_fn fn, int n);
void odl_dma_ctrl_join(void);
#ifdef ODL_DMA_CTRL
#define ODL_ISSUE(fn, n) odl_dma_ctrl_post((fn), (n))
#define ODL_ISSUE_JOIN() odl_dma_ctrl_join()
#else
#define ODL_ISSUE(fn, n) (fn)(n)
#define ODL_ISSUE_JOIN() ((void)0)
#endif

/* L1 (TCDM) bounds, from the linker script: tiles live in [__odl_l1_start, __odl_l1_end). */
extern unsigned char __odl_l1_start[], __odl_l1_end[];
/* Stops the run with a report naming the call when p is not in L1 (the validation build checks every kernel
 * pointer of a tiled step). */
void odl_l1_check(const void *p, const char *what);
#endif
