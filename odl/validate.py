"""`odl validate`: one training step on the device (emulated), compared tensor by tensor with PyTorch."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .compare import TOLERANCE, metrics, within
from .errors import OdlError
from .graph import Graph
from .frontend import default_input_shape, load_model, parse_shape, trace
from .lower import Program, TrainConfig, lower
from .planner import plan
from .reference import reference_step
from .target import load_target

NP_DTYPE = {"odl16": np.float16, "odl32": np.float32, "f32": np.float32, "i32": np.int32}


@dataclass
class Prepared:
    """Everything the device and the reference share: model (with the exact initial weights), input, labels."""
    name: str
    model: torch.nn.Module
    graph: Graph
    x: torch.Tensor
    labels: torch.Tensor


def prepare(model_spec: str, input_shape: str | None, seed: int, precision: str) -> Prepared:
    torch.manual_seed(seed)
    model = load_model(model_spec)
    shape = parse_shape(input_shape) if input_shape else default_input_shape(model)
    if shape is None:
        raise OdlError(f"model '{model_spec}' has no default input shape: give --input-shape NxCxHxW")
    graph = trace(model, shape)  # refuses unsupported models and shapes before anything runs
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(*shape, generator=gen)
    classes = graph.shapes[graph.output][-1]
    labels = torch.randint(0, int(classes), (shape[0],), generator=gen)
    if precision == "fp16":
        # device and reference start from the same values: round to what FP16 can hold
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
        x = x.half().float()
    name = model_spec if ":" not in model_spec else model_spec.rsplit(":", 1)[1]
    return Prepared(name, model, graph, x, labels)


def np_dtype(buf, precision) -> type:
    if buf.dtype == "odl":
        return np.float16 if precision == "fp16" else np.float32
    return NP_DTYPE[buf.dtype]


def preload_blob(prog: Program, prep: Prepared) -> bytes:
    state = {k: v.detach() for k, v in prep.model.named_parameters()}
    end = max(b.offset + b.nbytes(prog.elem_bytes) for b in prog.preload)
    blob = bytearray(end)
    for b in prog.preload:
        if b is prog.input:
            arr = prep.x.numpy()
        elif b is prog.labels:
            arr = prep.labels.numpy()
        else:
            arr = state[b.name].numpy()
        data = np.ascontiguousarray(arr, dtype=np_dtype(b, prog.precision)).tobytes()
        blob[b.offset:b.offset + len(data)] = data
    return bytes(blob)


def read_tensor(arena: bytes, buf, shape, precision) -> np.ndarray:
    a = np.frombuffer(arena, dtype=np_dtype(buf, precision), count=buf.nelem, offset=buf.offset)
    return a.astype(np.float32).reshape(shape)


def build(prog: Program, model_name: str, target, cores: int, out_dir: Path) -> Path:
    from .codegen import render
    from .toolchain import build_firmware
    srcs = render(prog, model_name, cores, out_dir / "gen")
    return build_firmware(target, prog.precision, cores, srcs, [out_dir / "gen"], out_dir / "build")


def run_qemu(target, elf: Path, prog: Program, cores: int, blob: bytes, workdir: Path):
    from .runners.qemu import QemuRunner
    with QemuRunner(target, elf, cores, workdir, preload=[(0, blob)]) as r:
        hello = r.hello
        bits = 16 if prog.precision == "fp16" else 32
        if hello.precision_bits != bits or hello.num_cores != cores or hello.arena_bytes != prog.arena_bytes:
            raise OdlError(f"device says {hello}, expected {bits}-bit, {cores} cores, {prog.arena_bytes}-byte arena")
        res = r.link.step(1)
        arena = r.read_arena(0, prog.arena_bytes)
        r.exit(0)
    return res, arena


def validate(model_spec: str, target_name: str = "rv32-cluster", precision: str = "fp32", cores: int = 8,
             input_shape: str | None = None, seed: int = 0, lr: float = 0.01, json_path: str | None = None,
             keep_dir: str | None = None, log=print) -> dict:
    t0 = time.perf_counter()
    target = load_target(target_name)
    if not 1 <= cores <= target.harts:
        raise OdlError(f"--cores {cores}: target {target.name} has {target.harts} harts")
    if precision not in TOLERANCE:
        raise OdlError(f"unknown precision '{precision}' (expected fp32 or fp16)")
    prep = prepare(model_spec, input_shape, seed, precision)
    graph = prep.graph
    prog = lower(graph, precision, TrainConfig(lr=lr))
    mem = plan(prog, target.memory_budget_bytes)

    work = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="odl_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t_build = time.perf_counter()
        elf = build(prog, prep.name, target, cores, work)
        t_run = time.perf_counter()
        res, arena = run_qemu(target, elf, prog, cores, preload_blob(prog, prep), work / "run")
        t_end = time.perf_counter()
    finally:
        if not keep_dir:
            shutil.rmtree(work, ignore_errors=True)

    ref = reference_step(prep.model, prep.x, prep.labels, lr)
    ref16 = reference_step(prep.model, prep.x, prep.labels, lr, torch.float16) if precision == "fp16" else None

    rows = []

    def add(name, kind, dev, refv, r16=None):
        m = metrics(dev, refv)
        row = {"name": name, "kind": kind, "shape": list(refv.shape), **m,
               "tol": TOLERANCE[precision], "passed": within(m, precision)}
        if r16 is not None:
            row["torch_fp16_rel_l2"] = metrics(r16, refv)["rel_l2"]
        rows.append(row)

    out_name = graph.node(graph.output).report_name
    add(out_name, "output", read_tensor(arena, prog.logits, ref.logits.shape, precision), ref.logits.numpy(),
        ref16.logits.numpy() if ref16 else None)
    for pname, gb in prog.param_grads.items():
        add(pname, "param_grad", read_tensor(arena, gb, ref.param_grads[pname].shape, precision),
            ref.param_grads[pname].numpy(), ref16.param_grads[pname].numpy() if ref16 else None)
    for name, (gb, value) in prog.observed_grads.items():
        r = ref.value_grads[value]
        add(name, "input_grad", read_tensor(arena, gb, r.shape, precision), r.numpy(),
            ref16.value_grads[value].numpy() if ref16 else None)
    for pname, pb in prog.params.items():
        if pname in prog.param_grads:
            add(pname, "param_updated", read_tensor(arena, pb, ref.updated[pname].shape, precision),
                ref.updated[pname].numpy(), ref16.updated[pname].numpy() if ref16 else None)

    loss_dev = float(np.frombuffer(arena, np.float32, 1, prog.loss.offset)[0])
    loss_rel = abs(loss_dev - ref.loss) / max(abs(ref.loss), 1e-12)
    loss_ok = loss_rel <= TOLERANCE[precision]["rel_l2"] and abs(res.loss - loss_dev) <= 1e-6 * max(1, abs(loss_dev))
    passed = loss_ok and all(r["passed"] for r in rows)
    report = {
        "model": prep.name, "target": target.name, "runner": "qemu", "precision": precision, "cores": cores,
        "input_shape": list(prep.x.shape), "seed": seed, "lr": lr, "passed": passed,
        "loss": {"device": loss_dev, "reference": ref.loss, "rel_err": loss_rel,
                 "torch_fp16": ref16.loss if ref16 else None, "passed": loss_ok},
        "tensors": rows,
        "macs": {"forward": prog.macs_forward, "backward": prog.macs_backward,
                 "total": prog.macs_forward + prog.macs_backward},
        "memory": {"arena_bytes": mem.arena_bytes, "budget_bytes": target.memory_budget_bytes,
                   "naive_bytes": mem.naive_bytes},
        "device": {"cycles": res.cycles, "instret": res.instret},
        "timing_s": {"build": round(t_run - t_build, 3), "run": round(t_end - t_run, 3)},
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    log(format_report(report))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    return report


def format_report(rep: dict) -> str:
    fp16 = rep["precision"] == "fp16"
    lines = [f"odl validate {rep['model']}: {rep['target']} ({rep['runner']}), {rep['precision']}, {rep['cores']} cores, "
             f"input {'x'.join(map(str, rep['input_shape']))}",
             f"loss device {rep['loss']['device']:.6f} reference {rep['loss']['reference']:.6f} "
             f"(rel err {rep['loss']['rel_err']:.2e}) {'ok' if rep['loss']['passed'] else 'FAIL'}"]
    hdr = f"{'tensor':32s} {'kind':14s} {'shape':16s} {'rel_l2':>9s} {'max_abs':>9s} {'cosine':>9s}"
    if fp16:
        hdr += f" {'torch16':>9s}"
    lines.append(hdr)
    for r in rep["tensors"]:
        s = (f"{r['name'][:32]:32s} {r['kind']:14s} {'x'.join(map(str, r['shape'])):16s} {r['rel_l2']:9.2e} "
             f"{r['max_abs']:9.2e} {r['cosine']:9.6f}")
        if fp16:
            s += f" {r.get('torch_fp16_rel_l2', float('nan')):9.2e}"
        lines.append(s + ("" if r["passed"] else "  FAIL"))
    tol = rep["tensors"][0]["tol"] if rep["tensors"] else {}
    m = rep["macs"]
    lines.append(f"tolerance rel_l2 <= {tol.get('rel_l2')}" + (f", cosine >= {tol['cosine']}" if tol.get("cosine") else "")
                 + f"; MACs fwd {m['forward']} bwd {m['backward']}; arena {rep['memory']['arena_bytes']} B; "
                 f"wall {rep['wall_s']:.1f} s")
    n_bad = sum(not r["passed"] for r in rep["tensors"]) + (not rep["loss"]["passed"])
    lines.append("PASSED" if rep["passed"] else f"FAILED: {n_bad} of {len(rep['tensors']) + 1} compared values out of tolerance")
    return "\n".join(lines)
