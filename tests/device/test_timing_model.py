"""The timing model (qemu_plugins/timing.c) against closed-form cycle counts, on microbenchmarks run under QEMU
(tests/device/timing/microbench.c), and its race detector on a planted race."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import needs_qemu

pytestmark = [needs_qemu]
SRC = Path(__file__).parent / "timing" / "microbench.c"
SERIAL = ("empty", "load_use", "taken", "not_taken", "fma_chain", "widening_fma", "straight")
PARALLEL = ("fork_join", "one_bank", "sixteen_banks", "fmas")


def _run(tmp: Path, racy: bool = False, fpus: int | None = None):
    from odl.run.timing_plugin import parameters, run_timed
    from odl.target.description import load_target
    from odl.target.toolchain import build_firmware
    t = load_target("rv32-cluster")
    elf = build_firmware(t, "fp16", 8, [SRC], [], tmp / "build", kernels=False, name="microbench",
                         defines=["ODL_TIMED"] + (["RACY"] if racy else []))
    p = parameters(t, {"fpus": fpus} if fpus is not None else None)
    rep = run_timed(t, elf, 8, tmp / "run", steps=1, params=p, races=True)
    calls = {int(c["index"]): c for c in rep["calls"]}
    out = {}
    for b, name in enumerate(SERIAL):
        out[name + "_cold"], out[name] = calls[2 * b]["cycles"], calls[2 * b + 1]["cycles"]
    base = 2 * len(SERIAL)
    for k, name in enumerate(PARALLEL):
        out[name + "_cold"], out[name] = calls[base + 2 * k]["cycles"], calls[base + 2 * k + 1]["cycles"]
    return p, out, rep


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("microbench"))


def _near(got, want, tol=0.03):
    assert abs(got - want) <= tol * want, f"{got} cycles, expected {want} (+-{100 * tol:.0f}%)"


def test_serial_closed_forms(bench):
    p, c, _ = bench
    o = c["empty"]                                     # call, return and marks around a benchmark
    n = 256
    _near(c["load_use"] - o, n + (n - 1) * p["load_use"])          # each load waits for the previous one
    _near(c["taken"] - o, n * (1 + p["branch_taken"]))
    _near(c["not_taken"] - o, n)
    _near(c["fma_chain"] - o, n + (n - 1) * p["fp_latency"])       # dependent FMAs: latency exposed
    _near(c["widening_fma"] - o, n * (2 * 32) // p["datapath_bits"])   # VL=2 x 32-bit results: 2 cycles each
    _near(c["straight"] - o, 512)                                  # warm I-cache: one instruction a cycle
    lines = 512 * 4 // p["icache_line"]
    _near(c["straight_cold"] - o, 512 + lines * p["icache_refill"], tol=0.05)   # every line missed once


def test_banks(bench):
    p, c, _ = bench
    fj = c["fork_join"]
    alone = 16 * (64 + 1 + 1 + p["branch_taken"])       # one core: 16 iterations of 64 loads + addi + bnez
    # (5%: the workers wake one after the other and each calls its task, which the empty region does not show)
    _near(c["sixteen_banks"] - fj, alone, tol=0.05)     # cores on distinct banks: no conflict
    _near(c["one_bank"] - fj, 8 * 16 * 64, tol=0.05)    # 8 cores on one bank: the loads serialize


def test_shared_fpus(bench, tmp_path):
    """256 independent FMAs per core: one a cycle on a private FPU; 8 cores on N shared FPUs take 8/N times as
    long (each FPU serves one operation a cycle)."""
    p, c, _ = bench
    fj = c["fork_join"]
    alone = 16 * (16 + 1 + 1 + p["branch_taken"])
    _near(c["fmas"] - fj, alone, tol=0.05)
    for fpus in (4, 2):
        _, cs, _ = _run(tmp_path / f"fpus{fpus}", fpus=fpus)
        _near(cs["fmas"] - cs["fork_join"], 16 * 16 * 8 // fpus, tol=0.08)


def test_races(bench, tmp_path):
    _, _, rep = bench
    assert rep["races"]["count"] == 0, rep["races"]
    _, _, racy = _run(tmp_path, racy=True)
    assert racy["races"]["count"] >= 1
    r = racy["races"]["first"][0]
    assert r["harts"][0] != r["harts"][1] and r["store"] == 1


def test_deterministic(bench, tmp_path):
    _, c, _ = bench
    _, c2, _ = _run(tmp_path)
    assert c == c2


def test_validate_check_races(tmp_path):
    """validate --check-races: the step (forward, backward, update) under the race detector; none in tinycnn."""
    from odl.cli.main import main
    out = tmp_path / "v.json"
    assert main(["validate", "tinycnn", "--precision", "fp16", "--check-races", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["races"]["count"] == 0


def test_check_races_needs_qemu(capsys):
    from odl.cli.main import main
    assert main(["validate", "tinycnn", "--check-races", "--port", "socket://127.0.0.1:1"]) == 2
    assert "--check-races" in capsys.readouterr().err


def test_dma_controller_validates_without_races(tmp_path):
    """--dma-controller: a controller hart issues the next tiles' DMA while the cores compute; the step still
    validates tensor by tensor, the race detector finds nothing, and QEMU ran one hart more than the cores."""
    from odl.cli.main import main
    out = tmp_path / "v.json"
    assert main(["validate", "tinycnn", "--precision", "fp16", "--cores", "3", "--dma-controller", "--check-races",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["races"]["count"] == 0


def test_tune_measures_timed_cycles(tmp_path, monkeypatch):
    """odl tune measures every variant of every choice under the timed model (the default) into the cache."""
    from odl.perf.tune import tune
    monkeypatch.setenv("ODL_CACHE_DIR", str(tmp_path))
    r = tune("tinycnn", precision="fp16", cores=8, log=None)
    assert r["cycle_model"] == "timed" and len(r["costs"]) >= 2
    assert all(len(v) >= 2 and min(v.values()) > 0 for v in r["costs"].values())
    assert (tmp_path / "costs-rv32-cluster.json").is_file()


def test_frozen_weights_in_rom_validate_and_are_timed_at_its_bandwidth(tmp_path):
    """--frozen rom: the frozen weights live in the read-only level past the L2 working area; the step validates
    tensor by tensor without races, and the plugin's DMA engine is busy exactly as long as the instruction model's
    DMA timing says, with and without the level (its reads at 1 byte per cycle after 100 cycles of latency)."""
    from odl.cli.main import main
    from odl.lower.lowering import TrainConfig
    from odl.perf.profile import profile
    from odl.pipeline import prepare, step
    from odl.target.description import load_target
    from odl.tile.memory import memory_for, simulate
    out = tmp_path / "v.json"
    assert main(["validate", "tinycnn", "--precision", "fp16", "--train", "last:1", "--frozen", "rom",
                 "--check-races", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["races"]["count"] == 0
    t = load_target("rv32-cluster")
    h = memory_for(t, "hierarchy")
    prep = prepare("tinycnn", None, 0, "fp16")
    busy = {}
    for frozen in ("l2", "rom"):
        cfg = TrainConfig(train="last:1", frozen=frozen)
        rep = profile("tinycnn", precision="fp16", cfg=cfg, log=None)
        _, prog, _ = step(prep, "fp16", cfg, t, 8, h, t.memory_budget_bytes)
        assert (prog.rom_bytes > 0) == (frozen == "rom")
        assert rep["dma"]["busy"] == simulate(prog, [0] * len(prog.calls), h)["dma_cycles"]
        busy[frozen] = rep["dma"]["busy"]
    assert busy["rom"] > busy["l2"]
