"""LayerNorm, GroupNorm, InstanceNorm1d/2d: one op ('norm') over rows of a [R, M] view with per-row statistics
(kernels_c/norm.c); the converters only say how the input splits into rows and which affine index each element
has. Statistics are always the current input's (LayerNorm / GroupNorm have no running statistics; InstanceNorm
with track_running_stats=True is refused)."""
from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F

from odl.common.errors import OdlError
from odl.ir.program import Ptr
from odl.lower.ops.registry import FUNCTIONS, MODULES, register


def _affine(mod, has_weight):
    return {"weight": "weight" if has_weight and getattr(mod, "weight", None) is not None else None,
            "bias": "bias" if has_weight and getattr(mod, "bias", None) is not None else None}


def convert_layernorm(node_name, mod: nn.LayerNorm, in_shapes, out_shape):
    shape, ns = tuple(in_shapes[0]), tuple(mod.normalized_shape)
    if len(shape) <= len(ns) or shape[-len(ns):] != ns:
        raise OdlError(f"graph node '{node_name}' (LayerNorm): normalized_shape {list(ns)} is not the trailing "
                       f"dims of input shape {list(shape)} with a batch dim before them")
    m = math.prod(ns)
    return (dict(rows=math.prod(shape) // m, m=m, g=1, s=1, eps=float(mod.eps)),
            _affine(mod, mod.elementwise_affine))


def convert_groupnorm(node_name, mod: nn.GroupNorm, in_shapes, out_shape):
    shape = tuple(in_shapes[0])
    if len(shape) < 2:
        raise OdlError(f"graph node '{node_name}' (GroupNorm): input shape {list(shape)} has no channel dim")
    n, c, hw = shape[0], shape[1], math.prod(shape[2:])
    g = mod.num_groups
    return (dict(rows=n * g, m=c // g * hw, g=g, s=hw, eps=float(mod.eps)), _affine(mod, mod.affine))


def convert_instancenorm(node_name, mod, in_shapes, out_shape):
    what = type(mod).__name__
    shape = tuple(in_shapes[0])
    nd = 2 if isinstance(mod, nn.InstanceNorm2d) else 1
    if len(shape) != nd + 2:
        raise OdlError(f"graph node '{node_name}' ({what}): input shape {list(shape)} is not "
                       f"{'NxCxHxW' if nd == 2 else 'NxCxL'} (unbatched input is not supported)")
    if mod.track_running_stats:
        raise OdlError(f"graph node '{node_name}' ({what}): track_running_stats=True is not supported "
                       f"(running statistics of instance norm)")
    n, c, hw = shape[0], shape[1], math.prod(shape[2:])
    if hw == 1:
        raise OdlError(f"graph node '{node_name}' ({what}): one spatial element per channel (PyTorch refuses it too)")
    return (dict(rows=n * c, m=hw, g=c, s=hw, eps=float(mod.eps)), _affine(mod, mod.affine))


class Norm:
    """Two calls each way (kernels_c/norm.c): partial statistics per (row, chunk), then the apply kernel. Rows are
    cut into chunks when there are few of them, so that every core has work (at least 4 units per core where the
    rows are long enough, chunks of >= 16 elements)."""
    name = "norm"

    @staticmethod
    def geom(node, L):
        a = node.attrs
        rows, m = a["rows"], a["m"]
        want = -(-4 * L.est_cores // rows) if rows < 4 * L.est_cores else 1
        chunks = max(1, min(want, m // 16))
        return dict(rows=rows, m=m, g=a["g"], s=a["s"], chunks=chunks)

    def forward(self, node, L):
        geom = self.geom(node, L)
        rows = geom["rows"]
        y = L.output(node)
        mean = L.new_buffer(node.name + "_mean", rows, dtype="f32", role="act")
        rstd = L.new_buffer(node.name + "_rstd", rows, dtype="f32", role="act")
        part = L.new_buffer(node.name + "_part", 2 * rows * geom["chunks"], dtype="f32", role="scratch")
        args = dict(x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
                    gamma=Ptr(L.param(node, "weight")) if "weight" in node.params else None,
                    beta=Ptr(L.param(node, "bias")) if "bias" in node.params else None,
                    mean=Ptr(mean), rstd=Ptr(rstd), part=Ptr(part), eps=node.attrs["eps"], **geom)
        L.call("odl_norm_stats", node.report_name, "forward", **args)
        L.call("odl_norm_fwd", node.report_name, "forward", **args)
        L.saved[node.name] = (mean, rstd)

    def backward(self, node, L):
        geom = self.geom(node, L)
        mean, rstd = L.saved[node.name]
        x, dy = Ptr(L.value(node.inputs[0])), Ptr(L.grad(node.name))
        gamma = Ptr(L.param(node, "weight")) if "weight" in node.params else None
        dg, db = L.param_grad(node, "weight"), L.param_grad(node, "bias")
        if dg is not None or db is not None:
            # before the input gradient, which may overwrite dy
            L.call("odl_norm_wgrad", node.report_name, "weight_grad", x=x, dy=dy, dx=None, gamma=gamma,
                   mean=Ptr(mean), rstd=Ptr(rstd), dgamma=Ptr(dg) if dg else None, dbeta=Ptr(db) if db else None,
                   part=None, accumulate=0, accumulate_w=0, **geom)
        tgt = L.grad_inplace(node.inputs[0], node)   # a unit reads only its own dy range: dx may overwrite dy
        if tgt is not None:
            dx, acc = tgt
            part = L.new_buffer(node.name + "_dpart", 2 * geom["rows"] * geom["chunks"], dtype="f32",
                                role="scratch")
            args = dict(x=x, dy=dy, dx=Ptr(dx), gamma=gamma, mean=Ptr(mean), rstd=Ptr(rstd), dgamma=None,
                        dbeta=None, part=Ptr(part), accumulate=acc, accumulate_w=0, **geom)
            L.call("odl_norm_bwd_stats", node.report_name, "input_grad", **args)
            L.call("odl_norm_bwd", node.report_name, "input_grad", **args)


register(Norm())
MODULES[nn.LayerNorm] = ("norm", convert_layernorm)
MODULES[nn.GroupNorm] = ("norm", convert_groupnorm)
MODULES[nn.InstanceNorm1d] = ("norm", convert_instancenorm)
MODULES[nn.InstanceNorm2d] = ("norm", convert_instancenorm)


# functional forms without affine tensors: F.layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5),
# F.group_norm(x, num_groups, weight=None, bias=None, eps=1e-5); affine tensors there would be graph values odl
# does not train, so they are refused
def _bind(fx, names, defaults):
    v = dict(defaults)
    v.update(zip(names, fx.args[1:]))
    v.update(fx.kwargs)
    return v


class _Settings:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def convert_f_layernorm(node_name, fx, in_shapes, out_shape):
    v = _bind(fx, ["normalized_shape", "weight", "bias", "eps"], dict(weight=None, bias=None, eps=1e-5))
    if v["weight"] is not None or v["bias"] is not None:
        raise OdlError(f"graph node '{node_name}' (layer_norm): weight/bias tensors are not supported "
                       f"(use nn.LayerNorm for a trained affine)")
    ns = v["normalized_shape"]
    ns = tuple(ns) if isinstance(ns, (tuple, list)) else (ns,)
    return convert_layernorm(node_name, _Settings(normalized_shape=ns, eps=v["eps"], elementwise_affine=False),
                             in_shapes, out_shape)


def convert_f_groupnorm(node_name, fx, in_shapes, out_shape):
    v = _bind(fx, ["num_groups", "weight", "bias", "eps"], dict(weight=None, bias=None, eps=1e-5))
    if v["weight"] is not None or v["bias"] is not None:
        raise OdlError(f"graph node '{node_name}' (group_norm): weight/bias tensors are not supported "
                       f"(use nn.GroupNorm for a trained affine)")
    return convert_groupnorm(node_name, _Settings(num_groups=v["num_groups"], eps=v["eps"], affine=False),
                             in_shapes, out_shape)


FUNCTIONS[F.layer_norm] = ("norm", convert_f_layernorm)
FUNCTIONS[F.group_norm] = ("norm", convert_f_groupnorm)
