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
    if not fits(smallest):
        arena = cache[tuple(smallest)]
        raise OdlError(f"--train auto: not even the smallest update ({smallest[0]}) fits: its step needs "
                       f"{arena} B, over the budget of {budget} B by {arena - budget} B")
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
        "arena_bytes": arena,
        "budget_bytes": budget,
        "trials": len(trials),
    }
    if log:
        log(describe(report))
    return names, report


def describe(r: dict) -> str:
    full = ", ".join(r["full_layers"]) or "none"
    vec = f"; biases / norm affine of {len(r['vector_layers'])} more layers back to {r['vector_layers'][-1]}" \
        if r["vector_layers"] else ""
    return (f"--train auto: {len(r['trainable'])} tensors, {r['trainable_params']} parameters "
            f"({r['trainable_bytes']} B; frozen {r['frozen_bytes']} B): all of {full}{vec}; step arena "
            f"{r['arena_bytes']} B of {r['budget_bytes']} B ({r['trials']} plans tried)")


def resolve(graph, precision: str, cfg, budget: int | None, log=None, **lower_kw):
    """cfg with --train auto replaced by the chosen names (other settings untouched), and the report (or None)."""
    if cfg.train != "auto":
        return cfg, None
    if budget is None:
        raise OdlError("--train auto needs a memory budget (the target's, or --budget)")
    names, rep = choose(graph, precision, cfg, budget, log=log, **lower_kw)
    return dataclasses.replace(cfg, train=spec_for(names)), rep
