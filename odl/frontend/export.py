"""Model import through torch.export: the model is exported in training mode, decomposed to core ATen
(`run_decompositions`, keeping a few activations odl has one kernel for), and each ATen node becomes an odl op.

Why torch.export rather than symbolic torch.fx (odl/frontend/trace.py, still selectable with --frontend fx): export runs
the model's Python, so the code real models are written in (functional layers using their own parameters, static
shape checks, `x.view(x.shape[0], -1)`, squeeze-excitation gates) arrives as a small set of ATen ops instead of the
Python constructs that produced them. Names stay the user's: parameters and buffers by their state_dict names (the
export's graph signature), layers by module path (the node's nn_module_stack).

Every ATen op odl cannot do is refused before anything is built, all of them in one message, each with its ATen
name, shape, module path and the file:line of the user's code that produced it (the node's stack trace).
"""
from __future__ import annotations

import math
import operator
import re
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from odl.common.errors import OdlError
from odl.ir.graph import Graph, Node

aten = torch.ops.aten

# Ops the core-ATen decomposition would split into several elementwise nodes that odl does in one kernel each
# (hardswish -> add, clamp, clamp, mul, div): kept whole. Everything else is decomposed to core ATen.
KEEP = [aten.hardswish.default, aten.hardsigmoid.default, aten.hardtanh.default, aten.silu.default,
        aten.elu.default, aten.leaky_relu.default, aten.gelu.default,
        # not done by odl, but refused by their own names rather than as the index arithmetic they decompose to
        aten.reflection_pad1d.default, aten.reflection_pad2d.default, aten.replication_pad1d.default,
        aten.replication_pad2d.default, aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec,
        aten.upsample_nearest1d.vec, aten.upsample_linear1d.vec]

# ATen ops that are no computation on a graph with static shapes (shape checks folded to True by export)
_DROP = {"aten._assert_scalar", "aten._assert_tensor_metadata", "aten.sym_constrain_range_for_size",
         "aten._assert_async", "aten.sym_constrain_range"}


def aten_name(target) -> str:
    """'aten.convolution' for an OpOverload (its overload left out unless it tells ops apart: 'aten.mean.dim')."""
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "_name", None) or str(target)
    if name.startswith("aten::"):
        base, _, over = name[6:].partition(".")
        ov = getattr(target, "_overloadname", over)
        return f"aten.{base}" + (f".{ov}" if ov not in ("", "default") else "")
    return str(target)


def _where(n: torch.fx.Node) -> str:
    """'module path, file:line' of the user's code behind an exported node."""
    stack = n.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    path = _clean_path(path)
    loc = ""
    st = n.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', st)
    # the innermost frame outside torch: the model's own line (F.conv2d's caller, not torch's conv.py)
    outside = [fl for fl in frames if not fl[0].startswith(_TORCH_DIR)]
    if frames:
        f, line = (outside or frames)[-1]
        loc = f"{f}:{line}"
    return ", ".join(p for p in (f"module '{path}'" if path else "", loc) if p)


_TORCH_DIR = str(__import__("pathlib").Path(torch.__file__).parent)


def _clean_path(path: str) -> str:
    # nn_module_stack paths look like "L['self'].blocks[0][1].conv" in strict export, "blocks.0.1.conv" otherwise
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\['([^']+)'\]", r".\1", path)
    return path.strip(".")


def module_path(n: torch.fx.Node) -> str | None:
    stack = n.meta.get("nn_module_stack") or {}
    return _clean_path(list(stack.values())[-1][0]) if stack else None


def _shape(n) -> tuple[int, ...] | None:
    v = n.meta.get("val") if isinstance(n, torch.fx.Node) else None
    if isinstance(v, torch.Tensor):
        return tuple(int(s) for s in v.shape)
    return None


class Refuse(Exception):
    """A construct the export frontend cannot convert (collected, then reported together)."""


@dataclass
class Exported:
    """The decomposed ExportedProgram and what the reference needs to run it with a model's own tensors."""
    program: object                      # torch.export.ExportedProgram (core ATen)
    inputs: list[tuple[str, str]]        # per graph placeholder: (kind, state_dict name / '') in order
    outputs: list[tuple[str, str]]       # per graph output: (kind, buffer name / '')
    user_input: str                      # placeholder name of the model input


def export(model: nn.Module, input_shape: tuple[int, ...]):
    """torch.export of the model in training mode, decomposed to core ATen (KEEP ops left whole)."""
    modes = {m: m.training for m in model.modules()}
    # in-place dropout (torchvision's classifiers) would be functionalised into bernoulli sampling; out of place it
    # stays one native_dropout node, which odl's dropout op takes (same values: the mask is odl's either way)
    inplace = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.inplace]
    for m in inplace:
        m.inplace = False
    model.train()
    try:
        with warnings.catch_warnings():
            # torch's own deprecation notices (pytree internals) would reach the user's terminal on every run
            warnings.simplefilter("ignore", FutureWarning)
            try:
                ep = torch.export.export(model, (torch.randn(*input_shape),), strict=False)
            except Exception as e:
                msg = str(e).strip().splitlines()
                raise OdlError(f"the model does not accept input shape {'x'.join(map(str, input_shape))} or "
                               f"cannot be exported: torch.export stopped{_user_frame(e)}: {type(e).__name__}: "
                               f"{msg[0] if msg else ''}") from None
            table = torch.export.default_decompositions()
            for op in KEEP:
                table.pop(op, None)
            try:
                ep = ep.run_decompositions(table)
            except Exception as e:
                raise OdlError(f"torch.export could not decompose the model to core ATen: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        for m, t in modes.items():
            m.training = t
        for m in inplace:
            m.inplace = True
    return ep


def _user_frame(exc) -> str:
    import traceback
    from pathlib import Path
    skip = (str(Path(torch.__file__).parent), str(Path(__file__).parent))
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(skip)
              and "site-packages/torch" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno}" + (f" ({f.line.strip()})" if f.line else "")


# ---- conversion ------------------------------------------------------------------------------------------------
class _Ctx:
    """What each exported node stands for while converting: ('value', ir name) for a tensor odl computes,
    ('param', state_dict name), ('buffer', state_dict name), ('tuple', node) for a multi-result op whose
    getitems pick results, ('counter', buffer name) for num_batches_tracked + 1, ('const', python value),
    ('bad',) for results of refused nodes (their users are not reported again)."""

    def __init__(self):
        self.env: dict[str, tuple] = {}
        self.nodes: list[Node] = []
        self.shapes: dict[str, tuple] = {}
        self.params: dict[str, tuple] = {}
        self.state_out: dict[str, str] = {}     # exported node name -> buffer it becomes (running stats)
        self.counters: list[str] = []

    def kind(self, a):
        if isinstance(a, torch.fx.Node):
            return self.env[a.name]
        return ("const", a)

    def value(self, a, what="input") -> str:
        k = self.kind(a)
        if k[0] == "value":
            return k[1]
        if k[0] == "bad":
            raise _Skip()
        if k[0] == "param":
            raise Refuse(f"uses parameter '{k[1]}' as a {what} tensor (odl takes parameters only as the weights "
                         f"of the layers that own them: convolution, linear, batch norm)")
        if k[0] == "buffer":
            raise Refuse(f"uses buffer '{k[1]}' as a {what} tensor")
        raise Refuse(f"takes a non-tensor {what} ({k[1]!r})")

    def param(self, a, role: str) -> str | None:
        if a is None:
            return None
        k = self.kind(a)
        if k[0] == "bad":
            raise _Skip()
        if k[0] != "param":
            raise Refuse(f"its {role} is a computed tensor, not a parameter of the model (odl trains parameters "
                         f"only)")
        return k[1]

    def emit(self, n: torch.fx.Node, op: str, inputs: list[str], attrs=None, params=None, name=None) -> Node:
        name = name or n.name
        shape = _shape(n) if name == n.name else self.shapes.get(name)
        node = Node(name=name, op=op, target=aten_name(n.target), inputs=inputs, shape=shape, attrs=attrs or {},
                    params={k: v for k, v in (params or {}).items() if v}, module=module_path(n))
        for v in node.params.values():
            self.params.setdefault(v, None)
        self.nodes.append(node)
        self.shapes[name] = shape
        self.env[name] = ("value", name)
        return node

    def alias(self, n: torch.fx.Node, of: str):
        """A view: the same storage, emitted as odl's view op so that the graph keeps every exported value."""
        self.emit(n, "view", [of])


class _Skip(Exception):
    """A node whose input was refused already."""


CONVERT: dict[str, object] = {}


def _conv(*names):
    def deco(fn):
        for nm in names:
            CONVERT[nm] = fn
        return fn
    return deco


def _args(n, *defaults):
    """Positional arguments of an ATen node, filled with defaults (kwargs by schema position)."""
    args = list(n.args)
    schema = getattr(n.target, "_schema", None)
    if schema is not None and n.kwargs:
        for i, a in enumerate(schema.arguments):
            if a.name in n.kwargs:
                while len(args) <= i:
                    args.append(defaults[len(args)] if len(args) < len(defaults) else None)
                args[i] = n.kwargs[a.name]
    while len(args) < len(defaults):
        args.append(defaults[len(args)])
    return args


@_conv("aten.convolution")
def _convolution(c: _Ctx, n):
    from types import SimpleNamespace
    from odl.lower.ops import conv as convop
    x, w, b, stride, padding, dilation, transposed, out_pad, groups = _args(n)
    xs, ws = _shape(x), _shape(w)
    wname, bname = c.param(w, "weight"), c.param(b, "bias")
    nd = len(xs) - 2
    if nd not in (1, 2):
        raise Refuse(f"{nd}-d convolution is not supported (1-d and 2-d only)")
    mod = SimpleNamespace(padding_mode="zeros", kernel_size=tuple(ws[2:]), stride=tuple(stride),
                          dilation=tuple(dilation), padding=tuple(padding), groups=int(groups),
                          in_channels=xs[1], out_channels=ws[1] * groups if transposed else ws[0],
                          bias=b, output_padding=tuple(out_pad))
    try:
        if transposed:
            if nd != 2:
                raise Refuse("1-d transposed convolution is not supported")
            op = "conv_transpose2d"
            attrs, _ = convop.convert_transpose(n.name, mod, [xs], _shape(n))
        else:
            op = "conv2d"
            attrs, _ = _conv_attrs(convop, n.name, mod, nd, xs)
    except OdlError as e:
        raise Refuse(str(e).split("): ", 1)[-1]) from None
    op = attrs.pop("_op", op)
    c.emit(n, op, [c.value(x)], attrs, {"weight": wname, "bias": bname})


def _conv_attrs(convop, name, mod, nd, xs):
    """conv.convert_module's attributes for an nn.Conv1d/Conv2d with these settings (the same code decides)."""
    cls = nn.Conv1d if nd == 1 else nn.Conv2d

    class _M(cls):   # isinstance checks of the converter see the right class; nothing is built
        def __init__(self):
            pass
    m = _M.__new__(_M)
    m.__dict__.update(vars(mod))
    return convop.convert_module(name, m, [xs], None)


def _batchnorm(c: _Ctx, n, x, w, b, rm, rv, momentum, eps, tracked: bool):
    xs = _shape(x)
    if len(xs) not in (2, 3, 4):
        raise Refuse(f"batch norm of a {len(xs)}-d input is not supported ([N, C], [N, C, L] or [N, C, H, W])")
    if not isinstance(momentum, float) or not isinstance(eps, float):
        raise Refuse(f"momentum ({momentum!r}) and eps ({eps!r}) must be constants (momentum=None, the cumulative "
                     f"average, is not supported)")
    attrs = dict(eps=float(eps), momentum=float(momentum), track=tracked)
    if tracked:
        km, kv = c.kind(rm), c.kind(rv)
        # a module called twice reads the statistics its first call wrote ('state'): the same device buffer
        if km[0] not in ("buffer", "state") or kv[0] not in ("buffer", "state"):
            raise Refuse("running statistics that are not buffers of the model are not supported")
        attrs.update(running_mean=km[1], running_var=kv[1])
    return attrs, {"weight": c.param(w, "weight"), "bias": c.param(b, "bias")}


@_conv("aten._native_batch_norm_legit_functional")
def _bn_functional(c: _Ctx, n):
    x, w, b, rm, rv, training, momentum, eps = _args(n)
    if not training:
        raise Refuse("batch norm with training=False in a training-mode export is not supported (a module in eval "
                     "mode, or F.batch_norm(training=False)); use --bn frozen for running statistics")
    attrs, params = _batchnorm(c, n, x, w, b, rm, rv, momentum, eps, True)
    c.env[n.name] = ("tuple", n, dict(op="batchnorm", inputs=[c.value(x)], attrs=attrs, params=params,
                                      state={3: attrs["running_mean"], 4: attrs["running_var"]}))


@_conv("aten.repeat")
def _repeat(c: _Ctx, n):
    x, reps = n.args[:2]
    k = c.kind(x)
    if k[0] != "param" or len(reps) != 1:
        raise Refuse("repeat of a computed tensor (odl repeats only an instance norm's affine parameters)")
    c.env[n.name] = ("param_repeat", k[1], int(reps[0]))


@_conv("aten._native_batch_norm_legit.no_stats")
def _bn_nostats(c: _Ctx, n):
    x, w, b, training, momentum, eps = _args(n)
    if not training:
        raise Refuse("batch norm without running statistics must be in training mode")
    xs = _shape(x)
    kw, kb = (c.kind(w) if w is not None else None), (c.kind(b) if b is not None else None)
    viewed = isinstance(x, torch.fx.Node) and aten_name(x.target) in ("aten.view", "aten._unsafe_view", "aten.reshape")
    if xs[0] == 1 and len(xs) >= 3 and viewed and (kw is None or kw[0] == "param_repeat"):
        # InstanceNorm: x viewed [1, N*C, ...] normalised per row, the affine parameters repeated N times; odl's
        # norm op over rows of the same memory (as the fx frontend's instance norm)
        nc, hw = xs[1], math.prod(xs[2:])
        cch = _shape(x.args[0])[1]       # C of the [N, C, ...] tensor the view came from
        params = {"weight": kw[1] if kw else None, "bias": kb[1] if kb else None}
        c.env[n.name] = ("tuple", n, dict(op="norm", inputs=[c.value(x)],
                                          attrs=dict(rows=nc, m=hw, g=cch, s=hw, eps=float(eps)), params=params,
                                          state={}, unused={1: "the mean", 2: "the reciprocal standard deviation"}))
        for v in (w, b):
            if v is not None and any(u is not n for u in v.users):
                raise Refuse("a repeated parameter used by something else than the instance norm")
        return
    attrs, params = _batchnorm(c, n, x, w, b, None, None, momentum, eps, False)
    c.env[n.name] = ("tuple", n, dict(op="batchnorm", inputs=[c.value(x)], attrs=attrs, params=params, state={}))


@_conv("aten.max_pool2d_with_indices")
def _maxpool(c: _Ctx, n):
    from odl.lower.ops import pool
    x, k, stride, padding, dilation, ceil = _args(n, None, None, (), 0, 1, False)
    if len(_shape(x)) != 4:
        raise Refuse(f"max pooling of a {len(_shape(x))}-d input")
    try:
        attrs = pool._geom(n.name, "max_pool2d", k, stride or None, padding, dilation, ceil)
    except OdlError as e:
        raise Refuse(str(e).split("): ", 1)[-1]) from None
    c.env[n.name] = ("tuple", n, dict(op="maxpool", inputs=[c.value(x)], attrs=attrs, params={}, state={},
                                      unused={1: "the argmax indices"}))


@_conv("aten.avg_pool2d")
def _avgpool(c: _Ctx, n):
    from odl.lower.ops import pool
    x, k, stride, padding, ceil, cip, div = _args(n, None, None, (), 0, False, True, None)
    if div:
        raise Refuse("divisor_override is not supported")
    if len(_shape(x)) != 4:
        raise Refuse(f"average pooling of a {len(_shape(x))}-d input")
    attrs = pool._geom(n.name, "avg_pool2d", k, stride or None, padding, 1, ceil)
    c.emit(n, "avgpool", [c.value(x)], dict(attrs, count_include_pad=int(cip)))


@_conv("aten._adaptive_avg_pool2d")
def _adaptive(c: _Ctx, n):
    from odl.lower.ops import pool
    x = n.args[0]
    attrs, _ = pool.convert_adaptive(n.name, None, [_shape(x)], _shape(n))
    c.emit(n, "avgpool", [c.value(x)], attrs)


def _upsample(mode):
    def fn(c: _Ctx, n):
        from odl.lower.ops import upsample
        x = n.args[0]
        if mode in ("bilinear", "linear"):
            x, size, align, scales = _args(n, None, None, False, None)
        else:
            x, size, scales = _args(n, None, None, None)
            align = None
        try:
            attrs, _ = upsample._attrs(n.name, aten_name(n.target), _shape(x), _shape(n), scales, mode, align, False)
        except OdlError as e:
            raise Refuse(str(e).split("): ", 1)[-1]) from None
        c.emit(n, "upsample", [c.value(x)], attrs)
    return fn


CONVERT["aten.upsample_nearest2d.vec"] = _upsample("nearest")
CONVERT["aten.upsample_nearest1d.vec"] = _upsample("nearest")
CONVERT["aten.upsample_bilinear2d.vec"] = _upsample("bilinear")
CONVERT["aten.upsample_linear1d.vec"] = _upsample("linear")


@_conv("getitem")
def _getitem(c: _Ctx, n):
    src, idx = n.args
    k = c.kind(src)
    if k[0] == "bad":
        raise _Skip()
    if k[0] != "tuple":
        raise Refuse(f"indexing a {k[0]} is not supported")
    _, owner, spec = k
    if idx in spec.get("slices", {}):
        spec["slices"][idx](n)
        return
    if idx == 0:
        node = c.emit(n, spec["op"], spec["inputs"], spec["attrs"], spec["params"])
        node.target = aten_name(owner.target)
        node.module = module_path(owner)
        return
    if idx in spec.get("state", {}):
        c.state_out[n.name] = spec["state"][idx]
        c.env[n.name] = ("state", spec["state"][idx])
        return
    c.env[n.name] = ("unused", f"result {idx} of {aten_name(owner.target)} ({spec.get('unused', {}).get(idx, '')})",
                     owner)


@_conv("aten.relu")
def _relu(c, n):
    c.emit(n, "relu", [c.value(n.args[0])])


def _clamp_node(c, n, x, lo, hi, inclusive):
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    if (lo, hi) == (0.0, None) and not inclusive:
        return c.emit(n, "relu", [c.value(x)])
    if (lo, hi) == (0.0, 6.0) and not inclusive:
        return c.emit(n, "relu6", [c.value(x)])
    return c.emit(n, "clamp", [c.value(x)], dict(lo=lo, hi=hi, inclusive=int(inclusive)))


@_conv("aten.hardtanh")
def _hardtanh(c, n):
    x, lo, hi = _args(n, None, -1.0, 1.0)
    _clamp_node(c, n, x, lo, hi, inclusive=False)


@_conv("aten.clamp")
def _clamp(c, n):
    x, lo, hi = _args(n, None, None, None)
    if isinstance(lo, torch.fx.Node) or isinstance(hi, torch.fx.Node):
        raise Refuse("clamp bounds must be constants")
    if lo is None and hi is None:
        raise Refuse("clamp without bounds")
    # clamp's gradient passes where lo <= x <= hi (inclusive), ReLU's and hardtanh's where lo < x < hi
    _clamp_node(c, n, x, lo, hi, inclusive=True)


def _act(op):
    def fn(c, n):
        c.emit(n, op, [c.value(n.args[0])])
    return fn


for _a in ("sigmoid", "tanh", "hardswish", "hardsigmoid", "silu"):
    CONVERT[f"aten.{_a}"] = _act(_a)


@_conv("aten.leaky_relu")
def _leaky(c, n):
    x, slope = _args(n, None, 0.01)
    c.emit(n, "leaky_relu", [c.value(x)], dict(alpha=float(slope)))


@_conv("aten.elu")
def _elu(c, n):
    x, alpha, scale, iscale = _args(n, None, 1.0, 1.0, 1.0)
    if (float(scale), float(iscale)) != (1.0, 1.0):
        raise Refuse(f"elu with scale={scale}, input_scale={iscale} (SELU/CELU) is not supported")
    c.emit(n, "elu", [c.value(x)], dict(alpha=float(alpha)))


@_conv("aten.gelu")
def _gelu(c, n):
    x = n.args[0]
    approx = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
    if approx not in ("none", "tanh"):
        raise Refuse(f"gelu approximate={approx!r}")
    c.emit(n, "gelu_tanh" if approx == "tanh" else "gelu", [c.value(x)])


def _is_scalar(a):
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def _binary(c: _Ctx, n, kind: str):
    """add / sub / mul / div of tensors (same shape, or one broadcast over trailing dims) or with a scalar."""
    a, b = n.args[0], n.args[1]
    alpha = n.kwargs.get("alpha", 1)
    if alpha != 1:
        raise Refuse(f"alpha={alpha} is not supported")
    ka, kb = c.kind(a), c.kind(b)
    if kind == "add" and {ka[0], kb[0]} == {"param", "value"} or {ka[0], kb[0]} == {"param", "bad"}:
        # a bias parameter broadcast over [N, C, ...]: [C, 1, 1] (or [1, C, 1, 1], or [C] on [N, C])
        (pa, pk), (va, vk) = ((a, ka), (b, kb)) if ka[0] == "param" else ((b, kb), (a, ka))
        ps, vs = [d for d in _shape(pa)], _shape(va)
        while ps and ps[0] == 1 and len(ps) > len(vs) - 1:
            ps = ps[1:]
        if kind != "add" or len(vs) < 2 or len(ps) != len(vs) - 1 or ps[0] != vs[1] or any(d != 1 for d in ps[1:]):
            raise Refuse(f"uses parameter '{pk[1]}' of shape {list(_shape(pa))} as an operand of {kind} with "
                         f"{list(vs)} (odl takes a parameter here only as a per-channel bias added to [N, C, ...]: "
                         f"[C, 1, 1] on [N, C, H, W], [C] on [N, C])")
        if vk[0] == "bad":
            raise _Skip()
        c.emit(n, "bias", [c.value(va)], {}, {"bias": pk[1]})
        return
    if "bad" in (ka[0], kb[0]):
        raise _Skip()
    if ka[0] in ("buffer", "counter") and _is_int_buffer(a) and kind == "add" and kb == ("const", 1):
        c.counters.append(ka[1])
        c.env[n.name] = ("counter", ka[1])
        return
    if kb[0] == "const" and _is_scalar(kb[1]) and ka[0] == "value":
        s = float(kb[1])
        scale, shift = {"add": (1.0, s), "sub": (1.0, -s), "mul": (s, 0.0), "div": (None, 0.0)}[kind]
        if kind == "div":
            if s == 0.0:
                raise Refuse("division by zero")
            scale = 1.0 / s
        c.emit(n, "affine", [c.value(a)], dict(scale=scale, shift=shift))
        return
    if ka[0] == "const" and _is_scalar(ka[1]) and kb[0] == "value" and kind in ("add", "mul", "sub"):
        s = float(ka[1])
        scale, shift = {"add": (1.0, s), "mul": (s, 0.0), "sub": (-1.0, s)}[kind]
        c.emit(n, "affine", [c.value(b)], dict(scale=scale, shift=shift))
        return
    if kind == "div":
        raise Refuse("division by a tensor is not supported")
    va, vb = c.value(a), c.value(b)
    sa, sb, so = c.shapes[va], c.shapes[vb], _shape(n)
    if kind == "add" and sa == sb:
        c.emit(n, "add", [va, vb])
        return
    if kind == "sub" and sa == sb:
        raise Refuse("tensor - tensor is not supported")
    if kind == "add":
        raise Refuse(f"broadcast add of {list(sa)} and {list(sb)} is not supported (same shapes only)")
    # mul: same shapes, or one operand broadcast along trailing dims ([N, C, 1, 1] gates of [N, C, H, W])
    for big, small, sbig, ssmall in ((va, vb, sa, sb), (vb, va, sb, sa)):
        if sbig != so:
            continue
        if len(ssmall) != len(sbig):
            continue
        k = len(sbig)
        while k > 0 and ssmall[k - 1] == 1:
            k -= 1
        if tuple(ssmall[:k]) == tuple(sbig[:k]):
            rows, hw = math.prod(sbig[:k]), math.prod(sbig[k:])
            c.emit(n, "mul", [big, small], dict(rows=rows, hw=hw))
            return
    raise Refuse(f"broadcast multiply of {list(sa)} and {list(sb)} is not supported (same shapes, or one operand "
                 f"of shape [N, C, 1, 1]-like broadcast over the trailing dims)")


def _is_int_buffer(a):
    v = a.meta.get("val")
    return isinstance(v, torch.Tensor) and not v.is_floating_point()


for _k in ("add", "sub", "mul", "div"):
    CONVERT[f"aten.{_k}.Tensor"] = (lambda kind: lambda c, n: _binary(c, n, kind))(_k)
    CONVERT[f"aten.{_k}.Scalar"] = CONVERT[f"aten.{_k}.Tensor"]


@_conv("aten.mean.dim", "aten.sum.dim_IntList")
def _mean(c, n):
    x, dims, keep = _args(n, None, None, False)
    if n.kwargs.get("dtype") is not None:
        raise Refuse("dtype= is not supported")
    xs = _shape(x)
    nd = len(xs)
    dims = sorted({d % nd for d in (dims if dims else range(nd))})
    if dims != list(range(dims[0], dims[-1] + 1)):
        raise Refuse(f"dims {dims} of input {list(xs)} are not one contiguous range")
    outer, r, inner = math.prod(xs[:dims[0]]), math.prod(xs[dims[0]:dims[-1] + 1]), math.prod(xs[dims[-1] + 1:])
    mean = "mean" in aten_name(n.target)
    if mean and keep and nd == 4 and dims == [2, 3]:
        # global average pooling (AdaptiveAvgPool2d(1) decomposes to this): odl's pooling op, as the fx frontend
        c.emit(n, "avgpool", [c.value(x)], dict(kh=xs[2], kw=xs[3], sh=xs[2], sw=xs[3], pt=0, pl=0,
                                                 count_include_pad=1))
        return
    c.emit(n, "sum", [c.value(x)], {"outer": outer, "r": r, "inner": inner, "scale": 1.0 / r if mean else 1.0})


@_conv("aten.view", "aten._unsafe_view", "aten.reshape", "aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze",
       "aten.unsqueeze", "aten.flatten.using_ints", "aten.clone", "aten.alias", "aten.view.dtype")
def _view(c, n):
    x = n.args[0]
    if aten_name(n.target) == "aten.view.dtype":
        raise Refuse("reinterpreting a tensor's dtype")
    if aten_name(n.target) == "aten.clone" and n.kwargs.get("memory_format") not in (None, torch.contiguous_format,
                                                                                   torch.preserve_format):
        raise Refuse(f"clone to {n.kwargs['memory_format']}")
    c.alias(n, c.value(x))


@_conv("aten.permute")
def _permute(c, n):
    x, dims = n.args
    k = c.kind(x)
    if k[0] == "param":
        c.env[n.name] = ("param_t", k[1], tuple(dims))   # a weight transposed for addmm / mm (linear)
        return
    xs = _shape(x)
    nd = len(xs)
    dims = [d % nd for d in dims]
    moved = [d for d in dims if xs[d] != 1]
    if moved == sorted(moved):   # only size-1 dims move: the same memory order
        c.alias(n, c.value(x))
        return
    # two adjacent groups of dims swapped: [outer, A, B, inner] -> [outer, B, A, inner]
    i = next(d for d in range(nd) if dims[d] != d)
    k = max(d for d in range(nd) if dims[d] != d) + 1
    seg = dims[i:k]
    j = seg[0]
    if i < j < k and seg == list(range(j, k)) + list(range(i, j)):
        c.emit(n, "transpose", [c.value(x)], dict(outer=math.prod(xs[:i]), A=math.prod(xs[i:j]), B=math.prod(xs[j:k]),
                                                 inner=math.prod(xs[k:])))
        return
    raise Refuse(f"permute{tuple(dims)} of {list(xs)} moves data in a way odl does not do (it swaps two adjacent groups of dims only)")


def _linear(c, n, bias, x, wt):
    k = c.kind(wt)
    if k[0] == "bad":
        raise _Skip()
    if k[0] != "param_t" or k[2] != (1, 0):
        raise Refuse("matrix product with a computed right operand (odl takes linear layers: x @ W^T + b with W a "
                     "parameter)")
    xs = _shape(x)
    if len(xs) != 2:
        raise Refuse(f"linear layer input {list(xs)} is not [N, features]")
    c.emit(n, "linear", [c.value(x)], {}, {"weight": k[1], "bias": c.param(bias, "bias") if bias is not None else None})


@_conv("aten.addmm")
def _addmm(c, n):
    bias, x, wt = n.args[:3]
    if n.kwargs.get("beta", 1) != 1 or n.kwargs.get("alpha", 1) != 1:
        raise Refuse("addmm with alpha/beta is not supported")
    if _shape(bias) is None or len(_shape(bias)) != 1:
        raise Refuse("addmm whose bias is not a vector")
    _linear(c, n, bias, x, wt)


@_conv("aten.mm")
def _mm(c, n):
    _linear(c, n, None, *n.args[:2])


@_conv("aten.constant_pad_nd")
def _pad(c, n):
    x, pad, value = _args(n, None, None, 0.0)
    if float(value) != 0.0:
        raise Refuse(f"padding with value {value} (zero padding only)")
    p = list(pad)
    if len(p) not in (2, 4) or min(p) < 0:
        raise Refuse(f"padding {p} (non-negative 2-D padding only)")
    p += [0, 0] * ((4 - len(p)) // 2)
    c.emit(n, "pad", [c.value(x)], dict(left=p[0], right=p[1], top=p[2], bottom=p[3]))


@_conv("aten.native_dropout")
def _dropout(c, n):
    x, p, train = _args(n, None, 0.5, True)
    if not 0.0 <= float(p) < 1.0:
        raise Refuse(f"dropout p={p} must be in [0, 1)")
    c.env[n.name] = ("tuple", n, dict(op="dropout", inputs=[c.value(x)], attrs=dict(p=float(p), training=bool(train)),
                                      params={}, state={}, unused={1: "the dropout mask"}))


@_conv("aten.cat")
def _cat(c, n):
    seq = n.args[0]
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    ins = [c.value(t) for t in seq]
    out = _shape(n)
    nd = len(out)
    dim %= nd
    outer, total, inner = math.prod(out[:dim]), out[dim], math.prod(out[dim + 1:])
    lens, offs, off = [], [], 0
    for v in ins:
        k = c.shapes[v][dim]
        lens.append(k * inner)
        offs.append(off * inner)
        off += k
    c.emit(n, "cat", ins, {"outer": outer, "lens": lens, "offs": offs, "stride": total * inner})


def _slice_attrs(xs, dim, start, end):
    nd = len(xs)
    dim %= nd
    outer, inner = math.prod(xs[:dim]), math.prod(xs[dim + 1:])
    return {"outer": outer, "len": (end - start) * inner, "off": start * inner, "stride": xs[dim] * inner}


@_conv("aten.slice.Tensor")
def _slice(c, n):
    x, dim, start, end, step = _args(n, None, 0, None, None, 1)
    xs = _shape(x)
    if step != 1:
        raise Refuse(f"slicing with step {step} (step 1 only)")
    dim %= len(xs)
    size = xs[dim]
    start = 0 if start is None else (start + size if start < 0 else start)
    end = size if end is None else (end + size if end < 0 else end)
    start, end = max(0, min(start, size)), max(0, min(end, size))
    if (start, end) == (0, size):
        c.alias(n, c.value(x))
        return
    if end <= start:
        raise Refuse("an empty slice")
    c.emit(n, "slice", [c.value(x)], _slice_attrs(xs, dim, start, end))


@_conv("aten.split_with_sizes", "aten.split.Tensor")
def _split(c, n):
    x, sizes, dim = _args(n, None, None, 0)
    xs = _shape(x)
    dim %= len(xs)
    if isinstance(sizes, int):
        sizes = [min(sizes, xs[dim] - s) for s in range(0, xs[dim], sizes)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    xv = c.value(x)

    def piece(i):
        def make(g):
            c.emit(g, "slice", [xv], _slice_attrs(xs, dim, starts[i], starts[i] + sizes[i]))
        return make
    c.env[n.name] = ("tuple", n, dict(op=None, inputs=[], attrs={}, params={}, state={},
                                      slices={i: piece(i) for i in range(len(sizes))}))


@_conv("aten._softmax", "aten._log_softmax")
def _softmax(c, n):
    x, dim, half = _args(n, None, -1, False)
    xs = _shape(x)
    dim %= len(xs)
    c.emit(n, "softmax", [c.value(x)], {"outer": math.prod(xs[:dim]), "r": xs[dim], "inner": math.prod(xs[dim + 1:]),
                                        "log": int("log" in aten_name(n.target))})


@_conv("aten.native_layer_norm")
def _layer_norm(c, n):
    x, ns, w, b, eps = _args(n)
    xs = _shape(x)
    m = math.prod(ns)
    c.env[n.name] = ("tuple", n, dict(op="norm", inputs=[c.value(x)],
                                      attrs=dict(rows=math.prod(xs) // m, m=m, g=1, s=1, eps=float(eps)),
                                      params={"weight": c.param(w, "weight"), "bias": c.param(b, "bias")}, state={},
                                      unused={1: "the mean", 2: "the reciprocal standard deviation"}))


@_conv("aten.native_group_norm")
def _group_norm(c, n):
    x, w, b, N, C, HW, g, eps = _args(n)
    c.env[n.name] = ("tuple", n, dict(op="norm", inputs=[c.value(x)],
                                      attrs=dict(rows=N * g, m=C // g * HW, g=g, s=HW, eps=float(eps)),
                                      params={"weight": c.param(w, "weight"), "bias": c.param(b, "bias")}, state={},
                                      unused={1: "the mean", 2: "the reciprocal standard deviation"}))


def _describe(n) -> str:
    shp = _shape(n)
    ins = [list(_shape(a)) for a in n.args if isinstance(a, torch.fx.Node) and _shape(a) is not None]
    s = f"'{n.name}' ({aten_name(n.target)}"
    if ins:
        s += f" of {' and '.join(map(str, ins))}"
    if shp is not None:
        s += f" -> {list(shp)}"
    return s + ")"


def _read_inputs(model: nn.Module, sig, c: _Ctx, input_shape) -> tuple[list, str, object]:
    """The placeholders by the export's graph signature: parameters and buffers by their state_dict names, the one
    user input. Returns (inputs for the reference, the input's placeholder name, name_of)."""
    from torch.export.graph_signature import InputKind
    inputs: list[tuple[str, str]] = []
    user = None
    # a tensor reachable under several names (tied weights: `b.weight = a.weight`) is one parameter, named as
    # named_parameters() names it (its first name), whichever name the export's signature uses
    canon = {id(t): k for k, t in model.named_parameters()}
    canon.update({id(t): k for k, t in model.named_buffers()})
    every = dict(model.named_parameters(remove_duplicate=False))
    every.update(dict(model.named_buffers(remove_duplicate=False)))

    def name_of(target):
        t = every.get(target)
        return canon.get(id(t), target) if t is not None else target
    for spec in sig.input_specs:
        nm = spec.arg.name
        if spec.kind == InputKind.PARAMETER:
            c.env[nm] = ("param", name_of(spec.target))
            inputs.append(("param", name_of(spec.target)))
        elif spec.kind == InputKind.BUFFER:
            c.env[nm] = ("buffer", name_of(spec.target))
            inputs.append(("buffer", name_of(spec.target)))
        elif spec.kind == InputKind.USER_INPUT:
            if user is not None:
                raise OdlError("the model's forward must take exactly one input tensor")
            user = nm
            c.env[nm] = ("value", nm)
            c.shapes[nm] = tuple(input_shape)
            inputs.append(("input", ""))
        elif spec.kind in (InputKind.CONSTANT_TENSOR,):
            c.env[nm] = ("const_tensor", spec.target)
            inputs.append(("constant", spec.target))
        else:
            raise OdlError(f"the exported model has an input of kind {spec.kind.name} ('{nm}'), which odl does not "
                           f"support")
    if user is None:
        raise OdlError("the model's forward must take exactly one input tensor, it takes none")
    return inputs, user, name_of


def _convert_nodes(gm, c: _Ctx, bad: list) -> object:
    """Every computing node through its converter (CONVERT); refusals collected in `bad`. Returns the output node."""
    out_node = None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            out_node = n
            continue
        if n.op != "call_function":
            bad.append(f"{_describe(n)}: graph node kind '{n.op}' at {_where(n)}")
            c.env[n.name] = ("bad",)
            continue
        name = aten_name(n.target)
        if name in _DROP:
            c.env[n.name] = ("dropped",)
            continue
        fn = CONVERT.get(name)
        if fn is None:
            fn = CONVERT.get(name.rsplit(".", 1)[0]) if name.count(".") > 1 else None
        try:
            if fn is None:
                raise Refuse("no odl op for it")
            fn(c, n)
        except Refuse as e:
            bad.append(f"{_describe(n)} at {_where(n)}: {e}")
            c.env[n.name] = ("bad",)
        except _Skip:
            c.env[n.name] = ("bad",)
    return out_node


def _read_outputs(sig, out_node, c: _Ctx, name_of, bad: list) -> tuple[list, str | None]:
    """Buffer mutations (running statistics, counters: what the device computes) and the one user output (the
    logits). Returns (outputs for the reference, the logits' value name)."""
    from torch.export.graph_signature import OutputKind
    outputs: list[tuple[str, str]] = []
    output = None
    if out_node is None:
        return outputs, output
    for spec, a in zip(sig.output_specs, out_node.args[0]):
        k = c.kind(a) if isinstance(a, torch.fx.Node) else ("const", a)
        if spec.kind == OutputKind.BUFFER_MUTATION:
            target = name_of(spec.target)
            outputs.append(("buffer", target))
            if k[0] != "bad" and not (k[0] in ("state", "counter") and k[1] == target):
                bad.append(f"buffer '{spec.target}' is written with something odl does not compute on the "
                           f"device ({k[0]})")
        elif spec.kind == OutputKind.USER_OUTPUT:
            outputs.append(("output", ""))
            if output is not None:
                bad.append("the model returns more than one tensor (it must return the logits only)")
            elif k[0] == "value":
                output = k[1]
            elif k[0] != "bad":
                bad.append(f"the model returns a {k[0]}, not a tensor it computes")
        else:
            bad.append(f"the exported model has an output of kind {spec.kind.name}")
    return outputs, output


def _check_unused(gm, c: _Ctx, bad: list):
    """Results computed but not produced by odl must really be unused (argmax indices, saved statistics, masks)."""
    for n in gm.graph.nodes:
        k = c.env.get(n.name)
        if k and k[0] == "unused" and n.users:
            bad.append(f"{_describe(n)} at {_where(n)}: uses {k[1]}, which odl does not produce")
        if k and k[0] == "param_t" and any(aten_name(u.target) not in ("aten.addmm", "aten.mm") for u in n.users):
            bad.append(f"{_describe(n)} at {_where(n)}: a transposed parameter used other than as a linear weight")


def _report_names(nodes: list[Node]):
    """A layer by its module path when it is the module's only node or owns its parameters; other nodes inside a
    module (a functional ReLU in a residual block) by their own node names, so names stay unique (views a module
    wraps around its one computing node, as a 1-d pool's unsqueeze / squeeze, do not count)."""
    per_path: dict[str, list] = {}
    for nd in nodes:
        if nd.module:
            per_path.setdefault(nd.module, []).append(nd)
    for nds in per_path.values():
        real = [nd for nd in nds if nd.op != "view"]
        for nd in nds:
            if len(nds) > 1 and not nd.params and not (len(real) == 1 and nd is real[0]):
                nd.module = None


def trace_export(model: nn.Module, input_shape: tuple[int, ...]) -> Graph:
    """Export, decompose, convert every node; refuse with one message naming every node odl cannot do."""
    ep = export(model, tuple(input_shape))
    c = _Ctx()
    inputs, user, name_of = _read_inputs(model, ep.graph_signature, c, input_shape)
    bad: list[str] = []
    out_node = _convert_nodes(ep.graph_module, c, bad)
    outputs, output = _read_outputs(ep.graph_signature, out_node, c, name_of, bad)
    _check_unused(ep.graph_module, c, bad)
    if bad:
        raise OdlError(f"torch.export frontend: {len(bad)} node{'s' if len(bad) > 1 else ''} odl cannot do:\n  "
                       + "\n  ".join(bad))
    if output is None:
        raise OdlError("the model must return a single tensor (the logits)")
    _report_names(c.nodes)
    declared = {k: tuple(v.shape) for k, v in model.named_parameters()}
    used = set(c.params)
    unused = sorted(set(declared) - used)
    if unused:
        raise OdlError(f"parameters not used through a supported layer: {', '.join(unused[:5])}")
    params = {k: declared[k] for k in declared if k in used}
    graph = Graph(input=user, input_shape=tuple(input_shape), output=output, nodes=c.nodes, params=params,
                  shapes=c.shapes)
    graph.exported = Exported(program=ep, inputs=inputs, outputs=outputs, user_input=user)
    graph.counters = list(c.counters)      # one entry per batch-norm call (a module called twice counts twice)
    from odl.lower.ops.pad import fold
    fold(graph)
    return graph
