"""Conv2d / Conv1d (any groups, dilation) and ConvTranspose2d: im2col + matmul forward; im2col + dY.col^T weight
gradient; W^T.dY + col2im input gradient (ConvTranspose2d: the same kernels the other way round)."""
from __future__ import annotations

import torch.nn as nn

from odl.common.errors import OdlError
from odl.ir.program import CExpr, Ptr
from odl.tile.memory import gathers
from odl.lower.ops.plane import shape4
from odl.lower.ops.registry import MODULES, register


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _conv_attrs(where, mod, nd):
    """Conv1d / Conv2d settings as 2-D attributes (a Conv1d is a Conv2d over [N, C, 1, L] with a 1-row kernel)."""
    def tup(v, fill=1):
        if nd == 2:
            return _pair(v)
        return (fill,) + tuple(v) if isinstance(v, (tuple, list)) else (fill, v)

    if mod.padding_mode != "zeros":
        raise OdlError(f"{where}: padding_mode='{mod.padding_mode}' is not supported (zeros only)")
    kh, kw = tup(mod.kernel_size)
    sh, sw = tup(mod.stride)
    dh, dw = tup(mod.dilation)
    if isinstance(mod.padding, str):
        if mod.padding == "valid":
            pt = pl = 0
        else:  # 'same' (stride 1): PyTorch puts the odd extra pixel at the bottom/right
            pt, pl = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    else:
        pt, pl = tup(mod.padding, 0)
    attrs = dict(kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl)
    if (dh, dw) != (1, 1):
        attrs.update(dh=dh, dw=dw)
    return attrs


def convert_module(node_name, mod, in_shapes, out_shape):
    nd = 1 if isinstance(mod, nn.Conv1d) else 2
    kind = type(mod).__name__
    where = f"graph node '{node_name}' ({kind})"
    if len(in_shapes[0]) != nd + 2:
        raise OdlError(f"{where}: input shape {list(in_shapes[0])} is not {'NxCxL' if nd == 1 else 'NxCxHxW'} "
                       f"(unbatched input is not supported)")
    attrs = _conv_attrs(where, mod, nd)
    g = mod.groups
    depthwise = g == mod.in_channels == mod.out_channels and g > 1
    if depthwise and "dh" not in attrs:
        attrs["_op"] = "dwconv2d"    # direct kernels; a dilated depthwise conv takes the grouped im2col path
    elif g > 1:
        attrs["groups"] = g
    if nd == 1:   # same lowering, reported as the 1-D op
        attrs["_op"] = attrs.get("_op", "conv2d").replace("2d", "1d")
    return (attrs,
            {"weight": "weight", "bias": "bias" if mod.bias is not None else None})


def _im2col(geom) -> str:
    """The im2col kernel for a geometry: dilated convs have their own entry point (the fast paths stay as they are)."""
    return "odl_im2col_dilated" if "dh" in geom else "odl_im2col"


def _col2im(geom) -> str:
    return "odl_col2im_dilated" if "dh" in geom else "odl_col2im"


RAMP_WO = 32
TN_MAX_BYTES = 256 * 1024   # largest weight the forward's "tn" variant copies transposed (every built-in fits)


class Conv2d:
    """Conv2d and Conv1d (H = 1), any groups, any dilation. Pointwise (1x1, stride 1, no padding): the input is
    its own im2col matrix. Otherwise im2col in chunks of whole output rows, so the im2col scratch stays under
    TrainConfig.im2col_bytes whatever the layer size: each chunk is [K, rows*WO] and the matmuls address their
    slice of Y / dY with a row stride. groups = g: g independent convolutions on contiguous channel slices of x,
    W and Y (x[:, gi*C/g:], W[gi*Cout/g:], Y[:, gi*Cout/g:]), each lowered as a groups = 1 conv (K = C/g*KH*KW).
    Dilation goes to the im2col / col2im kernels (dh, dw; left out of the call when 1)."""
    name = "conv2d"

    @staticmethod
    def dims(node, L):
        x = node.inputs[0]
        n, c, h, w = shape4(L.shape(x))
        _, cout, ho, wo = shape4(node.shape)
        a = node.attrs
        g = a.get("groups", 1)
        geom = dict(c=c // g, h=h, w=w, kh=a["kh"], kw=a["kw"], sh=a["sh"], sw=a["sw"], pt=a["pt"], pl=a["pl"],
                    ho=ho, wo=wo)
        if "dh" in a:
            geom.update(dh=a["dh"], dw=a["dw"])
        return x, n, c * h * w, cout, (c // g) * a["kh"] * a["kw"], ho * wo, geom

    @staticmethod
    def groups(node) -> int:
        return node.attrs.get("groups", 1)

    @staticmethod
    def pointwise(node) -> bool:
        a = node.attrs
        return (a["kh"], a["kw"], a["sh"], a["sw"], a["pt"], a["pl"]) == (1, 1, 1, 1, 0, 0)

    @staticmethod
    def gathered(L, geom) -> bool:
        """Memory hierarchy: are this conv's im2col blocks gathered by the DMA (odl/tile/tiler.py; no dilation)? Then
        each block needs no input window in L1, and two column buffers alternate."""
        return L.cfg.dma_im2col and gathers(geom)

    @staticmethod
    def col_buffers(node, L, name, k, rows, wo, geom) -> list:
        """The im2col scratch: one buffer, or two taken in turn by the chunks when the DMA gathers them."""
        n = 2 if Conv2d.gathered(L, geom) else 1
        return [L.scratch(node.name + name + ("_" + "ab"[i] if n > 1 else ""), k * rows * wo) for i in range(n)]

    @staticmethod
    def chunks(node, L, k, geom, gather=False, ramp=False):
        """Output-row ranges [r0, r1) whose im2col block fits the scratch limit, and the geometry of each.
        gather: the DMA gathers the blocks (no input window in L1)."""
        ho, wo = geom["ho"], geom["wo"]
        rows = max(1, min(ho, L.cfg.im2col_bytes // max(1, k * wo * L.elem_bytes)))
        if L.cfg.window_bytes and not gather:
            # memory hierarchy: the input rows a chunk's windows touch must fit an L1 tile as well
            row_b = geom["c"] * geom["w"] * L.elem_bytes
            span = (geom["kh"] - 1) * geom.get("dh", 1) + 1
            fit = (L.cfg.window_bytes // max(1, row_b) - span) // geom["sh"] + 1
            rows = max(1, min(rows, fit))
        r0, step = 0, rows
        wide = gather and geom["sw"] == 1 and ramp and wo >= RAMP_WO
        if gather and (geom["sw"] > 1 or wide):
            # the first gather of a pass waits (nothing computes before it), and a strided one is slow (a DMA row
            # per element): chunks of 1, 2, 4, ... rows up to `rows`, so that it is short and each next gather
            # hides behind the chunk before
            step = 1
        bounds = []
        while r0 < ho:
            r1 = min(ho, r0 + step)
            bounds.append((r0, r1))
            r0, step = r1, min(rows, 2 * step)
        if wide and len(bounds) > 2 and bounds[-1][1] - bounds[-1][0] < bounds[-2][1] - bounds[-2][0]:
            # a short last chunk (what the ramp leaves) is what the next call waits behind: the last two share evenly
            a, b = bounds[-2][0], bounds[-1][1]
            bounds[-2:] = [(a, (a + b) // 2), ((a + b) // 2, b)]
        out = [(r0, r1, dict(geom, ho=r1 - r0, pt=geom["pt"] - r0 * geom["sh"])) for r0, r1 in bounds]
        return out, rows

    def forward(self, node, L, y=None, macs_credit=True):
        """y: recompute into this buffer (L.recompute: the output was freed after the forward to save memory; the
        extra work gets no MAC credit)."""
        x, n, xs, cout, k, hw, geom = self.dims(node, L)
        g = self.groups(node)
        cg, og = geom["c"] * geom["h"] * geom["w"], cout // g    # input elements, output channels per group
        y = y or L.output(node)
        credit = 1 if macs_credit else 0
        w = L.param(node, "weight")
        wo = geom["wo"]
        pw = self.pointwise(node)
        chunks, rows = ([(0, geom["ho"], geom)], geom["ho"]) if pw else self.chunks(node, L, k, geom,
                                                                                          self.gathered(L, geom), True)

        def emit(form):
            # scratch of its own per variant (odl tune emits every variant): it stays inside one per-sample loop,
            # which lets the memory hierarchy keep it in L1
            cols = None if pw else self.col_buffers(node, L, "_col", k, rows, wo, geom)
            # nn: Y = W.col with W [cout, K]; tn: the same product from W^T [K, cout] (transposed once per step),
            # whose rows feed the matmul's scalar loads with immediate offsets
            wt = None
            if form == "tn":
                wt = L.scratch(node.name + "_wt", k * cout)
                for gi in range(g):
                    L.call("odl_transpose", node.report_name, "transform", src=Ptr(w, 0, gi * og * k),
                           dst=Ptr(wt, 0, gi * og * k), rows=og, cols=k, ldi=k, ldo=og)
            with L.per_sample(n):
                for gi in range(g):
                    a = Ptr(wt if wt else w, 0, gi * og * k)
                    xg = Ptr(L.value(x), xs, gi * cg)
                    for ci, (r0, r1, gm) in enumerate(chunks):
                        if not pw:
                            col = cols[ci % len(cols)]
                            L.call(_im2col(gm), node.report_name, "transform", x=xg, col=Ptr(col), **gm)
                        # the bias goes into the accumulators (one move each) instead of a pass over y
                        bias = {"bias": Ptr(L.param(node, "bias"), 0, gi * og)} if "bias" in node.params else {}
                        L.call(f"odl_mm_{form}", node.report_name, "forward", macs=credit * og * k * (r1 - r0) * wo,
                               a=a, b=xg if pw else Ptr(col), c=Ptr(y, cout * hw, gi * og * hw + r0 * wo), m=og,
                               n=(r1 - r0) * wo, k=k, accumulate=0, ldc=hw, **bias)

        variants = {"nn": lambda: emit("nn"), "tn": lambda: emit("tn")}
        if k * cout * L.elem_bytes > TN_MAX_BYTES:
            # the transposed copy would be as large as a big weight (a classifier head's 1x1 conv: 576 KiB in
            # FP16), live through the step's peak: memory the whole step pays for a faster forward
            del variants["tn"]
        L.choose(node.report_name, "conv2d.forward",
                 dict(n=n, cout=og, k=k, hw=hw, rows=rows, wo=wo, pw=int(pw)), variants)

    def backward(self, node, L):
        x, n, xs, cout, k, hw, geom = self.dims(node, L)
        g = self.groups(node)
        cg, og = geom["c"] * geom["h"] * geom["w"], cout // g
        dy = L.grad(node.name)
        dw = L.param_grad(node, "weight")
        wo = geom["wo"]
        pw = self.pointwise(node)
        chunks, rows = ([(0, geom["ho"], geom)], geom["ho"]) if pw else self.chunks(node, L, k, geom,
                                                                                          self.gathered(L, geom))
        tgt = L.grad_target(x)
        as_conv = tgt is not None and not pw and self.gathered(L, geom) and geom["sh"] == geom["sw"] == 1
        if as_conv:
            # first, so that its flipped weights are dead before the weight gradient (as large) is written
            self.input_grad_as_conv(node, L, *tgt)
        cc = None if pw else self.channel_chunks(L, geom, k, hw)
        if dw is not None and cc:
            def emit_wg(how):
                self.weight_grad_by_channels(node, L, how, cc)
        elif dw is not None:
            def emit_wg(how):
                cols = None if pw else self.col_buffers(node, L, "_col_wg", k, rows, wo, geom)
                dyt = L.scratch(node.name + "_dyt", og * rows * wo) if how == "outer" else None
                with L.per_sample(n):
                    for gi in range(g):
                        xg = Ptr(L.value(x), xs, gi * cg)
                        dwg = Ptr(dw, 0, gi * og * k)
                        for i, (r0, r1, gm) in enumerate(chunks):
                            if not pw:
                                col = cols[i % len(cols)]
                                L.call(_im2col(gm), node.report_name, "transform", x=xg, col=Ptr(col), **gm)
                            p = (r1 - r0) * wo
                            acc = CExpr("n > 0") if i == 0 else 1
                            src = xg if pw else Ptr(col)
                            dyg = Ptr(dy, cout * hw, gi * og * hw + r0 * wo)
                            if how == "dot":
                                # dW = dY.col^T: dot products along the pixels
                                L.call("odl_mm_nt", node.report_name, "weight_grad", macs=og * k * p,
                                       a=dyg, b=src, c=dwg, m=og, n=k, k=p, accumulate=acc, lda=hw,
                                       ldb=hw if pw else p)
                            else:
                                # dW^T = col.dY^T as outer products over the pixels (mm_nn storing C transposed),
                                # dY^T being a [pixels, cout] copy of the chunk (K/cout times smaller than col)
                                L.call("odl_transpose", node.report_name, "transform", src=dyg, dst=Ptr(dyt),
                                       rows=og, cols=p, ldi=hw, ldo=og)
                                L.call("odl_mm_nn", node.report_name, "weight_grad", macs=og * k * p, a=src,
                                       b=Ptr(dyt), c=dwg, m=k, n=og, k=p, accumulate=acc,
                                       lda=hw if pw else p, ct=1, ldc=k)

        if dw is not None:
            L.choose(node.report_name, "conv2d.weight_grad",
                     dict(n=n, cout=og, k=k, hw=hw, rows=rows, wo=wo, pw=int(pw), **({"cc": len(cc)} if cc else {})),
                     {"dot": lambda: emit_wg("dot"), "outer": lambda: emit_wg("outer")})
        db = L.param_grad(node, "bias")
        if db is not None:
            L.call("odl_bias_grad", node.report_name, "weight_grad", dy=Ptr(dy), db=Ptr(db), n=n, c=cout, hw=hw,
                   accumulate=0)
        if tgt is not None and not as_conv:
            dx, acc = tgt
            if not pw:          # col2im tiles hold the dx rows their windows touch: chunks that fit a window
                chunks, rows = self.chunks(node, L, k, geom)
            dcol = None if pw else L.scratch(node.name + "_dcol", k * rows * wo)
            with L.per_sample(n):
                for gi in range(g):
                    dxg = Ptr(dx, xs, gi * cg)
                    zeroed = False
                    if L.cfg.window_bytes and not pw and len(chunks) > 1 and acc == 0:
                        # memory hierarchy: each col2im tile holds only the rows its windows touch, so dx is
                        # zeroed first and every chunk adds
                        L.call("odl_fill", node.report_name, "transform", x=dxg, len=cg, value=0.0)
                        zeroed = True
                    for i, (r0, r1, gm) in enumerate(chunks):
                        L.call("odl_mm_tn", node.report_name, "input_grad", macs=og * k * (r1 - r0) * wo,
                               a=Ptr(L.param(node, "weight"), 0, gi * og * k),
                               b=Ptr(dy, cout * hw, gi * og * hw + r0 * wo),
                               c=dxg if pw else Ptr(dcol), m=k, n=(r1 - r0) * wo, k=og,
                               accumulate=acc if pw else 0, ldb=hw)
                        if not pw:
                            L.call(_col2im(gm), node.report_name, "transform", col=Ptr(dcol), dx=dxg,
                                   accumulate=acc if i == 0 and not zeroed else 1, **gm)


    @staticmethod
    def channel_chunks(L, geom, k, hw) -> list | None:
        """Memory hierarchy, gathered im2col: input-channel ranges whose im2col block over ALL output pixels fits
        the scratch limit, when each holds at least 28 rows (four 7-row matmul tiles) or every channel (strided: a
        ramp of growing ranges, see below). The weight
        gradient then reduces over every pixel in one matmul per range (no accumulation across row chunks, whose
        few pixels make its stores dominate on small images). None: chunk by output rows instead."""
        if not Conv2d.gathered(L, geom):
            return None
        kk, cin = geom["kh"] * geom["kw"], geom["c"]
        cs = min(cin, L.cfg.im2col_bytes // max(1, kk * hw * L.elem_bytes))
        if cs < 1 or (cs * kk < 28 and cs < cin):
            return None
        if geom["sw"] == 1:
            parts = -(-cin // cs)
            return [(cin * i // parts, cin * (i + 1) // parts) for i in range(parts)]
        # strided: the first range's gather waits (nothing computes before it) and moves single elements, a DMA row
        # each. A ramp: half of the channels that fill four matmul tiles, then twice as many each range up to the
        # scratch limit, so that each range's gather hides behind the compute of the range before (ResNet8 FP16 8
        # harts: 10 K cycles less exposed DMA than a first range of four tiles and even ranges after it)
        out, c0, step = [], 0, max(1, min(cs, -(-28 // kk)) // 2)
        while c0 < cin:
            out.append((c0, min(cin, c0 + step)))
            c0, step = out[-1][1], min(cs, 2 * step)
        return out

    def weight_grad_by_channels(self, node, L, how, cc):
        """dW over input-channel ranges (channel_chunks): im2col of the range's channels over every output pixel,
        gathered by the DMA, then dW[:, range] = dY.col^T (dot) or its transpose col.dY^T (outer, dY^T copied once
        per sample)."""
        x, n, xs, cout, k, hw, geom = self.dims(node, L)
        g = self.groups(node)
        cg, og = geom["c"] * geom["h"] * geom["w"], cout // g
        kk, plane = geom["kh"] * geom["kw"], geom["h"] * geom["w"]
        dy, dw = L.grad(node.name), L.param_grad(node, "weight")
        cmax = max(c1 - c0 for c0, c1 in cc)
        cols = self.col_buffers(node, L, "_col_wg", cmax * kk, geom["ho"], geom["wo"], geom)
        dyt = L.scratch(node.name + "_dyt", og * hw) if how == "outer" else None
        with L.per_sample(n):
            for gi in range(g):
                dyg = Ptr(dy, cout * hw, gi * og * hw)
                if how == "outer":
                    L.call("odl_transpose", node.report_name, "transform", src=dyg, dst=Ptr(dyt), rows=og, cols=hw,
                           ldi=hw, ldo=og)
                for i, (c0, c1) in enumerate(cc):
                    col, m = cols[i % len(cols)], (c1 - c0) * kk
                    gm = dict(geom, c=c1 - c0)
                    L.call(_im2col(gm), node.report_name, "transform", x=Ptr(L.value(x), xs, gi * cg + c0 * plane),
                           col=Ptr(col), **gm)
                    dwg = Ptr(dw, 0, gi * og * k + c0 * kk)
                    if how == "dot":
                        L.call("odl_mm_nt", node.report_name, "weight_grad", macs=og * m * hw, a=dyg, b=Ptr(col),
                               c=dwg, m=og, n=m, k=hw, accumulate=CExpr("n > 0"), lda=hw, ldb=hw, ldc=k)
                    else:
                        L.call("odl_mm_nn", node.report_name, "weight_grad", macs=og * m * hw, a=Ptr(col),
                               b=Ptr(dyt), c=dwg, m=m, n=og, k=hw, accumulate=CExpr("n > 0"), lda=hw, ct=1, ldc=k)

    def input_grad_as_conv(self, node, L, dx, acc):
        """Stride 1 under the memory hierarchy: dX is the conv of dY (padded by KH-1-PT, KW-1-PL) with the weights
        flipped and their channels swapped, W'(ci, co*KH*KW + t) = W[co, ci, KH*KW-1-t]: im2col of dY, which the
        DMA gathers, then one matmul per chunk of dX rows, instead of W^T.dY and col2im. MAC credit stays the
        conv's (the products with dY's zero padding, on non-'same' convs, get none)."""
        x, n, xs, cout, k, hw, geom = self.dims(node, L)
        g = self.groups(node)
        cg, og = geom["c"] * geom["h"] * geom["w"], cout // g
        cin, kk, h, w = geom["c"], geom["kh"] * geom["kw"], geom["h"], geom["w"]
        dy = L.grad(node.name)
        wt = L.param(node, "weight")
        dgeom = dict(c=og, h=geom["ho"], w=geom["wo"], kh=geom["kh"], kw=geom["kw"], sh=1, sw=1,
                     pt=geom["kh"] - 1 - geom["pt"], pl=geom["kw"] - 1 - geom["pl"], ho=h, wo=w)
        kd = og * kk
        chunks, rows = self.chunks(node, L, kd, dgeom, True, True)
        macs = og * k * hw              # per sample and group: the conv's input-gradient MACs

        def emit(form):
            wf = L.scratch(node.name + "_wflip", g * cin * kd)
            for gi in range(g):
                L.call("odl_conv_wflip", node.report_name, "transform", src=Ptr(wt, 0, gi * og * k),
                       dst=Ptr(wf, 0, gi * cin * kd), cout=og, cin=cin, kk=kk, t=int(form == "tn"), ld=0)
            cols = self.col_buffers(node, L, "_dcol", kd, rows, w, dgeom)
            with L.per_sample(n):
                for gi in range(g):
                    dyg = Ptr(dy, cout * hw, gi * og * hw)
                    given = 0
                    for i, (r0, r1, gm) in enumerate(chunks):
                        col = cols[i % len(cols)]
                        L.call(_im2col(gm), node.report_name, "transform", x=dyg, col=Ptr(col), **gm)
                        m = macs - given if i == len(chunks) - 1 else macs * (r1 - r0) // h
                        given += m
                        L.call(f"odl_mm_{form}", node.report_name, "input_grad", macs=m,
                               a=Ptr(wf, 0, gi * cin * kd), b=Ptr(col), c=Ptr(dx, xs, gi * cg + r0 * w), m=cin,
                               n=(r1 - r0) * w, k=kd, accumulate=acc, ldc=h * w)

        L.choose(node.report_name, "conv2d.input_grad_conv",
                 dict(n=n, cin=cin, k=kd, hw=h * w, rows=rows, wo=w),
                 {"nn": lambda: emit("nn"), "tn": lambda: emit("tn")})


class DepthwiseConv2d:
    """groups = channels: direct kernels, one filter per channel."""
    name = "dwconv2d"

    @staticmethod
    def dims(node, L):
        x = node.inputs[0]
        n, c, h, w = shape4(L.shape(x))
        _, _, ho, wo = shape4(node.shape)
        a = node.attrs
        geom = dict(c=c, h=h, w_=w, kh=a["kh"], kw=a["kw"], sh=a["sh"], sw=a["sw"], pt=a["pt"], pl=a["pl"], ho=ho,
                    wo=wo)
        return x, n, c * h * w, c * ho * wo, c * a["kh"] * a["kw"] * ho * wo, geom

    def forward(self, node, L, y=None, macs_credit=True):
        """y: recompute into this buffer (L.recompute: the output was freed after the forward to save memory; the
        extra work gets no MAC credit)."""
        x, n, xs, ys, macs, geom = self.dims(node, L)
        y = y or L.output(node)
        macs = macs if macs_credit else 0
        with L.per_sample(n):
            bias = {"bias": Ptr(L.param(node, "bias"))} if "bias" in node.params else {}   # added before the rounding
            L.call("odl_dwconv_fwd", node.report_name, "forward", macs=macs, x=Ptr(L.value(x), xs),
                   w=Ptr(L.param(node, "weight")), y=Ptr(y, ys), **geom, **bias)

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


def convert_transpose(node_name, mod: nn.ConvTranspose2d, in_shapes, out_shape):
    where = f"graph node '{node_name}' (ConvTranspose2d)"
    if len(in_shapes[0]) != 4:
        raise OdlError(f"{where}: input shape {list(in_shapes[0])} is not NxCxHxW (unbatched input is not supported)")
    if mod.groups != 1:
        raise OdlError(f"{where}: groups={mod.groups} is not supported (groups=1)")
    if mod.padding_mode != "zeros":
        raise OdlError(f"{where}: padding_mode='{mod.padding_mode}' is not supported (zeros only)")
    kh, kw = _pair(mod.kernel_size)
    sh, sw = _pair(mod.stride)
    pt, pl = _pair(mod.padding)
    dh, dw = _pair(mod.dilation)
    attrs = dict(kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl)
    if (dh, dw) != (1, 1):
        attrs.update(dh=dh, dw=dw)
    return attrs, {"weight": "weight", "bias": "bias" if mod.bias is not None else None}


class ConvTranspose2d:
    """The adjoint of a conv whose input is this layer's output y [Cout, HO, WO] and whose output grid is this
    layer's input x [Cin, H, W] (output_padding only makes HO/WO larger). With W as a [Cin, K = Cout*KH*KW] matrix:
    forward  y = col2im(W^T . x)             (mm_tn + col2im: the conv's input gradient)
    dW       = x . im2col(dy)^T              (im2col + mm_nt)
    dx       = W . im2col(dy)                (im2col + mm_nn: the conv's forward)
    chunked by rows of x as Conv2d chunks by output rows, so col stays under TrainConfig.im2col_bytes."""
    name = "conv_transpose2d"

    @staticmethod
    def dims(node, L):
        x = node.inputs[0]
        n, cin, h, w = L.shape(x)
        _, cout, ho, wo = node.shape
        a = node.attrs
        geom = dict(c=cout, h=ho, w=wo, kh=a["kh"], kw=a["kw"], sh=a["sh"], sw=a["sw"], pt=a["pt"], pl=a["pl"],
                    ho=h, wo=w)
        if "dh" in a:
            geom.update(dh=a["dh"], dw=a["dw"])
        return x, n, cin, h * w, cout * ho * wo, cout * a["kh"] * a["kw"], geom

    def forward(self, node, L):
        x, n, cin, hw, ys, k, geom = self.dims(node, L)
        y = L.output(node)
        w = L.param(node, "weight")
        chunks, rows = Conv2d.chunks(node, L, k, geom)
        col = L.scratch(node.name + "_col", k * rows * geom["wo"])
        with L.per_sample(n):
            for i, (r0, r1, g) in enumerate(chunks):
                p = (r1 - r0) * geom["wo"]
                L.call("odl_mm_tn", node.report_name, "forward", macs=cin * k * p, a=Ptr(w),
                       b=Ptr(L.value(x), cin * hw, r0 * geom["wo"]), c=Ptr(col), m=k, n=p, k=cin, accumulate=0,
                       ldb=hw)
                L.call(_col2im(g), node.report_name, "transform", col=Ptr(col), dx=Ptr(y, ys),
                       accumulate=0 if i == 0 else 1, **g)
        if "bias" in node.params:
            cout = node.shape[1]
            L.call("odl_bias_add", node.report_name, "forward", y=Ptr(y), bias=Ptr(L.param(node, "bias")),
                   n=n, c=cout, hw=ys // cout)

    def backward(self, node, L):
        x, n, cin, hw, ys, k, geom = self.dims(node, L)
        dy = L.grad(node.name)
        dw = L.param_grad(node, "weight")
        tgt = L.grad_target(x)
        db = L.param_grad(node, "bias")
        if db is not None:
            cout = node.shape[1]
            L.call("odl_bias_grad", node.report_name, "weight_grad", dy=Ptr(dy), db=Ptr(db), n=n, c=cout,
                   hw=ys // cout, accumulate=0)
        if dw is None and tgt is None:
            return
        chunks, rows = Conv2d.chunks(node, L, k, geom)
        col = L.scratch(node.name + "_dcol", k * rows * geom["wo"])
        with L.per_sample(n):
            for i, (r0, r1, g) in enumerate(chunks):
                p = (r1 - r0) * geom["wo"]
                L.call(_im2col(g), node.report_name, "transform", x=Ptr(dy, ys), col=Ptr(col), **g)
                if dw is not None:
                    L.call("odl_mm_nt", node.report_name, "weight_grad", macs=cin * k * p,
                           a=Ptr(L.value(x), cin * hw, r0 * geom["wo"]), b=Ptr(col), c=Ptr(dw), m=cin, n=k, k=p,
                           accumulate=CExpr("n > 0") if i == 0 else 1, lda=hw, ldb=p)
                if tgt is not None:
                    dx, acc = tgt
                    L.call("odl_mm_nn", node.report_name, "input_grad", macs=cin * k * p,
                           a=Ptr(L.param(node, "weight")), b=Ptr(col), c=Ptr(dx, cin * hw, r0 * geom["wo"]), m=cin,
                           n=p, k=k, accumulate=acc, ldc=hw)


class Conv1d(Conv2d):
    """Conv1d: a Conv2d over [N, C, 1, L] (same kernels, same variant decisions 'conv2d.*'), named as such."""
    name = "conv1d"


class DepthwiseConv1d(DepthwiseConv2d):
    name = "dwconv1d"


register(Conv2d())
register(DepthwiseConv2d())
register(Conv1d())
register(DepthwiseConv1d())
register(ConvTranspose2d())


MODULES[nn.Conv2d] = ("conv2d", convert_module)
MODULES[nn.Conv1d] = ("conv2d", convert_module)
MODULES[nn.ConvTranspose2d] = ("conv_transpose2d", convert_transpose)
