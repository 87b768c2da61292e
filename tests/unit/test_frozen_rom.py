"""Frozen weights in the target's read-only level (TrainConfig.frozen, `--frozen auto|l2|rom`): planned past the L2
working area and outside the budget, read by the DMA at the level's own timing; 'auto' moves them there only when the
step does not fit with them in L2 (validated on QEMU: tests/device/test_validate_qemu.py, tests/models/test_zoo.py)."""
import dataclasses

import pytest

from helpers import MODELS
from odl.common.errors import OdlError
from odl.common.userfile import import_file
from odl.frontend.export import trace_export
from odl.lower.lowering import TrainConfig, lower
from odl.pipeline import fit
from odl.plan.planner import OverBudget, plan
from odl.target.description import load_target
from odl.tile.memory import dma_cycles, hierarchy_of, rom_of

ROM = 1 << 20


@pytest.fixture(scope="module")
def graph():
    m = import_file(str(MODELS / "ops_models.py"), "m").ConvBNStack()
    return trace_export(m, (3, 3, 7, 7))


def _arena(graph, frozen):
    prog = lower(graph, "fp32", TrainConfig(train="last:1", frozen=frozen))
    plan(prog)
    return prog


def test_rom_is_past_the_working_area_and_outside_the_budget(graph):
    l2, rom = _arena(graph, "l2"), _arena(graph, "rom")
    frozen = [n for n in rom.params if n not in rom.trainable]
    assert frozen and rom.trainable
    fb = sum(rom.params[n].nbytes(4) for n in frozen)
    assert rom.arena_bytes <= l2.arena_bytes - fb + 16 * len(frozen)     # the frozen weights left the arena
    assert rom.rom_offset >= rom.arena_bytes and rom.rom_bytes >= fb
    assert rom.extent_bytes == rom.rom_offset + rom.rom_bytes and l2.extent_bytes == l2.arena_bytes
    spans = sorted((rom.params[n].offset, rom.params[n].offset + rom.params[n].nbytes(4)) for n in frozen)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))           # no overlap
    assert all(rom.rom_offset <= lo and hi <= rom.extent_bytes for lo, hi in spans)
    assert all(b.space == "l2" and b.offset + b.nbytes(4) <= rom.arena_bytes
               for b in rom.buffers if b.offset >= 0 and b.space == "l2")


def test_auto_keeps_l2_when_it_fits_and_moves_to_rom_when_not(graph):
    l2, rom = _arena(graph, "l2"), _arena(graph, "rom")
    cfg = TrainConfig(train="last:1")
    c, p, rep = fit(graph, "fp32", cfg, l2.arena_bytes, rom_bytes=ROM)
    assert c.frozen == "l2" and p.rom_bytes == 0 and rep.rom_bytes == 0
    c, p, rep = fit(graph, "fp32", cfg, l2.arena_bytes - 1, rom_bytes=ROM)
    assert c.frozen == "rom" and p.rom_bytes == rom.rom_bytes == rep.rom_bytes and rep.arena_bytes < l2.arena_bytes
    # no read-only level (rom_bytes 0): the L2 refusal as before
    with pytest.raises(OverBudget):
        fit(graph, "fp32", cfg, l2.arena_bytes - 1)
    # over even with the frozen weights out: both verdicts in one message
    with pytest.raises(OverBudget, match=r"with the frozen weights in the target's read-only level; with them in "
                                         r"L2: the training step needs"):
        fit(graph, "fp32", cfg, rom.arena_bytes - 1, rom_bytes=ROM)


def test_rom_refusals(graph):
    cfg = TrainConfig(train="last:1", frozen="rom")
    with pytest.raises(OdlError, match=r"--frozen rom: the target describes no read-only level"):
        fit(graph, "fp32", cfg, None)
    with pytest.raises(OdlError, match=r"--frozen rom: the frozen weights take \d+ B, over the target's read-only "
                                       r"level of 64 B by \d+"):
        fit(graph, "fp32", cfg, None, rom_bytes=64)
    from odl.train.loop import TrainOptions, _check_train_options
    with pytest.raises(OdlError, match="--frozen rom: odl train keeps every parameter in L2"):
        _check_train_options(TrainOptions(cfg=dataclasses.replace(cfg)))


def test_dma_reads_from_rom_at_its_timing(graph):
    target = load_target("rv32-cluster")
    h, r = hierarchy_of(target), rom_of(target)
    assert (h.rom_bytes, h.rom_setup_cycles, h.rom_bytes_per_cycle) == (r["bytes"], r["setup_cycles"],
                                                                         r["bytes_per_cycle"])
    assert h.transfer_cycles(1000, 4, rom=True) == r["setup_cycles"] + -(-1000 // r["bytes_per_cycle"])
    assert h.transfer_cycles(1000, 4) == h.dma_setup_cycles + -(-1000 // h.dma_bytes_per_cycle)
    cfg = TrainConfig(train="last:1", frozen="rom")
    prog = lower(graph, "fp32", cfg, memory=h)
    plan(prog)
    ins = [t for c in prog.calls for t in c.dma_in]
    from_rom = [t for t in ins if t.l2.space == "rom"]
    assert from_rom, "the frozen weights reach L1 by DMA"
    slow = dma_cycles(from_rom, h, 4)
    fast = sum(h.transfer_cycles(b, n) for t in from_rom for b, n in t.shapes(4))
    assert slow > fast
