"""Residual add y = a + b (same shapes); the gradient flows unchanged to both inputs (accumulated when a value
has several consumers, e.g. the skip branch of a residual block)."""
from __future__ import annotations

import math
import operator

import torch

from ..errors import OdlError
from ..lower import Ptr
from . import FUNCTIONS, METHODS, register


def convert(node_name, mod, in_shapes, out_shape):
    if len(in_shapes) != 2 or in_shapes[0] != in_shapes[1]:
        raise OdlError(f"graph node '{node_name}' (add): only tensor + tensor of the same shape is supported, "
                       f"got {' and '.join(str(list(s)) for s in in_shapes) or 'a scalar operand'}")
    return {}, {}


class Add:
    name = "add"

    def forward(self, node, L):
        y = L.output(node)
        a, b = node.inputs
        L.call("odl_add", node.report_name, "forward", a=Ptr(L.value(a)), b=Ptr(L.value(b)), y=Ptr(y),
               len=math.prod(node.shape))

    def backward(self, node, L):
        for v in node.inputs:
            tgt = L.grad_target(v)
            if tgt is None:
                continue
            dx, acc = tgt
            L.call("odl_copy", node.report_name, "input_grad", src=Ptr(L.grad(node.name)), dst=Ptr(dx),
                   len=math.prod(node.shape), accumulate=acc)


register(Add())
FUNCTIONS[operator.add] = ("add", convert)
FUNCTIONS[operator.iadd] = ("add", convert)
FUNCTIONS[torch.add] = ("add", convert)
METHODS["add"] = ("add", convert)
