"""Lowering: forward graph -> training step as a list of kernel calls on named buffers.

The training step is forward, loss, backward (parameter gradients and input gradients), update. Each op
(odl/lower/ops/) says how its forward and backward become kernel calls; this module keeps the bookkeeping:
buffers for values and gradients, aliases (views share storage), gradient accumulation when a value has
several consumers (the first contribution overwrites, later ones add), and which values need gradients.
"""
from __future__ import annotations

import contextlib
import math
import re

from odl.common.errors import OdlError
from odl.ir.graph import Graph, Node
from odl.ir.program import MAX_CORES, Buffer, Call, CExpr, Program, Ptr, TrainConfig  # noqa: F401  (re-exported)
from odl.ir import kernels
from odl.lower import ops as opreg
from odl.common.precision import STEP_PRECISIONS, STORES, precision_of




def _forced_variants() -> dict:
    """ODL_VARIANTS="conv2d.forward=nn,conv2d.weight_grad=dot" forces choices (tests, experiments)."""
    import os
    spec = os.environ.get("ODL_VARIANTS", "")
    out = {}
    for item in filter(None, (t.strip() for t in spec.split(","))):
        if "=" not in item:
            raise OdlError(f"ODL_VARIANTS: '{item}' is not decision=variant")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def step_prologue(cfg) -> list[str]:
    """C lines at the start of a training step: Adam's bias corrections 1 - beta^t for this step (none for SGD)."""
    if cfg.optimizer != "adam":
        return []
    b1, b2 = (float(v) for v in cfg.betas)
    return ["static float odl_b1t = 1.0f, odl_b2t = 1.0f;", f"odl_b1t *= {b1:.9g}f; odl_b2t *= {b2:.9g}f;"]


class Lowering:
    def __init__(self, graph: Graph, precision: str, cfg: TrainConfig, observe: bool = False, profile: bool = False,
                 costs: dict | None = None, tuning: bool = False, cores: int = 8, forward_only: bool = False):
        self.forward_only = forward_only   # evaluation program: forward calls only (no loss, gradients, update)
        self.observe = observe
        self.profile = profile
        self.costs = costs or {}        # decision key -> {variant: measured cycles} (odl tune)
        self.tuning = tuning
        self.est_cores = cores          # for cost hints when nothing is measured
        self.decisions: list[dict] = []
        self._variant = ""
        self.param_override: dict[str, Buffer] = {}   # parameter -> the buffer layers read instead (--qat: its
                                                       # fake-quantized copy)
        if cfg.qat != "none":
            from odl.lower.ops import fakequant
            fakequant.check(graph, cfg)
            graph = fakequant.insert(graph, cfg.qat_layers)
        self.g = graph
        self.precision = precision
        self.cfg = cfg
        self.calls: list[Call] = []
        self.buffers: list[Buffer] = []
        self.value_buf: dict[str, Buffer] = {}
        self.grad_buf: dict[str, Buffer] = {}
        self.grad_written: set[int] = set()
        self.params: dict[str, Buffer] = {}
        self.param_grads: dict[str, Buffer] = {}
        self.trainable = self._select_trainable(cfg.train)
        self.needs_grad = self._propagate_needs_grad()
        self.saved: dict[str, object] = {}   # per-node values the forward keeps for the backward
        self.view_of: dict[str, str] = {}    # view value -> the value whose storage and gradient it shares
        self._loop = (0, 0)
        self._groups = 0
        self._macros: set[str] = set()
        self._pgrad_written: set[str] = set()     # parameters whose gradient buffer holds a contribution
        self._pgrad_use: dict[tuple, Buffer] = {}  # (node, role) -> where that use writes its contribution
        self._pgrad_pending: list[tuple] = []      # (partial, gradient, node): adds after the node's backward
        self.bwd_bufs: dict[str, set] = {}         # node -> ids of the buffers its backward's calls use
        self.fp8 = None                            # odl.lower.fp8.Fp8Store with --store fp8

    # ---- buffers -------------------------------------------------------------------------------
    @property
    def elem_bytes(self) -> int:
        return precision_of(self.precision).elem_bytes

    def new_buffer(self, name, nelem, **kw) -> Buffer:
        b = Buffer(name=name, nelem=int(nelem), **kw)
        base, i = b.name, 1
        while b.macro in self._macros:    # C names must be unique ('a.b' and 'a_b' both give B_a_b)
            i += 1
            b.name = f"{base}#{i}"
        self._macros.add(b.macro)
        self.buffers.append(b)
        return b

    def value(self, name: str) -> Buffer:
        return self.value_buf[name]

    def shape(self, name: str) -> tuple:
        return self.g.shapes[name]

    def alias(self, value: str, of: str):
        """`value` is a view of `of`: same storage, and the same gradient storage."""
        self.value_buf[value] = self.value_buf[of]
        self.view_of[value] = self._grad_root(of)

    # ---- in-place ------------------------------------------------------------------------------------
    def _storage_group(self, value: str) -> list[str]:
        b = self.value_buf.get(value)
        return [n for n, v in self.value_buf.items() if v is b]

    def can_overwrite(self, value: str, node: Node) -> bool:
        """May `node` write its output over `value`'s storage? Only if `node` is the last reader: every value
        sharing that storage is consumed by `node` alone, none is the model input or output, and no backward
        needs it (an op whose backward reads its own output, e.g. ReLU or Sigmoid, never has that output overwritten;
        an op whose backward reads its input does not overwrite it)."""
        if not self.cfg.inplace:
            return False
        for v in self._storage_group(value):
            if v in (self.g.input, self.g.output):
                return False
            if any(c is not node for c in self.g.consumers(v)):
                return False
            prod = next((n for n in self.g.nodes if n.name == v), None)
            if prod is not None and opreg.backward_reads_output(prod):
                return False
        return self.value_buf[value].role == "act"

    def output_inplace(self, node: Node, over: str) -> Buffer:
        """The node's output, written over `over` when legal (see can_overwrite), else a new buffer."""
        if self.can_overwrite(over, node):
            b = self.value_buf[over]
            self.value_buf[node.name] = b
            return b
        return self.output(node)

    def grad_inplace(self, value: str, node: Node) -> tuple[Buffer, int] | None:
        """grad_target(value) for an elementwise backward of `node` that may write d(value) over d(node's
        output): shares that buffer when `node` is the only consumer of `value` (and of its views) and nothing
        has contributed to d(value) yet. Returns None when no gradient is needed."""
        if not self.needs_grad.get(value, False):
            return None
        if self.can_share_grad(value, node):
            b = self.grad_buf[self._grad_root(node.name)]
            self.grad_buf[self._grad_root(value)] = b
            return b, 0
        return self.grad_target(value)

    def can_share_grad(self, value: str, node: Node) -> bool:
        if not (self.cfg.inplace and self.needs_grad.get(value, False)):
            return False
        root = self._grad_root(value)
        views = [v for v in self.value_buf if self._grad_root(v) == root] or [value]
        return root not in self.grad_buf and all(c is node for v in views for c in self.g.consumers(v))

    def output(self, node: Node) -> Buffer:
        b = self.new_buffer(node.name, math.prod(node.shape), role="act", shape=node.shape)
        self.value_buf[node.name] = b
        return b

    def param(self, node: Node, role: str) -> Buffer:
        pname = node.params[role]
        return self.param_override.get(pname) or self.params[pname]

    def param_grad(self, node: Node, role: str) -> Buffer | None:
        """Where `node`'s backward writes the gradient of its parameter `role` (overwriting: ops never add to it).
        A parameter used by several nodes (a module called twice, tied weights) gets the first contribution in its
        gradient buffer and every later one in a scratch buffer that is added to it right after that node's
        backward (run() emits the adds), so the gradient is the sum over every use, as in PyTorch."""
        pname = node.params.get(role)
        main = self.param_grads.get(pname) if pname else None
        if main is None:
            return None
        key = (node.name, role)
        if key in self._pgrad_use:
            return self._pgrad_use[key]
        if pname not in self._pgrad_written:
            self._pgrad_written.add(pname)
            buf = main
        else:
            buf = self.scratch(f"grad_{pname}@{node.name}", main.nelem)
            self._pgrad_pending.append((buf, main, node))
        self._pgrad_use[key] = buf
        return buf

    def _flush_shared_param_grads(self):
        for part, main, node in self._pgrad_pending:
            self.call("odl_copy", node.report_name, "weight_grad", src=Ptr(part), dst=Ptr(main), len=main.nelem,
                      accumulate=1)
        self._pgrad_pending = []

    def scratch(self, name: str, nelem: int) -> Buffer:
        return self.new_buffer(name, nelem, role="scratch")

    def grad(self, value: str) -> Buffer:
        """The gradient buffer of a value (as a source: it must have been written already)."""
        root = self._grad_root(value)
        return self.grad_buf[root]

    def grad_target(self, value: str) -> tuple[Buffer, int] | None:
        """Where a backward kernel writes its contribution to d(value), and whether it must add to it.
        None when the value needs no gradient."""
        if not self.needs_grad.get(value, False):
            return None
        root = self._grad_root(value)
        b = self.grad_buf.get(root)
        if b is None:
            b = self.new_buffer("d_" + root, math.prod(self.shape(root)), role="grad", shape=self.shape(root))
            self.grad_buf[root] = b
        acc = 1 if id(b) in self.grad_written else 0
        self.grad_written.add(id(b))
        return b, acc

    def _grad_root(self, value: str) -> str:
        # views share their base's gradient storage (in-place outputs share storage, not gradients)
        return self.view_of.get(value, value)

    # ---- calls -----------------------------------------------------------------------------------
    def call(self, kernel: str, layer: str, step: str, macs: int = 0, **fields):
        if not kernels.get(kernel).applies(fields):
            raise OdlError(f"internal: kernel {kernel} does not take these fields ({', '.join(sorted(fields))}) "
                           f"for layer {layer}, {step}")
        loop, group = self._loop
        if not loop:        # outside a per-sample loop (or a batch of one): sample 0
            fields = {k: _sample0(v) for k, v in fields.items()}
        self.calls.append(Call(kernel=kernel, fields=fields, layer=layer, step=step, loop=loop, macs=macs,
                               group=group, variant=self._variant))

    # ---- choices between equivalent implementations ----------------------------------------------------
    def choose(self, layer: str, decision: str, signature: dict, variants: dict):
        """Emit one of several equivalent ways to compute the same thing (variants: name -> function that makes
        the calls; it must only read/write buffers resolved beforehand). The pick is the variant with the lowest
        measured cost for this (decision, signature) on the target (odl tune caches them), else the lowest cost
        hint of the kernel registry. In tuning mode every variant is emitted, tagged, so one profiled run
        measures them all (the step's numbers are then meaningless; only its counts are used)."""
        key = f"{decision}|" + ",".join(f"{k}={v}" for k, v in sorted(signature.items()))
        if self.tuning:
            for name, emit in variants.items():
                self._variant = f"{key}={name}"
                emit()
            self._variant = ""
            return
        forced = _forced_variants().get(decision)
        if forced is not None and forced not in variants:
            raise OdlError(f"ODL_VARIANTS: '{decision}' has no variant '{forced}' (variants: {', '.join(variants)})")
        measured = self.costs.get(key, {})
        emitted = {}
        for name, emit in variants.items():
            saved, self.calls = self.calls, []
            emit()
            emitted[name], self.calls = self.calls, saved
        if all(n in measured for n in variants):
            costs, basis = {n: float(measured[n]) for n in variants}, "measured"
        else:
            costs, basis = {n: self._estimate(c) for n, c in emitted.items()}, "estimated"
        best = min(variants, key=lambda n: costs[n])
        if forced is not None:
            best, basis = forced, "forced"
        for c in emitted[best]:
            c.variant = f"{key}={best}"
        self.calls += emitted[best]
        self.decisions.append({"layer": layer, "decision": key, "variant": best, "basis": basis,
                               "costs": costs})

    def _estimate(self, calls: list) -> float:
        from odl.ir import kernels
        lanes = precision_of(self.precision).lanes
        total = 0.0
        for c in calls:
            f = {k: v for k, v in c.fields.items() if isinstance(v, int)}
            total += kernels.estimate(c.kernel, f, self.est_cores, lanes) * max(1, c.loop)
        return total

    @contextlib.contextmanager
    def per_sample(self, n: int):
        """Calls made inside run once per sample n (C variable `n`), in one loop, in the order made. A batch of one
        needs no loop: the calls are plain calls (sample 0), so nothing separates them from their neighbours (the
        memory hierarchy keeps results in L1 and prefetches across them)."""
        self._groups += 1
        self._loop = (n, self._groups) if n > 1 else (0, 0)
        try:
            yield
        finally:
            self._loop = (0, 0)

    # ---- what trains -------------------------------------------------------------------------------
    def _select_trainable(self, spec: str) -> set[str]:
        names = list(self.g.params)
        if spec == "all":
            return set(names)
        if spec == "auto":
            raise OdlError("internal: --train auto is resolved to parameter names before lowering (odl/plan/sparse.py)")
        if spec.startswith("last:"):
            try:
                k = int(spec[5:])
            except ValueError:
                raise OdlError(f"bad --train '{spec}': expected last:K with K an integer") from None
            layers = [n for n in self.g.nodes if n.params]
            if not 1 <= k <= len(layers):
                raise OdlError(f"bad --train '{spec}': the model has {len(layers)} layers with parameters")
            return {p for n in layers[-k:] for p in n.params.values()}
        try:
            rx = re.compile(spec)
        except re.error as e:
            raise OdlError(f"bad --train regex '{spec}': {e}") from None
        chosen = {p for p in names if rx.search(p)}
        if not chosen:
            raise OdlError(f"--train '{spec}' matches no parameter (parameters: {', '.join(names[:6])}...)")
        return chosen

    def _propagate_needs_grad(self) -> dict[str, bool]:
        need = {self.g.input: False}
        for n in self.g.nodes:
            own = any(p in self.trainable for p in n.params.values())
            need[n.name] = own or any(need.get(i, False) for i in n.inputs)
        return need

    # ---- the whole step ----------------------------------------------------------------------------
    def state_buffer(self, name: str, nelem: int, init: tuple, dtype: str = "f32", shape=()) -> Buffer:
        """Device state that persists across steps (running statistics, optimizer moments); host-initialised."""
        b = self.new_buffer(name, nelem, dtype=dtype, role="state", persistent=True, shape=shape, init=init)
        self.preload.append(b)
        return b

    def state(self, torch_name: str, nelem: int) -> Buffer:
        """A PyTorch buffer (e.g. 'bn1.running_mean') kept on the device, FP32."""
        if torch_name not in self.state_bufs:
            b = self.state_buffer("state_" + torch_name, nelem, ("state", torch_name), shape=(nelem,))
            self.state_bufs[torch_name] = b
        return self.state_bufs[torch_name]

    def _backward_order(self) -> list:
        """The nodes in an order the backward can run them (a node after every consumer of its output): among the
        ready nodes, the one earliest in the forward. At a residual join this finishes the main branch before the
        shortcut, so the gradient of the block input is born when the main branch ends instead of waiting through it
        (ResNet8: 16 KiB less at the peak). Any such order gives the same gradients."""
        g = self.g
        pos = {n.name: i for i, n in enumerate(g.nodes)}
        waiting = {n.name: 0 for n in g.nodes}
        for n in g.nodes:
            for v in dict.fromkeys(n.inputs):
                if v in waiting:
                    waiting[v] += 1
        import heapq
        ready = [pos[n] for n, k in waiting.items() if k == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            i = heapq.heappop(ready)
            n = g.nodes[i]
            order.append(n)
            for v in dict.fromkeys(n.inputs):
                if v in waiting:
                    waiting[v] -= 1
                    if waiting[v] == 0:
                        heapq.heappush(ready, pos[v])
        if len(order) != len(g.nodes):
            return list(reversed(g.nodes))
        return order

    def run(self) -> Program:
        """The training step (or, forward_only, the forward pass) as a Program, lowered phase by phase."""
        self.preload: list[Buffer] = []
        self.state_bufs: dict[str, Buffer] = {}
        self.prologue: list[str] = []
        self.dropout: dict[str, dict] = {}
        inp = self._inputs()
        if self.forward_only:
            return self._forward_only_program(inp, self.shape(self.g.output))
        labels = self._labels()
        self.preload += [inp, labels]
        if self.cfg.store == "fp8":
            from odl.lower.fp8 import Fp8Store
            self.fp8 = Fp8Store(self, *self._backward_reads())
        self._param_grad_buffers()
        macs_f = self._forward()
        if self.fp8:
            self.fp8.pack_activations()
        logits, loss = self._loss(labels)
        macs_b = self._backward_and_updates()
        prog = self._assemble(inp, labels, logits, loss, macs_f, macs_b)
        return prog

    def _backward_reads(self) -> tuple[dict[str, list[str]], set[str] | None]:
        """--store fp8: per node, the forward values its backward reads from FP8 copies, from the same step lowered
        without FP8 storage (odl/lower/fp8.py backward_reads), and the gradient roots packed (None: all); with
        --store fp8:REGEX only those of the matched layers (fp8.select)."""
        import dataclasses
        from odl.lower.fp8 import backward_reads, select
        sub = Lowering(self.g, self.precision, dataclasses.replace(self.cfg, store="compute", store_layers=""),
                       cores=self.est_cores, costs=self.costs)
        sub.run()
        reads = backward_reads(sub)
        return select(sub, reads, self.cfg.store_layers) if self.cfg.store_layers else (reads, None)

    def _inputs(self) -> Buffer:
        """Buffers of the parameters (preloaded) and of the model input; returns the input's."""
        g = self.g
        if self.cfg.frozen not in ("l2", "rom", "auto"):     # 'auto' undecided (odl.pipeline.fit decides): L2
            raise OdlError(f"--frozen {self.cfg.frozen!r}: choose auto, l2 or rom")
        for pname, shape in g.params.items():
            b = self.new_buffer(pname, math.prod(shape), role="param", persistent=True, shape=shape,
                                init=("param", pname))
            if self.cfg.frozen == "rom" and pname not in self.trainable:
                b.space = "rom"         # frozen weights in the read-only level, outside the budget (planner)
            self.params[pname] = b
        self.preload += list(self.params.values())
        inp = self.new_buffer("input", math.prod(g.input_shape), role="input", persistent=True, shape=g.input_shape,
                              init=("input",))
        self.value_buf[g.input] = inp
        return inp

    def _labels(self) -> Buffer:
        """The buffer of the loss's labels (class indices) or targets (values), after checking the loss fits the
        model's output."""
        g, cfg = self.g, self.cfg
        out_shape = self.shape(g.output)
        batch = g.input_shape[0]
        from odl.lower.ops.reduce import check_loss
        check_loss(g, cfg.loss)
        if cfg.loss in ("xent", "nll"):
            if len(out_shape) != 2:
                raise OdlError(f"{'cross-entropy' if cfg.loss == 'xent' else 'NLL'} needs [N, classes] "
                               f"{'logits' if cfg.loss == 'xent' else 'log-probabilities'} from the model, "
                               f"got {list(out_shape)}")
            return self.new_buffer("labels", batch, dtype="i32", role="label", persistent=True, shape=(batch,),
                                   init=("labels",))
        if cfg.loss in ("mse", "bce"):
            return self.new_buffer("targets", math.prod(out_shape), role="label", persistent=True,
                                   shape=out_shape, init=("labels",))
        raise OdlError(f"unknown loss '{cfg.loss}' (expected xent, mse, nll or bce)")

    def _param_grad_buffers(self):
        """A gradient buffer per trainable parameter."""
        g = self.g
        for pname in g.params:
            if pname in self.trainable:
                # the deployable step frees a gradient after its (fused) update; validation reads them back
                self.param_grads[pname] = self.new_buffer(
                    "grad_" + pname, self.params[pname].nelem, role="param_grad", persistent=self.observe,
                    shape=g.params[pname])

    def _forward(self) -> int:
        """Emit every node's forward; returns the forward's MACs."""
        macs_f = 0
        if self.cfg.qat != "none":
            from odl.lower.ops import fakequant
            fakequant.quantize_weights(self)
        for node in self.g.nodes:
            n0 = len(self.calls)
            opreg.get(node.op).forward(node, self)
            macs_f += sum(c.macs for c in self.calls[n0:])
        return macs_f

    def _loss(self, labels: Buffer) -> tuple[Buffer, Buffer]:
        """Emit the loss and the gradient of the logits; returns (logits, loss) buffers."""
        g, cfg = self.g, self.cfg
        out_shape = self.shape(g.output)
        logits = self.value(g.output)
        logits.persistent = True
        loss = self.new_buffer("loss", 1, dtype="f32", role="loss", persistent=True, shape=())
        dlogits = self.grad_target(g.output)
        if dlogits is None:
            raise OdlError(f"nothing trains: --train '{cfg.train}' selects no parameter that reaches the loss")
        if cfg.loss == "xent":
            self.call("odl_softmax_xent", "loss", "loss", logits=Ptr(logits), labels=Ptr(labels),
                      dlogits=Ptr(dlogits[0]), loss_out=Ptr(loss), n=out_shape[0], c=out_shape[1])
        elif cfg.loss == "nll":
            self.call("odl_nll", "loss", "loss", logp=Ptr(logits), labels=Ptr(labels), dlogp=Ptr(dlogits[0]),
                      loss_out=Ptr(loss), n=out_shape[0], c=out_shape[1])
        elif cfg.loss == "bce":   # per-core partial sums of the loss terms, then their total
            part = self.new_buffer("loss_partials", MAX_CORES, dtype="f32", role="scratch")
            self.call("odl_bce_logits", "loss", "loss", z=Ptr(logits), target=Ptr(labels), dz=Ptr(dlogits[0]),
                      partial=Ptr(part), len=math.prod(out_shape))
            self.call("odl_sum_partials", "loss", "loss", partial=Ptr(part), out=Ptr(loss),
                      scale=1.0 / math.prod(out_shape))
        else:
            self.call("odl_mse", "loss", "loss", pred=Ptr(logits), target=Ptr(labels), dpred=Ptr(dlogits[0]),
                      loss_out=Ptr(loss), len=math.prod(out_shape))
        return logits, loss

    def _backward_and_updates(self) -> int:
        """Emit every node's backward in backward order, each parameter's update once its gradient is complete;
        returns the backward's MACs."""
        g, cfg = self.g, self.cfg
        macs_b = 0
        # Fused updates: a parameter is updated as soon as its gradient is complete (after the backward of the last
        # node using it, in backward order), so the deployable step keeps no gradient buffer beyond its layer.
        uses = {p: sum(p in n.params.values() for n in g.nodes) for p in self.param_grads}
        self._update_prologue()
        if self.fp8:
            self.fp8.start_backward()
        for node in self._backward_order():
            if self.fp8:
                self.fp8.unpack_grad(node)
            saved = {}
            if (self.needs_grad.get(node.name, False)
                    and self._grad_root(node.name) in self.grad_buf):  # else the value does not reach the loss
                op = opreg.get(node.op)
                n0 = len(self.calls)
                for v in node.inputs:
                    if v in cfg.recompute:
                        self._recompute(v)
                saved = self.fp8.unpack_values(node) if self.fp8 else {}
                n1 = len(self.calls)
                op.backward(node, self)
                self._flush_shared_param_grads()
                self.bwd_bufs[node.name] = {id(b) for c in self.calls[n1:] for b in c.buffers()}
                macs_b += sum(c.macs for c in self.calls[n0:])
            if self.fp8:
                self.fp8.after_backward(node, saved)
            for pname in dict.fromkeys(node.params.values()):
                if pname in uses:
                    uses[pname] -= 1
                    if uses[pname] == 0:
                        if pname not in self._pgrad_written:
                            raise OdlError(f"parameter '{pname}' trains but its layer does not reach the loss")
                        if cfg.qat != "none":
                            from odl.lower.ops import fakequant
                            fakequant.mask_weight_grad(self, pname)
                        if cfg.fuse_updates:
                            self._update(pname)
        if not cfg.fuse_updates:
            for pname in self.param_grads:
                self._update(pname)
        return macs_b

    def _observed(self) -> tuple[dict, dict]:
        """(observed input gradients, last activations) the validation build keeps past the step (both empty in
        the deployable step)."""
        # Validation reads every layer's input gradient after the step, so they must outlive it: extra memory
        # that only the instrumented (validation) build pays; the deployable step does not keep them.
        observed = self._observed_input_grads() if self.observe else {}
        activations = {}
        if self.observe:
            last = {}  # buffer -> the last forward value written into it (in-place outputs overwrite inputs)
            for node in self.g.nodes:
                b = self.value_buf.get(node.name)
                if b is not None and b.role == "act" and node.name not in self.view_of:
                    last[id(b)] = (b, node)
            for b, node in last.values():
                activations[node.report_name if node.report_name not in activations else node.name] = (b, node.name)
        for b, _ in list(observed.values()) + list(activations.values()):
            b.persistent = True
        return observed, activations

    def _assemble(self, inp: Buffer, labels: Buffer, logits: Buffer, loss: Buffer, macs_f: int,
                  macs_b: int) -> Program:
        """The Program of the lowered step, with the observed buffers and the profile buffer when asked for."""
        g, cfg = self.g, self.cfg
        fp8 = self.fp8.finish() if self.fp8 else None
        observed, activations = self._observed()
        prof = None
        if self.profile:  # per call, per core (up to MAX_CORES) instruction counts, summed over loop iterations
            prof = self.new_buffer("profile_counts", len(self.calls) * MAX_CORES, dtype="i32", role="profile",
                                   persistent=True, shape=(len(self.calls), MAX_CORES))
        return Program(graph=g, precision=self.precision, calls=self.calls, buffers=self.buffers,
                       params=self.params, param_grads=self.param_grads, input=inp, labels=labels, loss=loss,
                       logits=logits, observed_grads=observed, preload=self.preload,
                       macs_forward=macs_f, macs_backward=macs_b, state=self.state_bufs, prologue=self.prologue,
                       dropout=self.dropout, activations=activations, profile=prof, decisions=self.decisions,
                       trainable=[p for p in g.params if p in self.trainable], config=cfg, fp8=fp8)

    def _recompute(self, value: str):
        """Emit the producer of `value` again into a new buffer, right before the backward that reads it, so the
        forward's buffer dies after its last forward reader."""
        prod = self.g.node(value)
        old = self.value_buf[value]
        buf = self.new_buffer(value + "_re", old.nelem, role="act", shape=old.shape)
        opreg.get(prod.op).forward(prod, self, y=buf, macs_credit=False)
        self.value_buf[value] = buf

    def _forward_only_program(self, inp: Buffer, out_shape: tuple) -> Program:
        """The forward pass alone (odl train's evaluation program): batch norm as the config says (evaluation
        passes bn='frozen': running statistics), dropout the identity, logits kept for the host."""
        macs_f = self._forward()
        logits = self.value(self.g.output)
        logits.persistent = True
        return Program(graph=self.g, precision=self.precision, calls=self.calls, buffers=self.buffers,
                       params=self.params, param_grads={}, input=inp, labels=None, loss=None, logits=logits,
                       observed_grads={}, preload=self.preload, macs_forward=macs_f, state=self.state_bufs,
                       prologue=self.prologue, dropout=self.dropout, trainable=[], config=self.cfg)

    def _update_prologue(self):
        cfg = self.cfg
        if cfg.prox_mu and cfg.optimizer != "sgd":
            raise OdlError(f"a proximal term (FedProx, mu={cfg.prox_mu}) is supported with --optimizer sgd only")
        if cfg.prox_mu < 0 or cfg.prox_mu != cfg.prox_mu:
            raise OdlError(f"FedProx mu={cfg.prox_mu}: must be a finite number >= 0")
        if cfg.optimizer not in ("sgd", "adam"):
            raise OdlError(f"unknown optimizer '{cfg.optimizer}' (expected sgd or adam)")
        self.prologue += step_prologue(cfg)

    def _update(self, pname: str):
        """The optimizer step of one parameter, emitted once its gradient is complete."""
        cfg = self.cfg
        gb = self.param_grads[pname]
        w = self.params[pname]
        if cfg.optimizer == "sgd":
            if cfg.momentum == 0 and cfg.weight_decay == 0 and not cfg.prox_mu:
                self.call("odl_sgd", pname, "update", w=Ptr(w), g=Ptr(gb), len=w.nelem, lr=float(cfg.lr))
                return
            buf = None
            if cfg.momentum:
                buf = Ptr(self.state_buffer("momentum_" + pname, w.nelem, ("zeros",), shape=w.shape))
            prox = {}
            if cfg.prox_mu:   # FedProx: the centre is the parameter as the host loaded it (the global model)
                prox = dict(center=Ptr(self.state_buffer("prox_center_" + pname, w.nelem, ("param", pname),
                                                         shape=w.shape)), mu=float(cfg.prox_mu))
            self.call("odl_sgd_momentum", pname, "update", w=Ptr(w), g=Ptr(gb), buf=buf, len=w.nelem,
                      lr=float(cfg.lr), momentum=float(cfg.momentum), wd=float(cfg.weight_decay),
                      first=CExpr("odl_step_index == 0"), **prox)
        else:
            b1, b2 = (float(v) for v in cfg.betas)
            m = self.state_buffer("adam_m_" + pname, w.nelem, ("zeros",), shape=w.shape)
            v = self.state_buffer("adam_v_" + pname, w.nelem, ("zeros",), shape=w.shape)
            self.call("odl_adam", pname, "update", w=Ptr(w), g=Ptr(gb), m=Ptr(m), v=Ptr(v), len=w.nelem,
                      lr=float(cfg.lr), b1=b1, b2=b2, eps=float(cfg.eps), wd=float(cfg.weight_decay),
                      bc1=CExpr("1.0f - odl_b1t"), bc2=CExpr("1.0f - odl_b2t"))

    def _observed_input_grads(self) -> dict[str, tuple[Buffer, str]]:
        """Gradients of the values that layers consume, named after the first consumer (a PyTorch name)."""
        out = {}
        seen = set()
        for node in self.g.nodes:
            for v in node.inputs:
                root = self._grad_root(v)
                b = (self.fp8.grad_pre.get(root) if self.fp8 else None) or self.grad_buf.get(root)
                if b is None or id(b) in seen:
                    continue
                seen.add(id(b))
                name = node.report_name if node.report_name not in out else node.name
                out[name] = (b, root)
        return out


def _sample0(v):
    """A field value of a per-sample call run for sample 0 only (a batch of one: no loop, no C variable n)."""
    if isinstance(v, Ptr) and v.per_sample:
        return Ptr(v.buf, 0, v.elem)
    if isinstance(v, CExpr) and re.search(r"\bn\b", v):
        if v.replace(" ", "") == "n>0":
            return 0
        raise OdlError(f"internal: per-sample expression {v!r} outside a loop")
    return v


CHEAP_MACS_PER_OUTPUT = 32


def recompute_candidates(graph: Graph, cfg: TrainConfig) -> list[str]:
    """Values cheap to recompute whose only reader after the forward is one backward: outputs of depthwise
    convolutions (9 MACs per output) and of convolutions with at most CHEAP_MACS_PER_OUTPUT MACs per output (a stem
    conv on 3 channels: 27) read only by a training-mode batch norm (its backward needs its input). Largest first."""
    out = []
    for n in graph.nodes:
        cons = graph.consumers(n.name)
        cheap = n.op == "dwconv2d" or (n.op == "conv2d" and len(graph.shapes[n.inputs[0]]) == 4 and
                                       graph.shapes[n.inputs[0]][1] // n.attrs.get("groups", 1) * n.attrs["kh"]
                                       * n.attrs["kw"] <= CHEAP_MACS_PER_OUTPUT)
        if (cheap and n.name != graph.output and len(cons) == 1 and cons[0].op == "batchnorm"
                and (cfg.bn == "train" or not cons[0].attrs.get("track", True))):
            out.append(n.name)
    return sorted(out, key=lambda v: -math.prod(graph.shapes[v]))


def lower(graph: Graph, precision: str, cfg: TrainConfig | None = None, observe: bool = False,
          profile: bool = False, costs: dict | None = None, tuning: bool = False, cores: int = 8,
          forward_only: bool = False, memory=None, transform=None) -> Program:
    """The training step as kernel calls. memory: an odl.tile.memory.Hierarchy to tile the calls for (L1 tiles, DMA
    from the L2 arena; odl/tile/tiler.py), None for one flat memory. observe=True keeps every layer input gradient until the end of the
    step so the host can read it (validation); observe=False is the deployable step. profile=True adds a
    buffer where a profiling build (-DODL_PROFILE) records each call's exact per-core instruction counts.
    costs: measured variant costs for this target/precision/cores (odl.lower.costs.load_costs); tuning=True emits every
    variant of every choice so that one profiled run measures them (odl tune). transform: a function that rewrites
    the lowered (untiled) Program in place before tiling."""
    precision_of(precision, STEP_PRECISIONS)
    cfg = cfg or TrainConfig()
    if cfg.store not in STORES:
        raise OdlError(f"--store must be one of {', '.join(STORES)}, not {cfg.store!r}")
    if cfg.store == "fp8" and cfg.recompute:
        raise OdlError("--store fp8 does not recompute activations in the backward (their inputs are FP8 copies): "
                       f"drop the recompute of {', '.join(sorted(cfg.recompute))}")
    lanes = precision_of(precision).lanes
    if memory is None:
        prog = Lowering(graph, precision, cfg, observe, profile, costs, tuning, cores, forward_only).run()
        if transform is not None:
            transform(prog)
        kernels.plan_matmuls(prog.calls, cores, lanes)
        return prog
    # memory hierarchy: im2col columns stay in L1 for their whole life and a conv chunk's input rows must fit a tile:
    # both get a share of L1 (a quarter first; smaller when the tiles do not fit beside them)
    import dataclasses
    from odl.tile.tiler import tile
    first = None
    for div in (4, 6, 8):
        c = dataclasses.replace(cfg, im2col_bytes=min(cfg.im2col_bytes, memory.l1_data_bytes // div),
                                window_bytes=memory.l1_data_bytes // div, dma_im2col=True)
        prog = Lowering(graph, precision, c, observe, profile, costs, tuning, cores, forward_only).run()
        if transform is not None:       # a rewrite of the flat calls (odl train's mixed precision), before tiling
            transform(prog)
        try:
            tile(prog, memory, cores)
            break
        except OdlError as e:
            first = first or e
    else:
        raise first
    kernels.plan_matmuls(prog.calls, cores, lanes)
    return prog

