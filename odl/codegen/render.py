"""Render a planned Program to C with the jinja2 templates in codegen/."""
from __future__ import annotations

from pathlib import Path

import jinja2

from odl import __version__
from odl.ir import kernels
from odl.ir.program import Gather
from odl.lower.lowering import MAX_CORES, CExpr, Program, Ptr
from odl.tile.memory import WB_TICKETS, same_block
from odl.common.resources import resource_dir
from odl.common.precision import DTYPE_BYTES, precision_of

_PTR = {"odl": "T", "f32": "F32", "i32": "I32", "u8": "U8", "f8": "U8"}
_PTR_L1 = {"odl": "LT", "f32": "LF32", "i32": "LI32", "u8": "LU8", "f8": "LU8"}


def _c_value(v) -> str:
    if isinstance(v, Ptr):
        base = f"{(_PTR_L1 if v.buf.space == 'l1' else _PTR)[v.buf.dtype]}({v.buf.macro})"
        extra = []
        if v.elem:
            extra.append(str(v.elem))
        if v.per_sample:
            extra.append(f"n * {v.per_sample}")
        return base + "".join(f" + {e}" for e in extra)
    if v is None:
        return "0"
    if isinstance(v, CExpr):
        return f"({v})"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.9g}f" if ("." in f"{v:.9g}" or "e" in f"{v:.9g}") else f"{v:.1f}f"
    raise TypeError(f"cannot render {v!r}")


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _transfer(t, eb: int) -> str:
    """odl_dma_start(...) for one Transfer, odl_dma_im2col(...) for one Gather (odl/ir/program.py)."""
    es = eb if t.l1.dtype == "odl" else DTYPE_BYTES[t.l1.dtype]
    l2 = _c_value(Ptr(t.l2, t.per_sample, t.l2_elem))
    l1 = _c_value(Ptr(t.l1, 0, t.l1_elem))
    if isinstance(t, Gather):
        g = t.geom
        return (f"odl_dma_im2col({l1}, {l2}, {es}u, " +
                ", ".join(str(g[k]) for k in ("c", "h", "w", "kh", "kw", "sh", "sw", "pt", "pl", "ho", "wo")) +
                f", {int(t.zero) | 2 * int(t.wide)})")      # ODL_IM2COL_ZERO | ODL_IM2COL_WIDE
    row, l1s, l2s = t.row_elems * es, (t.l1_stride or t.row_elems) * es, t.l2_stride * es
    if t.direction == "in":
        return f"odl_dma_start({l1}, {l2}, {row}u, {t.rows}u, {l1s}u, {l2s}u)"
    return f"odl_dma_start({l2}, {l1}, {row}u, {t.rows}u, {l2s}u, {l1s}u)"


def _dma_lines(c, prev, nxt, eb: int, prefetched: bool, keep_prev: str = "", keep: str = "",
               wait_wb: str = "odl_tkw") -> tuple[list[str], list[str]]:
    """C statements around a tiled call, the schedule odl/tile/memory.py models. prev / nxt: the tiles before and after
    in the same block (None at a block's edge). The previous tile's write-backs are issued here, after this tile's
    prefetch of the next one, so that inputs go first on the one DMA channel; the last tile of a block issues its
    own after the call. odl_tk: ticket of the fetch of the tile to run next; odl_tkw: of the last write-back.
    keep_prev / keep: where to keep the ticket of prev's / this tile's write-backs (a later tile waits for them,
    wb_wait); wait_wb: the ticket a wait for write-backs waits for."""
    pre, post = [], []
    wb_prev = [f"odl_tkw = {_transfer(t, eb)};" for t in (prev.dma_out if prev is not None else [])]
    if wb_prev and keep_prev:
        wb_prev.append(f"{keep_prev} = odl_tkw;")
    now = c.late if prefetched else c.dma_in + c.late        # inputs issued here (late: the rest was prefetched)
    if now:
        pre += wb_prev                  # this tile may read what the previous one wrote: its results go first
        wb_prev = []
        pre += [f"odl_tk = {_transfer(t, eb)};" for t in now]
        pre.append("odl_dma_wait(odl_tk);")     # (one FIFO channel: everything issued before is done too)
    else:
        pre.append("odl_dma_wait(odl_tk);")      # this tile's prefetched inputs
        if c.wait_wb or not prefetched:          # write-backs of two or more tiles ago, when their L1 is reused now
            pre.append(f"odl_dma_wait({wait_wb if prefetched else 'odl_tkw'});")
    if nxt is not None and nxt.prefetch:
        if nxt.wb_first:                # the prefetch reads what these write back: they go first
            pre += wb_prev
            wb_prev = []
        pre += [f"odl_tk = {_transfer(t, eb)};" for t in nxt.dma_in]
    pre += wb_prev
    pre += [f"odl_tg = {_transfer(t, eb)};" for t in c.early]      # a later tile's gathers (odl/tile/tiler.py)
    if c.wait_early:
        pre.insert(0, "odl_dma_wait(odl_tg);")
    if nxt is None:
        post += [f"odl_tkw = {_transfer(t, eb)};" for t in c.dma_out]
        if post and keep:
            post.append(f"{keep} = odl_tkw;")
    return pre, post


def split_issue(pre: list[str]) -> tuple[list[str], list[str]]:
    """A tiled call's statements before its kernel -> (those up to its last DMA wait, the rest). The rest only
    issues transfers for later tiles (prefetches, the previous tile's write-backs, early gathers) and keeps their
    tickets: nothing the kernel reads or writes, so with a DMA controller (ODL_DMA_CTRL) it runs on the controller
    hart while the cores run the kernel (ODL_ISSUE, targets/rv32-cluster/odl_dma.h)."""
    last = max((k for k, line in enumerate(pre) if line.startswith("odl_dma_wait(")), default=-1)
    return pre[:last + 1], pre[last + 1:]


def call_blocks(indexed_calls, precision: str = "fp32") -> list[dict]:
    """(index, Call) pairs -> template blocks: consecutive calls of one per-sample loop group share a block. Tiled
    calls (memory hierarchy) get their DMA statements (pre, post) and, with ODL_CHECK_L1, checks that every
    pointer they pass lies in L1."""
    eb = precision_of(precision).elem_bytes
    blocks = []
    seq = list(indexed_calls)
    pos = {i: p for p, (i, _) in enumerate(seq)}
    # a wait for the write-backs of a given tile (wb_wait) keeps that tile's ticket in a slot of odl_tkr, when this
    # sequence renders every tile from there on (train renders subsets of a program's calls); else it waits for all
    waits = {i: c.wb_wait for i, c in seq
             if c.wb_wait >= 0 and c.wb_wait in pos and pos[i] - pos[c.wb_wait] == i - c.wb_wait}
    kept = set(waits.values())

    def slot(j):
        return f"odl_tkr[{j % WB_TICKETS}]" if j in kept else ""
    for p, (i, c) in enumerate(seq):
        # neighbours in the same block of this sequence
        nxt = seq[p + 1][1] if p + 1 < len(seq) and seq[p + 1][0] == i + 1 else None
        prev = seq[p - 1][1] if p > 0 and seq[p - 1][0] == i - 1 else None
        nxt = nxt if nxt is not None and same_block(c, nxt) else None
        prev = prev if prev is not None and same_block(prev, c) else None
        prefetched = c.prefetch and prev is not None
        pre, post = _dma_lines(c, prev, nxt, eb, prefetched, slot(i - 1), slot(i),
                               slot(waits[i]) if i in waits else "odl_tkw") if c.origin >= 0 else ([], [])
        pre, issue = split_issue(pre)
        checks = [(k, f"[{i}] {c.kernel} {c.layer} {c.step} .{k}") for k, v in c.fields.items()
                  if isinstance(v, Ptr)] if c.origin >= 0 else []
        fields = [(k, _c_value(v)) for k, v in c.fields.items()]
        # arguments that are all compile-time constants (no run-time expression, no per-sample index n) are a
        # constant in memory, not built on the issuing hart's stack at every call
        static = not any(isinstance(v, CExpr) or (isinstance(v, Ptr) and v.per_sample) for v in c.fields.values())
        rc = dict(index=i, layer=c.layer, step=c.step, kernel=c.kernel, args_type=kernels.get(c.kernel).args_type,
                  fields=fields, pre=pre, issue=issue, post=post, checks=checks, static=static)
        if c.loop and blocks and blocks[-1]["group"] == c.group:
            blocks[-1]["calls"].append(rc)
        else:
            blocks.append(dict(loop=c.loop, group=c.group if c.loop else -1, indent="  " if c.loop else "",
                               calls=[rc]))
    return blocks


SEGMENT_CALLS = 16


def segments(blocks: list[dict], max_calls: int = SEGMENT_CALLS) -> list[list[dict]]:
    """Blocks grouped into runs of at most max_calls calls (a per-sample loop block is never split), each rendered
    as a function of its own so that no generated function has a large stack frame."""
    out, n = [], 0
    for b in blocks:
        k = len(b["calls"])
        if not out or n + k > max_calls:
            out.append([])
            n = 0
        out[-1].append(b)
        n += k
    return out


def render(prog: Program, model_name: str, cores: int, out_dir: Path) -> list[Path]:
    """Write model.c and odl_model.h into out_dir; returns the C sources."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = call_blocks(enumerate(prog.calls), prog.precision)
    live = [b for b in prog.buffers if b.offset >= 0 and b.space in ("l2", "rom")]
    l1 = [b for b in prog.buffers if b.space == "l1"]
    ctx = dict(version=__version__, prologue=prog.prologue, model=model_name, precision=prog.precision, cores=cores,
               wb_tickets=WB_TICKETS,
               batch=prog.graph.input_shape[0], calls=prog.calls, blocks=blocks,
               buffers=sorted(live, key=lambda b: b.offset), arena_bytes=prog.extent_bytes,
               rom_offset=prog.rom_offset, rom_bytes=prog.rom_bytes,
               macs_forward=prog.macs_forward, macs_backward=prog.macs_backward, loss_macro=prog.loss.macro,
               profile_macro=prog.profile.macro if prog.profile else None, max_cores=MAX_CORES,
               l1_buffers=sorted(l1, key=lambda b: b.offset), l1_bytes=prog.l1_peak_bytes,
               memory="hierarchy" if prog.memory is not None else "flat", segments=segments(blocks),
               segment_calls=SEGMENT_CALLS)
    env = _env()
    (out_dir / "model.c").write_text(env.get_template("model.c.j2").render(**ctx))
    (out_dir / "odl_model.h").write_text(env.get_template("odl_model.h.j2").render(**ctx))
    return [out_dir / "model.c"]
