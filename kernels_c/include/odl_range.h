/* The one piece of conv index arithmetic that the kernels (im2col / col2im) and the target's DMA gathers
 * (targets/<target>/dma.c) share; odl.ir.program.Gather._range is its host model. */
#ifndef ODL_RANGE_H
#define ODL_RANGE_H

/* Along one conv axis (columns: tap j, input width w, stride sw, padding pl, wo outputs; rows: i, h, sh, pt, ho),
 * the outputs [*lo, *hi) whose input lies in the image: 0 <= o*sw - pl + j < w, clamped so that lo <= hi <= wo. */
static inline void odl_out_range(int j, int w, int sw, int pl, int wo, int *lo, int *hi) {
  int t = pl - j; /* need o*sw >= t */
  int l = t <= 0 ? 0 : (t + sw - 1) / sw;
  int u = w - 1 + pl - j; /* need o*sw <= u */
  int h = u < 0 ? 0 : u / sw + 1;
  if (l > wo) l = wo;
  if (h > wo) h = wo;
  *lo = l;
  *hi = h < l ? l : h;
}

#endif
