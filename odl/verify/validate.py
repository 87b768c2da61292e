"""`odl validate`: one training step on the device (emulated), compared tensor by tensor with PyTorch."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from odl.verify.compare import TORCH_FACTOR, at_floor, judge, passes
from odl.tile.memory import memory_for
from odl.common.errors import OdlError
from odl.lower.lowering import Program, TrainConfig
from odl.pipeline import Prepared, build, host_array, open_runner, prepare, read_tensor, step
from odl.plan.planner import plan
from odl.run.device import DeviceOptions
from odl.verify.reference import first_update, reference_steps
from odl.target.description import load_target
from odl.common.fsutil import write_text_atomic
from odl.common.progress import Phases
from odl.common.precision import STEP_PRECISIONS, precision_of

COUNTER_NOTE = ("instructions/cycles of all harts summed (QEMU -icount: one counter shared by the harts); "
                "the step's time is the critical path that odl profile reports")


def result_ranges(prog: Program) -> list[tuple[int, int]]:
    """Byte ranges of the arena the host compares (merged): what a slow link needs to read back."""
    bufs = [prog.logits, prog.loss, *prog.param_grads.values(), *prog.params.values(), *prog.state.values(),
            *(b for b, _ in prog.observed_grads.values()), *(b for b, _ in prog.activations.values())]
    spans = sorted({(b.offset, b.offset + b.nbytes(prog.elem_bytes)) for b in bufs})
    out: list[list[int]] = []
    for lo, hi in spans:
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi - lo) for lo, hi in out]


def read_results(r, prog: Program) -> bytes:
    """The arena as far as the comparison needs it: all of it through a fast path, else only result ranges."""
    if r.bulk == "fast":
        return r.read_arena(0, prog.extent_bytes)
    arena = bytearray(prog.extent_bytes)
    for off, n in result_ranges(prog):
        arena[off:off + n] = r.read_arena(off, n)
    return bytes(arena)


def run_device(runner, prog: Program, prep: Prepared, cores: int):
    """Run every step on a started runner. Returns the step results, the arena after step 1 and after the last
    step. Step 1's data is already loaded; later steps' inputs and targets travel over the protocol (WRITE)."""
    steps = len(prep.batches)
    hello = runner.hello
    bits = precision_of(prog.precision).bits
    if hello.precision_bits != bits or hello.num_cores != cores or hello.arena_bytes != prog.extent_bytes:
        raise OdlError(f"the device runs other firmware: it says {hello.precision_bits}-bit, "
                       f"{hello.num_cores} cores, {hello.arena_bytes}-byte arena; this step needs {bits}-bit, "
                       f"{cores} cores, a {prog.extent_bytes}-byte arena (flash the firmware validate built)")
    results = [runner.link.step(1)]
    first = read_results(runner, prog)
    last = first
    for k in range(1, steps):
        for b in (prog.input, prog.labels):
            runner.link.write(b.offset, host_array(prog, prep, b, k).tobytes())
        results.append(runner.link.step(1))
    if steps > 1:
        last = read_results(runner, prog)
    runner.exit(0)
    return results, first, last


def validate(model_spec: str, target_name: str = "rv32-cluster", precision: str = "fp32", cores: int = 8,
             input_shape: str | None = None, seed: int = 0, lr: float = 0.01, json_path: str | None = None,
             keep_dir: str | None = None, log=print, steps: int = 1, cfg: TrainConfig | None = None,
             device: DeviceOptions = DeviceOptions(), memory: str = "hierarchy", budget: int | None = None) -> dict:
    """One training step (or `steps`) on the device against PyTorch, tensor by tensor. device: where it runs (a
    board or any pyserial URL instead of QEMU; bulk='uart' makes QEMU move all data over the protocol as a board
    would; a flash command run before connecting)."""
    t0 = time.perf_counter()
    phase = Phases("validate")
    cfg = cfg or TrainConfig()
    cfg.lr, cfg.seed = lr, seed
    target = load_target(target_name)
    hier = memory_for(target, memory)
    if not 1 <= cores <= target.harts:
        raise OdlError(f"--cores {cores}: target {target.name} has {target.harts} harts")
    precision_of(precision, STEP_PRECISIONS)
    if cfg.store == "fp8" and steps > 1:
        raise OdlError("--store fp8 validates one step (--steps 1): the scales of later steps come from each side's "
                       "own amax, which the device and PyTorch need not round to the same power of two")
    phase("trace", model_spec)
    prep = prepare(model_spec, input_shape, seed, precision, steps, cfg.loss)
    if cfg.store == "fp8" and getattr(prep.graph, "exported", None) is None:
        raise OdlError("--store fp8 validates against the torch.export frontend's program (the default "
                       "--frontend export), not --frontend fx")
    phase("lower/plan", f"{len(prep.graph.nodes)} nodes, {precision}, {cores} cores")
    budget = budget or target.memory_budget_bytes
    # the deployable step must fit the budget; the validation build additionally keeps every layer input gradient
    # alive for read-back (reported separately, not held against the budget)
    cfg, prog, mem = step(prep, precision, cfg, target, cores, hier, budget, observe=True)
    mem_val = plan(prog)
    store_mem = _store_memory(prep, precision, cfg, target, cores, hier, budget, mem)
    if prog.fp8 is not None:
        from odl.verify.fp8ref import initial_state
        prep.fp8_state = initial_state(prog.fp8, prep, cfg, prog.trainable, prog.dropout)
    run = _build_and_run(prog, prep, target, cores, hier, keep_dir, phase, steps, device)
    phase("compare", "PyTorch references (FP64 and the run's precision), tensor by tensor")
    refs = _references(prep, prog, cfg, run["arena"], precision)
    pending = _device_and_reference_tensors(prep, prog, refs, run, precision, steps)
    fp8 = None
    if prog.fp8 is not None:
        from odl.verify.fp8ref import amax_and_scales
        amax, fp8 = amax_and_scales(prog.fp8, prep.fp8_state, run["arena"], refs,
                                    lambda b, shape: read_tensor(run["arena"], b, shape, precision))
        pending += amax
    rows = _judge_tensors(pending, prep, cfg, precision)
    loss_dev = float(np.frombuffer(run["arena"], np.float32, 1, prog.loss.offset)[0])
    step_rows = _loss_rows(run["results"], refs["plain"], refs["torch"], precision)
    loss_ok = all(r["passed"] for r in step_rows) and \
        abs(run["results"][0].loss - loss_dev) <= 1e-6 * max(1, abs(loss_dev))
    qat_ok = refs["qat"] is None or not refs["qat"]["mismatches"]
    report = {
        "model": prep.name, "target": target.name, "runner": device.runner, "bulk": device.bulk_path,
        "precision": precision, "cores": cores,
        "input_shape": list(prep.x.shape), "seed": seed, "lr": lr,
        "passed": loss_ok and qat_ok and all(r["passed"] for r in rows) and (fp8 is None or fp8["scales_equal"]),
        "config": {"train": cfg.train, "bn": cfg.bn, "loss": cfg.loss, "optimizer": cfg.optimizer,
                   "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "steps": steps,
                   "store": cfg.store_option, "qat": cfg.qat_option},
        "fp8": fp8,
        "qat": refs["qat"],
        "trainable": prog.trainable,
        "train_auto": mem.auto,
        "reference": {"truth": "pytorch fp64", "torch": f"pytorch {precision}" + (
                          " casting to float8 where the device packs (E4M3 activations, E5M2 gradients)"
                          if fp8 is not None else ""),
                      "rule": f"rel_l2 within the {precision} tolerance, or <= {TORCH_FACTOR:g} x torch_rel_l2"},
        "loss": {"device": loss_dev, "reference": refs["plain"][0].loss, "rel_err": step_rows[0]["rel_err"],
                 "torch": refs["torch"][0].loss, "torch_rel_err": step_rows[0]["torch_rel_err"], "passed": loss_ok},
        "steps": step_rows,
        "relu_flips": {"decisions": refs["decisions"], "flipped": sum(refs["flips"].values()), "by_layer": refs["flips"],
                       "gradients_vs": "references with the device's ReLU decisions" if refs["flips"]
                       else "plain references"},
        "tensors": rows,
        "macs": {"forward": prog.macs_forward, "backward": prog.macs_backward,
                 "total": prog.macs_forward + prog.macs_backward},
        "memory": {"arena_bytes": mem.arena_bytes, "budget_bytes": budget,
                   "naive_bytes": mem.naive_bytes, "validation_arena_bytes": mem_val.arena_bytes, **store_mem},
        # STEP_DONE's counters are read on hart 0 around the step; under QEMU -icount all harts share one counter,
        # so these are every hart's instructions summed, not the step's time: `odl profile` measures the
        # critical path (critical_path_cycles there).
        "device": {**run["results"][0].labelled(), "note": COUNTER_NOTE},
        "link": run["link"],
        "races": run["races"],
        "timing_s": run["timing_s"],
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    log(format_report(report))
    if json_path:
        write_text_atomic(json_path, json.dumps(report, indent=2))
    return report


def _store_memory(prep: Prepared, precision: str, cfg: TrainConfig, target, cores: int, hier, budget: int,
                  mem) -> dict:
    """The deployable step's bytes kept for the backward, and with --store fp8 the same step planned without it
    (tensors kept in the compute precision) beside it."""
    out = {"kept_for_backward_bytes": mem.kept["bytes"], "kept_tensors": mem.kept["tensors"]}
    if cfg.store == "compute":
        return out
    import dataclasses
    _, _, base = step(prep, precision, dataclasses.replace(cfg, store="compute", recompute=frozenset()), target,
                      cores, hier, budget)
    out["kept_fp8_bytes"] = mem.kept["fp8_bytes"]
    out["kept_stats_bytes"] = mem.kept["stats_bytes"]
    out["store_compute"] = {"arena_bytes": base.arena_bytes, "kept_for_backward_bytes": base.kept["bytes"],
                            "kept_stats_bytes": base.kept["stats_bytes"], "recomputed": list(base.recomputed)}
    acts = mem.kept["bytes"] - mem.kept["stats_bytes"], base.kept["bytes"] - base.kept["stats_bytes"]
    out["activation_ratio"] = round(acts[0] / max(1, acts[1]), 4)    # the tensors alone, without the statistics
    out["kept_ratio"] = round(mem.kept["bytes"] / max(1, base.kept["bytes"]), 4)
    out["arena_ratio"] = round(mem.arena_bytes / max(1, base.arena_bytes), 4)
    return out


def _build_and_run(prog: Program, prep: Prepared, target, cores: int, hier, keep_dir, phase, steps: int,
                   device: DeviceOptions) -> dict:
    """Build the validation firmware, run its steps, and return the device's results, arenas and link figures."""
    work = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="odl_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t_build = time.perf_counter()
        phase("build", "generated C + kernels -> firmware")
        # the validation build checks that every pointer a tiled kernel gets lies in L1
        elf = build(prog, prep.name, target, cores, work,
                    defines=(["ODL_CHECK_L1"] if hier else []) + device.build_defines)
        t_run = time.perf_counter()
        phase("run", f"{steps} step{'s' if steps > 1 else ''} on " + device.where)
        with open_runner(target, elf, prog, prep, cores, work / "run", device) as r:
            results, arena, arena_last = run_device(r, prog, prep, cores)
        t_end = time.perf_counter()
        races = None
        if device.check_races:
            from odl.run.timing_plugin import check_races
            races = check_races(work / "run", "the validation steps")
        return {"results": results, "arena": arena, "arena_last": arena_last, "link": asdict(r.link.stats),
                "timing_s": {"build": round(t_run - t_build, 3), "run": round(t_end - t_run, 3)}, "races": races}
    finally:
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)


def _references(prep: Prepared, prog: Program, cfg: TrainConfig, arena: bytes, precision: str) -> dict:
    """PyTorch's steps in FP64 ("plain") and at the run's precision ("torch"), and the same first step with the
    device's ReLU decisions ("grad", "grad_torch") that the gradients are compared with.

    References (docs/validation.md): FP64 is the truth every device tensor is measured against; PyTorch at the
    run's precision (FP32, or FP16 with the update in FP32 as on the device) shows how far the problem itself lets
    a correct implementation at that precision stray from it.

    ReLU decisions: an activation within rounding of zero may be positive on the device and not in FP64 (or the
    other way); such a flip moves a whole gradient element and says nothing about the arithmetic. Gradients are
    therefore compared with references that take the device's ReLU decisions ("aligned"); the flips are counted
    and reported, and forward values are compared with the plain references."""
    graph = prep.graph
    tdtype = precision_of(precision).torch_dtype
    fp8 = None
    if prog.fp8 is not None:      # --store fp8: PyTorch at the run's precision casts where the device packs
        from odl.verify.fp8ref import Fp8Reference, device_decisions
        fp8 = Fp8Reference(prog.fp8, prep.fp8_state, graph)
    refs = reference_steps(prep.model, prep.batches, cfg, prog.trainable, prog.dropout, torch.float64, graph=graph)
    refst = reference_steps(prep.model, prep.batches, cfg, prog.trainable, prog.dropout, tdtype, graph=graph,
                            fp8=fp8)
    ref, reft = refs[0], refst[0]
    masks, flips, decisions = {}, {}, 0
    for node in graph.nodes:
        if node.op in ("relu", "relu6") and node.name in {v for _, v in prog.activations.values()}:
            buf = next(b for b, v in prog.activations.values() if v == node.name)
            y = read_tensor(arena, buf, ref.values[node.name].shape, precision)
            hi = 6.0 if node.op == "relu6" else np.inf
            dev = (y > 0) & (y < hi)
            if fp8 is not None and node.name in fp8.act_scale:    # its backward reads the FP8 copy of y
                dev = device_decisions(node.op, y, fp8.act_scale[node.name])
            r = ref.values[node.name].numpy()
            refm = (r > 0) & (r < hi)
            masks[node.name] = dev
            decisions += dev.size
            if int((dev != refm).sum()):
                flips[node.report_name] = int((dev != refm).sum())
        elif node.op in ("hardswish", "hardsigmoid") and node.name in {v for _, v in prog.activations.values()}:
            # the same for the pieces of hard-swish (0 below -3, x(x+3)/6 between, x above 3) and hard-sigmoid,
            # told apart by the output: a flip across -3 or 3 changes the derivative by a step, as a ReLU's does
            buf = next(b for b, v in prog.activations.values() if v == node.name)
            y = read_tensor(arena, buf, ref.values[node.name].shape, precision)
            top = 3.0 if node.op == "hardswish" else 1.0

            def pieces(v):
                return np.where(v >= top, 2, np.where(v <= 0, 0, 1)).astype(np.int8) if node.op == "hardsigmoid" \
                    else np.where(v >= top, 2, np.where(v == 0, 0, 1)).astype(np.int8)
            dev, refm = pieces(y), pieces(ref.values[node.name].numpy())
            masks[node.name] = (node.op, dev)
            decisions += dev.size
            if int((dev != refm).sum()):
                flips[node.report_name] = int((dev != refm).sum())
    align, qat = {}, None
    if cfg.qat != "none":
        from odl.verify.qat_check import qat_decisions
        align, qat = qat_decisions(prep, prog, arena, ref, precision, read_tensor)
    if flips or (fp8 is not None and masks) or align:
        gref = reference_steps(prep.model, prep.batches[:1], cfg, prog.trainable, prog.dropout, torch.float64,
                               masks=masks, graph=graph, qat_align=align)[0]
        greft = reference_steps(prep.model, prep.batches[:1], cfg, prog.trainable, prog.dropout, tdtype,
                                masks=masks, graph=graph, fp8=fp8, qat_align=align)[0]
    else:
        gref, greft = ref, reft
    if align:   # a flipped code moves a whole quantum forward too: every step-1 value is compared with the
        refs, refst = [gref] + refs[1:], [greft] + refst[1:]    # references taking the device's codes
    return {"plain": refs, "torch": refst, "grad": gref, "grad_torch": greft, "flips": flips, "decisions": decisions,
            "qat": qat}


def _device_and_reference_tensors(prep: Prepared, prog: Program, refs: dict, run: dict, precision: str,
                                  steps: int) -> list:
    """(name, kind, device value, FP64 reference, reference at the run's precision) for every compared tensor."""
    graph = prep.graph
    ref, reft, gref, greft = refs["plain"][0], refs["torch"][0], refs["grad"], refs["grad_torch"]
    pending = []

    def add(name, kind, buf, refv, rt=None, mem=run["arena"]):
        pending.append((name, kind, read_tensor(mem, buf, refv.shape, precision), refv.numpy(),
                        None if rt is None else rt.numpy()))

    add(graph.node(graph.output).report_name, "output", prog.logits, ref.logits, reft.logits)
    for name, (ab, value) in prog.activations.items():
        if value != graph.output:
            add(name, "activation", ab, ref.values[value], reft.values.get(value))
    for pname, gb in prog.param_grads.items():
        add(pname, "param_grad", gb, gref.param_grads[pname], greft.param_grads.get(pname))
    for name, (gb, value) in prog.observed_grads.items():
        add(name, "input_grad", gb, gref.value_grads[value], greft.value_grads.get(value))
    for pname in prog.param_grads:
        add(pname, "param_updated", prog.params[pname], gref.updated[pname], greft.updated.get(pname))
    for sname, sb in prog.state.items():
        add(sname, "state_updated", sb, ref.buffers[sname], reft.buffers.get(sname))
    if steps > 1:
        last, lastt = refs["plain"][-1], refs["torch"][-1]
        for pname in prog.param_grads:
            add(pname, "param_final", prog.params[pname], last.updated[pname], lastt.updated.get(pname),
                mem=run["arena_last"])
    return pending


def _judge_tensors(pending: list, prep: Prepared, cfg: TrainConfig, precision: str) -> list[dict]:
    """The comparison rows. A gradient at the noise floor (mathematically ~0, e.g. a conv bias before
    training-mode batch norm) makes the update that follows it noise too, and Adam turns noise into full-size
    steps (m/sqrt(v) ~ +-1). Such a parameter's first update is checked against the FP64 update computed from the
    device's own gradient: that is what the update kernel must do, while the gradient itself is judged against
    its floor."""
    floored = {n for n, k in at_floor(pending) if k == "param_grad"}
    if floored:
        dev_g = {n: d for n, k, d, _, _ in pending if k == "param_grad" and n in floored}
        upd = first_update(prep.model, cfg, dev_g)
        pending = [(n, k, d, upd[n].numpy().reshape(np.shape(r)), None)
                   if k == "param_updated" and n in floored else (n, k, d, r, t) for n, k, d, r, t in pending]
    rows = judge(pending, precision)
    for row in rows:
        if row["kind"] == "param_updated" and row["name"] in floored:
            row["reference"] = "fp64 update of the device's gradient"
    return rows


def _loss_rows(results: list, refs: list, refst: list, precision: str) -> list[dict]:
    """One row per step: the device's loss against FP64's, with PyTorch's own error at the run's precision."""
    step_rows = []
    for k, (res, rk, rt) in enumerate(zip(results, refs, refst)):
        rel = abs(res.loss - rk.loss) / max(abs(rk.loss), 1e-12)
        trel = abs(rt.loss - rk.loss) / max(abs(rk.loss), 1e-12)
        ok, rule = passes(rel, None, trel if np.isfinite(trel) else None, precision)
        step_rows.append({"step": k + 1, "device": res.loss, "reference": rk.loss, "rel_err": rel,
                          "torch": rt.loss, "torch_rel_err": trel, "passed": ok, "rule": rule,
                          **res.labelled()})
    return step_rows


def format_report(rep: dict) -> str:
    fp16 = rep["precision"] == "fp16"
    lines = [f"odl validate {rep['model']}: {rep['target']} ({rep['runner']}), {rep['precision']}, {rep['cores']} cores, "
             f"input {'x'.join(map(str, rep['input_shape']))}",
             f"loss device {rep['loss']['device']:.6f} reference {rep['loss']['reference']:.6f} "
             f"(rel err {rep['loss']['rel_err']:.2e}) {'ok' if rep['loss']['passed'] else 'FAIL'}"]
    tname = "torch16" if fp16 else "torch32"
    hdr = f"{'tensor':32s} {'kind':14s} {'shape':16s} {'rel_l2':>9s} {'max_abs':>9s} {'cosine':>9s} {tname:>9s}"
    fl = rep.get("relu_flips")
    if fl and fl["flipped"]:
        lines.append(f"ReLU / hard-swish decisions: {fl['flipped']} of {fl['decisions']} differ from FP32 "
                     f"({', '.join(f'{k}: {v}' for k, v in fl['by_layer'].items())}); gradients are compared with "
                     f"the FP32 reference taking the device's decisions")
    q = rep.get("qat")
    if q:
        lines.append(format_qat(q))
    if len(rep.get("steps", [])) > 1:
        lines.append("  ".join(f"step {r['step']}: {r['device']:.5f}/{r['reference']:.5f}"
                               + ("" if r["passed"] else " FAIL") for r in rep["steps"]))
    lines.append(hdr)
    for r in rep["tensors"]:
        s = (f"{r['name'][:32]:32s} {r['kind']:14s} {'x'.join(map(str, r['shape'])):16s} {r['rel_l2']:9.2e} "
             f"{r['max_abs']:9.2e} {r['cosine']:9.6f}")
        if r.get("floor"):
            s += "*"

        s += f" {r.get('torch_rel_l2', float('nan')):9.2e}"
        lines.append(s + ("" if r["passed"] else "  FAIL") + ("  (<= 2x torch)" if r.get("rule") == "torch" else ""))
    tol = rep["tensors"][0]["tol"] if rep["tensors"] else {}
    m = rep["macs"]
    lines.append(f"rel_l2 vs PyTorch FP64; {tname}: PyTorch's own {rep['precision']} vs FP64; pass: rel_l2 <= "
                 f"{tol.get('rel_l2')}" + (f" and cosine >= {tol['cosine']}" if tol.get("cosine") else "")
                 + f", or rel_l2 <= {TORCH_FACTOR:g} x {tname}"
                 + f"; MACs fwd {m['forward']} bwd {m['backward']}; arena {rep['memory']['arena_bytes']} B "
                 f"(validation build {rep['memory']['validation_arena_bytes']} B); "
                 f"wall {rep['wall_s']:.1f} s")
    lines += _fp8_lines(rep)
    dev = rep.get("device", {})
    if "device_instructions_all_harts" in dev:
        lines.append(f"device counters, step 1: {dev['device_instructions_all_harts']} instructions of all harts summed "
                     f"(not the step's time: `odl profile` gives the critical path)")
    lk = rep.get("link")
    if lk and (lk["retransmissions"] or lk["damaged_frames"] or lk["device_rejected"]):
        lines.append(f"link: {lk['requests']} requests, {lk['retransmissions']} retransmitted, "
                     f"{lk['damaged_frames']} damaged frames dropped, {lk['device_rejected']} rejected by the device")
    n_bad = sum(not r["passed"] for r in rep["tensors"]) + (not rep["loss"]["passed"]) + bool(q and q["mismatches"])
    if any(r.get("floor") for r in rep["tensors"]):
        lines.append("* reference at the noise floor (norm < 10% of the typical tensor of its kind): rel_l2 is "
                     "measured against that floor and cosine is not checked")
    lines.append("PASSED" if rep["passed"] else f"FAILED: {n_bad} of {len(rep['tensors']) + 1} compared values out of tolerance")
    return "\n".join(lines)


def _fp8_lines(rep: dict) -> list[str]:
    """--store fp8: the scales check (with a layer pattern: which values are stored) and the memory beside the
    compute-precision store."""
    f, m = rep.get("fp8"), rep["memory"]
    if not f:
        return []
    base, store = m["store_compute"], rep["config"]["store"]
    lines = [f"--store {store}: {f['activations']} activations in E4M3, {f['gradients']} gradients in E5M2; device "
             "scales " + ("equal the host's" if f["scales_equal"] else "DIFFER from the host's: " + "; ".join(
                 f["scale_mismatches"][:4]))]
    if ":" in store:
        lines.append(f"  in E4M3: {', '.join(f['activation_values']) or '-'}; in E5M2 (gradients of): "
                     f"{', '.join(f['gradient_values']) or '-'}")
    return lines + [
        f"kept for the backward {m['kept_for_backward_bytes']} B ({m['kept_fp8_bytes']} B FP8) vs "
        f"{base['kept_for_backward_bytes']} B with --store compute ({m['kept_ratio']:.3f}x; activation tensors "
        f"without the {m['kept_stats_bytes']} B of FP32 batch-norm statistics: {m['activation_ratio']:.3f}x); "
        f"arena {m['arena_bytes']} B vs {base['arena_bytes']} B ({m['arena_ratio']:.3f}x)"]


def format_qat(q: dict) -> str:
    """The report's line on the quantization decisions (--qat)."""
    text = f"QAT int8: {q['points']} activation points, {q['codes']} codes; "
    if not q["flipped"]:
        text += "every code equals FP64's"
    else:
        where = ("at a rounding boundary" if q["max_code_diff"] <= 1 else
                 "some more than one code apart: the input itself differs, see its row")
        text += (f"{q['flipped']} differ from FP64's ({where}; at most {q['max_code_diff']} apart): "
                 f"{', '.join(f'{k}: {v}' for k, v in q['by_point'].items())}; every tensor of step 1 is compared "
                 f"with references taking the device's codes")
    if q["unobservable"]:
        text += f"; not observable after the step (overwritten in place): {', '.join(q['unobservable'])}"
    if q["mismatches"]:
        text += (f"\nQAT FAIL: the device's fake quantization differs from torch's on the device's own input and "
                 f"qparams: {', '.join(f'{k}: {v}' for k, v in q['mismatches'].items())} elements")
    return text
