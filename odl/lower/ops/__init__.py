"""Op registry: how each supported PyTorch construct becomes an odl op, and how each op lowers.

An op module defines a class with `name`, `forward(node, L)` and `backward(node, L)` (L: odl.lower.lowering.Lowering),
and registers the PyTorch modules, functions and tensor methods it accepts with a converter
`convert(node_name, mod_or_fx_node, in_shapes, out_shape) -> (attrs, params)` that reads their settings into node
attributes (or refuses them with an OdlError that names the node). Module converters get the nn.Module, function
and method converters the torch.fx node (for its arguments). attrs['_op'] may redirect to another op.
"""
from __future__ import annotations

from odl.lower.ops.registry import FUNCTIONS, METHODS, MODULES, backward_reads_output, get, register, supported  # noqa: F401  (the registry's interface)
from odl.lower.ops import conv, linear, activation, shape, batchnorm, arith, pool, dropout, pad, norm, upsample, smooth, reduce, elementwise, fakequant  # noqa: F401  (each registers its ops)
