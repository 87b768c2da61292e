"""FP8 storage in the lowered step (`--store fp8`, docs/formats.md).

Activations: every forward value a backward reads is packed into an E4M3 copy right after the last forward call
that writes its buffer, so the compute-precision buffer dies after its forward readers; each backward that reads it
gets a fresh unpacked copy made just before it. Gradients: the gradient of every value, once complete (after the
backward of the last node contributing to it), is packed into an E5M2 copy and unpacked just before the backward
that reads it. Each packed tensor has a per-tensor scale from its amax history (delayed scaling): one
`odl_fp8_scale` call per format at the start of the step turns the histories into this step's scales, and every
pack records the tensor's amax for the next step. What the backward of each node reads is found by a first
lowering without FP8 storage (`backward_reads`), so the ops need not declare it.

`--store fp8:REGEX` (odl/lower/layers.py) stores only what concerns the matched layers (`select`): the activations
some matched layer's backward reads (every backward reading such a value then reads its FP8 copy: one copy, and the
compute-precision buffer dies after the forward), and the gradients of the matched layers' outputs (a view's: its
base's), i.e. the gradients their backward starts from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from odl.common.errors import OdlError
from odl.common.precision import E4M3, E5M2, FP8_HISTORY, FP8_STATE_HEAD
from odl.ir.kernel_structs import pointer_fields
from odl.ir import kernels
from odl.ir.program import Buffer, Call, Ptr

STRIDE = FP8_STATE_HEAD + FP8_HISTORY
# ops whose backward reads forward values and which the float8 reference (odl/verify/fp8ref.py) reproduces on FP8
# copies (ops whose backward reads no forward value, e.g. add, views, pooling, dropout, need nothing of it)
SUPPORTED_OPS = frozenset({"conv1d", "conv2d", "dwconv1d", "dwconv2d", "linear", "batchnorm", "relu", "relu6"})


@dataclass
class Fp8Entry:
    index: int             # row of its format's state buffer
    values: tuple          # activations: the graph values read from it (the holder or views of it); gradients:
                           # (the gradient's root value,)
    nelem: int
    layer: str
    holder: str = ""       # activations: the value the buffer holds when packed (its amax is recorded)


@dataclass
class Fp8Plan:
    """What a step stores in FP8: the state buffers ([count, FP8_STATE_HEAD + FP8_HISTORY] floats per format:
    scale, amax, history), the activation (E4M3) and gradient (E5M2) entries, and per node the values whose FP8
    copy its backward reads (the reference casts the same ones)."""
    states: dict                                  # format name -> state Buffer
    acts: list = field(default_factory=list)
    grads: list = field(default_factory=list)
    reads: dict = field(default_factory=dict)     # node name -> value names read from FP8 copies

    def act_of(self, value: str) -> Fp8Entry | None:
        return next((e for e in self.acts if value in e.values), None)

    def grad_of(self, value: str) -> Fp8Entry | None:
        return next((e for e in self.grads if e.values[0] == value), None)


def holders(L) -> dict[int, str]:
    """Buffer id -> the value a buffer holds at the end of the forward: the last node writing it (an in-place
    output overwrites its input; a view writes nothing)."""
    out = {}
    for n in L.g.nodes:
        b = L.value_buf.get(n.name)
        if b is not None and n.name not in L.view_of:
            out[id(b)] = n.name
    return out


def select(L, reads: dict[str, list[str]], pattern: str) -> tuple[dict[str, list[str]], set[str]]:
    """--store fp8:REGEX on a lowered (no FP8) step: (the backward reads kept in FP8: per node, its read values
    whose storage some matched layer's backward reads, the gradient roots packed in E5M2: the matched layers'
    outputs that need a gradient). Refused when the pattern matches no layer or selects nothing to store."""
    from odl.lower.layers import matched, nothing_selected
    nodes = matched(L.g, "--store fp8", pattern)
    roots = {L._grad_root(v) for n, vals in reads.items() if n in nodes for v in vals}
    kept = {n: [v for v in vals if L._grad_root(v) in roots] for n, vals in reads.items()}
    grads = {L._grad_root(n) for n in nodes if L.needs_grad.get(n, False)} - {L.g.input}
    if not roots and not grads:
        raise nothing_selected("--store fp8", pattern, L.g, "keep no activation for the backward and pass no "
                               "gradient: nothing would be stored in FP8")
    return {n: v for n, v in kept.items() if v}, grads


def backward_reads(L) -> dict[str, list[str]]:
    """Per node of a lowered (no FP8) step: the forward values among its inputs and output whose buffers the calls of
    its backward use (Lowering records `bwd_bufs` per node), each the value its buffer holds then or a view of it."""
    held = holders(L)
    out = {}
    for name, bufs in L.bwd_bufs.items():
        node = L.g.node(name)
        vals = [v for v in dict.fromkeys([*node.inputs, node.name])
                if (b := L.value_buf.get(v)) is not None and id(b) in bufs and b.role == "act" and b.dtype == "odl"
                and held.get(id(b)) == L._grad_root(v)]
        if vals:
            out[name] = vals
    return out


class Fp8Store:
    """The FP8 bookkeeping of one Lowering (odl/lower/lowering.py calls it at the points named by its methods)."""

    def __init__(self, L, reads: dict[str, list[str]], grads: set[str] | None = None):
        self.L = L
        self.grads = grads          # gradient roots packed in E5M2 (None: every one)
        for node, vals in reads.items():
            op = L.g.node(node).op
            if op not in SUPPORTED_OPS:
                raise OdlError(f"--store fp8: node '{node}' (op {op}) reads {', '.join(vals)} in its backward, and "
                               f"the float8 reference does not reproduce that op's backward on FP8 copies "
                               f"(supported among ops whose backward reads values: {', '.join(sorted(SUPPORTED_OPS))})")
        st = {f.name: L.new_buffer(f"fp8_state_{f.name}", 0, dtype="f32", role="state", persistent=True,
                                   init=("fp8", f.name)) for f in (E4M3, E5M2)}
        L.preload += st.values()
        self.plan = Fp8Plan(states=st, reads={k: list(v) for k, v in reads.items()})
        self.packed: dict[int, tuple[Buffer, Fp8Entry]] = {}     # forward buffer id -> (FP8 copy, entry)
        self.gpacked: dict[str, tuple[Buffer, Fp8Entry]] = {}    # gradient root -> (FP8 copy, entry)
        self.grad_pre: dict[str, Buffer] = {}                    # gradient root -> its buffer before the cast
        self.remaining: dict[str, int] = {}

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _fields(self, fmt, entry: Fp8Entry, **kw) -> dict:
        st = self.plan.states[fmt.name]
        return dict(kw, len=entry.nelem, fmt=fmt.code, scale=Ptr(st, 0, entry.index * STRIDE))

    def _pack_call(self, fmt, src: Buffer, q: Buffer, entry: Fp8Entry, step: str) -> Call:
        st = self.plan.states[fmt.name]
        return Call(kernel="odl_fp8_pack", layer=entry.layer, step=step,
                    fields=self._fields(fmt, entry, x=Ptr(src), q=Ptr(q),
                                        amax=Ptr(st, 0, entry.index * STRIDE + 1)))

    def _unpack(self, fmt, q: Buffer, entry: Fp8Entry, name: str, shape, role: str) -> Buffer:
        u = self.L.new_buffer(name, entry.nelem, role=role, shape=shape)
        self.L.call("odl_fp8_unpack", entry.layer, "input_grad", **self._fields(fmt, entry, q=Ptr(q), x=Ptr(u)))
        return u

    # ---- activations -----------------------------------------------------------------------------------------
    def pack_activations(self):
        """After the forward: an E4M3 copy of every buffer a backward reads, made after the last forward call that
        writes it (after the whole per-sample loop when that call is in one)."""
        L = self.L
        wanted: dict[int, list[str]] = {}
        for vals in self.plan.reads.values():
            for v in vals:
                b = L.value_buf[v]
                if b.role == "act" and b.dtype == "odl" and not b.persistent:
                    wanted.setdefault(id(b), []).append(v)
        bufs = {id(b): b for b in L.buffers if id(b) in wanted}
        held = holders(L)
        last: dict[int, int] = {}
        for i, c in enumerate(L.calls):
            ptr = pointer_fields(kernels.get(c.kernel).args_type)
            for k, v in c.fields.items():
                if isinstance(v, Ptr) and id(v.buf) in bufs and not ptr.get(k, True):
                    end = i
                    while c.loop and end + 1 < len(L.calls) and L.calls[end + 1].group == c.group:
                        end += 1
                    last[id(v.buf)] = end
        inserts = []
        for bid, vals in wanted.items():
            b = bufs[bid]
            if bid not in last:
                raise OdlError(f"internal: --store fp8: no forward call writes {b.name}")
            e = Fp8Entry(len(self.plan.acts), tuple(dict.fromkeys(vals)), b.nelem, L.g.node(held[bid]).report_name,
                         held[bid])
            self.plan.acts.append(e)
            q = L.new_buffer(b.name + "_f8", b.nelem, dtype="f8", role="act", shape=b.shape)
            self.packed[bid] = (q, e)
            inserts.append((last[bid], self._pack_call(E4M3, b, q, e, "forward")))
        for at, call in sorted(inserts, key=lambda t: -t[0]):
            L.calls.insert(at + 1, call)

    def unpack_grad(self, node):
        """Before the node's backward (or before its view's, which shares it): its output's gradient from E5M2."""
        L = self.L
        root = L._grad_root(node.name)
        if root in self.gpacked:
            q, e = self.gpacked.pop(root)
            t = self._unpack(E5M2, q, e, "d_" + root + "_f8u", L.shape(root), "grad")
            L.grad_buf[root] = t
            L.grad_written.add(id(t))

    def unpack_values(self, node) -> dict:
        """Before the node's backward: a fresh copy of each FP8-stored value it reads (E4M3). Returns what
        after_backward restores."""
        L = self.L
        saved, fresh = {}, {}
        for v in self.plan.reads.get(node.name, ()):
            b = L.value_buf[v]
            if id(b) not in self.packed:
                continue
            if id(b) not in fresh:
                q, e = self.packed[id(b)]
                fresh[id(b)] = self._unpack(E4M3, q, e, b.name + "_f8u", b.shape, "act")
            saved[v] = b
            L.value_buf[v] = fresh[id(b)]
        return saved

    def after_backward(self, node, saved: dict):
        """Restore the forward buffers (the next reader unpacks its own copy), then pack the gradients this node
        completed."""
        L = self.L
        L.value_buf.update(saved)
        for v in dict.fromkeys(node.inputs):
            r = L._grad_root(v)
            if r == L._grad_root(node.name) or r not in self.remaining:
                continue
            self.remaining[r] -= 1
        self.pack_complete(node.report_name)

    def start_backward(self):
        """Before the backward: how many nodes contribute to each value's gradient (views share their base's)."""
        L = self.L
        def wanted(r):
            return r != L.g.input and (self.grads is None or r in self.grads)
        for n in L.g.nodes:
            for v in dict.fromkeys(n.inputs):
                r = L._grad_root(v)
                if r != L._grad_root(n.name) and wanted(r):
                    self.remaining[r] = self.remaining.get(r, 0) + 1
        for n in L.g.nodes:
            if wanted(L._grad_root(n.name)):
                self.remaining.setdefault(L._grad_root(n.name), 0)
        self.pack_complete("loss")

    def pack_complete(self, layer: str):
        """Pack every gradient whose contributions are all in (E5M2), as soon as they are."""
        L = self.L
        for r, k in list(self.remaining.items()):
            if k or r not in L.grad_buf:
                continue
            del self.remaining[r]
            b = L.grad_buf.pop(r)
            e = Fp8Entry(len(self.plan.grads), (r,), b.nelem, layer)
            self.plan.grads.append(e)
            q = L.new_buffer("d_" + r + "_f8", b.nelem, dtype="f8", role="grad", shape=L.shape(r))
            L.calls.append(self._pack_call(E5M2, b, q, e, "input_grad"))
            self.grad_pre[r] = b
            self.gpacked[r] = (q, e)

    def finish(self):
        """Size the state buffers and compute the step's scales first thing in the step."""
        L = self.L
        for fmt, entries in ((E4M3, self.plan.acts), (E5M2, self.plan.grads)):
            st = self.plan.states[fmt.name]
            st.nelem = max(1, len(entries)) * STRIDE
            st.shape = (max(1, len(entries)), STRIDE)
            if entries:
                L.calls.insert(0, Call(kernel="odl_fp8_scale", layer="fp8", step="forward",
                                       fields=dict(state=Ptr(st), count=len(entries), hist=FP8_HISTORY,
                                                   fmt=fmt.code)))
        return self.plan


def kept_for_backward(prog) -> dict:
    """Bytes of the tensors alive across the forward -> backward boundary (the loss call), not counting the
    persistent ones (parameters, input, state): what the forward keeps for the backward; of them, the FP8 copies
    and the FP32 per-channel statistics (batch norm's mean and rstd, which no store changes)."""
    from odl.plan.planner import call_spans
    loss_at = next((i for i, c in enumerate(prog.calls) if c.step == "loss"), None)
    if loss_at is None:
        return {"bytes": 0, "fp8_bytes": 0, "stats_bytes": 0, "tensors": 0}
    first, last = {}, {}
    for i, (c, (lo, hi)) in enumerate(zip(prog.calls, call_spans(prog.calls))):
        for b in c.buffers():
            if b.space == "l2":
                first.setdefault(id(b), (lo, b))
                last[id(b)] = hi
    eb = prog.elem_bytes
    kept = [b for bid, (lo, b) in first.items() if lo < loss_at < last[bid] and not b.persistent and
            b not in prog.preload]
    return {"bytes": sum(b.nbytes(eb) for b in kept),
            "fp8_bytes": sum(b.nbytes(eb) for b in kept if b.dtype == "f8"),
            "stats_bytes": sum(b.nbytes(eb) for b in kept if b.dtype == "f32"),   # batch-norm mean / rstd
            "tensors": len(kept)}
