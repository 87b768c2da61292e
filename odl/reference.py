"""PyTorch reference for one training step: loss, logits, parameter gradients, gradients of every graph value,
updated parameters. Runs the traced graph so values carry the same names as in odl's graph."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Reference:
    loss: float
    logits: torch.Tensor
    param_grads: dict[str, torch.Tensor]
    value_grads: dict[str, torch.Tensor]
    updated: dict[str, torch.Tensor]


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm, values):
        super().__init__(gm)
        self.values = values

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.retain_grad()
            self.values[n.name] = out
        return out


def reference_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, lr: float,
                   dtype: torch.dtype = torch.float32) -> Reference:
    m = copy.deepcopy(model).to(dtype)
    m.train()
    gm = torch.fx.symbolic_trace(m)
    values: dict[str, torch.Tensor] = {}
    logits = _Recorder(gm, values).run(x.to(dtype))
    loss = F.cross_entropy(logits, labels.long())
    loss.backward()
    params = dict(gm.named_parameters())
    pgrads = {k: p.grad.detach().float().clone() for k, p in params.items() if p.grad is not None}
    vgrads = {k: v.grad.detach().float().clone() for k, v in values.items() if v.grad is not None}
    with torch.no_grad():
        updated = {k: (p - lr * p.grad).float().clone() for k, p in params.items() if p.grad is not None}
    return Reference(loss=float(loss.detach()), logits=logits.detach().float(), param_grads=pgrads, value_grads=vgrads,
                     updated=updated)
