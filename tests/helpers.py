"""What the tests share: paths, the QEMU skip mark, the comparison helpers of the kernel tests and the check of a
validation report. conftest.py holds only fixtures; tests import these from here."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "models"

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-riscv32") is None,
                                reason="qemu-system-riscv32 not installed (run scripts/setup.sh)")


def rel_l2(dev, ref) -> float:
    """||dev - ref|| / ||ref|| in float64 (the absolute error when ref is zero)."""
    dev = np.asarray(dev, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(dev - ref) / (den if den > 0 else 1.0))


def rnd(lib, rng, *shape, scale=1.0, offset=0.0):
    """Random inputs already rounded to the kernel library's precision (the reference uses the same values)."""
    return (rng.standard_normal(shape) * scale + offset).astype(lib.dtype)


def f64(x) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def check_close(lib, dev, ref, what, tol) -> float:
    """Assert rel-L2(dev, ref) <= tol[lib.precision] (or a float tol); returns the error."""
    err = rel_l2(dev, ref)
    limit = tol[lib.precision] if isinstance(tol, dict) else tol
    assert err <= limit, f"{what}: rel-L2 {err:.3g} > {limit:.3g} ({lib.precision})"
    return err


def check_report(rep: dict, kinds=()) -> set:
    """A validation report passed, with every failing tensor named in the message, and compared at least the
    tensor kinds given; returns {(name, kind)} of the compared tensors."""
    bad = [(t["name"], t["kind"], t["rel_l2"], t.get("cosine")) for t in rep["tensors"] if not t["passed"]]
    assert rep["passed"], (bad, rep["loss"], rep["steps"])
    assert rep["tensors"], "no tensor was compared"
    assert set(kinds) <= {t["kind"] for t in rep["tensors"]}
    return {(t["name"], t["kind"]) for t in rep["tensors"]}


def free_port() -> int:
    """A local TCP port free now, for a QEMU that stands in for a board (it listens on its UART as a board's serial
    port would be opened by the host). Tests run one at a time, so no other runner takes it in between."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_pidfile(pidfile: Path) -> None:
    """Stop the daemonized QEMU that stands in for a board (its -pidfile), if it still runs."""
    import os
    import signal
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def im2col_ref(x, kh, kw, sh, sw, pt, pl, ho, wo):
    """im2col of one sample x [c, h, w] in numpy (padding: zeros; pt / pl may be negative: a chunk of rows),
    [c*kh*kw, ho*wo]: the reference of the tile pass's and the DMA's gathers."""
    c, h, w = x.shape
    col = np.zeros((c, kh, kw, ho, wo), x.dtype)
    for i in range(kh):
        for j in range(kw):
            for oh in range(ho):
                ih = oh * sh - pt + i
                if 0 <= ih < h:
                    for ow in range(wo):
                        iw = ow * sw - pl + j
                        if 0 <= iw < w:
                            col[:, i, j, oh, ow] = x[:, ih, iw]
    return col.reshape(c * kh * kw, ho * wo)
