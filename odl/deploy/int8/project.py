"""`odl compile MODEL -o DIR --deploy int8 --init CKPT.pt`: the int8 inference project.

DIR/
  Makefile         the `odl compile` project's Makefile: `make` builds apps/bench.c (cycles of odl_predict),
                   `make APP=app.c` your int main(void) against src/odl.h, `make run APP=...` on QEMU
  src/odl.h        odl_init, odl_predict (float sample -> float logits), ODL_WEIGHT_BYTES / ODL_ARENA_BYTES
  src/odl_model.c  the generated program: constant weights, the arena, the kernel calls
  src/int8.json    the tensors' scales and zero points, the calls, the notes (for tools and tests)
  kernels/ target/ embed/odl_printf.c apps/bench.c

Written into a temporary directory and renamed into place: an error leaves nothing behind."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np

from odl import __version__
from odl.common.errors import OdlError
from odl.common.resources import resource_dir
from odl.deploy.int8.program import Int8Program, Ref

_CTYPE = {"int8": "int8_t", "int32": "int32_t", "float32": "float"}


def _cf(v: float) -> str:
    """an FP32 value as an exact C literal"""
    return f"{float(np.float32(v)).hex()}f"


def _const(name: str, a: np.ndarray) -> dict:
    flat = a.ravel()
    fmt = _cf if flat.dtype == np.float32 else str
    per = 8 if flat.dtype == np.float32 else 24
    lines = [" ".join(f"{fmt(v.item())}," for v in flat[i:i + per]) for i in range(0, len(flat), per)]
    return {"name": name, "ctype": _CTYPE[flat.dtype.name], "n": max(len(flat), 1),
            "text": "\n".join("  " + ln for ln in lines) or "  0"}


def _field(P: Int8Program, v, where) -> str:
    if isinstance(v, Ref):
        if v.kind == "c":
            if v.name in where.offsets:       # the copy in L1 that odl_predict stages before the layer's calls
                return f"(const {_CTYPE[P.consts[v.name].dtype.name]} *)(odl_i8_stage + {where.offsets[v.name]})"
            return v.name
        if v.kind == "logits":
            return "0"
        t = P.tensors[v.name]
        return f"({'float' if t.dtype == 'f32' else 'int8_t'} *)(odl_i8_arena + {t.offset + v.off})"
    return _cf(v) if isinstance(v, float) else str(int(v))


def render(P: Int8Program, arena_bytes: int, where, ctx: dict, out_src: Path) -> None:
    from odl.resident import codegen_env
    env = codegen_env()
    calls = [{"kernel": c.kernel, "type": c.kernel + "_args_t", "node": c.node,
              "fields": ", ".join(f".{k} = {_field(P, v, where)}" for k, v in c.args.items()),
              "stage": [{"name": n, "off": where.offsets[n], "bytes": P.consts[n].nbytes}
                        for n in where.before.get(i, [])]} for i, c in enumerate(P.calls)]
    norm = P.normalize or {"mean": [0.0], "std": [1.0]}
    shape = P.tensors[P.input].shape
    plane = int(np.prod(shape[1:])) if len(norm["mean"]) > 1 else int(np.prod(shape))
    inp = P.tensors[P.input]
    mctx = dict(ctx, calls=calls, consts=[_const(k, a) for k, a in P.consts.items()], arena_bytes=max(arena_bytes, 4),
                l1=where.l1, stage_bytes=where.stage_bytes, l1_budget=where.budget,
                weight_bytes=P.weight_bytes(), tensors=list(P.tensors.values()), notes=P.notes,
                norm_mean=[_cf(v) for v in norm["mean"]], norm_std=[_cf(v) for v in norm["std"]], norm_plane=plane,
                input_offset=inp.offset, input_size=int(np.prod(shape)), sample_shape="x".join(map(str, shape)),
                output_size=int(np.prod(P.tensors[P.output].shape)))
    (out_src / "odl.h").write_text(env.get_template("int8/odl.h.j2").render(**mctx))
    (out_src / "odl_model.c").write_text(env.get_template("int8/model.c.j2").render(**mctx))
    info = {"model": P.model, "checkpoint": ctx["checkpoint"], "weight_bytes": P.weight_bytes(),
            "arena_bytes": arena_bytes, "memory": "l1" if where.l1 else "l2", "stage_bytes": where.stage_bytes,
            "notes": P.notes,
            "tensors": {t.name: {"shape": list(t.shape), "scale": t.scale, "zp": t.zp, "dtype": t.dtype,
                                 "offset": t.offset} for t in P.tensors.values()},
            "input": P.input, "output": P.output, "calls": [[c.kernel, c.node] for c in P.calls]}
    (out_src / "int8.json").write_text(json.dumps(info, indent=1) + "\n")


def _files(target) -> list[tuple[Path, str]]:
    """(source, project path): the kernels, the target's runtime, printf, the bench app and its measurement."""
    kdir = resource_dir("kernels_c")
    files = [(p, f"kernels/{p.name}") for p in sorted(kdir.glob("*.c"))]
    files += [(p, f"kernels/include/{p.name}") for p in sorted((kdir / "include").glob("*.h"))]
    files += [(p, f"target/{p.name}") for p in list(target.sources) + sorted(target.dir.glob("*.h"))
              + [target.linker_script, target.dir / "target.json"]]
    files.append((target.common_dir / "embed" / "odl_printf.c", "embed/odl_printf.c"))
    files.append((target.common_dir / "embed" / "odl_bench.h", "embed/odl_bench.h"))
    files.append((target.common_dir / "int8" / "apps" / "bench.c", "apps/bench.c"))
    return files


def makefile_ctx(target, cores: int, model: str, files) -> dict:
    from odl.deploy.compile import make_flags
    flags = make_flags(target, "fp32", cores)
    srcs = [rel for _, rel in files if rel.endswith((".c", ".S")) and not rel.startswith("apps/")]
    srcs.append("src/odl_model.c")
    q = target.qemu
    return dict(version=__version__, model=model, precision="int8", cores=cores, target=target,
                cflags=" ".join(shlex.quote(f) for f in flags["cflags"]),
                scalar_cflags=" ".join(shlex.quote(f) for f in flags["scalar_cflags"]),
                ldflags_zig=" ".join(shlex.quote(f) for f in flags["ldflags_zig"]),
                ldflags_other=" ".join(shlex.quote(f) for f in flags["ldflags_other"]),
                sources=srcs, embed_sources=srcs, embed=True, default_app="apps/bench.c", powercut_points=0,
                flash_sources=[], qemu=q, qemu_extra=" ".join(shlex.quote(a) for a in q.extra) if q else "")


def write_project(P: Int8Program, arena_bytes: int, where, out: Path, target, cores: int,
                  checkpoint: str) -> list[str]:
    from odl.deploy.compile import _env, write_project_dir

    def fill(tmp: Path) -> None:
        files = _files(target)
        for src, rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / rel)
        (tmp / "src").mkdir()
        render(P, arena_bytes, where, dict(version=__version__, model=P.model, cores=cores,
                                    checkpoint=Path(checkpoint).name), tmp / "src")
        (tmp / "Makefile").write_text(_env().get_template("Makefile.j2").render(
            **makefile_ctx(target, cores, P.model, files)))
    return write_project_dir(out, fill)


def compile_int8(model_spec: str, out_dir: str | Path, init: str | None, target_name: str = "rv32-cluster",
                 cores: int = 8, input_shape: str | None = None, force: bool = False, log=print,
                 l1_budget: int | None = None) -> dict:
    """The int8 project of a QAT checkpoint; returns its figures (weight and arena bytes, calls, notes). l1_budget:
    the L1 bytes the arena and staging buffer may take (default: the target's L1 beside the stacks)."""
    from odl.deploy.compile import check_out_dir
    from odl.deploy.int8.lower import lower
    from odl.deploy.int8.plan import place, plan
    from odl.deploy.int8.qat_checkpoint import read
    from odl.frontend.trace import default_input_shape, load_model, parse_shape
    from odl.pipeline import prepare
    from odl.target.description import load_target
    from odl.tile.memory import hierarchy_of
    if not init:
        raise OdlError("--deploy int8 needs --init CKPT.pt: a checkpoint of `odl train --qat int8 --qat-bn frozen`")
    out = Path(out_dir)
    check_out_dir(out, force)
    target = load_target(target_name)
    if not 1 <= cores <= target.harts:
        raise OdlError(f"--cores {cores}: target {target.name} has {target.harts} harts")
    shape = list(parse_shape(input_shape) if input_shape else default_input_shape(load_model(model_spec)) or [])
    if not shape:
        raise OdlError(f"model '{model_spec}' has no default input shape: give --input-shape NxCxHxW")
    prep = prepare(model_spec, "x".join(map(str, [1] + shape[1:])), 0, "fp32")
    ck = read(init, prep.model, prep.name)
    P = lower(prep.graph, prep.model, ck, prep.name)
    arena = plan(P)
    where = place(P, arena, hierarchy_of(target).l1_data_bytes if l1_budget is None else l1_budget)
    listing = write_project(P, arena, where, out, target, cores, init)
    mem = (f"arena {arena} B and a {where.stage_bytes} B staging buffer (each layer's constants, copied in by DMA) in "
           f"L1" if where.l1 else
           f"arena {arena} B in L2 (with the constants' staging buffer it is over the {where.budget} B of L1 beside "
           f"the stacks: the kernels read L2, whose latency the timing model does not charge)")
    log(f"odl compile --deploy int8 {prep.name}: {len(P.calls)} kernel calls; weights {P.weight_bytes()} B, {mem}; "
        f"wrote {out} ({len(listing)} files)")
    for n in P.notes:
        log(f"note: {n}")
    log(f"build: make -C {out}    run: make -C {out} run")
    return {"weight_bytes": P.weight_bytes(), "arena_bytes": arena, "memory": "l1" if where.l1 else "l2",
            "stage_bytes": where.stage_bytes, "calls": len(P.calls), "notes": P.notes, "files": listing}
