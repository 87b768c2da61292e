"""Flatten / view / reshape: views of a contiguous buffer; they share storage and gradient storage."""
from __future__ import annotations

import torch
import torch.nn as nn

from odl.lower.ops.registry import FUNCTIONS, METHODS, MODULES, register


def convert(node_name, mod_or_none, in_shapes, out_shape):
    return {}, {}


class View:
    name = "view"

    def forward(self, node, L):
        L.alias(node.name, node.inputs[0])

    def backward(self, node, L):
        pass  # the gradient storage is shared with the input's


register(View())
MODULES[nn.Flatten] = ("view", convert)
FUNCTIONS[torch.flatten] = ("view", convert)
FUNCTIONS[torch.reshape] = ("view", convert)
for _m in ("flatten", "view", "reshape"):
    METHODS[_m] = ("view", convert)
