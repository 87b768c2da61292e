"""Register-tiled matmuls (every row/vector leftover of the 8x3 / 4x4 tiles, grid splits), C stored transposed
(ct), and the transpose kernel, host-native vs numpy."""
import numpy as np
import pytest


def _close(got, want, dt):
    tol = 1e-5 if dt == np.float32 else 1e-2
    assert np.linalg.norm(got.astype(np.float64) - want) <= tol * np.linalg.norm(want) + 1e-6


@pytest.mark.parametrize("cores", [1, 3, 8])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 13, 5), (15, 11, 9), (16, 224, 16), (21, 30, 4), (64, 56, 3),
                                   (9, 125, 2), (144, 14, 16)])
@pytest.mark.parametrize("form", ["nn", "tn"])
def test_tiles(lib, form, cores, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    dt = lib.dtype
    b = rng.standard_normal((k, n)).astype(dt)
    if form == "nn":
        a = rng.standard_normal((m, k)).astype(dt)
        ref = a.astype(np.float64) @ b.astype(np.float64)
    else:
        a = rng.standard_normal((k, m)).astype(dt)
        ref = a.astype(np.float64).T @ b.astype(np.float64)
    c0 = rng.standard_normal((m, n)).astype(dt)
    c = getattr(lib, f"mm_{form}")(a, b, out=c0.copy(), accumulate=True, cores=cores)
    _close(c, ref + c0.astype(np.float64), dt)
    c = getattr(lib, f"mm_{form}")(a, b, cores=cores)
    _close(c, ref, dt)


@pytest.mark.parametrize("cores", [1, 3, 8])
@pytest.mark.parametrize("m,n,k", [(27, 16, 33), (13, 7, 5), (576, 64, 8), (64, 9, 125)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_nn_ct(lib, cores, m, n, k, accumulate):
    rng = np.random.default_rng(m + n + k)
    dt = lib.dtype
    a = rng.standard_normal((m, k)).astype(dt)
    b = rng.standard_normal((k, n)).astype(dt)
    ref = (a.astype(np.float64) @ b.astype(np.float64)).T
    c0 = rng.standard_normal((n, m)).astype(dt)
    c = lib.mm_nn_ct(a, b, out=c0.copy() if accumulate else None, accumulate=accumulate, cores=cores)
    _close(c, ref + (c0.astype(np.float64) if accumulate else 0), dt)


@pytest.mark.parametrize("cores", [1, 3, 8])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (16, 224), (64, 9)])
def test_transpose(lib, cores, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(lib.dtype)
    assert np.array_equal(lib.transpose(x, cores=cores), x.T)
