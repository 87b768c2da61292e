"""Op registry: how each supported PyTorch construct becomes an odl op, and how each op lowers.

An op module defines a class with `name`, `forward(node, L)` and `backward(node, L)` (L: odl.lower.lowering.Lowering),
and registers the PyTorch modules, functions and tensor methods it accepts with a converter
`convert(node_name, mod_or_fx_node, in_shapes, out_shape) -> (attrs, params)` that reads their settings into node
attributes (or refuses them with an OdlError that names the node). Module converters get the nn.Module, function
and method converters the torch.fx node (for its arguments). attrs['_op'] may redirect to another op.
"""
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


from odl.lower.ops import conv
from odl.lower.ops import linear
from odl.lower.ops import activation
from odl.lower.ops import shape
from odl.lower.ops import batchnorm
from odl.lower.ops import arith
from odl.lower.ops import pool
from odl.lower.ops import dropout
from odl.lower.ops import pad  # noqa: E402,F401  (registration side effects)
from odl.lower.ops import norm  # noqa: E402,F401  (LayerNorm, GroupNorm, InstanceNorm)
from odl.lower.ops import upsample  # noqa: E402,F401  (Upsample, F.interpolate)
from odl.lower.ops import smooth
from odl.lower.ops import reduce  # noqa: E402,F401  (activations; sum/mean, cat/stack, softmax, Identity)


def backward_reads_output(node) -> bool:
    """Does the backward of `node` read the node's own output? Then nothing may write over that output."""
    return bool(getattr(_OPS[node.op], "backward_reads_output", False))
