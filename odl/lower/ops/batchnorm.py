"""BatchNorm2d and BatchNorm1d: training mode (batch statistics, running-stat update) or frozen (running statistics).
BatchNorm1d on [N, C] or [N, C, L] is the same kernel with HW = 1 or L."""
from __future__ import annotations

import math

import torch.nn as nn

from odl.common.errors import OdlError
from odl.ir.program import Ptr
from odl.lower.ops.registry import MODULES, register


def convert_module(node_name, mod: nn.BatchNorm2d, in_shapes, out_shape):
    kind = type(mod).__name__
    where = f"graph node '{node_name}' ({kind})"
    if isinstance(mod, nn.BatchNorm1d):
        if len(in_shapes[0]) not in (2, 3):
            raise OdlError(f"{where}: input shape {list(in_shapes[0])} is not [N, C] or [N, C, L]")
    elif len(in_shapes[0]) != 4:
        raise OdlError(f"{where}: input shape {list(in_shapes[0])} is not NxCxHxW")
    if mod.momentum is None:
        raise OdlError(f"{where}: momentum=None (cumulative average) is not supported")
    affine = mod.affine
    return (dict(eps=float(mod.eps), momentum=float(mod.momentum), track=bool(mod.track_running_stats)),
            {"weight": "weight" if affine else None, "bias": "bias" if affine else None},
            )


class BatchNorm2d:
    name = "batchnorm"

    def _dims(self, node, L):
        n, c, *spatial = L.shape(node.inputs[0])
        return n, c, math.prod(spatial)

    def training(self, node, L) -> bool:
        return L.cfg.bn == "train" or not node.attrs["track"]

    def forward(self, node, L):
        n, c, hw = self._dims(node, L)
        training = self.training(node, L)
        y = L.output(node)
        mean = L.new_buffer(node.name + "_mean", c, dtype="f32", role="act")
        rstd = L.new_buffer(node.name + "_rstd", c, dtype="f32", role="act")
        rm = rv = None
        if node.attrs["track"]:
            base = node.module + "." if node.module else ""
            # the export frontend names the buffers (functional batch norm need not use `<module>.running_mean`)
            rm = L.state(node.attrs.get("running_mean", base + "running_mean"), c)
            rv = L.state(node.attrs.get("running_var", base + "running_var"), c)
        L.call("odl_bn_fwd", node.report_name, "forward",
               x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
               gamma=Ptr(L.param(node, "weight")) if "weight" in node.params else None,
               beta=Ptr(L.param(node, "bias")) if "bias" in node.params else None,
               mean=Ptr(mean), rstd=Ptr(rstd), running_mean=Ptr(rm) if rm else None,
               running_var=Ptr(rv) if rv else None, n=n, c=c, hw=hw, eps=node.attrs["eps"],
               momentum=node.attrs["momentum"], training=int(training))
        L.saved[node.name] = (mean, rstd)

    def backward(self, node, L):
        n, c, hw = self._dims(node, L)
        mean, rstd = L.saved[node.name]
        # In training mode each core reduces and then rewrites whole channels, so dx may overwrite dy; frozen BN
        # splits its dx pass over planes, differently from the dgamma/dbeta pass, so it needs its own buffer.
        tgt = (L.grad_inplace(node.inputs[0], node) if self.training(node, L)
               else L.grad_target(node.inputs[0]))
        dg, db = L.param_grad(node, "weight"), L.param_grad(node, "bias")
        if tgt is None and dg is None and db is None:
            return
        dx, acc = tgt if tgt else (None, 0)
        L.call("odl_bn_bwd", node.report_name, "input_grad" if dx is not None else "weight_grad",
               x=Ptr(L.value(node.inputs[0])), dy=Ptr(L.grad(node.name)),
               dx=Ptr(dx) if dx is not None else None,
               gamma=Ptr(L.param(node, "weight")) if "weight" in node.params else None,
               mean=Ptr(mean), rstd=Ptr(rstd), dgamma=Ptr(dg) if dg else None, dbeta=Ptr(db) if db else None,
               n=n, c=c, hw=hw, training=int(self.training(node, L)), accumulate=acc)


register(BatchNorm2d())
MODULES[nn.BatchNorm2d] = ("batchnorm", convert_module)
MODULES[nn.BatchNorm1d] = ("batchnorm", convert_module)
