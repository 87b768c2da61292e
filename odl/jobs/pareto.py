"""The Pareto front of a sweep's rows (odl/jobs/sweep.py, docs/cli.md "sweep").

Objectives: one accuracy, the first of ACCURACY that some ranked row has (`val_acc`, higher is better: train jobs;
`grad_rel_l2`, the median parameter-gradient rel-L2, lower is better: validate jobs; `worst_rel_l2` for results
written before grad_rel_l2 existed), then each of `memory_bytes` and `cycles` (lower is better) that some ranked row
has (validate jobs have no cycles, profile jobs no accuracy). A row is ranked when
it finished (`status` ok), did not fail validation (`passed` false), and has every objective; a ranked row is on the
front (`pareto` true) when no other ranked row is at least as good in every objective and better in one. Rows with
equal objectives are all on the front or all off it. Unranked rows get `pareto` None (blank in the CSV).
"""
from __future__ import annotations

import math

ACCURACY = (("val_acc", "max"), ("grad_rel_l2", "min"), ("worst_rel_l2", "min"))
COSTS = (("memory_bytes", "min"), ("cycles", "min"))


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def _ranked(row: dict) -> bool:
    return row.get("status") == "ok" and row.get("passed") is not False


def objectives(rows: list[dict]) -> list[tuple[str, str]]:
    """The (column, 'min' | 'max') objectives of these rows: the first accuracy and the costs some ranked row has a
    number for."""
    def has(k):
        return any(_ranked(r) and _number(r.get(k)) is not None for r in rows)
    return [o for o in ACCURACY if has(o[0])][:1] + [o for o in COSTS if has(o[0])]


def _dominates(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def front(rows: list[dict]) -> tuple[list[tuple[str, str]], list[bool | None]]:
    """(the objectives, per row: True on the front, False dominated, None not ranked)."""
    objs = objectives(rows)
    keys: list[tuple | None] = []
    for r in rows:
        vals = [_number(r.get(k)) for k, _ in objs]
        ok = objs and _ranked(r) and all(v is not None for v in vals)
        keys.append(tuple(-v if d == "max" else v for v, (_, d) in zip(vals, objs)) if ok else None)
    flags = [None if k is None else not any(o is not None and _dominates(o, k) for o in keys) for k in keys]
    return objs, flags


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def describe(objs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{d} {k}" for k, d in objs) or "none (no finished row has a figure)"


def front_lines(rows: list[dict], flags: list[bool | None], objs: list[tuple[str, str]]) -> list[str]:
    """The front as lines to print: each row's options that vary across the sweep and its objectives."""
    varying = sorted({k for r in rows for k in r["options"] if len({str(x["options"].get(k)) for x in rows}) > 1})
    out = [f"Pareto front over {describe(objs)}: {sum(bool(f) for f in flags)} of {len(rows)} jobs"]
    for r, f in zip(rows, flags):
        if f:
            opts = " ".join(f"{k}={r['options'].get(k)}" for k in varying) or r["job"]
            out.append(f"  {opts}: " + ", ".join(f"{k} {_fmt(r.get(k))}" for k, _ in objs))
    return out
