"""Conv2d (groups = 1): im2col + matmul forward; im2col + dY.col^T weight gradient; W^T.dY + col2im input gradient."""
from __future__ import annotations

import torch.nn as nn

from ..errors import OdlError
from ..lower import CExpr, Ptr
from . import MODULES, register


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def convert_module(node_name, mod: nn.Conv2d, in_shapes, out_shape):
    where = f"graph node '{node_name}' (Conv2d)"
    if mod.groups != 1:
        raise OdlError(f"{where}: groups={mod.groups} is not supported (groups=1 only)")
    if _pair(mod.dilation) != (1, 1):
        raise OdlError(f"{where}: dilation={mod.dilation} is not supported")
    if mod.padding_mode != "zeros":
        raise OdlError(f"{where}: padding_mode='{mod.padding_mode}' is not supported (zeros only)")
    kh, kw = _pair(mod.kernel_size)
    sh, sw = _pair(mod.stride)
    if isinstance(mod.padding, str):
        if mod.padding == "valid":
            pt = pl = 0
        else:  # 'same' (stride 1): PyTorch puts the odd extra pixel at the bottom/right
            pt, pl = (kh - 1) // 2, (kw - 1) // 2
    else:
        pt, pl = _pair(mod.padding)
    return dict(kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl), {"weight": "weight", "bias": "bias" if mod.bias is not None else None}


class Conv2d:
    name = "conv2d"

    @staticmethod
    def dims(node, L):
        x = node.inputs[0]
        n, c, h, w = L.shape(x)
        _, cout, ho, wo = node.shape
        a = node.attrs
        geom = dict(c=c, h=h, w=w, kh=a["kh"], kw=a["kw"], sh=a["sh"], sw=a["sw"], pt=a["pt"], pl=a["pl"], ho=ho, wo=wo)
        return x, n, c * h * w, cout, c * a["kh"] * a["kw"], ho * wo, geom

    def forward(self, node, L):
        x, n, xs, cout, k, hw, geom = self.dims(node, L)
        y = L.output(node)
        w = L.param(node, "weight")
        col = L.scratch(node.name + "_col", k * hw)
        with L.per_sample(n):
            L.call("odl_im2col", node.report_name, "transform", x=Ptr(L.value(x), xs), col=Ptr(col), **geom)
            L.call("odl_mm_nn", node.report_name, "forward", macs=cout * k * hw,
                   a=Ptr(w), b=Ptr(col), c=Ptr(y, cout * hw), m=cout, n=hw, k=k, accumulate=0)
        if "bias" in node.params:
            L.call("odl_bias_add", node.report_name, "forward", y=Ptr(y), bias=Ptr(L.param(node, "bias")),
                   n=n, c=cout, hw=hw)

    def backward(self, node, L):
        x, n, xs, cout, k, hw, geom = self.dims(node, L)
        dy = L.grad(node.name)
        dw = L.param_grad(node, "weight")
        if dw is not None:
            col = L.scratch(node.name + "_col_wg", k * hw)
            with L.per_sample(n):
                L.call("odl_im2col", node.report_name, "transform", x=Ptr(L.value(x), xs), col=Ptr(col), **geom)
                L.call("odl_mm_nt", node.report_name, "weight_grad", macs=cout * k * hw,
                       a=Ptr(dy, cout * hw), b=Ptr(col), c=Ptr(dw), m=cout, n=k, k=hw, accumulate=CExpr("n > 0"))
        db = L.param_grad(node, "bias")
        if db is not None:
            L.call("odl_bias_grad", node.report_name, "weight_grad", dy=Ptr(dy), db=Ptr(db), n=n, c=cout, hw=hw,
                   accumulate=0)
        tgt = L.grad_target(x)
        if tgt is not None:
            dx, acc = tgt
            dcol = L.scratch(node.name + "_dcol", k * hw)
            with L.per_sample(n):
                L.call("odl_mm_tn", node.report_name, "input_grad", macs=cout * k * hw,
                       a=Ptr(L.param(node, "weight")), b=Ptr(dy, cout * hw), c=Ptr(dcol), m=k, n=hw, k=cout,
                       accumulate=0)
                L.call("odl_col2im", node.report_name, "transform", col=Ptr(dcol), dx=Ptr(dx, xs), accumulate=acc,
                       **geom)


register(Conv2d())
MODULES[nn.Conv2d] = ("conv2d", convert_module)
