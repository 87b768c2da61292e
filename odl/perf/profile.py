"""`odl profile`: one training step on the emulated MCU with exact per-core cycle counts, reported per layer and
per step (forward, weight_grad, input_grad, transform, loss, update).

Cost model (docs/performance.md): one instruction = one cycle per core. A kernel call's time is its slowest core; the step's
time is the sum over calls plus synchronisation.

How the counts are taken
------------------------
The step is lowered with `lower(..., profile=True)` and built with `-DODL_PROFILE`: every kernel call runs through
`odl_parallel_profiled` (targets/rv32-cluster/team.c), where each core's share runs alone while the others sleep,
so the hart's `minstret` delta is exactly its own instructions even though QEMU's `-icount` counter is one
counter shared by all harts. The generated code sums the counts of a call over the iterations of per-sample loops
into the arena buffer `prog.profile` ([calls, 8] uint32). Each count covers the task function on that core
(including the call into the task, a few instructions), not the fork/join of `odl_parallel`.

Synchronisation (fork/join) measurement
---------------------------------------
The profiled counts exclude the fork/join path of a real `odl_parallel`, so it is measured once per core count on
a tiny calibration firmware (CALIB_C below: the real target runtime, team.c included, and no kernels) run on the
same QEMU. Under `-icount` the only counter is global, so a parallel round trip's delta is the SUM over harts, not a
time. The calibration therefore works from sums and from hart 0's own stretch:

* D    = instructions of REPS direct (indirect-pointer) calls of an empty task on hart 0, / REPS. This is the
         per-call overhead the profiled counts already contain on core 0.
* S(N) = global instret delta of REPS `odl_parallel(empty)` round trips with N harts, / REPS (all harts' sum).
* F(N) = instructions from hart 0's call of `odl_parallel` to the first instruction of the task on hart 0
         (one timestamped round trip; exact because QEMU's round-robin TCG runs hart 0 alone until it sleeps in
         the join, which the stamps confirm: all workers' stamps come after hart 0's).

With 2 harts, the round trip is hart 0's fork and join plus ONE worker's wake-up, task call and finish; with
IPC = 1 these are on the critical path one after the other (hart 0 sleeps while the worker runs), so
`S(2) - D` is the critical path of the fork/join with one worker (an upper bound by the few instructions hart 0
spends going to sleep, which on real hardware overlap the worker's wake-up). With N harts the workers wake,
run and finish concurrently, so the only extra critical-path work is hart 0 raising N-2 more software interrupts:
F(N) - F(2). Hence

    sync(N) = S(2) - D + F(N) - F(2)        (N >= 2)
    sync(1) = S(1) - D                      (odl_parallel just calls the task)

Measured on rv32-cluster (QEMU 10.0, clang 22, -O2): D = 4.6, S(1) = 8.6, S(2) = 77.6, S(8) = 221.6,
F(2) = 41, F(8) = 46, hence sync(1) = 4 and sync(8) = 78 cycles per `odl_parallel`. (S(8) - S(2) = 6 x 24: each
extra worker adds 23 instructions of its own, concurrent with the others, and 1 on hart 0.) The deployed runtime
has no profiling hooks: the workers' profiling branch is built only with -DODL_PROFILE.

Every call pays sync(N) once per invocation (per-sample loops invoke a call `loop` times). Total cycles = sum over
calls of the critical path (max over cores) + sync. MAC/cycle = (forward + backward MACs) / total cycles.
Per-core imbalance of a call = max/mean - 1 over cores; a layer's (or step's) imbalance is the cycle-weighted
mean over its calls.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from odl.common.errors import OdlError
from odl.common.precision import STEP_PRECISIONS, precision_of
from odl.lower.fp8 import kept_for_backward

STEPS = ("forward", "weight_grad", "input_grad", "transform", "loss", "update")

CALIB_REPS = 16
CALIB_C = r"""/* odl profile: fork/join calibration firmware (see odl/perf/profile.py). */
#include <stdint.h>
#include "odl_team.h"
#include "platform.h"
#define ARENA 1024u
unsigned char odl_arena[ARENA] __attribute__((section(".odl_arena"), aligned(64)));
const uint32_t odl_arena_bytes = ARENA;
const uint32_t odl_model_num_calls = 0u;
#define REPS %(reps)d
static volatile uint64_t ent[8], ext[8];
static void stamp_task(void *a) {
  int id = odl_core_id();
  ent[id] = odl_read_minstret();
  ext[id] = odl_read_minstret();
  (void)a;
}
static void empty_task(void *a) { (void)a; }
float odl_model_step(void) {
  uint64_t *out = (uint64_t *)odl_arena;
  odl_parallel(empty_task, 0);               /* warm-up */
  uint64_t a = odl_read_minstret(), b = odl_read_minstret();
  out[0] = b - a;                            /* one counter read */
  uint64_t t0 = odl_read_minstret();
  for (int r = 0; r < REPS; r++) odl_parallel(empty_task, 0);
  uint64_t t1 = odl_read_minstret();
  out[1] = t1 - t0;                          /* REPS empty round trips, all harts */
  void (*volatile f)(void *) = empty_task;
  t0 = odl_read_minstret();
  for (int r = 0; r < REPS; r++) f(0);
  t1 = odl_read_minstret();
  out[2] = t1 - t0;                          /* REPS calls of the empty task on hart 0 */
  for (int r = 0; r < 2; r++) {
    t0 = odl_read_minstret();
    odl_parallel(stamp_task, 0);
    t1 = odl_read_minstret();
  }
  out[3] = t0; out[4] = t1;
  for (int k = 0; k < 8; k++) { out[5 + k] = ent[k]; out[13 + k] = ext[k]; }
  out[21] = REPS;
  out[22] = (uint64_t)odl_num_cores();
  return 0.0f;
}
"""

_SYNC_CACHE: dict[tuple[str, int], dict] = {}


def _calib_run(target, cores: int, work: Path) -> dict:
    from odl.run.runners.qemu import QemuRunner
    from odl.target.toolchain import build_firmware
    d = work / f"calib{cores}"
    d.mkdir(parents=True, exist_ok=True)
    src = d / "calib.c"
    src.write_text(CALIB_C % {"reps": CALIB_REPS})
    elf = build_firmware(target, "fp32", cores, [src], [], d / "build", kernels=False, name="calib")
    with QemuRunner(target, elf, cores, d / "run", timeout=60.0) as r:
        r.link.step(1)
        v = np.frombuffer(r.read_arena(0, 23 * 8), np.uint64).astype(np.int64)
        r.exit(0)
    t0, ent0 = int(v[3]), int(v[5])
    ent, ext = v[5:5 + cores], v[13:13 + cores]
    if cores > 1 and not (ext[0] < ent[1:].min()):
        raise OdlError("sync calibration: hart 0 and the workers interleaved; the fork measurement is not exact")
    return {"cores": cores, "read": int(v[0]), "S": int(v[1]) / CALIB_REPS, "D": int(v[2]) / CALIB_REPS,
            "F": ent0 - t0}


def measure_sync(target, cores: int, work: Path | None = None) -> dict:
    """Fork/join cycles on the critical path of one odl_parallel with `cores` harts (see the module docstring)."""
    key = (target.name, cores)
    if key in _SYNC_CACHE:
        return _SYNC_CACHE[key]
    tmp = None
    if work is None:
        tmp = Path(tempfile.mkdtemp(prefix="odl_sync_"))
        work = tmp
    try:
        if cores == 1:
            m1 = _calib_run(target, 1, work)
            per_call = round(m1["S"] - m1["D"])
            detail = {"S1": m1["S"], "D": m1["D"]}
        else:
            m2 = _calib_run(target, 2, work)
            mn = m2 if cores == 2 else _calib_run(target, cores, work)
            per_call = round(m2["S"] - m2["D"] + mn["F"] - m2["F"])
            detail = {"S2": m2["S"], f"S{cores}": mn["S"], "D": m2["D"], "F2": m2["F"], f"F{cores}": mn["F"]}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    res = {"per_call": int(per_call), "cores": cores,
           "method": "sync(N) = S(2) - D + F(N) - F(2) (N >= 2), sync(1) = S(1) - D; see odl/perf/profile.py",
           "calibration": detail}
    _SYNC_CACHE[key] = res
    return res


def analyse(prog, counts: np.ndarray, cores: int, sync_per_call: int) -> dict:
    """Aggregate the [calls, cores] counts into the report's numbers (everything but run metadata)."""
    from odl.perf.timing import layer_resolver
    resolve, order = layer_resolver(prog)
    counts = counts[:, :cores].astype(np.int64)
    crit = counts.max(axis=1)
    # memory hierarchy: replay the DMA schedule (odl/tile/memory.py) with each tile's compute time per invocation
    dma = None
    hier = getattr(prog, "memory", None)
    if hier is not None:
        from odl.tile.memory import simulate
        per_inv = [int(crit[i]) / max(1, c.loop) + sync_per_call for i, c in enumerate(prog.calls)]
        dma = simulate(prog, per_inv, hier)
    mean = counts.mean(axis=1)
    imb = np.where(mean > 0, crit / np.maximum(mean, 1e-9) - 1.0, 0.0)
    layers: dict[str, dict] = {}
    step_tot = {s: {"cycles": 0, "sync": 0, "macs": 0, "calls": 0, "_imbw": 0.0, "dma": 0,
                    "dma_exposed": 0} for s in STEPS}
    kern_tot: dict[str, dict] = {}
    for i, call in enumerate(prog.calls):
        name, op = resolve(call)
        inv = max(1, call.loop)
        sync = sync_per_call * inv
        L = layers.setdefault(name, {"name": name, "op": op, "macs": 0, "steps": {}, "kernels": {}, "sync": 0,
                                     "cycles": 0, "_imbw": 0.0, "step_detail": {}, "dma_cycles": 0,
                                     "dma_exposed_cycles": 0, "l1_peak_bytes": 0})
        L["l1_peak_bytes"] = max(L["l1_peak_bytes"], getattr(call, "l1_bytes", 0))
        # DMA busy and exposed (waited-for) cycles of this tile over its invocations (0 with a flat memory)
        d, e = (int(dma["per_call_dma"][i]), int(round(dma["per_call_exposed"][i]))) if dma is not None else (0, 0)
        L["dma_cycles"] += d
        L["dma_exposed_cycles"] += e
        L["cycles"] += e
        L["macs"] += call.macs
        L["steps"][call.step] = L["steps"].get(call.step, 0) + int(crit[i])
        ks = L["kernels"].setdefault(call.step, [])
        if call.kernel not in ks:
            ks.append(call.kernel)
        L["sync"] += sync
        L["cycles"] += int(crit[i]) + sync
        L["_imbw"] += float(imb[i]) * int(crit[i])
        sd = L["step_detail"].setdefault(call.step, {"macs": 0, "sync": 0, "calls": 0, "_imbw": 0.0, "dma": 0,
                                                     "dma_exposed": 0})
        sd["dma"] += d
        sd["dma_exposed"] += e
        sd["macs"] += call.macs
        sd["sync"] += sync
        sd["calls"] += inv
        sd["_imbw"] += float(imb[i]) * int(crit[i])
        st = step_tot.setdefault(call.step, {"cycles": 0, "sync": 0, "macs": 0, "calls": 0, "_imbw": 0.0, "dma": 0,
                                             "dma_exposed": 0})
        st["dma"] += d
        st["dma_exposed"] += e
        st["cycles"] += int(crit[i])
        st["sync"] += sync
        st["macs"] += call.macs
        st["calls"] += inv
        st["_imbw"] += float(imb[i]) * int(crit[i])
        k = kern_tot.setdefault(call.kernel, {"kernel": call.kernel, "cycles": 0, "sync": 0, "macs": 0, "calls": 0})
        k["cycles"] += int(crit[i])
        k["sync"] += sync
        k["macs"] += call.macs
        k["calls"] += inv
    rank = {n: i for i, n in enumerate(order)}
    out_layers = []
    for L in sorted(layers.values(), key=lambda L: rank.get(L["name"], len(rank))):
        comp = sum(L["steps"].values())
        L["imbalance"] = L.pop("_imbw") / comp if comp else 0.0
        for s, sd in L["step_detail"].items():
            c = L["steps"][s]
            sd["imbalance"] = sd.pop("_imbw") / c if c else 0.0
        L["mac_per_cycle"] = L["macs"] / L["cycles"] if L["cycles"] else 0.0
        out_layers.append(L)
    for s, st in step_tot.items():
        w = st.pop("_imbw")
        st["imbalance"] = w / st["cycles"] if st["cycles"] else 0.0
        st["total"] = st["cycles"] + st["sync"] + st["dma_exposed"]
    compute = int(crit.sum())
    sync_total = sum(L["sync"] for L in out_layers)
    exposed = int(round(dma["dma_exposed_cycles"])) if dma is not None else 0
    cycles = compute + sync_total + exposed
    macs = prog.macs_forward + prog.macs_backward
    kernels = sorted(kern_tot.values(), key=lambda k: -(k["cycles"] + k["sync"]))
    for k in kernels:
        k["share"] = (k["cycles"] + k["sync"]) / cycles if cycles else 0.0
    return {"cycles": cycles, "compute_cycles": compute, "sync_cycles": sync_total, "macs": macs,
            "macs_forward": prog.macs_forward, "macs_backward": prog.macs_backward,
            "mac_per_cycle": macs / cycles if cycles else 0.0,
            "imbalance": float((imb * crit).sum() / compute) if compute else 0.0,
            "layers": out_layers, "step_totals": {s: v for s, v in step_tot.items() if v["calls"]},
            "kernels_summary": kernels, "calls": len(prog.calls),
            "memory_model": "hierarchy" if hier is not None else "flat",
            "dma_cycles": int(dma["dma_cycles"]) if dma is not None else 0, "dma_exposed_cycles": exposed,
            "l1_peak_bytes": getattr(prog, "l1_peak_bytes", 0), "l2_bytes": getattr(prog, "arena_bytes", 0),
            "kept_for_backward": kept_for_backward(prog),
            "_per_call_dma": [(int(d), int(round(e))) for d, e in zip(dma["per_call_dma"], dma["per_call_exposed"])]
            if dma is not None else [(0, 0)] * len(prog.calls)}


def _build_step(prep, target, precision: str, cores: int, cfg, work: Path, memory: str, budget: int | None,
                profile: bool, tuning: bool = False, defines=("ODL_PROFILE",)):
    """The deployable step's program (the recomputes that make it fit the budget), rendered and built with `defines`."""
    from odl.codegen.render import render
    from odl.lower.lowering import MAX_CORES
    from odl.pipeline import step
    from odl.plan.planner import plan
    from odl.target.toolchain import build_firmware
    from odl.tile.memory import memory_for
    if not 1 <= cores <= min(target.harts, MAX_CORES):
        raise OdlError(f"--cores {cores}: target {target.name} has {target.harts} harts")
    if target.qemu is None:
        raise OdlError(f"target {target.name} has no QEMU configuration: odl profile needs an emulator")
    cfg, prog, _ = step(prep, precision, cfg, target, cores, memory_for(target, memory),
                        budget or target.memory_budget_bytes, profile=profile, tuning=tuning)
    plan(prog)
    if prog.fp8 is not None:      # --store fp8: the scales' initial amax histories, as odl validate sets them
        from odl.verify.fp8ref import initial_state
        prep.fp8_state = initial_state(prog.fp8, prep, cfg, prog.trainable, prog.dropout)
    srcs = render(prog, prep.name, cores, work / "gen")
    elf = build_firmware(target, precision, cores, srcs, [work / "gen"], work / "build",
                         defines=list(defines) + prog.build_defines, scalar_sources=srcs)
    return prog, elf


@contextmanager
def _workdir(work: Path | None):
    """`work`, or a temporary directory removed afterwards."""
    if work is not None:
        yield Path(work)
        return
    tmp = Path(tempfile.mkdtemp(prefix="odl_prof_"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def profile_prepared(prep, target, precision: str, cores: int, cfg=None, work: Path | None = None,
                     sync: dict | None = None, tuning: bool = False, phase=None, memory: str = "hierarchy",
                     budget: int | None = None) -> dict:
    """Lower, build with ODL_PROFILE, run one step on QEMU, read the counts; returns the report dict (the ipc1
    cycle model). budget: L2 bytes the step must fit (default: the target's budget); activations are recomputed to
    fit."""
    from odl.lower.lowering import MAX_CORES, TrainConfig
    from odl.run.runners.qemu import QemuRunner
    from odl.pipeline import preload_blob
    cfg = cfg or TrainConfig()
    phase = phase or (lambda *a: None)
    with _workdir(work) as work:
        t0 = time.perf_counter()
        phase("calibrate", f"fork/join cost on {cores} cores")
        sync = sync or measure_sync(target, cores, work / "sync")
        phase("lower/plan/build", f"profiled step, {precision}, {cores} cores")
        prog, elf = _build_step(prep, target, precision, cores, cfg, work, memory, budget, True, tuning)
        t_run = time.perf_counter()
        phase("run", "one profiled step on QEMU")
        with QemuRunner(target, elf, cores, work / "run", preload=[(0, preload_blob(prog, prep))],
                        timeout=1800.0) as r:
            res = r.link.step(1)
            raw = r.read_arena(prog.profile.offset, prog.profile.nelem * 4)
            r.exit(0)
        t_end = time.perf_counter()
    counts = np.frombuffer(raw, np.uint32).reshape(len(prog.calls), MAX_CORES)
    rep = analyse(prog, counts, cores, sync["per_call"])
    per_dma = rep.pop("_per_call_dma")
    rep.update({"model": prep.name, "target": target.name, "precision": precision, "cores": cores,
                "input_shape": list(prep.batches[0][0].shape), "loss": res.loss,
                # the step's time (slowest core per kernel call + fork/join), and STEP_DONE's counter for contrast:
                # all harts' instructions summed, profiling overhead included (QEMU -icount shares one counter)
                "critical_path_cycles": rep["cycles"],
                "device_instructions_all_harts": res.instret,
                "sync": sync, "sync_per_call": sync["per_call"],
                "per_call": [{"index": i, "layer": c.layer, "step": c.step, "kernel": c.kernel, "macs": c.macs,
                              "loop": c.loop, "variant": c.variant, "cores": counts[i, :cores].astype(int).tolist(),
                              "dma_cycles": per_dma[i][0], "dma_exposed_cycles": per_dma[i][1]}
                             for i, c in enumerate(prog.calls)],
                "decisions": prog.decisions,
                "timing_s": {"build": round(t_run - t0, 3), "run": round(t_end - t_run, 3)},
                "cycle_model": "ipc1"})
    return rep


def profile_timed(prep, target, precision: str, cores: int, cfg=None, work: Path | None = None, phase=None,
                  memory: str = "hierarchy", budget: int | None = None, overrides: dict | None = None,
                  races: bool = False, tuning: bool = False) -> dict:
    """The deployable step (real fork/join, DMA programmed by hart 0) under the timing plugin: two steps run, the
    second is reported (the first warms the I-cache). overrides: timing parameters to change (e.g. {"fpus": 4})."""
    from odl.lower.lowering import TrainConfig
    from odl.perf.timing import analyse_timed
    from odl.run.timing_plugin import parameters, run_timed
    from odl.pipeline import preload_blob
    cfg = cfg or TrainConfig()
    params = parameters(target, overrides)
    phase = phase or (lambda *a: None)
    with _workdir(work) as work:
        t0 = time.perf_counter()
        phase("lower/plan/build", f"timed step, {precision}, {cores} cores")
        prog, elf = _build_step(prep, target, precision, cores, cfg, work, memory, budget, False, tuning,
                                defines=("ODL_TIMED",))
        t_run = time.perf_counter()
        phase("run", "two steps on QEMU under the timing model")
        raw = run_timed(target, elf, cores, work / "timed", [(0, preload_blob(prog, prep))], steps=2, params=params,
                        races=races)
        t_end = time.perf_counter()
    rep = analyse_timed(prog, raw, STEPS)
    t = target.raw.get("timing", {})
    rep.update({"model": prep.name, "target": target.name, "precision": precision, "cores": cores,
                "input_shape": list(prep.batches[0][0].shape), "loss": raw.get("loss"), "cycle_model": "timed",
                "timing": {k: {"value": params[k], "source": t[k]["source"] if k in t else "override"}
                           for k in params},
                "memory_model": "hierarchy" if getattr(prog, "memory", None) is not None else "flat",
                "l1_peak_bytes": getattr(prog, "l1_peak_bytes", 0), "l2_bytes": getattr(prog, "arena_bytes", 0),
                "kept_for_backward": kept_for_backward(prog), "store": cfg.store_option,
                "decisions": prog.decisions,
                "timing_s": {"build": round(t_run - t0, 3), "run": round(t_end - t_run, 3)}})
    return rep


def setup(model_spec: str, target_name: str, precision: str, input_shape: str | None, seed: int, cfg=None):
    """Target, prepared model (one batch) and training config for a profiled run (profile, tune)."""
    from odl.lower.lowering import TrainConfig
    from odl.target.description import load_target
    from odl.pipeline import prepare
    precision_of(precision, STEP_PRECISIONS)
    cfg = cfg or TrainConfig()
    cfg.seed = seed
    target = load_target(target_name)
    return target, prepare(model_spec, input_shape, seed, precision, 1, cfg.loss), cfg


def profile(model_spec: str, target_name: str = "rv32-cluster", precision: str = "fp32", cores: int = 8,
            input_shape: str | None = None, seed: int = 0, cfg=None, json_path: str | None = None,
            png_path: str | None = None, keep_dir: str | None = None, log=print, memory: str = "hierarchy",
            budget: int | None = None, cycle_model: str = "timed", overrides: dict | None = None,
            races: bool = False) -> dict:
    from odl.common.fsutil import atomic_path, write_text_atomic
    from odl.common.progress import Phases
    phase = Phases("profile")
    phase("trace", model_spec)
    target, prep, cfg = setup(model_spec, target_name, precision, input_shape, seed, cfg)
    keep = Path(keep_dir) if keep_dir else None
    if cycle_model == "timed":
        from odl.perf.timing import format_timed
        rep = profile_timed(prep, target, precision, cores, cfg, keep, phase=phase, memory=memory, budget=budget,
                            overrides=overrides, races=races)
        text = format_timed(rep)
    elif cycle_model == "ipc1":
        rep = profile_prepared(prep, target, precision, cores, cfg, keep, phase=phase, memory=memory, budget=budget)
        text = format_report(rep)
    else:
        raise OdlError(f"--cycle-model {cycle_model!r}: expected timed or ipc1")
    kept = rep["kept_for_backward"]
    rep["store"] = cfg.store_option
    text += (f"\nkept for the backward (--store {cfg.store_option}): {kept['bytes']} B in {kept['tensors']} tensors"
             + (f", {kept['fp8_bytes']} B of them FP8" if kept["fp8_bytes"] else ""))
    if log:
        log(text)
    if json_path:
        write_text_atomic(json_path, json.dumps(rep, indent=2))
    if png_path:
        with atomic_path(png_path) as tmp:
            plot_png(rep, tmp)
    return rep


def format_report(rep: dict, top_kernels: int = 8) -> str:
    lines = [f"odl profile {rep['model']}: {rep['target']} (qemu, exact per-core counts), {rep['precision']}, "
             f"{rep['cores']} cores, input {'x'.join(map(str, rep['input_shape']))}; "
             f"sync {rep['sync_per_call']} cycles per parallel call"]
    hier = rep.get("memory_model") == "hierarchy"
    hdr = (f"{'layer':24s} {'op':10s} {'step':11s} {'calls':>5s} {'MACs':>10s} {'cycles':>10s} {'sync':>7s} "
           + (f"{'DMA':>8s} {'exposed':>7s} " if hier else "") + f"{'imbal':>6s} {'MAC/cyc':>7s}  kernels")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for L in rep["layers"]:
        for s in STEPS:
            if s not in L["steps"]:
                continue
            sd = L["step_detail"][s]
            cyc = L["steps"][s]
            tot = cyc + sd["sync"] + sd.get("dma_exposed", 0)
            mpc = f"{sd['macs'] / tot:7.2f}" if sd["macs"] and tot else f"{'':7s}"
            dcol = f"{sd.get('dma', 0):8d} {sd.get('dma_exposed', 0):7d} " if hier else ""
            lines.append(f"{L['name'][:24]:24s} {L['op'][:10]:10s} {s:11s} {sd['calls']:5d} {sd['macs']:10d} "
                         f"{cyc:10d} {sd['sync']:7d} {dcol}{100 * sd['imbalance']:5.1f}% {mpc}  "
                         f"{','.join(k.removeprefix('odl_') for k in L['kernels'][s])}")
    lines.append("-" * len(hdr))
    for s, st in rep["step_totals"].items():
        mpc = f"{st['macs'] / st['total']:7.2f}" if st["macs"] and st["total"] else f"{'':7s}"
        dcol = f"{st.get('dma', 0):8d} {st.get('dma_exposed', 0):7d} " if hier else ""
        lines.append(f"{'total ' + s:24s} {'':10s} {'':11s} {st['calls']:5d} {st['macs']:10d} {st['cycles']:10d} "
                     f"{st['sync']:7d} {dcol}{100 * st['imbalance']:5.1f}% {mpc}")
    dcol = f"{rep.get('dma_cycles', 0):8d} {rep.get('dma_exposed_cycles', 0):7d} " if hier else ""
    lines.append(f"{'TOTAL':24s} {'':10s} {'':11s} {sum(s['calls'] for s in rep['step_totals'].values()):5d} "
                 f"{rep['macs']:10d} {rep['compute_cycles']:10d} {rep['sync_cycles']:7d} {dcol}"
                 f"{100 * rep['imbalance']:5.1f}% {rep['mac_per_cycle']:7.2f}")
    lines.append("top kernels: " + ", ".join(
        f"{k['kernel'].removeprefix('odl_')} {100 * k['share']:.1f}%" for k in rep["kernels_summary"][:top_kernels]))
    if rep.get("memory_model") == "hierarchy":
        lines.append(f"memory hierarchy: L1 peak {rep['l1_peak_bytes']} B, L2 arena {rep['l2_bytes']} B; DMA busy "
                     f"{rep['dma_cycles']} cycles, exposed (cores waiting) {rep['dma_exposed_cycles']} cycles = "
                     f"{100 * rep['dma_exposed_cycles'] / max(1, rep['cycles']):.1f}% of the step")
        lines.append("most exposed DMA: " + ", ".join(
            f"{L['name']} {L['dma_exposed_cycles']}" for L in sorted(rep["layers"], key=lambda L: -L["dma_exposed_cycles"])[:6])
            + "; L1 peak per layer: " + ", ".join(f"{L['name']} {L['l1_peak_bytes']}" for L in rep["layers"][:4]) + ", ...")
    else:
        lines.append("memory: flat (one memory every core reads in one cycle; no data movement counted)")
    lines.append(f"step: {rep['cycles']} cycles (critical path {rep['compute_cycles']} + sync {rep['sync_cycles']}"
                 f" + exposed DMA {rep.get('dma_exposed_cycles', 0)}), "
                 f"MACs fwd {rep['macs_forward']} + bwd {rep['macs_backward']} = {rep['macs']}, "
                 f"{rep['mac_per_cycle']:.2f} MAC/cycle")
    return "\n".join(lines)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def plot_png(rep: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = rep["layers"]
    names = [L["name"] for L in layers]
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(layers) + 1.8))
    left = np.zeros(len(layers))
    for s in STEPS + ("sync",):
        vals = np.array([L.get("sync", 0) if s == "sync" else L["steps"].get(s, 0) for L in layers], dtype=float)
        if vals.sum() == 0:
            continue
        ax.barh(names, vals, left=left, label=s)
        left += vals
    ax.invert_yaxis()
    ax.set_xlabel("cycles (timed model)" if rep.get("cycle_model") == "timed" else "cycles (critical path, ipc1)")
    ax.set_title(f"{rep['model']} {rep['precision']} {rep['cores']} cores: {rep['cycles']} cycles, "
                 f"{rep['mac_per_cycle']:.2f} MAC/cycle")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
