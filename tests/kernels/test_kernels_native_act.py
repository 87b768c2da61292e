"""The activation, reduction, concatenation, softmax and loss kernels (kernels_c/activation.c, reduce.c) built for
the host, against float64 PyTorch, in both precisions, on 1, 3 and 8 simulated cores, with seeded odd sizes.
FP32: rel-L2 <= 1e-5 (the transcendentals alone: a few ulp). FP16: rel-L2 <= 1e-3 against float64 from the same
FP16-rounded inputs (one rounding of an FP32 result, plus FP16 dy for the backward)."""
import ctypes
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import check_close, f64

CORES = [1, 3, 8]
TOL = {"fp32": 1e-5, "fp16": 1e-3}
_P, _I, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float

ACT = {  # op code (kernels_c/include/odl_kernels.h) -> (name, float64 torch function, alpha)
    0: ("sigmoid", torch.sigmoid, 0.0),
    1: ("tanh", torch.tanh, 0.0),
    2: ("leaky_relu", lambda x: F.leaky_relu(x, 0.13), 0.13),
    3: ("leaky_relu_neg", lambda x: F.leaky_relu(x, -0.7), -0.7),
    4: ("elu", lambda x: F.elu(x, 1.3), 1.3),
    5: ("hardswish", F.hardswish, 0.0),
    6: ("hardsigmoid", F.hardsigmoid, 0.0),
    7: ("silu", F.silu, 0.0),
    8: ("gelu", F.gelu, 0.0),
    9: ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), 0.0),
}
OPCODE = {0: 0, 1: 1, 2: 2, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8}


class ActArgs(ctypes.Structure):
    _fields_ = [("x", _P), ("y", _P), ("len", _I), ("op", _I), ("alpha", _F)]


class ActBwdArgs(ctypes.Structure):
    _fields_ = [("s", _P), ("dy", _P), ("dx", _P), ("len", _I), ("op", _I), ("alpha", _F), ("accumulate", _I)]


class SumArgs(ctypes.Structure):
    _fields_ = [("x", _P), ("y", _P), ("outer", _I), ("r", _I), ("inner", _I), ("scale", _F)]


class SumBwdArgs(ctypes.Structure):
    _fields_ = [("dy", _P), ("dx", _P), ("outer", _I), ("r", _I), ("inner", _I), ("scale", _F), ("accumulate", _I)]


class BlockCopyArgs(ctypes.Structure):
    _fields_ = [("src", _P), ("dst", _P), ("outer", _I), ("len", _I), ("src_stride", _I), ("dst_stride", _I),
                ("accumulate", _I)]


class SoftmaxArgs(ctypes.Structure):
    _fields_ = [("x", _P), ("y", _P), ("outer", _I), ("r", _I), ("inner", _I), ("log", _I)]


class SoftmaxBwdArgs(ctypes.Structure):
    _fields_ = [("y", _P), ("dy", _P), ("dx", _P), ("outer", _I), ("r", _I), ("inner", _I), ("log", _I),
                ("accumulate", _I)]


class NllArgs(ctypes.Structure):
    _fields_ = [("logp", _P), ("labels", _P), ("dlogp", _P), ("loss_out", _P), ("n", _I), ("c", _I)]


class BceArgs(ctypes.Structure):
    _fields_ = [("z", _P), ("target", _P), ("dz", _P), ("partial", _P), ("len", _I)]


class SumPartialsArgs(ctypes.Structure):
    _fields_ = [("partial", _P), ("out", _P), ("scale", _F)]


def ptr(a):
    return a.ctypes.data




def check(lib, dev, ref, what, tol=None):
    return check_close(lib, dev, ref, what, tol or TOL)


def act_inputs(lib, rng, size):
    """Normal values, a wide range (saturation, denormal outputs), and the branch points of every op."""
    x = rng.standard_normal(size) * 2.5
    x[: size // 4] *= 4.0
    special = np.array([0.0, -0.0, 3.0, -3.0, 1e-3, -1e-3, 9.5, -9.5, 20.0, -20.0, 1e-6, -1e-6])
    k = min(size, len(special))
    x[-k:] = special[:k]
    return x.astype(lib.dtype)


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("code", sorted(ACT), ids=lambda c: ACT[c][0])
def test_activation(lib, code, cores):
    name, fn, alpha = ACT[code]
    op = OPCODE[code]
    rng = np.random.default_rng(1000 + code * 10 + cores)
    for size in (1, 2, 7, 33, 1001, int(rng.integers(100, 3000))):
        x = act_inputs(lib, rng, size)
        xt = f64(x).requires_grad_()
        yt = fn(xt)
        y = np.empty_like(x)
        lib.run("act_fwd", ActArgs(ptr(x), ptr(y), size, op, alpha), cores)
        check(lib, y, yt.detach().numpy(), f"{name} fwd {size}")
        # elementwise too: no value is far off even where the norm is dominated by others
        ref = yt.detach().numpy()
        tol_elem = 2e-6 if lib.precision == "fp32" else 1e-3
        bad = np.abs(y.astype(np.float64) - ref) > tol_elem * np.maximum(np.abs(ref), 1e-2)
        assert not bad.any(), (name, x[bad][:5], y[bad][:5], ref[bad][:5])
        dy = rng.standard_normal(size).astype(lib.dtype)
        yt.backward(f64(dy))
        reads_out = bool(lib.lib.odl_act_bwd_reads_output(op))
        assert reads_out == (name in ("sigmoid", "tanh"))
        s = y if reads_out else x
        dx = np.empty_like(x)
        lib.run("act_bwd", ActBwdArgs(ptr(s), ptr(dy), ptr(dx), size, op, alpha, 0), cores)
        # the backward from the stored FP16 output carries that output's rounding (PyTorch FP16 does the same)
        check(lib, dx, xt.grad.numpy(), f"{name} bwd {size}", None if not reads_out else TOL[lib.precision] * 3)
        dx0 = rng.standard_normal(size).astype(lib.dtype)
        acc = dx0.copy()
        lib.run("act_bwd", ActBwdArgs(ptr(s), ptr(dy), ptr(acc), size, op, alpha, 1), cores)
        check(lib, acc, xt.grad.numpy() + dx0.astype(np.float64), f"{name} bwd acc {size}", TOL[lib.precision] * 3)
        # in place: y over x, dx over dy
        xi = x.copy()
        lib.run("act_fwd", ActArgs(ptr(xi), ptr(xi), size, op, alpha), cores)
        np.testing.assert_array_equal(xi, y)
        dyi = dy.copy()
        lib.run("act_bwd", ActBwdArgs(ptr(s), ptr(dyi), ptr(dyi), size, op, alpha, 0), cores)
        np.testing.assert_array_equal(dyi, dx)


def test_transcendentals():
    """odl_tanhf / odl_erff / odl_erfcf / odl_expm1f in FP32 against float64, relative error per value."""
    from odl.run import native
    lib = native.load("fp32").lib
    for fn in ("odl_tanhf", "odl_erff", "odl_erfcf", "odl_expm1f"):
        getattr(lib, fn).argtypes = [_F]
        getattr(lib, fn).restype = _F
    xs = np.concatenate([np.linspace(-12, 12, 4801), np.geomspace(1e-30, 1, 200), -np.geomspace(1e-30, 1, 200)])
    xs = xs.astype(np.float32).astype(np.float64)
    worst = {}
    for x in xs:
        for fn, ref in (("odl_tanhf", math.tanh), ("odl_erff", math.erf), ("odl_erfcf", math.erfc),
                        ("odl_expm1f", math.expm1)):
            r = ref(x)
            if fn == "odl_expm1f" and x > 88:
                continue
            if fn == "odl_erfcf" and r < 1e-37:
                continue  # below FP32's normal range
            got = getattr(lib, fn)(float(x))
            err = abs(got - r) / max(abs(r), 1e-38)
            worst[fn] = max(worst.get(fn, 0.0), err)
    print(worst)
    assert worst["odl_tanhf"] < 1e-6 and worst["odl_erff"] < 1e-6 and worst["odl_expm1f"] < 1e-6
    assert worst["odl_erfcf"] < 2e-5   # relative, in the far tail too (exp(-x^2) of a rounded x^2)
    assert math.isnan(lib.odl_tanhf(float("nan"))) and lib.odl_tanhf(float("inf")) == 1.0
    assert lib.odl_erff(float("-inf")) == -1.0


# (shape, dims) of sum/mean: the dims are one contiguous range
SUM_CASES = [((3, 5, 7, 3), (2, 3)), ((3, 5, 7, 3), (1,)), ((1, 13, 5), (0,)), ((7, 11), (1,)), ((7, 11), (0, 1)),
             ((2, 3, 4, 5), (1, 2)), ((1, 1), (1,)), ((5, 129), (-1,))]


@pytest.mark.parametrize("cores", CORES)
def test_sum_mean(lib, cores):
    rng = np.random.default_rng(200 + cores)
    for shape, dims in SUM_CASES:
        nd = len(shape)
        d = sorted(x % nd for x in dims)
        outer, r, inner = math.prod(shape[:d[0]]), math.prod(shape[d[0]:d[-1] + 1]), math.prod(shape[d[-1] + 1:])
        for mean in (False, True):
            x = (rng.standard_normal(shape) + 0.5).astype(lib.dtype)
            xt = f64(x).requires_grad_()
            yt = xt.mean(dim=tuple(dims)) if mean else xt.sum(dim=tuple(dims))
            scale = 1.0 / r if mean else 1.0
            y = np.empty(outer * inner, lib.dtype)
            lib.run("sum_fwd", SumArgs(ptr(x), ptr(y), outer, r, inner, scale), cores)
            check(lib, y, yt.detach().numpy().ravel(), f"sum {shape} {dims} mean={mean}")
            dy = rng.standard_normal(outer * inner).astype(lib.dtype)
            yt.backward(f64(dy).reshape(yt.shape))
            dx = np.empty_like(x)
            lib.run("sum_bwd", SumBwdArgs(ptr(dy), ptr(dx), outer, r, inner, scale, 0), cores)
            check(lib, dx, xt.grad.numpy(), f"sum_bwd {shape} {dims}")
            dx0 = rng.standard_normal(shape).astype(lib.dtype)
            acc = dx0.copy()
            lib.run("sum_bwd", SumBwdArgs(ptr(dy), ptr(acc), outer, r, inner, scale, 1), cores)
            check(lib, acc, xt.grad.numpy() + dx0, f"sum_bwd acc {shape} {dims}")


@pytest.mark.parametrize("cores", CORES)
def test_block_copy_cat(lib, cores):
    """torch.cat along every dim as block copies, and the gradient back as block copies (accumulating)."""
    rng = np.random.default_rng(300 + cores)
    for shapes, dim in [([(3, 5, 7), (3, 2, 7), (3, 1, 7)], 1), ([(2, 3), (5, 3)], 0), ([(3, 4, 5), (3, 4, 1)], 2),
                        ([(1, 13), (1, 7), (1, 1)], 1)]:
        xs = [rng.standard_normal(s).astype(lib.dtype) for s in shapes]
        ref = np.concatenate(xs, axis=dim)
        y = np.zeros(ref.shape, lib.dtype)
        outer, inner = math.prod(ref.shape[:dim]), math.prod(ref.shape[dim + 1:])
        off = 0
        for x in xs:
            n = x.shape[dim] * inner
            lib.run("block_copy", BlockCopyArgs(ptr(x), ptr(y) + off * inner * y.itemsize, outer, n, n,
                                                ref.shape[dim] * inner, 0), cores)
            off += x.shape[dim]
        np.testing.assert_array_equal(y, ref)
        off = 0
        for x in xs:
            n = x.shape[dim] * inner
            g0 = rng.standard_normal(x.shape).astype(lib.dtype)
            g = g0.copy()
            lib.run("block_copy", BlockCopyArgs(ptr(y) + off * inner * y.itemsize, ptr(g), outer, n,
                                                ref.shape[dim] * inner, n, 1), cores)
            check(lib, g, g0.astype(np.float64) + x, "block_copy acc")
            off += x.shape[dim]


@pytest.mark.parametrize("cores", CORES)
def test_softmax(lib, cores):
    rng = np.random.default_rng(400 + cores)
    for shape, dim in [((3, 10), 1), ((1, 1), 1), ((5, 129), -1), ((2, 7, 5), 1), ((3, 4, 5, 6), 2), ((4, 3), 0)]:
        nd = len(shape)
        d = dim % nd
        outer, r, inner = math.prod(shape[:d]), shape[d], math.prod(shape[d + 1:])
        for log in (0, 1):
            x = (rng.standard_normal(shape) * 4).astype(lib.dtype)
            xt = f64(x).requires_grad_()
            yt = F.log_softmax(xt, dim) if log else F.softmax(xt, dim)
            y = np.empty_like(x)
            lib.run("softmax_fwd", SoftmaxArgs(ptr(x), ptr(y), outer, r, inner, log), cores)
            check(lib, y, yt.detach().numpy(), f"softmax log={log} {shape}")
            dy = rng.standard_normal(shape).astype(lib.dtype)
            yt.backward(f64(dy))
            dx = np.empty_like(x)
            lib.run("softmax_bwd", SoftmaxBwdArgs(ptr(y), ptr(dy), ptr(dx), outer, r, inner, log, 0), cores)
            # from the stored (rounded) output, as PyTorch's backward does
            check(lib, dx, xt.grad.numpy(), f"softmax_bwd log={log} {shape}", TOL[lib.precision] * 3)
            dx0 = rng.standard_normal(shape).astype(lib.dtype)
            acc = dx0.copy()
            lib.run("softmax_bwd", SoftmaxBwdArgs(ptr(y), ptr(dy), ptr(acc), outer, r, inner, log, 1), cores)
            check(lib, acc, xt.grad.numpy() + dx0, f"softmax_bwd acc {shape}", TOL[lib.precision] * 3)


@pytest.mark.parametrize("cores", CORES)
def test_nll_bce(lib, cores):
    rng = np.random.default_rng(500 + cores)
    for n, c in [(1, 1), (3, 10), (7, 13), (2, 640)]:
        logp = F.log_softmax(torch.randn(n, c, generator=torch.Generator().manual_seed(n * c)), 1).numpy()
        logp = logp.astype(lib.dtype)
        labels = rng.integers(0, c, n).astype(np.int32)
        lt = f64(logp).requires_grad_()
        loss_t = F.nll_loss(lt, torch.from_numpy(labels).long())
        loss_t.backward()
        d = np.empty_like(logp)
        loss = np.zeros(1, np.float32)
        lib.run("nll", NllArgs(ptr(logp), ptr(labels), ptr(d), ptr(loss), n, c), cores)
        assert abs(loss[0] - loss_t.item()) <= 1e-6 * max(1.0, abs(loss_t.item()))
        check(lib, d, lt.grad.numpy(), "nll grad")
    for shape in [(1,), (3, 5), (8, 640), (2, 3, 7)]:
        z = (rng.standard_normal(shape) * 5).astype(lib.dtype)
        z.ravel()[:2] = np.array([40.0, -40.0])[: z.size]
        t = rng.random(shape).astype(lib.dtype)
        zt = f64(z).requires_grad_()
        loss_t = F.binary_cross_entropy_with_logits(zt, f64(t))
        loss_t.backward()
        d = np.empty_like(z)
        loss = np.zeros(1, np.float32)
        part = np.full(8, np.nan, np.float32)
        lib.run("bce_logits", BceArgs(ptr(z), ptr(t), ptr(d), ptr(part), z.size), cores)
        lib.run("sum_partials", SumPartialsArgs(ptr(part), ptr(loss), 1.0 / z.size), cores)
        assert abs(loss[0] - loss_t.item()) <= 2e-6 * max(1.0, abs(loss_t.item())), (loss[0], loss_t.item())
        check(lib, d, zt.grad.numpy(), f"bce grad {shape}")
