import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "models"

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-riscv32") is None,
                                reason="qemu-system-riscv32 not installed (run scripts/setup.sh)")
