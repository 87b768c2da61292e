"""The C kernel library (kernels_c/) built for the host, against PyTorch, in both precisions, on 1, 3 and 8
simulated cores (kernels_c/host/team_host.c runs each core's share in turn, so the splits are exercised).

FP32: relative L2 error ~1e-6. FP16: relative L2 <= 1e-2 against an FP32/FP64 reference computed from the same
FP16-rounded inputs."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import check_close, f64, rnd
from odl.run import native

PRECISIONS = ["fp32", "fp16"]
CORES = [1, 3, 8]
TOL = {"fp32": 1e-5, "fp16": 1e-2}
SIZES = [1, 2, 3, 7, 17, 64, 127]








def check(lib, dev, ref, what, tol=None):
    return check_close(lib, dev, ref, what, tol or TOL)


def mm_shapes(seed):
    rng = np.random.default_rng(seed)
    all_shapes = list(itertools.product(SIZES, SIZES, SIZES))
    picks = [all_shapes[i] for i in rng.choice(len(all_shapes), 40, replace=False)]
    return [(1, 1, 1), (1, 127, 7), (127, 1, 17), (3, 7, 1), (64, 64, 64), (17, 127, 3)] + picks


# ---------------- matmul ----------------
@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("kind", ["nn", "nt", "tn"])
def test_matmul(lib, kind, cores):
    rng = np.random.default_rng(100 * cores + ["nn", "nt", "tn"].index(kind))
    fn = getattr(lib, f"mm_{kind}")
    for m, n, k in mm_shapes(cores * 7 + len(kind)):
        a = rnd(lib, rng, *((m, k) if kind != "tn" else (k, m)))
        b = rnd(lib, rng, *((k, n) if kind != "nt" else (n, k)))
        A = f64(a) if kind != "tn" else f64(a).T
        B = f64(b) if kind != "nt" else f64(b).T
        ref = (A @ B).numpy()
        for accumulate in (0, 1):
            c0 = rnd(lib, rng, m, n)
            out = c0.copy()
            got = fn(a, b, out=out, accumulate=bool(accumulate), cores=cores)
            want = ref + (c0.astype(np.float64) if accumulate else 0)
            check(lib, got, want, f"mm_{kind} M={m} N={n} K={k} acc={accumulate}")


@pytest.mark.parametrize("cores", [1, 8])
def test_mm_nt_long_reduction_fp16(cores):
    """Conv weight gradients reduce over H*W: FP16 blocks of <= 64 elements summed in FP32 stay accurate."""
    lib = native.load("fp16")
    rng = np.random.default_rng(5)
    m, n, k = 16, 9, 4096
    a = rnd(lib, rng, m, k)
    b = rnd(lib, rng, n, k)
    ref = (f64(a) @ f64(b).T).numpy()
    check(lib, lib.mm_nt(a, b, cores=cores), ref, "mm_nt K=4096", tol=3e-3)
    # a reduction with a large common offset (all-positive products), where naive FP16 accumulation fails
    a = np.abs(a)
    b = np.abs(b)
    ref = (f64(a) @ f64(b).T).numpy()
    check(lib, lib.mm_nt(a, b, cores=cores), ref, "mm_nt K=4096 positive", tol=3e-3)


# ---------------- im2col / col2im ----------------
# (C, H, W, KH, KW, SH, SW, padding (top, left, bottom, right))
CONV_CASES = [
    (3, 8, 8, 3, 3, 1, 1, (1, 1, 1, 1)),
    (2, 7, 9, 3, 3, 2, 2, (1, 1, 1, 1)),
    (4, 5, 5, 1, 1, 1, 1, (0, 0, 0, 0)),
    (3, 9, 7, 1, 1, 2, 2, (0, 0, 0, 0)),
    (2, 11, 13, 5, 5, 1, 1, (2, 2, 2, 2)),
    (1, 10, 6, 5, 5, 2, 1, (2, 1, 1, 2)),
    (5, 9, 4, 3, 1, 1, 1, (1, 0, 1, 0)),
    (3, 6, 6, 3, 3, 2, 2, (0, 0, 1, 1)),   # TF-style 'same' with stride 2: asymmetric
    (2, 1, 1, 1, 1, 1, 1, (0, 0, 0, 0)),   # 1x1 spatial
    (2, 1, 1, 3, 3, 1, 1, (1, 1, 1, 1)),   # 1x1 spatial, padded 3x3
    (7, 13, 11, 3, 3, 1, 2, (2, 0, 1, 2)),
    (1, 4, 4, 3, 3, 1, 1, (0, 2, 0, 1)),
]


def conv_geom(h, w, kh, kw, sh, sw, pad):
    pt, pl, pb, pr = pad
    return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"p{''.join(map(str, c[7]))}")
def test_im2col(lib, case, cores):
    c, h, w, kh, kw, sh, sw, pad = case
    rng = np.random.default_rng(11)
    x = rnd(lib, rng, c, h, w)
    pt, pl, pb, pr = pad
    xp = F.pad(f64(x)[None], (pl, pr, pt, pb))
    ref = F.unfold(xp, (kh, kw), stride=(sh, sw))[0].numpy()
    got = lib.im2col(x, (kh, kw), (sh, sw), pad, cores=cores)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got.astype(np.float64), ref)  # a pure copy: exact


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"p{''.join(map(str, c[7]))}")
def test_col2im(lib, case, cores):
    c, h, w, kh, kw, sh, sw, pad = case
    pt, pl, pb, pr = pad
    ho, wo = conv_geom(h, w, kh, kw, sh, sw, pad)
    rng = np.random.default_rng(12)
    col = rnd(lib, rng, c * kh * kw, ho * wo)
    full = F.fold(f64(col)[None], (h + pt + pb, w + pl + pr), (kh, kw), stride=(sh, sw))[0]
    ref = full[:, pt:pt + h, pl:pl + w].numpy()
    for accumulate in (0, 1):
        dx0 = rnd(lib, rng, c, h, w)
        got = lib.col2im(col, (c, h, w), (kh, kw), (sh, sw), pad, out=dx0.copy(), accumulate=bool(accumulate),
                         cores=cores)
        check(lib, got, ref + (dx0.astype(np.float64) if accumulate else 0), f"col2im acc={accumulate}")


# ---------------- bias, relu, softmax-xent, sgd, fill ----------------
BIAS_SHAPES = [(1, 1, 1), (2, 3, 5), (4, 16, 64), (3, 10, 1), (1, 7, 127), (5, 2, 1024)]


@pytest.mark.parametrize("cores", CORES)
def test_bias(lib, cores):
    rng = np.random.default_rng(13)
    for n, c, hw in BIAS_SHAPES:
        y = rnd(lib, rng, n, c, hw)
        b = rnd(lib, rng, c)
        check(lib, lib.bias_add(y, b, cores=cores), f64(y) + f64(b)[None, :, None], f"bias_add {n},{c},{hw}")
        dy = rnd(lib, rng, n, c, hw)
        ref = f64(dy).sum(dim=(0, 2)).numpy()
        check(lib, lib.bias_grad(dy, cores=cores), ref, f"bias_grad {n},{c},{hw}")
        db0 = rnd(lib, rng, c)
        got = lib.bias_grad(dy, out=db0.copy(), accumulate=True, cores=cores)
        check(lib, got, ref + db0.astype(np.float64), f"bias_grad acc {n},{c},{hw}")


@pytest.mark.parametrize("cores", CORES)
def test_relu(lib, cores):
    rng = np.random.default_rng(14)
    for size in (1, 2, 3, 7, 17, 64, 127, 1000):
        x = rnd(lib, rng, size)
        y = lib.relu_fwd(x, cores=cores)
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        dy = rnd(lib, rng, size)
        np.testing.assert_array_equal(lib.relu_bwd(y, dy, cores=cores), np.where(y > 0, dy, 0).astype(lib.dtype))
        dx0 = rnd(lib, rng, size)
        got = lib.relu_bwd(y, dy, out=dx0.copy(), accumulate=True, cores=cores)
        check(lib, got, dx0.astype(np.float64) + np.where(y > 0, dy, 0), "relu_bwd acc")


@pytest.mark.parametrize("cores", CORES)
def test_softmax_xent(lib, cores):
    rng = np.random.default_rng(15)
    for n, c, scale in [(1, 1, 1.0), (1, 10, 1.0), (4, 10, 3.0), (7, 12, 10.0), (32, 10, 1.0), (3, 2, 30.0)]:
        z = rnd(lib, rng, n, c, scale=scale)
        lab = rng.integers(0, c, n)
        zt = f64(z).requires_grad_(True)
        loss = F.cross_entropy(zt, torch.from_numpy(lab))
        loss.backward()
        got_loss, got_dz = lib.softmax_xent(z, lab, cores=cores)
        assert abs(got_loss - loss.item()) <= 1e-5 * max(1.0, abs(loss.item())), (got_loss, loss.item())
        if n * c > 1:
            check(lib, got_dz, zt.grad.numpy(), f"softmax_xent grad {n}x{c}")
        else:
            assert got_dz[0, 0] == 0


@pytest.mark.parametrize("cores", CORES)
def test_sgd_fill(lib, cores):
    rng = np.random.default_rng(16)
    for size in (1, 3, 17, 64, 1001):
        w, g = rnd(lib, rng, size), rnd(lib, rng, size)
        check(lib, lib.sgd(w, g, 0.05, cores=cores), w.astype(np.float64) - 0.05 * g.astype(np.float64), "sgd",
              tol=1e-6 if lib.precision == "fp32" else 1e-3)
        for v in (0.0, 1.5, -2.25):
            assert np.all(lib.fill(size, v, cores=cores) == v)


# ---------------- FP32 math ----------------
def test_expf_logf():
    lib = native.load("fp32")
    xs = np.concatenate([np.linspace(-87.0, 88.5, 4001), np.linspace(-1, 1, 201), [0.0, 1e-8, -1e-8]])
    worst = max(abs(lib.expf(x) - math.exp(np.float32(x))) / math.exp(np.float32(x)) for x in xs)
    assert worst < 1e-6, worst
    # large negative inputs: denormal results, then 0; large positive: inf
    for x in (-90.0, -100.0, -103.0):
        assert lib.expf(x) == pytest.approx(math.exp(x), rel=1e-3)
    assert lib.expf(-200.0) == 0.0 and lib.expf(-1e30) == 0.0
    assert lib.expf(100.0) == math.inf
    ys = np.concatenate([np.geomspace(1e-38, 3e38, 3001), np.linspace(0.5, 2.0, 301), [1.0, 1e-42]])
    worst = 0.0
    for y in ys:
        y32 = float(np.float32(y))
        ref = math.log(y32)
        got = lib.logf(y32)
        worst = max(worst, abs(got - ref) / max(abs(ref), 1e-30) if abs(ref) > 1e-3 else abs(got - ref))
    assert worst < 1e-6, worst
    assert lib.logf(0.0) == -math.inf and math.isnan(lib.logf(-1.0))
