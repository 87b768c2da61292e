"""The memory hierarchy: the tile pass (odl/tile/tiler.py), the DMA model (odl/tile/memory.py) and the L1 check in the firmware."""
import dataclasses

import numpy as np
import pytest
import torch.nn as nn
from helpers import MODELS, im2col_ref, needs_qemu

from odl.common.errors import OdlError
from odl.ir.program import Buffer, Call, Gather, Ptr, TrainConfig, Transfer
from odl.lower.lowering import lower
from odl.tile.memory import Hierarchy, hierarchy_of, memory_for, same_block, simulate
from odl.pipeline import prepare, prepare_module
from odl.plan.planner import plan
from odl.target.description import load_target
from odl.tile.tiler import EARLY_SPAN, _overlap, _treg

TARGET = load_target("rv32-cluster")
HIER = hierarchy_of(TARGET)


def _tiled(model, precision, **kw):
    prep = prepare(model, None, 0, precision) if isinstance(model, str) else model
    prog = lower(prep.graph, precision, TrainConfig(), memory=HIER, **kw)
    plan(prog)
    return prep, prog


def test_target_describes_the_hierarchy():
    assert HIER.l1_bytes == 128 * 1024 and HIER.l2_bytes == 1536 * 1024
    assert HIER.l1_data_bytes == HIER.l1_bytes - 8 * HIER.stack_bytes_per_hart
    assert HIER.dma_bytes_per_cycle == 8 and HIER.dma_setup_cycles == 10 and HIER.dma_channels == 1
    assert memory_for(TARGET, "flat") is None
    with pytest.raises(OdlError, match="--memory 'cache'"):
        memory_for(TARGET, "cache")


@pytest.mark.parametrize("model,precision", [("resnet8", "fp16"), ("resnet8", "fp32"), ("dscnn", "fp16"),
                                             ("dscnn", "fp32")])
def test_every_kernel_pointer_is_in_l1_and_every_transfer_in_bounds(model, precision):
    prep, prog = _tiled(model, precision)
    eb = prog.elem_bytes
    assert 0 < prog.l1_peak_bytes <= HIER.l1_data_bytes
    for i, c in enumerate(prog.calls):
        assert c.origin >= 0
        for k, v in c.fields.items():
            if isinstance(v, Ptr):
                assert v.buf.space == "l1", (i, c.kernel, k)
                assert v.buf.offset + v.buf.nbytes(eb) <= prog.l1_peak_bytes
        for t in c.dma_in + c.dma_out:
            assert t.l2.space == "l2" and t.l1.space == "l1"
            if isinstance(t, Gather):
                for l2o, l1o, rows, n, l2s, l1s in t.pieces():
                    assert t.l1_elem + l1o + (rows - 1) * l1s + n <= t.l1.nelem
                    assert t.l2_elem + (max(1, c.loop) - 1) * t.per_sample + l2o + (rows - 1) * l2s + n <= t.l2.nelem
                continue
            assert t.rows * t.row_elems <= t.l1.nelem
            loop = max(1, c.loop)
            last = t.l2_elem + (loop - 1) * t.per_sample + (t.rows - 1) * t.l2_stride + t.row_elems
            assert last <= t.l2.nelem, (i, c.kernel, t.l2.name)
    # MACs are kept whole across the tiles
    flat = lower(prep.graph, precision, TrainConfig())
    assert sum(c.macs for c in prog.calls) == sum(c.macs for c in flat.calls)


def test_hierarchy_l2_arena_is_smaller_than_flat():
    """im2col columns never touch L2 under the hierarchy."""
    prep, prog = _tiled("resnet8", "fp16")
    flat = lower(prep.graph, "fp16", TrainConfig())
    plan(flat)
    assert prog.arena_bytes < flat.arena_bytes
    used = {id(b) for c in prog.calls for b in c.buffers()}
    cols = [b for b in prog.buffers if "_col" in b.name and id(b) in used]
    assert cols and all(b.space == "l1" for b in cols)


@pytest.mark.parametrize("model,precision", [("resnet8", "fp32"), ("resnet8", "fp16"), ("dscnn", "fp16")])
def test_l1_buffers_alive_together_never_overlap(model, precision):
    """Every L1 buffer a tile uses (its fields; its fetches from the previous tile on when prefetched; its write-backs
    until the next tile ends) is placed apart from every other buffer in use at the same time."""
    prep, prog = _tiled(model, precision)
    eb = prog.elem_bytes
    need = {}
    for t, c in enumerate(prog.calls):
        for v in c.fields.values():
            if isinstance(v, Ptr):
                need.setdefault(id(v.buf), (v.buf, set()))[1].add(t)
        for x in c.dma_in:
            need.setdefault(id(x.l1), (x.l1, set()))[1].update({t - 1, t} if c.prefetch else {t})
        for x in c.late:
            need.setdefault(id(x.l1), (x.l1, set()))[1].add(t)
        for x in c.early:           # issued here for a later tile: written from here on
            need.setdefault(id(x.l1), (x.l1, set()))[1].add(t)
        for x in c.dma_out:
            need.setdefault(id(x.l1), (x.l1, set()))[1].update({t, t + 1})
    bufs = [(b, min(ts), max(ts)) for b, ts in need.values()]
    for i, (a, alo, ahi) in enumerate(bufs):
        for b, blo, bhi in bufs[i + 1:]:
            if ahi < blo or bhi < alo:
                continue
            assert a.offset + a.nbytes(eb) <= b.offset or b.offset + b.nbytes(eb) <= a.offset, (a.name, b.name)


def test_refuses_a_call_it_cannot_cut_naming_it():
    """A layer norm over one huge row has no tiler and does not fit L1 whole: refused, naming the call."""
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(40000)
            self.fc = nn.Linear(40000, 2)

        def forward(self, x):
            return self.fc(self.norm(x))
    prep = prepare_module(Wide(), "wide", (1, 40000), 0, "fp32")
    with pytest.raises(OdlError, match=r"--memory hierarchy: call \d+ \(odl_\w+, layer norm"):
        lower(prep.graph, "fp32", TrainConfig(), memory=HIER)


def _call(compute_in, compute_out, prefetch, loop=0, group=0):
    l2 = Buffer("x", 1 << 20, dtype="u8")
    l1 = Buffer("t", 1 << 20, dtype="u8", space="l1")
    ins = [Transfer("in", l2, 0, 0, l1, 0, 1, compute_in, compute_in)] if compute_in else []
    outs = [Transfer("out", l2, 0, 0, l1, 0, 1, compute_out, compute_out)] if compute_out else []
    return Call("odl_copy", {}, "l", "forward", loop=loop, group=group, dma_in=ins, dma_out=outs, prefetch=prefetch,
                origin=0)


class _Prog:
    elem_bytes = 2

    def __init__(self, calls):
        self.calls = calls


def test_dma_schedule_overlaps_the_next_tiles_inputs_with_compute():
    h = Hierarchy(0, 1 << 17, 2048, 8, 0, 1 << 20, dma_bytes_per_cycle=8, dma_setup_cycles=10, dma_channels=1)
    # 800 B in = 110 cycles, 400 B out = 60 cycles; compute 1000 cycles per tile
    calls = [_call(800, 400, False), _call(800, 400, True), _call(800, 400, True)]
    r = simulate(_Prog(calls), [1000, 1000, 1000], h)
    # only the first tile's inputs and the last tile's results are exposed
    assert r["dma_exposed_cycles"] == 110 + 60
    assert r["step_cycles"] == 3000 + 170
    assert r["dma_cycles"] == 3 * 170
    # without prefetch every input is exposed, behind the previous tile's write-back (one FIFO channel)
    calls = [_call(800, 400, False), _call(800, 400, False), _call(800, 400, False)]
    r = simulate(_Prog(calls), [1000, 1000, 1000], h)
    assert r["dma_exposed_cycles"] == 110 + 2 * (60 + 110) + 60
    # compute shorter than the transfers: the DMA engine is the bottleneck
    calls = [_call(8000, 0, False), _call(8000, 0, True)]
    r = simulate(_Prog(calls), [100, 100], h)
    assert r["step_cycles"] == 1010 + 1010 + 100


def test_dma_schedule_prefetches_part_of_a_tile_whose_other_inputs_read_the_last_write_back():
    """A tile whose inputs are partly what the tile before writes back (late): the rest is prefetched during that
    tile; the late part goes out after its write-back, and only that part and the write-back are exposed."""
    h = Hierarchy(0, 1 << 17, 2048, 8, 0, 1 << 20, dma_bytes_per_cycle=8, dma_setup_cycles=10, dma_channels=1)
    first, second = _call(800, 400, False), _call(800, 0, True)
    l2 = Buffer("y", 1 << 20, dtype="u8")
    second.late = [Transfer("in", l2, 0, 0, second.dma_in[0].l1, 0, 1, 160, 160)]    # 30 cycles
    r = simulate(_Prog([first, second]), [1000, 1000], h)
    # the first tile's 110 in; then the second's write-back wait (60) and late fetch (30); its 800 B came early
    assert r["dma_exposed_cycles"] == 110 + 60 + 30
    assert r["per_call_dma"] == [170, 110 + 30]
    # all of it late (no prefetch): both fetches wait
    second.prefetch = False
    r = simulate(_Prog([first, second]), [1000, 1000], h)
    assert r["dma_exposed_cycles"] == 110 + 60 + 110 + 30


def test_partial_prefetch_on_resnet8():
    """The inputs of a tile that read what the tile before writes back, or gather into columns it uses, go out
    late (after that write-back); the others are prefetched. ResNet8: a conv's first tile prefetches its weights
    while the ReLU before it computes, and gathers the ReLU's output late."""
    _, prog = _tiled("resnet8", "fp16")
    calls = prog.calls
    lates = [t for t, c in enumerate(calls) if c.late]
    assert lates
    for t in lates:
        c, a = calls[t], calls[t - 1]
        assert c.prefetch and same_block(a, c) and (c.dma_in or c.wait_early)
        a_l1 = {id(v.buf) for v in a.fields.values() if isinstance(v, Ptr)}
        for x in c.late:
            assert any(_overlap(_treg(o), _treg(x)) for o in a.dma_out) or (isinstance(x, Gather) and id(x.l1) in a_l1)
        for x in c.dma_in:
            assert not any(_overlap(_treg(o), _treg(x)) for o in a.dma_out)
    ahead = {t: calls[t].dma_in + [x for i in range(max(0, t - EARLY_SPAN), t) for x in calls[i].early
                                   if calls[t].wait_early] for t in lates}
    assert any(calls[t].kernel.startswith("odl_mm") and any(isinstance(x, Gather) for x in calls[t].late)
               and any(x.l2.role == "param" for x in ahead[t]) for t in lates)


def test_dma_schedule_waits_for_one_tiles_write_backs_not_what_went_out_after():
    """A tile whose kernel reuses the L1 of tile j's write-backs waits for those (wb_wait = j: their ticket, kept in
    a slot of odl_tkr) and everything issued before them, not for a later tile's early gathers behind them."""
    h = Hierarchy(0, 1 << 17, 2048, 8, 0, 1 << 20, dma_bytes_per_cycle=8, dma_setup_cycles=10, dma_channels=1)

    def run(wb_wait):
        calls = [_call(0, 400, False), _call(0, 400, True), _call(0, 0, True), _call(0, 0, True), _call(0, 0, True)]
        # tile 1 issues tile 4's 8000 B gather (1010 cycles) after tile 0's write-back (60 cycles)
        calls[1].early = [Transfer("in", Buffer("g", 8000, dtype="u8"), 0, 0, calls[1].dma_out[0].l1, 0, 1, 8000, 8000)]
        calls[4].wait_early = True
        for c in calls[1:]:
            c.wait_wb = False
        calls[3].wait_wb, calls[3].wb_wait = True, wb_wait
        return simulate(_Prog(calls), [100] * 5, h)
    # tile 0's write-back is done at 160; tile 1's goes out at 200 behind the gather (done 1170), done at 1230
    assert run(0)["per_call_exposed"] == [0, 0, 0, 0, 1170 - 400]
    assert run(-1)["per_call_exposed"] == [0, 0, 0, 1230 - 300, 0]
    # the generated code keeps tile 0's ticket and waits for it
    from odl.codegen.render import call_blocks
    calls = [_call(0, 400, False), _call(0, 400, True), _call(0, 0, True), _call(0, 0, True)]
    calls[3].wait_wb, calls[3].wb_wait = True, 0
    pre = [r["pre"] + r["issue"] for b in call_blocks(enumerate(calls), "fp16") for r in b["calls"]]
    assert "odl_tkr[0] = odl_tkw;" in pre[1] and "odl_dma_wait(odl_tkr[0]);" in pre[3]


def test_dma_schedule_of_a_loop_body_repeats_without_crossing_iterations():
    h = Hierarchy(0, 1 << 17, 2048, 8, 0, 1 << 20, dma_bytes_per_cycle=8, dma_setup_cycles=10, dma_channels=1)
    calls = [_call(800, 0, False, loop=3, group=1), _call(800, 400, True, loop=3, group=1)]
    r = simulate(_Prog(calls), [1000, 1000], h)
    # each iteration: the first tile's fetch is exposed (behind the previous iteration's write-back), the second
    # tile's is prefetched; the last write-back drains at the end
    assert r["dma_exposed_cycles"] == 110 + 2 * (60 + 110) + 60


@pytest.mark.qemu
def test_l1_check_stops_a_kernel_pointer_outside_l1(tmp_path):
    """The validation build checks every pointer a tiled kernel gets: one pointed back into L2 stops the run with
    a report naming the call."""
    from odl.pipeline import build, open_runner
    prep, prog = _tiled("tinycnn", "fp32")
    victim = next(i for i, c in enumerate(prog.calls) if c.kernel == "odl_relu_fwd")
    c = prog.calls[victim]
    c.fields["y"] = Ptr(prog.input)           # an L2 buffer
    elf = build(prog, prep.name, TARGET, 2, tmp_path, defines=["ODL_CHECK_L1"])
    with pytest.raises(Exception) as e:
        with open_runner(TARGET, elf, prog, prep, 2, tmp_path / "run") as r:
            r.link.step(1)
    assert f"[{victim}] odl_relu_fwd" in str(e.value) and "outside L1" in str(e.value)


OVERFLOW_C = r"""
#include <stdint.h>
#include "platform.h"
unsigned char odl_arena[1024] __attribute__((section(".odl_arena"), aligned(64)));
const uint32_t odl_arena_bytes = 1024u;
const uint32_t odl_model_num_calls = 0u;
static int depth(int n) {
  volatile char pad[64];
  for (int i = 0; i < 64; i++) pad[i] = (char)n;
  return n ? depth(n - 1) + pad[n % 64] : 0;
}
float odl_model_step(void) {
  odl_stack_guard_check();
  float r = (float)depth(40);           /* 40 frames of > 64 B: past the 2 KiB stack of hart 0 */
  odl_stack_guard_check();
  return r;
}
"""


@pytest.mark.qemu
def test_stack_guard_names_the_hart_whose_stack_overflowed(tmp_path):
    from odl.run.runners.qemu import QemuRunner
    from odl.target.toolchain import build_firmware
    src = tmp_path / "overflow.c"
    src.write_text(OVERFLOW_C)
    elf = build_firmware(TARGET, "fp32", 2, [src], [], tmp_path / "build", kernels=False, name="overflow")
    with pytest.raises(Exception) as e:
        with QemuRunner(TARGET, elf, 2, tmp_path / "run", timeout=60.0) as r:
            r.link.step(1)
    assert "stack overflow" in str(e.value) and "hart=00000000" in str(e.value)


@pytest.mark.parametrize("geom", [
    dict(c=3, h=7, w=5, kh=3, kw=3, sh=1, sw=1, pt=1, pl=1, ho=7, wo=5),      # same conv, odd sizes
    dict(c=2, h=9, w=6, kh=3, kw=3, sh=2, sw=1, pt=1, pl=1, ho=5, wo=6),      # stride 2 along H only
    dict(c=2, h=4, w=4, kh=3, kw=2, sh=1, sw=1, pt=-2, pl=0, ho=3, wo=3),     # a chunk starting below the top
    dict(c=1, h=3, w=3, kh=5, kw=5, sh=1, sw=1, pt=2, pl=2, ho=3, wo=3),      # kernel larger than the image
    dict(c=2, h=5, w=4, kh=3, kw=3, sh=1, sw=1, pt=3, pl=1, ho=2, wo=4),      # a chunk whose first taps are padding
    dict(c=3, h=9, w=7, kh=3, kw=3, sh=2, sw=2, pt=1, pl=1, ho=5, wo=4),      # stride 2, odd input
    dict(c=2, h=8, w=8, kh=1, kw=1, sh=2, sw=2, pt=0, pl=0, ho=4, wo=4),      # 1x1 stride-2 shortcut
    dict(c=1, h=6, w=10, kh=4, kw=10, sh=2, sw=3, pt=-1, pl=4, ho=2, wo=3),   # wide kernel, stride 3 along W
])
def test_dma_gather_places_every_in_image_element_as_im2col_does(geom):
    """odl.ir.program.Gather's transfers (the same the firmware's odl_dma_im2col issues) applied to a zero column block
    give im2col: in-image elements in place, padding untouched (the kernel's pad_only pass zeroes it)."""
    rng = np.random.default_rng(0)
    g = geom
    x = rng.standard_normal((g["c"], g["h"], g["w"])).astype(np.float32) + 10      # no zeros in x
    xb, cb = Buffer("x", x.size), Buffer("col", g["c"] * g["kh"] * g["kw"] * g["ho"] * g["wo"])
    t = Gather(xb, 0, 0, cb, 0, g)
    col = np.full(cb.nelem, np.nan, np.float32)
    flat = x.reshape(-1)
    for l2o, l1o, rows, n, l2s, l1s in t.pieces():
        for r in range(rows):
            src, dst = l2o + r * l2s, l1o + r * l1s
            assert np.isnan(col[dst:dst + n]).all()     # every element is written once
            col[dst:dst + n] = flat[src:src + n]
    ref = im2col_ref(x, g["kh"], g["kw"], g["sh"], g["sw"], g["pt"], g["pl"], g["ho"], g["wo"])
    assert (np.isnan(col) == (ref.reshape(-1) == 0)).all()     # the data transfers write exactly the image
    for l1o, rows, n, l1s in t.zeros():                           # then the zero fill, exactly the padding
        for r in range(rows):
            dst = l1o + r * l1s
            assert np.isnan(col[dst:dst + n]).all()
            col[dst:dst + n] = 0
    np.testing.assert_array_equal(col.reshape(ref.shape), ref)
    assert t.nbytes(4) == 4 * cb.nelem and dataclasses.replace(t, zero=False).nbytes(4) == 4 * int((ref != 0).sum())


@pytest.mark.parametrize("geom", [
    dict(c=3, h=7, w=5, kh=3, kw=3, sh=1, sw=1, pt=1, pl=1, ho=7, wo=5),      # same conv, odd sizes, whole image
    dict(c=5, h=6, w=6, kh=3, kw=3, sh=1, sw=1, pt=1, pl=1, ho=2, wo=6),      # the top chunk
    dict(c=4, h=6, w=6, kh=3, kw=3, sh=1, sw=1, pt=-2, pl=1, ho=2, wo=6),     # a middle chunk
    dict(c=2, h=6, w=7, kh=3, kw=3, sh=1, sw=1, pt=-3, pl=1, ho=3, wo=7),     # the bottom chunk
    dict(c=1, h=3, w=3, kh=5, kw=5, sh=1, sw=1, pt=2, pl=2, ho=3, wo=3),      # kernel larger than the image
    dict(c=2, h=5, w=4, kh=3, kw=3, sh=1, sw=1, pt=3, pl=1, ho=2, wo=4),      # a chunk whose first taps are padding
    dict(c=3, h=5, w=6, kh=3, kw=4, sh=1, sw=1, pt=1, pl=2, ho=5, wo=6),      # even kernel, asymmetric padding
    dict(c=3, h=4, w=5, kh=1, kw=1, sh=1, sw=1, pt=0, pl=0, ho=4, wo=5),      # 1x1
])
def test_dma_wide_gather_gives_im2col(geom):
    """Gather.wide (a transfer per tap over all channels, the padding columns it runs over zeroed after): applied in
    issue order to a column block of NaNs, data then edges() then zeros() give im2col exactly, every element written;
    a gather into columns that hold the padding (zero=False) gives it too. Fewer, longer transfers than one per
    column row."""
    from odl.tile.memory import gather_wide
    rng = np.random.default_rng(1)
    g = geom
    assert gather_wide(g, 2)
    x = rng.standard_normal((g["c"], g["h"], g["w"])).astype(np.float32) + 10
    xb, cb = Buffer("x", x.size), Buffer("col", g["c"] * g["kh"] * g["kw"] * g["ho"] * g["wo"])
    ref = im2col_ref(x, g["kh"], g["kw"], g["sh"], g["sw"], g["pt"], g["pl"], g["ho"], g["wo"]).reshape(-1)
    flat = x.reshape(-1)
    for zero in (True, False):
        t = Gather(xb, 0, 0, cb, 0, g, zero=zero, wide=True)
        col = np.full(cb.nelem, np.nan, np.float32) if zero else np.where(ref == 0, 0, np.nan).astype(np.float32)
        for l2o, l1o, rows, n, l2s, l1s in t.pieces():
            for r in range(rows):
                src, dst = l2o + r * l2s, l1o + r * l1s
                assert 0 <= src and src + n <= flat.size            # reads inside x only
                col[dst:dst + n] = flat[src:src + n]
        for l1o, rows, n, l1s in t.edges() + (t.zeros() if zero else []):
            for r in range(rows):
                col[l1o + r * l1s:l1o + r * l1s + n] = 0
        np.testing.assert_array_equal(col, ref)
    narrow = Gather(xb, 0, 0, cb, 0, g)
    assert len(t.pieces()) + len(t.edges()) + len(t.zeros()) < len(narrow.pieces()) + len(narrow.zeros()) or \
        g["c"] == 1


def test_overlap_of_strided_regions_is_exact():
    """The prefetch hazard check: two sets of rows (a matrix's column blocks, one row) share an element exactly when
    _overlap says so (so disjoint column chunks of one tensor prefetch, and touching ones never do)."""
    from odl.tile.tiler import _overlap
    rng = np.random.default_rng(7)
    buf = object()
    for _ in range(20000):
        S = int(rng.integers(1, 13))

        def region():
            rows = int(rng.integers(1, 5))
            n = int(rng.integers(1, S + 4 if rows == 1 else S + 1))
            return (buf, int(rng.integers(0, 31)), rows, n, S if rows > 1 else int(rng.choice([S, n, 5])), 0)
        a, b = region(), region()
        ea = {a[1] + i * a[4] + j for i in range(a[2]) for j in range(a[3])}
        eb = {b[1] + i * b[4] + j for i in range(b[2]) for j in range(b[3])}
        assert _overlap(a, b) == bool(ea & eb), (a[1:], b[1:])


def test_gathered_conv_paths_are_taken():
    """GatherConvs (tests/models/ops_models.py, validated on QEMU in test_ops_qemu) exercises every gathered path:
    strided gathers of single elements, input gradients as convs of dY (flipped weights), weight gradients over
    input-channel ranges."""
    prep = prepare(f"{MODELS / 'ops_models.py'}:GatherConvs", "2x3x21x19", 0, "fp16")
    prog = lower(prep.graph, "fp16", TrainConfig(), memory=HIER)
    gathers = [t for c in prog.calls for t in c.dma_in + c.early if isinstance(t, Gather)]
    assert any(t.geom["sw"] == 2 for t in gathers) and any(t.geom["sw"] == 1 for t in gathers)
    assert any(c.kernel == "odl_conv_wflip" for c in prog.calls)
    assert not any(c.kernel.startswith("odl_col2im") and c.layer in ("c2", "c4") for c in prog.calls)
    # c2's weight gradient: one im2col per range of its 5 input channels, over all 19x17 output pixels
    assert any(t.geom["ho"] == 19 and t.geom["c"] < 5 and t.geom["h"] == 21 for t in gathers)


def test_padding_kernel_skipped_where_zeros_are_in_place():
    """ResNet8's interior im2col chunks reuse the zeros of the chunk two before (same buffer, same padding): their
    gathers write no zeros; the others zero-fill by DMA, so no im2col kernel runs at all."""
    _, prog = _tiled("resnet8", "fp16")
    gathers = [t for c in prog.calls for t in c.dma_in + c.early if isinstance(t, Gather)]
    assert not any(c.kernel == "odl_im2col" for c in prog.calls)
    assert sum(not t.zero for t in gathers) >= 40 and any(t.zero for t in gathers)


@needs_qemu
def test_emulated_dma_catches_a_missing_write_back_wait(monkeypatch):
    """The QEMU DMA carries out transfers only when waited on (targets/rv32-cluster/dma.c), so a schedule that lets a
    kernel overwrite L1 a write-back still reads computes wrong numbers: here every prefetched tile skips waiting
    for the write-backs, and validation fails; with the waits the tile pass keeps (test_validate_qemu), it passes."""
    import odl.tile.tiler as tl
    from odl.verify.validate import validate

    def no_waits(calls, eb):
        for c in calls:
            c.wait_wb = not c.prefetch
    monkeypatch.setattr(tl, "_writeback_waits", no_waits)
    rep = validate("resnet8", precision="fp16", cores=8, log=lambda s: None)
    assert not rep["passed"]


def test_early_gathers_on_resnet8():
    """A strided weight gradient's next channel range is gathered during the row tiles of this one (odl/tile/tiler.py
    _early_gathers): the gathers leave the reader's inputs for an earlier tile's `early`, the reader waits for them,
    and no tile in between fetches anything (nothing queues behind them) but the one right after the issuer, whose
    inputs the issuer prefetches ahead of the gathers (layer3.conv1 forward: the next output row chunk gathers during
    both channel halves of this one; a weight gradient's first gathers during the batch norm's updates). Other inputs
    go at most one tile earlier, past a tile the issuer prefetches, where the L1 they then keep alive longer still
    fits (odl/tile/tiler.py _L1Fit): in ResNet8 FP16 some do."""
    _, prog = _tiled("resnet8", "fp16")
    calls = prog.calls
    issuers = [i for i, c in enumerate(calls) if c.early]
    assert any(isinstance(g, Gather) for i in issuers for g in calls[i].early)
    assert any(not isinstance(g, Gather) for i in issuers for g in calls[i].early)
    assert not any(c.step == "check" for c in calls)
    for i in issuers:
        t = next(j for j in range(i + 1, len(calls)) if calls[j].wait_early)
        assert t - i >= 2 and not any(calls[j].dma_in or calls[j].late for j in range(i + 2, t))
        nxt = calls[i + 1]
        if not all(isinstance(g, Gather) for g in calls[i].early):
            assert t - i == 2
        if nxt.dma_in or nxt.late:
            assert nxt.prefetch and not nxt.late
    # gathers within the reader's pass, and from an earlier pass
    gathered = [(calls[i], calls[next(j for j in range(i + 1, len(calls)) if calls[j].wait_early)])
                for i in issuers if any(isinstance(g, Gather) for g in calls[i].early)]
    assert any((a.layer, a.step) == (b.layer, b.step) for a, b in gathered)
    assert any((a.layer, a.step) != (b.layer, b.step) for a, b in gathered)


def test_cut_fetch_at_the_rows_a_write_back_covers():
    """odl/tile/tiler.py _cut: a 1-D fetch of which the previous tile's write-back covers whole rows splits into those rows
    (late) and the rest, every element fetched once, into the L1 place the whole fetch would give it."""
    from odl.tile.tiler import _cut
    l2 = Buffer("x", 256, dtype="u8")
    l1 = Buffer("t", 64, dtype="u8", space="l1")
    x = Transfer("in", l2, 100, 0, l1, 0, 1, 64, 64)
    o = Transfer("out", l2, 108, 0, Buffer("o", 16, dtype="u8", space="l1"), 0, 4, 4, 16)     # 4 rows of 4, 16 apart

    def elems(t):
        s = t.l1_stride or t.row_elems
        return [(t.l2_elem + r * t.l2_stride + i, t.l1_elem + r * s + i) for r in range(t.rows)
                for i in range(t.row_elems)]
    late, rest = _cut(x, o)
    assert sorted(elems(late)) == sorted(e for e in elems(o) for e in [(e[0], e[0] - 100)])
    got = sorted(e for t in [late] + rest for e in elems(t))
    assert got == [(100 + i, i) for i in range(64)]
    assert all(t.direction == "in" and t.l1 is l1 for t in [late] + rest)
    # a row of the write-back that runs past the fetch: not cut
    assert _cut(x, Transfer("out", l2, 160, 0, l1, 0, 2, 8, 16)) is None
    # nothing covered, or a gather: not cut
    assert _cut(x, Transfer("out", l2, 0, 0, l1, 0, 1, 50, 50)) is None


def test_l1_fit_lengthens_a_life_only_where_it_still_fits():
    """odl/tile/tiler.py _L1Fit.grow: a buffer made alive from an earlier tile moves where nothing alive then is in the way,
    the whole L1 is placed again if that is the only way, and a change that cannot fit is refused leaving every
    span and offset as it was."""
    from odl.tile.tiler import _L1Fit
    bufs = [Buffer(f"b{i}", 64, dtype="u8", space="l1") for i in range(4)]
    # b0 [0, 1], b1 [2, 3], b2 [2, 3], b3 [0, 3]: 192 B of a 200 B L1 at most at once
    spans = [[bufs[0], 0, 1], [bufs[1], 2, 3], [bufs[2], 2, 3], [bufs[3], 0, 3]]
    l1 = _L1Fit(spans, 1, 200)

    def check():
        placed = l1.placed()
        assert l1.peak() <= 200
        for i, (o, s, lo, hi, b) in enumerate(placed):
            assert b.offset == o
            for o2, s2, lo2, hi2, _ in placed[i + 1:]:
                assert hi < lo2 or hi2 < lo or o + s <= o2 or o2 + s2 <= o
    check()
    # b1 alive from tile 1 on: 192 B at tile 1, fits
    assert l1.grow([id(bufs[1])], 1) and spans[1][1] == 1
    check()
    # b2 alive from tile 0 on as well: 256 B at tiles 0-1, refused, nothing changed
    before = [(sp[1], sp[0].offset) for sp in spans]
    assert not l1.grow([id(bufs[2])], 0)
    assert [(sp[1], sp[0].offset) for sp in spans] == before
    check()
    # already alive from there on: nothing to do
    assert l1.grow([id(bufs[3])], 0)


def test_write_backs_no_later_tile_reads_are_dropped():
    """odl/tile/tiler.py _drop_dead_writebacks: a result read by a later tile (or by a tile of its own per-sample loop
    body, or after the rest where updates run apart) keeps its write-back; one nobody reads loses it, unless the
    buffer lives for the whole step."""
    from odl.tile.tiler import _drop_dead_writebacks
    l1 = Buffer("t", 1 << 10, dtype="u8", space="l1")
    x, y, z, p = (Buffer(n, 256, dtype="u8") for n in "xyz" + "p")
    p.persistent = True

    def call(ins, outs, step="forward", loop=0, group=0):
        return Call("odl_copy", {}, "l", step, loop=loop, group=group, origin=0,
                    dma_in=[Transfer("in", b, o, 0, l1, 0, 1, n, n) for b, o, n in ins],
                    dma_out=[Transfer("out", b, o, 0, l1, 0, 1, n, n) for b, o, n in outs])
    calls = [call([], [(x, 0, 64), (y, 0, 64), (p, 0, 64), (z, 128, 64)]), call([(x, 32, 8), (z, 0, 64)], [])]
    assert _drop_dead_writebacks(calls, 1) == (2, 128)
    # x is read (in part) later, p lives for the step; y and z's [128, 192) are never read
    assert [o.l2.name for o in calls[0].dma_out] == ["x", "p"]
    # in a loop body, a read before the write (the next sample's) keeps it
    calls = [call([(y, 0, 64)], [], loop=2, group=1), call([], [(y, 0, 64)], loop=2, group=1)]
    _drop_dead_writebacks(calls, 1)
    assert calls[1].dma_out
    # an update listed before the write but run after the rest (a program with checks)
    calls = [call([(y, 0, 64)], [], step="update"), call([], [(y, 0, 64)]), call([], [], step="check")]
    _drop_dead_writebacks(calls, 1)
    assert calls[1].dma_out
