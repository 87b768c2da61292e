"""Fixtures shared by the tests (helpers.py holds the functions and paths they share). Test folders by kind:
unit/ (host only, no build), kernels/ (the C kernels built for the host), device/ (firmware on QEMU: protocol, runners,
train, profile), models/ (networks and ops validated on QEMU against PyTorch; the model definitions live there too),
fuzz/ (libFuzzer on the device's protocol)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))     # `import helpers` from every test folder


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def lib(request):
    """The kernel library built for the host in one precision (odl.run.native), shared by the native kernel tests."""
    from odl.run import native
    return native.load(request.param)
