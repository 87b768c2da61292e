"""nn / tn matmuls element by element, host-native vs float64: every output element within one FP16 rounding of
the exact product of the stored inputs (FP32 accumulation, one rounding per output), strided operands
(lda / ldb / ldc larger than the logical row), C stored transposed (ct), accumulate, a bias per row of C (added in
FP32 before the rounding, whichever orientation the kernel runs in), and no write outside C.

The shapes cover the register-tile leftovers of the 7x4 (FP16) / 4x4 (FP32) tiles (leftover rows 1-6 and vectors 1-3
run as one smaller tile each), the tn C^T orientation
(M = 16 / 32: 7-row tiles fit N better), the odd last column (run as a 1-row C^T tile in tn), K remainders of the
k-unrolled loops (tn by 2, nn by 4), and the core grids of 1, 3 and 8 cores."""
import numpy as np
import pytest

from odl.run import native
from odl.run.native import MmArgs

SHAPES = [(1, 1, 1), (2, 3, 2), (7, 8, 5), (8, 9, 3), (13, 17, 6), (16, 224, 9), (16, 30, 17), (32, 14, 4),
          (29, 125, 7), (64, 125, 3), (144, 16, 11), (6, 15, 16), (15, 7, 1), (3, 129, 8), (12, 14, 5),
          (20, 22, 9), (10, 6, 3), (19, 13, 7), (9, 13, 130), (5, 7, 200)]   # K > 64: FP32 sums K in chunks
SENTINEL = 7.0


def _strided(rng, dt, rows, cols, pad):
    """(buffer, view): a rows x cols matrix inside a buffer whose rows are cols + pad long."""
    buf = np.full((rows, cols + pad), SENTINEL, dtype=dt)
    buf[:, :cols] = rng.standard_normal((rows, cols)).astype(dt)
    return buf


@pytest.mark.parametrize("cores", [1, 3, 8])
@pytest.mark.parametrize("form", ["nn", "tn"])
@pytest.mark.parametrize("ct", [0, 1])
def test_mm_elementwise(form, ct, cores):
    for prec in ("fp16", "fp32"):
        lib = native.load(prec)
        dt = lib.dtype
        eps = 2.0 ** -11 if prec == "fp16" else 2.0 ** -24
        rng = np.random.default_rng(cores * 10 + ct + (form == "tn") * 100)
        for m, n, k in SHAPES:
            pa, pb, pc = rng.integers(0, 3, size=3)
            a = _strided(rng, dt, m, k, pa) if form == "nn" else _strided(rng, dt, k, m, pa)
            b = _strided(rng, dt, k, n, pb)
            A = a[:, :k].astype(np.float64) if form == "nn" else a[:, :m].astype(np.float64).T
            B = b[:, :n].astype(np.float64)
            ref = A @ B
            mag = np.abs(A) @ np.abs(B)
            for acc, with_bias in ((0, 0), (1, 0), (0, 1), (1, 1)):
                crow, ccol = (n, m) if ct else (m, n)
                c = _strided(rng, dt, crow, ccol, pc)
                c0 = c[:, :ccol].astype(np.float64)
                c0 = c0.T if ct else c0
                bias = rng.standard_normal(m).astype(dt)
                want = ref + (c0 if acc else 0) + (bias.astype(np.float64)[:, None] if with_bias else 0)
                args = MmArgs(a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k, acc,
                              a.shape[1], b.shape[1], c.shape[1], ct, bias.ctypes.data if with_bias else None)
                lib.run(f"mm_{form}", args, cores)
                got = c[:, :ccol].astype(np.float64)
                got = got.T if ct else got
                # one rounding of the result (FP16 subnormals: absolute spacing 2^-24) + the FP32 sum's own error
                tol = 2 * eps * np.abs(want) + (k + 3) * 2.0 ** -23 * (mag + (np.abs(c0) if acc else 0) +
                                                              (np.abs(bias)[:, None] if with_bias else 0)) + \
                    (2.0 ** -24 if prec == "fp16" else 1e-30)
                bad = np.abs(got - want) > tol
                what = f"{prec} mm_{form} ct={ct} acc={acc} bias={with_bias} M={m} N={n} K={k} cores={cores}"
                assert not bad.any(), f"{what}: {bad.sum()} elements off, first at {np.argwhere(bad)[0]}"
                assert (c[:, ccol:] == SENTINEL).all(), f"{what}: wrote outside C"


@pytest.mark.parametrize("cores", [3, 8])
@pytest.mark.parametrize("form", ["nn", "tn"])
def test_mm_planned_grids(form, cores):
    """The `plan` argument (the core grid planned ahead, odl/ir/kernels.py mm_plan_field): every grid pr x (cores / pr)
    and, tn, both orientations give the same C as the kernel's own search, bit for bit (each output's sum over K
    runs in the same order whatever core computes it). A plan made for another core count, or whose pr does not
    divide the cores, is ignored (the kernel searches)."""
    from odl.ir.kernels import mm_plan_field
    for prec in ("fp16", "fp32"):
        lib = native.load(prec)
        dt = lib.dtype
        rng = np.random.default_rng(cores + (form == "tn") * 10)
        for m, n, k in SHAPES:
            for ct in (0, 1):
                a = rng.standard_normal((m, k) if form == "nn" else (k, m)).astype(dt)
                b = rng.standard_normal((k, n)).astype(dt)
                bias = rng.standard_normal(m).astype(dt)

                def run(plan):
                    c = np.full((n, m) if ct else (m, n), SENTINEL, dtype=dt)
                    lib.run(f"mm_{form}", MmArgs(a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k, 0, 0, 0, 0,
                                                 ct, bias.ctypes.data, plan), cores)
                    return c
                want = run(0)
                f = dict(m=m, n=n, k=k, accumulate=0, ct=ct)
                lanes = 2 if prec == "fp16" else 1
                plans = [pr | sw << 8 | cores << 16 for pr in range(1, cores + 1) if cores % pr == 0
                         for sw in ((0, 1) if form == "tn" else (0,))]
                plans += [mm_plan_field(f"odl_mm_{form}", f, cores, lanes), 1 | (cores + 1) << 16,
                          (cores + 1) | cores << 16]
                for plan in plans:
                    got = run(plan)
                    assert np.array_equal(got, want), \
                        f"{prec} mm_{form} ct={ct} M={m} N={n} K={k} cores={cores} plan={plan:#x}"


@pytest.mark.parametrize("form", ["nn", "tn", "nt"])
def test_mm_fp32_sums_k_in_chunks(form):
    """FP32 sums K in chunks of at most 64 terms (matmul.c MM_KB), as BLAS kernels block K: on a dot product of 4,096
    positive terms, where one running sum's rounding error grows with every term, the kernel's error is under a
    fifth of a single FP32 running sum's (emulated here term by term: exact product, one rounding per add)."""
    lib = native.load("fp32")
    rng = np.random.default_rng(5)
    m, n, k = 3, 2, 4096
    a = rng.uniform(0.5, 1.0, (m, k)).astype(np.float32)
    b = rng.uniform(0.5, 1.0, (k, n)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    run = np.zeros((m, n), np.float32)
    for t in range(k):
        run = (run.astype(np.float64) + np.outer(a[:, t], b[t]).astype(np.float64)).astype(np.float32)
    aa = np.ascontiguousarray(a if form != "tn" else a.T)
    bb = np.ascontiguousarray(b if form != "nt" else b.T)
    c = np.zeros((m, n), np.float32)
    lib.run(f"mm_{form}", MmArgs(aa.ctypes.data, bb.ctypes.data, c.ctypes.data, m, n, k, 0, 0, 0, 0, 0, None), 3)
    err_kernel = np.abs(c - exact).max()
    err_running = np.abs(run - exact).max()
    assert err_kernel < err_running / 5, (err_kernel, err_running)


@pytest.mark.parametrize("prec", ["fp16", "fp32"])
def test_mm_nt_column_bias(prec):
    """nt takes a bias per column of C (a linear layer's), added in FP32 before the single rounding: every output
    within half an ulp of the exact A B^T + bias, plus the FP32 sum's own error; accumulate adds C as well."""
    lib = native.load(prec)
    dt = lib.dtype
    rng = np.random.default_rng(11)
    for m, n, k in ((2, 10, 4096), (3, 7, 5), (13, 17, 130), (1, 1, 1)):
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((n, k)).astype(dt)
        bias = rng.standard_normal(n).astype(dt)
        exact = a.astype(np.float64) @ b.astype(np.float64).T + bias.astype(np.float64)
        mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)).T + np.abs(bias.astype(np.float64))
        for acc in (0, 1):
            c0 = rng.standard_normal((m, n)).astype(dt)
            c = c0.copy()
            want = exact + (c0.astype(np.float64) if acc else 0)
            lib.run("mm_nt", MmArgs(a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k, acc, 0, 0, 0, 0,
                                    bias.ctypes.data), 3)
            ulp = np.spacing(np.abs(want).astype(dt)).astype(np.float64)
            tol = 0.5 * ulp * (1 + 2.0 ** -10) + 2 * 2.0 ** -24 * (mag + (np.abs(c0) if acc else 0)) * (1 + k / 64 + 64)
            assert (np.abs(c.astype(np.float64) - want) <= tol).all(), (prec, m, n, k, acc)
