"""Upsample / F.interpolate: nearest (1-D and 2-D) and (bi)linear (align_corners False and True), from sizes or
scale factors (kernels_c/upsample.c). The source-index scales are PyTorch's (aten UpSample.h), computed here in
FP32 as PyTorch does: align_corners -> (in-1)/(out-1); a given scale factor -> 1/scale_factor (unless
recompute_scale_factor=True); otherwise in/out."""
from __future__ import annotations

import numpy as np
import torch.nn as nn
import torch.nn.functional as F

from odl.common.errors import OdlError
from odl.lower.ops.registry import FUNCTIONS, MODULES, register
from odl.lower.ops.plane import PlaneMap

_MODES = {"nearest": 0, "linear": 1, "bilinear": 1}


def _attrs(node_name, what, in_shape, out_shape, scale_factor, mode, align_corners, recompute, antialias=False):
    nd = len(in_shape) - 2
    ok = {1: ("nearest", "linear"), 2: ("nearest", "bilinear")}.get(nd, ())
    if mode not in ok:
        alt = "nearest/bilinear on NxCxHxW, nearest/linear on NxCxL"
        raise OdlError(f"graph node '{node_name}' ({what}): mode='{mode}' on a {len(in_shape)}-D input is not "
                       f"supported (supported: {', '.join(ok) or alt})")
    if antialias:
        raise OdlError(f"graph node '{node_name}' ({what}): antialias=True is not supported")
    ins, outs = list(in_shape[2:]), list(out_shape[2:])
    if scale_factor is not None and not isinstance(scale_factor, (tuple, list)):
        scale_factor = [scale_factor] * nd
    align = bool(align_corners) and mode != "nearest"
    r = []
    for a in range(nd):
        if align:
            v = (ins[a] - 1) / (outs[a] - 1) if outs[a] > 1 else 0.0
        elif scale_factor is not None and not recompute and scale_factor[a] > 0:
            v = 1.0 / float(scale_factor[a])
        else:
            v = ins[a] / outs[a]
        r.append(float(np.float32(v)))
    rh, rw = (1.0, r[0]) if nd == 1 else (r[0], r[1])
    return dict(mode=_MODES[mode], align_corners=int(align), rh=rh, rw=rw), {}


def convert_module(node_name, mod, in_shapes, out_shape):
    return _attrs(node_name, type(mod).__name__, in_shapes[0], out_shape, mod.scale_factor, mod.mode,
                  mod.align_corners, getattr(mod, "recompute_scale_factor", None))


def convert_function(node_name, fx, in_shapes, out_shape):
    names = ["size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"]
    v = dict(size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
             antialias=False)
    v.update(zip(names, fx.args[1:]))
    v.update(fx.kwargs)
    return _attrs(node_name, "interpolate", in_shapes[0], out_shape, v["scale_factor"], v["mode"],
                  v["align_corners"], v["recompute_scale_factor"], v["antialias"])


class Upsample(PlaneMap):
    name = "upsample"
    fwd_kernel, bwd_kernel = "odl_upsample_fwd", "odl_upsample_bwd"

    @staticmethod
    def extra(node) -> dict:
        a = node.attrs
        return dict(mode=a["mode"], align_corners=a["align_corners"], rh=a["rh"], rw=a["rw"])


register(Upsample())
MODULES[nn.Upsample] = ("upsample", convert_module)
MODULES[nn.UpsamplingNearest2d] = ("upsample", convert_module)
MODULES[nn.UpsamplingBilinear2d] = ("upsample", convert_module)
FUNCTIONS[F.interpolate] = ("upsample", convert_function)
FUNCTIONS[F.upsample] = ("upsample", convert_function)
