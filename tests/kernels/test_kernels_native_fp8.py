"""FP8 storage kernels (kernels_c/fp8.c) against torch's float8 casts: unpack of all 256 codes of both formats,
pack of boundary and random values (bitwise the codes torch's .to(float8) gives for the same clamped FP32 value),
the amax each pack records, and the delayed-scaling rule of odl_fp8_scale against odl.common.precision.fp8_scale."""
import numpy as np
import pytest
import torch

from odl.common.precision import (E4M3, E5M2, FP8_AMAX_SLOTS, FP8_HISTORY, FP8_STATE_HEAD, fp8_cast,
                                  fp8_pushed_history, fp8_scale)

FORMATS = [E4M3, E5M2]
CORES = [1, 3, 8]


def torch_codes(v32: np.ndarray, scale: float, fmt) -> np.ndarray:
    """torch's codes of FP32 values divided by scale, clamped to the format's range (the reference's cast)."""
    t = (torch.from_numpy(v32.astype(np.float32)) / scale).clamp(-fmt.max, fmt.max)
    return t.to(fmt.torch_dtype).view(torch.uint8).numpy()


def same_codes(a: np.ndarray, b: np.ndarray, fmt) -> bool:
    """Equal codes, every NaN code of a sign counted as the same NaN."""
    def canon(c):
        v = torch.from_numpy(c.astype(np.uint8)).view(fmt.torch_dtype).float().numpy()
        return np.where(np.isnan(v), 0x7F | (c & 0x80), c)
    return bool(np.array_equal(canon(a), canon(b)))


def boundary_values(fmt) -> np.ndarray:
    """Every code's value, the midpoints between neighbours (ties: round to even) and their FP32 neighbours, values
    beyond the range, the subnormal range's edges, zeros, infinities and NaN, both signs."""
    codes = np.arange(256, dtype=np.uint8)
    vals = torch.from_numpy(codes).view(fmt.torch_dtype).float().numpy()
    pos = np.unique(vals[np.isfinite(vals) & (vals >= 0)])
    mids = (pos[:-1].astype(np.float64) + pos[1:]) / 2
    mids = mids.astype(np.float32)
    near = np.concatenate([np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(0))])
    tiny = pos[1] * np.array([0.25, 0.5, 0.75, 1e-3, 1e-30], np.float32)
    big = np.array([fmt.max * 1.01, fmt.max * 1.0625, 1e30, np.inf, np.nan], np.float32)
    v = np.concatenate([pos, mids, near, tiny, big, [0.0, 1e-45]]).astype(np.float32)
    return np.concatenate([v, -v])


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_unpack_all_codes(lib, fmt):
    codes = np.arange(256, dtype=np.uint8)
    for scale in (1.0, 2.0 ** -7, 2.0 ** 5):
        want = (torch.from_numpy(codes).view(fmt.torch_dtype).float() * scale).to(
            torch.float16 if lib.precision == "fp16" else torch.float32).float().numpy()
        got = lib.fp8_unpack(codes, scale, fmt.code, cores=3).astype(np.float32)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        assert np.array_equal(got[ok], want[ok]), (scale, np.nonzero(got[ok] != want[ok]))
        assert np.array_equal(np.signbit(got[ok]), np.signbit(want[ok]))


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("cores", CORES)
def test_pack_boundaries_bitwise(lib, fmt, cores):
    v = boundary_values(fmt)
    if lib.precision == "fp16":      # the kernel packs the compute type: FP16 values of the same points
        with np.errstate(over="ignore"):
            v = v.astype(np.float16)
    for scale in (1.0, 2.0 ** -3) if lib.precision == "fp16" else (1.0, 2.0 ** -3, 2.0 ** 6):
        q, _ = lib.fp8_pack(v, scale, fmt.code, cores=cores)
        # scaled copies of the values land on the same points relative to the format's grid
        want = torch_codes(v.astype(np.float32), scale, fmt)
        assert same_codes(q, want, fmt), (scale, v[q != want][:8], q[q != want][:8], want[q != want][:8])


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_pack_random_bitwise_and_amax(lib, fmt):
    rng = np.random.default_rng(5 + fmt.code)
    with np.errstate(over="ignore"):
        x = (rng.standard_normal(10007) * np.exp(rng.uniform(-12, 12, 10007))).astype(lib.dtype)
    x = x[np.isfinite(x)]
    scale = fp8_scale([float(np.abs(x.astype(np.float32)).max()) / 3], fmt)   # some values saturate
    for cores in CORES:
        q, amax = lib.fp8_pack(x, scale, fmt.code, cores=cores)
        assert same_codes(q, torch_codes(x.astype(np.float32), scale, fmt), fmt)
        assert amax == float(np.abs(x.astype(np.float32)).max())
    # pack then unpack is odl.common.precision.fp8_cast, the reference's cast
    back = lib.fp8_unpack(q, scale, fmt.code)
    want = fp8_cast(torch.from_numpy(x), scale, fmt).numpy()
    assert np.array_equal(back, want)


def test_pack_amax_keeps_larger_and_nan(lib):
    x = np.array([1.0, -3.0, 2.0], lib.dtype)
    assert lib.fp8_pack(x, 1.0, 0, amax=5.0, cores=2)[1] == 5.0
    assert lib.fp8_pack(x, 1.0, 0, amax=0.5, cores=2)[1] == 3.0
    assert np.isnan(lib.fp8_pack(np.array([1.0, np.nan], lib.dtype), 1.0, 0, cores=2)[1])


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_scale_rule(lib, fmt):
    rng = np.random.default_rng(11)
    count = 7
    state = np.zeros((count, FP8_STATE_HEAD + FP8_HISTORY), np.float32)
    hist = np.abs(rng.standard_normal((count, FP8_HISTORY)) * np.exp(rng.uniform(-30, 30, (count, 1))))
    hist[1] = 0.0                                      # nothing recorded: scale 1
    hist[2, 3] = np.inf                                # an overflowed step is skipped
    hist[3, :] = fmt.max * 2.0 ** np.arange(-8, 8)     # exact powers of two of the format's max
    hist[4, :] = 1e-38                                 # far below the scale range: clamped to 2^-64
    state[:, FP8_STATE_HEAD:] = hist.astype(np.float32)
    state[:, 1:FP8_STATE_HEAD] = np.abs(rng.standard_normal((count, FP8_AMAX_SLOTS))) * 100   # the cores' slots
    state[4, 1:FP8_STATE_HEAD] = 0.0
    state[5, 3] = fmt.max * 2.0 ** 70                  # beyond the range: clamped to 2^64
    state[6, 1:FP8_STATE_HEAD] = 0.0
    state[6, 2] = np.nan                               # a NaN amax: pushed, then skipped
    before = state.copy()
    lib.fp8_scale(state, FP8_HISTORY, fmt.code, cores=3)
    for t in range(count):
        h = fp8_pushed_history(before[t])
        want = np.nanmax(np.abs(before[t, 1:FP8_STATE_HEAD])) if t != 6 else np.nan
        assert np.array_equal(h[:1], [want], equal_nan=True) and np.array_equal(h[1:], before[t, FP8_STATE_HEAD:-1])
        assert np.array_equal(state[t, FP8_STATE_HEAD:], h, equal_nan=True)
        assert state[t, 0] == np.float32(fp8_scale(h, fmt)), (t, state[t, 0], fp8_scale(h, fmt))
        assert not state[t, 1:FP8_STATE_HEAD].any()
    assert state[4, 0] == 2.0 ** -64 and state[5, 0] == 2.0 ** 64


def test_pack_amax_slots_per_core(lib):
    """Each core folds its share's amax into its own slot (no two cores write one word); tiles add to them."""
    x = np.arange(1, 17, dtype=lib.dtype)
    slots = np.zeros(FP8_AMAX_SLOTS, np.float32)
    from odl.run.native import Fp8PackArgs
    q = np.empty(x.size, np.uint8)
    s = np.ones(1, np.float32)
    for lo, hi in ((0, 8), (8, 16)):               # two tiles of one tensor, 4 cores each
        part = np.ascontiguousarray(x[lo:hi])
        lib.run("fp8_pack", Fp8PackArgs(part.ctypes.data, q.ctypes.data, part.size, 0, s.ctypes.data,
                                        slots.ctypes.data), 4)
    assert list(slots[:4]) == [10, 12, 14, 16] and not slots[4:].any()
