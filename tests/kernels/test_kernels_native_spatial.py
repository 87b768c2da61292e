"""The spatial and normalisation kernels (dilated im2col / col2im, adaptive and ceil-mode pooling, LayerNorm /
GroupNorm / InstanceNorm, upsampling) built for the host, against float64 PyTorch, in both precisions, on 1, 3
and 8 simulated cores, on seeded random odd sizes. FP32: rel-L2 <= 1e-5; FP16: <= 1e-2 against the float64
result on the same FP16-rounded inputs (or 4x PyTorch's own FP16 error where the problem is ill-conditioned).
Argument structs are declared here (ctypes mirrors of odl_kernels.h) so that odl/run/native.py stays untouched."""
import ctypes

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import check_close, rel_l2, rnd
from odl.run import native
from odl.lower.ops.upsample import _attrs as upsample_attrs

CORES = [1, 3, 8]
TOL = {"fp32": 1e-5, "fp16": 1e-2}
_P, _I, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float


class AdaptiveFwdArgs(ctypes.Structure):
    _fields_ = [("x", _P), ("y", _P)] + [(f, _I) for f in ("n", "c", "h", "w", "ho", "wo")]


class AdaptiveBwdArgs(ctypes.Structure):
    _fields_ = [("dy", _P), ("dx", _P)] + [(f, _I) for f in ("n", "c", "h", "w", "ho", "wo", "accumulate")]


class NormFwdArgs(ctypes.Structure):
    _fields_ = [("x", _P), ("y", _P), ("gamma", _P), ("beta", _P), ("mean", _P), ("rstd", _P), ("part", _P)] + \
        [(f, _I) for f in ("rows", "m", "g", "s", "chunks")] + [("eps", _F)]


class NormBwdArgs(ctypes.Structure):
    _fields_ = [("x", _P), ("dy", _P), ("dx", _P), ("gamma", _P), ("mean", _P), ("rstd", _P), ("dgamma", _P),
                ("dbeta", _P), ("part", _P)] + [(f, _I) for f in ("rows", "m", "g", "s", "chunks", "accumulate",
                                                                  "accumulate_w")]


class UpsampleFwdArgs(ctypes.Structure):
    _fields_ = [("x", _P), ("y", _P)] + [(f, _I) for f in ("n", "c", "h", "w", "ho", "wo", "mode",
                                                            "align_corners")] + [("rh", _F), ("rw", _F)]


class UpsampleBwdArgs(ctypes.Structure):
    _fields_ = [("dy", _P), ("dx", _P)] + [(f, _I) for f in ("n", "c", "h", "w", "ho", "wo", "mode",
                                                              "align_corners")] + \
        [("rh", _F), ("rw", _F), ("accumulate", _I)]




def t64(a, grad=False):
    return torch.from_numpy(np.asarray(a, dtype=np.float64)).requires_grad_(grad)


def ptr(a):
    return a.ctypes.data if a is not None else None


def check(lib, dev, ref, what, tol=None):
    return check_close(lib, dev, ref, what, tol or TOL)


# ---------------- dilated im2col / col2im (against F.unfold / F.fold on the explicitly padded input) -------------
def _conv_case(rng):
    c = int(rng.integers(1, 6))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    dh, dw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if (dh, dw) == (1, 1):
        dh = 2
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    pt, pl, pb, pr = (int(v) for v in rng.integers(0, 3, 4))
    h = int(rng.integers(max(1, dh * (kh - 1) + 1 - pt - pb), 14))
    w = int(rng.integers(max(1, dw * (kw - 1) + 1 - pl - pr), 14))
    return c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr


@pytest.mark.parametrize("cores", CORES)
def test_im2col_col2im_dilated(lib, cores):
    rng = np.random.default_rng(100 + cores)
    for _ in range(25):
        c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _conv_case(rng)
        ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        tag = f"c{c} {h}x{w} k{kh}x{kw} s{sh},{sw} d{dh},{dw} pad{pt},{pl},{pb},{pr}"
        x = rnd(lib, rng, c, h, w)
        col = np.full((c * kh * kw, ho * wo), 7, dtype=lib.dtype)   # every entry must be written
        geom = (c, h, w, kh, kw, sh, sw, pt, pl, ho, wo)
        lib.run("im2col_dilated", native.Im2colArgs(ptr(x), ptr(col), *geom, dh, dw), cores)
        xp = F.pad(t64(x)[None], (pl, pr, pt, pb))
        ref = F.unfold(xp, (kh, kw), dilation=(dh, dw), stride=(sh, sw))[0].numpy()
        np.testing.assert_array_equal(col, ref.astype(lib.dtype), err_msg=f"im2col_dilated {tag}")
        dcol = rnd(lib, rng, c * kh * kw, ho * wo)
        ref = F.fold(t64(dcol)[None], (h + pt + pb, w + pl + pr), (kh, kw), dilation=(dh, dw),
                     stride=(sh, sw))[0, :, pt:pt + h, pl:pl + w].numpy()
        for acc in (0, 1):
            dx0 = rnd(lib, rng, c, h, w)
            dx = dx0.copy()
            lib.run("col2im_dilated", native.Col2imArgs(ptr(dcol), ptr(dx), *geom, acc, dh, dw), cores)
            check(lib, dx, ref + acc * dx0.astype(np.float64), f"col2im_dilated acc={acc} {tag}")


# ---------------- adaptive average pooling ----------------
@pytest.mark.parametrize("cores", CORES)
def test_adaptive_avgpool(lib, cores):
    rng = np.random.default_rng(200 + cores)
    for _ in range(20):
        n, c = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        ho, wo = int(rng.integers(1, h + 3)), int(rng.integers(1, w + 3))   # up- and down-sizing, overlaps
        x = rnd(lib, rng, n, c, h, w)
        xt = t64(x, True)
        yt = F.adaptive_avg_pool2d(xt, (ho, wo))
        y = np.empty((n, c, ho, wo), lib.dtype)
        lib.run("adaptive_avgpool_fwd", AdaptiveFwdArgs(ptr(x), ptr(y), n, c, h, w, ho, wo), cores)
        tag = f"{n},{c},{h}x{w}->{ho}x{wo}"
        check(lib, y, yt.detach().numpy(), f"adaptive_fwd {tag}")
        dy = rnd(lib, rng, n, c, ho, wo)
        yt.backward(t64(dy))
        for acc in (0, 1):
            dx0 = rnd(lib, rng, n, c, h, w)
            dx = dx0.copy()
            lib.run("adaptive_avgpool_bwd", AdaptiveBwdArgs(ptr(dy), ptr(dx), n, c, h, w, ho, wo, acc), cores)
            check(lib, dx, xt.grad.numpy() + acc * dx0.astype(np.float64), f"adaptive_bwd acc={acc} {tag}")


# ---------------- ceil_mode pooling (PyTorch's output size and divisor) ----------------
@pytest.mark.parametrize("cores", CORES)
def test_pool_ceil_mode(lib, cores):
    rng = np.random.default_rng(300 + cores)
    done = 0
    while done < 20:
        n, c = int(rng.integers(1, 3)), int(rng.integers(1, 5))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        h, w = int(rng.integers(kh, 12)), int(rng.integers(kw, 12))
        x = rnd(lib, rng, n, c, h, w)
        cip = bool(rng.integers(0, 2))
        xt = t64(x, True)
        yt = F.avg_pool2d(xt, (kh, kw), (sh, sw), (ph, pw), ceil_mode=True, count_include_pad=cip)
        ho, wo = yt.shape[2:]
        geom = (n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo)
        tag = f"{n},{c},{h}x{w} k{kh}x{kw} s{sh},{sw} p{ph},{pw} cip={cip}"
        y = np.empty((n, c, ho, wo), lib.dtype)
        lib.run("avgpool_fwd", native.AvgpoolFwdArgs(ptr(x), ptr(y), *geom, int(cip)), cores)
        check(lib, y, yt.detach().numpy(), f"avgpool_ceil_fwd {tag}")
        dy = rnd(lib, rng, n, c, ho, wo)
        yt.backward(t64(dy))
        dx = np.empty_like(x)
        lib.run("avgpool_bwd", native.AvgpoolBwdArgs(ptr(dy), ptr(dx), *geom, int(cip), 0), cores)
        check(lib, dx, xt.grad.numpy(), f"avgpool_ceil_bwd {tag}")
        # max pooling: the last window may pass the padding; values and the scattered gradient are exact
        xt = t64(x, True)
        yt = F.max_pool2d(xt, (kh, kw), (sh, sw), (ph, pw), ceil_mode=True)
        y, am = np.empty((n, c, ho, wo), lib.dtype), np.empty((n, c, ho, wo), np.int32)
        lib.run("maxpool_fwd", native.MaxpoolFwdArgs(ptr(x), ptr(y), ptr(am), *geom), cores)
        np.testing.assert_array_equal(y, yt.detach().numpy().astype(lib.dtype), err_msg=f"maxpool_ceil {tag}")
        yt.backward(t64(dy))
        dx = lib.maxpool_bwd(dy, am, (n, c, h, w), cores=cores)
        check(lib, dx, xt.grad.numpy(), f"maxpool_ceil_bwd {tag}")
        done += 1


# ---------------- LayerNorm / GroupNorm / InstanceNorm ----------------
def _norm_cases(rng):
    """(what, x shape, torch function of (x, w, b), (rows, m, g, s), affine shape)"""
    for _ in range(6):
        n, c = int(rng.integers(1, 4)), int(rng.integers(1, 7))
        h, w = int(rng.integers(1, 6)), int(rng.integers(1, 8))
        d = int(rng.integers(2, 9))
        yield ("layernorm last", (n, c, d), lambda x, g, b, d=d: F.layer_norm(x, (d,), g, b),
               (n * c, d, 1, 1), (d,))
        yield ("layernorm chw", (n, c, h, w), lambda x, g, b, s=(c, h, w): F.layer_norm(x, s, g, b),
               (n, c * h * w, 1, 1), (c, h, w))
        groups = [v for v in range(1, c + 1) if c % v == 0][int(rng.integers(0, 10)) % len(
            [v for v in range(1, c + 1) if c % v == 0])]
        yield ("groupnorm", (n, c, h, w), lambda x, g, b, G=groups: F.group_norm(x, G, g, b),
               (n * groups, c // groups * h * w, groups, h * w), (c,))
        if h * w > 1:
            yield ("instancenorm", (n, c, h, w), lambda x, g, b: F.instance_norm(x, weight=g, bias=b),
                   (n * c, h * w, c, h * w), (c,))


def _norm_fwd(lib, x, gamma, beta, rows, m, g, s, chunks, cores):
    y = np.empty_like(x)
    mean, rstd = np.empty(rows, np.float32), np.empty(rows, np.float32)
    part = np.full(2 * rows * chunks, np.nan, np.float32)
    args = NormFwdArgs(ptr(x), ptr(y), ptr(gamma), ptr(beta), ptr(mean), ptr(rstd), ptr(part), rows, m, g, s,
                       chunks, 1e-5)
    lib.run("norm_stats", args, cores)
    lib.run("norm_fwd", args, cores)
    return y, mean, rstd


def _norm_bwd(lib, x, dy, dx, gamma, mean, rstd, rows, m, g, s, chunks, acc, cores):
    part = np.full(2 * rows * chunks, np.nan, np.float32)
    args = NormBwdArgs(ptr(x), ptr(dy), ptr(dx), ptr(gamma), ptr(mean), ptr(rstd), None, None, ptr(part),
                       rows, m, g, s, chunks, acc, 0)
    lib.run("norm_bwd_stats", args, cores)
    lib.run("norm_bwd", args, cores)


@pytest.mark.parametrize("cores", CORES)
def test_norms(lib, cores):
    rng = np.random.default_rng(400 + cores)
    tdt = torch.float32 if lib.precision == "fp32" else torch.float16
    for what, shape, fn, (rows, m, g, s), ashape in _norm_cases(rng):
        for affine in (True, False):
            chunks = int(rng.integers(1, min(m, 7) + 1))   # rows cut into element ranges (few-row layers)
            x = rnd(lib, rng, *shape, scale=2.0, offset=1.0)
            gamma = rnd(lib, rng, *ashape, offset=1.0) if affine else None
            beta = rnd(lib, rng, *ashape) if affine else None
            dy = rnd(lib, rng, *shape)

            def run_torch(dtype):
                def mk(a):
                    return None if a is None else torch.tensor(np.asarray(a, np.float64), dtype=dtype,
                                                               requires_grad=True)
                xt, gt, bt = mk(x), mk(gamma), mk(beta)
                yt = fn(xt, gt, bt)
                yt.backward(torch.tensor(np.asarray(dy, np.float64), dtype=dtype))
                return [None if a is None else a.detach().double().numpy()
                        for a in (yt, xt.grad, gt.grad if gt is not None else None,
                                  bt.grad if bt is not None else None)]
            ref, own = run_torch(torch.float64), run_torch(tdt)
            tol = [None if r is None else max(TOL[lib.precision], 4 * rel_l2(o, r)) for o, r in zip(own, ref)]
            y, mean, rstd = _norm_fwd(lib, x, gamma, beta, rows, m, g, s, chunks, cores)
            tag = f"{what} {shape} affine={affine} chunks={chunks}"
            check(lib, y, ref[0], f"norm_fwd {tag}", tol[0])
            if affine:
                dg, db = np.empty_like(gamma), np.empty_like(beta)
                lib.run("norm_wgrad", NormBwdArgs(ptr(x), ptr(dy), None, ptr(gamma), ptr(mean), ptr(rstd), ptr(dg),
                                                  ptr(db), None, rows, m, g, s, chunks, 0, 0), cores)
                check(lib, dg, ref[2], f"norm_dgamma {tag}", tol[2])
                check(lib, db, ref[3], f"norm_dbeta {tag}", tol[3])
                lib.run("norm_wgrad", NormBwdArgs(ptr(x), ptr(dy), None, ptr(gamma), ptr(mean), ptr(rstd), ptr(dg),
                                                  None, None, rows, m, g, s, chunks, 0, 1), cores)
                check(lib, dg, 2 * ref[2], f"norm_dgamma acc {tag}", tol[2])
            for acc in (0, 1):
                dx0 = rnd(lib, rng, *shape)
                dx = dx0.copy()
                _norm_bwd(lib, x, dy, dx, gamma, mean, rstd, rows, m, g, s, chunks, acc, cores)
                check(lib, dx, ref[1] + acc * dx0.astype(np.float64), f"norm_bwd acc={acc} {tag}", tol[1])
            # dx over dy (the lowering shares the buffer when it can)
            dyc = dy.copy()
            _norm_bwd(lib, x, dyc, dyc, gamma, mean, rstd, rows, m, g, s, chunks, 0, cores)
            check(lib, dyc, ref[1], f"norm_bwd inplace {tag}", tol[1])


# ---------------- upsampling ----------------
def _up_cases(rng):
    # more than 32 outputs read one input row / column (the backward's weight caches overflow)
    yield (1, 2, 1, 2), dict(size=(37, 70), mode="nearest")
    yield (1, 1, 2, 3), dict(size=(40, 90), mode="bilinear", align_corners=False)
    for _ in range(8):
        n, c = int(rng.integers(1, 3)), int(rng.integers(1, 5))
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        sf = float(rng.choice([0.5, 1.5, 2.0, 3.0, 1.0 / 3.0, 2.5]))
        size = (int(rng.integers(1, 14)), int(rng.integers(1, 14)))
        for mode in ("nearest", "bilinear"):
            aligns = (None,) if mode == "nearest" else (False, True)
            for align in aligns:
                yield (n, c, h, w), dict(scale_factor=sf, mode=mode, align_corners=align)
                yield (n, c, h, w), dict(size=size, mode=mode, align_corners=align)
        yield (n, c, w), dict(size=size[1], mode="linear", align_corners=bool(rng.integers(0, 2)))
        yield (n, c, w), dict(scale_factor=sf, mode="nearest")


@pytest.mark.parametrize("cores", CORES)
def test_upsample(lib, cores):
    rng = np.random.default_rng(500 + cores)
    for shape, kw in _up_cases(rng):
        if "scale_factor" in kw and min(int(d * kw["scale_factor"]) for d in shape[2:]) == 0:
            continue  # PyTorch refuses an empty output
        x = rnd(lib, rng, *shape)
        xt = t64(x, True)
        yt = F.interpolate(xt, **kw)
        a, _ = upsample_attrs("t", "interpolate", shape, tuple(yt.shape), kw.get("scale_factor"), kw["mode"],
                              kw.get("align_corners"), None)
        n, c = shape[:2]
        h, w = (1, shape[2]) if len(shape) == 3 else shape[2:]
        ho, wo = (1, yt.shape[2]) if len(shape) == 3 else yt.shape[2:]
        geom = (n, c, h, w, ho, wo, a["mode"], a["align_corners"], a["rh"], a["rw"])
        y = np.empty(tuple(yt.shape), lib.dtype)
        lib.run("upsample_fwd", UpsampleFwdArgs(ptr(x), ptr(y), *geom), cores)
        tag = f"{shape}->{tuple(yt.shape)} {kw}"
        if kw["mode"] == "nearest":
            np.testing.assert_array_equal(y, yt.detach().numpy().astype(lib.dtype), err_msg=f"upsample {tag}")
        else:
            check(lib, y, yt.detach().numpy(), f"upsample_fwd {tag}")
        dy = rnd(lib, rng, *yt.shape)
        yt.backward(t64(dy))
        for acc in (0, 1):
            dx0 = rnd(lib, rng, *shape)
            dx = dx0.copy()
            lib.run("upsample_bwd", UpsampleBwdArgs(ptr(dy), ptr(dx), *geom, acc), cores)
            check(lib, dx, xt.grad.numpy() + acc * dx0.astype(np.float64), f"upsample_bwd acc={acc} {tag}")
