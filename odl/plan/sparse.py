"""`--train auto`: a sparse update chosen to fit the memory budget.

As the sparse-update literature does (TinyTL: biases; Lin et al. 2022, "On-Device Training Under 256KB Memory":
the last blocks' weights and earlier layers' biases), the choice prefers the layers nearest the output, where the
backward is shortest and the activations it must keep are fewest:

1. full layers: the largest k such that every parameter of the last k layers with parameters trains;
2. then vectors: going further back from there, the deepest layer j such that the 1-d parameters (biases, batch
   norm and layer norm affine weights) of every layer from j to the output train as well.

Each candidate is lowered and planned for real (the deployable step, with the target's memory description), so
"fits" means the planner's arena, activations the backward needs included, is within the budget. Both searches
are binary searches over a count (the arena grows with it), and the final choice is planned once more, so what
is reported is what runs. The choice depends only on the graph, precision, configuration and budget:
reproducible run to run. It is written as a regex of the exact parameter names (TrainConfig.train), so every later
stage (validation, compile, train) sees an ordinary sparse update."""
from __future__ import annotations

import dataclasses
import re

from odl.common.errors import OdlError


def _arena(graph, precision, cfg, names, lower_kw):
    from odl.lower.lowering import lower
    from odl.plan.planner import plan
    c = dataclasses.replace(cfg, train=spec_for(names))
    prog = lower(graph, precision, c, **lower_kw)
    return plan(prog).arena_bytes, prog


def spec_for(names) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def choose(graph, precision: str, cfg, budget: int, log=None, **lower_kw) -> tuple[list[str], dict]:
    """The trainable parameter names (in the graph's parameter order) and a report of the choice."""
    layers = [n for n in graph.nodes if n.params]
    if not layers:
        raise OdlError("--train auto: the model has no parameters")
    rev = layers[::-1]                                   # nearest the output first
    full = lambda k: [p for n in rev[:k] for p in n.params.values()]   # noqa: E731
    vec = lambda j: [p for n in rev[:j] for p in n.params.values() if len(graph.params[p]) == 1]  # noqa: E731
    cache: dict[tuple, int] = {}
    trials = []

    def fits(names) -> bool:
        key = tuple(sorted(set(names)))
        if not key:
            return True
        if key not in cache:
            cache[key] = _arena(graph, precision, cfg, key, lower_kw)[0]
            trials.append((len(key), cache[key]))
        return cache[key] <= budget

    def largest(pred, lo, hi):
        """The largest x in [lo, hi] with pred(x), given pred(lo); binary search (pred decreasing in x)."""
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if pred(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    # the smallest update first (the output layer's bias, else its weight): when even that is over the budget
    # (frozen weights alone too large), refuse after one plan instead of a search whose every plan fails
    smallest = vec(len(rev))[:1] or full(1)[:1]
    arena, prog = _arena(graph, precision, cfg, smallest, lower_kw)
    cache[tuple(smallest)] = arena
    trials.append((1, arena))
    if arena > budget:
        raise NothingFits(f"--train auto: not even the smallest update ({smallest[0]}) fits: its step needs "
                          f"{arena} B, over the budget of {budget} B by {arena - budget} B; the largest update "
                          f"that fits: {_none_fits(prog, arena, budget)}", arena - budget, smallest[0])
    k = largest(lambda k: fits(full(k)), 0, len(rev))
    j = largest(lambda j: fits(list(dict.fromkeys(full(k) + vec(j)))), k, len(rev))
    names = list(dict.fromkeys(full(k) + vec(j)))
    if not names:       # the smallest update fits, so the searches found at least that
        raise AssertionError("internal: --train auto found nothing although the smallest update fits")
    order = list(graph.params)
    names = sorted(names, key=order.index)
    arena, prog = _arena(graph, precision, cfg, names, lower_kw)
    eb = prog.elem_bytes
    pbytes = {p: prog.params[p].nbytes(eb) for p in names}
    report = {
        "full_layers": [n.report_name for n in rev[:k]],
        "vector_layers": [n.report_name for n in rev[k:j] if any(len(graph.params[p]) == 1 for p in n.params.values())],
        "trainable": names,
        "trainable_params": sum(prog.params[p].nelem for p in names),
        "trainable_bytes": sum(pbytes.values()),
        "frozen_bytes": sum(b.nbytes(eb) for q, b in prog.params.items() if q not in pbytes),
        "frozen_in": "rom" if prog.rom_bytes else "l2",
        "arena_bytes": arena,
        "budget_bytes": budget,
        "trials": len(trials),
    }
    if log:
        log(describe(report))
    return names, report


class NothingFits(OdlError):
    """--train auto refused: not even the smallest update fits the budget; `over`: its step's bytes over."""

    def __init__(self, msg: str, over: int, smallest: str):
        super().__init__(msg)
        self.over, self.smallest = over, smallest


def _none_fits(prog, arena: int, budget: int) -> str:
    """Why no update fits, from the smallest update's step (prog, planned: `arena` bytes): what of it no sparse
    update can shed (the frozen parameters, the running statistics, input and labels) against what is the
    forward's and the loss's (activations and scratch at the peak)."""
    eb = prog.elem_bytes
    params = sum(b.nbytes(eb) for b in prog.params.values() if b.space == "l2")     # frozen ones in rom: outside
    state = sum(b.nbytes(eb) for b in prog.state.values())
    io = sum(b.nbytes(eb) for b in (prog.input, prog.labels))
    prec = prog.precision
    if params > budget:
        return (f"none: the parameters alone ({sum(b.nelem for b in prog.params.values())} in {prec}) take "
                f"{params} B, over the budget by {params - budget} B")
    fixed = params + state + io
    what = f"parameters {params} B" + (f", running statistics {state} B" if state else "") + \
        f", input and labels {io} B"
    if fixed > budget:
        return f"none: what every step holds ({what}) takes {fixed} B, over the budget by {fixed - budget} B"
    return (f"none: of the smallest update's {arena} B, {what}, and {arena - fixed} B activations, gradients and "
            f"scratch at the peak")


def _smallest_named(why: str, smallest: str, arena: int) -> str:
    """_none_fits's text naming the smallest update, for a refusal that has not named it already."""
    if why.startswith("none: of the smallest update's "):
        return why.replace("of the smallest update's", f"of the smallest update's ({smallest})", 1)
    return f"{why} (the smallest update, {smallest}, needs {arena} B)"


def summary(r: dict) -> str:
    """What a choice trains, and its step's arena (one line)."""
    full = ", ".join(r["full_layers"]) or "none"
    vec = f"; biases / norm affine of {len(r['vector_layers'])} more layers back to {r['vector_layers'][-1]}" \
        if r["vector_layers"] else ""
    return (f"{len(r['trainable'])} tensors, {r['trainable_params']} parameters "
            f"({r['trainable_bytes']} B; frozen {r['frozen_bytes']} B"
            f"{' in the read-only level' if r.get('frozen_in') == 'rom' else ''}): all of {full}{vec}; step arena "
            f"{r['arena_bytes']} B of {r['budget_bytes']} B")


def describe(r: dict) -> str:
    return f"--train auto: {summary(r)} ({r['trials']} plans tried)"


def largest_fitting(graph, precision: str, cfg, budget: int, **lower_kw) -> str:
    """The largest update that fits the budget, as --train auto chooses it (the same searches, so the same answer
    on every run), for a refusal of another update: its summary, or 'none: ...' with why."""
    try:
        _, rep = choose(graph, precision, dataclasses.replace(cfg, train="auto"), budget, **lower_kw)
    except NothingFits as e:
        why = str(e).split("; the largest update that fits: ", 1)[1]
        return _smallest_named(why, e.smallest, budget + e.over)
    return f"--train auto's choice, {summary(rep)}"


def resolve(graph, precision: str, cfg, budget: int | None, log=None, **lower_kw):
    """cfg with --train auto replaced by the chosen names (other settings untouched), and the report (or None)."""
    if cfg.train != "auto":
        return cfg, None
    if budget is None:
        raise OdlError("--train auto needs a memory budget (the target's, or --budget)")
    names, rep = choose(graph, precision, cfg, budget, log=log, **lower_kw)
    return dataclasses.replace(cfg, train=spec_for(names)), rep
