"""The float8 side of `odl validate --store fp8` (docs/formats.md): the initial amax histories the host preloads,
the scales both sides compute from them, and the PyTorch reference that casts with torch.float8_e4m3fn /
torch.float8_e5m2 at the points where the device packs.

The reference runs the exported program (odl/verify/reference.py) with two changes, both from the step's Fp8Plan:
- a node whose backward reads FP8-stored values on the device is run twice: once on the exact values (its forward
  result, which the forward consumers get), once on the cast copies (fp8_cast, a straight-through cast), whose
  autograd graph gives the gradients. So the backward computes with exactly the values the device's backward reads.
  ReLU / ReLU6 read their own output: the device's decisions on the FP8 copy of it become the reference's (masks);
- the gradient of every value the device packs into E5M2 passes through the same cast, with the same scale, before
  it reaches the node that produced the value (the gradient of the logits included).
The value's recorded gradient is the one before the cast, as the device reports it.
"""
from __future__ import annotations

import numpy as np
import torch

from odl.common.errors import OdlError
from odl.common.precision import E4M3, E5M2, FP8_HISTORY, FP8_STATE_HEAD, fp8_cast, fp8_pushed_history, fp8_scale
from odl.verify.reference import _ExportRecorder, reference_steps


class _CastSTE(torch.autograd.Function):
    """Forward: the value read back from FP8; backward: the gradient passes unchanged to the exact value."""

    @staticmethod
    def forward(ctx, x, scale, fmt):
        return fp8_cast(x, scale, fmt)

    @staticmethod
    def backward(ctx, g):
        return g, None, None


class _GradCast(torch.autograd.Function):
    """Forward: the value unchanged; backward: the gradient read back from FP8 (E5M2)."""

    @staticmethod
    def forward(ctx, x, scale, fmt):
        ctx.scale, ctx.fmt = scale, fmt
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return fp8_cast(g, ctx.scale, ctx.fmt), None, None


def initial_state(plan, prep, cfg, trainable: list[str], dropout: dict) -> dict[str, np.ndarray]:
    """State buffer name -> its preloaded rows [scale, amax slots, history]: every history entry and the amax
    (core 0's slot) are the tensor's amax in an FP32 step of the first batch (PyTorch, no FP8), so the first step's
    scales are fp8_scale([amax]) on the device and in the reference alike (the amax is pushed into the history
    first)."""
    ref = reference_steps(prep.model, prep.batches[:1], cfg, trainable, dropout, torch.float32, graph=prep.graph)[0]
    out = {}
    for fmt, entries, source in ((E4M3, plan.acts, ref.values), (E5M2, plan.grads, ref.value_grads)):
        rows = np.zeros((max(1, len(entries)), FP8_STATE_HEAD + FP8_HISTORY), np.float32)
        for e in entries:
            v = e.holder or e.values[0]
            if v not in source:
                raise OdlError(f"internal: --store fp8: the reference has no {'value' if fmt is E4M3 else 'gradient'}"
                               f" '{v}' to initialise its scale from")
            a0 = np.float32(float(source[v].abs().max()))
            rows[e.index, 1] = a0                          # core 0's amax slot (the others 0)
            rows[e.index, FP8_STATE_HEAD:] = a0
        out[plan.states[fmt.name].name] = rows.ravel()
    return out


def scales(plan, state: dict) -> tuple[dict, dict]:
    """(value -> E4M3 scale, gradient root -> E5M2 scale) of the first step, from the preloaded state."""
    def of(fmt, entries):
        rows = state[plan.states[fmt.name].name].reshape(-1, FP8_STATE_HEAD + FP8_HISTORY)
        return {e.index: fp8_scale(fp8_pushed_history(rows[e.index]), fmt) for e in entries}
    sa, sg = of(E4M3, plan.acts), of(E5M2, plan.grads)
    return ({v: sa[e.index] for e in plan.acts for v in e.values},
            {e.values[0]: sg[e.index] for e in plan.grads})


def device_decisions(op: str, y: np.ndarray, scale: float) -> np.ndarray:
    """Where a ReLU / ReLU6 whose output is stored in E4M3 passes its gradient on the device: its backward reads
    the FP8 copy of y."""
    q = fp8_cast(torch.from_numpy(np.ascontiguousarray(y)), scale, E4M3).numpy()
    return (q > 0) & (q < (6.0 if op == "relu6" else np.inf))


class Fp8Reference:
    """What the float8 reference needs of a step: the scales, and per node the values its backward reads cast."""

    def __init__(self, plan, state: dict, graph):
        if getattr(graph, "exported", None) is None:
            raise OdlError("--store fp8 validates against the torch.export frontend's program (the default "
                           "--frontend export), not --frontend fx")
        self.act_scale, self.grad_scale = scales(plan, state)
        self.reads = plan.reads

    def recorder(self, gm, values, dropout, step, masks):
        rec = _Fp8Recorder(gm, values, dropout, step, masks)
        rec.fp8 = self
        return rec

    def cast_args(self, n) -> list:
        """(argument node, scale) of each argument of exported node n that its odl node's backward reads from an
        FP8 copy (an aten node returning a tuple is the odl node of its first getitem)."""
        key = n.name
        if key not in self.reads:
            key = next((u.name for u in n.users if u.op == "call_function" and u.args[1:2] == (0,)), key)
        wanted = set(self.reads.get(key, ())) - {key}
        return [(a, self.act_scale[a.name]) for a in dict.fromkeys(n.all_input_nodes)
                if a.name in wanted and a.name in self.act_scale]


def _combine(exact, shadow):
    """The exact forward value carrying the shadow's gradient (per tensor of a tuple)."""
    if isinstance(exact, (tuple, list)):
        return type(exact)(_combine(e, q) for e, q in zip(exact, shadow))
    if isinstance(exact, torch.Tensor) and isinstance(shadow, torch.Tensor) and shadow.requires_grad:
        return exact.detach() + (shadow - shadow.detach())
    return exact


class _Fp8Recorder(_ExportRecorder):
    fp8: Fp8Reference

    def run_node(self, n):
        if n.op != "call_function":
            return super().run_node(n)
        cast = self.fp8.cast_args(n)
        shadow = None
        if cast:
            keep = {a: self.env[a] for a, _ in cast}
            for a, s in cast:
                self.env[a] = _CastSTE.apply(keep[a], s, E4M3)
            shadow = super().run_node(n)
            self.env.update(keep)
        out = super().run_node(n)
        if shadow is not None:
            out = _combine(out, shadow)
        s = self.fp8.grad_scale.get(n.name)
        if s is not None and isinstance(out, torch.Tensor):
            out = _GradCast.apply(out, s, E5M2)
        if isinstance(out, torch.Tensor):
            if out.requires_grad:
                out.retain_grad()
            self.values[n.name] = out
        return out


def amax_and_scales(plan, state: dict, arena: bytes, refs: dict, read) -> tuple[list, dict]:
    """The device's recorded amax per format as compared tensors (name, kind, device, FP64, torch float8), and
    whether its scales are the host's bitwise. `read(buf, shape)` reads a device buffer; refs: validate's
    references ("plain" FP64, "grad" FP64 with the device's decisions, "grad_torch" the float8 reference)."""
    ref, gref, greft = refs["plain"][0], refs["grad"], refs["grad_torch"]
    act_s, grad_s = scales(plan, state)
    rows, bad = [], []
    for fmt, entries, want in ((E4M3, plan.acts, act_s), (E5M2, plan.grads, grad_s)):
        if not entries:
            continue
        st = plan.states[fmt.name]
        dev = read(st, st.shape)
        for e in entries:
            key = e.values[0] if fmt is E5M2 else e.values[-1]
            if np.float32(want[key]) != dev[e.index, 0]:
                bad.append(f"{fmt.name} {e.holder or e.values[0]}: device {dev[e.index, 0]!r}, host {want[key]!r}")
        if fmt is E4M3:
            truth = [float(ref.values[e.holder].abs().max()) for e in entries]
            own = [float(greft.values[e.holder].abs().max()) for e in entries]
        else:
            truth = [float(gref.value_grads[e.values[0]].abs().max()) for e in entries]
            own = [float(greft.value_grads[e.values[0]].abs().max()) for e in entries]
        rows.append((f"fp8 amax {fmt.name}", f"amax_{fmt.name}", dev[:len(entries), 1:FP8_STATE_HEAD].max(axis=1),
                     np.array(truth), np.array(own)))
    return rows, {"scales_equal": not bad, "scale_mismatches": bad, "activations": len(plan.acts),
                  "gradients": len(plan.grads), "activation_values": [e.holder for e in plan.acts],
                  "gradient_values": [e.values[0] for e in plan.grads]}
