"""Kernel selection by measurement (`odl tune`).

The lowering marks every place where equivalent implementations exist (Lowering.choose: e.g. which matmul
variant or operand orientation computes a convolution's weight gradient). `odl tune MODEL` lowers the model in
tuning mode — every variant of every choice emitted, tagged — builds it with the exact per-core profiler, runs one
step on the emulator and records, per choice and variant, the critical-path cycles plus fork/join cost. The
results are cached per target in $ODL_CACHE_DIR (default ~/.cache/odl)/costs-<target>.json, keyed by precision,
core count, the choice and its shape signature, so they serve every model with the same layer shapes. The target
also ships a table measured the same way for the built-in models (targets/<target>/tuned_costs.json, made by
`ODL_CACHE_DIR=DIR odl tune ...` and copied there); the user's cache overrides it.
`odl validate/profile/compile` load the cache and pick the measured-fastest variant; choices never measured fall
back to the kernel registry's cost hints (the profile report says which basis each choice used).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path



def cache_path(target_name: str) -> Path:
    root = Path(os.environ.get("ODL_CACHE_DIR") or Path.home() / ".cache" / "odl")
    return root / f"costs-{target_name}.json"


def _prefix(precision: str, cores: int) -> str:
    return f"{precision}/{cores}/"


def shipped_path(target_name: str) -> Path:
    """Costs measured by the odl developers for the built-in models, shipped with the target."""
    from .resources import resource_dir
    return resource_dir("targets") / target_name / "tuned_costs.json"


def load_costs(target_name: str, precision: str, cores: int) -> dict:
    """{choice key: {variant: cycles}} measured on this target for this precision and core count: the table
    shipped with the target, overridden by the user's own `odl tune` cache."""
    pre = _prefix(precision, cores)
    out = {}
    for p in (shipped_path(target_name), cache_path(target_name)):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        out.update({k[len(pre):]: v for k, v in data.get("costs", {}).items() if k.startswith(pre)})
    return out


def save_costs(target_name: str, precision: str, cores: int, costs: dict) -> Path:
    p = cache_path(target_name)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        data = {}
    allc = data.setdefault("costs", {})
    for k, v in costs.items():
        allc[_prefix(precision, cores) + k] = v
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(p)
    return p


def measured_costs(rep: dict) -> dict:
    """From a tuning-mode profile report: {choice key: {variant: cycles}} (critical path + fork/join)."""
    out: dict[str, dict[str, float]] = {}
    sync = rep["sync_per_call"]
    for c in rep["per_call"]:
        tag = c.get("variant")
        if not tag:
            continue
        key, name = tag.rsplit("=", 1)
        cyc = max(c["cores"]) + sync * max(1, c["loop"])
        out.setdefault(key, {}).setdefault(name, 0)
        out[key][name] += cyc
    return out


def tune(model_spec: str, target_name: str = "rv32-cluster", precision: str = "fp16", cores: int = 8,
         input_shape: str | None = None, seed: int = 0, cfg=None, log=print) -> dict:
    from .profile import profile_prepared, setup
    from .progress import Phases, bar
    phase = Phases("tune")
    phase("trace", model_spec)
    target, prep, cfg = setup(model_spec, target_name, precision, input_shape, seed, cfg)
    with bar(total=3, desc="tune") as pb:
        def step(name, detail=""):
            pb.set_postfix_str(name)
            pb.update(1)
        rep = profile_prepared(prep, target, precision, cores, cfg, tuning=True, phase=step)
    phase("measured", "every variant in one profiled run")
    costs = measured_costs(rep)
    path = save_costs(target.name, precision, cores, costs)
    if log:
        log(f"odl tune {prep.name}: {target.name}, {precision}, {cores} cores: {len(costs)} choices measured "
            f"-> {path}")
        for key, v in sorted(costs.items()):
            best = min(v, key=v.get)
            log(f"  {key:70s} " + "  ".join(f"{n}={int(c)}{'*' if n == best else ''}" for n, c in sorted(v.items())))
    return {"model": prep.name, "target": target.name, "precision": precision, "cores": cores, "costs": costs,
            "cache": str(path)}
