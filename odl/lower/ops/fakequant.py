"""Fake quantization for quantization-aware training (`--qat int8`), placed as PyTorch's eager QAT places it
(`torch.ao.quantization.prepare_qat` with a qint8 per-channel weight qconfig, quint8 per-tensor activations):

- every Conv / Linear weight: symmetric per output channel, qint8 [-128, 127], its range observed on the current
  weight at every forward (MovingAveragePerChannelMinMaxObserver with averaging constant 1.0: the range is the
  current weight's, computed as that observer computes it);
- the activations a deployed int8 model requantizes: the model input, and the output of every Conv / Linear with the
  batch norm, bias and ReLU / ReLU6 that directly follow it (and of a residual add with its ReLU): per tensor,
  affine quint8 [0, 255], MovingAverageMinMaxObserver (averaging constant 0.01, the first step takes the batch's
  range). Training steps move the activation ranges; evaluation programs use them as they are.

`--qat int8:REGEX` (odl/lower/layers.py) quantizes only the matched layers (LAYERS nodes whose name matches): their
weights and their output points. The model input's point goes with the first weight layer (kept when it is matched),
a residual add's point is kept when one of the add's inputs is a kept point (a matched layer's output reaches it).

`insert(graph)` is the graph pass: a `fakequant` node after each activation point (consumers read its output).
`quantize_weights(L)` emits the weights' observation and fake quantization at the start of the forward and makes
the layers read the quantized copies; `mask_weight_grad(L, pname)` applies the weight's straight-through mask to its
complete gradient. The observers' state (running min / max, scale, zero point; FP32) lives on the device like batch
norm running statistics: `qat.<point>.min_val`, `.max_val`, `.scale`, `.zero_point` in Program.state, `<point>` being
the activation value's name (`input` for the model input) or the weight's parameter name. Kernels:
kernels_c/fakequant.c; docs/quantization.md.
"""
from __future__ import annotations

import dataclasses
import math

from odl.common.errors import OdlError
from odl.ir.graph import Graph, Node
from odl.ir.kernels import FQ_PART
from odl.ir.program import Ptr
from odl.lower.ops.registry import register

PREFIX = "qat."
ACT = dict(qmin=0, qmax=255, symmetric=0, avg=0.01)        # per-tensor affine quint8, MovingAverageMinMaxObserver
WEIGHT = dict(qmin=-128, qmax=127, symmetric=1, avg=1.0)   # per-channel symmetric qint8 (ch_axis 0)
LAYERS = ("conv2d", "dwconv2d", "conv1d", "dwconv1d", "linear")   # ops whose weight is fake-quantized
FOLLOWERS = {"batchnorm": LAYERS, "bias": LAYERS, "relu": LAYERS + ("batchnorm", "bias", "add"),
             "relu6": LAYERS + ("batchnorm", "bias", "add")}   # op -> ops it extends the layer's output past
STATE = ("min_val", "max_val", "scale", "zero_point")
INITIAL = {"min_val": math.inf, "max_val": -math.inf, "scale": 1.0, "zero_point": 0.0}   # torch's FakeQuantize


def check(graph: Graph, cfg) -> None:
    """Refuse what --qat int8 cannot fake-quantize right (naming the node), before anything is lowered."""
    if cfg.qat not in ("none", "int8"):
        raise OdlError(f"--qat {cfg.qat}: expected none or int8")
    if getattr(cfg, "store", "compute") != "compute":
        raise OdlError(f"--qat {cfg.qat_option} with --store {cfg.store_option}: quantization-aware training with "
                       f"FP8 storage is "
                       f"not supported (their references are not built to run together)")
    for n in graph.nodes:
        if n.op == "conv_transpose2d":
            raise OdlError(f"--qat int8: {n.describe()} is a ConvTranspose2d, whose weight is quantized per "
                           f"channel along its second axis; not supported yet")
    pattern = getattr(cfg, "qat_layers", "")
    if pattern and not weights(graph, pattern):
        from odl.lower.layers import nothing_selected
        raise nothing_selected("--qat int8", pattern, graph, f"have no quantized weight (a "
                               f"{', '.join(LAYERS)} node)")


def _selected(graph: Graph, pattern: str) -> set[str] | None:
    """The nodes --qat int8:REGEX matches (None: every layer)."""
    if not pattern:
        return None
    from odl.lower.layers import matched
    return matched(graph, "--qat int8", pattern)


def points(graph: Graph, pattern: str = "") -> list[str]:
    """The values fake-quantized as activations, in graph order: the model input, then the output of every layer
    (LAYERS, and residual adds) extended past the batch norm / bias / ReLU that is its only consumer. With a layer
    pattern: the matched layers' outputs, the input if the first layer is matched, an add's if one of its inputs
    is a kept point."""
    sel = _selected(graph, pattern)
    first = next((n.name for n in graph.nodes if n.op in LAYERS), None)
    out = [graph.input] if sel is None or first in sel else []
    for n in graph.nodes:
        if n.op not in LAYERS + ("add",):
            continue
        if sel is not None and not (n.name in sel if n.op != "add" else any(i in out for i in n.inputs)):
            continue
        v, op = n.name, n.op
        while True:
            cons = graph.consumers(v)
            if len(cons) != 1 or op not in FOLLOWERS.get(cons[0].op, ()) or v == graph.output:
                break
            v, op = cons[0].name, cons[0].op
        if v not in out:
            out.append(v)
    return out


def weights(graph: Graph, pattern: str = "") -> list[str]:
    """The parameter names of the fake-quantized weights, in graph order (with a layer pattern: the matched
    layers')."""
    sel = _selected(graph, pattern)
    return list(dict.fromkeys(n.params["weight"] for n in graph.nodes if n.op in LAYERS and n.params.get("weight")
                              and (sel is None or n.name in sel)))


def fq_name(value: str) -> str:
    return value + "_fq"


def state_name(point: str, what: str) -> str:
    return f"{PREFIX}{point}.{what}"


def point_of(graph: Graph, value: str) -> str:
    """The state name of an activation point: 'input' for the model input, else the value's name."""
    return "input" if value == graph.input else value


def insert(graph: Graph, pattern: str = "") -> Graph:
    """A copy of the graph with a `fakequant` node after every activation point (of the layers `pattern` matches);
    the original is left as it is (the reference runs it)."""
    pts = points(graph, pattern)
    for v in pts:
        if fq_name(v) in graph.shapes:
            raise OdlError(f"--qat int8: the graph already has a value named '{fq_name(v)}'")
    ren = {v: fq_name(v) for v in pts}
    nodes = []
    shapes = dict(graph.shapes)

    def fq_node(v):
        shapes[fq_name(v)] = graph.shapes[v]
        return Node(name=fq_name(v), op="fakequant", target="odl.fakequant", inputs=[v], shape=graph.shapes[v],
                    attrs={"point": point_of(graph, v)})
    if graph.input in ren:
        nodes.append(fq_node(graph.input))
    for n in graph.nodes:
        nodes.append(dataclasses.replace(n, inputs=[ren.get(i, i) for i in n.inputs]))
        if n.name in ren:
            nodes.append(fq_node(n.name))
    return dataclasses.replace(graph, nodes=nodes, shapes=shapes, output=ren.get(graph.output, graph.output))


def observer_state(L, point: str, c: int) -> dict:
    """The FP32 state buffers of one observer (created once, kept on the device across steps, in Program.state)."""
    out = {}
    for what in STATE:
        name = state_name(point, what)
        if name not in L.state_bufs:
            L.state_bufs[name] = L.state_buffer("state_" + name, c, ("fill", INITIAL[what]), shape=(c,))
        out[what] = L.state_bufs[name]
    return out


def observe(L, layer: str, x: Ptr, st: dict, c: int, inner: int, q: dict, update: bool):
    """The observer's step (update) and the qparams into st['scale'] / st['zero_point']."""
    part = L.new_buffer(f"{layer}_fq_part", 2 * FQ_PART * c, dtype="f32", role="scratch")
    if update:
        L.call("odl_fq_minmax", layer, "forward", x=x, part=Ptr(part), c=c, inner=inner, accumulate=0)
    L.call("odl_fq_observe", layer, "forward", part=Ptr(part), run_min=Ptr(st["min_val"]),
           run_max=Ptr(st["max_val"]), scale=Ptr(st["scale"]), zp=Ptr(st["zero_point"]), c=c, avg=float(q["avg"]),
           qmin=q["qmin"], qmax=q["qmax"], symmetric=q["symmetric"], update=int(update))


def fake_quant(L, layer: str, x: Ptr, y, mask, st: dict, n: int, inner: int, q: dict):
    L.call("odl_fq_fwd", layer, "forward", x=x, y=Ptr(y), mask=Ptr(mask), scale=Ptr(st["scale"]),
           zp=Ptr(st["zero_point"]), len=n, inner=inner, base=0, qmin=q["qmin"], qmax=q["qmax"])


def quantize_weights(L) -> None:
    """At the start of the forward: observe every quantized weight (its current range) and fake-quantize it into a
    copy the layers read instead (L.param_override); the mask is kept for the gradient (mask_weight_grad)."""
    for pname in weights(L.g, L.cfg.qat_layers):
        w = L.params[pname]
        c = int(w.shape[0])
        st = observer_state(L, pname, c)
        observe(L, pname, Ptr(w), st, c, w.nelem // c, WEIGHT, update=True)
        wq = L.new_buffer(pname + "_fq", w.nelem, role="scratch", shape=w.shape)
        mask = L.new_buffer(pname + "_fq_mask", w.nelem, dtype="u8", role="scratch", shape=w.shape)
        fake_quant(L, pname, Ptr(w), wq, mask, st, w.nelem, w.nelem // c, WEIGHT)
        L.param_override[pname] = wq
        L.saved[PREFIX + pname] = mask


def mask_weight_grad(L, pname: str) -> None:
    """The straight-through estimator on a quantized weight's complete gradient: zero where the code was clamped."""
    mask = L.saved.get(PREFIX + pname)
    if mask is None or pname not in L.param_grads:
        return
    g = L.param_grads[pname]
    L.call("odl_fq_bwd", pname, "weight_grad", dy=Ptr(g), mask=Ptr(mask), dx=Ptr(g), len=g.nelem, accumulate=0)


class FakeQuant:
    """An activation point: per-tensor quint8; the observer moves in training steps only."""
    name = "fakequant"

    def forward(self, node, L):
        n = math.prod(node.shape)
        x = Ptr(L.value(node.inputs[0]))
        y = L.output(node)          # never over its input: validation reads the value before quantization
        # validation keeps the mask past the step: the host checks the device's decisions (odl/verify/qat_check.py)
        mask = L.new_buffer(node.name + "_mask", n, dtype="u8", role="act", shape=node.shape, persistent=L.observe)
        st = observer_state(L, node.attrs["point"], 1)
        observe(L, node.name, x, st, 1, n, ACT, update=not L.forward_only)
        fake_quant(L, node.name, x, y, mask, st, n, n, ACT)
        L.saved[node.name] = mask

    def backward(self, node, L):
        tgt = L.grad_inplace(node.inputs[0], node)
        if tgt is None:
            return
        dx, acc = tgt
        L.call("odl_fq_bwd", node.report_name, "input_grad", dy=Ptr(L.grad(node.name)),
               mask=Ptr(L.saved[node.name]), dx=Ptr(dx), len=math.prod(node.shape), accumulate=acc)


register(FakeQuant())
