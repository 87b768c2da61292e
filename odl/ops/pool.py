"""Max / average pooling (incl. global average pooling and AdaptiveAvgPool2d to 1x1)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..errors import OdlError
from ..ir import Ptr
from . import FUNCTIONS, MODULES, register


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _geom(node_name, what, kernel, stride, padding, dilation, ceil_mode):
    if ceil_mode:
        raise OdlError(f"graph node '{node_name}' ({what}): ceil_mode=True is not supported")
    if _pair(dilation) != (1, 1):
        raise OdlError(f"graph node '{node_name}' ({what}): dilation is not supported")
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride not in (None, ()) else kernel)
    pt, pl = _pair(padding)
    return dict(kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl)


def convert_maxpool(node_name, mod, in_shapes, out_shape):
    if mod.return_indices:
        raise OdlError(f"graph node '{node_name}' (MaxPool2d): return_indices=True is not supported")
    return _geom(node_name, "MaxPool2d", mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode), {}


def convert_avgpool(node_name, mod, in_shapes, out_shape):
    if mod.divisor_override:
        raise OdlError(f"graph node '{node_name}' (AvgPool2d): divisor_override is not supported")
    g = _geom(node_name, "AvgPool2d", mod.kernel_size, mod.stride, mod.padding, 1, mod.ceil_mode)
    return dict(g, count_include_pad=int(mod.count_include_pad)), {}


def convert_adaptive(node_name, mod, in_shapes, out_shape):
    n, c, h, w = in_shapes[0]
    oh, ow = out_shape[2], out_shape[3]
    if h % oh or w % ow:
        raise OdlError(f"graph node '{node_name}' (AdaptiveAvgPool2d): output {oh}x{ow} does not divide input "
                       f"{h}x{w}; only evenly dividing sizes (e.g. 1) are supported")
    return dict(kh=h // oh, kw=w // ow, sh=h // oh, sw=w // ow, pt=0, pl=0, count_include_pad=1), {}


class _Pool:
    def dims(self, node, L):
        n, c, h, w = L.shape(node.inputs[0])
        a = node.attrs
        return dict(n=n, c=c, h=h, w=w, kh=a["kh"], kw=a["kw"], sh=a["sh"], sw=a["sw"], pt=a["pt"], pl=a["pl"],
                    ho=node.shape[2], wo=node.shape[3])


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
    name = "avgpool"

    def forward(self, node, L):
        d = self.dims(node, L)
        y = L.output(node)
        L.call("odl_avgpool_fwd", node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
               count_include_pad=node.attrs["count_include_pad"], **d)

    def backward(self, node, L):
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        dx, acc = tgt
        L.call("odl_avgpool_bwd", node.report_name, "input_grad", dy=Ptr(L.grad(node.name)), dx=Ptr(dx),
               count_include_pad=node.attrs["count_include_pad"], accumulate=acc, **self.dims(node, L))


register(MaxPool())
register(AvgPool())
MODULES[nn.MaxPool2d] = ("maxpool", convert_maxpool)
MODULES[nn.AvgPool2d] = ("avgpool", convert_avgpool)
MODULES[nn.AdaptiveAvgPool2d] = ("avgpool", convert_adaptive)


# functional forms: F.max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
# return_indices=False), F.avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
# count_include_pad=True, divisor_override=None), F.adaptive_avg_pool2d(x, output_size)
def _bind(fx, names, defaults):
    vals = dict(defaults)
    vals.update(zip(names, fx.args[1:]))
    vals.update(fx.kwargs)
    return vals


def convert_f_maxpool(node_name, fx, in_shapes, out_shape):
    v = _bind(fx, ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"],
              dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False))
    if v["return_indices"]:
        raise OdlError(f"graph node '{node_name}' (max_pool2d): return_indices=True is not supported")
    return _geom(node_name, "max_pool2d", v["kernel_size"], v["stride"], v["padding"], v["dilation"],
                 v["ceil_mode"]), {}


def convert_f_avgpool(node_name, fx, in_shapes, out_shape):
    v = _bind(fx, ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"],
              dict(stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None))
    if v["divisor_override"]:
        raise OdlError(f"graph node '{node_name}' (avg_pool2d): divisor_override is not supported")
    g = _geom(node_name, "avg_pool2d", v["kernel_size"], v["stride"], v["padding"], 1, v["ceil_mode"])
    return dict(g, count_include_pad=int(v["count_include_pad"])), {}


FUNCTIONS[F.max_pool2d] = ("maxpool", convert_f_maxpool)
FUNCTIONS[F.avg_pool2d] = ("avgpool", convert_f_avgpool)
FUNCTIONS[F.adaptive_avg_pool2d] = ("avgpool", convert_adaptive)
