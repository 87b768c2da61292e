"""Dropout. Training mode: an on-device counter-based PRNG (odl_dropout_hash) picks the mask, which the host
reproduces exactly (odl.lower.ops.dropout.mask). p = 0 or eval mode: the identity (a view)."""
from __future__ import annotations

import math

import numpy as np
import torch.nn as nn
import torch.nn.functional as F

from odl.common.errors import OdlError
from odl.ir.program import CExpr, Ptr
from odl.lower.ops.registry import FUNCTIONS, MODULES, register


def convert_module(node_name, mod, in_shapes, out_shape):
    if not 0.0 <= mod.p < 1.0:
        raise OdlError(f"graph node '{node_name}' (Dropout): p={mod.p} must be in [0, 1)")
    return dict(p=float(mod.p), training=bool(mod.training)), {}


def convert_function(node_name, fx, in_shapes, out_shape):
    p = fx.kwargs.get("p", fx.args[1] if len(fx.args) > 1 else 0.5)
    training = fx.kwargs.get("training", fx.args[2] if len(fx.args) > 2 else True)
    if not isinstance(p, float) or not isinstance(training, bool):
        raise OdlError(f"graph node '{node_name}' (dropout): p and training must be constants")
    return dict(p=float(p), training=training), {}


def step_seed(base: int, step: int) -> int:
    """The seed of a dropout node at a given step (mirrors the C expression in forward())."""
    return (base ^ ((step * 0x9E3779B9) & 0xFFFFFFFF)) & 0xFFFFFFFF


def hash32(seed: int, idx: np.ndarray) -> np.ndarray:
    """odl_dropout_hash for an array of indices (kernels_c/include/odl_kernels.h)."""
    with np.errstate(over="ignore"):
        i = idx.astype(np.uint32)
        h = np.uint32(seed) ^ (i * np.uint32(0x9E3779B9))
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def threshold(p: float) -> int:
    return min(int(p * 4294967296.0), 0xFFFFFFFF)


def mask(p: float, seed: int, n: int) -> np.ndarray:
    """Keep-mask (bool) of n elements, as the device draws it."""
    return hash32(seed, np.arange(n, dtype=np.uint64)) >= np.uint32(threshold(p))


class Dropout:
    name = "dropout"

    @staticmethod
    def identity(node, L) -> bool:
        return node.attrs["p"] == 0.0 or not node.attrs["training"] or getattr(L, "forward_only", False)

    def forward(self, node, L):
        if self.identity(node, L):
            L.alias(node.name, node.inputs[0])
            return
        p = node.attrs["p"]
        base = (L.cfg.seed * 0x01000193 + 0x2545F491 * (1 + len(L.dropout))) & 0xFFFFFFFF
        L.dropout[node.name] = {"p": p, "seed": base}
        y = L.output(node)
        n = math.prod(node.shape)
        m = L.new_buffer(node.name + "_mask", n, dtype="u8", role="act")
        L.saved[node.name] = m
        L.call("odl_dropout_fwd", node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
               mask=Ptr(m), len=n,
               seed=CExpr(f"{base}u ^ (odl_step_index * 0x9E3779B9u)"), threshold=CExpr(f"{threshold(p)}u"),
               scale=1.0 / (1.0 - p))

    def backward(self, node, L):
        if self.identity(node, L):
            return
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        dx, acc = tgt
        m = L.saved[node.name]
        L.call("odl_dropout_bwd", node.report_name, "input_grad", dy=Ptr(L.grad(node.name)),
               mask=Ptr(m), dx=Ptr(dx), len=math.prod(node.shape),
               scale=1.0 / (1.0 - node.attrs["p"]), accumulate=acc)


register(Dropout())
MODULES[nn.Dropout] = ("dropout", convert_module)
FUNCTIONS[F.dropout] = ("dropout", convert_function)
