"""Model import: a PyTorch nn.Module (built-in name or `file.py:Name`) -> odl forward graph via torch.fx."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.fx
import torch.nn as nn

from odl.common.errors import OdlError
from odl.common.userfile import import_file
from odl.ir.graph import Graph, Node
from odl.lower import ops as opreg


def load_model(spec: str) -> nn.Module:
    """A built-in model name, or `path/to/file.py:Name` (an nn.Module subclass or a function returning one)."""
    from odl.models import BUILTIN
    from odl.models import zoo
    if spec in BUILTIN:
        return BUILTIN[spec]()
    if zoo.is_zoo(spec):
        return zoo.build(spec)
    if ":" not in spec:
        raise OdlError(f"unknown model '{spec}': not a built-in ({', '.join(sorted(BUILTIN))}) "
                       f"and not of the form path/to/file.py:Name")
    path, name = spec.rsplit(":", 1)
    mod = import_file(path, "model")
    obj = getattr(mod, name, None)
    if obj is None:
        raise OdlError(f"model file '{path}' has no '{name}'")
    try:
        model = obj()
    except Exception as e:
        raise OdlError(f"'{name}' in '{path}' could not be built without arguments: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise OdlError(f"'{name}' in '{path}' gave a {type(model).__name__}, not an nn.Module")
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise OdlError(f"bad --input-shape '{text}': expected NxCxHxW, e.g. 1x3x32x32") from None
    if len(shape) < 2 or any(v <= 0 for v in shape):
        raise OdlError(f"bad --input-shape '{text}': expected positive sizes like 1x3x32x32")
    return shape


def default_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    s = getattr(model, "input_shape", None)
    return tuple(s) if s else None


def default_loss(model: nn.Module) -> str:
    """The loss a model trains with unless told otherwise: its `default_loss` attribute, else cross-entropy."""
    loss = getattr(model, "default_loss", "xent")
    if loss not in ("xent", "mse", "nll", "bce"):
        raise OdlError(f"the model's default_loss '{loss}' is not xent, mse, nll or bce")
    return loss


def _fn_name(fn) -> str:
    mod = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    mod = {"torch._C._nn": "torch.nn.functional", "torch._C._fft": "torch.fft", "_operator": "operator"}.get(mod, mod)
    if mod == "torch.fft" and name.startswith("fft_"):
        name = name[4:]
    if mod.startswith("torch._C") or mod == "":
        mod = "torch"
    name = name.removeprefix("_VariableFunctionsClass.")
    return f"{mod}.{name}"


def _flat_args(args) -> list:
    """Positional arguments with lists / tuples opened (torch.cat([a, b]) consumes a and b)."""
    out = []
    for a in args:
        out += _flat_args(a) if isinstance(a, (list, tuple)) else [a]
    return out


def _user_frame(exc: BaseException) -> str:
    """'file:line (code)' of the innermost frame outside torch (and odl) where an exception passed: the line of the
    model that stopped torch.fx (e.g. `if x.sum() > 0:`)."""
    import traceback
    skip = (str(Path(torch.__file__).parent), str(Path(__file__).resolve().parent.parent))   # torch, the odl package
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(skip)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}:{f.lineno}" + (f" ({f.line.strip()})" if f.line else "")


class _ShapeRecorder(torch.fx.Interpreter):
    def run_node(self, n):
        try:
            out = super().run_node(n)
        except Exception as e:
            shape = "x".join(map(str, self.input_shape))
            raise OdlError(f"the model does not accept input shape {shape}: graph node '{n.name}' "
                           f"({n.target if isinstance(n.target, str) else _fn_name(n.target)}) failed: "
                           f"{str(e).splitlines()[0]}") from None
        n.meta["odl_shape"] = tuple(int(v) for v in out.shape) if isinstance(out, torch.Tensor) else None
        return out


def _propagate_shapes(gm, input_shape):
    rec = _ShapeRecorder(gm)
    rec.extra_traceback = False  # keep our one-line message as it is
    rec.input_shape = input_shape
    with torch.no_grad():
        rec.run(torch.randn(*input_shape))


FRONTENDS = ("export", "fx")


def default_frontend() -> str:
    """The frontend `trace` uses: $ODL_FRONTEND (the CLI's --frontend sets it, so worker processes inherit it),
    else torch.export."""
    import os
    f = os.environ.get("ODL_FRONTEND", "") or "export"
    if f not in FRONTENDS:
        raise OdlError(f"ODL_FRONTEND={f!r}: expected one of {', '.join(FRONTENDS)}")
    return f


def trace(model: nn.Module, input_shape: tuple[int, ...], frontend: str | None = None) -> Graph:
    """The model's forward graph: torch.export (odl/frontend/export.py, the default) or symbolic torch.fx."""
    frontend = frontend or default_frontend()
    if frontend == "fx":
        return trace_fx(model, input_shape)
    if frontend == "export":
        from odl.frontend.export import trace_export
        return trace_export(model, input_shape)
    raise OdlError(f"unknown frontend {frontend!r}: expected one of {', '.join(FRONTENDS)}")


def trace_fx(model: nn.Module, input_shape: tuple[int, ...]) -> Graph:
    """Trace with torch.fx, propagate shapes, map every node to a supported op or refuse with exit code 2."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:
        where = _user_frame(e)
        raise OdlError(f"torch.fx could not trace the model{' at ' + where if where else ''}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0]}") from None
    modules = dict(gm.named_modules())

    # Refuse unsupported ops before running anything, naming every one of them.
    bad = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            m = modules[n.target]
            if type(m) not in opreg.MODULES:
                bad.append(f"'{n.name}' ({type(m).__module__}.{type(m).__name__}, module '{n.target}')")
        elif n.op == "call_function":
            if n.target not in opreg.FUNCTIONS:
                bad.append(f"'{n.name}' ({_fn_name(n.target)})")
        elif n.op == "call_method":
            if n.target not in opreg.METHODS:
                bad.append(f"'{n.name}' (Tensor.{n.target})")
        elif n.op == "get_attr":
            bad.append(f"'{n.name}' (direct use of tensor attribute '{n.target}')")
    if bad:
        raise OdlError(f"unsupported op{'s' if len(bad) > 1 else ''} at {len(bad)} graph node{'s' if len(bad) > 1 else ''}: "
                       f"{'; '.join(bad)}. Supported: {', '.join(opreg.supported())}")

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise OdlError(f"the model's forward must take exactly one input tensor, it takes {len(placeholders)}")
    _propagate_shapes(gm, input_shape)

    def shape_of(n):
        out = n.meta.get("odl_shape")
        if out is None:
            raise OdlError(f"graph node '{n.name}' does not produce a single tensor")
        return out

    # A Parameter reachable under several names (tied weights: `b.weight = a.weight`) is one parameter, named as
    # PyTorch's named_parameters() names it (its first name); every module using it refers to that name.
    canonical = {id(p): k for k, p in model.named_parameters()}
    shapes = {placeholders[0].name: tuple(input_shape)}
    nodes: list[Node] = []
    params: dict[str, tuple] = {}
    output = None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            out = n.args[0]
            if not isinstance(out, torch.fx.Node):
                raise OdlError("the model must return a single tensor (the logits)")
            output = out.name
            continue
        tensor_args = [a for a in _flat_args(n.args) if isinstance(a, torch.fx.Node)]
        in_shapes = [shapes[a.name] for a in tensor_args]
        out_shape = shape_of(n)
        module = None
        if n.op == "call_module":
            m = modules[n.target]
            opname, conv = opreg.MODULES[type(m)]
            attrs, rel = conv(n.name, m, in_shapes, out_shape)
            opname = attrs.pop("_op", opname)
            module = n.target
            pmap = {}
            for role, pn in rel.items():
                if pn is None:
                    continue
                full = canonical.get(id(getattr(m, pn)), f"{n.target}.{pn}" if n.target else pn)
                pmap[role] = full
                params[full] = tuple(getattr(m, pn).shape)
            target = n.target
        elif n.op == "call_function":
            opname, conv = opreg.FUNCTIONS[n.target]
            attrs, _ = conv(n.name, n, in_shapes, out_shape)  # function converters read the fx node's args
            pmap, target = {}, _fn_name(n.target)
        else:
            opname, conv = opreg.METHODS[n.target]
            attrs, _ = conv(n.name, n, in_shapes, out_shape)
            pmap, target = {}, f"Tensor.{n.target}"
        opname = attrs.pop("_op", opname)   # a converter may redirect (function and method converters too)
        shapes[n.name] = out_shape
        nodes.append(Node(name=n.name, op=opname, target=target, inputs=[a.name for a in tensor_args],
                          shape=out_shape, attrs=attrs, params=pmap, module=module))

    # Every parameter the model has must be one the graph uses (we update exactly those).
    declared = {k: tuple(v.shape) for k, v in model.named_parameters()}
    unused = sorted(set(declared) - set(params))
    if unused:
        raise OdlError(f"parameters not used through a supported layer: {', '.join(unused[:5])}")
    # keep PyTorch's parameter order
    params = {k: params[k] for k in declared if k in params}
    graph = Graph(input=placeholders[0].name, input_shape=tuple(input_shape), output=output, nodes=nodes,
                  params=params, shapes=shapes)
    from odl.lower.ops.pad import fold
    fold(graph)
    return graph
