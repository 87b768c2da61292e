"""Max / average pooling, 2-D and 1-D (a 1-D pool is a 2-D pool over [N, C, 1, L]), ceil_mode, global average
pooling, and adaptive average pooling to any size (evenly dividing sizes as a plain average pool, others with
PyTorch's overlapping windows)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from odl.common.errors import OdlError
from odl.ir.program import Ptr
from odl.lower.ops.registry import FUNCTIONS, MODULES, register
from odl.lower.ops.plane import PlaneMap, shape4


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _one(v):
    v = v[0] if isinstance(v, (tuple, list)) else v
    return v


def _geom(node_name, what, kernel, stride, padding, dilation, ceil_mode, nd=2):
    """Window geometry as 2-D attributes; ceil_mode needs nothing more (the output size is PyTorch's, and the
    kernels clip windows to the input; average pooling divides as PyTorch does, see odl_kernels.h)."""
    if nd == 1:
        kernel, padding, dilation = (1, _one(kernel)), (0, _one(padding)), (1, _one(dilation))
        stride = None if stride in (None, ()) else (1, _one(stride))
    if _pair(dilation) != (1, 1):
        raise OdlError(f"graph node '{node_name}' ({what}): dilation is not supported")
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride not in (None, ()) else kernel)
    pt, pl = _pair(padding)
    return dict(kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl)


def _check_rank(node_name, what, in_shapes, nd):
    if len(in_shapes[0]) != nd + 2:
        raise OdlError(f"graph node '{node_name}' ({what}): input shape {list(in_shapes[0])} is not "
                       f"{'NxCxL' if nd == 1 else 'NxCxHxW'} (unbatched input is not supported)")


def convert_maxpool(node_name, mod, in_shapes, out_shape):
    what, nd = type(mod).__name__, 1 if isinstance(mod, nn.MaxPool1d) else 2
    _check_rank(node_name, what, in_shapes, nd)
    if mod.return_indices:
        raise OdlError(f"graph node '{node_name}' ({what}): return_indices=True is not supported")
    return _geom(node_name, what, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode, nd), {}


def convert_avgpool(node_name, mod, in_shapes, out_shape):
    what, nd = type(mod).__name__, 1 if isinstance(mod, nn.AvgPool1d) else 2
    _check_rank(node_name, what, in_shapes, nd)
    if getattr(mod, "divisor_override", None):
        raise OdlError(f"graph node '{node_name}' ({what}): divisor_override is not supported")
    g = _geom(node_name, what, mod.kernel_size, mod.stride, mod.padding, 1, mod.ceil_mode, nd)
    return dict(g, count_include_pad=int(mod.count_include_pad)), {}


def convert_adaptive(node_name, mod, in_shapes, out_shape):
    """AdaptiveAvgPool1d/2d (module or function): an average pool when the output size divides the input
    (global pooling included), else the adaptive kernel with PyTorch's overlapping windows."""
    nd = len(in_shapes[0]) - 2
    if nd not in (1, 2):
        raise OdlError(f"graph node '{node_name}' (adaptive_avg_pool): input shape {list(in_shapes[0])} is not "
                       f"NxCxL or NxCxHxW")
    n, c, h, w = shape4(in_shapes[0])
    _, _, oh, ow = shape4(out_shape)
    if h % oh or w % ow:
        return dict(adaptive=1), {}   # the avgpool op hands it to AdaptiveAvgPool
    return dict(kh=h // oh, kw=w // ow, sh=h // oh, sw=w // ow, pt=0, pl=0, count_include_pad=1), {}


class _Pool:
    def dims(self, node, L):
        n, c, h, w = shape4(L.shape(node.inputs[0]))
        _, _, ho, wo = shape4(node.shape)
        a = node.attrs
        return dict(n=n, c=c, h=h, w=w, kh=a["kh"], kw=a["kw"], sh=a["sh"], sw=a["sw"], pt=a["pt"], pl=a["pl"],
                    ho=ho, wo=wo)


class MaxPool(_Pool):
    name = "maxpool"

    def forward(self, node, L):
        d = self.dims(node, L)
        y = L.output(node)
        idx = L.new_buffer(node.name + "_argmax", d["n"] * d["c"] * d["ho"] * d["wo"], dtype="i32", role="act")
        L.saved[node.name] = idx
        L.call("odl_maxpool_fwd", node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
               argmax=Ptr(idx), **d)

    def backward(self, node, L):
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        d = self.dims(node, L)
        dx, acc = tgt
        L.call("odl_maxpool_bwd", node.report_name, "input_grad", dy=Ptr(L.grad(node.name)),
               argmax=Ptr(L.saved[node.name]), dx=Ptr(dx), n=d["n"], c=d["c"], h=d["h"], w=d["w"], ho=d["ho"],
               wo=d["wo"], accumulate=acc)


class AvgPool(_Pool):
    """Average pooling; an adaptive pool whose output size does not divide the input (attrs 'adaptive') goes to
    AdaptiveAvgPool (one op for modules and functions alike, so reports say avgpool either way)."""
    name = "avgpool"

    def forward(self, node, L):
        if node.attrs.get("adaptive"):
            return ADAPTIVE.forward(node, L)
        d = self.dims(node, L)
        y = L.output(node)
        L.call("odl_avgpool_fwd", node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
               count_include_pad=node.attrs["count_include_pad"], **d)

    def backward(self, node, L):
        if node.attrs.get("adaptive"):
            return ADAPTIVE.backward(node, L)
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        dx, acc = tgt
        L.call("odl_avgpool_bwd", node.report_name, "input_grad", dy=Ptr(L.grad(node.name)), dx=Ptr(dx),
               count_include_pad=node.attrs["count_include_pad"], accumulate=acc, **self.dims(node, L))


class AdaptiveAvgPool(PlaneMap):
    """Output size not dividing the input: PyTorch's overlapping windows (kernels_c/pool_adaptive.c)."""
    fwd_kernel, bwd_kernel = "odl_adaptive_avgpool_fwd", "odl_adaptive_avgpool_bwd"


ADAPTIVE = AdaptiveAvgPool()
register(MaxPool())
register(AvgPool())
MODULES[nn.MaxPool2d] = ("maxpool", convert_maxpool)
MODULES[nn.AvgPool2d] = ("avgpool", convert_avgpool)
MODULES[nn.AdaptiveAvgPool2d] = ("avgpool", convert_adaptive)
MODULES[nn.MaxPool1d] = ("maxpool", convert_maxpool)
MODULES[nn.AvgPool1d] = ("avgpool", convert_avgpool)
MODULES[nn.AdaptiveAvgPool1d] = ("avgpool", convert_adaptive)


# functional forms: F.max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
# return_indices=False), F.avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
# count_include_pad=True, divisor_override=None), F.adaptive_avg_pool2d(x, output_size)
def _bind(fx, names, defaults):
    vals = dict(defaults)
    vals.update(zip(names, fx.args[1:]))
    vals.update(fx.kwargs)
    return vals


def convert_f_maxpool(node_name, fx, in_shapes, out_shape, nd=2):
    _check_rank(node_name, f"max_pool{nd}d", in_shapes, nd)
    v = _bind(fx, ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"],
              dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False))
    if v["return_indices"]:
        raise OdlError(f"graph node '{node_name}' (max_pool2d): return_indices=True is not supported")
    return _geom(node_name, f"max_pool{nd}d", v["kernel_size"], v["stride"], v["padding"], v["dilation"],
                 v["ceil_mode"], nd), {}


def convert_f_avgpool(node_name, fx, in_shapes, out_shape, nd=2):
    _check_rank(node_name, f"avg_pool{nd}d", in_shapes, nd)
    v = _bind(fx, ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"],
              dict(stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None))
    if v["divisor_override"]:
        raise OdlError(f"graph node '{node_name}' (avg_pool{nd}d): divisor_override is not supported")
    g = _geom(node_name, f"avg_pool{nd}d", v["kernel_size"], v["stride"], v["padding"], 1, v["ceil_mode"], nd)
    return dict(g, count_include_pad=int(v["count_include_pad"])), {}


FUNCTIONS[F.max_pool2d] = ("maxpool", convert_f_maxpool)
FUNCTIONS[F.avg_pool2d] = ("avgpool", convert_f_avgpool)
FUNCTIONS[F.adaptive_avg_pool2d] = ("avgpool", convert_adaptive)
FUNCTIONS[F.max_pool1d] = ("maxpool", lambda *a: convert_f_maxpool(*a, nd=1))
FUNCTIONS[F.avg_pool1d] = ("avgpool", lambda *a: convert_f_avgpool(*a, nd=1))
FUNCTIONS[F.adaptive_avg_pool1d] = ("avgpool", convert_adaptive)
