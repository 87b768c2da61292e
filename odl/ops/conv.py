"""Conv2d (groups = 1): im2col + matmul forward; im2col + dY.col^T weight gradient; W^T.dY + col2im input gradient."""
from __future__ import annotations

import torch.nn as nn

from ..errors import OdlError
from ..ir import CExpr, Ptr
from . import MODULES, register


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def convert_module(node_name, mod: nn.Conv2d, in_shapes, out_shape):
    where = f"graph node '{node_name}' (Conv2d)"
    depthwise = mod.groups == mod.in_channels == mod.out_channels and mod.groups > 1
    if mod.groups != 1 and not depthwise:
        raise OdlError(f"{where}: groups={mod.groups} is not supported (groups=1, or depthwise: "
                       f"groups = in_channels = out_channels)")
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
    attrs = dict(kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl)
    if depthwise:
        attrs["_op"] = "dwconv2d"
    return (attrs,
            {"weight": "weight", "bias": "bias" if mod.bias is not None else None})


class Conv2d:
    """groups = 1. Pointwise (1x1, stride 1, no padding): the input is its own im2col matrix. Otherwise im2col
    in chunks of whole output rows, so the im2col scratch stays under TrainConfig.im2col_bytes whatever the
    layer size: each chunk is [K, rows*WO] and the matmuls address their slice of Y / dY with a row stride."""
    name = "conv2d"

    @staticmethod
    def dims(node, L):
        x = node.inputs[0]
        n, c, h, w = L.shape(x)
        _, cout, ho, wo = node.shape
        a = node.attrs
        geom = dict(c=c, h=h, w=w, kh=a["kh"], kw=a["kw"], sh=a["sh"], sw=a["sw"], pt=a["pt"], pl=a["pl"], ho=ho, wo=wo)
        return x, n, c * h * w, cout, c * a["kh"] * a["kw"], ho * wo, geom

    @staticmethod
    def pointwise(node) -> bool:
        a = node.attrs
        return (a["kh"], a["kw"], a["sh"], a["sw"], a["pt"], a["pl"]) == (1, 1, 1, 1, 0, 0)

    @staticmethod
    def chunks(node, L, k, geom):
        """Output-row ranges [r0, r1) whose im2col block fits the scratch limit, and the geometry of each."""
        ho, wo = geom["ho"], geom["wo"]
        rows = max(1, min(ho, L.cfg.im2col_bytes // max(1, k * wo * L.elem_bytes)))
        out = []
        for r0 in range(0, ho, rows):
            r1 = min(ho, r0 + rows)
            out.append((r0, r1, dict(geom, ho=r1 - r0, pt=geom["pt"] - r0 * geom["sh"])))
        return out, rows

    def forward(self, node, L):
        x, n, xs, cout, k, hw, geom = self.dims(node, L)
        y = L.output(node)
        w = L.param(node, "weight")
        wo = geom["wo"]
        pw = self.pointwise(node)
        chunks, rows = ([(0, geom["ho"], geom)], geom["ho"]) if pw else self.chunks(node, L, k, geom)
        col = None if pw else L.scratch(node.name + "_col", k * rows * wo)

        def emit(form):
            # nn: Y = W.col with W [cout, K]; tn: the same product from W^T [K, cout] (transposed once per step),
            # whose rows feed the matmul's scalar loads with immediate offsets
            a = Ptr(w)
            if form == "tn":
                wt = L.scratch(node.name + "_wt", k * cout)
                L.call("odl_transpose", node.report_name, "transform", src=Ptr(w), dst=Ptr(wt), rows=cout, cols=k,
                       ldi=k, ldo=cout)
                a = Ptr(wt)
            with L.per_sample(n):
                for r0, r1, g in chunks:
                    if not pw:
                        L.call("odl_im2col", node.report_name, "transform", x=Ptr(L.value(x), xs), col=Ptr(col),
                               **g)
                    L.call(f"odl_mm_{form}", node.report_name, "forward", macs=cout * k * (r1 - r0) * wo,
                           a=a, b=Ptr(L.value(x), xs) if pw else Ptr(col), c=Ptr(y, cout * hw, r0 * wo), m=cout,
                           n=(r1 - r0) * wo, k=k, accumulate=0, ldc=hw)

        L.choose(node.report_name, "conv2d.forward",
                 dict(n=n, cout=cout, k=k, hw=hw, rows=rows, wo=wo, pw=int(pw)),
                 {"nn": lambda: emit("nn"), "tn": lambda: emit("tn")})
        if "bias" in node.params:
            L.call("odl_bias_add", node.report_name, "forward", y=Ptr(y), bias=Ptr(L.param(node, "bias")),
                   n=n, c=cout, hw=hw)

    def backward(self, node, L):
        x, n, xs, cout, k, hw, geom = self.dims(node, L)
        dy = L.grad(node.name)
        dw = L.param_grad(node, "weight")
        wo = geom["wo"]
        pw = self.pointwise(node)
        chunks, rows = ([(0, geom["ho"], geom)], geom["ho"]) if pw else self.chunks(node, L, k, geom)
        if dw is not None:
            col = None if pw else L.scratch(node.name + "_col_wg", k * rows * wo)
            dyt = L.scratch(node.name + "_dyt", cout * rows * wo)

            def emit_wg(how):
                with L.per_sample(n):
                    for i, (r0, r1, g) in enumerate(chunks):
                        if not pw:
                            L.call("odl_im2col", node.report_name, "transform", x=Ptr(L.value(x), xs),
                                   col=Ptr(col), **g)
                        p = (r1 - r0) * wo
                        acc = CExpr("n > 0") if i == 0 else 1
                        src = Ptr(L.value(x), xs) if pw else Ptr(col)
                        if how == "dot":
                            # dW = dY.col^T: dot products along the pixels
                            L.call("odl_mm_nt", node.report_name, "weight_grad", macs=cout * k * p,
                                   a=Ptr(dy, cout * hw, r0 * wo), b=src, c=Ptr(dw), m=cout, n=k, k=p,
                                   accumulate=acc, lda=hw, ldb=hw if pw else p)
                        else:
                            # dW^T = col.dY^T as outer products over the pixels (mm_nn storing C transposed),
                            # dY^T being a [pixels, cout] copy of the chunk (K/cout times smaller than col)
                            L.call("odl_transpose", node.report_name, "transform", src=Ptr(dy, cout * hw, r0 * wo),
                                   dst=Ptr(dyt), rows=cout, cols=p, ldi=hw, ldo=cout)
                            L.call("odl_mm_nn", node.report_name, "weight_grad", macs=cout * k * p, a=src,
                                   b=Ptr(dyt), c=Ptr(dw), m=k, n=cout, k=p, accumulate=acc,
                                   lda=hw if pw else p, ct=1, ldc=k)

            L.choose(node.report_name, "conv2d.weight_grad",
                     dict(n=n, cout=cout, k=k, hw=hw, rows=rows, wo=wo, pw=int(pw)),
                     {"dot": lambda: emit_wg("dot"), "outer": lambda: emit_wg("outer")})
        db = L.param_grad(node, "bias")
        if db is not None:
            L.call("odl_bias_grad", node.report_name, "weight_grad", dy=Ptr(dy), db=Ptr(db), n=n, c=cout, hw=hw,
                   accumulate=0)
        tgt = L.grad_target(x)
        if tgt is not None:
            dx, acc = tgt
            dcol = None if pw else L.scratch(node.name + "_dcol", k * rows * wo)
            with L.per_sample(n):
                for i, (r0, r1, g) in enumerate(chunks):
                    L.call("odl_mm_tn", node.report_name, "input_grad", macs=cout * k * (r1 - r0) * wo,
                           a=Ptr(L.param(node, "weight")), b=Ptr(dy, cout * hw, r0 * wo),
                           c=Ptr(dx, xs) if pw else Ptr(dcol), m=k, n=(r1 - r0) * wo, k=cout,
                           accumulate=acc if pw else 0, ldb=hw)
                    if not pw:
                        L.call("odl_col2im", node.report_name, "transform", col=Ptr(dcol), dx=Ptr(dx, xs),
                               accumulate=acc if i == 0 else 1, **g)


class DepthwiseConv2d:
    """groups = channels: direct kernels, one filter per channel."""
    name = "dwconv2d"

    @staticmethod
    def dims(node, L):
        x = node.inputs[0]
        n, c, h, w = L.shape(x)
        _, _, ho, wo = node.shape
        a = node.attrs
        geom = dict(c=c, h=h, w_=w, kh=a["kh"], kw=a["kw"], sh=a["sh"], sw=a["sw"], pt=a["pt"], pl=a["pl"], ho=ho,
                    wo=wo)
        return x, n, c * h * w, c * ho * wo, c * a["kh"] * a["kw"] * ho * wo, geom

    def forward(self, node, L):
        x, n, xs, ys, macs, geom = self.dims(node, L)
        y = L.output(node)
        with L.per_sample(n):
            L.call("odl_dwconv_fwd", node.report_name, "forward", macs=macs, x=Ptr(L.value(x), xs),
                   w=Ptr(L.param(node, "weight")), y=Ptr(y, ys), **geom)
        if "bias" in node.params:
            L.call("odl_bias_add", node.report_name, "forward", y=Ptr(y), bias=Ptr(L.param(node, "bias")),
                   n=n, c=geom["c"], hw=geom["ho"] * geom["wo"])

    def backward(self, node, L):
        x, n, xs, ys, macs, geom = self.dims(node, L)
        dy = L.grad(node.name)
        dw = L.param_grad(node, "weight")
        if dw is not None:
            with L.per_sample(n):
                L.call("odl_dwconv_wgrad", node.report_name, "weight_grad", macs=macs, x=Ptr(L.value(x), xs),
                       dy=Ptr(dy, ys), dw=Ptr(dw), accumulate=CExpr("n > 0"), **geom)
        db = L.param_grad(node, "bias")
        if db is not None:
            L.call("odl_bias_grad", node.report_name, "weight_grad", dy=Ptr(dy), db=Ptr(db), n=n, c=geom["c"],
                   hw=geom["ho"] * geom["wo"], accumulate=0)
        tgt = L.grad_target(x)
        if tgt is not None:
            dx, acc = tgt
            with L.per_sample(n):
                L.call("odl_dwconv_igrad", node.report_name, "input_grad", macs=macs, dy=Ptr(dy, ys),
                       w=Ptr(L.param(node, "weight")), dx=Ptr(dx, xs), accumulate=acc, **geom)


register(Conv2d())
register(DepthwiseConv2d())


MODULES[nn.Conv2d] = ("conv2d", convert_module)
