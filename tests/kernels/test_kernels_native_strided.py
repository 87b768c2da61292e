"""Matmuls on sub-blocks of larger matrices (lda/ldb/ldc): what the row-chunked convolution lowering uses."""
import numpy as np
import pytest

from odl.run.native import MmArgs




def _ptr(a, row, col):
    return a.ctypes.data + (row * a.shape[1] + col) * a.itemsize


@pytest.mark.parametrize("form", ["nn", "nt", "tn"])
@pytest.mark.parametrize("cores", [1, 3, 8])
@pytest.mark.parametrize("m,n,k", [(5, 7, 3), (16, 36, 27), (1, 9, 2), (13, 10, 17)])
def test_strided_blocks(lib, form, cores, m, n, k):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    dt = lib.dtype
    # operands live inside wider matrices, at a column offset of 2
    if form == "nn":
        A = rng.standard_normal((m, k + 5)).astype(dt); B = rng.standard_normal((k, n + 3)).astype(dt)
        a, b = A[:, 2:2 + k], B[:, 2:2 + n]
        ref = a.astype(np.float64) @ b.astype(np.float64)
    elif form == "nt":
        A = rng.standard_normal((m, k + 5)).astype(dt); B = rng.standard_normal((n, k + 3)).astype(dt)
        a, b = A[:, 2:2 + k], B[:, 2:2 + k]
        ref = a.astype(np.float64) @ b.astype(np.float64).T
    else:
        A = rng.standard_normal((k, m + 5)).astype(dt); B = rng.standard_normal((k, n + 3)).astype(dt)
        a, b = A[:, 2:2 + m], B[:, 2:2 + n]
        ref = a.astype(np.float64).T @ b.astype(np.float64)
    C = rng.standard_normal((m, n + 4)).astype(dt)
    before = C.copy()
    args = MmArgs(_ptr(A, 0, 2), _ptr(B, 0, 2), _ptr(C, 0, 1), m, n, k, 1, A.shape[1], B.shape[1], C.shape[1])
    lib.run(f"mm_{form}", args, cores)
    got = C[:, 1:1 + n].astype(np.float64)
    want = before[:, 1:1 + n].astype(np.float64) + ref
    tol = 1e-5 if dt == np.float32 else 1e-2
    assert np.linalg.norm(got - want) <= tol * np.linalg.norm(want)
    # nothing outside the block was touched
    assert np.array_equal(C[:, 0], before[:, 0]) and np.array_equal(C[:, 1 + n:], before[:, 1 + n:])
