"""The programs a device keeps resident on one arena, shared by the commands that leave a model on the device
(`odl train`, and the embedded library `odl.h` of `odl compile`): the training step at the batch size (and at the
last partial batch's), forward-only programs, the shared region (parameters, batch-norm statistics, optimizer state,
FP32 master weights in mixed precision, a control block), and how the host reads that region back into a PyTorch
state_dict and optimizer state. TrainOptions, the settings of such a run, lives here too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from odl import __version__
from odl.common.errors import OdlError
from odl.common.precision import align as _align, dtype_np, precision_of
from odl.run.device import DeviceOptions
from odl.lower.lowering import Buffer, Call, CExpr, Program, Ptr, TrainConfig, step_prologue
from odl.tile.memory import WB_TICKETS

DATA_OFFSET = 16 << 20          # data region: 16 MiB past the arena start (QEMU virt RAM is 128 MiB)
DATA_BYTES = 96 << 20
CTL_FIELDS = [("step", "<u4"), ("updates", "<u4"), ("b1t", "<f4"), ("b2t", "<f4"), ("scale", "<f4"),
              ("clean", "<u4"), ("overflow", "<i4"), ("skipped", "<u4"), ("interval", "<u4"), ("dynamic", "<u4")]
CTL_DTYPE = np.dtype([(n, t) for n, t in CTL_FIELDS])
SCALE_INIT, SCALE_INTERVAL = 65536.0, 2000     # torch.amp.GradScaler's defaults


@dataclass
class TrainOptions:
    data: str = "digits"
    epochs: int = 10
    batch: int = 16
    val_split: float = 0.2
    precision: str = "fp32"
    cores: int = 8
    target: str = "rv32-cluster"
    cfg: TrainConfig = field(default_factory=TrainConfig)
    loss_scale: str = "dynamic"
    seed: int = 0
    init: str | None = None
    checkpoint: str | None = None
    resume: str | None = None
    eval_every: int = 1
    reference: str = "fp32"
    json_path: str | None = None
    png: str | None = None
    device: DeviceOptions = field(default_factory=DeviceOptions)
    keep: str | None = None
    progress: bool = True
    normalize: bool = True        # False: the data is fed as given (odl fleet normalises globally)
    memory: str = "hierarchy"     # 'hierarchy': L1 tiles + DMA from the L2 arena (odl/tile/tiler.py); 'flat': one memory
    stop_after_steps: int | None = None   # tests: stop (as if killed) after this many steps of this run
    train_asked: str = ""         # --train as given when it was resolved ('auto'): what a resumed run must ask again

    def resume_key(self) -> dict:
        """Settings a resumed run must share with the run that wrote the checkpoint (bitwise continuation)."""
        c = self.cfg
        return {"data": self.data, "batch": self.batch, "val_split": self.val_split, "precision": self.precision,
                "cores": self.cores, "target": self.target, "seed": self.seed, "loss_scale": self.loss_scale,
                "lr": c.lr, "train": self.train_asked or c.train, "bn": c.bn, "loss": c.loss, "optimizer": c.optimizer,
                "momentum": c.momentum, "weight_decay": c.weight_decay,
                **({"qat": c.qat_option} if c.qat != "none" else {}),
                **({"store": c.store_option} if c.store != "compute" else {})}   # fp8:REGEX: the state rows' layout


# ---- programs ---------------------------------------------------------------------------------------------------
@dataclass
class DeviceProgram:
    kind: str                  # 'train' | 'eval'
    batch: int
    prog: Program
    extra: list = field(default_factory=list)   # shared buffers the program references beyond its own (masters)

    def ctx(self) -> dict:
        from odl.codegen.render import call_blocks, segments
        calls = self.prog.calls

        def blocks(ic):
            return segments(call_blocks(ic, self.prog.precision))
        idx = list(enumerate(calls))
        p = self.prog
        eb = p.elem_bytes
        ncls = int(p.logits.shape[1]) if (p.config.loss == "xent" and len(p.logits.shape) == 2) else 0
        bufs = sorted({id(b): b for b in [*p.buffers, *self.extra] if b.offset >= 0}.values(), key=lambda b: b.offset)
        return dict(kind=self.kind, batch=self.batch, prog=p, buffers=bufs,
                    # a mixed step splits off its checks and updates (skipped together on overflow)
                    main_calls=blocks([(i, c) for i, c in idx if not self.extra or c.step not in ("update", "check")]),
                    check_calls=blocks([(i, c) for i, c in idx if c.step == "check"]),
                    update_calls=blocks([(i, c) for i, c in idx if c.step == "update"]),
                    x_off=p.input.offset, x_bytes=p.input.nbytes(eb) // self.batch,
                    y_off=p.labels.offset if p.labels is not None else 0,
                    y_bytes=p.labels.nbytes(eb) // self.batch if p.labels is not None else 0,
                    out_off=p.logits.offset, classes=ncls, out_bytes=p.logits.nbytes(eb),
                    flag_macro=p.overflow_flag.macro if getattr(p, "overflow_flag", None) is not None else "")


def to_mixed(prog: Program, masters: dict[str, Buffer]) -> None:
    """Turn an FP16 training step into a mixed-precision one: scale the loss gradient by the loss scale, check every
    parameter gradient for Inf/NaN, and update FP32 master weights (refreshing the FP16 copy) with the gradient
    unscaled. The update must come after the whole backward (it is skipped as a whole on overflow)."""
    calls = prog.calls
    loss_i = [i for i, c in enumerate(calls) if c.step == "loss"]
    upd_i = [i for i, c in enumerate(calls) if c.step == "update"]
    if not loss_i or not upd_i:
        raise OdlError("mixed precision: the training step has no loss or no update")
    if upd_i != list(range(upd_i[0], len(calls))):
        raise OdlError("mixed precision needs the optimizer updates after the whole backward (they are skipped "
                       "together when a gradient overflows); this lowering interleaves them")
    lc = calls[loss_i[-1]]
    dl = lc.fields.get("dlogits") or lc.fields.get("dpred")
    if not isinstance(dl, Ptr):
        raise OdlError(f"mixed precision: loss kernel {lc.kernel} has no loss-gradient output to scale")
    scale = Call("odl_scale", {"x": Ptr(dl.buf), "len": dl.buf.nelem, "s": CExpr("ODL_CTL->scale")}, "loss", "loss")
    # the checks raise a flag in the arena (a kernel writes only buffers: L1 tiles under the memory hierarchy); the
    # program zeroes it before the checks and copies it into the control block after them
    flag = Buffer("overflow_flag", 1, dtype="i32", role="scratch", persistent=True, shape=(1,))
    prog.buffers.append(flag)
    prog.overflow_flag = flag
    checks = [Call("odl_grad_check", {"g": Ptr(gb), "len": gb.nelem, "flag": Ptr(flag)}, pname, "check")
              for pname, gb in prog.param_grads.items()]
    updates = []
    for c in calls[upd_i[0]:]:
        f = c.fields
        w = f["w"].buf
        pname = next((k for k, b in prog.params.items() if b is w), None)
        if pname is None or pname not in masters:
            raise OdlError(f"mixed precision: update call {c.kernel} on '{c.layer}' writes no known parameter")
        m = Ptr(masters[pname])
        common = dict(w=f["w"], master=m, g=f["g"])
        if c.kernel == "odl_sgd":
            nf = dict(common, buf=None, len=f["len"], lr=f["lr"], momentum=0.0, wd=0.0,
                      inv_scale=CExpr("odl_inv_scale"), first=0)
            updates.append(Call("odl_sgd_mixed", nf, c.layer, "update"))
        elif c.kernel == "odl_sgd_momentum" and f.get("center") is not None:
            raise OdlError("a proximal term (FedProx) is not supported with --precision mixed yet")
        elif c.kernel == "odl_sgd_momentum":
            nf = dict(common, buf=f["buf"], len=f["len"], lr=f["lr"], momentum=f["momentum"], wd=f["wd"],
                      inv_scale=CExpr("odl_inv_scale"), first=CExpr("ODL_CTL->updates == 0"))
            updates.append(Call("odl_sgd_mixed", nf, c.layer, "update"))
        elif c.kernel == "odl_adam":
            nf = dict(common, m=f["m"], v=f["v"], len=f["len"], lr=f["lr"], b1=f["b1"], b2=f["b2"], eps=f["eps"],
                      wd=f["wd"], bc1=f["bc1"], bc2=f["bc2"], inv_scale=CExpr("odl_inv_scale"))
            updates.append(Call("odl_adam_mixed", nf, c.layer, "update"))
        else:
            raise OdlError(f"mixed precision: no FP32-master version of update kernel {c.kernel} ('{c.layer}')")
    prog.calls = calls[:loss_i[-1] + 1] + [scale] + calls[loss_i[-1] + 1:upd_i[0]] + checks + updates


@dataclass
class Firmware:
    programs: list[DeviceProgram]
    shared: list[Buffer]
    shared_bytes: int
    arena_bytes: int
    ctl: Buffer
    masters: dict[str, Buffer]
    index: dict[tuple[str, int], int]
    dev_precision: str

    def layout(self) -> list:
        return [(b.name, b.offset, b.nbytes(self.programs[0].prog.elem_bytes)) for b in self.shared]


def build_programs(model: nn.Module, sample_shape: tuple, ntrain: int, nval: int, opts,
                   costs: dict, budget: int | None) -> Firmware:
    from odl.frontend.trace import trace
    from odl.lower.lowering import lower
    from odl.plan.planner import plan
    B = opts.batch
    dev = precision_of(opts.precision).device
    # mixed precision skips a step's updates together when a gradient overflows: they follow the whole backward
    cfg = dataclasses.replace(opts.cfg, fuse_updates=False) if opts.precision == "mixed" else opts.cfg
    if cfg.store != "compute" and opts.precision == "mixed":
        raise OdlError(f"--store {cfg.store}: with --precision fp16 or fp32 (mixed precision's loss scaling rewrites "
                       f"the gradients FP8 storage packs)")
    sizes = []
    if ntrain >= B:
        sizes.append(("train", B))
    if ntrain % B:
        sizes.append(("train", ntrain % B))
    eb = min(B, nval)
    sizes.append(("eval", eb))
    if nval % eb:
        sizes.append(("eval", nval % eb))
    from odl.tile.memory import memory_for
    from odl.target.description import load_target
    hier = memory_for(load_target(opts.target), opts.memory)
    want = step_prologue(cfg)
    masters = {}
    transform = None
    if opts.precision == "mixed":
        # FP32 master weights of the trainable parameters (which ones: a flat lowering of the step says)
        probe = lower(trace(model, (sizes[0][1], *sample_shape)), dev, cfg, costs=costs, cores=opts.cores)
        for pname in probe.trainable:
            w = probe.params[pname]
            masters[pname] = Buffer("master_" + pname, w.nelem, dtype="f32", role="state", persistent=True,
                                    shape=w.shape, init=("master", pname))

        def mixed(p):   # before tiling: the rewrite adds calls that must be tiled too
            to_mixed(p, dict(masters))
        transform = mixed
    progs = []
    for kind, bs in sizes:
        g = trace(model, (bs, *sample_shape))
        if kind == "train":
            p = lower(g, dev, cfg, costs=costs, cores=opts.cores, memory=hier, transform=transform)
        else:
            p = lower(g, dev, dataclasses.replace(cfg, bn="frozen"), costs=costs, cores=opts.cores,
                      forward_only=True, memory=hier)
        progs.append(DeviceProgram(kind, bs, p, extra=list(masters.values()) if kind == "train" else []))
    main = progs[0].prog
    for dp in progs:
        if dp.kind == "train" and dp.prog.prologue != want:
            raise OdlError(f"odl train does not know this step's prologue {dp.prog.prologue!r}")
    shared = [b for b in main.preload if b is not main.input and b is not main.labels]
    ctl = Buffer("odl_ctl", CTL_DTYPE.itemsize, dtype="u8", role="state", persistent=True, init=("ctl",))
    shared += list(masters.values()) + [ctl]
    off = 0
    for b in shared:
        b.offset = off
        off = _align(off + b.nbytes(main.elem_bytes))
    shared_bytes = off
    byname = {b.name: b for b in shared}
    arena = shared_bytes
    for dp in progs:
        p = dp.prog
        own = [b for b in p.buffers if b.role in ("param", "state")]
        for b in own:
            sb = byname.get(b.name)
            if sb is None or sb.nbytes(p.elem_bytes) != b.nbytes(p.elem_bytes):
                raise OdlError(f"internal: {dp.kind} program (batch {dp.batch}) has state '{b.name}' that the "
                               f"training program does not share")
        ids = {id(b) for b in own}
        region = Buffer("odl_shared_region", shared_bytes, dtype="u8", role="state", persistent=True)
        saved = p.buffers, p.preload
        p.buffers = [region] + [b for b in saved[0] if id(b) not in ids]
        p.preload = [region] + [b for b in saved[1] if id(b) not in ids]
        try:
            plan(p, budget)
        finally:
            p.buffers, p.preload = saved
        for b in own:
            b.offset = byname[b.name].offset
        arena = max(arena, p.arena_bytes)
    index = {(dp.kind, dp.batch): i for i, dp in enumerate(progs)}
    return Firmware(progs, shared, shared_bytes, arena, ctl, masters, index, dev)


def firmware_ctx(fw: Firmware, model_name: str, opts) -> dict:
    """Template values of templates/programs.c.j2 (shared by odl train's firmware and the embedded library)."""
    cfg = opts.cfg
    b1, b2 = (f"{float(v):.9g}" for v in cfg.betas)
    hier = any(dp.prog.memory is not None for dp in fw.programs)
    return dict(version=__version__, model=model_name, precision=opts.precision, cores=opts.cores,
                programs=[dp.ctx() for dp in fw.programs], shared_bytes=fw.shared_bytes, arena_bytes=fw.arena_bytes,
                ctl_offset=fw.ctl.offset, mixed=opts.precision == "mixed", adam=cfg.optimizer == "adam", b1=b1, b2=b2,
                data_offset=DATA_OFFSET, data_bytes=DATA_BYTES, wb_tickets=WB_TICKETS, hierarchy=hier,
                l1_bytes=max([16] + [dp.prog.l1_peak_bytes for dp in fw.programs]),
                wait_all="  odl_dma_wait_all();\n" if hier else "")


def codegen_env():
    import jinja2
    from odl.common.resources import resource_dir
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_firmware(fw: Firmware, model_name: str, opts, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    env = codegen_env()
    src = out_dir / "train_model.c"
    src.write_text(env.get_template("train.c.j2").render(**firmware_ctx(fw, model_name, opts)))
    (out_dir / "odl_model.h").write_text(env.get_template("odl_model.h.j2").render(version=__version__,
                                                                                    model=model_name))
    return src


# ---- host <-> device values ---------------------------------------------------------------------------------
def _np_dtype(b: Buffer, dev: str):
    return dtype_np(b.dtype, dev)


def initial_shared(fw: Firmware, model: nn.Module, opts, fp8_state: dict | None = None) -> bytes:
    """The shared region's first contents. fp8_state: --store fp8's state rows by buffer name (the initial amax
    histories, e.g. odl/verify/fp8ref.py initial_state)."""
    params = dict(model.named_parameters())
    bufs = dict(model.named_buffers())
    blob = bytearray(fw.shared_bytes)
    eb = fw.programs[0].prog.elem_bytes
    for b in fw.shared:
        kind = b.init[0] if b.init else "zeros"
        if kind == "param" or kind == "master":
            a = params[b.init[1]].detach().numpy()
        elif kind == "state":
            a = bufs[b.init[1]].detach().numpy()
        elif kind == "zeros":
            a = np.zeros(b.nelem)
        elif kind == "fp8":
            if not fp8_state or b.name not in fp8_state:
                raise OdlError(f"internal: --store fp8: the scale state {b.name} was not initialised")
            a = fp8_state[b.name]
        elif kind == "fill":
            a = np.full(b.nelem, b.init[1])
        elif kind == "ctl":
            c = np.zeros(1, CTL_DTYPE)
            c["b1t"] = c["b2t"] = 1.0
            dyn = opts.loss_scale == "dynamic"
            c["scale"] = SCALE_INIT if dyn else (float(opts.loss_scale) if opts.precision == "mixed" else 1.0)
            c["interval"] = SCALE_INTERVAL
            c["dynamic"] = 1 if (dyn and opts.precision == "mixed") else 0
            blob[b.offset:b.offset + b.nbytes(eb)] = c.tobytes()
            continue
        else:
            raise ValueError(f"shared buffer {b.name}: unknown init {b.init}")
        data = np.ascontiguousarray(a, dtype=_np_dtype(b, fw.dev_precision)).tobytes()
        assert len(data) == b.nbytes(eb), b.name
        blob[b.offset:b.offset + len(data)] = data
    return bytes(blob)


def shared_values(fw: Firmware, blob: bytes) -> dict[str, np.ndarray]:
    out = {}
    for b in fw.shared:
        if b is fw.ctl:
            continue
        a = np.frombuffer(blob, dtype=_np_dtype(b, fw.dev_precision), count=b.nelem, offset=b.offset)
        out[b.name] = a.astype(np.float32).reshape(b.shape if b.shape else (b.nelem,))
    return out


def read_ctl(fw: Firmware, blob: bytes) -> dict:
    c = np.frombuffer(blob, CTL_DTYPE, 1, fw.ctl.offset)[0]
    return {n: c[n].item() for n, _ in CTL_FIELDS}


def state_dict_from_device(fw: Firmware, model: nn.Module, blob: bytes, opts) -> dict:
    """The model's state_dict with the device's parameters (FP32 masters in mixed) and batch-norm statistics;
    parameters that did not train keep the host's values (the device holds them rounded to its precision)."""
    vals = shared_values(fw, blob)
    ctl = read_ctl(fw, blob)
    main = fw.programs[0].prog
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for pname in main.params:
        if pname not in main.trainable:
            continue
        src = vals[fw.masters[pname].name] if pname in fw.masters else vals[main.params[pname].name]
        sd[pname] = torch.from_numpy(src.copy()).reshape(sd[pname].shape).to(sd[pname].dtype)
    for tname, b in main.state.items():
        if tname.startswith("qat."):    # observers of --qat: not the model's (odl/train/qat.py checkpoints them)
            continue
        sd[tname] = torch.from_numpy(vals[b.name].copy()).reshape(sd[tname].shape).to(sd[tname].dtype)
    counters = main.graph.counters
    if opts.cfg.bn == "train" and counters:
        # torch.export frontend: the exported program says which counters a step adds 1 to, once per call (a
        # batch norm module called twice counts twice, as in PyTorch)
        for k in counters:
            sd[k] = sd[k] + int(ctl["step"])
    elif opts.cfg.bn == "train":
        for k in sd:
            if k.endswith("num_batches_tracked"):
                sd[k] = sd[k] + int(ctl["step"])
    return sd


def optimizer_state(fw: Firmware, blob: bytes, opts) -> dict:
    """torch.optim state_dict layout for the trainable parameters, in model order (param_names given)."""
    vals = shared_values(fw, blob)
    ctl = read_ctl(fw, blob)
    main = fw.programs[0].prog
    cfg = opts.cfg
    names = list(main.trainable)
    state = {}
    for i, pname in enumerate(names):
        if cfg.optimizer == "sgd" and cfg.momentum:
            state[i] = {"momentum_buffer": torch.from_numpy(vals["momentum_" + pname].copy())}
        elif cfg.optimizer == "adam":
            state[i] = {"step": torch.tensor(float(ctl["updates"])),
                        "exp_avg": torch.from_numpy(vals["adam_m_" + pname].copy()),
                        "exp_avg_sq": torch.from_numpy(vals["adam_v_" + pname].copy())}
    group = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "params": list(range(len(names))), "param_names": names}
    if cfg.optimizer == "sgd":
        group.update(momentum=cfg.momentum, dampening=0, nesterov=False, maximize=False)
    else:
        group.update(betas=tuple(cfg.betas), eps=cfg.eps, amsgrad=False, maximize=False)
    return {"state": state, "param_groups": [group]}
