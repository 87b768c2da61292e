"""ReLU and ReLU6: y = clamp(x); dx = dy * (y strictly inside the clamp range)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from odl.common.errors import OdlError
from odl.ir.program import Ptr
from odl.lower.ops.registry import FUNCTIONS, METHODS, MODULES, register


def convert(node_name, mod_or_none, in_shapes, out_shape):
    return {}, {}


def convert_hardtanh(node_name, mod, in_shapes, out_shape):
    if (mod.min_val, mod.max_val) != (0.0, 6.0):
        raise OdlError(f"graph node '{node_name}' (Hardtanh): only min_val=0, max_val=6 (ReLU6) is supported")
    return {}, {}


class _Clamp:
    fwd = bwd = ""
    backward_reads_output = True   # dx = dy * (y inside the clamp range): y must survive until the backward

    def forward(self, node, L):
        y = L.output_inplace(node, node.inputs[0])
        L.call(self.fwd, node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
               len=math.prod(node.shape))

    def backward(self, node, L):
        tgt = L.grad_inplace(node.inputs[0], node)
        if tgt is None:
            return
        dx, acc = tgt
        L.call(self.bwd, node.report_name, "input_grad", y=Ptr(L.value(node.name)), dy=Ptr(L.grad(node.name)),
               dx=Ptr(dx), len=math.prod(node.shape), accumulate=acc)


class ReLU(_Clamp):
    name, fwd, bwd = "relu", "odl_relu_fwd", "odl_relu_bwd"


class ReLU6(_Clamp):
    name, fwd, bwd = "relu6", "odl_relu6_fwd", "odl_relu6_bwd"


register(ReLU())
register(ReLU6())
MODULES[nn.ReLU] = ("relu", convert)
FUNCTIONS[F.relu] = ("relu", convert)
FUNCTIONS[torch.relu] = ("relu", convert)
METHODS["relu"] = ("relu", convert)
MODULES[nn.ReLU6] = ("relu6", convert)
MODULES[nn.Hardtanh] = ("relu6", convert_hardtanh)
FUNCTIONS[F.relu6] = ("relu6", convert)
