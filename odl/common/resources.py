"""Where odl's non-Python files live: a source checkout (repo root) or an installed wheel (odl/_data)."""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent.parent   # the odl package (this file is odl/common/resources.py)
_NAMES = ("targets", "kernels_c", "templates", "qemu_plugins")


def resource_dir(name: str) -> Path:
    """Directory of a resource tree: "targets", "kernels_c", "templates" or "qemu_plugins"."""
    if name not in _NAMES:
        raise ValueError(f"unknown resource {name!r} (expected one of {', '.join(_NAMES)})")
    for cand in (_PKG / "_data" / name, _PKG.parent / name):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"odl resource directory {name!r} not found (looked in {_PKG / '_data'} and {_PKG.parent})")
