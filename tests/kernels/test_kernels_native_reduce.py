"""Reductions that low precision can stand on (docs/validation.md, "Reductions"): sums that cancel to ~0 (a conv
bias gradient before a batch norm, whose per-sample partial sums are large and of opposite signs) come out of the
bias-gradient, batch-norm backward and global-average-pool kernels no noisier than PyTorch's own sums at the same
precision. A plain running FP32 sum over N*H*W elements is up to ~M ulps of the running total off; the kernels'
blocked, compensated sums (kernels_c/include/odl_simd.h) are not."""
import numpy as np
import pytest
import torch

from helpers import f64

CORES = [1, 3]


def cancelling(lib, rng, n, c, hw, noise=1e-3):
    """[n, c, hw] values whose sum over (n, hw) cancels: sample s carries the offset +-1 (+-0.5), which adds up to
    exactly 0 over the batch, plus small noise; rounded to the library's precision."""
    base = np.array([1.0, -1.0, 0.5, -0.5] * (n // 4), np.float64)[:, None, None]
    return (base + noise * rng.standard_normal((n, c, hw))).astype(lib.dtype)


def errors(lib, dev, values, dims):
    """(device's distance from the FP64 sum, PyTorch's distance at the library's precision, 1 ulp of the result)."""
    ref = f64(values).sum(dims)
    tdt = torch.float32 if lib.precision == "fp32" else torch.float16
    own = torch.from_numpy(values).to(tdt).sum(dims).double()
    ulp = float(np.finfo(lib.dtype).eps) * float(ref.norm())
    return float((f64(dev) - ref).norm()), float((own - ref).norm()), ulp


@pytest.mark.parametrize("cores", CORES)
def test_bias_grad_cancelling(lib, cores):
    rng = np.random.default_rng(3 + cores)
    dy = cancelling(lib, rng, 8, 5, 64 * 63 + 1)            # 4,033 elements a plane: blocks and an odd one
    db = lib.bias_grad(dy.reshape(8, 5, 63 * 64 + 1), cores=cores)
    dev, own, ulp = errors(lib, db, dy, (0, 2))
    assert dev <= 2 * own + ulp, (dev, own, ulp)


@pytest.mark.parametrize("cores", CORES)
def test_bn_bwd_sums_cancelling(lib, cores):
    """dbeta = sum dy per channel: the same cancellation inside the batch-norm backward."""
    rng = np.random.default_rng(7 + cores)
    dy = cancelling(lib, rng, 4, 3, 48 * 48)
    x = rng.standard_normal(dy.shape).astype(lib.dtype)
    mean, rstd = np.zeros(3, np.float32), np.ones(3, np.float32)
    _, _, db = lib.bn_bwd(x.reshape(4, 3, 48, 48), dy.reshape(4, 3, 48, 48), mean, rstd, training=False,
                          want_dx=False, cores=cores)
    dev, own, ulp = errors(lib, db, dy, (0, 2))
    assert dev <= 2 * own + ulp, (dev, own, ulp)


@pytest.mark.parametrize("cores", CORES)
def test_global_avgpool_cancelling(lib, cores):
    """A plane whose halves are +1 and -1 plus noise: its mean is ~0."""
    rng = np.random.default_rng(11 + cores)
    h = w = 64
    half = np.where(np.arange(h * w) < h * w // 2, 1.0, -1.0)
    x = (half + 1e-3 * rng.standard_normal((2, 3, h * w))).astype(lib.dtype)
    y = lib.avgpool_fwd(x.reshape(2, 3, h, w), (h, w), (h, w), cores=cores).reshape(2, 3)
    dev, own, ulp = errors(lib, y * (h * w), x, (2,))
    assert dev <= 2 * own + ulp * h * w * float(np.finfo(lib.dtype).eps) + ulp, (dev, own, ulp)
