"""`odl train`: train a model on a data set on the device and hand back PyTorch checkpoints.

One firmware, flashed (or booted) once, holds several programs on one arena (templates/train.c.j2): the training step
at the batch size, the training step at the last partial batch's size (when the training set is not a multiple of
the batch: the remainder is trained as a smaller batch, never dropped), and forward-only evaluation programs
(batch norm on running statistics, dropout off, no gradient buffers or update) at the same two sizes. Parameters,
batch-norm statistics, optimizer state, FP32 master weights (mixed) and a small control block (step counters, Adam
bias-correction powers, loss scale) are planned once into a shared region at the start of the arena, so every
program sees them at the same offsets; each program's own buffers are planned after it and overlap.

Host <-> device: everything crosses the framed protocol. On QEMU the whole data set is put into a data region beyond
the arena once, by the emulator's loader, and a step sends only the batch's sample indices (RUN); the device gathers
the batch. Over `--port` (a board) or `--bulk uart` each batch's samples and labels travel by WRITE before RUN.
Checkpoints read the shared region back (semihosting DUMP on QEMU, READ over a serial port).

Precisions: fp32, fp16 (pure FP16 weights and compute; FP32 optimizer state), mixed (FP16 compute, FP32 master
weights and optimizer state, loss scaling like torch's GradScaler: dynamic = start at 2^16, halve and skip the update
when any gradient is Inf/NaN, double after 2000 clean steps; or a fixed scale).
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from odl.train import data as datamod
from odl.common.errors import OdlError, ToolError
from odl.common.progress import bar as progress_bar
from odl.common.precision import align as _align, precision_of
from odl.common.checkpoint import CKPT_VERSION, check_writable, load_checkpoint, load_into, save_atomic
from odl.resident import (DATA_BYTES, DATA_OFFSET, Firmware, TrainOptions, build_programs, initial_shared, optimizer_state,
                          read_ctl, render_firmware, state_dict_from_device)



# ---- reference ------------------------------------------------------------------------------------------------
class Reference:
    """PyTorch FP32 on the host: the same model from the same initial weights on the same batches, same order."""

    def __init__(self, model: nn.Module, trainable: list[str], opts: TrainOptions, sample_shape: tuple = (),
                 prog=None):
        self.model = copy.deepcopy(model).float()
        self.cfg = opts.cfg
        self.net = self.model       # what runs: the model, or (--qat) the model with torch's fake quantization
        if self.cfg.qat != "none":
            from odl.train.qat import reference_net
            self.net = reference_net(self.model, opts, sample_shape, prog)
        params = dict(self.model.named_parameters())
        for n, p in params.items():
            p.requires_grad_(n in trainable)
        ps = [params[n] for n in trainable]
        c = self.cfg
        if c.optimizer == "sgd":
            self.opt = torch.optim.SGD(ps, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        else:
            self.opt = torch.optim.Adam(ps, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)

    def _train_mode(self):
        self.net.train()
        if self.cfg.bn == "frozen":
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def step(self, x: np.ndarray, y: np.ndarray, skip_update: bool = False) -> float:
        """One step on the batch. `skip_update`: the device skipped this step's update (its loss-scaled FP16
        gradients overflowed), so the reference does what torch's GradScaler does then: the forward (batch-norm
        running statistics included) and the backward run, the optimizer does not step (no weight, momentum or Adam
        state changes). The reference has no overflow of its own in FP32, so it follows the device's decision."""
        self._train_mode()
        self.opt.zero_grad(set_to_none=True)
        out = self.net(torch.from_numpy(x))
        loss = loss_fn(out, torch.from_numpy(y), self.cfg.loss)
        loss.backward()
        if not skip_update:
            self.opt.step()
        return float(loss.detach())

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float | None, float]:
        return host_eval(self.net, x, y, self.cfg.loss)


def loss_fn(out, y, loss):
    return F.cross_entropy(out, y) if loss == "xent" else F.mse_loss(out, y)


@torch.no_grad()
def host_eval(model: nn.Module, x: np.ndarray, y: np.ndarray, loss: str) -> tuple[float | None, float]:
    """(accuracy or None for mse, mean loss) of a model in eval mode on normalised inputs."""
    was = model.training
    model.eval()
    out = model(torch.from_numpy(x))
    model.train(was)
    yt = torch.from_numpy(y)
    lv = float(loss_fn(out, yt, loss))
    if loss == "xent":
        return float((out.argmax(1) == yt).float().mean()), lv
    return None, lv


# ---- the command ---------------------------------------------------------------------------------------------
def _open_session(fw: Firmware, elf: Path, opts: TrainOptions, target, work: Path, shared: bytes, data_blob: bytes):
    """(session, whether the data set sits in device memory so a step sends only sample indices)."""
    from odl.pipeline import open_session
    return (open_session(target, elf, opts.cores, work, [(0, shared)], opts.device,
                         fast_preload=[(DATA_OFFSET, data_blob)]), opts.device.data_in_memory)


def _data_blob(ds, fw: Firmware, loss: str) -> tuple[bytes, int, int, int, int]:
    """x (train then validation samples) in the device's element type, then labels (int32) or targets."""
    xdt = precision_of(fw.dev_precision).np_dtype
    x = np.concatenate([ds.x, ds.x_val]).astype(xdt)
    if loss == "xent":
        y = np.concatenate([ds.y, ds.y_val]).astype(np.int32)
    else:
        y = np.concatenate([ds.y, ds.y_val]).astype(xdt)
    xb = x.tobytes()
    yoff = _align(len(xb))
    blob = bytearray(yoff + y.nbytes)
    blob[:len(xb)] = xb
    blob[yoff:] = y.tobytes()
    if len(blob) > DATA_BYTES:
        raise OdlError(f"the data set needs {len(blob)} bytes on the device, over the {DATA_BYTES}-byte data region")
    n = len(x)
    return bytes(blob), 0, x.nbytes // n, yoff, y.nbytes // n


def check_device_options(precision: str, cores: int, target_name: str, batch: int):
    """The checks every command that trains on devices (train, fleet) makes before anything is built; returns the
    target."""
    from odl.target.description import load_target
    precision_of(precision)
    target = load_target(target_name)
    if not 1 <= cores <= target.harts:
        raise OdlError(f"--cores {cores}: target {target.name} has {target.harts} harts")
    if batch < 1:
        raise OdlError(f"--batch {batch}: must be >= 1")
    return target


def check_model_takes_data(model: nn.Module, ds, batch: int, loss: str) -> None:
    """Refuse (naming the data's and the model's shapes) a model that does not take the data's samples or whose
    output does not match its targets, before anything is built. Tracing runs the model on random inputs in
    training mode, which moves batch-norm running statistics: the weights are restored afterwards."""
    from odl.frontend.trace import default_input_shape, trace
    pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
    declared = default_input_shape(model)
    if declared is not None and tuple(declared[1:]) != ds.sample_shape:
        datamod.check_fits(ds, tuple(declared), (), loss)      # names the data's and the model's shapes
    try:
        g0 = trace(model, (batch, *ds.sample_shape))
    finally:
        model.load_state_dict(pristine)
    datamod.check_fits(ds, g0.input_shape, g0.shapes[g0.output], loss)


def _check_train_options(opts: TrainOptions) -> None:
    """Refuse contradictory or out-of-range train options (exit 2) before anything is loaded."""
    cfg = opts.cfg
    if opts.loss_scale != "dynamic":
        try:
            s = float(opts.loss_scale)
        except ValueError:
            raise OdlError(f"--loss-scale {opts.loss_scale}: expected dynamic or a number") from None
        if not (s > 0 and math.isfinite(s)):
            raise OdlError(f"--loss-scale {opts.loss_scale}: must be a positive finite number")
        if opts.precision != "mixed":
            raise OdlError(f"--loss-scale {opts.loss_scale} applies to --precision mixed only")
    if opts.epochs < 1 or opts.batch < 1 or opts.eval_every < 1:
        raise OdlError("--epochs, --batch and --eval-every must be >= 1")
    if opts.reference not in ("fp32", "none"):
        raise OdlError(f"--reference {opts.reference}: expected fp32 or none")
    if cfg.frozen == "rom":
        raise OdlError("--frozen rom: odl train keeps every parameter in L2 (its programs share one resident region; "
                       "frozen weights in the read-only level are for validate, profile and compile)")
    if cfg.prox_mu and opts.reference != "none":
        raise OdlError("a proximal term (FedProx) is used by odl fleet with --reference none; the host reference "
                       "of odl train does not add it")
    if opts.init and opts.resume:
        raise OdlError("--init and --resume exclude each other (a checkpoint already holds the weights)")


def _load_start(model: nn.Module, opts: TrainOptions, name: str) -> dict | None:
    """Load --resume's checkpoint (returned, after checking it is this model's with the same settings) or
    --init's weights into `model`; None unless resuming."""
    resume = None
    if opts.resume:
        ck = load_checkpoint(opts.resume, "--resume")
        if not isinstance(ck, dict) or "odl" not in ck or "model" not in ck:
            raise OdlError(f"--resume {opts.resume}: not an odl train checkpoint (no 'model'/'odl' entries)")
        o = ck["odl"]
        if o.get("model") != name:
            raise OdlError(f"--resume {opts.resume} is a checkpoint of model '{o.get('model')}', not '{name}'")
        load_into(model, o["initial_model"], opts.resume, name, "--resume")
        diff = {k: (v, opts.resume_key().get(k)) for k, v in o["settings"].items() if opts.resume_key().get(k) != v}
        if diff:
            k, (was, now) = next(iter(diff.items()))
            raise OdlError(f"--resume {opts.resume}: the checkpoint was written with {k}={was!r}, this run has "
                           f"{now!r} (a resumed run must use the same settings)")
        resume = ck
    elif opts.init:
        ck = load_checkpoint(opts.init, "--init")
        sd = ck["model"] if isinstance(ck, dict) and "model" in ck and isinstance(ck["model"], dict) else ck
        load_into(model, sd, opts.init, name, "--init")
    return resume


def _build_auto(model, ds, ntrain, nval, opts, target, dev, budget):
    """--train auto (odl/plan/sparse.py) for a training run: the update is chosen on the training step, then the
    whole firmware is built (shared region with FP32 master weights under mixed precision, evaluation programs);
    when that is over the budget, the choice is made again under the budget less the bytes over (at most 4 times)."""
    import dataclasses
    import sys
    from odl.frontend.trace import trace
    from odl.lower.costs import load_costs
    from odl.plan.planner import OverBudget
    from odl.plan.sparse import resolve
    from odl.tile.memory import memory_for
    pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        g0 = trace(model, (opts.batch, *ds.sample_shape))
    finally:
        model.load_state_dict(pristine)
    costs = load_costs(target.name, dev, opts.cores)
    base = dataclasses.replace(opts.cfg, fuse_updates=False) if opts.precision == "mixed" else opts.cfg
    room = budget
    for attempt in range(5):
        cfg, _ = resolve(g0, dev, base, room, log=lambda t: print(t, file=sys.stderr), costs=costs, cores=opts.cores,
                         memory=memory_for(target, opts.memory))
        cfg = dataclasses.replace(opts.cfg, train=cfg.train)
        o = dataclasses.replace(opts, cfg=cfg, train_asked="auto")   # the same choice again on --resume
        try:
            return build_programs(model, ds.sample_shape, ntrain, nval, o, costs, budget), cfg, o
        except OverBudget as e:
            if attempt == 4:
                raise
            room -= e.over
            print(f"--train auto: the training firmware is {e.over} B over the budget; choosing again within "
                  f"{room} B", file=sys.stderr)
    raise AssertionError("unreachable")


def train(model_spec: str, opts: TrainOptions, log=print) -> dict:
    from odl.frontend.trace import load_model
    from odl.target.toolchain import build_firmware
    from odl.lower.costs import load_costs
    t_start = time.perf_counter()
    cfg = opts.cfg
    cfg.seed = opts.seed
    # ---- options and inputs: everything checked before the device starts -------------------------------------
    _check_train_options(opts)
    target = check_device_options(opts.precision, opts.cores, opts.target, opts.batch)
    if opts.checkpoint:
        check_writable(opts.checkpoint)
    if opts.png:
        from odl.perf.profile import have_matplotlib
        if not have_matplotlib():
            raise OdlError("--png needs matplotlib, which is not installed (pip install matplotlib)")
    torch.manual_seed(opts.seed)
    model = load_model(model_spec)
    name = model_spec if ":" not in model_spec else model_spec.rsplit(":", 1)[1]
    ds = datamod.load(opts.data, cfg.loss, opts.val_split, opts.seed, normalize=opts.normalize)
    check_model_takes_data(model, ds, opts.batch, cfg.loss)
    resume = _load_start(model, opts, name)
    initial_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ntrain, nval = len(ds.x), len(ds.x_val)
    if opts.batch > 4096:       # an evaluation reply carries one u16 class per sample of a batch
        raise OdlError(f"--batch {opts.batch}: at most 4096")

    budget = target.memory_budget_bytes
    dev = precision_of(opts.precision).device
    if cfg.train == "auto":
        fw, cfg, opts = _build_auto(model, ds, ntrain, nval, opts, target, dev, budget)
    else:
        fw = build_programs(model, ds.sample_shape, ntrain, nval, opts, load_costs(target.name, dev, opts.cores),
                            budget)
    model.load_state_dict(initial_model)
    main = fw.programs[0].prog
    data_blob, x_off, x_stride, y_off, y_stride = _data_blob(ds, fw, cfg.loss)
    if resume is not None:
        dstate = resume["odl"]["device"]
        if resume["odl"].get("layout") != [list(t) for t in fw.layout()]:
            raise OdlError(f"--resume {opts.resume}: the device layout differs from this build's (another odl "
                           f"version or settings)")
        shared = bytes(dstate.numpy().tobytes())
        start_epoch = int(resume["epoch"])
        history = list(resume["odl"]["history"])
        step0 = int(resume["step"])
    else:
        shared = initial_shared(fw, model, opts, _fp8_initial_state(fw, model, ds, opts))
        start_epoch, history, step0 = 0, [], 0
    ref = _reference(model, main, opts, ds, resume) if opts.reference == "fp32" else None
    log(f"odl train {name}: {opts.precision}, {opts.cores} cores, batch {opts.batch}, data {ds.name} "
        f"({ntrain} train / {nval} val, sample {'x'.join(map(str, ds.sample_shape))}); programs: "
        + ", ".join(f"{dp.kind}@{dp.batch}" for dp in fw.programs)
        + f"; arena {fw.arena_bytes} B (shared {fw.shared_bytes} B)")
    if start_epoch >= opts.epochs:
        raise OdlError(f"--resume {opts.resume}: the checkpoint is at epoch {start_epoch}, --epochs is "
                       f"{opts.epochs} (the total): nothing to do")

    work = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="odl_train_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t_b = time.perf_counter()
        src = render_firmware(fw, name, opts, work / "gen")
        elf = build_firmware(target, dev, opts.cores, [src], [work / "gen"], work / "build", scalar_sources=[src],
                             defines=opts.cfg.build_defines + opts.device.build_defines)
        build_s = time.perf_counter() - t_b
        runner, fast = _open_session(fw, elf, opts, target, work / "run", shared, data_blob)
        # the reference's small batches run fastest on one thread, and leave the other cores to the emulator
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with runner as r:
            rep = _train_loop(r, fast, fw, model, ds, opts, ref, name, start_epoch, history, step0, initial_model,
                              (x_off, x_stride, y_off, y_stride), log)
            if rep.get("stopped"):        # tests: end as a killed run would, without EXIT or a final report
                if hasattr(r, "_kill"):
                    r._kill()
                    r.exit_status = -9
                else:
                    r.close()
            else:
                r.exit(0)
        if opts.device.check_races and not rep.get("stopped"):
            from odl.run.timing_plugin import check_races
            rep["races"] = check_races(work / "run", "the training and evaluation programs")
    finally:
        torch.set_num_threads(threads) if "threads" in locals() else None
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    rep["build_s"] = round(build_s, 2)
    rep["wall_s"] = round(time.perf_counter() - t_start, 2)
    if not rep.get("stopped"):
        _report(rep, opts, log)
    return rep


def _fp8_initial_state(fw, model, ds, opts) -> dict | None:
    """--store fp8: every stored tensor's amax history starts at its amax in a PyTorch FP32 step of the first
    training samples (as odl validate starts it; docs/formats.md), or None without FP8 storage."""
    main = fw.programs[0].prog
    if main.fp8 is None:
        return None
    from types import SimpleNamespace
    from odl.verify.fp8ref import initial_state
    b = fw.programs[0].batch
    x = torch.as_tensor(np.asarray(ds.x[:b]), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(ds.y[:b]))
    prep = SimpleNamespace(model=model, batches=[(x, y)], graph=main.graph)
    return initial_state(main.fp8, prep, opts.cfg, main.trainable, main.dropout)


def _reference(model: nn.Module, main, opts: TrainOptions, ds, resume: dict | None) -> Reference:
    """The host reference from the run's initial weights, or from a resumed checkpoint's reference state."""
    ref = Reference(model, main.trainable, opts, ds.sample_shape, main)
    if resume is not None:
        r = resume["odl"]["reference"]
        ref.model.load_state_dict(r["model"], strict=True)
        ref.opt.load_state_dict(r["optimizer"])
        if r.get("qat") is not None:
            ref.net.qat.load_state(r["qat"])
    return ref


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None: CPU time, unlike wall time, does not grow
    when other work shares the machine, so it tells where the time goes."""
    if pid is None:
        return None
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _train_loop(r, fast, fw, model, ds, opts, ref, name, start_epoch, history, step0, initial_model, dlayout, log):
    """Train epochs start_epoch..opts.epochs-1 on the device behind runner `r`; returns the run's report."""
    return DeviceTraining(r, fast, fw, model, ds, opts, ref, name, history, step0, initial_model, dlayout,
                          log).run(start_epoch)


class DeviceTraining:
    """One training run on a booted device: its epochs (`epoch`), evaluations on the device (`evaluate`),
    checkpoints (`checkpoint`) and the run's report (`report`). Timings are kept per kind of work."""

    def __init__(self, r, fast, fw, model, ds, opts, ref, name, history, step0, initial_model, dlayout, log):
        self.r, self.link, self.fast, self.fw, self.model, self.ds = r, r.link, fast, fw, model, ds
        self.opts, self.cfg, self.ref, self.name, self.log = opts, opts.cfg, ref, name, log
        self.history, self.step, self.initial_model = history, step0, initial_model
        hello = r.hello
        bits = precision_of(fw.dev_precision).bits
        if hello.precision_bits != bits or hello.num_cores != opts.cores or hello.arena_bytes != fw.arena_bytes:
            raise ToolError(f"the device runs other firmware: it says {hello.precision_bits}-bit, {hello.num_cores} "
                            f"cores, a {hello.arena_bytes}-byte arena; this run needs {bits}-bit, {opts.cores} "
                            f"cores, a {fw.arena_bytes}-byte arena")
        self.ntrain, self.nval = len(ds.x), len(ds.x_val)
        if fast:
            self.link.dataset(dlayout[0], dlayout[1], dlayout[2], dlayout[3], self.ntrain + self.nval)
        # protocol round trip (an INFO request and its HELLO): the transfer cost of every RUN beyond its payload
        t0 = time.perf_counter()
        for _ in range(5):
            self.link.info()
        self.rtt = (time.perf_counter() - t0) / 5
        self.xdt = precision_of(fw.dev_precision).np_dtype
        self.t = {"dev": 0.0, "ref": 0.0, "eval": 0.0, "ckpt": 0.0, "train_wall": 0.0}
        self.n_runs, self.cycles, self.run_steps, self.stopped = 0, [], 0, False
        self.last_blob = None

    def put_batch(self, dp, idx, xs, ys) -> None:
        """Write a batch's samples (and targets) into program dp's input buffers over the link."""
        p = dp.prog
        self.link.write(p.input.offset, np.ascontiguousarray(xs[idx], dtype=self.xdt).tobytes())
        if p.labels is not None:
            ydt = np.int32 if self.cfg.loss == "xent" else self.xdt
            self.link.write(p.labels.offset, np.ascontiguousarray(ys[idx], dtype=ydt).tobytes())

    def _run(self, k: int, idx, xs, ys, offset: int = 0):
        """Run program k on the samples idx: by index when the data set is on the device, else written first."""
        if self.fast:
            return self.link.run(k, (idx + offset).tolist())
        self.put_batch(self.fw.programs[k], idx, xs, ys)
        return self.link.run(k)

    def evaluate(self) -> tuple:
        """(accuracy, None) for classification, (None, MSE) otherwise, over the validation set on the device."""
        fw, ds, nval = self.fw, self.ds, self.nval
        preds, outs = [], []
        i = 0
        eb_full = fw.programs[[k for k, dp in enumerate(fw.programs) if dp.kind == "eval"][0]].batch
        while i < nval:
            bs = min(eb_full, nval - i)
            k = fw.index[("eval", bs)]
            res = self._run(k, np.arange(i, i + bs), ds.x_val, ds.y_val, offset=self.ntrain)
            if self.cfg.loss == "xent":
                preds.append(np.frombuffer(res.data, np.uint16, bs))
            else:
                outs.append(np.frombuffer(res.data, self.xdt).astype(np.float32).reshape(bs, -1))
            i += bs
        if self.cfg.loss == "xent":
            return float((np.concatenate(preds) == ds.y_val).mean()), None
        o = np.concatenate(outs).reshape(ds.y_val.shape)
        return None, float(((o - ds.y_val) ** 2).mean())

    def _train_steps(self, epoch: int, te: float) -> tuple:
        """Every step of one epoch: (device losses, reference losses, batch sizes); sets self.stopped when a test's
        stop_after_steps is reached."""
        opts, ds, B = self.opts, self.ds, self.opts.batch
        order = datamod.epoch_order(self.ntrain, opts.seed, epoch)
        steps_per_epoch = -(-self.ntrain // B)
        losses, rlosses, weights = [], [], []
        bar = progress_bar(total=steps_per_epoch, desc=f"train epoch {epoch + 1}/{opts.epochs}", unit="step",
                           enabled=opts.progress)
        seen = 0
        for s in range(steps_per_epoch):
            idx = order[s * B:(s + 1) * B]
            k = self.fw.index[("train", len(idx))]
            t0 = time.perf_counter()
            res = self._run(k, idx, ds.x, ds.y)
            t1 = time.perf_counter()
            self.t["dev"] += t1 - t0
            self.n_runs += 1
            self.cycles.append(res.cycles)
            losses.append(res.loss)
            weights.append(len(idx))
            if self.ref is not None:
                rlosses.append(self.ref.step(ds.x[idx], ds.y[idx], skip_update=res.skipped))
                self.t["ref"] += time.perf_counter() - t1
            self.step += 1
            self.run_steps += 1
            seen += len(idx)
            el = time.perf_counter() - te
            bar.set_postfix_str(f"loss {res.loss:.4f} {seen / max(el, 1e-9):.0f} samples/s")
            bar.update(1)
            if opts.stop_after_steps is not None and self.run_steps >= opts.stop_after_steps:
                self.stopped = True
                break
        bar.close()
        return losses, rlosses, weights

    def epoch(self, epoch: int) -> dict | None:
        """Train one epoch, evaluate when due, checkpoint when asked; the epoch's row (None if stopped)."""
        opts = self.opts
        te = time.perf_counter()
        losses, rlosses, weights = self._train_steps(epoch, te)
        if self.stopped:
            return None
        self.t["train_wall"] += time.perf_counter() - te
        w = np.array(weights, dtype=np.float64)
        fin = np.isfinite(losses)
        train_loss = float(np.sum(np.array(losses)[fin] * w[fin]) / max(w[fin].sum(), 1))
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_acc": None, "val_loss": None,
               "ref_train_loss": float(np.dot(rlosses, w) / w.sum()) if rlosses else None,
               "ref_val_acc": None, "ref_val_loss": None}
        if (epoch + 1) % opts.eval_every == 0 or epoch + 1 == opts.epochs:
            t0 = time.perf_counter()
            row["val_acc"], row["val_loss"] = self.evaluate()
            self.t["eval"] += time.perf_counter() - t0
            if self.ref is not None:
                row["ref_val_acc"], row["ref_val_loss"] = self.ref.evaluate(self.ds.x_val, self.ds.y_val)
        blob = None
        if opts.checkpoint or epoch + 1 == opts.epochs:
            t0 = time.perf_counter()
            blob = self.r.read_arena(0, self.fw.shared_bytes)
            ctl = read_ctl(self.fw, blob)
            row["loss_scale"] = ctl["scale"] if opts.precision == "mixed" else None
            row["skipped_updates"] = ctl["skipped"]
        row["wall_s"] = round(time.perf_counter() - te, 3)
        self.history.append(row)
        if opts.checkpoint:
            self.checkpoint(epoch, blob, t0)
        self.last_blob = blob
        return row

    def checkpoint(self, epoch: int, blob: bytes, t0: float) -> None:
        """Write the checkpoint after `epoch` (weights as a state_dict, the optimizer, the device's whole state)."""
        opts, fw, ref = self.opts, self.fw, self.ref
        sd = state_dict_from_device(fw, self.model, blob, opts)
        ck = {"model": sd, "optimizer": optimizer_state(fw, blob, opts), "epoch": epoch + 1, "step": self.step,
              "odl": {"version": CKPT_VERSION, "model": self.name, "normalize": self.ds.normalize,
                      "precision": opts.precision, "cores": opts.cores, "settings": opts.resume_key(),
                      "ctl": read_ctl(fw, blob), "layout": [list(t) for t in fw.layout()],
                      "device": torch.frombuffer(bytearray(blob), dtype=torch.uint8),
                      "initial_model": self.initial_model, "history": self.history,
                      "reference": ({"model": ref.model.state_dict(), "optimizer": ref.opt.state_dict(),
                                     "qat": ref.net.qat.state() if ref.net is not ref.model else None}
                                    if ref is not None else None)}}
        if self.cfg.qat != "none":
            from odl.train.qat import checkpoint_entry
            ck["odl"]["qat"] = checkpoint_entry(fw, blob, self.cfg)
        save_atomic(ck, opts.checkpoint)
        self.t["ckpt"] += time.perf_counter() - t0

    def log_epoch(self, row: dict) -> None:
        va = "-" if row["val_acc"] is None else f"{row['val_acc'] * 100:.2f}%"
        rva = "-" if row["ref_val_acc"] is None else f"{row['ref_val_acc'] * 100:.2f}%"
        rtl = "-" if row["ref_train_loss"] is None else f"{row['ref_train_loss']:.4f}"
        self.log(f"epoch {row['epoch']:3d}/{self.opts.epochs}: train loss {row['train_loss']:.4f} (ref {rtl}), "
                 f"val acc {va} (ref {rva}), {row['wall_s']:.1f} s")

    def run(self, start_epoch: int) -> dict:
        """Every remaining epoch, then the report."""
        emu_pid = getattr(getattr(self.r, "proc", None), "pid", None)
        cpu0 = (_cpu_seconds(emu_pid), time.process_time())
        for epoch in range(start_epoch, self.opts.epochs):
            row = self.epoch(epoch)
            if row is None:
                break
            self.log_epoch(row)
        cpu1 = (_cpu_seconds(emu_pid), time.process_time())
        return self.report(start_epoch, cpu0, cpu1)

    def report(self, start_epoch: int, cpu0: tuple, cpu1: tuple) -> dict:
        """The run's report: epochs, final accuracies (the device's, the reference's, and the checkpoint weights'
        on the host), throughput and where the time went."""
        opts, ds, history = self.opts, self.ds, self.history
        rep = {"model": self.name, "precision": opts.precision, "cores": opts.cores, "batch": opts.batch,
               "data": ds.name, "train_samples": self.ntrain, "val_samples": self.nval, "normalize": ds.normalize,
               "epochs": history, "checkpoint": opts.checkpoint, "stopped": self.stopped, "steps": self.step,
               "epochs_run": len(history) - (start_epoch if history else 0)}
        if self.stopped:
            return rep
        final = history[-1]
        rep["final"] = {"val_acc": final["val_acc"], "ref_val_acc": final["ref_val_acc"],
                        "val_loss": final["val_loss"], "ref_val_loss": final["ref_val_loss"]}
        # the trained weights as the host sees them: the state_dict loads strictly into the nn.Module, and its
        # host accuracy is set beside the device's own evaluation
        sd = state_dict_from_device(self.fw, self.model, self.last_blob, opts)
        host_model = copy.deepcopy(self.model)
        host_model.load_state_dict(sd, strict=True)
        if self.cfg.qat != "none":      # with the device's observers, as the device evaluates
            from odl.train.qat import host_model as qat_host_model
            host_model = qat_host_model(host_model, self.fw, self.last_blob, opts, ds.sample_shape)
        hacc, hloss = host_eval(host_model, ds.x_val, ds.y_val, self.cfg.loss)
        rep["final"]["host_val_acc"] = hacc
        rep["final"]["host_val_loss"] = hloss
        samples = (opts.epochs - start_epoch) * self.ntrain
        t, train_wall = self.t, self.t["train_wall"]
        rep["samples_per_s"] = round(samples / train_wall, 1) if train_wall > 0 else None
        rep["device_cycles_per_step"] = int(np.median(self.cycles)) if self.cycles else None
        rep["skipped_updates"] = read_ctl(self.fw, self.last_blob)["skipped"]
        rep["time"] = {"device_runs_s": round(t["dev"], 2), "runs": self.n_runs,
                       "protocol_rtt_ms": round(self.rtt * 1e3, 2),
                       "transfer_est_s": round(self.rtt * self.n_runs, 2), "reference_s": round(t["ref"], 2),
                       "evaluation_s": round(t["eval"], 2), "checkpoint_s": round(t["ckpt"], 2),
                       "train_wall_s": round(train_wall, 2),
                       "host_other_s": round(max(train_wall - t["dev"] - t["ref"], 0.0), 2),
                       "emulator_cpu_s": round(cpu1[0] - cpu0[0], 2) if cpu0[0] is not None and cpu1[0] else None,
                       "host_cpu_s": round(cpu1[1] - cpu0[1], 2),
                       "path": "indices (device gathers)" if self.fast else "samples by WRITE"}
        return rep


def _report(rep: dict, opts: TrainOptions, log) -> None:
    def pct(v):
        return "-" if v is None else f"{v * 100:.2f}"
    log("")
    log(f"{'epoch':>5} {'train loss':>10} {'ref loss':>10} {'val acc %':>9} {'ref acc %':>9} {'wall s':>7}")
    for e in rep["epochs"]:
        rl = "-" if e["ref_train_loss"] is None else f"{e['ref_train_loss']:.4f}"
        log(f"{e['epoch']:>5} {e['train_loss']:>10.4f} {rl:>10} {pct(e['val_acc']):>9} {pct(e['ref_val_acc']):>9} "
            f"{e['wall_s']:>7.1f}")
    f, t = rep["final"], rep["time"]
    log(f"final: device val acc {pct(f['val_acc'])}%, reference {pct(f['ref_val_acc'])}%, checkpoint weights on "
        f"the host {pct(f['host_val_acc'])}%; {rep['samples_per_s']} samples/s, "
        f"{rep['device_cycles_per_step']} device cycles/step")
    log(f"time: device runs {t['device_runs_s']} s for {t['runs']} RUNs (protocol round trip {t['protocol_rtt_ms']} "
        f"ms, ~{t['transfer_est_s']} s of it), reference {t['reference_s']} s, evaluation {t['evaluation_s']} s, "
        f"checkpoints {t['checkpoint_s']} s, other host work in the training loop {t['host_other_s']} s; "
        f"build {rep['build_s']} s; total {rep['wall_s']} s")
    if t.get("emulator_cpu_s") is not None:
        log(f"cpu: emulator {t['emulator_cpu_s']} s, odl (host) {t['host_cpu_s']} s over {rep['epochs_run']} "
            f"epoch(s) of this run (CPU time does not grow when other work shares the machine; wall time does)")
    if rep.get("skipped_updates"):
        log(f"updates skipped for Inf/NaN gradients (loss scaling): {rep['skipped_updates']}")
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(rep, indent=1) + "\n")
    if opts.png:
        plot_png(rep, opts.png)


def plot_png(rep: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [e["epoch"] for e in rep["epochs"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [e["train_loss"] for e in rep["epochs"]], "o-", label=f"device ({rep['precision']})")
    if any(e["ref_train_loss"] is not None for e in rep["epochs"]):
        a.plot(ep, [e["ref_train_loss"] for e in rep["epochs"]], "s--", label="PyTorch FP32")
    a.set_xlabel("epoch")
    a.set_ylabel("train loss")
    a.legend()
    vals = [(e["epoch"], e["val_acc"], e["ref_val_acc"]) for e in rep["epochs"] if e["val_acc"] is not None]
    if vals:
        b.plot([v[0] for v in vals], [v[1] * 100 for v in vals], "o-", label=f"device ({rep['precision']})")
        if any(v[2] is not None for v in vals):
            b.plot([v[0] for v in vals], [v[2] * 100 for v in vals], "s--", label="PyTorch FP32")
        b.set_ylabel("validation accuracy %")
        b.legend()
    b.set_xlabel("epoch")
    fig.suptitle(f"odl train {rep['model']}: {rep['data']}, {rep['precision']}, {rep['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
