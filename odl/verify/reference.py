"""PyTorch reference for K training steps: per step the loss, logits, parameter gradients, gradients of every
graph value, and after the update the parameters and buffers (running statistics). Runs the traced graph so
values carry the same names as in odl's graph; dropout uses the device's reproducible masks."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from odl.lower.lowering import TrainConfig
from odl.lower.ops import dropout as dropout_op
from odl.lower.ops.fakequant import fq_name


@dataclass
class Reference:
    loss: float
    logits: torch.Tensor
    param_grads: dict[str, torch.Tensor]
    value_grads: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]       # forward value of every graph node
    updated: dict[str, torch.Tensor]      # parameters after the update
    buffers: dict[str, torch.Tensor]      # running statistics after the step


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm, values, dropout, step, masks=None, qat=None):
        super().__init__(gm)
        self.values, self.dropout, self.step, self.masks = values, dropout, step, masks or {}
        self.qat = qat      # --qat int8: odl.lower.ops.fakequant_torch.TorchFakeQuant (torch's fake quantization)

    def run_node(self, n):
        out = self._run(n)
        q = self.qat.after(n.name, out) if self.qat is not None else None
        if q is None:
            return out
        if q.requires_grad:
            q.retain_grad()
        self.values[fq_name(n.name)] = q     # the device's fake-quant node; the value before it keeps its name
        return q

    def call_module(self, target, args, kwargs):
        out = self.qat.module_forward(self.fetch_attr(target), target, args, kwargs) if self.qat is not None else None
        return super().call_module(target, args, kwargs) if out is None else out

    def _run(self, n):
        spec = self.dropout.get(n.name)
        mask = self.masks.get(n.name)
        if isinstance(mask, tuple):
            # hard-swish / hard-sigmoid taking the device's decisions: the derivative of the piece (0: below -3,
            # 1: between, 2: above 3) the device's output lies on, the values the reference's own
            kind, region = mask
            x = self.env[n.args[0]]
            y = super().run_node(n)
            r = torch.from_numpy(region).reshape(x.shape)
            if kind == "hardswish":
                d = torch.where(r == 2, torch.ones_like(x), torch.where(r == 1, (2 * x + 3) / 6, torch.zeros_like(x)))
            else:
                d = torch.where(r == 1, torch.full_like(x, 1 / 6), torch.zeros_like(x))
            out = y.detach() + (x - x.detach()) * d.detach()
        elif mask is not None:
            # ReLU / ReLU6 taking the device's decisions: the gradient passes exactly where the device's passed
            x = self.env[n.args[0]]
            y = super().run_node(n)
            m = torch.from_numpy(mask).reshape(x.shape)
            out = torch.where(m, x, y.detach())
        elif spec is not None:
            x = self.env[n.args[0]]
            keep = dropout_op.mask(spec["p"], dropout_op.step_seed(spec["seed"], self.step), x.numel())
            out = x * torch.from_numpy(keep).reshape(x.shape).to(x.dtype) * (1.0 / (1.0 - spec["p"]))
        else:
            out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            if out.requires_grad:
                out.retain_grad()
            self.values[n.name] = out
        return out


class _ExportRecorder(_Recorder):
    """The torch.export frontend's program (core ATen, parameters and buffers as inputs) run with a model's own
    tensors: values are recorded under the exported node names, which are the graph's value names. Dropout's
    value is the getitem of native_dropout's first result; its mask is the device's, as in _Recorder."""

    frozen_bn = False     # --bn frozen: batch norm on the running statistics, which stay as they are

    def _run(self, n):
        if self.frozen_bn and n.op == "call_function" and \
                n.target is torch.ops.aten._native_batch_norm_legit_functional.default:
            x, w, b, rm, rv, _, momentum, eps = (self.env[a] if isinstance(a, torch.fx.Node) else a for a in n.args)
            out, mean, rstd = torch.ops.aten._native_batch_norm_legit_no_training(x, w, b, rm, rv, momentum, eps)
            return out, mean, rstd, rm, rv
        if n.op == "call_function" and n.target is torch.ops.aten.native_dropout.default:
            first = next((u.name for u in n.users if u.args[1] == 0), None)
            spec = self.dropout.get(first)
            if spec is not None:
                x = self.env[n.args[0]]
                keep = dropout_op.mask(spec["p"], dropout_op.step_seed(spec["seed"], self.step), x.numel())
                keep_t = torch.from_numpy(keep).reshape(x.shape)
                return x * keep_t.to(x.dtype) * (1.0 / (1.0 - spec["p"])), keep_t
        if n.op == "call_function" and n.name not in self.masks:
            out = torch.fx.Interpreter.run_node(self, n)
            if isinstance(out, torch.Tensor):
                if out.requires_grad:
                    out.retain_grad()
                self.values[n.name] = out
            return out
        return super()._run(n)


def _run_exported(exported, m: nn.Module, x: torch.Tensor, values, dropout, step, masks, frozen_bn=False, fp8=None,
                  qat=None):
    """One forward of the exported program on module m's parameters and buffers. Returns the logits and the new
    values of the buffers it writes (running statistics, counters), for after the backward (autograd may hold the
    old ones)."""
    params = dict(m.named_parameters(remove_duplicate=False))
    bufs = dict(m.named_buffers(remove_duplicate=False))
    args = []
    for kind, name in exported.inputs:
        if kind == "param":
            args.append(params[name] if qat is None else qat.weight(name, params[name]))
        elif kind == "buffer":
            args.append(bufs[name])
        elif kind == "input":
            args.append(x)
        else:
            args.append(exported.program.constants[name])
    gm = exported.program.graph_module
    # --store fp8: a recorder that casts where the device packs (odl/verify/fp8ref.py)
    rec = (_ExportRecorder(gm, values, dropout, step, masks, qat) if fp8 is None
           else fp8.recorder(gm, values, dropout, step, masks))
    rec.frozen_bn = frozen_bn
    outs = rec.run(*args)
    logits, writes = None, []
    for (kind, name), v in zip(exported.outputs, outs):
        if kind == "buffer":
            writes.append((bufs[name], v.detach().clone()))
        else:
            logits = v
    return logits, writes


def _optimizer(params, cfg: TrainConfig):
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def reference_steps(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
                    trainable: list[str], dropout: dict[str, dict] | None = None,
                    dtype: torch.dtype = torch.float32, masks: dict | None = None, graph=None,
                    fp8=None, qat_align: dict | None = None) -> list[Reference]:
    """K steps of the model in PyTorch. `masks` (first step only): node name -> boolean array telling where a
    ReLU/ReLU6 passes its gradient, or (op, region array) for hard-swish / hard-sigmoid (the piece of the function
    each element is on), to align the reference with decisions the device took. `graph`: the graph odl
    lowered; when the torch.export frontend made it, its exported program is what runs (its node names are the
    graph's value names), else the model is traced with torch.fx. `fp8`: an odl.verify.fp8ref.Fp8Reference, to
    cast to float8 where a --store fp8 step packs (first step's scales; the torch.export program only). --qat int8
    (cfg.qat): torch's FakeQuantize modules at the device's points, starting from the same (empty) observer state;
    `qat_align` (first step only): value -> (device codes, device mask) for a reference taking the device's
    quantization decisions."""
    exported = getattr(graph, "exported", None)
    m = copy.deepcopy(model).to(dtype)
    m.train()
    if cfg.bn == "frozen":
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.eval()
    gm = m if exported is not None else torch.fx.symbolic_trace(m)
    params = dict(gm.named_parameters())
    for k, p in params.items():
        p.requires_grad_(k in trainable)
    train_params = [params[k] for k in trainable]
    # FP16 as the device does it: forward and backward in FP16, the update in FP32 with FP32 optimizer state (an
    # FP16 Adam state underflows: v ~ g^2 and eps = 1e-8 are zero in FP16), the weight rounded to FP16 once.
    shadow = ([p.detach().float().clone().requires_grad_(True) for p in train_params]
              if dtype == torch.float16 else None)
    opt = _optimizer(shadow if shadow is not None else train_params, cfg)
    centers = [p.detach().clone() for p in train_params] if cfg.prox_mu else None
    qat = None
    if cfg.qat != "none":
        from odl.lower.ops.fakequant_torch import TorchFakeQuant
        qat = TorchFakeQuant(graph, cfg.qat_layers)
    out = []
    for step, (x, target) in enumerate(batches):
        if qat is not None:
            qat.align, qat.used = (qat_align or {}) if step == 0 else {}, set()
        opt.zero_grad(set_to_none=True)
        for p in train_params:
            p.grad = None
        values: dict[str, torch.Tensor] = {}
        writes = []
        if exported is not None:
            logits, writes = _run_exported(exported, m, x.to(dtype), values, dropout or {}, step,
                                           masks if step == 0 else None, frozen_bn=cfg.bn == "frozen", fp8=fp8,
                                           qat=qat)
        else:
            logits = _Recorder(gm, values, dropout or {}, step, masks if step == 0 else None, qat).run(x.to(dtype))
        if qat is not None:
            qat.check_used()
        if cfg.loss == "mse":
            loss = F.mse_loss(logits, target.to(dtype))
        elif cfg.loss == "nll":
            loss = F.nll_loss(logits, target.long())
        elif cfg.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, target.to(dtype))
        else:
            loss = F.cross_entropy(logits, target.long())
        loss.backward()
        with torch.no_grad():
            for buf, v in writes:
                buf.copy_(v)
        if centers is not None:   # FedProx's proximal term, as the device adds it inside its update
            prox = [cfg.prox_mu * (p.detach() - c) for p, c in zip(train_params, centers)]
        pgrads = {k: p.grad.detach().double().clone() for k, p in params.items() if p.grad is not None}
        vgrads = {k: v.grad.detach().double().clone() for k, v in values.items() if v.grad is not None}
        if centers is not None:
            for p, d in zip(train_params, prox):
                p.grad = p.grad + d
        if shadow is not None:
            for sp, p in zip(shadow, train_params):
                sp.data.copy_(p.detach().float())
                sp.grad = None if p.grad is None else p.grad.detach().float()
        opt.step()
        if shadow is not None:
            with torch.no_grad():
                for sp, p in zip(shadow, train_params):
                    p.copy_(sp.detach().to(dtype))
        updated = {k: p.detach().double().clone() for k, p in params.items() if k in trainable}
        bufs = {k: b.detach().double().clone() for k, b in gm.named_buffers() if b.is_floating_point()}
        if qat is not None:
            bufs.update(qat.state())
        vals = {k: v.detach().double().clone() for k, v in values.items()}
        out.append(Reference(loss=float(loss.detach()), logits=logits.detach().double(), param_grads=pgrads,
                             value_grads=vgrads, values=vals, updated=updated, buffers=bufs))
    return out


def first_update(model: nn.Module, cfg: TrainConfig, grads: dict) -> dict:
    """The first optimizer step in FP64 from the model's initial parameters and the given gradients (name ->
    array): what the device's update must give from the device's own gradient."""
    named = dict(model.named_parameters())
    ps = {k: named[k].detach().double().clone().requires_grad_(True) for k in grads}
    opt = _optimizer(list(ps.values()), cfg)
    for k, p in ps.items():
        p.grad = torch.as_tensor(grads[k], dtype=torch.float64).reshape(p.shape)
    opt.step()
    return {k: p.detach() for k, p in ps.items()}
