"""Timed cycles: the timing plugin's report of a training step (odl/run/timing_plugin.py runs it) turned into
per-call, per-layer and per-step figures (docs/performance.md).

The step is the deployable one (the real fork/join, DMA programmed by hart 0 between calls), built with -DODL_TIMED
so that it marks its step and call boundaries. The plugin keeps a cycle-approximate clock per hart (scoreboard,
I-cache, TCDM banks, FPU sharing, DMA engine, synchronisation) and a one-instruction-one-cycle clock with the same
synchronisation, and writes a JSON report at exit.
"""
from __future__ import annotations

CAUSES = ("load_use", "branch", "fp_latency", "mul_div", "vector", "bank_conflict", "fpu_contention", "icache",
          "dma_wait", "sync")
REPORT_CAUSES = CAUSES + ("dma_issue",)


def layer_resolver(prog):
    """Call -> (report layer name, op); and the layer order (graph order, loss last)."""
    g = prog.graph
    by_report = {n.report_name: n for n in g.nodes}
    param_owner = {p: n for n in g.nodes for p in n.params.values()}
    order = [n.report_name for n in g.nodes]

    def resolve(call):
        if call.layer in by_report:
            n = by_report[call.layer]
            return n.report_name, n.op
        if call.layer in param_owner:
            n = param_owner[call.layer]
            return n.report_name, n.op
        if call.step == "loss" or call.layer == "loss":
            return "loss", "loss"
        return call.layer, call.step
    return resolve, order


def _stalls(c: dict) -> dict:
    s = {k: int(c["stalls"].get(k, 0)) for k in CAUSES}
    s["dma_wait"] += int(c.get("glue_dma_wait", 0))
    s["dma_issue"] = int(c.get("glue", 0)) - int(c.get("glue_dma_wait", 0))
    return s


def analyse_timed(prog, raw: dict, steps: tuple[str, ...]) -> dict:
    """Per-call plugin figures -> per-layer and per-step totals, steps in the order given (cycles = the region on hart
    0's clock, fork/join included, plus the glue before it: DMA programming, waits and loop code between calls)."""
    resolve, order = layer_resolver(prog)
    by_idx = {int(c["index"]): c for c in raw["calls"]}
    layers: dict[str, dict] = {}
    step_tot: dict[str, dict] = {}
    per_call = []
    for i, call in enumerate(prog.calls):
        c = by_idx.get(i)
        if c is None:
            continue
        name, op = resolve(call)
        st = _stalls(c)
        cyc = int(c["cycles"]) + int(c["glue"])
        ins = int(c["ipc1_cycles"]) + int(c["glue_instructions"])
        per_call.append({"index": i, "layer": call.layer, "step": call.step, "kernel": call.kernel, "macs": call.macs,
                         "variant": call.variant, "loop": call.loop,
                         "invocations": int(c["invocations"]), "cycles": cyc, "region_cycles": int(c["cycles"]),
                         "glue_cycles": int(c["glue"]), "instructions": ins, "stall_cycles": st})
        L = layers.setdefault(name, {"name": name, "op": op, "macs": 0, "cycles": 0, "instructions": 0, "steps": {},
                                     "stall_cycles": {k: 0 for k in REPORT_CAUSES}})
        S = step_tot.setdefault(call.step, {"macs": 0, "cycles": 0, "instructions": 0, "calls": 0,
                                            "stall_cycles": {k: 0 for k in REPORT_CAUSES}})
        for T in (L, S):
            T["macs"] += call.macs
            T["cycles"] += cyc
            T["instructions"] += ins
            for k, v in st.items():
                T["stall_cycles"][k] += v
        S["calls"] += int(c["invocations"])
        L["steps"][call.step] = L["steps"].get(call.step, 0) + cyc
    rank = {n: k for k, n in enumerate(order)}
    out_layers = sorted(layers.values(), key=lambda L: rank.get(L["name"], len(rank)))
    for L in out_layers:
        L["mac_per_cycle"] = L["macs"] / L["cycles"] if L["cycles"] else 0.0
    cycles = int(raw["cycles"])
    macs = prog.macs_forward + prog.macs_backward
    total_st = {k: sum(L["stall_cycles"][k] for L in out_layers) for k in REPORT_CAUSES}
    return {"cycles": cycles, "instructions": int(raw["instructions_critical"]), "macs": macs,
            "mac_per_cycle": macs / cycles if cycles else 0.0,
            "instructions_all_harts": int(raw["instructions_all_harts"]),
            "stall_cycles": total_st, "layers": out_layers,
            "step_totals": {s: step_tot[s] for s in steps if s in step_tot},
            "per_call": per_call, "icache": raw["icache"], "dma": raw["dma"], "harts": raw["harts"],
            "unknown_instructions": int(raw.get("unknown_instructions", 0)), "races": raw.get("races", {}),
            "tail_cycles": cycles - sum(c["cycles"] for c in per_call)}


def format_timed(rep: dict) -> str:
    hdr = (f"{'layer':24s} {'op':10s} {'MACs':>10s} {'cycles':>10s} {'instr':>10s} {'MAC/cyc':>7s}  "
           "top stalls")
    lines = [f"odl profile {rep['model']}: {rep['target']} (qemu + timing model), {rep['precision']}, "
             f"{rep['cores']} cores, input {'x'.join(map(str, rep['input_shape']))}; cycle model: timed", hdr,
             "-" * len(hdr)]
    for L in rep["layers"]:
        top = sorted(L["stall_cycles"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"{L['name'][:24]:24s} {L['op'][:10]:10s} {L['macs']:10d} {L['cycles']:10d} "
                     f"{L['instructions']:10d} {L['mac_per_cycle']:7.2f}  "
                     + ", ".join(f"{k} {v}" for k, v in top if v))
    lines.append("-" * len(hdr))
    for s, st in rep["step_totals"].items():
        mpc = st["macs"] / st["cycles"] if st["cycles"] else 0.0
        lines.append(f"{'total ' + s:24s} {'':10s} {st['macs']:10d} {st['cycles']:10d} {st['instructions']:10d} "
                     f"{mpc:7.2f}")
    st = rep["stall_cycles"]
    lines.append("stall cycles (critical hart per call): " + ", ".join(f"{k} {v}" for k, v in st.items()))
    ic = rep["icache"]
    lines.append(f"I-cache: {ic['misses']} misses of {ic['accesses']} line fetches; DMA: {rep['dma']['transfers']} "
                 f"transfers, {rep['dma']['bytes']} bytes, engine busy {rep['dma']['busy']} cycles")
    lines.append(f"step: {rep['cycles']} cycles timed ({rep['instructions']} instructions on the critical path, every "
                 f"instruction counted), MACs {rep['macs']}, {rep['mac_per_cycle']:.2f} MAC/cycle timed "
                 f"({rep['macs'] / max(1, rep['instructions']):.2f} per instruction)")
    return "\n".join(lines)
