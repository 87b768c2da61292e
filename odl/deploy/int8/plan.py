"""Arena offsets of an Int8Program's tensors: each lives from the call that writes it to the last call that reads it
(the FP32 input from odl_predict's normalisation to the quantization), and takes the lowest 4-byte aligned offset
free over its life (first fit, largest first)."""
from __future__ import annotations

from odl.deploy.int8.program import Int8Program

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
