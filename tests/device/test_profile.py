"""odl profile on QEMU: exact, deterministic per-core counts; totals consistent; JSON report; CLI."""
import json

import numpy as np
import pytest

from helpers import MODELS, needs_qemu

pytestmark = needs_qemu


def _run(model, cores, precision="fp16"):
    from odl.perf.profile import profile
    return profile(model, precision=precision, cores=cores, log=None, cycle_model="ipc1")


def _check_consistent(rep, spec="tinycnn", shape=None):
    from odl.lower.lowering import lower
    from odl.verify.validate import prepare
    layer_sum = sum(sum(L["steps"].values()) for L in rep["layers"])
    assert layer_sum == rep["compute_cycles"]
    # step = compute + fork/join + DMA time the cores waited for (memory hierarchy; 0 with --memory flat)
    assert layer_sum + rep["sync_cycles"] + rep["dma_exposed_cycles"] == rep["cycles"]
    assert sum(L["dma_exposed_cycles"] for L in rep["layers"]) == rep["dma_exposed_cycles"]
    if rep["memory_model"] == "hierarchy":
        assert 0 < rep["dma_exposed_cycles"] <= rep["dma_cycles"]
        assert 0 < rep["l1_peak_bytes"] <= 128 * 1024 and rep["l2_bytes"] > 0
    else:
        assert rep["dma_cycles"] == rep["dma_exposed_cycles"] == 0
    assert sum(L["sync"] for L in rep["layers"]) == rep["sync_cycles"]
    assert rep["sync_cycles"] == rep["sync_per_call"] * sum(max(1, c["loop"]) for c in rep["per_call"])
    crit = sum(max(c["cores"]) for c in rep["per_call"])
    assert crit == rep["compute_cycles"]
    prog = lower(prepare(spec, shape, 0, rep["precision"]).graph, rep["precision"])
    # (a cheap activation recomputed under the hierarchy is done again without MAC credit)
    assert rep["macs"] == prog.macs_forward + prog.macs_backward
    assert sum(L["macs"] for L in rep["layers"]) == rep["macs"]
    assert rep["mac_per_cycle"] == pytest.approx(rep["macs"] / rep["cycles"])
    for L in rep["layers"]:
        assert set(L["kernels"]) == set(L["steps"])
        assert 0.0 <= L["imbalance"]
    assert all(c > 0 for c in (rep["cycles"], rep["sync_per_call"]))


@pytest.fixture(scope="module")
def tiny():
    return {c: [_run("tinycnn", c), _run("tinycnn", c)] for c in (1, 8)}


def test_deterministic(tiny):
    for c, (a, b) in tiny.items():
        assert [x["cores"] for x in a["per_call"]] == [x["cores"] for x in b["per_call"]], c
        assert a["cycles"] == b["cycles"]


def test_totals_and_fields(tiny):
    for c, (a, _) in tiny.items():
        for k in ("cycles", "macs", "mac_per_cycle", "cores", "precision", "model", "target", "sync_cycles", "layers"):
            assert k in a
        assert a["cores"] == c and a["model"] == "tinycnn" and a["precision"] == "fp16"
        for L in a["layers"]:
            assert {"name", "op", "macs", "steps", "kernels", "imbalance"} <= set(L)
        ops = {L["op"] for L in a["layers"]}
        assert {"conv2d", "linear"} <= ops
        assert all(len(x["cores"]) == c for x in a["per_call"])
        _check_consistent(a)
        # labelled counters: the step's time vs STEP_DONE's all-harts instruction sum
        assert a["critical_path_cycles"] == a["cycles"]
        assert a["device_instructions_all_harts"] > 0


def test_flat_and_hierarchy_side_by_side():
    """--memory flat counts no data movement; the hierarchy adds the exposed DMA, and its tiles may add compute."""
    from odl.perf.profile import profile
    flat = profile("tinycnn", precision="fp16", cores=8, log=None, memory="flat", cycle_model="ipc1")
    hier = profile("tinycnn", precision="fp16", cores=8, log=None, memory="hierarchy", cycle_model="ipc1")
    _check_consistent(flat)
    _check_consistent(hier)
    assert flat["memory_model"] == "flat" and hier["memory_model"] == "hierarchy"
    assert hier["cycles"] > hier["compute_cycles"] + hier["sync_cycles"]
    assert hier["macs"] == flat["macs"]


def test_eight_cores_faster(tiny):
    one, eight = tiny[1][0], tiny[8][0]
    assert eight["cycles"] < one["cycles"]
    assert eight["compute_cycles"] * 2 < one["compute_cycles"]
    assert tiny[1][0]["sync_per_call"] < tiny[8][0]["sync_per_call"]


def test_sync_calibration_deterministic():
    from odl.perf import profile as P
    from odl.target.description import load_target
    t = load_target("rv32-cluster")
    P._SYNC_CACHE.clear()
    a = P.measure_sync(t, 8)
    P._SYNC_CACHE.clear()
    b = P.measure_sync(t, 8)
    assert a == b and 20 < a["per_call"] < 1000


def test_user_model_cli_json(tmp_path):
    from odl.cli.main import main
    out = tmp_path / "p.json"
    spec = f"{MODELS / 'spine_model.py'}:SpineNet"
    assert main(["profile", spec, "--precision", "fp32", "--cores", "3", "--input-shape", "2x3x8x8",
                 "--cycle-model", "ipc1", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["model"] == "SpineNet" and rep["cores"] == 3 and rep["precision"] == "fp32"
    names = [L["name"] for L in rep["layers"]]
    assert {"c1", "c2", "fc"} <= set(names)
    _check_consistent(rep, spec, "2x3x8x8")


def test_png_without_matplotlib(tmp_path, capsys):
    from odl.cli.main import main
    from odl.perf.profile import have_matplotlib
    if have_matplotlib():
        pytest.skip("matplotlib installed: covered by test_png")
    assert main(["profile", "tinycnn", "--png", str(tmp_path / "p.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err


def test_png(tmp_path):
    from odl.perf.profile import have_matplotlib, plot_png
    if not have_matplotlib():
        pytest.skip("matplotlib not installed")
    rep = {"model": "m", "precision": "fp16", "cores": 8, "cycles": 10, "mac_per_cycle": 1.0,
           "layers": [{"name": "a", "steps": {"forward": 3, "weight_grad": 2}, "sync": 1},
                      {"name": "b", "steps": {"forward": 4}, "sync": 0}]}
    plot_png(rep, str(tmp_path / "p.png"))
    import matplotlib.image as mpimg
    img = mpimg.imread(tmp_path / "p.png")          # a real PNG that decodes
    assert img.ndim == 3 and img.shape[0] >= 100 and img.shape[1] >= 100
    # not a blank canvas: the bars and text draw several distinct colours
    colours = {tuple(c) for c in (img[..., :3] * 255).astype(int).reshape(-1, 3)[::7]}
    assert len(colours) >= 4


def test_analyse_imbalance():
    """Aggregation on synthetic counts: max over cores, imbalance max/mean-1 weighted by cycles, loops pay sync."""
    from types import SimpleNamespace as NS
    from odl.perf.profile import analyse
    g = NS(nodes=[NS(report_name="c", op="conv2d", params={"w": "c.weight"}, name="c")])
    calls = [NS(kernel="k1", layer="c", step="forward", macs=100, loop=0),
             NS(kernel="k2", layer="c", step="forward", macs=0, loop=2),
             NS(kernel="odl_sgd", layer="c.weight", step="update", macs=0, loop=0)]
    prog = NS(graph=g, calls=calls, macs_forward=100, macs_backward=0)
    counts = np.array([[10, 30, 0, 0, 0, 0, 0, 0], [20, 20, 0, 0, 0, 0, 0, 0], [5, 5, 0, 0, 0, 0, 0, 0]], np.uint32)
    r = analyse(prog, counts, 2, 7)
    assert r["compute_cycles"] == 30 + 20 + 5
    assert r["sync_cycles"] == 7 * 4
    L = r["layers"][0]
    assert L["steps"] == {"forward": 50, "update": 5}
    assert L["step_detail"]["forward"]["imbalance"] == pytest.approx((0.5 * 30 + 0 * 20) / 50)


def test_timed_cli_json(tmp_path):
    """The default cycle model: the timing plugin's cycles, every instruction counted, stalls by cause, parameters
    with their sources; the per-call figures add up to the step; no races in the step."""
    from odl.cli.main import main
    from odl.perf.timing import REPORT_CAUSES
    out = tmp_path / "t.json"
    assert main(["profile", "tinycnn", "--precision", "fp16", "--check-races", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["cycle_model"] == "timed" and rep["races"]["count"] == 0
    assert rep["cycles"] > rep["instructions"] > 0 and rep["unknown_instructions"] == 0
    assert set(rep["stall_cycles"]) == set(REPORT_CAUSES)
    assert all(v["source"] for v in rep["timing"].values())
    assert sum(c["cycles"] for c in rep["per_call"]) + rep["tail_cycles"] == rep["cycles"]
    assert 0 <= rep["tail_cycles"] < 0.05 * rep["cycles"]
    assert sum(L["cycles"] for L in rep["layers"]) == sum(c["cycles"] for c in rep["per_call"])
    assert abs(rep["mac_per_cycle"] - rep["macs"] / rep["cycles"]) < 1e-9
    ipc1 = _run("tinycnn", 8)
    # every instruction counted (DMA programming, glue, fork/join): at least the kernels' critical path
    assert rep["instructions"] >= ipc1["compute_cycles"]


def test_timed_shared_fpus_slower():
    from odl.perf.profile import profile
    a = profile("tinycnn", precision="fp16", cores=8, log=None)
    b = profile("tinycnn", precision="fp16", cores=8, log=None, overrides={"fpus": 2})
    assert b["cycles"] > a["cycles"] and b["stall_cycles"]["fpu_contention"] > 0 == a["stall_cycles"]["fpu_contention"]
