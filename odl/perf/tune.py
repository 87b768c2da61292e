"""Kernel selection by measurement (`odl tune`).

The lowering marks every place where equivalent implementations exist (Lowering.choose: e.g. which matmul
variant or operand orientation computes a convolution's weight gradient). `odl tune MODEL` lowers the model in
tuning mode — every variant of every choice emitted, tagged — builds it with the exact per-core profiler, runs one
step on the emulator and records, per choice and variant, the critical-path cycles plus fork/join cost plus the
DMA its tiles expose (memory hierarchy: a variant whose tiles wait on their transfers costs that too). The
results are cached per target in $ODL_CACHE_DIR (default ~/.cache/odl)/costs-<target>.json, keyed by precision,
core count, the choice and its shape signature, so they serve every model with the same layer shapes. The target
also ships a table measured the same way for the built-in models (targets/<target>/tuned_costs.json, made by
`ODL_CACHE_DIR=DIR odl tune ...` and copied there); the user's cache overrides it.
`odl validate/profile/compile` load the cache and pick the measured-fastest variant; choices never measured fall
back to the kernel registry's cost hints (the profile report says which basis each choice used).
"""
from __future__ import annotations

from odl.lower.costs import save_costs


def measured_costs(rep: dict) -> dict:
    """From a tuning-mode profile report: {choice key: {variant: cycles}} (critical path + fork/join + exposed DMA)."""
    out: dict[str, dict[str, float]] = {}
    sync = rep["sync_per_call"]
    for c in rep["per_call"]:
        tag = c.get("variant")
        if not tag:
            continue
        key, name = tag.rsplit("=", 1)
        cyc = max(c["cores"]) + sync * max(1, c["loop"]) + c.get("dma_exposed_cycles", 0)
        out.setdefault(key, {}).setdefault(name, 0)
        out[key][name] += cyc
    return out


def tune(model_spec: str, target_name: str = "rv32-cluster", precision: str = "fp16", cores: int = 8,
         input_shape: str | None = None, seed: int = 0, cfg=None, log=print,
         memory: str = "hierarchy") -> dict:
    from odl.perf.profile import profile_prepared, setup
    from odl.common.progress import Phases, bar
    phase = Phases("tune")
    phase("trace", model_spec)
    target, prep, cfg = setup(model_spec, target_name, precision, input_shape, seed, cfg)
    with bar(total=3, desc="tune") as pb:
        def step(name, detail=""):
            pb.set_postfix_str(name)
            pb.update(1)
        rep = profile_prepared(prep, target, precision, cores, cfg, tuning=True, phase=step, memory=memory)
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
