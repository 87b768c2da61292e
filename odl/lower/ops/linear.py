"""Linear: Y = X.W^T (+b); dW = dY^T.X; db = column sums of dY; dX = dY.W."""
from __future__ import annotations

import torch.nn as nn

from odl.common.errors import OdlError
from odl.ir.program import Ptr
from odl.lower.ops.registry import MODULES, register


def convert_module(node_name, mod: nn.Linear, in_shapes, out_shape):
    if len(in_shapes[0]) != 2:
        raise OdlError(f"graph node '{node_name}' (Linear): input shape {list(in_shapes[0])} is not [N, features]; "
                       f"flatten it first")
    return {}, {"weight": "weight", "bias": "bias" if mod.bias is not None else None}


class Linear:
    name = "linear"

    def forward(self, node, L):
        x = node.inputs[0]
        n, fin = L.shape(x)
        fout = node.shape[1]
        y = L.output(node)
        bias = {"bias": Ptr(L.param(node, "bias"))} if "bias" in node.params else {}   # added before the rounding
        L.call("odl_mm_nt", node.report_name, "forward", macs=n * fin * fout,
               a=Ptr(L.value(x)), b=Ptr(L.param(node, "weight")), c=Ptr(y), m=n, n=fout, k=fin, accumulate=0, **bias)

    def backward(self, node, L):
        x = node.inputs[0]
        n, fin = L.shape(x)
        fout = node.shape[1]
        dy = L.grad(node.name)
        dw = L.param_grad(node, "weight")
        if dw is not None:
            L.call("odl_mm_tn", node.report_name, "weight_grad", macs=n * fin * fout,
                   a=Ptr(dy), b=Ptr(L.value(x)), c=Ptr(dw), m=fout, n=fin, k=n, accumulate=0)
        db = L.param_grad(node, "bias")
        if db is not None:
            L.call("odl_bias_grad", node.report_name, "weight_grad", dy=Ptr(dy), db=Ptr(db), n=n, c=fout, hw=1,
                   accumulate=0)
        tgt = L.grad_target(x)
        if tgt is not None:
            dx, acc = tgt
            L.call("odl_mm_nn", node.report_name, "input_grad", macs=n * fin * fout,
                   a=Ptr(dy), b=Ptr(L.param(node, "weight")), c=Ptr(dx), m=n, n=fin, k=fout, accumulate=acc)


register(Linear())
MODULES[nn.Linear] = ("linear", convert_module)
