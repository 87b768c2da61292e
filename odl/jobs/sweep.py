"""`odl sweep`: a grid of odl jobs (validate, profile or train), each in its own emulator, on a process pool or on Ray.

A job is one command line of odl run as a child process with `--json`, so a job is the same on a laptop and on a
Ray worker: the worker's own toolchain and emulator do the work (a worker lacking them says so in its error). Rows
are written as jobs finish (results.json, results.csv, atomically), so a killed sweep loses nothing finished and
`--resume` runs only what is missing. A failed job is retried once, then recorded with its last error line. Every
write marks the rows on the Pareto front of the finished ones (`pareto`, odl/jobs/pareto.py).
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from odl.jobs import pareto
from odl.jobs.engines import run_tasks
from odl.common.errors import OdlError, ToolError
from odl.common.progress import bar as progress_bar, note
from odl.common.fsutil import atomic_path, write_text_atomic

COMMANDS = ("validate", "profile", "train")
FIELDS = ("job", "command", "options", "status", "exit_code", "wall_s", "attempts", "passed", "worst_tensor",
          "worst_rel_l2", "grad_rel_l2", "cycles", "mac_per_cycle", "memory_bytes", "val_acc", "pareto", "error")


def load_spec(path: str, options_of) -> dict:
    """options_of(command) -> the long options (without dashes) of that odl command: the CLI, which owns the
    parser, passes it (odl.cli.main.command_options), so the sweep needs nothing from the CLI layer."""
    p = Path(path)
    if not p.is_file():
        raise OdlError(f"sweep spec '{path}' does not exist")
    try:
        spec = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise OdlError(f"sweep spec '{path}' is not valid TOML: {e}") from None
    cmd = spec.get("command")
    if cmd not in COMMANDS:
        raise OdlError(f"sweep spec '{path}': command must be one of {', '.join(COMMANDS)}, not {cmd!r}")
    unknown = set(spec) - {"command", "grid", "options"}
    if unknown:
        raise OdlError(f"sweep spec '{path}': unknown key(s) {', '.join(sorted(unknown))} "
                       f"(expected command, [grid], [options])")
    grid, opts = spec.get("grid", {}), spec.get("options", {})
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise OdlError(f"sweep spec '{path}': grid key '{k}' must be a non-empty list of values")
    if "model" not in grid and "model" not in opts:
        raise OdlError(f"sweep spec '{path}': no model (give model in [grid] or [options])")
    both = set(grid) & set(opts)
    if both:
        raise OdlError(f"sweep spec '{path}': {', '.join(sorted(both))} in both [grid] and [options]")
    _check_options(cmd, list(grid) + list(opts), path, options_of(cmd))
    return {"command": cmd, "grid": grid, "options": opts}


def _check_options(cmd: str, keys: list[str], path: str, known: set[str]):
    """Every key must be a long option of the command (as on its command line) or `model`."""
    for k in keys:
        if k != "model" and k not in known:
            raise OdlError(f"sweep spec '{path}': '{k}' is not an option of odl {cmd} "
                           f"(options: {', '.join(sorted(known - {'help', 'json'}))})")
        if k in ("json", "png", "keep", "checkpoint", "resume"):
            raise OdlError(f"sweep spec '{path}': '{k}' is set by the sweep for each job")


def jobs(spec: dict) -> list[dict]:
    """One job per combination of the grid, in a stable order, with an id that depends on its options only."""
    keys = sorted(spec["grid"])
    out = []
    for values in itertools.product(*(spec["grid"][k] for k in keys)):
        opts = dict(spec["options"])
        opts.update(zip(keys, values))
        opts["model"] = _abs_model(str(opts["model"]))
        text = json.dumps({"command": spec["command"], **opts}, sort_keys=True)
        out.append({"job": hashlib.sha1(text.encode()).hexdigest()[:12], "command": spec["command"],
                    "options": opts})
    return out


def _abs_model(model: str) -> str:
    """A model file given relative to where the sweep starts, made absolute (jobs run in their own directories; on
    a Ray cluster the same path must exist on every worker)."""
    if ":" in model:
        path, name = model.rsplit(":", 1)
        if Path(path).is_file():
            return f"{Path(path).resolve()}:{name}"
    return model


def argv(job: dict, json_path: str) -> list[str]:
    opts = dict(job["options"])
    args = [sys.executable, "-m", "odl", job["command"], str(opts.pop("model"))]
    for k, v in sorted(opts.items()):
        if isinstance(v, bool):
            if v:
                args.append(f"--{k}")
            continue
        args += [f"--{k}", str(v)]
    return args + ["--json", json_path]


def headline(command: str, rep: dict) -> dict:
    """The figures a sweep compares, from a command's JSON report."""
    row: dict = {}
    if command == "validate":
        row["passed"] = bool(rep.get("passed"))
        tensors = rep.get("tensors") or []
        if tensors:
            worst = max(tensors, key=lambda t: t["rel_l2"] / max(t["tol"]["rel_l2"], 1e-30))
            row["worst_tensor"] = f"{worst['name']} {worst['kind']}"
            row["worst_rel_l2"] = worst["rel_l2"]
            row["grad_rel_l2"] = grad_rel_l2(tensors)
        row["memory_bytes"] = (rep.get("memory") or {}).get("arena_bytes")
    elif command == "profile":
        row["cycles"] = rep.get("cycles")
        row["mac_per_cycle"] = rep.get("mac_per_cycle")
        row["memory_bytes"] = rep.get("l2_bytes")        # the profiled (deployable) step's L2 arena
    else:
        row["val_acc"] = (rep.get("final") or {}).get("val_acc")
        row["cycles"] = rep.get("device_cycles_per_step")
        mem = rep.get("memory") or {}
        row["memory_bytes"] = mem.get("arena_bytes", rep.get("arena_bytes"))
    return row


def grad_rel_l2(tensors: list[dict]) -> float | None:
    """The median rel-L2 (against FP64) of the parameter gradients whose reference is not at the noise floor: how
    far the device's step moves the weights' gradients (the worst tensor is often a gradient that is ~0 by
    construction, e.g. a conv bias before a batch norm, whose rel-L2 is noise)."""
    v = [t["rel_l2"] for t in tensors if t.get("kind") == "param_grad" and not t.get("floor")]
    return statistics.median(v) if v else None


def _missing_tools(target_name: str) -> list[str]:
    """What this worker lacks to run a job: the target's emulator, and the compiler odl.target.toolchain would use."""
    from odl.target.description import load_target
    from odl.target.toolchain import find_cc
    miss = []
    try:
        qemu = load_target(target_name).qemu.binary
    except OdlError:
        qemu = None   # an unknown target is the job's own bad input (exit 2), reported by the job
    if qemu and shutil.which(qemu) is None:
        miss.append(qemu)
    try:
        find_cc()
    except ToolError as e:
        miss.append(str(e).splitlines()[0])
    return miss


def run_job(job: dict, timeout: float = 3600.0) -> dict:
    """Run one job (twice at most) as a child odl process; never raises. The same function runs on a pool worker
    and on a Ray worker."""
    row = {"job": job["job"], "command": job["command"], "options": job["options"], "attempts": 0}
    miss = _missing_tools(str(job["options"].get("target", "rv32-cluster")))
    if miss:
        return {**row, "status": "failed", "exit_code": -1, "wall_s": 0.0,
                "error": f"worker {socket.gethostname()} lacks {', '.join(miss)}"}
    last = ""
    for attempt in (1, 2):
        row["attempts"] = attempt
        with tempfile.TemporaryDirectory(prefix="odl_sweep_") as tmp:
            jpath = str(Path(tmp) / "report.json")
            t0 = time.perf_counter()
            try:
                p = subprocess.run(argv(job, jpath), capture_output=True, text=True, timeout=timeout, cwd=tmp)
                code, err = p.returncode, p.stderr
            except subprocess.TimeoutExpired:
                code, err = -9, f"timed out after {timeout:.0f} s"
            wall = round(time.perf_counter() - t0, 3)
            rep = None
            if Path(jpath).is_file():
                try:
                    rep = json.loads(Path(jpath).read_text())
                except json.JSONDecodeError:
                    rep = None
        lines = [ln for ln in (err or "").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {code}"
        # exit 1 (validate: out of tolerance) is a result, not a failure of the job
        if rep is not None and code in (0, 1):
            return {**row, "status": "ok", "exit_code": code, "wall_s": wall, "error": "",
                    **headline(job["command"], rep)}
        if code == 2:   # bad input: retrying cannot help
            break
    return {**row, "status": "failed", "exit_code": code, "wall_s": wall, "error": last}


# ---- results ------------------------------------------------------------------------------------------------
def load_results(out: Path) -> dict[str, dict]:
    p = out / "results.json"
    if not p.is_file():
        return {}
    try:
        return {r["job"]: r for r in json.loads(p.read_text())["rows"]}
    except (json.JSONDecodeError, KeyError, TypeError):
        raise OdlError(f"{p} is not a results file of odl sweep; remove it or choose another --out") from None


def write_results(out: Path, spec: dict, rows: dict[str, dict], order: list[str]) -> list[tuple[str, str]]:
    """results.json and results.csv of the rows so far, each row's `pareto` set among them; returns the
    objectives of the front."""
    ordered = [rows[j] for j in order if j in rows]
    objs, flags = pareto.front(ordered)
    for r, f in zip(ordered, flags):
        r["pareto"] = f
    write_text_atomic(out / "results.json", json.dumps(
        {"spec": spec, "pareto_objectives": [f"{d} {k}" for k, d in objs], "rows": ordered}, indent=2))
    opt_keys = sorted({k for r in ordered for k in r["options"]})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["job", *opt_keys, *[f for f in FIELDS if f not in ("job", "options")]])
    for r in ordered:
        w.writerow([r["job"], *[r["options"].get(k, "") for k in opt_keys],
                    *["" if r.get(f) is None else r.get(f) for f in FIELDS if f not in ("job", "options")]])
    write_text_atomic(out / "results.csv", buf.getvalue())
    return objs


def pareto_png(out: Path, rows: list[dict]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = [r for r in rows if r.get("status") == "ok" and r.get("memory_bytes")]
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in pts:
        y = r.get("cycles") or r.get("wall_s")
        if r.get("val_acc") is not None:
            color = plt.cm.viridis(float(r["val_acc"]))
        else:
            color = "tab:green" if r.get("passed", True) else "tab:red"
        ax.scatter(r["memory_bytes"] / 1024, y, color=color, s=80 if r.get("pareto") else 40,
                   edgecolors="black" if r.get("pareto") else "none")
        ax.annotate(" ".join(str(v) for k, v in sorted(r["options"].items()) if k in ("model", "precision",
                                                                                         "cores", "train", "store",
                                                                                         "qat")),
                    (r["memory_bytes"] / 1024, y), fontsize=7)
    ax.set_xlabel("arena (KiB)")
    ax.set_ylabel("device cycles per step" if any(r.get("cycles") for r in pts) else "wall seconds")
    ax.set_title("odl sweep: cost vs memory (green pass / red fail, or colour = val accuracy; ringed: Pareto front)")
    fig.tight_layout()
    with atomic_path(out / "pareto.png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def sweep(spec_path: str, options_of, engine: str = "local", address: str | None = None, n_jobs: int | None = None,
          out_dir: str = "sweep-out", resume: bool = False, log=print) -> list[dict]:
    spec = load_spec(spec_path, options_of)
    all_jobs = jobs(spec)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OdlError(f"--out '{out_dir}' exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise OdlError(f"--out '{out_dir}' is not writable")
    rows = load_results(out)
    if rows and not resume:
        raise OdlError(f"'{out_dir}' already holds results of a sweep: give --resume to continue it, "
                       f"or another --out")
    n = n_jobs if n_jobs is not None else (os.cpu_count() or 1)
    order = [j["job"] for j in all_jobs]
    todo = [j for j in all_jobs if j["job"] not in rows]
    log(f"odl sweep: {len(all_jobs)} jobs ({len(all_jobs) - len(todo)} already done), engine {engine}, "
        f"{n} at a time, results in {out}/")
    bar = progress_bar(total=len(todo), desc="sweep", unit="job", enabled=bool(todo))

    def done(row):
        rows[row["job"]] = row
        write_results(out, spec, rows, order)
        bar.update(1)
        bar.set_postfix_str(f"{row['status']} {row['wall_s']:.1f}s")
        if row["status"] != "ok":
            note(f"job {row['job']} {row['options']} failed: {row['error']}")

    try:
        run_tasks(run_job, todo, engine, address, n, done)
    finally:
        bar.close()
    final = [rows[j] for j in order]
    objs = write_results(out, spec, rows, order)
    for line in pareto.front_lines(final, [r["pareto"] for r in final], objs):
        log(line)
    try:
        pareto_png(out, final)
    except ImportError:
        log("(no matplotlib: pareto.png not written)")
    ok = sum(r["status"] == "ok" for r in final)
    log(f"{ok} of {len(final)} jobs ok; {out / 'results.csv'}, {out / 'results.json'}, {out / 'pareto.png'}")
    return final
