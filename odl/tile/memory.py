"""The target's memory hierarchy (targets/<target>/target.json "memory") and the DMA timing model.

A GAP9-class cluster: kernels read and write only the L1 (TCDM) shared by the cores; tensors live in the L2 arena;
a cluster DMA moves tiles between them. odl/tile/tiler.py cuts every kernel call into tiles that fit L1 and attaches the
transfers; this module says what the memories are and how long the transfers take.

DMA timing (deterministic, the same in the profile, bench and the memory report): one FIFO queue; a transfer
(1-D, or 2-D: `rows` rows with a source or destination stride) takes `setup_cycles + max(rows, ceil(bytes /
bytes_per_cycle))` cycles on the DMA engine (a row is a burst: at least a cycle) and starts when the engine is free
and the cores have issued it. On QEMU a transfer is a copy by hart 0 between kernel calls, outside the counted
kernel work, so the cores are not charged for it; its time is this model's.

The schedule the generated code follows (and `simulate` replays), for tile t of a block (a per-sample loop body, or
a run of calls outside loops):
    if t's inputs were not prefetched: issue t-1's results, then t's inputs; wait for them
    if only some were (the rest read what t-1 writes back: late): issue t-1's results, then the late inputs; wait
    else: wait for t's prefetched inputs and, if t's kernel touches L1 they still read, for the write-backs issued
          up to the last such tile's (odl/tile/tiler.py sets wait_wb and wb_wait; everything issued before them too)
    if tile t+1 may be prefetched (same block, reads nothing t writes): issue its inputs; if they read what t-1
          wrote (wb_first), issue t-1's results before them
    issue t-1's results (if not done above): they drain while t computes, behind the prefetch
    issue the gathers of a later tile that go out early (odl/tile/tiler.py _early_gathers; that tile waits for them)
    compute t (fork/join of the cores)
    the last tile of a block issues its own results after it.
Inputs go ahead of write-backs on the one channel, so a large write-back does not delay the next tile's inputs.
Step cycles = compute (kernels + fork/join) + DMA time the cores waited for ("exposed").
"""
from __future__ import annotations

from dataclasses import dataclass

from odl.common.errors import OdlError

MODELS = ("flat", "hierarchy")
WB_TICKETS = 16     # slots keeping the tickets of the write-backs a later tile waits for (Call.wb_wait; tile % 16)


@dataclass(frozen=True)
class Hierarchy:
    l1_addr: int
    l1_bytes: int                  # all of L1, runtime and per-hart stacks included
    stack_bytes_per_hart: int
    harts: int
    l2_addr: int
    l2_bytes: int
    dma_bytes_per_cycle: int
    dma_setup_cycles: int
    dma_channels: int
    rom_bytes: int = 0             # read-only level for frozen weights (target.json memory.rom), 0: none
    rom_bytes_per_cycle: int = 1   # the DMA reading it: its bandwidth and access latency
    rom_setup_cycles: int = 0

    @property
    def stacks_bytes(self) -> int:
        return self.stack_bytes_per_hart * self.harts

    @property
    def l1_data_bytes(self) -> int:
        """L1 left for tiles after the per-hart stacks."""
        return self.l1_bytes - self.stacks_bytes

    def transfer_cycles(self, nbytes: int, rows: int = 1, rom: bool = False) -> int:
        """Setup, then the bytes at the engine's bandwidth, each row (burst) taking at least a cycle; from the
        read-only level (rom), its own setup (access latency) and bandwidth."""
        if not nbytes:
            return 0
        if rom:
            return self.rom_setup_cycles + max(rows, -(-nbytes // self.rom_bytes_per_cycle))
        return self.dma_setup_cycles + max(rows, -(-nbytes // self.dma_bytes_per_cycle))


def _int(v) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)


def rom_of(target) -> dict:
    """The target's read-only level for frozen weights (target.json memory.rom: bytes, bytes_per_cycle,
    setup_cycles), {} when it has none. Frozen weights placed there (TrainConfig.frozen) are outside the L2 budget;
    on QEMU the level is RAM past the arena."""
    r = (target.raw.get("memory") or {}).get("rom") or {}
    if not r:
        return {}
    out = {"bytes": _int(r["bytes"]), "bytes_per_cycle": int(r["bytes_per_cycle"]),
           "setup_cycles": int(r["setup_cycles"])}
    if out["bytes"] <= 0 or out["bytes_per_cycle"] < 1 or out["setup_cycles"] < 0:
        raise OdlError(f"target {target.name!r}: memory.rom needs bytes > 0, bytes_per_cycle >= 1 and setup_cycles "
                       f">= 0, not {r}")
    return out


def hierarchy_of(target) -> Hierarchy:
    m = target.raw.get("memory")
    if not m:
        raise OdlError(f"target {target.name!r} describes no memory hierarchy (no \"memory\" in its target.json): "
                       f"use --memory flat")
    l1, l2, dma = m["l1"], m["l2"], m["dma"]
    rom = rom_of(target)
    h = Hierarchy(l1_addr=_int(l1["addr"]), l1_bytes=_int(l1["bytes"]),
                  stack_bytes_per_hart=_int(l1["stack_bytes_per_hart"]), harts=int(target.harts),
                  l2_addr=_int(l2["addr"]), l2_bytes=_int(l2["bytes"]),
                  dma_bytes_per_cycle=int(dma["bytes_per_cycle"]), dma_setup_cycles=int(dma["setup_cycles"]),
                  dma_channels=int(dma.get("channels", 1)), rom_bytes=rom.get("bytes", 0),
                  rom_bytes_per_cycle=rom.get("bytes_per_cycle", 1), rom_setup_cycles=rom.get("setup_cycles", 0))
    if h.dma_channels != 1:
        raise OdlError(f"target {target.name!r}: DMA channels = {h.dma_channels}; the DMA model has one FIFO "
                       f"channel (set \"channels\": 1)")
    if h.l1_data_bytes <= 0:
        raise OdlError(f"target {target.name!r}: L1 ({h.l1_bytes} B) is smaller than the stacks ({h.stacks_bytes} B)")
    return h


def memory_for(target, model: str) -> Hierarchy | None:
    """--memory flat|hierarchy -> the Hierarchy to tile for (None: flat)."""
    if model not in MODELS:
        raise OdlError(f"--memory {model!r}: choose one of {', '.join(MODELS)}")
    return hierarchy_of(target) if model == "hierarchy" else None


DMA_ZERO_BYTES = 256     # the firmware's zero row (ODL_DMA_ZERO_BYTES, odl_dma.h): gathers zero-fill rows this long
GATHER_MIN_ROW = 8      # a strided gather's transfers move rows of single elements: gather when they are this long


def gathers(geom: dict) -> bool:
    """Is an im2col block with this geometry gathered by the DMA (odl/tile/tiler.py, odl.ir.program.Gather) rather than built by
    the cores? Undilated convs whose transfers are contiguous rows (stride 1 along W), or, with a stride, hold at
    least GATHER_MIN_ROW elements each (each transfer costs its setup: shorter ones exposed more DMA than the cores'
    im2col cost on DS-CNN's stem, measured)."""
    return "dh" not in geom and (geom["sw"] == 1 or geom["wo"] >= GATHER_MIN_ROW)


def gather_wide(geom: dict, elem_bytes: int) -> bool:
    """May a gather with this geometry run wide (odl.ir.program.Gather.wide: a transfer per tap over all channels)? Stride 1,
    output rows as wide as the input's (x's rows then follow one another as the output's do), and every zero run it
    writes within the firmware's zero row."""
    from odl.ir.program import Gather
    g = geom
    if "dh" in g or g["sh"] != 1 or g["sw"] != 1 or g["wo"] != g["w"]:
        return False
    t = Gather(None, 0, 0, None, 0, g, wide=True)
    return max((n for _, _, n, _ in t.zeros() + t.edges()), default=0) * elem_bytes <= DMA_ZERO_BYTES


def dma_cycles(transfers, hier: Hierarchy, elem_bytes: int) -> int:
    """Cycles of these transfers on the DMA engine."""
    return sum(hier.transfer_cycles(b, r, getattr(t.l2, "space", "l2") == "rom") for t in transfers
               for b, r in t.shapes(elem_bytes))


def tile_dma(call, hier: Hierarchy, elem_bytes: int) -> tuple[int, int]:
    """(in cycles, out cycles) of one tile call's transfers on the DMA engine."""
    return dma_cycles(call.dma_in, hier, elem_bytes), dma_cycles(call.dma_out, hier, elem_bytes)


def same_block(a, b) -> bool:
    """Do two consecutive tile calls run in one block (both outside per-sample loops, or in the same loop body)?"""
    return (a.loop == 0 and b.loop == 0) or bool(a.loop and b.loop and a.group == b.group)


def simulate(prog, compute: list[int], hier: Hierarchy) -> dict:
    """Replay the DMA schedule of a tiled program (see the module docstring). compute[i]: cycles of call i per
    invocation (critical path + fork/join). Per-sample loop bodies run `loop` times. Returns step cycles, DMA busy
    cycles, exposed (waited) cycles, and per-call DMA / exposed cycles summed over invocations."""
    eb = prog.elem_bytes
    calls = prog.calls
    seq: list[tuple[int, int]] = []     # (call index, block number) in execution order (loop bodies expanded)
    i, blk = 0, 0
    while i < len(calls):
        c = calls[i]
        if c.loop:
            j = i
            while j < len(calls) and calls[j].loop and calls[j].group == c.group:
                j += 1
            for _ in range(c.loop):
                blk += 1
                seq.extend((k, blk) for k in range(i, j))
            i = j
        else:
            if not (seq and calls[seq[-1][0]].loop == 0):
                blk += 1
            seq.append((i, blk))
            i += 1
    dma = [tile_dma(c, hier, eb) for c in calls]
    early = [dma_cycles(c.early, hier, eb) for c in calls]
    late = [dma_cycles(c.late, hier, eb) for c in calls]
    per_dma = [0] * len(calls)
    per_exposed = [0] * len(calls)
    state = {"free": 0}

    def issue(now, cycles):
        if not cycles:
            return now
        start = max(now, state["free"])
        state["free"] = start + cycles
        return state["free"]
    t = 0                  # the cores' clock
    tk = 0                 # completion of the fetch of the tile to run next
    tkw = 0                # completion of the last write-back issued
    tg = 0                 # completion of the last early gather (odl/tile/tiler.py _early_gathers)
    pending = None         # write-back cycles of the previous tile of this block, not issued yet
    kept = {c.wb_wait for c in calls if c.wait_wb and c.wb_wait >= 0}
    tkr = [0] * WB_TICKETS  # completion of the write-backs of the last kept tile of each slot (codegen odl_tkr)

    def write_back(ci, now, cycles):
        done = issue(now, cycles)
        if ci in kept and cycles:
            tkr[ci % WB_TICKETS] = done
        return done
    for pos, (ci, b) in enumerate(seq):
        c = calls[ci]
        cin, cout = dma[ci]
        prev_same = pos > 0 and seq[pos - 1][1] == b
        next_same = pos + 1 < len(seq) and seq[pos + 1][1] == b
        prefetched = c.prefetch and prev_same
        now = late[ci] if prefetched else cin + late[ci]     # inputs issued at this tile
        if now:
            if pending is not None:
                tkw = write_back(ci - 1, t, pending)
                pending = None
            tk = issue(t, now)
            ready = tk
        elif not prefetched:
            ready = max(tk, tkw)
        elif c.wait_wb:
            ready = max(tk, tkr[c.wb_wait % WB_TICKETS] if c.wb_wait >= 0 else tkw)
        else:
            ready = tk
        if c.wait_early:
            ready = max(ready, tg)
        if ready > t:
            per_exposed[ci] += ready - t
            t = ready
        if next_same and calls[seq[pos + 1][0]].prefetch:
            if calls[seq[pos + 1][0]].wb_first and pending is not None:
                tkw = write_back(ci - 1, t, pending)
                pending = None
            tk = issue(t, dma[seq[pos + 1][0]][0])
        if pending is not None:
            tkw = write_back(ci - 1, t, pending)
            pending = None
        if early[ci]:                   # a later tile's gathers, behind this tile's write-backs
            tg = issue(t, early[ci])
            per_dma[ci] += early[ci]
        t += compute[ci]
        if next_same:
            pending = cout
        elif cout:
            tkw = write_back(ci, t, cout)
        per_dma[ci] += cin + late[ci] + cout
    if state["free"] > t:
        per_exposed[seq[-1][0] if seq else 0] += state["free"] - t
        t = state["free"]
    total_compute = sum(compute[ci] for ci, _ in seq)
    return {"step_cycles": t, "compute_cycles": total_compute, "dma_cycles": sum(per_dma),
            "dma_exposed_cycles": t - total_compute, "per_call_dma": per_dma, "per_call_exposed": per_exposed}
