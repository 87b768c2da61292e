"""The pipeline from a model to a running device, one direction, shared by the commands (validate, profile, tune,
compile, train, bench):

    load + trace (odl/frontend)  ->  lower (odl/lower, its ops)  ->  tile (odl/tile)  ->  plan (odl/plan)
        ->  render (odl/codegen)  ->  build (odl/target/toolchain.py)  ->  session (odl/run: QEMU, Renode, a board)

This module holds the steps the commands share around those stages: preparing a model with its initial weights
and batches (`prepare`), lowering and planning the deployable step within a budget (`fit`), the host values that
fill the arena (`host_array`, `preload_blob`), reading tensors back (`read_tensor`), building a lowered step into
firmware (`build`) and opening the session (`open_session`). docs/design.md draws the stages.
"""
from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from odl.common.errors import OdlError, ToolError
from odl.frontend.trace import default_input_shape, load_model, parse_shape, trace
from odl.ir.graph import Graph
from odl.ir.program import Program
from odl.lower.fp8 import kept_for_backward
from odl.lower.lowering import lower, recompute_candidates
from odl.plan.planner import plan
from odl.run.device import DeviceOptions
from odl.common.precision import dtype_np, precision_of



@dataclass
class Prepared:
    """Everything the device and the reference share: model (with the exact initial weights), the graph, and one
    (input, target) batch per step."""
    name: str
    model: torch.nn.Module
    graph: Graph
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    fp8_state: dict = field(default_factory=dict)   # --store fp8: state buffer name -> its preloaded rows (the
                                                    # command computes them, e.g. odl/verify/fp8ref.initial_state)

    @property
    def x(self) -> torch.Tensor:
        return self.batches[0][0]


def prepare(model_spec: str, input_shape: str | None, seed: int, precision: str, steps: int = 1,
            loss: str = "xent") -> Prepared:
    """Build the model (weights seeded by `seed`) and `steps` random batches for it."""
    torch.manual_seed(seed)
    model = load_model(model_spec)
    shape = parse_shape(input_shape) if input_shape else default_input_shape(model)
    if shape is None:
        raise OdlError(f"model '{model_spec}' has no default input shape: give --input-shape NxCxHxW")
    name = model_spec if ":" not in model_spec else model_spec.rsplit(":", 1)[1]
    return prepare_module(model, name, tuple(shape), seed, precision, steps, loss)


def prepare_module(model: torch.nn.Module, name: str, shape: tuple, seed: int, precision: str, steps: int = 1,
                   loss: str = "xent") -> Prepared:
    """Trace an nn.Module and draw `steps` (input, target) batches; in FP16 the weights and inputs are rounded to
    FP16 values so the device and the FP32 reference start from the same numbers."""
    graph = trace(model, shape)  # refuses unsupported models and shapes before anything runs
    if steps < 1:
        raise OdlError(f"--steps must be >= 1, not {steps}")
    gen = torch.Generator().manual_seed(seed + 1)
    out_shape = graph.shapes[graph.output]
    batches = []
    for _ in range(steps):
        x = torch.randn(*shape, generator=gen)
        if loss == "mse":
            t = torch.randn(*out_shape, generator=gen)
        elif loss == "bce":
            t = torch.rand(*out_shape, generator=gen)   # probabilities in [0, 1)
        else:
            t = torch.randint(0, int(out_shape[-1]), (shape[0],), generator=gen)
        if precision_of(precision).device == "fp16":   # the device's inputs are FP16: the reference's too
            x = x.half().float()
            t = t.half().float() if loss in ("mse", "bce") else t
        batches.append((x, t))
    if precision_of(precision).device == "fp16":
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    return Prepared(name, model, graph, batches)


def np_dtype(buf, precision) -> type:
    return dtype_np(buf.dtype, precision)


def host_array(prog: Program, prep: Prepared, buf, step: int = 0) -> np.ndarray:
    """The value the host loads into a preloaded buffer."""
    kind = buf.init[0]
    if kind == "param":
        arr = dict(prep.model.named_parameters())[buf.init[1]].detach().numpy()
    elif kind == "state":
        arr = dict(prep.model.named_buffers())[buf.init[1]].detach().numpy()
    elif kind == "input":
        arr = prep.batches[step][0].numpy()
    elif kind == "labels":
        arr = prep.batches[step][1].numpy()
    elif kind == "zeros":
        arr = np.zeros(buf.nelem)
    elif kind == "fp8":
        if buf.name not in prep.fp8_state:
            raise OdlError(f"internal: --store fp8: the scale state {buf.name} was not initialised")
        arr = prep.fp8_state[buf.name]
    elif kind == "fill":        # a constant (observer state before the first observation: --qat)
        arr = np.full(buf.nelem, buf.init[1])
    else:
        raise ValueError(f"buffer {buf.name}: unknown init {buf.init}")
    return np.ascontiguousarray(arr, dtype=np_dtype(buf, prog.precision)).ravel()


def preload_blob(prog: Program, prep: Prepared) -> bytes:
    end = max(b.offset + b.nbytes(prog.elem_bytes) for b in prog.preload)
    blob = bytearray(end)
    for b in prog.preload:
        data = host_array(prog, prep, b).tobytes()
        assert len(data) == b.nbytes(prog.elem_bytes), b.name
        blob[b.offset:b.offset + len(data)] = data
    return bytes(blob)


def read_tensor(arena: bytes, buf, shape, precision) -> np.ndarray:
    a = np.frombuffer(arena, dtype=np_dtype(buf, precision), count=buf.nelem, offset=buf.offset)
    return a.astype(np.float32).reshape(shape)


def build(prog: Program, model_name: str, target, cores: int, out_dir: Path, defines=()) -> Path:
    from odl.codegen.render import render
    from odl.target.toolchain import build_firmware
    srcs = render(prog, model_name, cores, out_dir / "gen")
    return build_firmware(target, prog.precision, cores, srcs, [out_dir / "gen"], out_dir / "build", scalar_sources=srcs,
                          defines=list(defines) + prog.build_defines)


def step_timeout_for(macs: int) -> float:
    """How long one STEP may run on the device before it counts as hung: 60 s plus 2 us per MAC of the step
    (~135 s for ResNet8, whose FP32 1-hart step takes a few seconds on QEMU)."""
    return 60.0 + 2e-6 * macs


def open_runner(target, elf: Path, prog: Program, prep: Prepared, cores: int, workdir: Path,
                device: DeviceOptions = DeviceOptions()):
    """A runner session for one training step's firmware, its preload being the step's initial arena."""
    return open_session(target, elf, cores, workdir, [(0, preload_blob(prog, prep))], device,
                        step_timeout=device.step_timeout or step_timeout_for(prog.macs_forward + prog.macs_backward))


def open_session(target, elf: Path, cores: int, workdir: Path, preload: list[tuple[int, bytes]],
                 device: DeviceOptions = DeviceOptions(), fast_preload: list[tuple[int, bytes]] = (),
                 step_timeout: float = 600.0):
    """The last stage: a session with the device that runs `elf` (QEMU, Renode, or a board on device.port after
    the optional flash command), the arena preloaded with `preload` [(offset, bytes)]. fast_preload is loaded only
    where a bulk fast path exists (QEMU's loader with bulk='fast'); elsewhere the caller sends it over the link.
    step_timeout: how long one request may run on the device before it counts as hung."""
    port, bulk, flash = device.port, device.bulk, device.flash
    if port is None and device.emulator == "renode":
        from odl.run.runners.renode import RenodeRunner
        return RenodeRunner(target, elf, cores, workdir, preload=list(preload))
    if port is None:
        from odl.run.runners.qemu import QemuRunner
        pre = list(preload) + (list(fast_preload) if bulk == "fast" else [])
        extra = []
        if device.check_races:
            from odl.run.timing_plugin import parameters, plugin_args
            Path(workdir).mkdir(parents=True, exist_ok=True)
            extra = plugin_args(target, elf, cores, Path(workdir) / "races.json", parameters(target), races=True)
        return QemuRunner(target, elf, cores, workdir, preload=pre, timeout=step_timeout, bulk=bulk,
                          extra_args=extra)
    from odl.run.runners.serial_port import SerialRunner
    if flash:
        cmd = flash.replace("{elf}", str(elf))
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        if p.returncode != 0:
            raise ToolError(f"flash command failed ({p.returncode}): {cmd}\n{(p.stdout + p.stderr)[-2000:]}")
    return SerialRunner(port, device.baud, preload=list(preload), timeout=step_timeout)


def step(prep: Prepared, precision: str, cfg, target, cores: int, memory, budget_bytes: int | None, **build):
    """The step a command runs, as every command derives it: the target's measured kernel costs, the deployable
    step fitted into the budget (`fit`), and, when `build` asks for more (observe=True for validation,
    profile=True / tuning=True for profiling), the same step lowered again with fit's choices for that build.
    Returns (cfg with its recompute set, the program to build, the deployable step's memory report)."""
    from odl.lower.costs import load_costs
    from odl.tile.memory import rom_of
    costs = load_costs(target.name, precision, cores)
    cfg, prog, mem = fit(prep.graph, precision, cfg, budget_bytes, rom_bytes=rom_of(target).get("bytes", 0),
                         costs=costs, cores=cores, memory=memory)
    if build:
        prog = lower(prep.graph, precision, cfg, costs=costs, cores=cores, memory=memory, **build)
    return cfg, prog, mem


def _log_auto(text: str):
    import sys
    print(text, file=sys.stderr)


def fit(graph, precision: str, cfg, budget_bytes: int | None, rom_bytes: int = 0, **lower_kw):
    """Lower and plan the deployable step (parameters updated as soon as their gradient is complete). Over the
    budget, free cheap activations after the forward and recompute them in the backward (largest first, see
    odl.lower.lowering.recompute_candidates) until the step fits; if it never does, the first plan's error (exit 2).
    Frozen weights (cfg.frozen): 'auto' keeps them in L2 when the step fits so, else moves them to the target's
    read-only level (rom_bytes of it; 0: the target has none); 'rom' puts them there.
    Returns (cfg with its recompute set and frozen decided, program, memory report): lower the validation/profiling
    builds with that cfg so that they run the same step."""
    from odl.plan.planner import OverBudget
    from odl.plan.sparse import NothingFits
    if cfg.frozen == "rom" and not rom_bytes:
        raise OdlError("--frozen rom: the target describes no read-only level (target.json memory.rom)")
    if cfg.frozen != "auto":
        return _fit_rom_checked(graph, precision, cfg, budget_bytes, rom_bytes, lower_kw)
    try:
        return _fit(graph, precision, dataclasses.replace(cfg, frozen="l2"), budget_bytes, **lower_kw)
    except (OverBudget, NothingFits) as e:
        if not rom_bytes:
            raise
        in_l2 = e
    try:
        out = _fit_rom_checked(graph, precision, dataclasses.replace(cfg, frozen="rom"), budget_bytes, rom_bytes,
                               lower_kw)
    except (OverBudget, NothingFits) as e:
        e.args = (f"{e} (with the frozen weights in the target's read-only level; with them in L2: {in_l2})",)
        raise
    if out[2].rom_bytes:
        _log_auto(f"--frozen auto: the step does not fit the L2 budget with its frozen weights there; they live in "
                  f"the read-only level instead ({out[2].rom_tensors} tensors, {out[2].rom_bytes} B)")
    return out


def _fit_rom_checked(graph, precision: str, cfg, budget_bytes, rom_bytes: int, lower_kw: dict):
    """_fit, then the read-only level's capacity."""
    cfg, prog, rep = _fit(graph, precision, cfg, budget_bytes, **lower_kw)
    if prog.rom_bytes > rom_bytes:
        raise OdlError(f"--frozen rom: the frozen weights take {prog.rom_bytes} B, over the target's read-only level "
                       f"of {rom_bytes} B by {prog.rom_bytes - rom_bytes}")
    return cfg, prog, rep


def _fit(graph, precision: str, cfg, budget_bytes: int | None, **lower_kw):
    """fit with cfg.frozen decided."""
    from odl.plan.sparse import resolve
    cfg, auto = resolve(graph, precision, cfg, budget_bytes, log=_log_auto, **lower_kw)   # --train auto
    prog = lower(graph, precision, cfg, **lower_kw)
    rep = plan(prog)
    rep.budget_bytes = budget_bytes
    rep.auto = auto
    rep.kept = kept_for_backward(prog)
    if budget_bytes is None or rep.arena_bytes <= budget_bytes:
        return cfg, prog, rep
    # what no recomputation frees (parameters, running statistics, input, labels): over the budget alone, the
    # search below cannot succeed, so refuse now (a large model would otherwise be lowered once per candidate)
    fixed = sum(b.nbytes(prog.elem_bytes) for b in prog.preload if b.space == "l2")
    if fixed > budget_bytes:
        _over_budget(prog, budget_bytes, auto is None, graph, precision, cfg, lower_kw)
    chosen: list[str] = []
    for v in recompute_candidates(graph, cfg) if cfg.store != "fp8" else ():   # fp8: its inputs are FP8 copies
        chosen.append(v)
        c = dataclasses.replace(cfg, recompute=frozenset(chosen))
        p2 = lower(graph, precision, c, **lower_kw)
        r2 = plan(p2)
        if r2.arena_bytes <= budget_bytes:
            r2.budget_bytes, r2.recomputed, r2.auto = budget_bytes, tuple(chosen), auto
            r2.kept = kept_for_backward(p2)
            return c, p2, r2
    _over_budget(prog, budget_bytes, auto is None, graph, precision, cfg, lower_kw)
    raise AssertionError("unreachable")


def _over_budget(prog, budget_bytes: int, hint: bool, graph, precision: str, cfg, lower_kw: dict):
    """Raise the planner's over-budget error (it names the largest live buffers) and, when the update was not
    chosen by --train auto, the largest update that would fit, as --train auto chooses it."""
    from odl.plan.planner import OverBudget
    from odl.plan.sparse import largest_fitting
    try:
        plan(prog, budget_bytes)
    except OverBudget as e:
        if hint:
            fits = largest_fitting(graph, precision, cfg, budget_bytes, **lower_kw)
            raise OverBudget(f"{e}; the largest update that fits: {fits}", e.over) from None
        raise
    raise AssertionError("unreachable: the step was over the budget")
