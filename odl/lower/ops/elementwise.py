"""Elementwise ops the torch.export frontend maps core ATen onto (kernels_c/broadcast.c), forward and backward:

- affine: y = x * scale + shift, a tensor with a scalar (aten.add/sub/mul/div with a number); dx = scale * dy.
- clamp: y = clamp(x, lo, hi) with any bounds (aten.clamp, aten.hardtanh other than ReLU / ReLU6); the gradient
  passes where x lies within the bounds, inclusive for clamp (PyTorch's clamp_backward), exclusive for hardtanh.
- mul: y = a * b, same shapes or b broadcast over a's trailing dims (a squeeze-excitation gate [N, C, 1, 1] times
  [N, C, H, W]: rows = N*C, hw = H*W); da = dy * b, db = per-row sums of dy * a.
- slice: a contiguous range along one dim (aten.slice, the pieces of aten.split), copied out as blocks
  (odl_block_copy); the gradient is copied back into that range of dx, the rest zero (or added when d(x) already
  has a contribution).
"""
from __future__ import annotations

import math

from odl.ir.program import Ptr
from odl.lower.ops.registry import register


class Affine:
    name = "affine"

    def forward(self, node, L):
        x = node.inputs[0]
        y = L.output_inplace(node, x)     # the backward reads neither x nor y
        L.call("odl_affine_fwd", node.report_name, "forward", x=Ptr(L.value(x)), y=Ptr(y), len=math.prod(node.shape),
               scale=float(node.attrs["scale"]), shift=float(node.attrs["shift"]))

    def backward(self, node, L):
        tgt = L.grad_inplace(node.inputs[0], node)
        if tgt is None:
            return
        dx, acc = tgt
        L.call("odl_affine_bwd", node.report_name, "input_grad", dy=Ptr(L.grad(node.name)), dx=Ptr(dx),
               len=math.prod(node.shape), scale=float(node.attrs["scale"]), accumulate=acc)


class Clamp:
    name = "clamp"

    @staticmethod
    def _bounds(node):
        lo, hi = node.attrs["lo"], node.attrs["hi"]
        return dict(lo=float(lo or 0.0), hi=float(hi or 0.0), has_lo=int(lo is not None), has_hi=int(hi is not None))

    def forward(self, node, L):
        # the backward reads x: the output never overwrites it
        L.call("odl_clamp_fwd", node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(L.output(node)),
               len=math.prod(node.shape), **self._bounds(node))

    def backward(self, node, L):
        tgt = L.grad_inplace(node.inputs[0], node)
        if tgt is None:
            return
        dx, acc = tgt
        L.call("odl_clamp_bwd", node.report_name, "input_grad", x=Ptr(L.value(node.inputs[0])),
               dy=Ptr(L.grad(node.name)), dx=Ptr(dx), len=math.prod(node.shape), inclusive=int(node.attrs["inclusive"]),
               accumulate=acc, **self._bounds(node))


class Mul:
    name = "mul"

    def forward(self, node, L):
        a, b = node.inputs
        L.call("odl_rowmul_fwd", node.report_name, "forward", x=Ptr(L.value(a)), g=Ptr(L.value(b)),
               y=Ptr(L.output(node)), c=node.attrs["rows"], hw=node.attrs["hw"])

    def backward(self, node, L):
        a, b = node.inputs
        rows, hw = node.attrs["rows"], node.attrs["hw"]
        dy = L.grad(node.name)
        tb = L.grad_target(b)
        if tb is not None:
            dg, acc = tb
            L.call("odl_rowmul_dg", node.report_name, "input_grad", dy=Ptr(dy), x=Ptr(L.value(a)), dg=Ptr(dg), c=rows,
                   hw=hw, accumulate=acc)
        ta = L.grad_target(a)
        if ta is not None:
            dx, acc = ta
            L.call("odl_rowmul_dx", node.report_name, "input_grad", dy=Ptr(dy), g=Ptr(L.value(b)), dx=Ptr(dx),
                   c=rows, hw=hw, accumulate=acc)


class Slice:
    name = "slice"

    def forward(self, node, L):
        a = node.attrs
        L.call("odl_block_copy", node.report_name, "forward", src=Ptr(L.value(node.inputs[0]), elem=a["off"]),
               dst=Ptr(L.output(node)), outer=a["outer"], len=a["len"], src_stride=a["stride"], dst_stride=a["len"],
               accumulate=0)

    def backward(self, node, L):
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        dx, acc = tgt
        a = node.attrs
        if not acc and a["len"] != a["stride"]:
            # the first contribution to d(x) writes all of it: zeros outside this slice
            L.call("odl_fill", node.report_name, "input_grad", x=Ptr(dx), len=dx.nelem, value=0.0)
        L.call("odl_block_copy", node.report_name, "input_grad", src=Ptr(L.grad(node.name)), dst=Ptr(dx, elem=a["off"]),
               outer=a["outer"], len=a["len"], src_stride=a["len"], dst_stride=a["stride"], accumulate=acc)


register(Affine())
register(Clamp())
register(Mul())
register(Slice())


class Bias:
    """y = x + bias[c] over x [N, C, ...] (a parameter of shape [C, 1, 1] added in the model's code); dx = dy,
    dbias = sums of dy over N and the trailing dims."""
    name = "bias"

    def forward(self, node, L):
        x = node.inputs[0]
        n, c = node.shape[0], node.shape[1]
        hw = math.prod(node.shape[2:])
        y = L.output_inplace(node, x)    # the backward reads neither x nor y
        if y is not L.value(x):
            L.call("odl_copy", node.report_name, "forward", src=Ptr(L.value(x)), dst=Ptr(y), len=math.prod(node.shape),
                   accumulate=0)
        L.call("odl_bias_add", node.report_name, "forward", y=Ptr(y), bias=Ptr(L.param(node, "bias")), n=n, c=c, hw=hw)

    def backward(self, node, L):
        n, c = node.shape[0], node.shape[1]
        hw = math.prod(node.shape[2:])
        db = L.param_grad(node, "bias")
        if db is not None:
            L.call("odl_bias_grad", node.report_name, "weight_grad", dy=Ptr(L.grad(node.name)), db=Ptr(db), n=n, c=c,
                   hw=hw, accumulate=0)
        x = node.inputs[0]
        if L.can_share_grad(x, node):
            L.grad_inplace(x, node)
            return
        tgt = L.grad_target(x)
        if tgt is not None:
            dx, acc = tgt
            L.call("odl_copy", node.report_name, "input_grad", src=Ptr(L.grad(node.name)), dst=Ptr(dx),
                   len=math.prod(node.shape), accumulate=acc)


register(Bias())


class Transpose:
    """A permute that swaps two adjacent groups of dims: x viewed [outer, A, B, inner] -> y [outer, B, A, inner]
    (ShuffleNet's channel shuffle: [N, g, C/g, H, W] -> [N, C/g, g, H, W]). One block copy per (o, a): B blocks of
    `inner` elements; the backward copies them back."""
    name = "transpose"

    def _calls(self, node, L, src, dst, step, acc):
        a = node.attrs
        outer, A, B, inner = a["outer"], a["A"], a["B"], a["inner"]
        for o in range(outer):
            for i in range(A):
                xs, ys = (o * A + i) * B * inner, (o * B * A + i) * inner     # x[o, i, 0, 0] and y[o, 0, i, 0]
                if step == "forward":
                    L.call("odl_block_copy", node.report_name, step, src=Ptr(src, elem=xs), dst=Ptr(dst, elem=ys),
                           outer=B, len=inner, src_stride=inner, dst_stride=A * inner, accumulate=0)
                else:
                    L.call("odl_block_copy", node.report_name, step, src=Ptr(src, elem=ys), dst=Ptr(dst, elem=xs),
                           outer=B, len=inner, src_stride=A * inner, dst_stride=inner, accumulate=acc)

    def forward(self, node, L):
        self._calls(node, L, L.value(node.inputs[0]), L.output(node), "forward", 0)

    def backward(self, node, L):
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        dx, acc = tgt
        self._calls(node, L, L.grad(node.name), dx, "input_grad", acc)


register(Transpose())
