"""The Pareto front of odl sweep's rows (odl/jobs/pareto.py), without the emulator: dominance, ties, missing
values, unranked rows, and the objectives a validate / profile / train sweep has."""
import json

from odl.jobs import pareto
from odl.jobs import sweep as sw


def _row(job, **kw):
    return {"job": job, "command": "profile", "options": {"model": "m", "store": job}, "status": "ok", **kw}


def test_profile_rows_memory_and_cycles():
    rows = [_row("a", memory_bytes=100, cycles=50), _row("b", memory_bytes=80, cycles=60),
            _row("c", memory_bytes=120, cycles=70), _row("d", memory_bytes=80, cycles=70)]
    objs, flags = pareto.front(rows)
    assert objs == [("memory_bytes", "min"), ("cycles", "min")]
    assert flags == [True, True, False, False]      # c is worse than a in both; d is b's memory with more cycles


def test_ties_are_all_on_the_front_and_equal_rows_do_not_dominate():
    rows = [_row("a", memory_bytes=100, cycles=50), _row("b", memory_bytes=100, cycles=50),
            _row("c", memory_bytes=100, cycles=51)]
    assert pareto.front(rows)[1] == [True, True, False]


def test_validate_rows_rank_grad_rel_l2_without_cycles():
    """Validate reports have no cycles: the objectives are the accuracy figure and memory only; the median
    gradient rel-L2 is the accuracy, not the worst tensor's (kept in the row, not ranked)."""
    rows = [_row("compute", command="validate", passed=True, grad_rel_l2=1e-3, worst_rel_l2=9.0, memory_bytes=500),
            _row("part", command="validate", passed=True, grad_rel_l2=5e-2, worst_rel_l2=1.0, memory_bytes=400),
            _row("all", command="validate", passed=True, grad_rel_l2=8e-2, worst_rel_l2=0.1, memory_bytes=450),
            _row("out", command="validate", passed=False, grad_rel_l2=1.0, memory_bytes=10)]
    objs, flags = pareto.front(rows)
    assert objs == [("grad_rel_l2", "min"), ("memory_bytes", "min")]
    assert flags == [True, True, False, None]      # out of tolerance: not ranked, and it dominates no one
    old = [{k: v for k, v in r.items() if k != "grad_rel_l2"} for r in rows]     # results of an earlier odl
    assert pareto.front(old) == ([("worst_rel_l2", "min"), ("memory_bytes", "min")], [False, True, True, None])


def test_grad_rel_l2_is_the_median_off_the_noise_floor():
    t = [dict(kind="param_grad", rel_l2=v) for v in (0.1, 0.3, 0.2, 0.4)] + [
        dict(kind="param_grad", rel_l2=50.0, floor=True), dict(kind="input_grad", rel_l2=9.0)]
    assert sw.grad_rel_l2(t) == 0.25 and sw.grad_rel_l2(t[1:]) == 0.3 and sw.grad_rel_l2(t[-2:]) is None
    row = sw.headline("validate", {"passed": True, "tensors": [dict(t[0], name="w", tol={"rel_l2": 0.03})],
                                   "memory": {"arena_bytes": 7}})
    assert row["grad_rel_l2"] == 0.1 and row["worst_rel_l2"] == 0.1 and row["memory_bytes"] == 7


def test_train_accuracy_is_maximised_and_missing_values_are_not_ranked():
    rows = [_row("a", val_acc=0.9, memory_bytes=100, cycles=10), _row("b", val_acc=0.95, memory_bytes=100, cycles=10),
            _row("c", val_acc=None, memory_bytes=1, cycles=1),
            _row("d", val_acc=float("nan"), memory_bytes=1, cycles=1),
            {**_row("e"), "status": "failed", "error": "boom"}]
    objs, flags = pareto.front(rows)
    assert objs == [("val_acc", "max"), ("memory_bytes", "min"), ("cycles", "min")]
    assert flags == [False, True, None, None, None]


def test_no_figures_no_front():
    objs, flags = pareto.front([{**_row("a"), "status": "failed"}])
    assert objs == [] and flags == [None]
    assert "none" in pareto.describe(objs)


def test_results_files_carry_the_front(tmp_path):
    rows = {"a": _row("a", memory_bytes=100, cycles=50, grad_rel_l2=0.0015524908120271828),
            "b": _row("b", memory_bytes=120, cycles=60, grad_rel_l2=0.2),
            "c": {**_row("c"), "status": "failed", "error": "x"}}
    objs = sw.write_results(tmp_path, {"command": "profile"}, rows, ["a", "b", "c"])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["pareto_objectives"] == ["min grad_rel_l2", "min memory_bytes", "min cycles"]
    assert objs == [("grad_rel_l2", "min"), ("memory_bytes", "min"), ("cycles", "min")]
    assert [r["pareto"] for r in data["rows"]] == [True, False, None]
    csv = (tmp_path / "results.csv").read_text().splitlines()
    col = csv[0].split(",").index("pareto")
    assert [line.split(",")[col] for line in csv[1:]] == ["True", "False", ""]
    lines = pareto.front_lines(data["rows"], [r["pareto"] for r in data["rows"]], objs)
    assert lines[0].startswith("Pareto front over min grad_rel_l2, min memory_bytes, min cycles: 1 of 3")
    assert lines[1:] == ["  store=a: grad_rel_l2 0.001552, memory_bytes 100, cycles 50"]


def test_profile_headline_has_the_arena():
    """odl profile's report names its arena l2_bytes (both cycle models): the sweep's memory_bytes."""
    row = sw.headline("profile", {"cycles": 9233364, "mac_per_cycle": 4.0, "l2_bytes": 542752})
    assert row == {"cycles": 9233364, "mac_per_cycle": 4.0, "memory_bytes": 542752}
