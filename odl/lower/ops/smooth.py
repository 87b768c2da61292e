"""Sigmoid, Tanh, LeakyReLU, ELU, Hardswish, Hardsigmoid, SiLU, GELU (erf and tanh forms): one elementwise kernel
pair (odl_act_fwd / odl_act_bwd, kernels_c/activation.c) selected by an op code.

What the backward reads decides the in-place rules: Sigmoid and Tanh differentiate from their output (as PyTorch
does), so their output may overwrite a dead input but must itself never be overwritten (backward_reads_output);
the others differentiate from their input, so they never write over it."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from odl.common.errors import OdlError
from odl.ir.program import Ptr
from odl.lower.ops.registry import FUNCTIONS, METHODS, MODULES, register

# op codes of kernels_c/include/odl_kernels.h (ODL_ACT_*)
CODES = {"sigmoid": 0, "tanh": 1, "leaky_relu": 2, "elu": 3, "hardswish": 4, "hardsigmoid": 5, "silu": 6,
         "gelu": 7, "gelu_tanh": 8}
READS_OUTPUT = ("sigmoid", "tanh")


def fx_arg(fx, index: int, name: str, default):
    """Argument `name` of a torch.fx call node, given positionally (args[index]) or by keyword."""
    if name in fx.kwargs:
        return fx.kwargs[name]
    return fx.args[index] if len(fx.args) > index else default


def _const(node_name, what, v):
    if not isinstance(v, (int, float, str)):
        raise OdlError(f"graph node '{node_name}' ({what}): its settings must be constants, got {v!r}")
    return v


def _plain(node_name, mod_or_fx, in_shapes, out_shape):
    return {}, {}


def _leaky_module(node_name, mod, in_shapes, out_shape):
    return {"alpha": float(mod.negative_slope)}, {}


def _leaky_fn(node_name, fx, in_shapes, out_shape):
    return {"alpha": float(_const(node_name, "leaky_relu", fx_arg(fx, 1, "negative_slope", 0.01)))}, {}


def _elu_module(node_name, mod, in_shapes, out_shape):
    return {"alpha": float(mod.alpha)}, {}


def _elu_fn(node_name, fx, in_shapes, out_shape):
    return {"alpha": float(_const(node_name, "elu", fx_arg(fx, 1, "alpha", 1.0)))}, {}


def _gelu(node_name, approximate):
    if approximate not in ("none", "tanh"):
        raise OdlError(f"graph node '{node_name}' (GELU): approximate={approximate!r} is not 'none' or 'tanh'")
    return ({"_op": "gelu_tanh"} if approximate == "tanh" else {}), {}


def _gelu_module(node_name, mod, in_shapes, out_shape):
    return _gelu(node_name, mod.approximate)


def _gelu_fn(node_name, fx, in_shapes, out_shape):
    return _gelu(node_name, _const(node_name, "gelu", fx_arg(fx, 1, "approximate", "none")))


class Activation:
    def __init__(self, name: str):
        self.name = name
        self.code = CODES[name]
        self.backward_reads_output = name in READS_OUTPUT

    def forward(self, node, L):
        x = node.inputs[0]
        y = L.output_inplace(node, x) if self.backward_reads_output else L.output(node)
        L.call("odl_act_fwd", node.report_name, "forward", x=Ptr(L.value(x)), y=Ptr(y), len=math.prod(node.shape),
               op=self.code, alpha=float(node.attrs.get("alpha", 0.0)))

    def backward(self, node, L):
        tgt = L.grad_inplace(node.inputs[0], node)
        if tgt is None:
            return
        dx, acc = tgt
        saved = L.value(node.name) if self.backward_reads_output else L.value(node.inputs[0])
        L.call("odl_act_bwd", node.report_name, "input_grad", s=Ptr(saved), dy=Ptr(L.grad(node.name)), dx=Ptr(dx),
               len=math.prod(node.shape), op=self.code, alpha=float(node.attrs.get("alpha", 0.0)),
               accumulate=acc)


for _name in CODES:
    register(Activation(_name))

MODULES[nn.Sigmoid] = ("sigmoid", _plain)
MODULES[nn.Tanh] = ("tanh", _plain)
MODULES[nn.LeakyReLU] = ("leaky_relu", _leaky_module)
MODULES[nn.ELU] = ("elu", _elu_module)
MODULES[nn.Hardswish] = ("hardswish", _plain)
MODULES[nn.Hardsigmoid] = ("hardsigmoid", _plain)
MODULES[nn.SiLU] = ("silu", _plain)
MODULES[nn.GELU] = ("gelu", _gelu_module)
for _fn in (torch.sigmoid, F.sigmoid):
    FUNCTIONS[_fn] = ("sigmoid", _plain)
for _fn in (torch.tanh, F.tanh):
    FUNCTIONS[_fn] = ("tanh", _plain)
FUNCTIONS[F.leaky_relu] = ("leaky_relu", _leaky_fn)
FUNCTIONS[F.elu] = ("elu", _elu_fn)
FUNCTIONS[F.hardswish] = ("hardswish", _plain)
FUNCTIONS[F.hardsigmoid] = ("hardsigmoid", _plain)
FUNCTIONS[F.silu] = ("silu", _plain)
FUNCTIONS[F.gelu] = ("gelu", _gelu_fn)
METHODS["sigmoid"] = ("sigmoid", _plain)
METHODS["tanh"] = ("tanh", _plain)
