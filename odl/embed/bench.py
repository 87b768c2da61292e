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
            momentum: float = 0.9) -> dict:
    from odl.deploy.compile import compile_project
    from odl.ir.program import TrainConfig
    from odl.embed.library import EmbedOptions
    from odl.frontend.trace import default_input_shape, load_model
    proj = work / f"{model}-{precision}"
    b = batch or default_input_shape(load_model(model))[0]
    eo = EmbedOptions(batch=b, precision=precision, cores=cores, cfg=TrainConfig(lr=0.01, momentum=momentum))
    compile_project(model, proj, precision=precision, cores=cores, cfg=TrainConfig(lr=0.01, momentum=momentum),
                    force=True, log=lambda *a: None, embed=eo)
    mk = subprocess.run(["make", "-s", "-C", str(proj), "APP=embed/apps/bench.c"], capture_output=True, text=True)
    if mk.returncode:
        raise OdlError(f"{model} {precision}: build failed:\n{mk.stderr[-2000:]}")
    r = subprocess.run(["make", "-s", "-C", str(proj), "run", "APP=embed/apps/bench.c",
                        f"FLASH={work / 'flash.img'}"], capture_output=True, text=True, timeout=3600)
    (work / "flash.img").unlink(missing_ok=True)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("{")), None)
    if r.returncode or line is None:
        raise OdlError(f"{model} {precision}: run failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    rep = json.loads(line)
    rep.update(model=model, precision=precision, batch=b, cores=cores, momentum=momentum,
               predict_share=round(rep["predict_bytes"] / rep["train_step_bytes"], 3))
    return rep


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
    ap.add_argument("--json", default=None)
    ap.add_argument("--out", default=None, metavar="FILE.md")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="odl-embed-bench-") as d:
        for m in a.models.split(","):
            for p in a.precisions.split(","):
                try:
                    rows.append(measure(m, p, Path(d), momentum=a.momentum))
                except OdlError as e:
                    print(f"{m} {p}: {e}", file=sys.stderr)
                    continue
                print(json.dumps(rows[-1]), file=sys.stderr)
    txt = table(rows)
    print(txt)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    if a.out:
        Path(a.out).write_text("# odl.h figures (python3 -m odl.embed.bench)\n\n" + txt + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
