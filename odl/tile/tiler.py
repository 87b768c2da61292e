"""The tile pass (lower -> **tile** -> plan): every kernel call reads and writes only L1.

Input: a lowered Program whose calls address L2 arena buffers. Output: the same step as a sequence of tile calls.
Each tile call addresses only L1 buffers; DMA transfers (odl.ir.program.Transfer, 1-D or 2-D strided) bring its inputs
from L2 and take its results back; the next tile's inputs arrive while the current tile computes (double
buffering: both tiles' L1 buffers are alive at once, the L1 allocator below sees to it). The schedule and the DMA
time model are in odl/tile/memory.py.

How a call is cut (each kernel family has a tiler; a tiler returns, per tile, the kernel's fields with every pointer
replaced by a Region of the L2 buffer it touches):
  matmul (nn/nt/tn, any lda/ldb/ldc, C transposed)  rows of C (M), columns of C (N), then K (accumulating in C);
                                                     the split with the fewest DMA bytes whose tile fits
  im2col / col2im                                    one tile per (already row-chunked) call; x / dx is fetched
                                                     only for the input rows the chunk's windows touch
  elementwise (len)                                  contiguous ranges
  bias, batch norm, pooling, depthwise conv          channel ranges (2-D transfers when the batch is > 1)
  transpose                                          row ranges
  everything else                                    one tile holding every buffer it points into; a call that
                                                     does not fit L1 that way is refused, naming the call
Scratch buffers that are produced and consumed inside one per-sample loop body (im2col columns, dY^T copies) and
are small stay in L1 for their whole life: no DMA, and no L2.

The tile shapes are chosen by DMA bytes first, then by the kernel registry's cost hint (kernels.py) for the tile's
compute, which is the same machinery the kernel variants use.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from odl.ir import kernels
from odl.ir.kernel_structs import pointer_fields
from odl.common.errors import OdlError
from odl.ir.program import Buffer, Call, CExpr, Gather, Program, Ptr, Transfer
from odl.tile.memory import DMA_ZERO_BYTES, Hierarchy, gather_wide, gathers, same_block
from odl.plan.planner import call_spans, first_fit, lowest_free
from odl.common.precision import ALIGN, DTYPE_BYTES, FP8_AMAX_SLOTS, align as _align

RESIDENT_SPAN = 64      # a scratch used by calls at most this far apart (outside loops) may live in L1 throughout
FORWARD_SPAN = 8        # a result stays in L1 for a reader at most this many tiles later (longer holds crowd L1)
CHAN_STRETCH = 1.5      # a channel-split tile may exceed the tile budget by this factor to give every core a channel


# ---- regions of L2 buffers ---------------------------------------------------------------------------------------
@dataclass
class Region:
    """rows x row_len elements of `buf` from element start (+ n * per_sample in per-sample loops), rows `stride`
    apart. mode: 'r' read, 'w' written whole (no fetch), 'rw' read and written."""
    buf: Buffer
    start: int
    rows: int
    row_len: int
    stride: int
    mode: str
    per_sample: int = 0
    ld: str | None = None      # kernel field that takes the row stride the region has where the kernel sees it

    @property
    def nelem(self) -> int:
        return self.rows * self.row_len


def _esize(buf: Buffer, eb: int) -> int:
    return eb if buf.dtype == "odl" else DTYPE_BYTES[buf.dtype]


def _r(p: Ptr, off: int, rows: int, row_len: int, stride: int, mode: str, ld: str | None = None) -> Region:
    if rows == 1:
        stride = row_len
    return Region(p.buf, p.elem + off, rows, row_len, stride, mode, p.per_sample, ld)


def _acc_mode(v) -> str:
    """Output mode of a field the kernel adds into when `accumulate` says so."""
    return "w" if (isinstance(v, int) and not isinstance(v, CExpr) and v == 0) else "rw"


# ---- tilers: (call, budget bytes, elem bytes) -> list of (fields, macs share) ------------------------------------
def _split(total: int, parts: int, quantum: int = 1) -> list[tuple[int, int]]:
    step = max(quantum, -(-total // parts))
    step = -(-step // quantum) * quantum
    return [(a, min(total, a + step)) for a in range(0, total, step)]


def _mm_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    f = dict(call.fields)
    form = call.kernel[-2:]
    M, N, K = f["m"], f["n"], f["k"]
    acc = f.get("accumulate", 0)
    ct = f.get("ct", 0)
    lda = f.get("lda", 0) or (M if form == "tn" else K)
    ldb = f.get("ldb", 0) or (K if form == "nt" else N)
    ldc = f.get("ldc", 0) or (M if ct else N)
    a, b, c = f["a"], f["b"], f["c"]
    bias = f.get("bias")
    lanes = 2 if eb == 2 else 1

    def regions(m0, m1, n0, n1, k0, k1, first_k):
        tm, tn, tk = m1 - m0, n1 - n0, k1 - k0
        if form == "tn":     # A stored [K, M]
            ra = _r(a, k0 * lda + m0, tk, tm, lda, "r", "lda")
        else:                # A [M, K]
            ra = _r(a, m0 * lda + k0, tm, tk, lda, "r", "lda")
        if form == "nt":     # B stored [N, K]
            rb = _r(b, n0 * ldb + k0, tn, tk, ldb, "r", "ldb")
        else:                # B [K, N]
            rb = _r(b, k0 * ldb + n0, tk, tn, ldb, "r", "ldb")
        cacc = acc if first_k else 1
        mode = _acc_mode(cacc)
        if ct:               # C stored transposed [N, M]
            rc = _r(c, n0 * ldc + m0, tn, tm, ldc, mode, "ldc")
        else:
            rc = _r(c, m0 * ldc + n0, tm, tn, ldc, mode, "ldc")
        g = dict(f, a=ra, b=rb, c=rc, m=tm, n=tn, k=tk, accumulate=cacc)
        g.pop("bias", None)
        if bias is not None and first_k:        # the bias goes in once, with the first range of K
            g["bias"] = _r(bias, n0, 1, tn, tn, "r") if form == "nt" else _r(bias, m0, 1, tm, tm, "r")
        return g

    sa, sb, sc = (_esize(p.buf, eb) * (id(p.buf) not in resident) for p in (a, b, c))
    c_rw = _acc_mode(acc) == "rw"
    key = (call.kernel, M, N, K, sa, sb, sc, c_rw, budget, cores, lanes)
    if key not in _MM_SHAPES:
        _MM_SHAPES[key] = _mm_search(call, f, M, N, K, sa, sb, sc, c_rw, budget, cores, lanes)
    if _MM_SHAPES[key] is None:
        return None
    sm, sn, sk = _MM_SHAPES[key]
    tiles = []
    for m0, m1 in _split(M, sm):
        for n0, n1 in _split(N, sn, lanes if sn > 1 else 1):
            for ki, (k0, k1) in enumerate(_split(K, sk)):
                tiles.append(regions(m0, m1, n0, n1, k0, k1, ki == 0))
    return tiles


_MM_SHAPES: dict = {}
# cycles a matmul tile costs beyond its kernel's estimate: fork/join and sync (78 cycles on 8 harts), the call, its
# DMA commands. Measured: ResNet8 FP16 layer1 weight gradients cut in 3 row tiles ran 325 cycles slower per call
# than whole, where the estimates alone said 184 faster
TILE_CALL_COST = 250


def _mm_search(call, f, M, N, K, sa, sb, sc, c_rw, budget, cores, lanes):
    """(splits of M, N, K) with the least estimated DMA + compute whose tile fits the budget (None: none fits)."""
    best = None
    kern = kernels.get(call.kernel)
    for sk in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32):
        for sm in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32):
            for sn in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64):
                if sm > M or sn > N or sk > K:
                    continue
                tm, tn, tk = -(-M // sm), -(-N // sn), -(-K // sk)
                if lanes == 2 and sn > 1 and tn % 2:
                    tn += 1
                tile_b = _align(tm * tk * sa) + _align(tk * tn * sb) + _align(tm * tn * sc)
                if tile_b > budget:
                    continue
                ntiles = sm * sn * sk
                # bytes moved: A once per column split, B once per row split, C out (and in when accumulating)
                dma = M * K * sa * sn + K * N * sb * sm + M * N * sc * (sk + (sk - 1) + (1 if c_rw else 0))
                comp = ntiles * (kern.cost(dict(f, m=tm, n=tn, k=tk), cores, lanes) + TILE_CALL_COST)
                key = (dma / 8 + comp, ntiles)
                if best is None or key < best[0]:
                    best = (key, (sm, sn, sk))
                break       # a larger sn only adds tiles once this one fits
        if best is not None:
            break
    return None if best is None else best[1]


def _len_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    f = call.fields
    L = f["len"]
    whole = _whole_fields(call)
    per = sum(_esize(v.buf, eb) for k, v in f.items() if isinstance(v, Ptr) and id(v.buf) not in resident
              and k not in whole)
    chunk = max(16, budget // max(1, per) // 16 * 16)
    out = []
    ptr = pointer_fields(kernels.get(call.kernel.replace("_range", "")).args_type)
    pure_out = _PURE_OUT.get(call.kernel, ())
    for a0, a1 in _split(L, -(-L // chunk)):
        g = dict(f, len=a1 - a0)
        if call.kernel in ("odl_dropout_fwd", "odl_fq_fwd"):
            g["base"] = f.get("base", 0) + a0
        for k, v in f.items():
            if isinstance(v, Ptr):
                if k in whole:
                    mode, n = whole[k]
                    g[k] = _r(v, 0, 1, n, n, mode)
                    continue
                mode = "r" if ptr.get(k) else ("w" if k in pure_out and _acc_mode(f.get("accumulate", 0)) == "w"
                                               else "rw")
                g[k] = _r(v, a0, 1, a1 - a0, a1 - a0, mode)
        out.append(g)
    return out


def _whole_fields(call: Call) -> dict:
    """The fields every range tile of an elementwise call gets whole: _WHOLE's, or odl_fq_fwd's scale and zero point
    (per-channel vectors of a weight's fake quantization, as long as they are; one element per tensor)."""
    if call.kernel != "odl_fq_fwd":
        return _WHOLE
    f = call.fields
    return {k: ("r", f[k].buf.nelem - f[k].elem) for k in ("scale", "zp")}


# kernels whose output field(s) are written whole (when accumulate is 0) without being read
_PURE_OUT = {"odl_relu_fwd": ("y",), "odl_relu6_fwd": ("y",), "odl_relu_bwd": ("dx",), "odl_relu6_bwd": ("dx",),
             "odl_add": ("y",), "odl_copy": ("dst",), "odl_fill": ("x",), "odl_act_fwd": ("y",),
             "odl_act_bwd": ("dx",), "odl_dropout_fwd": ("y", "mask"), "odl_dropout_bwd": ("dx",),
             "odl_mse_range": ("dpred",), "odl_affine_fwd": ("y",), "odl_affine_bwd": ("dx",),
             "odl_clamp_fwd": ("y",), "odl_clamp_bwd": ("dx",), "odl_fp8_pack": ("q",), "odl_fp8_unpack": ("x",),
             "odl_fq_fwd": ("y", "mask"), "odl_fq_bwd": ("dx",)}
_ELEMENTWISE = set(_PURE_OUT) | {"odl_sgd", "odl_sgd_momentum", "odl_adam", "odl_scale", "odl_grad_check",
                                 "odl_sgd_mixed", "odl_adam_mixed"}
# small fields of elementwise kernels that every range tile gets whole, with their mode and elements: an overflow
# flag, an FP8 tensor's scale (read) and the per-core amax slots its packs fold their ranges into (read and written)
_WHOLE = {"flag": ("rw", 1), "scale": ("r", 1), "amax": ("rw", FP8_AMAX_SLOTS)}


# channel-split kernels: field -> elements per channel (None: the per-channel plane of the call's geometry), and
# which fields are batched [n, c, plane] tensors (the others are per-channel vectors [c, plane])
def _chan_layout(k: str, f: dict) -> tuple[dict, set]:
    if k.startswith("odl_dwconv"):     # one sample: x [C, H, W], y [C, HO, WO], w [C, KH, KW]
        hw, ohw, kk = f["h"] * f["w_"], f["ho"] * f["wo"], f["kh"] * f["kw"]
        return {"x": hw, "dx": hw, "y": ohw, "dy": ohw, "w": kk, "dw": kk, "bias": 1}, set()
    if k in ("odl_bias_add", "odl_bias_grad"):
        return {"y": f["hw"], "dy": f["hw"], "bias": 1, "db": 1}, {"y", "dy"}
    if k in ("odl_bn_fwd", "odl_bn_bwd"):
        lay = {p: f["hw"] for p in ("x", "y", "dy", "dx")}
        lay.update({p: 1 for p in ("gamma", "beta", "mean", "rstd", "running_mean", "running_var", "dgamma", "dbeta")})
        return lay, {"x", "y", "dy", "dx"}
    if k.startswith("odl_rowmul"):     # rows [c, hw] and the per-row gate g / its gradient dg
        return {"x": f["hw"], "y": f["hw"], "dy": f["hw"], "dx": f["hw"], "g": 1, "dg": 1}, set()
    hw, ohw = f["h"] * f["w"], f["ho"] * f["wo"]        # pooling
    return {"x": hw, "dx": hw, "y": ohw, "dy": ohw, "argmax": ohw}, {"x", "dx", "y", "dy", "argmax"}


# fields a channel-split kernel writes whole (no fetch); 'acc': written whole unless accumulate says add
_CHAN_OUT = {"odl_bias_grad": {"db": "acc"}, "odl_bn_fwd": {"y": "w"}, "odl_bn_bwd": {"dx": "acc", "dgamma": "w",
             "dbeta": "w"}, "odl_maxpool_fwd": {"y": "w", "argmax": "w"}, "odl_maxpool_bwd": {"dx": "acc"},
             "odl_avgpool_fwd": {"y": "w"}, "odl_avgpool_bwd": {"dx": "acc"}, "odl_dwconv_fwd": {"y": "w"},
             "odl_dwconv_wgrad": {"dw": "acc"}, "odl_dwconv_igrad": {"dx": "acc"}, "odl_rowmul_fwd": {"y": "w"},
             "odl_rowmul_dx": {"dx": "acc"}, "odl_rowmul_dg": {"dg": "acc"}}


def _chan_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    """Tensors [n, c, plane] split over channel ranges (2-D transfers when n > 1); per-channel vectors alike."""
    f = call.fields
    k = call.kernel
    lay, batched = _chan_layout(k, f)
    n = f.get("n", 1) if batched else 1
    c = f["c"]
    ptr = pointer_fields(kernels.get(k).args_type)
    outs = _CHAN_OUT.get(k, {})
    acc = f.get("accumulate", 0)
    ptrs = {p: v for p, v in f.items() if isinstance(v, Ptr)}
    for p in ptrs:
        if p not in lay:
            raise OdlError(f"tile: {k} field {p!r} has no channel layout (internal)")
    per_c = sum(lay[p] * (n if p in batched else 1) * _esize(v.buf, eb) for p, v in ptrs.items()
                if id(v.buf) not in resident)
    cmax = max(1, (budget - ALIGN * len(ptrs)) // max(1, per_c))
    want = min(c, cores)
    if cmax < want and want * per_c + ALIGN * len(ptrs) <= budget * CHAN_STRETCH:
        # these kernels give each core whole channels: a tile of fewer channels than cores leaves cores idle, so
        # it may take more L1 than the budget (the placement of all tiles still has to fit, or tile() retries)
        cmax = want
    elif cmax > cores:
        cmax -= cmax % cores
    out = []
    for c0, c1 in _split(c, -(-c // cmax)):
        g = dict(f, c=c1 - c0)
        for p, v in ptrs.items():
            s = lay[p]
            if ptr.get(p):
                mode = "r"
            elif outs.get(p) == "w":
                mode = "w"
            elif outs.get(p) == "acc":
                mode = _acc_mode(acc)
            else:
                mode = "rw"
            if p in batched and n > 1:
                g[p] = _r(v, c0 * s, n, (c1 - c0) * s, c * s, mode)
            else:
                g[p] = _r(v, c0 * s, 1, (c1 - c0) * s, (c1 - c0) * s, mode)
        out.append(g)
    return out


def _transpose_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    f = call.fields
    rows, cols = f["rows"], f["cols"]
    ldi, ldo = f.get("ldi", 0) or cols, f.get("ldo", 0) or rows
    per_row = 2 * cols * eb
    parts = -(-rows // max(1, (budget - 2 * ALIGN) // per_row))
    out = []
    for r0, r1 in _split(rows, parts):
        g = dict(f, rows=r1 - r0,
                 src=_r(f["src"], r0 * ldi, r1 - r0, cols, ldi, "r", "ldi"),
                 dst=_r(f["dst"], r0, cols, r1 - r0, ldo, "w", "ldo"))
        out.append(g)
    return out


def _wflip_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    """Ranges of output channels (filter rows of W); the flipped copy's columns (t = 0) or rows (t = 1) alike."""
    f = call.fields
    co, ci, kk, t = f["cout"], f["cin"], f["kk"], f["t"]
    ld = f.get("ld", 0) or co * kk
    per = 2 * ci * kk * eb
    out = []
    for c0, c1 in _split(co, -(-co // max(1, (budget - 2 * ALIGN) // per))):
        n = (c1 - c0) * ci * kk
        dst = (_r(f["dst"], c0 * kk * ci, 1, n, n, "w") if t else
               _r(f["dst"], c0 * kk, ci, (c1 - c0) * kk, ld, "w", "ld"))
        out.append(dict(f, cout=c1 - c0, src=_r(f["src"], c0 * ci * kk, 1, n, n, "r"), dst=dst))
    return out


def _conv_rows(f) -> tuple[int, int]:
    """Input rows [r0, r1) the windows of an im2col/col2im chunk touch (clipped to the image)."""
    dh = f.get("dh", 1)
    lo = -f["pt"]
    hi = (f["ho"] - 1) * f["sh"] - f["pt"] + (f["kh"] - 1) * dh + 1
    r0, r1 = max(0, lo), min(f["h"], hi)
    if r1 <= r0:
        r0, r1 = 0, 1
    return r0, r1


def _im2col_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    f = call.fields
    c, h, w = f["c"], f["h"], f["w"]
    if call.kernel == "odl_im2col" and id(f["col"].buf) in resident and gathers(f):
        # the DMA gathers the in-image elements straight from x in L2 into the L1 columns (odl.ir.program.Gather); the
        # kernel only writes the zero padding
        n = c * f["kh"] * f["kw"] * f["ho"] * f["wo"]
        geom = {k: f[k] for k in ("c", "h", "w", "kh", "kw", "sh", "sw", "pt", "pl", "ho", "wo")}
        return [dict(f, x=0, pad_only=1, col=_r(f["col"], 0, 1, n, n, "w"), _gather=(f["x"], geom))]
    r0, r1 = _conv_rows(f)
    if call.kernel.startswith("odl_im2col"):       # im2col: reads x rows, writes col
        xk, xmode = "x", "r"
        colmode = "w"
    else:                # col2im: reads col (the FP16 fast path zeroes its padding entries), adds into dx
        xk = "dx"
        acc = f.get("accumulate", 0)
        if _acc_mode(acc) == "w":
            r0, r1 = 0, h         # accumulate = 0 initialises every row of dx
            xmode = "w"
        else:
            xmode = "rw"
            if (h - (r1 - r0)) * 8 <= h:
                # all but a few rows (a strided 1x1 conv's last input row): the whole of dx, the rest passing
                # through unchanged, so that a reader of all of dx takes it from L1 (a ReLU backward after a
                # shortcut's input gradient)
                r0, r1 = 0, h
        colmode = "rw"
    kk = f["kh"] * f["kw"]
    g = dict(f, h=r1 - r0, pt=f["pt"] + r0)
    g[xk] = _r(f[xk], r0 * w, c, (r1 - r0) * w, h * w, xmode)
    g["col"] = _r(f["col"], 0, 1, c * kk * f["ho"] * f["wo"], c * kk * f["ho"] * f["wo"], colmode)
    return [g]


def _whole_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    f = call.fields
    ptr = pointer_fields(kernels.get(call.kernel).args_type)
    g = dict(f)
    for k, v in f.items():
        if isinstance(v, Ptr):
            ext = v.buf.nelem - v.elem - (max(call.loop, 1) - 1) * v.per_sample
            g[k] = _r(v, 0, 1, ext, ext, "r" if ptr.get(k) else "rw")
    return [g]


def _mse_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    """MSE over ranges: each tile adds its share of the mean into the loss (total = the whole length)."""
    f = call.fields
    tiles = _len_tiles(dataclasses.replace(call, kernel="odl_mse_range"), budget, eb, resident, cores)
    for i, g in enumerate(tiles):
        g["total"] = f["len"]
        g["accumulate"] = int(i > 0)
        g["loss_out"] = _r(f["loss_out"], 0, 1, 1, 1, "rw" if i else "w")
    return tiles


def _block_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    """odl_block_copy (cat, slice, split, transpose): ranges of its outer blocks (2-D transfers of `len`-element
    rows), or, when one block is larger than the budget, pieces of each block."""
    f = call.fields
    outer, ln, ss, ds = f["outer"], f["len"], f["src_stride"], f["dst_stride"]
    dmode = _acc_mode(f.get("accumulate", 0))
    room = budget - 2 * ALIGN
    out = []
    if 2 * ln * eb <= room:
        rows = max(1, room // (2 * ln * eb))
        for o0, o1 in _split(outer, -(-outer // rows)):
            out.append(dict(f, outer=o1 - o0, src=_r(f["src"], o0 * ss, o1 - o0, ln, ss, "r", "src_stride"),
                            dst=_r(f["dst"], o0 * ds, o1 - o0, ln, ds, dmode, "dst_stride")))
        return out
    chunk = max(16, room // (2 * eb) // 16 * 16)
    for o in range(outer):
        for a0, a1 in _split(ln, -(-ln // chunk)):
            out.append(dict(f, outer=1, len=a1 - a0, src=_r(f["src"], o * ss + a0, 1, a1 - a0, a1 - a0, "r"),
                            dst=_r(f["dst"], o * ds + a0, 1, a1 - a0, a1 - a0, dmode)))
    return out


def _minmax_tiles(call: Call, budget: int, eb: int, resident: set, cores: int):
    """odl_fq_minmax per tensor (c = 1): ranges of the tensor, each tile's partial min / max combined with the
    previous tiles' (accumulate); per channel (a weight): ranges of channels (x's rows and their partials)."""
    f = call.fields
    part, inner, c = f["part"], f["inner"], f["c"]
    pc = 2 * kernels.FQ_PART                # partials of one channel (ODL_FQ_PART cores x min, max)
    es = _esize(f["x"].buf, eb)
    if c != 1:
        per = max(1, (budget - 2 * ALIGN) // (inner * es + pc * 4))
        return [dict(f, c=c1 - c0, x=_r(f["x"], c0 * inner, 1, (c1 - c0) * inner, (c1 - c0) * inner, "r"),
                     part=_r(part, c0 * pc, 1, (c1 - c0) * pc, (c1 - c0) * pc, _acc_mode(f["accumulate"])))
                for c0, c1 in _split(c, -(-c // per))]
    room = max(16 * es, budget - pc * 4 - 2 * ALIGN)
    chunk = max(16, room // es // 16 * 16)
    return [dict(f, inner=a1 - a0, accumulate=int(i > 0), x=_r(f["x"], a0, 1, a1 - a0, a1 - a0, "r"),
                 part=_r(part, 0, 1, pc, pc, "rw" if i else "w"))
            for i, (a0, a1) in enumerate(_split(inner, -(-inner // chunk)))]


# kernel -> its tiler, by family; a kernel not named here gets one tile holding every buffer (_whole_tiles)
_TILER_FAMILIES = (
    (("odl_mse",), _mse_tiles),
    (("odl_mm_nn", "odl_mm_nt", "odl_mm_tn"), _mm_tiles),
    (tuple(sorted(_ELEMENTWISE)), _len_tiles),
    (("odl_im2col", "odl_col2im", "odl_im2col_dilated", "odl_col2im_dilated"), _im2col_tiles),
    (("odl_bias_add", "odl_bias_grad", "odl_bn_fwd", "odl_bn_bwd", "odl_maxpool_fwd", "odl_maxpool_bwd",
      "odl_avgpool_fwd", "odl_avgpool_bwd", "odl_dwconv_fwd", "odl_dwconv_wgrad", "odl_dwconv_igrad",
      "odl_rowmul_fwd", "odl_rowmul_dx", "odl_rowmul_dg"), _chan_tiles),
    (("odl_transpose",), _transpose_tiles),
    (("odl_block_copy",), _block_tiles),
    (("odl_conv_wflip",), _wflip_tiles),
    (("odl_fq_minmax",), _minmax_tiles),
)
TILERS = {k: tiler for names, tiler in _TILER_FAMILIES for k in names}
assert len(TILERS) == sum(len(names) for names, _ in _TILER_FAMILIES), "a kernel in two tiler families"


def _tiler(kernel: str):
    """The tiler of a kernel (TILERS; _whole_tiles for the others)."""
    return TILERS.get(kernel, _whole_tiles)


# ---- the pass ------------------------------------------------------------------------------------------------------
def _check_pointers(call: Call, idx: int):
    ptr = pointer_fields(kernels.get(call.kernel).args_type)
    for k in ptr:
        v = call.fields.get(k)
        if v is not None and not isinstance(v, Ptr) and not (isinstance(v, int) and v == 0):
            raise OdlError(f"--memory hierarchy: call {idx} ({call.kernel}, layer {call.layer}) passes field {k!r} as "
                           f"{v!r}, not an arena buffer, so it cannot be tiled into L1; use --memory flat")


def _resident_buffers(prog: Program, limit: int, eb: int) -> set:
    """Scratch buffers used only inside one per-sample loop body (or one call), small enough to live in L1."""
    where: dict[int, set] = {}
    strided = set()
    for i, c in enumerate(prog.calls):
        for v in c.fields.values():
            if isinstance(v, Ptr):
                where.setdefault(id(v.buf), set()).add((c.group, i) if c.loop else ("call", i))
                if v.per_sample:
                    strided.add(id(v.buf))
    out = set()
    for b in prog.buffers:
        uses = where.get(id(b))
        if not uses or b.role != "scratch" or b.persistent or b in prog.preload or id(b) in strided:
            continue
        groups = {u[0] for u in uses}
        idx = [u[1] for u in uses]
        # one per-sample loop body, or a short run of calls outside loops: its L1 copy lives that long
        one_block = (len(groups) == 1 and "call" not in groups) or (groups == {"call"} and
                                                                   max(idx) - min(idx) <= RESIDENT_SPAN)
        if one_block and b.nbytes(eb) <= limit:
            out.add(id(b))
    return out


def _merge(fields: dict, idx: int, call: Call) -> dict[int, tuple]:
    """Regions of one tile grouped by buffer: buffer id -> (buf, start, rows, row_len, stride, per_sample, mode)."""
    by: dict[int, list[Region]] = {}
    for v in fields.values():
        if isinstance(v, Region):
            by.setdefault(id(v.buf), []).append(v)
    out = {}
    for bid, rs in by.items():
        # rows that follow one another are one row: the same bytes get the same key whichever kernel names them
        rs = [dataclasses.replace(r, rows=1, row_len=r.nelem, stride=r.nelem) if r.rows > 1 and r.stride == r.row_len
              else r for r in rs]
        r0 = rs[0]
        modes = {r.mode for r in rs}
        mode = "rw" if (len(modes) > 1 or "rw" in modes) else r0.mode
        if all((r.start, r.rows, r.row_len, r.stride) == (r0.start, r0.rows, r0.row_len, r0.stride) for r in rs):
            out[bid] = (r0.buf, r0.start, r0.rows, r0.row_len, r0.stride, r0.per_sample, mode)
        elif all(r.rows == 1 for r in rs):
            lo = min(r.start for r in rs)
            hi = max(r.start + r.row_len for r in rs)
            out[bid] = (r0.buf, lo, 1, hi - lo, hi - lo, r0.per_sample, mode)
        else:
            raise OdlError(f"--memory hierarchy: call {idx} ({call.kernel}, layer {call.layer}) addresses buffer "
                           f"{r0.buf.name!r} through differently shaped 2-D regions; it cannot be staged in L1")
    return out


def _treg(t: Transfer) -> tuple:
    """A transfer's L2 side as a region tuple for _overlap."""
    return (t.l2, t.l2_elem, t.rows, t.row_elems, t.l2_stride, t.per_sample)


def _cut(x: Transfer, o: Transfer):
    """A 1-D fetch x of which the write-back o covers some whole rows (the output tile of a matmul inside the
    channel range a batch norm reads): (the part o writes, [the rest]) as transfers into the same L1 places, or
    None. The rest may go out before o does."""
    if not (isinstance(x, Transfer) and isinstance(o, Transfer) and x.rows == 1 and x.l2 is o.l2
            and x.per_sample == o.per_sample and (o.rows == 1 or o.l2_stride > o.row_elems)):
        return None
    xs, xe, r = x.l2_elem, x.l2_elem + x.row_elems, o.row_elems
    S = o.l2_stride if o.rows > 1 else r
    rows = [o.l2_elem + i * S for i in range(o.rows) if o.l2_elem + i * S < xe and o.l2_elem + i * S + r > xs]
    if not rows or rows[0] < xs or rows[-1] + r > xe:
        return None
    k, first, end = len(rows), rows[0], rows[-1] + r

    def piece(start, nrows, n, stride):
        return Transfer("in", x.l2, start, x.per_sample, x.l1, x.l1_elem + start - xs, nrows, n, stride,
                        stride if nrows > 1 else 0)
    rest = [piece(xs, 1, first - xs, first - xs)] if first > xs else []
    if k > 1 and S > r:
        rest.append(piece(first + r, k - 1, S - r, S))
    if end < xe:
        rest.append(piece(end, 1, xe - end, xe - end))
    return (piece(first, k, r, S), rest) if rest else None     # all of x: nothing to cut


def _overlap(a: tuple, b: tuple) -> bool:
    """May two L2 regions (buf, start, rows, row_len, stride, per_sample, ...) share bytes? Equal per-sample
    strides cancel (same loop iteration); different ones are taken to overlap."""
    if a[0] is not b[0]:
        return False
    if a[5] != b[5]:
        return True
    alo, ahi = a[1], a[1] + (a[2] - 1) * a[4] + a[3]
    blo, bhi = b[1], b[1] + (b[2] - 1) * b[4] + b[3]
    if not (alo < bhi and blo < ahi):
        return False
    S = a[4] if a[2] > 1 else b[4]          # a single row fits any stride it is no longer than
    if all((r[2] == 1 or r[4] == S) and r[3] <= S for r in (a, b)):
        # two sets of rows with one stride S (e.g. the column blocks of a matrix): b's row rb starts rem past a's
        # row q + rb; it meets that row if rem < a's row length, or the next one if it runs past S
        if alo > blo:
            a, b = b, a
        ra, la, rb, lb = a[2], a[3], b[2], b[3]
        q, rem = divmod(b[1] - a[1], S)

        def rows_meet(shift):       # some rb in [0, rb) with q + rb + shift in [0, ra)
            lo, hi = max(0, -(q + shift)), min(rb, ra - q - shift)
            return lo < hi
        return (rem < la and rows_meet(0)) or (rem + lb > S and rows_meet(1))
    return True


def tile(prog: Program, hier: Hierarchy, cores: int) -> Program:
    """Rewrite prog.calls as L1 tiles with DMA transfers (in place); L1 buffers get their offsets here."""
    eb = prog.elem_bytes
    l1 = hier.l1_data_bytes
    for i, c in enumerate(prog.calls):
        _check_pointers(c, i)
    resident = _resident_buffers(prog, l1 // 4, eb)
    flat = prog.calls
    res_alive = _resident_alive(prog, resident, eb)
    errors = []
    # staged bytes per tile: tile t's inputs arrive during t-1 and its results leave during t+1, so up to three
    # tiles' buffers are alive at once. Each call's budget starts at a half of the L1 its resident neighbours leave;
    # where the placement does not fit, the calls around that spot get smaller budgets, and it is tried again
    level = [0] * len(flat)
    while True:
        try:
            calls, l1bufs, peak, dropped = _tile_all(prog, flat, hier, cores, resident,
                                            [max(0, int((l1 - r) * SHARES[v])) for r, v in zip(res_alive, level)])
            break
        except _NoFit as e:
            errors.append(str(e))
            near = [c for c in e.calls if level[c] < len(SHARES) - 1]
            if not near:
                raise OdlError(errors[0] + (f"; with smaller tiles: {errors[-1].removeprefix('--memory hierarchy: ')}"
                                            if errors[-1] != errors[0] else "")) from None
            for c in near:
                level[c] += 1
    prog.calls = calls
    if prog.profile is not None:
        from odl.ir.program import MAX_CORES
        prog.profile.nelem = len(calls) * MAX_CORES
    prog.buffers = [b for b in prog.buffers if id(b) not in resident] + l1bufs
    prog.memory = hier
    prog.l1_peak_bytes = peak
    prog.dropped_writebacks = dropped
    return prog


SHARES = (0.5, 0.45, 0.4, 1 / 3, 0.28, 0.25, 0.2, 0.15)    # of the free L1, per tile, tried in turn


class _NoFit(Exception):
    def __init__(self, msg: str, calls):
        super().__init__(msg)
        self.calls = sorted(set(calls))     # the flat calls whose smaller tiles may make it fit


def _resident_alive(prog: Program, resident: set, eb: int) -> list[int]:
    """Per call: bytes of the L1-resident buffers alive while it runs (from the call before a buffer's first use,
    when a DMA gather may fill it, to its last use; a whole per-sample loop body for buffers used in one)."""
    span: dict[int, list] = {}
    for (lo, hi), c in zip(call_spans(prog.calls), prog.calls):
        for v in c.fields.values():
            if isinstance(v, Ptr) and id(v.buf) in resident:
                sp = span.setdefault(id(v.buf), [max(0, lo - 1), hi, _align(v.buf.nbytes(eb))])
                sp[1] = hi
    alive = [0] * len(prog.calls)
    for lo, hi, nb in span.values():
        for i in range(lo, hi + 1):
            alive[i] += nb
    return alive


def _tile_all(prog: Program, flat: list[Call], hier: Hierarchy, cores: int, resident: set, budgets: list[int]):
    """The flat calls cut into tile calls with DMA, each flat call's tiles within its budget: (tile calls, L1
    buffers, L1 peak bytes, dropped write-backs); raises _NoFit where they do not fit the L1."""
    eb = prog.elem_bytes
    l1cap = hier.l1_data_bytes
    work = _cut_calls(flat, budgets, eb, resident, cores, l1cap)
    tiles = _TileCalls(flat, budgets, eb, l1cap, resident)
    for ci, ti in _interleave(flat, work):
        tiles.add(ci, *work[ci][ti])
    if tiles.carry:
        raise OdlError("tile: an im2col gather is the last call of the step (internal)")
    calls = tiles.calls
    spans = _forward(calls, tiles.tiles_regions, tiles.tiles_l1, tiles.spans, tiles.span_of, resident)
    dropped = _drop_dead_writebacks(calls, eb)
    kept = {id(sp[0]) for sp in spans}
    l1bufs = [b for b in tiles.l1bufs if b.role == "l1_resident" or id(b) in kept]
    spans += list(tiles.res_span.values())
    _prefetch(calls)
    l1 = _place_l1(calls, spans, eb, l1cap)
    _early_inputs(calls, l1)
    peak = l1.peak()
    for t, c in enumerate(calls):       # L1 bytes in use (highest end) while tile t computes
        c.l1_bytes = max((o + s for o, s in l1.alive.get(t, ())), default=0)
    _writeback_waits(calls, eb)
    return calls, l1bufs, peak, dropped


def _cut_calls(flat: list[Call], budgets: list[int], eb: int, resident: set, cores: int, l1cap: int) -> list:
    """Per flat call: its tiles as (fields, MACs); raises _NoFit for a call its tiler cannot cut."""
    work = []                           # per flat call: its tiles as (fields, MACs)
    for ci, call in enumerate(flat):
        tiler = _tiler(call.kernel)
        tiles = tiler(call, budgets[ci], eb, resident, cores)
        if tiles is None or not tiles:
            raise _NoFit(f"--memory hierarchy: call {ci} ({call.kernel}, layer {call.layer}, {call.step}) cannot be "
                         f"cut into tiles that fit the {l1cap}-byte L1 (fields "
                         f"{ {k: v for k, v in call.fields.items() if isinstance(v, int)} })", [ci])
        # MACs are shared out by tile volume (matmuls) or evenly
        vol = ([t["m"] * t["n"] * t["k"] for t in tiles] if tiler is _mm_tiles else [1] * len(tiles))
        shares = [call.macs * v // sum(vol) for v in vol[:-1]]
        work.append(list(zip(tiles, shares + [call.macs - sum(shares)])))
    return work


class _TileCalls:
    """The tile calls in the order they run, built one tile at a time, with their L1 buffers and the lives of
    those buffers in tiles."""

    def __init__(self, flat: list[Call], budgets: list[int], eb: int, l1cap: int, resident: set):
        self.flat, self.budgets, self.eb, self.l1cap, self.resident = flat, budgets, eb, l1cap, resident
        self.res_l1: dict[int, Buffer] = {}     # resident L2-scratch id -> its L1 buffer
        self.calls: list[Call] = []
        self.l1bufs: list[Buffer] = []
        self.spans: list[list] = []             # [buffer, first tile, last tile]
        self.tiles_regions: list[dict] = []
        self.tiles_l1: list[dict] = []          # per tile: buffer id -> its L1 buffer
        self.span_of: dict[int, list] = {}      # id(L1 buffer) -> its span entry
        self.res_span: dict[int, list] = {}
        self.pad_sig: dict[int, tuple] = {}     # resident columns -> the padding layout its zeros are in now
        self.carry = []                         # gathers whose padding is already in place: they ride on the next tile

    def res_buf(self, buf: Buffer, idx: int) -> Buffer:
        """The L1 buffer of resident L2 scratch `buf`, alive through tile idx."""
        bid = id(buf)
        if bid not in self.res_l1:
            lb = Buffer(f"{buf.name}", buf.nelem, dtype=buf.dtype, role="l1_resident", space="l1")
            self.res_l1[bid] = lb
            self.l1bufs.append(lb)
            self.res_span[bid] = [lb, idx, idx]
        self.res_span[bid][2] = max(self.res_span[bid][2], idx)
        return self.res_l1[bid]

    def add(self, ci: int, g: dict, macs: int):
        """Append the tile call of flat call ci whose fields (Regions of L2 buffers) are g, or, for a gather that
        needs no kernel, carry the gather to the next tile."""
        call = self.flat[ci]
        idx = len(self.calls)
        gather = g.pop("_gather", None)
        gt = None
        if gather is not None:
            gt = self._gather(gather, g["col"])
            if gt is None:
                return
        regs = _merge(g, ci, call)
        self._check_fits(ci, call, regs)
        l1of, dma_in, dma_out = self._l1_buffers(regs, idx)
        fields = self._fields(g, call, regs, l1of)
        # gathers into resident columns (this tile's, and those carried from skipped padding tiles) may run
        # during the tile before (prefetch): the columns' L1 life starts there
        gathers = self.carry + ([(gt, g["col"].buf)] if gt is not None else [])
        self.carry = []
        for gt, cbuf in gathers:
            dma_in.append(dataclasses.replace(gt, l1=self.res_buf(cbuf, idx)))
            sp = self.res_span[id(cbuf)]
            sp[1] = max(0, min(sp[1], idx - 1))
        self.calls.append(dataclasses.replace(call, fields=fields, macs=macs, dma_in=dma_in, dma_out=dma_out,
                                              prefetch=False, origin=ci))
        self.tiles_regions.append(regs)
        self.tiles_l1.append({bid: lb for bid, (lb, _) in l1of.items()})

    def _gather(self, gather: tuple, col: Region) -> Gather | None:
        """The DMA gather of an im2col tile into the columns `col`; None when it rides on the next tile instead."""
        eb = self.eb
        x, geom = gather
        gt = Gather(x.buf, x.elem, x.per_sample, None, col.start, geom, zero=False)
        sig = (tuple(pc[1:] for pc in gt.pieces()), col.nelem)
        in_place = self.pad_sig.get(id(col.buf)) == sig
        self.pad_sig[id(col.buf)] = sig
        if in_place or geom["wo"] * eb <= DMA_ZERO_BYTES:
            # no kernel: the zeros of the last gather into these columns are where this one needs them, or the
            # DMA writes them (from a zero row) after the data; the gather rides on the next tile
            self.carry.append((dataclasses.replace(gt, zero=not in_place, wide=gather_wide(geom, eb)), col.buf))
            return None
        return gt

    def _check_fits(self, ci: int, call: Call, regs: dict):
        """Raise _NoFit when one tile of call ci needs more L1 than its budget."""
        staged = {bid: r for bid, r in regs.items() if bid not in self.resident}
        need = sum(_align(r[2] * r[3] * _esize(r[0], self.eb)) for r in staged.values())
        if need > self.budgets[ci] * (CHAN_STRETCH if _tiler(call.kernel) is _chan_tiles else 1):
            raise _NoFit(f"--memory hierarchy: call {ci} ({call.kernel}, layer {call.layer}, {call.step}) needs "
                         f"{need} B of L1 for one tile (every buffer it points into: "
                         f"{', '.join(r[0].name for r in staged.values())}); the L1 holds {self.l1cap} B for tiles, "
                         f"double-buffered. odl has no tiler that cuts this kernel smaller; use --memory flat",
                         [ci])

    def _l1_buffers(self, regs: dict, idx: int) -> tuple[dict, list, list]:
        """The L1 buffers of tile idx and the DMA transfers that fill and empty them: ({L2 buffer id: (L1 buffer,
        first L2 element it holds)}, transfers in, transfers out)."""
        l1of: dict[int, tuple[Buffer, int]] = {}
        dma_in, dma_out = [], []
        for bid, (buf, start, rows, row_len, stride, ps, mode) in regs.items():
            if bid in self.resident:
                l1of[bid] = (self.res_buf(buf, idx), 0)
                continue
            lb = Buffer(f"t{idx}_{buf.name}", rows * row_len, dtype=buf.dtype, role="l1", space="l1")
            self.l1bufs.append(lb)
            lo = idx - 1 if mode != "w" else idx
            hi = idx + 1 if mode != "r" else idx
            self.spans.append([lb, lo, hi])
            self.span_of[id(lb)] = self.spans[-1]
            l1of[bid] = (lb, start)
            # contiguous rows move as one 1-D transfer
            shape = (1, rows * row_len, rows * row_len) if (rows == 1 or stride == row_len) else \
                (rows, row_len, stride)
            if mode in ("r", "rw"):
                dma_in.append(Transfer("in", buf, start, ps, lb, 0, *shape))
            if mode in ("w", "rw"):
                dma_out.append(Transfer("out", buf, start, ps, lb, 0, *shape))
        return l1of, dma_in, dma_out

    def _fields(self, g: dict, call: Call, regs: dict, l1of: dict) -> dict:
        """The tile call's fields: each Region of g as a pointer into its L1 buffer, with the row strides (ld
        fields) the L1 layout has."""
        fields, lds = {}, {}
        for k, v in g.items():
            if isinstance(v, Region):
                lb, base = l1of[id(v.buf)]
                if id(v.buf) not in self.resident:
                    r = regs[id(v.buf)]
                    # dense in L1: the merged region's rows are r[3] apart
                    off = v.start - base
                    row, col = divmod(off, r[4]) if r[2] > 1 else (0, off)
                    fields[k] = Ptr(lb, 0, row * r[3] + col)
                    if v.ld:
                        lds[v.ld] = r[3] if r[2] > 1 else v.row_len
                else:       # resident: the L2 layout, unchanged
                    fields[k] = Ptr(lb, 0, v.start)
                    if v.ld:
                        lds[v.ld] = v.stride if v.rows > 1 else call.fields.get(v.ld, 0)
            else:
                fields[k] = v
        fields.update(lds)
        return fields


def _prefetch(calls: list[Call]):
    """Mark which tiles' inputs are fetched during the tile before (prefetch) and which wait for its write-backs
    (late)."""
    # prefetch: the next tile's inputs are fetched during this tile's compute when both run in the same block (same
    # per-sample loop body, or both outside loops); those that read what this tile writes back, or gather into
    # columns this tile uses, go out after its write-backs instead, at the next tile (late): the weights of a
    # conv's first tile are fetched while the call before computes, its gather of that call's output after
    for t in range(1, len(calls)):
        a, b = calls[t - 1], calls[t]
        if not same_block(a, b):
            continue
        if not b.dma_in:        # nothing to fetch: as if prefetched, it waits only for the write-backs it must
            b.prefetch = True
            continue
        a_l1 = {id(v.buf) for v in a.fields.values() if isinstance(v, Ptr)}
        early, late = [], []
        for i in b.dma_in:
            outs = [o for o in a.dma_out if _overlap(_treg(o), _treg(i))]
            if isinstance(i, Gather) and id(i.l1) in a_l1:
                late.append(i)
            elif outs:
                cut = _cut(i, outs[0]) if len(outs) == 1 else None
                if cut is None:
                    late.append(i)
                else:           # only the part tile t-1 writes back waits for it
                    late.append(cut[0])
                    early += cut[1]
            else:
                early.append(i)
        if not early:
            continue
        b.late = late
        b.dma_in = early
        # issued at tile t-1, before t-1 runs and before t-2's write-backs go out (when t-2 is in the same block).
        # t-2's write-backs: the prefetch reading what they write (a conv's second tile gathering the output of the
        # call before the conv) goes behind them on the one channel instead (wb_first), which orders the two
        if t >= 2 and same_block(calls[t - 2], a) and any(
                _overlap(_treg(o), _treg(i)) for o in calls[t - 2].dma_out for i in b.dma_in):
            b.wb_first = True
        b.prefetch = True


def _place_l1(calls: list[Call], spans: list[list], eb: int, l1cap: int) -> _L1Fit:
    """The L1 placement of the tiles' buffers; raises _NoFit, naming the largest buffers at the fullest tile, when
    it exceeds the L1."""
    # the L1 placement (first fit by lifetime in tiles, largest first), then early inputs where the L1 they then
    # hold longer still fits
    l1 = _L1Fit(spans, eb, l1cap)
    if l1.peak() > l1cap:
        alive = l1.alive
        worst = max(alive, key=lambda t: max(o + s for o, s in alive[t]))
        big = sorted(((s, lb.name) for (o, s, lo, hi, lb) in l1.placed() if lo <= worst <= hi), reverse=True)[:4]
        raise _NoFit(f"--memory hierarchy: the tiles need {l1.peak()} B of L1 at once (double-buffered), over the "
                     f"{l1cap} B left after the stacks (at tile {worst}, {calls[worst].kernel} of layer "
                     f"{calls[worst].layer}: {', '.join(f'{n} {s} B' for s, n in big)})",
                     [calls[t].origin for t in range(max(0, worst - 2), min(len(calls), worst + 3))])
    return l1


EARLY_SPAN = 8      # tiles a gather may go out ahead of the tile that reads it
EARLY_PLAIN = 2     # tiles another input may (past one tile that the issuer prefetches ahead of it)


class _L1Fit:
    """The L1 placement of the tiles' buffers, kept valid while early inputs lengthen their lives. spans: [buffer,
    first tile, last tile] entries; placed by first fit by lifetime, largest first (odl/plan/planner.py). grow() makes
    buffers alive from an earlier tile on, each at the lowest offset where nothing alive in its longer life is in the
    way; where none is within the L1, the whole L1 is placed again, and the change is refused (False, nothing changed)
    should that overflow."""

    def __init__(self, spans: list[list], eb: int, cap: int):
        self.spans, self.eb, self.cap = spans, eb, cap
        self.span = {id(sp[0]): sp for sp in spans}
        self._place()

    def _place(self):
        placed = first_fit([(lb, _align(max(lb.nbytes(self.eb), 1)), lo, hi) for lb, lo, hi in self.spans])
        self.at = {id(b): (o, s) for o, s, _, _, b in placed}
        self.alive: dict[int, list] = {}    # tile -> [(offset, size)] of the buffers alive then
        for o, s, lo, hi, _ in placed:
            self._mark(o, s, lo, hi)

    def placed(self) -> list[tuple]:
        """(offset, size, first tile, last tile, buffer) of every buffer."""
        return [(*self.at[id(lb)], lo, hi, lb) for lb, lo, hi in self.spans]

    def grow(self, ids, lo: int) -> bool:
        grow = [b for b in dict.fromkeys(ids) if self.span[b][1] > lo]
        done = []                           # (buffer id, its old offset and first tile)
        for b in grow:
            lb, old, hi = self.span[b]
            o, s = self.at[b]
            for t in range(old, hi + 1):
                self.alive[t].remove((o, s))
            new = self._fit(s, lo, hi)
            if new is None:                 # undo, then place the whole L1 again
                self._mark(o, s, old, hi)
                for b2, (o2, old2) in reversed(done):
                    lb2, _, hi2 = self.span[b2]
                    s2 = self.at[b2][1]
                    for t in range(lo, hi2 + 1):
                        self.alive[t].remove((self.at[b2][0], s2))
                    self._mark(o2, s2, old2, hi2)
                    self.at[b2] = (o2, s2)
                    self.span[b2][1] = old2
                    lb2.offset = o2
                return self._replace(grow, lo)
            done.append((b, (o, old)))
            self._mark(new, s, lo, hi)
            self.at[b] = (new, s)
            self.span[b][1] = lo
            lb.offset = new
        return True

    def _replace(self, grow: list, lo: int) -> bool:
        saved = self.at, self.alive, [self.span[b][1] for b in grow]
        for b in grow:
            self.span[b][1] = lo
        self._place()
        if self.peak() <= self.cap:
            return True
        self.at, self.alive = saved[:2]
        for b, old in zip(grow, saved[2]):
            self.span[b][1] = old
        for o, _, _, _, lb in self.placed():
            lb.offset = o
        return False

    def peak(self) -> int:
        return max((o + s for o, s in self.at.values()), default=0)

    def _mark(self, o, s, lo, hi):
        for t in range(lo, hi + 1):
            self.alive.setdefault(t, []).append((o, s))

    def _fit(self, s, lo, hi):
        """The lowest offset where s bytes clash with nothing alive in tiles lo..hi, if within the L1."""
        cand = lowest_free(self.alive, s, lo, hi)
        return cand if cand + s <= self.cap else None


def _early_inputs(calls: list[Call], l1: _L1Fit):
    """A prefetched tile's gathers go out earlier still, after the write-backs of a tile up to EARLY_SPAN before,
    when the tiles in between fetch nothing (no input queues behind the gathers), none of them uses their columns or
    writes back what they read, all run in one block, and the issuer is no update or check: they then hide behind
    all of those tiles' compute (a strided weight gradient's next channel range behind the row tiles of this one).
    One tile in between may fetch when the issuer prefetches it (its inputs go out ahead of the gathers): the next
    row chunk of layer3.conv1's forward gathers during both channel halves of this one, a weight gradient's first
    gathers during the batch norm's parameter updates before it. The tile's other prefetched inputs go at most
    EARLY_PLAIN tiles ahead under the same rules, each on its own (a ReLU backward's inputs during the conv's weight
    update; a batch norm's weights and statistics while the tile before reads what it writes back). Updates
    and checks issue nothing only when the program renders them apart, after the backward (mixed precision: it has
    checks). The tile that reads the inputs waits for them (odl_tg), and none goes out past another tile that waits
    for early inputs (it would wait for these too). The L1 buffers the moved inputs write are alive from their
    issuer on; a move is made only where that longer life still fits the L1 (l1.grow), one move at a time in tile
    order, so that no call's tiles shrink for it. Measured: letting more tiles in between fetch (their inputs then
    wait behind the gathers), or issuing further ahead by estimates of the DMA queue against compute, made the
    ResNet8 step slower; moves all or none (before per-move fitting) left ResNet8 FP16 without any plain move, and
    gathers only within the reader's pass without its weight gradients' first ones."""
    apart = any(c.step == "check" for c in calls)
    for t, c in enumerate(calls):
        _issue_early(calls, l1, t, c, [g for g in c.dma_in if isinstance(g, Gather)], apart)
        for x in [x for x in c.dma_in if not isinstance(x, Gather)]:
            _issue_early(calls, l1, t, c, [x], apart)


def _issue_early(calls: list[Call], l1: _L1Fit, t: int, c: Call, gs: list, apart: bool):
    """_early_inputs for tile t's gathers, or one of its other prefetched inputs."""
    plain = not any(isinstance(g, Gather) for g in gs)
    if not gs or not c.prefetch or c.step in ("update", "check"):
        return
    cols = {id(g.l1) for g in gs}
    e = best = t - 1
    while e - 1 >= 0 and t - (e - 1) <= (EARLY_PLAIN if plain else EARLY_SPAN):
        k = calls[e - 1]                # the next issuer to try; calls[e] would then run in between
        # calls[e] may fetch if k prefetches it: k issues that prefetch ahead of the gathers. No issuer further
        # back then: calls[e]'s inputs would queue behind the gathers.
        fetches = bool(calls[e].dma_in or calls[e].late)
        # (a reader in between waits for the last gathers issued before it: not for these)
        if (not same_block(k, c) or calls[e].early or calls[e].wait_early
                or (fetches and (not calls[e].prefetch or calls[e].late))
                or any(isinstance(v, Ptr) and id(v.buf) in cols for v in k.fields.values())
                or any(_overlap(_treg(o), _treg(g)) for o in k.dma_out for g in gs)):
            break
        e -= 1
        if k.step not in ("update", "check") or not apart:
            best = e
        if fetches:
            break
    if best == t - 1:
        return
    # the prefetch at t-1 would have issued them: from tile best on instead, their L1 written from there on, unless
    # that L1 no longer fits
    if not l1.grow(cols, best):
        return
    c.dma_in = [x for x in c.dma_in if not any(x is g for g in gs)]
    c.wait_early = True
    calls[best].early = calls[best].early + gs


def _writeback_waits(calls: list[Call], eb: int):
    """Sets each prefetched tile's wait_wb: whether it must wait for write-backs issued before it (odl/tile/memory.py's
    schedule waits for them, as their L1 may be reused). It must only if one of them still reads L1 that its kernel
    writes (reading alongside is harmless; DMA transfers issued later queue behind them on the one channel anyway),
    and then only up to the last such tile's write-backs (wb_wait): what went out after them (a later tile's early
    gathers, other write-backs) need not be done. Replays the issue order of the schedule (codegen._dma_lines);
    `pend` holds the L1 ranges of write-backs not known to be complete, with their tiles."""
    def rng(b):
        return b.offset, b.offset + b.nbytes(eb)
    pend: list[tuple[int, int, int]] = []
    for t, c in enumerate(calls):
        prev = calls[t - 1] if t and same_block(calls[t - 1], c) else None
        nxt = calls[t + 1] if t + 1 < len(calls) and same_block(c, calls[t + 1]) else None
        prefetched = c.prefetch and prev is not None
        wb_prev = list(prev.dma_out) if prev is not None else []
        c.wb_wait = -1
        if c.late or (not prefetched and c.dma_in):
            pend, wb_prev = [], []      # the previous results go out, then the inputs: waiting for those waits for all
        else:
            if prefetched and c.wb_first:
                pend = []               # every write-back so far went out ahead of this tile's prefetched inputs
            ptr = pointer_fields(kernels.get(c.kernel).args_type)      # field -> read only
            mine = [rng(v.buf) for k, v in c.fields.items() if isinstance(v, Ptr) and not ptr.get(k)]
            hit = [j for o, e, j in pend if any(lo < e and o < hi for lo, hi in mine)]
            c.wait_wb = not prefetched or bool(hit)
            if not prefetched:
                pend = []
            elif hit:
                c.wb_wait = max(hit)
                pend = [p for p in pend if p[2] > c.wb_wait]
        pend += [(*rng(x.l1), t - 1) for x in wb_prev]
        if nxt is None:
            pend += [(*rng(x.l1), t) for x in c.dma_out]


def _conflict(ra: dict, rb: dict) -> bool:
    """Do two tiles' merged regions share bytes of a buffer that one of them writes?"""
    return any((ra[b][6] != "r" or rb[b][6] != "r") and _overlap(ra[b], rb[b]) for b in ra.keys() & rb.keys())


def _interleave(flat: list[Call], work: list) -> list[tuple[int, int]]:
    """The order tiles run in: (flat call, tile) pairs. Runs of consecutive elementwise / channel-split calls of
    one block with as many tiles each (e.g. batch norm then ReLU over the same channel halves) run tile by tile,
    A0 B0 A1 B1 ..., when no tile moved ahead of another shares bytes with it that either writes: B0 then reads A0's
    result from L1 (odl/tile/tiler.py _forward) instead of waiting for its write-back and a fetch."""
    def chainable(ci):
        return _tiler(flat[ci].kernel) in (_len_tiles, _chan_tiles) and len(work[ci]) > 1
    regs: dict[int, list] = {}

    def regions(ci):
        if ci not in regs:
            regs[ci] = [_merge(g, ci, flat[ci]) for g, _ in work[ci]]
        return regs[ci]
    order, ci = [], 0
    while ci < len(flat):
        group = [ci]
        if chainable(ci):
            T = len(work[ci])
            while True:
                nx = group[-1] + 1
                if not (nx < len(flat) and chainable(nx) and len(work[nx]) == T and same_block(flat[ci], flat[nx])):
                    break
                rn = regions(nx)
                if any(_conflict(rn[i], regions(x)[j]) for x in group for i in range(T) for j in range(i + 1, T)):
                    break
                group.append(nx)
        if len(group) > 1:
            order += [(c, t) for t in range(len(work[ci])) for c in group]
        else:
            order += [(ci, t) for t in range(len(work[ci]))]
        ci = group[-1] + 1
    return order


def _drop_dead_writebacks(calls: list[Call], eb: int) -> tuple[int, int]:
    """Drops the write-backs that no later tile reads: an in-place result that only the next tile of its chain reads,
    from L1 (a residual add's sum, read by the ReLU after it), or a gradient that the update takes from L1. Not for
    buffers that live for the whole step (parameters, state, what the host reads: the loss, the logits, and in the
    validation build every activation and input gradient). A tile inside a per-sample loop body also counts the
    reads of every tile of that body (the next sample's), and where the program renders its updates and checks apart,
    after the rest (mixed precision), every tile counts theirs. Any later read of an overlapping region keeps it.
    Returns the number and bytes of those dropped."""
    reads: dict[int, list] = {}             # L2 buffer id -> regions read by the tiles after
    body: dict[int, dict] = {}              # loop group -> the same for every tile of that body

    def add(into, c):
        for x in c.dma_in:
            into.setdefault(id(x.l2), []).append(_treg(x))
    apart = any(c.step == "check" for c in calls)
    for c in calls:
        if c.loop:
            add(body.setdefault(c.group, {}), c)
        if apart and c.step in ("update", "check"):
            add(reads, c)
    n = nbytes = 0
    for c in reversed(calls):
        live = [reads] + ([body[c.group]] if c.loop else [])
        keep = [o for o in c.dma_out if o.l2.persistent or o.l2.init is not None
                or any(_overlap(_treg(o), r) for rs in live for r in rs.get(id(o.l2), ()))]
        n += len(c.dma_out) - len(keep)
        nbytes += sum(o.nbytes(eb) for o in c.dma_out if not any(o is k for k in keep))
        c.dma_out = keep
        add(reads, c)
    return n, nbytes


def _within(key: tuple, outer: tuple) -> int | None:
    """Offset of 1-D region key (start, rows, row_len, stride, per_sample) inside 1-D region outer, or None."""
    if key[1] != 1 or outer[1] != 1 or key[4] != outer[4]:
        return None
    d = key[0] - outer[0]
    return d if 0 <= d and d + key[2] <= outer[2] else None


def _forward(calls, regions, l1s, spans, span_of, resident) -> list:
    """Results that the next tile to touch their buffer reads back whole (a weight gradient accumulated over im2col
    chunks, an in-place op on the same tile), or reads a contiguous part of without writing it, stay in L1: the
    write-back and the fetch are dropped and the reader uses the writer's L1 buffer, whose life is extended. Only
    within one block (same per-sample loop body, or outside loops) and only when no tile in between touches that
    buffer. Returns the spans still in use."""
    last_touch: dict[int, int] = {}         # buffer id -> last tile that touched it
    pending: dict[int, tuple] = {}          # buffer id -> (tile, region key, L1 buffer) of an unwritten-back result
    dropped = set()
    for t, regs in enumerate(regions):
        c = calls[t]
        for gt in c.dma_in:             # a gather reads its input from L2: what it reads must be written back
            if isinstance(gt, Gather):
                last_touch[id(gt.l2)] = t
                pending.pop(id(gt.l2), None)
        for bid, r in regs.items():
            if bid in resident:
                continue
            key, mode = r[1:6], r[6]
            p = pending.get(bid)
            ok = (p is not None and last_touch.get(bid) == p[0] and mode in ("r", "rw")
                  and same_block(calls[p[0]], c) and t - p[0] <= FORWARD_SPAN)
            # a read-only reader may also take a contiguous part of the result (batch norm over the channel halves
            # of a whole-tensor bias add): it points into the writer's L1 buffer at that offset
            delta = _within(key, p[1]) if ok and mode == "r" else (0 if ok and p[1] == key else None)
            if delta is not None:
                t0, _, lb0 = p
                lb = l1s[t][bid]
                if mode == "rw":        # the reader writes it back; a read-only reader leaves that to the writer
                    calls[t0].dma_out = [x for x in calls[t0].dma_out if x.l1 is not lb0]
                c.dma_in = [x for x in c.dma_in if x.l1 is not lb]
                c.dma_out = [x if x.l1 is not lb else dataclasses.replace(x, l1=lb0) for x in c.dma_out]
                c.fields = {k: (Ptr(lb0, v.per_sample, v.elem + delta) if isinstance(v, Ptr) and v.buf is lb else v)
                            for k, v in c.fields.items()}
                l1s[t][bid] = lb0
                sp = span_of[id(lb0)]
                sp[2] = max(sp[2], t + 1 if mode == "rw" else t)
                dropped.add(id(lb))
            if mode != "r":
                pending[bid] = (t, key, l1s[t][bid])
            elif bid in pending and delta is None:
                pending.pop(bid)
            last_touch[bid] = t
    return [sp for sp in spans if id(sp[0]) not in dropped]
