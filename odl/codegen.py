"""Render a planned Program to C with the jinja2 templates in codegen/."""
from __future__ import annotations

from pathlib import Path

import jinja2

from . import __version__
from . import kernels
from .lower import MAX_CORES, CExpr, Program, Ptr
from .resources import resource_dir

_PTR = {"odl": "T", "f32": "F32", "i32": "I32", "u8": "U8"}


def _c_value(v) -> str:
    if isinstance(v, Ptr):
        base = f"{_PTR[v.buf.dtype]}({v.buf.macro})"
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
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("codegen"))),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def call_blocks(indexed_calls) -> list[dict]:
    """(index, Call) pairs -> template blocks: consecutive calls of one per-sample loop group share a block."""
    blocks = []
    for i, c in indexed_calls:
        rc = dict(index=i, layer=c.layer, step=c.step, kernel=c.kernel, args_type=kernels.get(c.kernel).args_type,
                  fields=[(k, _c_value(v)) for k, v in c.fields.items()])
        if c.loop and blocks and blocks[-1]["group"] == c.group:
            blocks[-1]["calls"].append(rc)
        else:
            blocks.append(dict(loop=c.loop, group=c.group if c.loop else -1, indent="  " if c.loop else "",
                               calls=[rc]))
    return blocks


def render(prog: Program, model_name: str, cores: int, out_dir: Path) -> list[Path]:
    """Write model.c and odl_model.h into out_dir; returns the C sources."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = call_blocks(enumerate(prog.calls))
    live = [b for b in prog.buffers if b.offset >= 0]
    ctx = dict(version=__version__, prologue=prog.prologue, model=model_name, precision=prog.precision, cores=cores,
               batch=prog.graph.input_shape[0], calls=prog.calls, blocks=blocks,
               buffers=sorted(live, key=lambda b: b.offset), arena_bytes=prog.arena_bytes,
               macs_forward=prog.macs_forward, macs_backward=prog.macs_backward, loss_macro=prog.loss.macro,
               profile_macro=prog.profile.macro if prog.profile else None, max_cores=MAX_CORES)
    env = _env()
    (out_dir / "model.c").write_text(env.get_template("model.c.j2").render(**ctx))
    (out_dir / "odl_model.h").write_text(env.get_template("odl_model.h.j2").render(**ctx))
    return [out_dir / "model.c"]
