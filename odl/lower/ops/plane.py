"""What the spatial ops share: [N, C, L] seen as [N, C, 1, L], and ops that map each input plane to an output plane
with one forward and one backward kernel taking x/y (dy/dx) and the shapes (adaptive pooling, upsampling)."""
from __future__ import annotations

from odl.ir.program import Ptr


def shape4(shape):
    """[N, C, L] (1-D) as [N, C, 1, L]."""
    return tuple(shape) if len(shape) == 4 else (shape[0], shape[1], 1, shape[2])


class PlaneMap:
    """An op whose kernels map x [N, C, H, W] to y [N, C, HO, WO] plane by plane: `fwd_kernel(x, y, **dims)` and
    `bwd_kernel(dy, dx, accumulate, **dims)`. Subclasses name the kernels and may add attributes to `extra`."""
    fwd_kernel = ""
    bwd_kernel = ""

    @staticmethod
    def extra(node) -> dict:
        return {}

    def dims(self, node, L) -> dict:
        n, c, h, w = shape4(L.shape(node.inputs[0]))
        _, _, ho, wo = shape4(node.shape)
        return dict(n=n, c=c, h=h, w=w, ho=ho, wo=wo, **self.extra(node))

    def forward(self, node, L):
        L.call(self.fwd_kernel, node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(L.output(node)),
               **self.dims(node, L))

    def backward(self, node, L):
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        dx, acc = tgt
        L.call(self.bwd_kernel, node.report_name, "input_grad", dy=Ptr(L.grad(node.name)), dx=Ptr(dx),
               accumulate=acc, **self.dims(node, L))
