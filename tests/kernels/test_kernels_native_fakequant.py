"""The fake-quantization kernels (kernels_c/fakequant.c, --qat int8) built for the host against torch.ao.quantization:
in FP32 bit for bit (values, masks, observer state, scales and zero points), including ties (x / scale exactly
halfway between two codes), values at the clamp edges, all-zero and negative-only tensors, per tensor (quint8,
affine) and per channel (qint8, symmetric), on 1, 3 and 8 simulated cores and split into tiles (base, accumulate).
FP16: the kernels widen to FP32; their values against torch's on the same FP16 inputs within one FP16 rounding."""
import ctypes

import numpy as np
import pytest
import torch
from torch.ao.quantization import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

from odl.ir.kernel_structs import ctypes_struct
from odl.ir.kernels import FQ_PART

CORES = [1, 3, 8]
MinmaxArgs = ctypes_struct("odl_fq_minmax_args_t")
ObserveArgs = ctypes_struct("odl_fq_observe_args_t")
FwdArgs = ctypes_struct("odl_fq_fwd_args_t")
BwdArgs = ctypes_struct("odl_fq_bwd_args_t")
ACT = dict(qmin=0, qmax=255, symmetric=0)
WGT = dict(qmin=-128, qmax=127, symmetric=1)


def _p(a):
    return a.ctypes.data


def observe(lib, x, state, c, avg, q, cores, update=1, tiles=1):
    """odl_fq_minmax in `tiles` pieces as the tiler cuts it (c == 1: ranges of the tensor, accumulated; c > 1:
    ranges of channels, each with its partials) + odl_fq_observe; state: (min, max) arrays updated in place;
    returns (scale, zp)."""
    x = np.ascontiguousarray(x, lib.dtype).ravel()
    inner = x.size // c
    pc = 2 * FQ_PART
    part = np.zeros(pc * c, np.float32)
    bounds = np.linspace(0, inner if c == 1 else c, tiles + 1).astype(int)
    for t, (a0, a1) in enumerate(zip(bounds[:-1], bounds[1:])):
        if c == 1:
            piece = np.ascontiguousarray(x[a0:a1])
            lib.run("fq_minmax", MinmaxArgs(x=_p(piece), part=_p(part), c=1, inner=a1 - a0, accumulate=int(t > 0)),
                    cores)
            continue
        piece, pp = np.ascontiguousarray(x[a0 * inner:a1 * inner]), np.zeros(pc * (a1 - a0), np.float32)
        lib.run("fq_minmax", MinmaxArgs(x=_p(piece), part=_p(pp), c=a1 - a0, inner=inner, accumulate=0), cores)
        part[a0 * pc:a1 * pc] = pp
    scale, zp = np.zeros(c, np.float32), np.zeros(c, np.float32)
    lib.run("fq_observe", ObserveArgs(part=_p(part), run_min=_p(state[0]), run_max=_p(state[1]), scale=_p(scale),
                                      zp=_p(zp), c=c, avg=avg, update=update, **q), cores)
    return scale, zp


def fake_quant(lib, x, scale, zp, c, q, cores, tiles=1):
    x = np.ascontiguousarray(x, lib.dtype).ravel()
    y, mask = np.zeros_like(x), np.zeros(x.size, np.uint8)
    bounds = np.linspace(0, x.size, tiles + 1).astype(int)
    for a0, a1 in zip(bounds[:-1], bounds[1:]):
        xs, ys, ms = (np.ascontiguousarray(v[a0:a1]) for v in (x, y, mask))
        lib.run("fq_fwd", FwdArgs(x=_p(xs), y=_p(ys), mask=_p(ms), scale=_p(scale), zp=_p(zp), len=a1 - a0,
                                  inner=x.size // c, base=int(a0), qmin=q["qmin"], qmax=q["qmax"]), cores)
        y[a0:a1], mask[a0:a1] = ys, ms
    return y, mask.astype(bool)


def torch_act_observer(avg=0.01):
    return MovingAverageMinMaxObserver(averaging_constant=avg, dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                       quant_min=0, quant_max=255)


def torch_wgt_observer(avg=1.0):
    return MovingAveragePerChannelMinMaxObserver(averaging_constant=avg, ch_axis=0, dtype=torch.qint8,
                                                 qscheme=torch.per_channel_symmetric, quant_min=-128, quant_max=127)


def torch_cachemask(x, scale, zp, q, per_channel):
    """torch's fake quantization and its straight-through mask (the gradient of a sum of the output)."""
    t = torch.from_numpy(np.asarray(x, np.float32)).requires_grad_(True)
    if per_channel:
        y = torch.fake_quantize_per_channel_affine(t, torch.from_numpy(scale), torch.from_numpy(zp).int(), 0,
                                                   q["qmin"], q["qmax"])
    else:
        y = torch.fake_quantize_per_tensor_affine(t, float(scale[0]), int(zp[0]), q["qmin"], q["qmax"])
    y.sum().backward()
    return y.detach().numpy(), t.grad.numpy() != 0


def activations(rng):
    """Per-tensor cases: random, all zero, negative only, positive only, a single value."""
    return {"random": rng.standard_normal(3 * 7 * 11).astype(np.float32) * 2 + 0.3,
            "zeros": np.zeros(50, np.float32), "negative": -np.abs(rng.standard_normal(77)).astype(np.float32) - 0.1,
            "positive": np.abs(rng.standard_normal(64)).astype(np.float32), "one": np.full(9, 0.37, np.float32)}


@pytest.mark.parametrize("cores", CORES)
def test_act_observer_qparams_fp32(cores):
    from odl.run import native
    lib = native.load("fp32")
    rng = np.random.default_rng(cores)
    for name, x in activations(rng).items():
        obs = torch_act_observer()
        st = (np.full(1, np.inf, np.float32), np.full(1, -np.inf, np.float32))
        for step in range(3):           # the first step takes the batch's range, later ones the moving average
            xs = x * (1 + 0.5 * step) + 0.1 * step
            obs(torch.from_numpy(xs))
            ts, tz = obs.calculate_qparams()
            s, z = observe(lib, xs, st, 1, 0.01, ACT, cores, tiles=1 + step)
            assert st[0][0] == obs.min_val.item() and st[1][0] == obs.max_val.item(), (name, step)
            assert s[0] == ts.item() and z[0] == tz.item(), (name, step, s, z, ts, tz)


@pytest.mark.parametrize("cores", CORES)
def test_weight_observer_qparams_fp32(cores):
    from odl.run import native
    lib = native.load("fp32")
    rng = np.random.default_rng(10 + cores)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3
    w[1] = 0.0                                    # an all-zero channel
    w[2] = -np.abs(w[2])                          # negative only
    obs = torch_wgt_observer()
    st = (np.full(6, np.inf, np.float32), np.full(6, -np.inf, np.float32))
    for step in range(3):
        ws = w + 0.01 * step * rng.standard_normal(w.shape).astype(np.float32)
        obs(torch.from_numpy(ws))
        ts, tz = obs.calculate_qparams()
        s, z = observe(lib, ws, st, 6, 1.0, WGT, cores, tiles=1 + step)
        np.testing.assert_array_equal(st[0], obs.min_val.numpy())
        np.testing.assert_array_equal(st[1], obs.max_val.numpy())
        np.testing.assert_array_equal(s, ts.numpy())
        np.testing.assert_array_equal(z, tz.numpy().astype(np.float32))


def test_observe_without_update_and_unobserved():
    """update = 0 leaves the running range and gives its qparams; never observed: torch's scale 1, zero point 0."""
    from odl.run import native
    lib = native.load("fp32")
    st = (np.full(1, np.inf, np.float32), np.full(1, -np.inf, np.float32))
    s, z = observe(lib, np.ones(8, np.float32), st, 1, 0.01, ACT, 3, update=0)
    assert (s[0], z[0], st[0][0], st[1][0]) == (1.0, 0.0, np.inf, -np.inf)
    st = (np.full(1, -1.5, np.float32), np.full(1, 2.25, np.float32))
    s, z = observe(lib, np.full(8, 100.0, np.float32), st, 1, 0.01, ACT, 3, update=0)
    obs = torch_act_observer()
    obs.min_val.fill_(-1.5)
    obs.max_val.fill_(2.25)
    ts, tz = obs.calculate_qparams()
    assert (s[0], z[0], st[0][0], st[1][0]) == (ts.item(), tz.item(), -1.5, 2.25)


def ties_and_edges(scale, zp, qmin, qmax, rng, n=400):
    """Values whose x * (1/scale) is exactly halfway between two codes (ties), one ulp either side, at the clamp
    edges and beyond, zeros."""
    k = rng.integers(qmin - zp - 20, qmax - zp + 20, n).astype(np.float64)
    tie = ((k + 0.5) * np.float64(scale)).astype(np.float32)
    edges = (np.array([qmin - zp, qmax - zp, qmin - zp - 0.5, qmax - zp + 0.5, qmax - zp + 0.49, qmin - zp - 0.51,
                       1e6, -1e6, 0.0]) * np.float64(scale)).astype(np.float32)
    return np.concatenate([tie, np.nextafter(tie, np.float32(np.inf)), np.nextafter(tie, np.float32(-np.inf)),
                           edges, rng.standard_normal(n).astype(np.float32) * 50 * scale])


@pytest.mark.parametrize("cores", CORES)
def test_fake_quant_per_tensor_bitwise(cores):
    from odl.run import native
    lib = native.load("fp32")
    rng = np.random.default_rng(20 + cores)
    for scale, zp in [(0.02, 0), (0.0173, 37), (1.0, 255), (0.5, 128), (3.1e-3, 200), (1.1920928955078125e-07, 0)]:
        s, z = np.array([scale], np.float32), np.array([zp], np.float32)
        x = ties_and_edges(float(s[0]), zp, 0, 255, rng)
        y, m = fake_quant(lib, x, s, z, 1, ACT, cores, tiles=3)
        ty, tm = torch_cachemask(x, s, z, ACT, False)
        np.testing.assert_array_equal(y.view(np.uint32), ty.view(np.uint32))
        np.testing.assert_array_equal(m, tm)


@pytest.mark.parametrize("cores", CORES)
def test_fake_quant_per_channel_bitwise(cores):
    from odl.run import native
    lib = native.load("fp32")
    rng = np.random.default_rng(30 + cores)
    scales = np.array([0.01, 0.0037, 1.0, 2.5e-5, 0.3], np.float32)
    zps = np.zeros(5, np.float32)
    x = np.stack([ties_and_edges(float(s), 0, -128, 127, rng, 60)[:300] for s in scales])
    y, m = fake_quant(lib, x, scales, zps, 5, WGT, cores, tiles=4)
    ty, tm = torch_cachemask(x, scales, zps, WGT, True)
    np.testing.assert_array_equal(y.view(np.uint32), ty.ravel().view(np.uint32))
    np.testing.assert_array_equal(m, tm.ravel())


@pytest.mark.parametrize("cores", CORES)
def test_observed_weights_bitwise(cores):
    """The whole weight path: observe then fake-quantize, as torch's FakeQuantize module with the per-channel
    observer; the largest weight of each channel maps to code 127.5 -> 128 (ties to even) and is clamped."""
    from odl.run import native
    from torch.ao.quantization import FakeQuantize
    lib = native.load("fp32")
    rng = np.random.default_rng(40 + cores)
    w = (rng.standard_normal((8, 4, 3, 3)) * 0.2).astype(np.float32)
    fq = FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                      dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0, averaging_constant=1.0)
    t = torch.from_numpy(w).requires_grad_(True)
    ty = fq(t)
    ty.sum().backward()
    st = (np.full(8, np.inf, np.float32), np.full(8, -np.inf, np.float32))
    s, z = observe(lib, w, st, 8, 1.0, WGT, cores)
    y, m = fake_quant(lib, w, s, z, 8, WGT, cores)
    np.testing.assert_array_equal(y.view(np.uint32), ty.detach().numpy().ravel().view(np.uint32))
    np.testing.assert_array_equal(m, t.grad.numpy().ravel() != 0)
    assert (~m).sum() >= 1


@pytest.mark.parametrize("cores", CORES)
def test_fake_quant_bwd(lib, cores):
    rng = np.random.default_rng(50 + cores)
    n = 301
    dy = rng.standard_normal(n).astype(lib.dtype)
    mask = (rng.random(n) > 0.3).astype(np.uint8)
    for acc in (0, 1):
        dx = rng.standard_normal(n).astype(lib.dtype)
        want = np.where(mask, dy + dx if acc else dy, dx if acc else 0).astype(lib.dtype)
        lib.run("fq_bwd", BwdArgs(dy=_p(dy), mask=_p(mask), dx=_p(dx), len=n, accumulate=acc), cores)
        np.testing.assert_array_equal(dx, want)


def test_fake_quant_fp16_values():
    """FP16 storage: the kernels compute in FP32 on the widened values; the result is torch's FP32 fake
    quantization of the same FP16 inputs, rounded once to FP16."""
    from odl.run import native
    lib = native.load("fp16")
    rng = np.random.default_rng(60)
    x = (rng.standard_normal(513) * 3).astype(np.float16)
    st = (np.full(1, np.inf, np.float32), np.full(1, -np.inf, np.float32))
    s, z = observe(lib, x, st, 1, 0.01, ACT, 3, tiles=2)
    obs = torch_act_observer()
    obs(torch.from_numpy(x.astype(np.float32)))
    ts, tz = obs.calculate_qparams()
    assert s[0] == ts.item() and z[0] == tz.item()
    y, m = fake_quant(lib, x, s, z, 1, ACT, 3)
    ty, tm = torch_cachemask(x.astype(np.float32), s, z, ACT, False)
    np.testing.assert_array_equal(y, ty.astype(np.float16))
    np.testing.assert_array_equal(m, tm)
