"""PyTorch's side of `--qat int8`: torch.ao.quantization's own FakeQuantize modules at the points where the device
fake-quantizes (odl/lower/ops/fakequant.py: the same `points` and `weights`, the same observers and qparams), for the
references of `odl validate` and `odl train`. The observers' state is named as on the device (`qat.<point>.min_val`,
`.max_val`, `.scale`, `.zero_point`) and starts where the device's starts (nothing observed, scale 1, zero point 0).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

from odl.common.errors import OdlError
from odl.lower.ops.fakequant import ACT, WEIGHT, point_of, points, state_name, weights


def act_fake_quant() -> FakeQuantize:
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=ACT["qmin"], quant_max=ACT["qmax"],
                        dtype=torch.quint8, qscheme=torch.per_tensor_affine, averaging_constant=ACT["avg"])


def weight_fake_quant() -> FakeQuantize:
    return FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=WEIGHT["qmin"],
                        quant_max=WEIGHT["qmax"], dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
                        averaging_constant=WEIGHT["avg"])


class TorchFakeQuant:
    """The FakeQuantize modules of one model: `weight(name, w)` fake-quantizes a parameter as it enters its layer,
    `after(value, out)` an activation point's value (None elsewhere). `training(False)` freezes the activation
    observers (evaluation: the ranges as they are), the weights' are observed at every forward as on the device.
    `align`: value -> (device codes, device mask) of a first step, for a reference taking the device's quantization
    decisions (odl validate)."""

    def __init__(self, graph, pattern: str = ""):
        self.points = {v: point_of(graph, v) for v in points(graph, pattern)}
        self.act = {p: act_fake_quant() for p in self.points.values()}
        self.wgt = {w: weight_fake_quant() for w in weights(graph, pattern)}
        self.align: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.used: set[str] = set()     # weights fake-quantized by the forward that runs (check_used)

    def training(self, on: bool) -> None:
        for fq in self.act.values():
            fq.enable_observer() if on else fq.disable_observer()

    def weight(self, pname: str, w: torch.Tensor) -> torch.Tensor:
        fq = self.wgt.get(pname)
        if fq is None:
            return w
        self.used.add(pname)
        return fq(w.float()).to(w.dtype)     # in FP32, as defined (see after)

    def module_forward(self, mod: nn.Module, target: str, args, kwargs):
        """A module call (torch.fx call_module) with its fake-quantized weight, or None if its weight is not one."""
        pname = f"{target}.weight" if target else "weight"
        if pname not in self.wgt:
            return None
        w = self.weight(pname, mod.weight)
        self.used.add(pname)
        if isinstance(mod, nn.Linear):
            return F.linear(args[0], w, mod.bias)
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            return mod._conv_forward(args[0], w, mod.bias)
        raise OdlError(f"--qat int8: the reference cannot fake-quantize the weight of module '{target}' "
                       f"({type(mod).__name__})")

    def check_used(self) -> None:
        """Refuse a forward in which a weight the device fake-quantizes was not (a layer the reference reached
        another way): its numbers would silently differ from the device's."""
        missing = [w for w in self.wgt if w not in self.used]
        if missing:
            raise OdlError(f"--qat int8: the PyTorch reference did not fake-quantize weight(s) {', '.join(missing)} "
                           f"(not used through their nn.Module)")

    def after(self, value: str, out):
        """The fake-quantized value of an activation point (None if `value` is none)."""
        p = self.points.get(value)
        if p is None or not isinstance(out, torch.Tensor):
            return None
        fq = self.act[p]
        # torch's fake quantization of FP32 values: x * (1 / scale) rounded to FP32, then to a code. A float64
        # tensor would be multiplied in float64 (another rounding of the same definition, which puts a weight's
        # extreme, exactly +-127.5 codes away, on either side of its tie): the FP64 and FP16 references quantize
        # the FP32 value as the device does; the value is rounded to FP32 first, far below a quantum.
        y = fq(out.float()).to(out.dtype)
        al = self.align.get(value)
        if al is None:
            return y
        codes, mask = al        # the device's codes and straight-through mask, with this reference's qparams
        q = torch.from_numpy(codes).reshape(out.shape).to(out.dtype)
        s, z = float(fq.scale), float(fq.zero_point)
        yd = (torch.clamp(q, ACT["qmin"], ACT["qmax"]) - z) * s
        m = torch.from_numpy(mask).reshape(out.shape).to(out.dtype)
        return yd.detach() + (out - out.detach()) * m

    def state(self) -> dict[str, torch.Tensor]:
        """Every observer's state under the device's names (FP64 copies)."""
        out = {}
        for p, fq in list(self.act.items()) + list(self.wgt.items()):
            obs = fq.activation_post_process
            for what, t in (("min_val", obs.min_val), ("max_val", obs.max_val), ("scale", fq.scale),
                            ("zero_point", fq.zero_point)):
                out[state_name(p, what)] = t.detach().double().clone()
        return out

    def load_state(self, state: dict) -> None:
        """Set every observer's state from `state()`'s layout (a checkpoint's)."""
        for p, fq in list(self.act.items()) + list(self.wgt.items()):
            obs = fq.activation_post_process
            for what, t in (("min_val", obs.min_val), ("max_val", obs.max_val), ("scale", fq.scale),
                            ("zero_point", fq.zero_point)):
                v = torch.as_tensor(state[state_name(p, what)])
                if p in self.wgt and what in ("min_val", "max_val") and bool(torch.isinf(v).all()):
                    v = v[:0]       # never observed: torch's per-channel observer starts empty, not at +-inf
                t.resize_(v.shape)
                t.copy_(v.to(t.dtype))


class _Interpreter(torch.fx.Interpreter):
    def __init__(self, gm, qat: TorchFakeQuant):
        super().__init__(gm)
        self.qat = qat

    def run_node(self, n):
        out = super().run_node(n)
        q = self.qat.after(n.name, out)
        return out if q is None else q

    def call_module(self, target, args, kwargs):
        out = self.qat.module_forward(self.fetch_attr(target), target, args, kwargs)
        return super().call_module(target, args, kwargs) if out is None else out


class QatModel(nn.Module):
    """`model` run through its torch.fx trace with torch's fake quantization at odl's points (`graph`: the model
    traced by odl's fx frontend, whose node names are the trace's): the host reference of `odl train --qat int8`.
    Parameters and buffers are the model's own; eval() freezes the activation observers. pattern: --qat int8:REGEX's
    layers (odl/lower/layers.py)."""

    def __init__(self, model: nn.Module, graph, pattern: str = ""):
        super().__init__()
        self.model = model
        object.__setattr__(self, "gm", torch.fx.symbolic_trace(model))   # shares the model's modules
        self.qat = TorchFakeQuant(graph, pattern)

    def train(self, mode: bool = True):
        super().train(mode)
        self.qat.training(mode)
        return self

    def forward(self, x):
        self.qat.used = set()
        out = _Interpreter(self.gm, self.qat).run(x)
        self.qat.check_used()
        return out
