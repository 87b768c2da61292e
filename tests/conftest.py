import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "models"

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-riscv32") is None,
                                reason="qemu-system-riscv32 not installed (run scripts/setup.sh)")


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def lib(request):
    """The kernel library built for the host in one precision (odl.run.native), shared by the native kernel tests."""
    from odl.run import native
    return native.load(request.param)


def rel_l2(dev, ref):
    dev = np.asarray(dev, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(dev - ref) / (den if den > 0 else 1.0))


def free_port() -> int:
    """A local TCP port free now, for a QEMU that stands in for a board (it listens on its UART as a board's serial
    port would be opened by the host). Tests run one at a time, so no other runner takes it in between."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
