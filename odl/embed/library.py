"""Build and render the embedded library of a model (odl.h + the programs behind it).

The programs are odl train's (odl/resident.py build_programs) on one arena: the training step at the batch size and
the forward-only evaluation at batch 1 (odl_predict and odl_evaluate). The optimizer's learning rate, momentum and
weight decay become run-time values (odl_hp) instead of literals in the update calls. The initial training state
(from --init, or the model's own initialisation) goes into the read-only image; the input normalisation the
checkpoint records (odl.normalize, per channel) is applied on the device by every entry point."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from odl import __version__
from odl.common.errors import OdlError
from odl.ir.program import CExpr, TrainConfig
from odl.embed import blob as blobmod

UPDATE_KERNELS_MOMENTUM = ("odl_sgd_momentum", "odl_sgd_mixed")


@dataclass
class EmbedOptions:
    batch: int = 16
    precision: str = "fp32"            # fp32 | fp16 | mixed
    cores: int = 8
    target: str = "rv32-cluster"
    cfg: TrainConfig = field(default_factory=TrainConfig)
    loss_scale: str = "dynamic"
    memory: str = "hierarchy"
    init: str | None = None            # checkpoint (odl train's, or a state_dict)
    seed: int = 0
    input_shape: str | None = None     # NxCxHxW: the sample shape (N is ignored: --batch)
    budget: int | None = None


@dataclass
class EmbedLibrary:
    name: str
    opts: EmbedOptions
    model: torch.nn.Module
    fw: object                         # odl.train.Firmware
    train_opts: object                 # odl.train.TrainOptions
    sample_shape: tuple
    classes: int
    normalize: dict | None
    model_hash: int
    state: bytes                       # the initial shared region

    @property
    def blob_bytes(self) -> int:
        return blobmod.HEADER_BYTES + self.fw.shared_bytes

    def program(self, kind: str):
        return next(dp for dp in self.fw.programs if dp.kind == kind)

    def settings(self) -> dict:
        c = self.opts.cfg
        return {"model_name": self.name, "precision": self.opts.precision, "batch": self.opts.batch,
                "cores": self.opts.cores, "optimizer": c.optimizer, "lr": c.lr, "momentum": c.momentum,
                "weight_decay": c.weight_decay, "train": c.train, "bn": c.bn, "loss_scale": self.opts.loss_scale,
                "memory": self.opts.memory, "model_hash": f"{self.model_hash:#010x}", "normalize": self.normalize,
                "blob_bytes": self.blob_bytes, "state_bytes": self.fw.shared_bytes}


def _load_init(model, path: str, name: str) -> dict | None:
    """Load --init into the model; the checkpoint's normalisation (odl train's odl.normalize) or None."""
    from odl.common.checkpoint import load_checkpoint, load_into
    ck = load_checkpoint(path, "--init")
    sd = ck["model"] if isinstance(ck, dict) and isinstance(ck.get("model"), dict) else ck
    load_into(model, sd, path, name, "--init")
    odl = ck.get("odl") if isinstance(ck, dict) else None
    return odl.get("normalize") if isinstance(odl, dict) else None


def build_library(model_spec: str, o: EmbedOptions, log=print) -> EmbedLibrary:
    from odl.lower.costs import load_costs
    from odl.frontend.trace import default_input_shape, load_model, parse_shape, trace
    from odl.target.description import load_target
    from odl.resident import TrainOptions, build_programs, initial_shared
    if o.precision not in ("fp32", "fp16", "mixed"):
        raise OdlError(f"--precision {o.precision}: expected fp32, fp16 or mixed")
    if o.batch < 1:
        raise OdlError(f"--batch {o.batch}: must be >= 1")
    if o.cfg.frozen == "rom":
        raise OdlError("--frozen rom: the embedded library (odl.h) keeps every parameter in its L2 state; frozen "
                       "weights in the read-only level are for the step alone (validate, profile, compile without "
                       "the library)")
    if o.cfg.loss != "xent":
        raise OdlError(f"the embedded library (odl.h) takes class labels: --loss xent only, not {o.cfg.loss}")
    target = load_target(o.target)
    if not 1 <= o.cores <= target.harts:
        raise OdlError(f"--cores {o.cores}: target {target.name} has {target.harts} harts")
    torch.manual_seed(o.seed)
    model = load_model(model_spec)
    name = model_spec if ":" not in model_spec else model_spec.rsplit(":", 1)[1]
    normalize = _load_init(model, o.init, name) if o.init else None
    shape = parse_shape(o.input_shape) if o.input_shape else default_input_shape(model)
    if shape is None:
        raise OdlError(f"model '{model_spec}' has no default input shape: give --input-shape NxCxHxW")
    sample_shape = tuple(shape[1:])
    pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g = trace(model, (o.batch, *sample_shape))       # tracing runs the model in training mode: restore after
    model.load_state_dict(pristine)
    out_shape = g.shapes[g.output]
    if len(out_shape) != 2:
        raise OdlError(f"the embedded library needs logits N x classes; the model outputs {list(out_shape)}")
    classes = int(out_shape[1])
    if normalize is not None:
        nch = len(normalize["mean"])
        if len(normalize["std"]) != nch or (nch != 1 and (len(sample_shape) != 3 or sample_shape[0] != nch)):
            raise OdlError(f"--init {o.init}: its normalisation has {nch} channels; the samples are "
                           f"{list(sample_shape)}")
    dev = "fp16" if o.precision in ("fp16", "mixed") else "fp32"
    topts = TrainOptions(batch=o.batch, precision=o.precision, cores=o.cores, target=o.target, cfg=o.cfg,
                         loss_scale=o.loss_scale, seed=o.seed, memory=o.memory)
    budget = o.budget if o.budget is not None else target.memory_budget_bytes
    fw = build_programs(model, sample_shape, o.batch, 1, topts, load_costs(target.name, dev, o.cores), budget)
    model.load_state_dict(pristine)
    _runtime_settings(fw, o.cfg)
    mhash = blobmod.model_hash(name, o.precision, o.cfg.optimizer, fw.layout())
    state = initial_shared(fw, model, topts)
    return EmbedLibrary(name, o, model, fw, topts, sample_shape, classes, normalize, mhash, state)


def _runtime_settings(fw, cfg: TrainConfig) -> None:
    """Learning rate, momentum and weight decay of every update call read odl_hp at run time."""
    for dp in fw.programs:
        for c in dp.prog.calls:
            if c.step != "update":
                continue
            f = c.fields
            if isinstance(f.get("lr"), float):
                f["lr"] = CExpr("odl_hp.lr")
            if isinstance(f.get("wd"), float):
                f["wd"] = CExpr("odl_hp.weight_decay")
            if c.kernel in UPDATE_KERNELS_MOMENTUM and f.get("buf") is not None and isinstance(f.get("momentum"), float):
                f["momentum"] = CExpr("odl_hp.momentum")


def _has_terms(fw) -> tuple[int, int]:
    ups = [c for dp in fw.programs for c in dp.prog.calls if c.step == "update"]
    mom = int(bool(ups) and all(c.fields.get("momentum") == CExpr("odl_hp.momentum") for c in ups))
    wd = int(bool(ups) and all(c.fields.get("wd") == CExpr("odl_hp.weight_decay") for c in ups))
    return mom, wd


def render_library(lib: EmbedLibrary, out_src: Path) -> list[Path]:
    """Write odl.h, odl_model.c and odl_model.h into out_src; returns the C sources."""
    from odl.resident import codegen_env, firmware_ctx
    out_src.mkdir(parents=True, exist_ok=True)
    from odl.codegen.render import _c_value
    env = codegen_env()
    env.filters["cf"] = lambda v: _c_value(float(v))
    ctx = firmware_ctx(lib.fw, lib.name, lib.train_opts)
    tr, pr = lib.program("train"), lib.program("eval")
    fw = lib.fw
    norm = lib.normalize or {"mean": [0.0], "std": [1.0]}
    nch = len(norm["mean"])
    plane = int(np.prod(lib.sample_shape[1:])) if nch > 1 else int(np.prod(lib.sample_shape))
    words = np.frombuffer(lib.state + b"\0" * (-len(lib.state) % 4), "<u4")
    lines = [" ".join(f"0x{w:08x}u," for w in words[i:i + 8]) for i in range(0, len(words), 8)]
    mom, wd = _has_terms(fw)
    c = lib.opts.cfg
    ctx.update(batch=lib.opts.batch, lr=float(c.lr), momentum=float(c.momentum), weight_decay=float(c.weight_decay),
               train_prog=fw.programs.index(tr), predict_prog=fw.programs.index(pr), model_hash=lib.model_hash,
               norm_mean=[float(v) for v in norm["mean"]], norm_std=[float(v) for v in norm["std"]],
               norm_plane=plane, has_momentum=mom, has_wd=wd, init_nwords=max(len(words), 1),
               init_text="".join(f"  {ln}\n" for ln in lines) or "  0u\n")
    hctx = dict(version=__version__, model=lib.name, precision=lib.opts.precision, cores=lib.opts.cores,
                batch=lib.opts.batch, input_size=int(np.prod(lib.sample_shape)),
                sample_shape="x".join(map(str, lib.sample_shape)), output_size=lib.classes,
                model_hash=lib.model_hash, arena_bytes=fw.arena_bytes, shared_bytes=fw.shared_bytes,
                train_bytes=tr.prog.arena_bytes, predict_bytes=pr.prog.arena_bytes,
                train_l1=tr.prog.l1_peak_bytes, predict_l1=pr.prog.l1_peak_bytes, l1_bytes=ctx["l1_bytes"],
                blob_bytes=lib.blob_bytes)
    (out_src / "odl.h").write_text(env.get_template("embed/odl.h.j2").render(**hctx))
    (out_src / "odl_model.c").write_text(env.get_template("embed/model.c.j2").render(**ctx))
    (out_src / "odl_model.h").write_text(env.get_template("odl_model.h.j2").render(version=__version__,
                                                                                   model=lib.name))
    (out_src / "embed.json").write_text(json.dumps(lib.settings(), indent=1) + "\n")
    return [out_src / "odl_model.c"]


def state_dict_from_blob(lib: EmbedLibrary, blob: bytes, what: str = "blob") -> tuple[dict, dict]:
    """(state_dict, header) of a blob of this library's model; OdlError when it is not one."""
    from odl.resident import state_dict_from_device
    head, payload = blobmod.unpack_blob(blob, lib.model_hash, lib.fw.shared_bytes, what)
    return state_dict_from_device(lib.fw, lib.model, payload, lib.train_opts), head


def blob_from_state_dict(lib: EmbedLibrary, sd: dict) -> bytes:
    """The blob of a fresh training state (optimizer state zero, step 0) holding the weights of sd."""
    from odl.resident import initial_shared
    m = lib.model
    keep = {k: v.detach().clone() for k, v in m.state_dict().items()}
    try:
        m.load_state_dict(sd, strict=True)
        state = initial_shared(lib.fw, m, lib.train_opts)
    finally:
        m.load_state_dict(keep)
    return blobmod.pack_blob(state, lib.model_hash, 0)


def embed_library_sources(target) -> list[tuple[Path, str]]:
    """(file, project path) of the library's hand-written C: target independent (targets/common/embed) and the
    target's flash driver (target.json "embed_sources")."""
    raw = json.loads((target.dir / "target.json").read_text())
    files = [(p, f"embed/{p.name}") for p in sorted((target.common_dir / "embed").glob("*.[ch]"))]
    files += [(target.dir / s, f"target/{s}") for s in raw.get("embed_sources", [])]
    return files

