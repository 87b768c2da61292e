"""Figures of the embedded library (python3 -m odl.embed.bench): for each built-in model with class labels, the
arena bytes and cycles of odl_predict beside odl_train_step, the state blob's size, and the flash operations and
cycles of one odl_store_save, measured by targets/common/embed/apps/bench.c on QEMU. A benchmark, not a test: it
prints a table (and --json / --out)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from odl.common.errors import OdlError

MODELS = ["tinycnn", "dscnn", "resnet8", "mobilenetv1_vww"]   # ad_autoencoder: mse targets, not class labels


def measure(model: str, precision: str, work: Path, batch: int | None = None, cores: int = 8,
            momentum: float = 0.9, timed: bool = False) -> dict:
    from odl.deploy.compile import compile_project
    from odl.ir.program import TrainConfig
    from odl.embed.library import EmbedOptions
    from odl.frontend.trace import default_input_shape, load_model
    proj = work / f"{Path(model).name.replace(':', '-')}-{precision}"   # a model given as a path: its name
    b = batch or default_input_shape(load_model(model))[0]
    eo = EmbedOptions(batch=b, precision=precision, cores=cores, cfg=TrainConfig(lr=0.01, momentum=momentum))
    compile_project(model, proj, precision=precision, cores=cores, cfg=TrainConfig(lr=0.01, momentum=momentum),
                    force=True, log=lambda *a: None, embed=eo)
    mk = subprocess.run(["make", "-s", "-C", str(proj), "APP=embed/apps/bench.c"], capture_output=True, text=True)
    if mk.returncode:
        raise OdlError(f"{model} {precision}: build failed:\n{mk.stderr[-2000:]}")
    try:
        rep = _run_json(proj, ["APP=embed/apps/bench.c", f"FLASH={work / 'flash.img'}"], f"{model} {precision}")
    finally:
        (work / "flash.img").unlink(missing_ok=True)
    rep.update(model=model, precision=precision, batch=b, cores=cores, momentum=momentum,
               predict_share=round(rep["predict_bytes"] / rep["train_step_bytes"], 3))
    if timed:
        rep["predict_timed_cycles"] = _timed(proj, "embed/apps/bench.c", cores, work)
    return rep


def _run_json(proj: Path, make_args: list[str], what: str) -> dict:
    """`make run` of a project's bench app on QEMU: the JSON line it prints."""
    r = subprocess.run(["make", "-s", "-C", str(proj), "run", *make_args], capture_output=True, text=True,
                       timeout=3600)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("{")), None)
    if r.returncode or line is None:
        raise OdlError(f"{what}: run failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return json.loads(line)


def _timed(proj: Path, app: str, cores: int, work: Path) -> int:
    """The timed model's cycles of the app's marked odl_predict: the app rebuilt with -DODL_TIMED (every source:
    its kernel calls marked too) and run under the timing plugin, a fresh erased flash beside it."""
    from odl.run.timing_plugin import run_app_timed
    from odl.target.description import load_target
    mk = subprocess.run(["make", "-B", "-s", "-C", str(proj), f"APP={app}", "APP_CFLAGS=-DODL_TIMED"],
                        capture_output=True, text=True)
    if mk.returncode:
        raise OdlError(f"{proj.name}: the timed build failed:\n{mk.stderr[-2000:]}")
    flash = work / "flash-timed.img"
    flash.write_bytes(b"\xff" * 33554432)
    try:
        rep = run_app_timed(load_target("rv32-cluster"), proj / f"{Path(app).stem}.elf", cores, work / "timed",
                            extra=["-drive", f"if=pflash,unit=1,format=raw,file={flash}"])
    finally:
        flash.unlink(missing_ok=True)
    return int(rep["cycles"])


def measure_int8(model: str, init: str, work: Path, cores: int = 8, timed: bool = False) -> dict:
    """odl compile --deploy int8 of a QAT checkpoint: the bytes odl.h states and the cycles of one odl_predict
    (targets/common/int8/apps/bench.c, the same measurement as bench.c's predict)."""
    from odl.deploy.int8.project import compile_int8
    proj = work / f"{Path(model).name.replace(':', '-')}-int8"
    info = compile_int8(model, proj, init, cores=cores, force=True, log=lambda *a: None)
    rep = _run_json(proj, [], f"{model} int8")
    rep.update(model=model, precision="int8", cores=cores, notes=info["notes"])
    if timed:
        rep["predict_timed_cycles"] = _timed(proj, "apps/bench.c", cores, work)
    return rep


def predict_table(rows: list[dict]) -> str:
    """Markdown: what one odl_predict needs and costs. FP16 / FP32 (the training library's odl_predict, measure()):
    weights = the resident state (parameters, batch-norm statistics, control block; with --momentum 0 no optimizer
    state), working = its L2 buffers beyond the state, L1 = its tiles. int8: the constant weights (codes, int32
    biases, FP32 multipliers); the arena and the buffer each layer's constants are staged into, in L1 when they fit
    (odl/deploy/int8/plan.py), else the arena in L2."""
    timed = any("predict_timed_cycles" in r for r in rows)
    out = ["| model | precision | weight bytes | working bytes (L2) | L1 bytes | total bytes | predict cycles |"
           + (" predict timed cycles |" if timed else ""),
           "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if timed else "")]
    order = {"int8": 0, "fp16": 1, "fp32": 2}
    for r in sorted(rows, key=lambda r: (r["model"], order.get(r["precision"], 3))):
        if r["precision"] == "int8":
            w, l1 = r["weight_bytes"], r.get("l1_bytes", 0)
            wk = 0 if l1 else r["arena_bytes"]
        else:
            w, wk, l1 = r["state_bytes"], r["predict_bytes"] - r["state_bytes"], r["predict_l1_bytes"]
        out.append(f"| {Path(r['model']).name} | {r['precision']} | {w:,} | {wk:,} | {l1:,} | {w + wk + l1:,} | "
                   f"{r['predict_cycles']:,} |" + (f" {r.get('predict_timed_cycles', 0):,} |" if timed else ""))
    return "\n".join(out)


def table(rows: list[dict]) -> str:
    """Markdown. Bytes are the arena each entry point uses: the resident training state (parameters, batch-norm
    statistics, optimizer state, masters, control block) plus its own working buffers in L2; the working-buffer
    columns leave the state out (what inference saves: no saved activations, no gradients); L1 holds the tiles."""
    out = ["| model | precision | batch | odl_predict bytes | odl_train_step bytes | predict/train | "
           "working bytes predict / train | L1 bytes predict / train | predict cycles | train_step cycles | "
           "state blob bytes | save flash ops | save cycles |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        wp, wt = r["predict_bytes"] - r["state_bytes"], r["train_step_bytes"] - r["state_bytes"]
        out.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['predict_bytes']:,} | "
                   f"{r['train_step_bytes']:,} | {r['predict_share']:.0%} | {wp:,} / {wt:,} ({wp / wt:.0%}) | "
                   f"{r['predict_l1_bytes']:,} / {r['train_step_l1_bytes']:,} | "
                   f"{r['predict_cycles']:,} | {r['train_step_cycles']:,} | {r['blob_bytes']:,} | "
                   f"{r['save_flash_ops']:,} | {r['save_cycles']:,} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m odl.embed.bench", description=__doc__)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default="fp16,fp32")
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0: no momentum buffers in the state)")
    ap.add_argument("--int8", action="append", default=[], metavar="MODEL=CKPT.pt",
                    help="also odl compile --deploy int8 of this QAT checkpoint; prints odl_predict beside FP16 / "
                         "FP32 (repeatable)")
    ap.add_argument("--timed", action="store_true",
                    help="also odl_predict under the timing model (the app rebuilt with -DODL_TIMED): its cycles")
    ap.add_argument("--json", default=None)
    ap.add_argument("--out", default=None, metavar="FILE.md")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="odl-embed-bench-") as d:
        for m in a.models.split(","):
            for p in a.precisions.split(","):
                try:
                    rows.append(measure(m, p, Path(d), momentum=a.momentum, timed=a.timed))
                except OdlError as e:
                    print(f"{m} {p}: {e}", file=sys.stderr)
                    continue
                print(json.dumps(rows[-1]), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="odl-embed-bench-") as d:
        for spec in a.int8:
            model, _, ck = spec.rpartition("=")
            try:
                rows.append(measure_int8(model, ck, Path(d), timed=a.timed))
            except OdlError as e:
                print(f"{model} int8: {e}", file=sys.stderr)
                continue
            print(json.dumps(rows[-1]), file=sys.stderr)
    fp = [r for r in rows if r["precision"] != "int8"]
    txt = table(fp) if fp else ""
    if a.int8:
        txt += ("\n\n" if txt else "") + predict_table(rows)
    print(txt)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    if a.out:
        Path(a.out).write_text("# odl.h figures (python3 -m odl.embed.bench)\n\n" + txt + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
