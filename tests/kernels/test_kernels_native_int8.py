"""The int8 inference kernels (kernels_c/int8.c, `odl compile --deploy int8`) built for the host against an integer
numpy reference, bit for bit: int32 accumulation, the FP32 requantization (product rounded to FP32, round half to
even, zero point, clamp), the residual add in torch's fake-quant arithmetic, pooling, on awkward shapes (odd sizes,
stride 2 over odd inputs, channel counts not divisible by the cores, a K that is not a multiple of the 4 lanes) on
1, 3 and 8 simulated cores."""
import numpy as np
import pytest

from odl.deploy.int8.lower import pack_gemm
from odl.ir.kernel_structs import ctypes_struct
from odl.run import native

CORES = [1, 3, 8]
F32 = np.float32


@pytest.fixture(scope="module")
def lib():
    return native.Kernels("fp32")     # the int8 kernels do not depend on the build's precision


def _p(a):
    return a.ctypes.data


def run(lib, kernel, cores, **fields):
    lib.run(kernel, ctypes_struct(f"odl_{kernel}_args_t")(**fields), cores)


def ref_code(v, zp, lo, hi):
    """clamp(rne(v) + zp, lo, hi) of FP32 values v"""
    v = np.clip(np.asarray(v, F32), -1024, 1024)
    return np.clip(np.rint(v).astype(np.int64) + zp, lo, hi).astype(np.int8)


def ref_requant(acc, mult, zp, lo, hi):
    """acc int32 [..., per channel on axis 0] times the channel's FP32 multiplier, rounded to FP32 once"""
    m = np.asarray(mult, F32).reshape((-1,) + (1,) * (acc.ndim - 1))
    return ref_code(acc.astype(F32) * m, zp, lo, hi)


def ref_conv_acc(x, w, stride, pad, zp_in, groups=1):
    """sum over taps of (x - zp_in) * w in int64; out-of-image taps are real zeros"""
    c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64) - zp_in, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    ho, wo = (h + 2 * pad[0] - kh) // stride[0] + 1, (wd + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((m, ho, wo), np.int64)
    for o in range(m):
        g = o // (m // groups)
        for i in range(kh):
            for t in range(kw):
                win = xp[g * cg:(g + 1) * cg, i:i + stride[0] * ho:stride[0], t:t + stride[1] * wo:stride[1]]
                out[o] += np.einsum("chw,c->hw", win, w[o, :, i, t].astype(np.int64))
    return out


def setup(rng, shape, lo=-128, hi=128):
    return rng.integers(lo, hi, shape).astype(np.int8)


def layer(rng, m, scale=1e-3):
    return rng.integers(-3000, 3000, m).astype(np.int32), (rng.random(m) * scale + scale / 4).astype(F32)


CONV_CASES = [  # c, h, w, m, kh, kw, stride, pad
    (1, 8, 8, 16, 3, 3, (1, 1), (1, 1)),
    (3, 7, 9, 5, 3, 3, (2, 2), (1, 1)),
    (5, 9, 7, 11, 1, 1, (2, 2), (0, 0)),
    (2, 5, 5, 3, 5, 3, (1, 2), (2, 1)),
    (4, 11, 13, 19, 1, 1, (1, 1), (0, 0)),   # N = 143: a pixel unit of 15, tiles of 8 and 4 and an overlapping 4
    (3, 5, 3, 9, 3, 3, (2, 2), (0, 0)),      # N = 2: single outputs
    (2, 3, 7, 8, 1, 3, (1, 1), (0, 1)),      # N = 21: units of 8 and 13
    (6, 4, 4, 12, 3, 3, (2, 2), (1, 1)),     # N = 4: one tile of 4; M = 12: a group of 8 and one of 4
    (2, 5, 23, 6, 3, 3, (2, 2), (1, 1)),     # stride 2 over a wide odd row: the 8-codes-at-once gather and its end
]


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_as_im2col_gemm(lib, case, cores):
    c, h, w, m, kh, kw, st, pad = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x, wt = setup(rng, (c, h, w)), setup(rng, (m, c, kh, kw), -127)
    zp_in, zp, lo, hi = -37, 5, 5, 127          # lo = zp: a ReLU folded into the clamp
    bias, mult = layer(rng, m)
    ho, wo = (h + 2 * pad[0] - kh) // st[0] + 1, (w + 2 * pad[1] - kw) // st[1] + 1
    k = c * kh * kw
    cols, y = np.zeros((k, ho * wo), np.int8), np.zeros((m, ho * wo), np.int8)
    run(lib, "i8_im2col", cores, x=_p(x), cols=_p(cols), c=c, h=h, w=w, kh=kh, kw=kw, sh=st[0], sw=st[1], pt=pad[0],
        pl=pad[1], ho=ho, wo=wo, pad=zp_in)
    wflat = np.ascontiguousarray(wt.reshape(m, k))
    gb = (bias - zp_in * wflat.astype(np.int32).sum(1)).astype(np.int32)     # the input's zero point, folded
    packed = pack_gemm(wflat) if ho * wo > 1 else wflat      # odl_i8_gemm's layouts (odl_int8.h)
    run(lib, "i8_gemm", cores, wt=_p(packed), a=_p(cols), y=_p(y), bias=_p(gb), mult=_p(mult), m=m, n=ho * wo, k=k,
        ldy=ho * wo, zp=zp, lo=lo, hi=hi)
    acc = ref_conv_acc(x, wt, st, pad, zp_in) + bias[:, None, None]
    want = ref_requant(acc, mult, zp, lo, hi).reshape(m, -1)
    assert np.array_equal(y, want)
    assert len(np.unique(y)) > min(20, y.size // 3) and (y == lo).any()   # spread values, and the clamp is reached


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("rows", [1, 2, 3])
def test_conv_in_blocks_of_output_rows(lib, rows, cores):
    """odl compile's im2col buffer bound (odl/deploy/int8/lower.py COLS_BYTES): im2col of output rows [oy0, oy0 + r)
    (its top padding shifted by oy0 * stride, negative past the first block) and a gemm writing that block of the
    output's rows (ldy = the image's pixels), block after block, give the whole conv"""
    c, h, w, m, kh, kw, st, pad = 3, 9, 11, 12, 3, 3, (2, 2), (1, 1)
    rng = np.random.default_rng(rows)
    x, wt = setup(rng, (c, h, w)), setup(rng, (m, c, kh, kw), -127)
    zp_in, zp, lo, hi = 11, -4, -128, 127
    bias, mult = layer(rng, m)
    ho, wo, k = (h + 2 * pad[0] - kh) // st[0] + 1, (w + 2 * pad[1] - kw) // st[1] + 1, c * kh * kw
    wflat = np.ascontiguousarray(wt.reshape(m, k))
    gb = (bias - zp_in * wflat.astype(np.int32).sum(1)).astype(np.int32)
    packed, y = pack_gemm(wflat), np.zeros((m, ho * wo), np.int8)
    for oy0 in range(0, ho, rows):
        nr = min(rows, ho - oy0)
        cols = np.zeros((k, nr * wo), np.int8)
        run(lib, "i8_im2col", cores, x=_p(x), cols=_p(cols), c=c, h=h, w=w, kh=kh, kw=kw, sh=st[0], sw=st[1],
            pt=pad[0] - oy0 * st[0], pl=pad[1], ho=nr, wo=wo, pad=zp_in)
        run(lib, "i8_gemm", cores, wt=_p(packed), a=_p(cols), y=y.ctypes.data + oy0 * wo, bias=_p(gb), mult=_p(mult),
            m=m, n=nr * wo, k=k, ldy=ho * wo, zp=zp, lo=lo, hi=hi)
    acc = ref_conv_acc(x, wt, st, pad, zp_in) + bias[:, None, None]
    assert np.array_equal(y, ref_requant(acc, mult, zp, lo, hi).reshape(m, -1))


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("m, k", [(10, 128), (7, 13), (1, 3), (33, 4)])
def test_linear_gemm(lib, m, k, cores):
    rng = np.random.default_rng(m * 100 + k)
    w, xv = setup(rng, (m, k), -127), setup(rng, (1, k))
    bias, mult = layer(rng, m, 2e-3)
    y = np.zeros(m, np.int8)
    run(lib, "i8_gemm", cores, wt=_p(w), a=_p(xv), y=_p(y), bias=_p(bias), mult=_p(mult), m=m, n=1, k=k, ldy=1, zp=-3,
        lo=-128, hi=127)
    acc = w.astype(np.int64) @ xv[0].astype(np.int64) + bias
    assert np.array_equal(y, ref_requant(acc, mult, -3, -128, 127))


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("c, h, w, k, st, pad", [
    (3, 7, 7, 3, 2, 1), (9, 6, 5, 3, 1, 1), (1, 4, 4, 1, 1, 0),
    (2, 3, 150, 3, 1, 1),    # rows past a chunk of 64, wider than the stride-1 blocks' buffer: the row kernel
    (13, 25, 5, 3, 1, 1),    # DS-CNN's narrow rows, a whole plane a block, 13 channels over 3 / 8 cores
    (5, 1, 1, 3, 1, 1),      # 1 x 1 spatial: every tap but the centre padded
    (3, 40, 30, 3, 1, 1),    # planes larger than a block: blocks of rows, the last one shorter
    (4, 11, 9, 5, 1, 2),     # stride 1, not 3 x 3: the generic taps
    (6, 8, 7, 3, 1, 0),      # no padding
])
def test_dwconv(lib, c, h, w, k, st, pad, cores):
    rng = np.random.default_rng(c * h * w)
    x, wt = setup(rng, (c, h, w)), setup(rng, (c, 1, k, k), -127)
    bias, mult = layer(rng, c, 2e-2)
    ho, wo = (h + 2 * pad - k) // st + 1, (w + 2 * pad - k) // st + 1
    y = np.zeros((c, ho, wo), np.int8)
    run(lib, "i8_dwconv", cores, x=_p(x), wt=_p(wt), y=_p(y), bias=_p(bias), mult=_p(mult), c=c, h=h, w=w, kh=k,
        kw=k, sh=st, sw=st, pt=pad, pl=pad, ho=ho, wo=wo, zp_in=11, zp=-20, lo=-20, hi=90)
    acc = ref_conv_acc(x, wt, (st, st), (pad, pad), 11, groups=c) + bias[:, None, None]
    assert np.array_equal(y, ref_requant(acc, mult, -20, -20, 90))


@pytest.mark.parametrize("cores", CORES)
def test_add_is_torch_fake_quant_arithmetic(lib, cores):
    """(qa - za) * sa + (qb - zb) * sb, times 1 / s_out, each rounded to FP32 as torch computes a residual add of two
    fake-quantized tensors; ReLU folded (lo = zp); exhaustive over the codes, so that a product fused into the add
    (one rounding fewer) shows"""
    a, b = (g.ravel().astype(np.int8) for g in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    a, b, n = a[:-3], b[:-3], a.size - 3       # every pair of codes (but 3: a tail past the 4 lanes)
    sa, sb, so = F32(0.031), F32(0.017), F32(0.04)
    inv = F32(1) / so
    y = np.zeros(n, np.int8)
    run(lib, "i8_add", cores, a=_p(a), b=_p(b), y=_p(y), n=n, sa=sa, sb=sb, inv=inv, za=-5, zb=7, zp=-9, lo=-9,
        hi=127)
    v = ((a.astype(F32) - F32(-5)) * sa + (b.astype(F32) - F32(7)) * sb) * inv
    assert v.dtype == F32 and np.array_equal(y, ref_code(v, -9, -9, 127))


@pytest.mark.parametrize("cores", CORES)
def test_quantize_dequantize(lib, cores):
    rng = np.random.default_rng(6)
    s = F32(0.0123)
    x = np.concatenate([rng.standard_normal(97).astype(F32), [F32(1e9), F32(-1e9)],
                        (np.arange(-4, 5) + F32(0.5)) * s]).astype(F32)    # beyond the range, and exact ties
    inv = F32(1) / s
    q = np.zeros(x.size, np.int8)
    run(lib, "i8_quantize", cores, x=_p(x), y=_p(q), n=x.size, inv=inv, zp=-17)
    assert np.array_equal(q, ref_code(x * inv, -17, -128, 127))
    y = np.zeros(x.size, F32)
    run(lib, "i8_dequantize", cores, x=_p(q), y=_p(y), n=x.size, scale=s, zp=-17)
    assert np.array_equal(y, (q.astype(F32) - F32(-17)) * s)


POOL_CASES = [(3, 7, 7, 2, 2, 0), (5, 9, 8, 3, 2, 1), (2, 8, 8, 8, 8, 0)]   # c, h, w, k, stride, pad


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pools(lib, case, cores):
    import torch
    c, h, w, k, st, pad = case
    rng = np.random.default_rng(sum(case))
    x = setup(rng, (c, h, w))
    ho, wo = (h + 2 * pad - k) // st + 1, (w + 2 * pad - k) // st + 1
    geo = dict(c=c, h=h, w=w, kh=k, kw=k, sh=st, sw=st, pt=pad, pl=pad, ho=ho, wo=wo)
    y = np.zeros((c, ho, wo), np.int8)
    run(lib, "i8_maxpool", cores, x=_p(x), y=_p(y), **geo)
    t = torch.from_numpy(x.astype(np.float32))[None]
    assert np.array_equal(y, torch.nn.functional.max_pool2d(t, k, st, pad)[0].numpy().astype(np.int8))
    zp_in, zp, mult = -40, 3, F32(0.7)
    run(lib, "i8_avgpool", cores, x=_p(x), y=_p(y), count_include_pad=1, mult=mult, zp_in=zp_in, zp=zp, **geo)
    xs = np.pad(x.astype(np.int64) - zp_in, ((0, 0), (pad, pad), (pad, pad)))
    acc = np.stack([[[xs[ch, i * st:i * st + k, j * st:j * st + k].sum() for j in range(wo)] for i in range(ho)]
                    for ch in range(c)])
    # count_include_pad: torch's divisor, the window clipped to the padded extent
    counts = np.array([[(min(i * st - pad + k, h + pad) - (i * st - pad)) * (min(j * st - pad + k, w + pad) -
                                                                            (j * st - pad)) for j in range(wo)]
                       for i in range(ho)])
    want = ref_code(acc.astype(F32) * (mult / counts.astype(F32)).astype(F32), zp, -128, 127)
    assert np.array_equal(y, want)
