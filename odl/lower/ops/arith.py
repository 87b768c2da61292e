"""Residual add y = a + b (same shapes); the gradient flows unchanged to both inputs (accumulated when a value
has several consumers, e.g. the skip branch of a residual block)."""
from __future__ import annotations

import math
import operator

import torch

from odl.common.errors import OdlError
from odl.ir.program import Ptr
from odl.lower.ops.registry import FUNCTIONS, METHODS, register


def convert(node_name, mod, in_shapes, out_shape):
    alpha = getattr(mod, "kwargs", {}).get("alpha", 1)
    if len(getattr(mod, "args", ())) > 2 or alpha != 1:
        raise OdlError(f"graph node '{node_name}' (add): alpha={alpha if alpha != 1 else mod.args[2]} is not "
                       f"supported (a + b only)")
    if len(in_shapes) != 2 or in_shapes[0] != in_shapes[1]:
        raise OdlError(f"graph node '{node_name}' (add): only tensor + tensor of the same shape is supported, "
                       f"got {' and '.join(str(list(s)) for s in in_shapes) or 'a scalar operand'}")
    return {}, {}


class Add:
    name = "add"

    def forward(self, node, L):
        a, b = node.inputs
        over = next((v for v in (a, b) if a != b and L.can_overwrite(v, node)), None)
        y = L.output_inplace(node, over) if over else L.output(node)
        L.call("odl_add", node.report_name, "forward", a=Ptr(L.value(a)), b=Ptr(L.value(b)), y=Ptr(y),
               len=math.prod(node.shape))

    def backward(self, node, L):
        # copies first (they read d(y)); then at most one input takes d(y)'s buffer as its own gradient
        share = None
        for v in node.inputs:
            if node.inputs.count(v) == 1 and share is None and L.can_share_grad(v, node):
                share = v
        for v in node.inputs:
            if v == share:
                continue
            tgt = L.grad_target(v)
            if tgt is None:
                continue
            dx, acc = tgt
            L.call("odl_copy", node.report_name, "input_grad", src=Ptr(L.grad(node.name)), dst=Ptr(dx),
                   len=math.prod(node.shape), accumulate=acc)
        if share is not None:
            L.grad_inplace(share, node)


register(Add())
FUNCTIONS[operator.add] = ("add", convert)
FUNCTIONS[operator.iadd] = ("add", convert)
FUNCTIONS[torch.add] = ("add", convert)
METHODS["add"] = ("add", convert)
