"""Measured kernel-variant costs per target (written by `odl tune`, read by the lowering of every command).

Cached per target in $ODL_CACHE_DIR (default ~/.cache/odl)/costs-<target>.json, keyed by precision, core count, the
choice and its shape signature; the target ships a table for the built-in models (targets/<target>/tuned_costs.json)
which the user's cache overrides. A module of its own so that validate, profile, compile and train read costs
without importing the tuner (which runs the profiler).
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
    from odl.common.resources import resource_dir
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
