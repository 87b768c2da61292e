"""Arena offsets of an Int8Program's tensors: each lives from the call that writes it to the last call that reads it
(the FP32 input from odl_predict's normalisation to the quantization), and takes the lowest 4-byte aligned offset
free over its life (first fit, largest first); then where the arena lives (place: L1 with a staging buffer for each
layer's constants when both fit beside the stacks, else L2)."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

from odl.deploy.int8.program import Int8Program, Ref

ALIGN = 4


def _lives(P: Int8Program) -> dict[str, list[int]]:
    life: dict[str, list[int]] = {P.input: [-1, -1]}
    for i, c in enumerate(P.calls):
        for r in c.reads:
            life.setdefault(P.root(r), [i, i])[1] = i
        if c.writes:
            life.setdefault(P.root(c.writes), [i, i])
    return life


def plan(P: Int8Program) -> int:
    """Set every tensor's offset; returns the arena's size in bytes."""
    life = _lives(P)
    placed: list[tuple[int, int, int, int]] = []          # (start, end, offset, size)
    for name in sorted(life, key=lambda n: (-P.tensors[n].nbytes, life[n][0])):
        t, (s, e) = P.tensors[name], life[name]
        size = -(-t.nbytes // ALIGN) * ALIGN
        off = 0
        for ps, pe, po, pz in sorted(placed, key=lambda p: p[2]):
            if ps <= e and s <= pe and off < po + pz and po < off + size:
                off = po + pz
        placed.append((s, e, off, size))
        t.offset = off
    for i, (s, e, o, z) in enumerate(placed):      # no two tensors alive at once share a byte
        for s2, e2, o2, z2 in placed[i + 1:]:
            assert not (s <= e2 and s2 <= e and o < o2 + z2 and o2 < o + z), "int8 arena plan overlaps"
    for t in P.tensors.values():
        if t.alias:
            t.offset = P.tensors[P.root(t.name)].offset
    return max((o + z for _, _, o, z in placed), default=0)


@dataclass
class Placement:
    """Where the program's memory lives (odl_model.c). In L1 when the arena and the staging buffer fit beside the
    stacks: the kernels then read and write L1 only, as the training library's tiles do, and hart 0 copies each
    layer's constants (weights, biases, multipliers: resident in L2 / flash) into the staging buffer by DMA before
    the layer's first call. Otherwise the arena is in L2 and the kernels read the constants where they are."""
    l1: bool
    stage_bytes: int                                   # the staging buffer (0 when not in L1)
    offsets: dict = field(default_factory=dict)        # constant -> its offset in the staging buffer
    before: dict = field(default_factory=dict)         # call index -> the constants staged before it
    budget: int = 0                                    # L1 beside the stacks


def place(P: Int8Program, arena_bytes: int, l1_budget: int) -> Placement:
    """Each graph node's constants (in the order its calls name them) at 4-byte aligned offsets from 0 of one staging
    buffer, as large as the largest node's; in L1 when arena (16-byte aligned) + buffer <= l1_budget."""
    offsets, before, size, seen = {}, {}, 0, set()
    for node, run in groupby(enumerate(P.calls), key=lambda ic: ic[1].node):   # each node's calls, in order
        assert node not in seen, "int8 program: a node's calls are not contiguous (its staged constants)"
        seen.add(node)
        run = list(run)
        i = run[0][0]
        names = []
        for _, c in run:
            names += [v.name for v in c.args.values() if isinstance(v, Ref) and v.kind == "c" and v.name not in names]
        off = 0
        for n in names:
            offsets[n] = off
            off += -(-P.consts[n].nbytes // ALIGN) * ALIGN
        if names:
            before[i] = names
        size = max(size, off)
    l1 = -(-arena_bytes // 16) * 16 + size <= l1_budget
    return Placement(l1, size if l1 else 0, offsets if l1 else {}, before if l1 else {}, l1_budget)
