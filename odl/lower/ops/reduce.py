"""Sum / mean over dims, torch.cat / torch.stack, softmax / log_softmax over one dim, nn.Identity (kernels_c/reduce.c).

A dim range of a dense tensor is the middle axis of a [outer, r, inner] view, so sum/mean over one contiguous range
of dims and softmax over one dim are one kernel each. cat / stack copy each input into its slice of the output
(outer blocks of len elements); the gradient is the same slices copied back (accumulated where the input already
has a gradient)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from odl.common.errors import OdlError
from odl.ir.program import Ptr
from odl.lower.ops.registry import FUNCTIONS, METHODS, MODULES, register
from odl.lower.ops.smooth import fx_arg


def _dims(node_name, what, dim, ndim) -> list[int]:
    if dim is None:
        return list(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims:
        return list(range(ndim))
    if not all(isinstance(d, int) for d in dims):
        raise OdlError(f"graph node '{node_name}' ({what}): dim must be constant integers, got {dim!r}")
    if any(not -ndim <= d < ndim for d in dims):
        raise OdlError(f"graph node '{node_name}' ({what}): dim {dim!r} out of range for a {ndim}-d input")
    return sorted({d % ndim for d in dims})


def _view3(shape, lo, hi):
    """(outer, r, inner) of shape with dims lo..hi as the middle axis."""
    return math.prod(shape[:lo]), math.prod(shape[lo:hi + 1]), math.prod(shape[hi + 1:])


def _reduce_convert(mean: bool):
    what = "mean" if mean else "sum"

    def convert(node_name, fx, in_shapes, out_shape):
        if len(in_shapes) != 1:
            raise OdlError(f"graph node '{node_name}' ({what}): only a tensor reduced over constant dims is supported")
        if fx_arg(fx, 3, "dtype", None) is not None:
            raise OdlError(f"graph node '{node_name}' ({what}): dtype= is not supported")
        shape = in_shapes[0]
        dims = _dims(node_name, what, fx_arg(fx, 1, "dim", None), len(shape))
        if dims != list(range(dims[0], dims[-1] + 1)):
            raise OdlError(f"graph node '{node_name}' ({what}): dims {dims} of input {list(shape)} are not one "
                           f"contiguous range (reduce in two steps, or permute first)")
        outer, r, inner = _view3(shape, dims[0], dims[-1])
        return {"outer": outer, "r": r, "inner": inner, "scale": 1.0 / r if mean else 1.0}, {}
    return convert


class Sum:
    name = "sum"

    def forward(self, node, L):
        a = node.attrs
        L.call("odl_sum_fwd", node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(L.output(node)),
               outer=a["outer"], r=a["r"], inner=a["inner"], scale=float(a["scale"]))

    def backward(self, node, L):
        tgt = L.grad_target(node.inputs[0])
        if tgt is None:
            return
        dx, acc = tgt
        a = node.attrs
        L.call("odl_sum_bwd", node.report_name, "input_grad", dy=Ptr(L.grad(node.name)), dx=Ptr(dx),
               outer=a["outer"], r=a["r"], inner=a["inner"], scale=float(a["scale"]), accumulate=acc)


def _cat_convert(stack: bool):
    what = "stack" if stack else "cat"

    def convert(node_name, fx, in_shapes, out_shape):
        seq = fx_arg(fx, 0, "tensors", None)
        if not isinstance(seq, (list, tuple)) or not all(isinstance(t, torch.fx.Node) for t in seq) \
                or len(seq) != len(in_shapes) or any(len(s) == 0 for s in in_shapes):
            raise OdlError(f"graph node '{node_name}' ({what}): only a list of tensors is supported")
        dim = fx_arg(fx, 1, "dim", 0)
        nd = len(out_shape)
        if not isinstance(dim, int) or not -nd <= dim < nd:
            raise OdlError(f"graph node '{node_name}' ({what}): dim {dim!r} is not a constant dim of the output")
        dim %= nd
        outer, total, inner = _view3(out_shape, dim, dim)
        lens, offs, off = [], [], 0
        for s in in_shapes:
            k = 1 if stack else s[dim]
            lens.append(k * inner)
            offs.append(off * inner)
            off += k
        return {"outer": outer, "lens": lens, "offs": offs, "stride": total * inner}, {}
    return convert


class Cat:
    name = "cat"

    def forward(self, node, L):
        a = node.attrs
        y = L.output(node)
        for v, n, off in zip(node.inputs, a["lens"], a["offs"]):
            L.call("odl_block_copy", node.report_name, "forward", src=Ptr(L.value(v)), dst=Ptr(y, elem=off),
                   outer=a["outer"], len=n, src_stride=n, dst_stride=a["stride"], accumulate=0)

    def backward(self, node, L):
        a = node.attrs
        dy = L.grad(node.name)
        for v, n, off in zip(node.inputs, a["lens"], a["offs"]):
            tgt = L.grad_target(v)
            if tgt is None:
                continue
            dx, acc = tgt
            L.call("odl_block_copy", node.report_name, "input_grad", src=Ptr(dy, elem=off), dst=Ptr(dx),
                   outer=a["outer"], len=n, src_stride=a["stride"], dst_stride=n, accumulate=acc)


def _softmax_convert(log: bool):
    what = "log_softmax" if log else "softmax"

    def convert(node_name, mod_or_fx, in_shapes, out_shape):
        if isinstance(mod_or_fx, nn.Module):
            dim = mod_or_fx.dim
        else:
            dim = fx_arg(mod_or_fx, 1, "dim", None)
            if mod_or_fx.kwargs.get("dtype") is not None:
                raise OdlError(f"graph node '{node_name}' ({what}): dtype= is not supported")
        nd = len(in_shapes[0])
        if not isinstance(dim, int) or not -nd <= dim < nd:
            raise OdlError(f"graph node '{node_name}' ({what}): give a constant dim (e.g. dim=-1), got {dim!r}")
        outer, r, inner = _view3(in_shapes[0], dim % nd, dim % nd)
        return {"outer": outer, "r": r, "inner": inner, "log": int(log)}, {}
    return convert


class Softmax:
    """softmax / log_softmax: the backward reads the output only, so the output may overwrite a dead input."""
    name = "softmax"
    backward_reads_output = True

    def forward(self, node, L):
        a = node.attrs
        y = L.output_inplace(node, node.inputs[0])
        L.call("odl_softmax_fwd", node.report_name, "forward", x=Ptr(L.value(node.inputs[0])), y=Ptr(y),
               outer=a["outer"], r=a["r"], inner=a["inner"], log=a["log"])

    def backward(self, node, L):
        tgt = L.grad_inplace(node.inputs[0], node)
        if tgt is None:
            return
        dx, acc = tgt
        a = node.attrs
        L.call("odl_softmax_bwd", node.report_name, "input_grad", y=Ptr(L.value(node.name)),
               dy=Ptr(L.grad(node.name)), dx=Ptr(dx), outer=a["outer"], r=a["r"], inner=a["inner"], log=a["log"],
               accumulate=acc)


def check_loss(graph, loss: str):
    """Refuse a loss that would silently compute something else on this model's output."""
    by_name = {n.name: n for n in graph.nodes}
    out = by_name.get(graph.output)
    while out is not None and out.op == "view":      # flatten / reshape / Identity of a softmax is still one
        out = by_name.get(out.inputs[0])
    if out is not None and out.op == "softmax" and loss in ("xent", "bce"):
        kind = "log_softmax" if out.attrs["log"] else "softmax"
        if loss == "xent" and kind == "log_softmax":
            return  # cross-entropy of log-probabilities is their NLL (log_softmax is idempotent): exact
        again = "a second softmax" if loss == "xent" else "a sigmoid"
        raise OdlError(f"graph node '{out.name}' ({out.target}): the model ends in {kind}, and --loss {loss} would "
                       f"apply {again} to its {kind} values; end the model in log_softmax and use --loss nll "
                       f"(or return the logits and use --loss xent)")


def _identity(node_name, mod, in_shapes, out_shape):
    return {}, {}


register(Sum())
register(Cat())
register(Softmax())
for _fn, _mean in ((torch.sum, False), (torch.mean, True)):
    FUNCTIONS[_fn] = ("sum", _reduce_convert(_mean))
METHODS["sum"] = ("sum", _reduce_convert(False))
METHODS["mean"] = ("sum", _reduce_convert(True))
FUNCTIONS[torch.cat] = ("cat", _cat_convert(False))
FUNCTIONS[torch.concat] = ("cat", _cat_convert(False))
FUNCTIONS[torch.stack] = ("cat", _cat_convert(True))
for _fn in (F.softmax, torch.softmax):
    FUNCTIONS[_fn] = ("softmax", _softmax_convert(False))
for _fn in (F.log_softmax, torch.log_softmax):
    FUNCTIONS[_fn] = ("softmax", _softmax_convert(True))
METHODS["softmax"] = ("softmax", _softmax_convert(False))
METHODS["log_softmax"] = ("softmax", _softmax_convert(True))
MODULES[nn.Softmax] = ("softmax", _softmax_convert(False))
MODULES[nn.LogSoftmax] = ("softmax", _softmax_convert(True))
MODULES[nn.Identity] = ("view", _identity)
