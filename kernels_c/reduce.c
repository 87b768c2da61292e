/* Reductions and row-wise ops: sum/mean over a range of dims, strided block copy (torch.cat / torch.stack and
 * their gradients), softmax / log_softmax over one dim, and the NLL and BCE-with-logits losses.
 *
 * A tensor reduced or normalised over a dim range is viewed as [outer, r, inner]: the reduced (or softmax) axis
 * has r elements with stride `inner`. All sums are FP32 (FP16 values are widened), results rounded once; the sums
 * over r and the loss sums are blocked / compensated (odl_simd.h).
 * Work splits over cores by independent outputs (odl_split); the losses are small and run on core 0, like
 * odl_softmax_xent. */
#include "odl_kernels.h"
#include "odl_simd.h"

/* y[o, i] = scale * sum_k x[o, k, i]; split over the outer*inner outputs */
void odl_sum_fwd(void *args) {
  const odl_sum_args_t *p = (const odl_sum_args_t *)args;
  int r = p->r, inner = p->inner, lo, hi;
  odl_split(p->outer * inner, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int o = u / inner, i = u - o * inner;
    const odl_t *x = p->x + (size_t)o * r * inner + i;
    odl_ksum_t s = odl_ksum_zero();   /* blocked and compensated (odl_simd.h) */
    for (int k = 0; k < r;) {
      int end = odl_min_i(r, k + ODL_SUM_BLOCK);
      float b = 0.0f;
      for (; k < end; k++) b += (float)x[(size_t)k * inner];
      odl_ksum_add(&s, b);
    }
    p->y[u] = (odl_t)(odl_ksum_value(s) * p->scale);
  }
}

/* dx[o, k, i] (+)= scale * dy[o, i]; split over the outer*r rows of inner elements */
void odl_sum_bwd(void *args) {
  const odl_sum_bwd_args_t *p = (const odl_sum_bwd_args_t *)args;
  int r = p->r, inner = p->inner, lo, hi;
  odl_split(p->outer * r, &lo, &hi);
  for (int row = lo; row < hi; row++) {
    int o = row / r;
    const odl_t *dy = p->dy + (size_t)o * inner;
    odl_t *dx = p->dx + (size_t)row * inner;
    for (int i = 0; i < inner; i++) {
      float g = (float)dy[i] * p->scale;
      dx[i] = (odl_t)(p->accumulate ? (float)dx[i] + g : g);
    }
  }
}

/* dst[o*dst_stride + i] (+)= src[o*src_stride + i], o < outer, i < len; split over outer*len elements */
void odl_block_copy(void *args) {
  const odl_block_copy_args_t *p = (const odl_block_copy_args_t *)args;
  int len = p->len, lo, hi;
  odl_split(p->outer * len, &lo, &hi);
  int u = lo;
  while (u < hi) {
    int o = u / len, i = u - o * len;
    int end = odl_min_i(len, i + (hi - u));
    const odl_t *s = p->src + (size_t)o * p->src_stride;
    odl_t *d = p->dst + (size_t)o * p->dst_stride;
    if (p->accumulate)
      for (int j = i; j < end; j++) d[j] += s[j];
    else
      for (int j = i; j < end; j++) d[j] = s[j];
    u += end - i;
  }
}

/* softmax / log_softmax over the r axis of [outer, r, inner]; split over the outer*inner rows */
void odl_softmax_fwd(void *args) {
  const odl_softmax_args_t *p = (const odl_softmax_args_t *)args;
  int r = p->r, inner = p->inner, lo, hi;
  odl_split(p->outer * inner, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int o = u / inner, i = u - o * inner;
    size_t base = (size_t)o * r * inner + i;
    const odl_t *x = p->x + base;
    odl_t *y = p->y + base;
    float mx = (float)x[0];
    for (int k = 1; k < r; k++) mx = (float)x[(size_t)k * inner] > mx ? (float)x[(size_t)k * inner] : mx;
    float sum = 0.0f;
    for (int k = 0; k < r; k++) sum += odl_expf((float)x[(size_t)k * inner] - mx);
    if (p->log) {
      float lse = mx + odl_logf(sum);
      for (int k = 0; k < r; k++) y[(size_t)k * inner] = (odl_t)((float)x[(size_t)k * inner] - lse);
    } else {
      float inv = 1.0f / sum;
      for (int k = 0; k < r; k++) y[(size_t)k * inner] = (odl_t)(odl_expf((float)x[(size_t)k * inner] - mx) * inv);
    }
  }
}

/* from the output y: softmax dx = y * (dy - sum(dy*y)); log_softmax dx = dy - exp(y) * sum(dy) */
void odl_softmax_bwd(void *args) {
  const odl_softmax_bwd_args_t *p = (const odl_softmax_bwd_args_t *)args;
  int r = p->r, inner = p->inner, lo, hi;
  odl_split(p->outer * inner, &lo, &hi);
  for (int u = lo; u < hi; u++) {
    int o = u / inner, i = u - o * inner;
    size_t base = (size_t)o * r * inner + i;
    const odl_t *y = p->y + base, *dy = p->dy + base;
    odl_t *dx = p->dx + base;
    float s = 0.0f;
    for (int k = 0; k < r; k++) {
      size_t q = (size_t)k * inner;
      s += p->log ? (float)dy[q] : (float)dy[q] * (float)y[q];
    }
    for (int k = 0; k < r; k++) {
      size_t q = (size_t)k * inner;
      float g = p->log ? (float)dy[q] - odl_expf((float)y[q]) * s : (float)y[q] * ((float)dy[q] - s);
      dx[q] = (odl_t)(p->accumulate ? (float)dx[q] + g : g);
    }
  }
}

/* NLL, mean over the batch: loss = -mean_n logp[n, label[n]]; dlogp = -onehot(label) / N */
void odl_nll(void *args) {
  const odl_nll_args_t *p = (const odl_nll_args_t *)args;
  if (odl_core_id() != 0) return;
  int n = p->n, c = p->c;
  float inv_n = 1.0f / (float)n;
  odl_ksum_t loss = odl_ksum_zero();
  for (int s = 0; s < n; s++) {
    int lab = p->labels[s];
    odl_ksum_add(&loss, -(float)p->logp[(size_t)s * c + lab]);
    for (int k = 0; k < c; k++) p->dlogp[(size_t)s * c + k] = (odl_t)(k == lab ? -inv_n : 0.0f);
  }
  p->loss_out[0] = odl_ksum_value(loss) * inv_n;
}

/* log(1 + u) for u >= 0 without cancellation: log(w) * u / (w - 1), w = 1 + u rounded (exact when w == 1) */
static float log1p_pos(float u) {
  float w = 1.0f + u;
  if (w == 1.0f) return u;
  return odl_logf(w) * (u / (w - 1.0f));
}

/* BCE with logits, mean over len: loss = mean(max(z, 0) - z*t + log(1 + exp(-|z|))), dz = (sigmoid(z) - t) / len.
 * Every element costs an exp and a log, so the loss terms are summed in parallel too: each core writes the sum of
 * its share to partial[core id]; a following odl_sum_partials call adds them (no barrier inside a kernel). */
void odl_bce_logits(void *args) {
  const odl_bce_logits_args_t *p = (const odl_bce_logits_args_t *)args;
  int len = p->len, lo, hi;
  float inv = 1.0f / (float)len;
  odl_ksum_t acc = odl_ksum_zero();   /* compensated per element: cheap next to an exp and a log */
  odl_split(len, &lo, &hi);
  for (int i = lo; i < hi; i++) {
    float z = (float)p->z[i], t = (float)p->target[i];
    float e = odl_expf(z >= 0.0f ? -z : z); /* exp(-|z|) */
    float s = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    p->dz[i] = (odl_t)((s - t) * inv);
    odl_ksum_add(&acc, (z > 0.0f ? z : 0.0f) - z * t + log1p_pos(e));
  }
  p->partial[odl_core_id()] = odl_ksum_value(acc);
}

/* out[0] = scale * sum of partial[0 .. cores), on core 0 */
void odl_sum_partials(void *args) {
  const odl_sum_partials_args_t *p = (const odl_sum_partials_args_t *)args;
  if (odl_core_id() != 0) return;
  odl_ksum_t s = odl_ksum_zero();   /* in core order, compensated */
  for (int k = 0; k < odl_num_cores(); k++) odl_ksum_add(&s, p->partial[k]);
  p->out[0] = odl_ksum_value(s) * p->scale;
}
