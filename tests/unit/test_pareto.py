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


def test_validate_rows_rank_worst_rel_l2_without_cycles():
    """Validate reports have no cycles: the objectives are the accuracy figure and memory only."""
    rows = [_row("compute", command="validate", passed=True, worst_rel_l2=1e-3, memory_bytes=500),
            _row("part", command="validate", passed=True, worst_rel_l2=5e-2, memory_bytes=400),
            _row("all", command="validate", passed=True, worst_rel_l2=8e-2, memory_bytes=450),
            _row("out", command="validate", passed=False, worst_rel_l2=1.0, memory_bytes=10)]
    objs, flags = pareto.front(rows)
    assert objs == [("worst_rel_l2", "min"), ("memory_bytes", "min")]
    assert flags == [True, True, False, None]      # out of tolerance: not ranked, and it dominates no one


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
    rows = {"a": _row("a", memory_bytes=100, cycles=50), "b": _row("b", memory_bytes=120, cycles=60),
            "c": {**_row("c"), "status": "failed", "error": "x"}}
    objs = sw.write_results(tmp_path, {"command": "profile"}, rows, ["a", "b", "c"])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["pareto_objectives"] == ["min memory_bytes", "min cycles"] and objs == [("memory_bytes", "min"),
                                                                                        ("cycles", "min")]
    assert [r["pareto"] for r in data["rows"]] == [True, False, None]
    csv = (tmp_path / "results.csv").read_text().splitlines()
    col = csv[0].split(",").index("pareto")
    assert [line.split(",")[col] for line in csv[1:]] == ["True", "False", ""]
    lines = pareto.front_lines(data["rows"], [r["pareto"] for r in data["rows"]], objs)
    assert lines[0].startswith("Pareto front over min memory_bytes, min cycles: 1 of 3") and lines[1:] == [
        "  store=a: memory_bytes 100, cycles 50"]


def test_profile_headline_has_the_arena():
    """odl profile's report names its arena l2_bytes (both cycle models): the sweep's memory_bytes."""
    row = sw.headline("profile", {"cycles": 9233364, "mac_per_cycle": 4.0, "l2_bytes": 542752})
    assert row == {"cycles": 9233364, "mac_per_cycle": 4.0, "memory_bytes": 542752}
