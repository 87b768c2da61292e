"""ReLU: y = max(x, 0); dx = dy * (y > 0)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import OdlError
from ..lower import Ptr
from . import FUNCTIONS, METHODS, MODULES, register


def convert(node_name, mod_or_none, in_shapes, out_shape):
    return {}, {}


class ReLU:
    name = "relu"

    def forward(self, node, L):
        y = L.output(node)
        L.call("odl_relu_fwd", node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
               len=math.prod(node.shape))

    def backward(self, node, L):
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        dx, acc = tgt
        L.call("odl_relu_bwd", node.report_name, "input_grad", y=Ptr(L.value(node.name)), dy=Ptr(L.grad(node.name)),
               dx=Ptr(dx), len=math.prod(node.shape), accumulate=acc)


register(ReLU())
MODULES[nn.ReLU] = ("relu", convert)
FUNCTIONS[F.relu] = ("relu", convert)
FUNCTIONS[torch.relu] = ("relu", convert)
METHODS["relu"] = ("relu", convert)
