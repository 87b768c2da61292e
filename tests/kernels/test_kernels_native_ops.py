"""The ResNet8 / DS-CNN kernels of kernels_c/ (batch norm, ReLU6, add/copy, pooling, dropout, MSE, SGD with
momentum, Adam, depthwise conv) built for the host, against PyTorch, in both precisions, on 1, 3 and 8 simulated
cores. FP32: relative L2 ~1e-5. FP16: relative L2 <= 1e-2 against an FP32/FP64 reference computed from the same
FP16-rounded inputs. Shapes are seeded, with odd / prime sizes, 1x1 spatial, stride 2 on odd inputs."""
import math

import numpy as np

from odl.lower.ops.dropout import hash32
import pytest
import torch
import torch.nn.functional as F

from helpers import check_close, f64, rel_l2, rnd
from odl.run import native

PRECISIONS = ["fp32", "fp16"]
CORES = [1, 3, 8]
TOL = {"fp32": 1e-5, "fp16": 1e-2}








def check(lib, dev, ref, what, tol=None):
    return check_close(lib, dev, ref, what, tol or TOL)


# ---------------- batch norm ----------------
BN_SHAPES = [(1, 1, 1, 1), (3, 5, 7, 3), (1, 13, 5, 5), (3, 64, 5, 5), (1, 64, 25, 5), (3, 13, 1, 1),
             (2, 5, 11, 13), (1, 3, 3, 1)]


def bn_torch(x, gamma, beta, rm, rv, dy, training, dtype):
    """PyTorch batch norm forward + backward at one dtype: (y, dx, dgamma, dbeta, running_mean, running_var)."""
    t = lambda a: torch.tensor(np.asarray(a, np.float64), dtype=dtype)  # noqa: E731
    xt, gt, bt = t(x).requires_grad_(), t(gamma).requires_grad_(), t(beta).requires_grad_()
    rmt, rvt = t(rm), t(rv)
    yt = F.batch_norm(xt, rmt, rvt, gt, bt, training=bool(training), momentum=0.1, eps=1e-5)
    yt.backward(t(dy))
    return [a.detach().double().numpy() for a in (yt, xt.grad, gt.grad, bt.grad, rmt, rvt)]


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("training", [1, 0])
def test_batchnorm(lib, cores, training):
    """Against float64 PyTorch. With tiny M = N*H*W (e.g. 2) the input gradient is a near-total cancellation
    (ill-conditioned): there the bound is relaxed to 4x PyTorch's own error at the same precision."""
    rng = np.random.default_rng(20 + cores + 10 * training)
    tdt = torch.float32 if lib.precision == "fp32" else torch.float16
    for n, c, h, w in BN_SHAPES:
        if training and n * h * w == 1:
            continue  # PyTorch refuses training statistics over one value
        x = rnd(lib, rng, n, c, h, w, scale=2.0, offset=1.5)
        gamma, beta = rnd(lib, rng, c), rnd(lib, rng, c)
        rm = rng.standard_normal(c).astype(np.float32)
        rv = (rng.random(c) + 0.5).astype(np.float32)
        dy = rnd(lib, rng, n, c, h, w)
        ref = bn_torch(x, gamma, beta, rm, rv, dy, training, torch.float64)
        own = bn_torch(x, gamma, beta, rm, rv, dy, training, tdt)
        tol = [max(TOL[lib.precision], 4 * rel_l2(o, r)) for o, r in zip(own, ref)]
        y, mean, rstd, rm2, rv2 = lib.bn_fwd(x, gamma, beta, rm, rv, training=bool(training), cores=cores)
        tag = f"{n},{c},{h},{w} train={training}"
        check(lib, y, ref[0], f"bn_fwd {tag}", tol[0])
        if training:
            # FP16: the squares (x - mean)^2 are FP16 products (summed in FP32): ~1e-4 on the variance
            stol = 1e-5 if lib.precision == "fp32" else 1e-3
            check(lib, rm2, ref[4], f"bn_running {tag}", tol=stol)
            check(lib, rv2, ref[5], f"bn_running {tag}", tol=stol)
        else:
            np.testing.assert_array_equal(rm2, rm)
        dx, dg, db = lib.bn_bwd(x, dy, mean, rstd, gamma, training=bool(training), cores=cores)
        check(lib, dx, ref[1], f"bn_bwd_dx {tag}", tol[1])
        check(lib, dg, ref[2], f"bn_bwd_dgamma {tag}", tol[2])
        check(lib, db, ref[3], f"bn_bwd_dbeta {tag}", tol[3])
        dx0 = rnd(lib, rng, n, c, h, w)
        dx, dg, db = lib.bn_bwd(x, dy, mean, rstd, gamma, training=bool(training), want_dgamma=False,
                                want_dbeta=False, out=dx0.copy(), accumulate=True, cores=cores)
        assert dg is None and db is None
        check(lib, dx, ref[1] + dx0.astype(np.float64), f"bn_bwd_dx acc {tag}", tol[1])
    # no affine parameters, no running stats
    x = rnd(lib, rng, 3, 5, 4, 3)
    y, mean, rstd, _, _ = lib.bn_fwd(x, training=True, cores=cores)
    check(lib, y, F.batch_norm(f64(x), None, None, training=True).numpy(), "bn_fwd noaffine")


# ---------------- relu6, add, copy ----------------
@pytest.mark.parametrize("cores", CORES)
def test_relu6_add_copy(lib, cores):
    rng = np.random.default_rng(30 + cores)
    for size in (1, 2, 3, 7, 17, 64, 127, 1001):
        x = rnd(lib, rng, size, scale=5.0)
        x[:3] = np.array([6.0, 0.0, -0.0][:size], dtype=lib.dtype)
        y = lib.relu6_fwd(x, cores=cores)
        np.testing.assert_array_equal(y, F.relu6(f64(x)).numpy().astype(lib.dtype))
        xt = f64(x).requires_grad_()
        dy = rnd(lib, rng, size)
        F.hardtanh(xt, 0.0, 6.0).backward(f64(dy))
        np.testing.assert_array_equal(lib.relu6_bwd(y, dy, cores=cores), xt.grad.numpy().astype(lib.dtype))
        dx0 = rnd(lib, rng, size)
        check(lib, lib.relu6_bwd(y, dy, out=dx0.copy(), accumulate=True, cores=cores),
              xt.grad.numpy() + dx0.astype(np.float64), "relu6_bwd acc")
        b = rnd(lib, rng, size)
        check(lib, lib.add(x, b, cores=cores), f64(x).numpy() + b.astype(np.float64), "add")
        np.testing.assert_array_equal(lib.copy(x, cores=cores), x)
        check(lib, lib.copy(x, out=b.copy(), accumulate=True, cores=cores), x.astype(np.float64) + b, "copy acc")


# ---------------- pooling ----------------
# (N, C, H, W, kernel, stride, padding)
POOL_CASES = [
    (1, 1, 1, 1, (1, 1), (1, 1), (0, 0)),
    (3, 5, 7, 7, (2, 2), (2, 2), (0, 0)),     # stride 2 on odd input
    (1, 13, 9, 11, (3, 3), (2, 2), (1, 1)),
    (3, 5, 8, 8, (3, 3), (1, 1), (1, 1)),
    (1, 64, 13, 5, (3, 2), (2, 1), (1, 0)),
    (3, 1, 5, 3, (2, 3), (1, 2), (1, 1)),
]
GLOBAL_CASES = [(1, 1, 1, 1), (3, 64, 25, 5), (1, 13, 8, 8), (3, 5, 7, 3), (1, 5, 1, 127)]


@pytest.mark.parametrize("cores", CORES)
def test_maxpool(lib, cores):
    rng = np.random.default_rng(40 + cores)
    for n, c, h, w, k, s, pad in POOL_CASES:
        x = rnd(lib, rng, n, c, h, w)
        xt = f64(x).requires_grad_()
        yt, it = F.max_pool2d(xt, k, s, pad, return_indices=True)
        y, am = lib.maxpool_fwd(x, k, s, pad, cores=cores)
        np.testing.assert_array_equal(y.astype(np.float64), yt.detach().numpy())
        np.testing.assert_array_equal(am, it.numpy())
        dy = rnd(lib, rng, *y.shape)
        yt.backward(f64(dy))
        check(lib, lib.maxpool_bwd(dy, am, x.shape, cores=cores), xt.grad.numpy(), f"maxpool_bwd {k}{s}{pad}")
        dx0 = rnd(lib, rng, *x.shape)
        got = lib.maxpool_bwd(dy, am, x.shape, out=dx0.copy(), accumulate=True, cores=cores)
        check(lib, got, xt.grad.numpy() + dx0.astype(np.float64), "maxpool_bwd acc")


@pytest.mark.parametrize("cores", CORES)
def test_avgpool(lib, cores):
    rng = np.random.default_rng(50 + cores)
    for n, c, h, w, k, s, pad in POOL_CASES:
        for cip in (True, False):
            x = rnd(lib, rng, n, c, h, w)
            xt = f64(x).requires_grad_()
            yt = F.avg_pool2d(xt, k, s, pad, count_include_pad=cip)
            y = lib.avgpool_fwd(x, k, s, pad, count_include_pad=cip, cores=cores)
            tag = f"{n},{c},{h},{w} {k}{s}{pad} cip={cip}"
            check(lib, y, yt.detach().numpy(), f"avgpool_fwd {tag}")
            dy = rnd(lib, rng, *y.shape)
            yt.backward(f64(dy))
            check(lib, lib.avgpool_bwd(dy, x.shape, k, s, pad, cip, cores=cores), xt.grad.numpy(),
                  f"avgpool_bwd {tag}")
            dx0 = rnd(lib, rng, *x.shape)
            got = lib.avgpool_bwd(dy, x.shape, k, s, pad, cip, out=dx0.copy(), accumulate=True, cores=cores)
            check(lib, got, xt.grad.numpy() + dx0.astype(np.float64), f"avgpool_bwd acc {tag}")
    for n, c, h, w in GLOBAL_CASES:
        x = rnd(lib, rng, n, c, h, w, offset=3.0)
        xt = f64(x).requires_grad_()
        yt = F.adaptive_avg_pool2d(xt, 1)
        y = lib.avgpool_fwd(x, (h, w), (1, 1), (0, 0), cores=cores)
        check(lib, y, yt.detach().numpy(), f"globalavg_fwd {n},{c},{h},{w}")
        dy = rnd(lib, rng, n, c, 1, 1)
        yt.backward(f64(dy))
        check(lib, lib.avgpool_bwd(dy, x.shape, (h, w), (1, 1), (0, 0), cores=cores), xt.grad.numpy(),
              "globalavg_bwd")
        dx0 = rnd(lib, rng, *x.shape)
        got = lib.avgpool_bwd(dy, x.shape, (h, w), (1, 1), (0, 0), out=dx0.copy(), accumulate=True, cores=cores)
        check(lib, got, xt.grad.numpy() + dx0.astype(np.float64), "globalavg_bwd acc")


# ---------------- dropout ----------------
def hash_np(seed, i):
    """odl_dropout_hash in numpy: the host-side reproduction the validator uses."""
    return hash32(seed, np.asarray(i))


@pytest.mark.parametrize("cores", CORES)
def test_dropout(lib, cores):
    rng = np.random.default_rng(60 + cores)
    for i in (0, 1, 7, 12345, 2**31 + 5):
        assert lib.dropout_hash(0xDEADBEEF, i) == int(hash_np(0xDEADBEEF, i))
    for size, p, seed in [(1, 0.5, 1), (17, 0.1, 2), (1001, 0.5, 3), (4096, 0.25, 0xFFFFFFFF), (64, 0.0, 9)]:
        x = rnd(lib, rng, size)
        y, mask = lib.dropout_fwd(x, p, seed, cores=cores)
        want = (hash_np(seed, np.arange(size)) >= np.uint32(lib.dropout_threshold(p))).astype(np.uint8)
        np.testing.assert_array_equal(mask, want)
        if size >= 1000:
            assert abs(mask.mean() - (1 - p)) < 0.05
        scale = 1.0 / (1.0 - p)
        check(lib, y, x.astype(np.float64) * want * scale, f"dropout_fwd p={p}")
        dy = rnd(lib, rng, size)
        check(lib, lib.dropout_bwd(dy, mask, p, cores=cores), dy.astype(np.float64) * want * scale, "dropout_bwd")
        dx0 = rnd(lib, rng, size)
        got = lib.dropout_bwd(dy, mask, p, out=dx0.copy(), accumulate=True, cores=cores)
        check(lib, got, dx0.astype(np.float64) + dy.astype(np.float64) * want * scale, "dropout_bwd acc")


# ---------------- MSE ----------------
@pytest.mark.parametrize("cores", CORES)
def test_mse(lib, cores):
    rng = np.random.default_rng(70 + cores)
    for shape in [(1,), (3, 5), (1, 13), (3, 64), (7, 11, 13)]:
        a, b = rnd(lib, rng, *shape), rnd(lib, rng, *shape)
        at = f64(a).requires_grad_()
        lt = F.mse_loss(at, f64(b))
        lt.backward()
        loss, d = lib.mse(a, b, cores=cores)
        assert abs(loss - lt.item()) <= 1e-5 * max(1.0, lt.item()), (loss, lt.item())
        check(lib, d, at.grad.numpy(), f"mse_grad {shape}")


# ---------------- optimizers ----------------
def sizes_for(rng):
    return [1, 5, 13, 64, int(rng.integers(100, 2000))]


@pytest.mark.parametrize("cores", CORES)
def test_sgd_momentum(lib, cores):
    rng = np.random.default_rng(80 + cores)
    tol = 1e-6 if lib.precision == "fp32" else 2e-3
    for size in sizes_for(rng):
        for mom, wd in [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4), (0.0, 1e-2)]:
            w = rnd(lib, rng, size)
            wt = torch.nn.Parameter(f64(w).clone())
            opt = torch.optim.SGD([wt], lr=0.05, momentum=mom, weight_decay=wd)
            buf = np.zeros(size, np.float32) if mom else None
            for step in range(2):
                g = rnd(lib, rng, size)
                wt.grad = f64(g).clone()
                opt.step()
                # the device works on its own (rounded) weights; the reference continues from the same values
                w, buf = lib.sgd_momentum(w, g, buf, 0.05, mom, wd, first=step == 0, cores=cores)
                check(lib, w, wt.detach().numpy(), f"sgd_momentum m={mom} wd={wd}", tol=tol)
                with torch.no_grad():
                    wt.copy_(f64(w))


@pytest.mark.parametrize("cores", CORES)
def test_adam(lib, cores):
    rng = np.random.default_rng(90 + cores)
    tol = 1e-6 if lib.precision == "fp32" else 2e-3
    for size in sizes_for(rng):
        for wd in (0.0, 1e-2):
            w = rnd(lib, rng, size)
            wt = torch.nn.Parameter(f64(w).clone())
            opt = torch.optim.Adam([wt], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
            m = np.zeros(size, np.float32)
            v = np.zeros(size, np.float32)
            for step in (1, 2):
                g = rnd(lib, rng, size)
                wt.grad = f64(g).clone()
                opt.step()
                w, m, v = lib.adam(w, g, m, v, 1e-2, 0.9, 0.999, 1e-8, wd, step, cores=cores)
                check(lib, w, wt.detach().numpy(), f"adam wd={wd}", tol=tol)
                st = opt.state[wt]
                # the state is FP32 and 1 - b2 is formed from b2 = 0.999f (1.3e-5 off 0.001)
                check(lib, m, st["exp_avg"].numpy(), "adam_m", tol=3e-5)
                check(lib, v, st["exp_avg_sq"].numpy(), "adam_v", tol=3e-5)
                with torch.no_grad():
                    wt.copy_(f64(w))
    for x in (0.0, 1e-30, 2.0, 12345.678):
        assert lib.sqrtf(x) == pytest.approx(math.sqrt(x), rel=1e-7)


# ---------------- depthwise conv ----------------
# (C, H, W, KH, KW, stride, padding (top, left, bottom, right))
DW_CASES = [
    (64, 25, 5, 3, 3, (1, 1), (1, 1, 1, 1)),    # DS-CNN
    (13, 7, 9, 3, 3, (1, 1), (1, 1, 1, 1)),
    (5, 8, 6, 3, 3, (1, 1), (0, 0, 0, 0)),
    (1, 1, 1, 3, 3, (1, 1), (1, 1, 1, 1)),      # 1x1 spatial
    (5, 2, 2, 3, 3, (1, 1), (1, 1, 1, 1)),
    (3, 11, 13, 3, 3, (2, 2), (1, 1, 1, 1)),    # stride 2 on odd input
    (13, 9, 7, 5, 5, (1, 1), (2, 2, 2, 2)),
    (5, 10, 11, 3, 3, (1, 1), (2, 0, 1, 2)),    # asymmetric padding
    (64, 5, 3, 3, 3, (1, 1), (1, 1, 1, 1)),
    (1, 6, 7, 3, 1, (1, 1), (1, 0, 1, 0)),
    (5, 4, 17, 3, 3, (1, 1), (2, 2, 0, 0)),
    (13, 5, 4, 3, 3, (1, 1), (0, 1, 0, 2)),
]


def dw_ref(x, w, stride, pad):
    """y, and dx / dw for a given dy, by PyTorch (float64) with groups = C."""
    pt, pl, pb, pr = pad
    xt = f64(x)[None].requires_grad_()
    wt = f64(w)[:, None].requires_grad_()
    y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, stride=stride, groups=x.shape[0])
    return xt, wt, y


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"s{c[5][0]}p{''.join(map(str, c[6]))}")
def test_dwconv(lib, case, cores):
    c, h, w, kh, kw, stride, pad = case
    rng = np.random.default_rng(100 + cores + c * h)
    x = rnd(lib, rng, c, h, w)
    k = rnd(lib, rng, c, kh, kw, scale=0.5)
    xt, wt, yt = dw_ref(x, k, stride, pad)
    y = lib.dwconv_fwd(x, k, stride, pad, cores=cores)
    assert y.shape == yt.shape[1:]
    check(lib, y, yt[0].detach().numpy(), f"dwconv_fwd {case}")
    dy = rnd(lib, rng, *y.shape)
    yt.backward(f64(dy)[None])
    dw = lib.dwconv_wgrad(x, dy, (kh, kw), stride, pad, cores=cores)
    check(lib, dw, wt.grad[:, 0].numpy(), f"dwconv_wgrad {case}")
    dw0 = rnd(lib, rng, c, kh, kw)
    dw = lib.dwconv_wgrad(x, dy, (kh, kw), stride, pad, out=dw0.copy(), accumulate=True, cores=cores)
    check(lib, dw, wt.grad[:, 0].numpy() + dw0.astype(np.float64), f"dwconv_wgrad acc {case}")
    dx = lib.dwconv_igrad(dy, k, x.shape, stride, pad, cores=cores)
    check(lib, dx, xt.grad[0].numpy(), f"dwconv_igrad {case}")
    dx0 = rnd(lib, rng, c, h, w)
    dx = lib.dwconv_igrad(dy, k, x.shape, stride, pad, out=dx0.copy(), accumulate=True, cores=cores)
    check(lib, dx, xt.grad[0].numpy() + dx0.astype(np.float64), f"dwconv_igrad acc {case}")


@pytest.mark.parametrize("prec", ["fp16", "fp32"])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"s{c[5][0]}p{''.join(map(str, c[6]))}")
def test_dwconv_bias_rounds_once(prec, case):
    """The bias starts the depthwise forward's FP32 sums: each output is the exact conv + bias rounded once (within
    half an ulp, plus the FP32 sum's own error), as PyTorch's FP16 rounds it; a bias added after a rounded conv
    is up to an ulp off."""
    lib = native.load(prec)
    c, h, w, kh, kw, stride, pad = case
    rng = np.random.default_rng(3 + c * h)
    x = rnd(lib, rng, c, h, w)
    k = rnd(lib, rng, c, kh, kw, scale=0.5)
    b = rnd(lib, rng, c)
    _, _, yt = dw_ref(x, k, stride, pad)
    want = yt[0].detach().numpy() + b.astype(np.float64)[:, None, None]
    mag = dw_ref(np.abs(x), np.abs(k), stride, pad)[2][0].detach().numpy() + np.abs(b.astype(np.float64))[:, None, None]
    for cores in (1, 3, 8):
        y = lib.dwconv_fwd(x, k, stride, pad, cores=cores, bias=b).astype(np.float64)
        ulp = np.spacing(np.abs(want).astype(lib.dtype)).astype(np.float64)
        tol = 0.5 * ulp * (1 + 2.0 ** -10) + 12 * 2.0 ** -24 * mag
        assert (np.abs(y - want) <= tol).all(), f"{prec} {case} cores={cores}: {np.abs(y - want).max()}"


@pytest.mark.parametrize("cores", [1, 8])
def test_dwconv_wgrad_long_fp16(cores):
    """A weight gradient over 64x64 positions with all-positive products stays accurate (FP32 accumulation)."""
    lib = native.load("fp16")
    rng = np.random.default_rng(7)
    x = np.abs(rnd(lib, rng, 3, 64, 64))
    dy = np.abs(rnd(lib, rng, 3, 64, 64))
    xt, wt, yt = dw_ref(x, np.zeros((3, 3, 3), np.float16), (1, 1), (1, 1, 1, 1))
    yt.backward(f64(dy)[None])
    check(lib, lib.dwconv_wgrad(x, dy, (3, 3), (1, 1), (1, 1), cores=cores), wt.grad[:, 0].numpy(),
          "dwconv_wgrad long", tol=3e-3)


@pytest.mark.parametrize("cores", CORES)
def test_sgd_proximal_term(lib, cores):
    """FedProx inside the SGD update: g + wd*w + mu*(w - center), with and without momentum, vs float64."""
    rng = np.random.default_rng(90 + cores)
    tol = 1e-6 if lib.precision == "fp32" else 2e-3
    for size in sizes_for(rng):
        for mom, wd in [(0.0, 0.0), (0.9, 5e-4)]:
            w = rnd(lib, rng, size)
            center = f64(w).clone()
            wt = torch.nn.Parameter(f64(w).clone())
            opt = torch.optim.SGD([wt], lr=0.05, momentum=mom, weight_decay=wd)
            buf = np.zeros(size, np.float32) if mom else None
            for step in range(3):
                g = rnd(lib, rng, size)
                wt.grad = f64(g).clone() + 0.3 * (wt.detach() - center)
                opt.step()
                w, buf = lib.sgd_momentum(w, g, buf, 0.05, mom, wd, first=step == 0, cores=cores,
                                          center=center.numpy(), mu=0.3)
                check(lib, w, wt.detach().numpy(), f"sgd prox m={mom} wd={wd}", tol=tol)
                with torch.no_grad():
                    wt.copy_(f64(w))


def _rounding_ratio(dev, ref):
    """The device's error against FP64 over the error of rounding the FP64 result to FP16 (1.0: one rounding per
    output, as PyTorch's FP16 kernels; a sum rounded at every term is ~1.3-2)."""
    ref = np.asarray(ref, np.float64)
    return rel_l2(dev, ref) / rel_l2(ref.astype(np.float16), ref)


@pytest.mark.parametrize("cores", [1, 8])
def test_fp16_one_rounding_per_output(cores):
    """FP16 depthwise conv (fast 3x3 path, strided and generic fallbacks; forward, input and weight gradients,
    also accumulating) and the batch-norm forward round each output once: their error against FP64 is that of
    FP16 rounding itself. MobileNet-VWW's batch-1 batch norms on 3x3 maps amplify any excess in the gradients."""
    lib = native.load("fp16")
    rng = np.random.default_rng(11 + cores)
    for c, h, w, k, stride, pad in [(8, 48, 48, 3, (1, 1), (1, 1, 1, 1)), (5, 13, 11, 3, (1, 1), (1, 1, 1, 1)),
                                    (6, 24, 24, 3, (2, 2), (1, 1, 1, 1)), (3, 9, 7, 5, (1, 1), (2, 2, 2, 2))]:
        x = rnd(lib, rng, c, h, w)
        kw_ = rnd(lib, rng, c, k, k, scale=0.5)
        xt, wt, yt = dw_ref(x, kw_, stride, pad)
        y = lib.dwconv_fwd(x, kw_, stride, pad, cores=cores)
        assert _rounding_ratio(y, yt[0].detach().numpy()) <= 1.1, ("fwd", c, h, w, stride)
        dy = rnd(lib, rng, *y.shape)
        yt.backward(f64(dy)[None])
        dw = lib.dwconv_wgrad(x, dy, (k, k), stride, pad, cores=cores)
        assert _rounding_ratio(dw, wt.grad[:, 0].numpy()) <= 1.1, ("wgrad", c, h, w, stride)
        dx = lib.dwconv_igrad(dy, kw_, x.shape, stride, pad, cores=cores)
        assert _rounding_ratio(dx, xt.grad[0].numpy()) <= 1.1, ("igrad", c, h, w, stride)
        dx0 = rnd(lib, rng, c, h, w)
        dx = lib.dwconv_igrad(dy, kw_, x.shape, stride, pad, out=dx0.copy(), accumulate=True, cores=cores)
        assert _rounding_ratio(dx, xt.grad[0].numpy() + dx0.astype(np.float64)) <= 1.1, ("igrad acc", c, h, w)
    for n, c, h, w in [(1, 16, 48, 48), (1, 13, 3, 3), (3, 5, 7, 9)]:
        x = rnd(lib, rng, n, c, h, w, scale=2.0, offset=1.5)
        gamma, beta = rnd(lib, rng, c), rnd(lib, rng, c)
        ref = bn_torch(x, gamma, beta, np.zeros(c), np.ones(c), np.zeros_like(x), True, torch.float64)
        y, _, _, _, _ = lib.bn_fwd(x, gamma, beta, np.zeros(c, np.float32), np.ones(c, np.float32), training=True,
                                   cores=cores)
        assert _rounding_ratio(y, ref[0]) <= 1.1, ("bn_fwd", n, c, h, w)
