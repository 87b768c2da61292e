"""Static memory planning: every buffer of the training step gets a byte offset in one arena.

Buffers the host preloads (parameters, input, labels) come first, contiguous, so one blob fills them.
Every other buffer lives from its first to its last use (persistent ones for the whole step) and is placed
first-fit, largest first, at the lowest offset that overlaps no buffer alive at the same time.
"""
from __future__ import annotations

from dataclasses import dataclass

from odl.common.errors import OdlError
from odl.ir.program import Program
from odl.common.precision import align as _align



class OverBudget(OdlError):
    """A step whose arena exceeds the memory budget (exit 2, as any OdlError); `over`: by how many bytes."""

    def __init__(self, msg: str, over: int):
        super().__init__(msg)
        self.over = over


@dataclass
class MemoryReport:
    arena_bytes: int
    naive_bytes: int
    budget_bytes: int | None
    peak_call: int
    peak_live: list[tuple[str, int]]   # largest live buffers at the peak (name, bytes)
    recomputed: tuple = ()             # values freed after the forward and recomputed for the backward (fit)
    auto: dict | None = None           # --train auto: what it chose and the bytes (odl/plan/sparse.py)
    hierarchy: str = ""                # the tile pass's summary (memory hierarchy), empty for flat memory
    rom_bytes: int = 0                 # frozen weights in the read-only level (outside the arena and the budget)
    rom_tensors: int = 0
    kept: dict | None = None           # bytes alive from the forward into the backward (lower.fp8.kept_for_backward)

    def text(self) -> str:
        lines = [f"arena {self.arena_bytes} B (sum of all buffers {self.naive_bytes} B"
                 + (f", budget {self.budget_bytes} B)" if self.budget_bytes else ")")]
        if self.rom_bytes:
            lines.append(f"frozen weights in the read-only level (outside the budget): {self.rom_tensors} tensors, "
                         f"{self.rom_bytes} B")
        if self.kept:
            lines.append(f"kept for the backward: {self.kept['bytes']} B in {self.kept['tensors']} tensors"
                         + (f" ({self.kept['fp8_bytes']} B of them FP8)" if self.kept["fp8_bytes"] else ""))
        if self.recomputed:
            lines.append(f"recomputed in the backward (cheap, to shrink the arena): {', '.join(self.recomputed)}")
        if self.hierarchy:
            lines.append(self.hierarchy)
        lines.append(f"peak at call {self.peak_call}; largest live buffers there:")
        lines += [f"  {n:40s} {b:10d} B" for n, b in self.peak_live[:8]]
        return "\n".join(lines)


def first_fit(items: list, fixed: list = ()) -> list:
    """Place buffers by lifetime: items (buffer, size, first, last) largest first, each at the lowest offset that
    overlaps no buffer alive at the same time (the fixed ones (offset, size, first, last, buffer) included); sets
    each buffer's offset. Returns the placed (offset, size, first, last, buffer). Shared by the L2 arena (lifetimes
    in calls) and the L1 tiles (lifetimes in tiles, odl/tile/tiler.py)."""
    alive: dict[int, list] = {}

    def mark(o, s, lo, hi):
        for t in range(lo, hi + 1):
            alive.setdefault(t, []).append((o, s))
    for o, s, lo, hi, _ in fixed:
        mark(o, s, lo, hi)
    placed = []
    for b, size, lo, hi in sorted(items, key=lambda it: -it[1]):
        cand = lowest_free(alive, size, lo, hi)
        b.offset = cand
        placed.append((cand, size, lo, hi, b))
        mark(cand, size, lo, hi)
    return placed


def lowest_free(alive: dict, size: int, lo: int, hi: int) -> int:
    """The lowest offset where `size` bytes overlap none of the (offset, size) ranges alive (alive: time -> ranges)
    at any time in lo..hi."""
    cand = 0
    for o, s in sorted({os_ for t in range(lo, hi + 1) for os_ in alive.get(t, ())}):
        if cand + size <= o:
            break
        cand = max(cand, o + s)
    return cand


def _hierarchy_text(prog: Program) -> str:
    h = prog.memory
    if h is None:
        return ""
    eb = prog.elem_bytes
    resident = sorted({b.name for b in prog.buffers if b.role == "l1_resident"})
    tin = [t for c in prog.calls for t in c.dma_in + c.late + c.early]
    tout = [t for c in prog.calls for t in c.dma_out]
    origins = len({c.origin for c in prog.calls})
    return (f"memory hierarchy: {len(prog.calls)} L1 tiles from {origins} kernel calls; L1 {prog.l1_peak_bytes} B at "
            f"the busiest tile of {h.l1_data_bytes} B for tiles ({h.l1_bytes} B L1 less {h.stacks_bytes} B of "
            f"stacks); DMA per step (per-sample loops once): {sum(t.nbytes(eb) for t in tin)} B in, "
            f"{sum(t.nbytes(eb) for t in tout)} B out, {len(tin) + len(tout)} transfers, "
            f"{sum(c.prefetch and bool(c.dma_in) for c in prog.calls)} tiles prefetched during the previous tile, "
            f"{sum(c.wait_early for c in prog.calls)} fetching some inputs earlier still, "
            f"{prog.dropped_writebacks[0]} write-backs ({prog.dropped_writebacks[1]} B) dropped as nothing reads them"
            + (f"; kept in L1 for their whole life (no L2): {', '.join(resident)}" if resident else ""))


def _place_rom(prog: Program, arena: int) -> None:
    """Frozen weights in the read-only level (Buffer.space 'rom'): one after another from the first aligned offset
    past the L2 working area, so that the generated code addresses them as it does the arena and the host's preload
    blob reaches them; none of it counts against the budget."""
    rom = [b for b in prog.preload if b.space == "rom"]
    prog.rom_offset = _align(arena) if rom else 0
    prog.rom_bytes = _one_after_another(rom, prog.rom_offset, prog.elem_bytes) - prog.rom_offset


def _one_after_another(bufs: list, start: int, eb: int) -> int:
    """Place bufs contiguously (each aligned) from offset `start`; the offset past the last."""
    off = start
    for b in bufs:
        b.offset = off
        off = _align(off + b.nbytes(eb))
    return off


def call_spans(calls: list) -> list[tuple[int, int]]:
    """Per call, the calls across which the buffers it uses must live: calls of one per-sample loop run interleaved
    (sample n+1's first call after sample n's last), so a buffer used anywhere in the loop lives across all of it;
    outside loops, the call itself."""
    body: dict[int, tuple[int, int]] = {}
    for i, c in enumerate(calls):
        if c.loop:
            lo, _ = body.get(c.group, (i, i))
            body[c.group] = (lo, i)
    return [body[c.group] if c.loop else (i, i) for i, c in enumerate(calls)]


def plan(prog: Program, budget_bytes: int | None = None) -> MemoryReport:
    eb = prog.elem_bytes
    ncalls = len(prog.calls)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    spans = call_spans(prog.calls)
    for i, c in enumerate(prog.calls):
        lo, hi = spans[i]
        for b in c.buffers():
            if b.space != "l2":
                continue
            first.setdefault(id(b), lo)
            last[id(b)] = hi
    used = [b for b in prog.buffers if b.space == "l2" and (id(b) in first or b.persistent or b in prog.preload)]
    preload_ids = {id(b) for b in prog.preload}

    def life(b):
        if b.persistent or id(b) in preload_ids:
            return 0, ncalls
        return first[id(b)], last[id(b)]

    l2_preload = [b for b in prog.preload if b.space == "l2"]
    _one_after_another(l2_preload, 0, eb)
    placed = [(b.offset, _align(b.nbytes(eb)), 0, ncalls, b) for b in l2_preload]
    rest = [b for b in used if id(b) not in preload_ids]
    placed += first_fit([(b, _align(max(b.nbytes(eb), 1)), *life(b)) for b in rest], placed)

    arena = max((o + s for o, s, *_ in placed), default=0)
    naive = sum(s for _, s, *_ in placed)
    # peak: the call where live bytes are largest
    peak_i, peak_bytes, peak_live = 0, -1, []
    for i in range(max(ncalls, 1)):
        live = [(b.name, s) for o, s, l0, l1, b in placed if l0 <= i <= l1]
        tot = sum(s for _, s in live)
        if tot > peak_bytes:
            peak_i, peak_bytes, peak_live = i, tot, sorted(live, key=lambda t: -t[1])
    prog.arena_bytes = arena
    prog.naive_bytes = naive
    _place_rom(prog, arena)
    rep = MemoryReport(arena, naive, budget_bytes, peak_i, peak_live, hierarchy=_hierarchy_text(prog),
                       rom_bytes=prog.rom_bytes, rom_tensors=sum(b.space == "rom" for b in prog.preload))
    if budget_bytes is not None and arena > budget_bytes:
        big = ", ".join(f"{n} ({s} B)" for n, s in peak_live[:5])
        raise OverBudget(f"the training step needs a {arena}-byte arena, over the target's budget of {budget_bytes} "
                         f"bytes by {arena - budget_bytes}; largest live buffers at the peak: {big}",
                         over=arena - budget_bytes)
    return rep
