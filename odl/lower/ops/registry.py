"""The op registry itself (what PyTorch construct becomes which odl op): op modules register here, the
package's __init__ imports them all, so no op module imports the package that imports it."""
from __future__ import annotations

_OPS: dict[str, object] = {}
MODULES: dict[type, tuple[str, object]] = {}     # nn.Module class -> (op name, converter)
FUNCTIONS: dict[object, tuple[str, object]] = {} # callable -> (op name, converter)
METHODS: dict[str, tuple[str, object]] = {}      # tensor method name -> (op name, converter)


def register(op):
    _OPS[op.name] = op
    return op


def get(name: str):
    return _OPS[name]


def supported() -> list[str]:
    return sorted(_OPS)


def backward_reads_output(node) -> bool:
    """Does the backward of `node` read the node's own output? Then nothing may write over that output."""
    return bool(getattr(_OPS[node.op], "backward_reads_output", False))
