"""Kernel selection by measurement (`odl tune`).

The lowering marks every place where equivalent implementations exist (Lowering.choose: e.g. which matmul
variant or operand orientation computes a convolution's weight gradient). `odl tune MODEL` lowers the model in
tuning mode — every variant of every choice emitted, tagged — builds it with the exact per-core profiler, runs one
step on the emulator and records, per choice and variant, the critical-path cycles plus fork/join cost plus the
DMA its tiles expose (memory hierarchy: a variant whose tiles wait on their transfers costs that too); by default
it measures timed cycles instead (the timing plugin: each variant's calls with their stalls, DMA waits and issuing;
`--cycle-model ipc1` for instruction counts). The
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
    """From a tuning-mode profile report: {choice key: {variant: cycles}}. ipc1: critical path + fork/join + exposed
    DMA; timed: the call's timed cycles (its region, fork to join, and the DMA waits and issuing before it)."""
    out: dict[str, dict[str, float]] = {}
    timed = rep.get("cycle_model") == "timed"
    for c in rep["per_call"]:
        tag = c.get("variant")
        if not tag:
            continue
        key, name = tag.rsplit("=", 1)
        if timed:
            cyc = c["cycles"]
        else:
            cyc = max(c["cores"]) + rep["sync_per_call"] * max(1, c["loop"]) + c.get("dma_exposed_cycles", 0)
        out.setdefault(key, {}).setdefault(name, 0)
        out[key][name] += cyc
    return out


def tune(model_spec: str, target_name: str = "rv32-cluster", precision: str = "fp16", cores: int = 8,
         input_shape: str | None = None, seed: int = 0, cfg=None, log=print,
         memory: str = "hierarchy", cycle_model: str = "timed") -> dict:
    from odl.perf.profile import profile_prepared, profile_timed, setup
    from odl.common.progress import Phases, bar
    phase = Phases("tune")
    phase("trace", model_spec)
    target, prep, cfg = setup(model_spec, target_name, precision, input_shape, seed, cfg)
    with bar(total=3, desc="tune") as pb:
        def step(name, detail=""):
            pb.set_postfix_str(name)
            pb.update(1)
        if cycle_model == "timed":
            rep = profile_timed(prep, target, precision, cores, cfg, phase=step, memory=memory, tuning=True)
        else:
            rep = profile_prepared(prep, target, precision, cores, cfg, tuning=True, phase=step, memory=memory)
    phase("measured", f"every variant in one run ({cycle_model} cycles)")
    costs = measured_costs(rep)
    path = save_costs(target.name, precision, cores, costs)
    if log:
        log(f"odl tune {prep.name}: {target.name}, {precision}, {cores} cores, {cycle_model} cycles: {len(costs)} "
            f"choices measured -> {path}")
        for key, v in sorted(costs.items()):
            best = min(v, key=v.get)
            log(f"  {key:70s} " + "  ".join(f"{n}={int(c)}{'*' if n == best else ''}" for n, c in sorted(v.items())))
    return {"model": prep.name, "target": target.name, "precision": precision, "cores": cores, "costs": costs,
            "cache": str(path), "cycle_model": cycle_model}
