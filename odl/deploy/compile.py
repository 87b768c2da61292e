"""`odl compile`: the deployable training step as a standalone C project (no Python needed to build or run it).

DIR/
  Makefile            cross build of firmware.elf with $(CC) alone (flags resolved from odl/target/toolchain.py)
  run-qemu.sh         QEMU command line of odl/run/runners/qemu.py, weights preloaded, UART on a TCP port
  host.py             host driver (Python + pyserial only): steps the firmware, prints and reads back the loss
  README.md           layout, protocol, build and run
  weights.bin         initial arena image for the preloaded region (params, input, labels, state)
  layout.json         every arena buffer: name, role, dtype, shape, offset, bytes
  src/                generated model.c + odl_model.h
  kernels/            kernels_c/*.c, kernels/include/*.h
  target/             targets/<target>/ runtime, linker script, odl_profile.h
  common/             targets/common/ (firmware main loop + framed protocol)

The project is written into a temporary directory next to DIR and renamed into place at the end, so an error
never leaves a half-written DIR behind."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from odl import __version__
from odl.common.errors import OdlError
from odl.lower.lowering import TrainConfig
from odl.plan.planner import MemoryReport
from odl.pipeline import step
from odl.common.resources import resource_dir
from odl.target.description import Target, load_target
from odl.common.precision import precision_of

_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_DTYPE = {"f32": "f32", "i32": "i32", "u8": "u8"}


def parse_bytes(text: str | int) -> int:
    """'1572864', '512K', '1.5M', '2MiB', '64kb' -> bytes (K/M/G are powers of 1024)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise OdlError(f"bad byte count '{text}': expected an integer or a size like 512K, 1.5M, 2M")
    v = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if v <= 0 or v != int(v):
        raise OdlError(f"bad byte count '{text}': must be a positive whole number of bytes")
    return int(v)


@dataclass
class CompileResult:
    out_dir: Path
    memory: MemoryReport
    arena_bytes: int
    weights_bytes: int
    files: list[str]


def _dirs(target: Target) -> dict[Path, str]:
    """Source trees -> their folder inside the project."""
    return {resource_dir("kernels_c") / "include": "kernels/include", resource_dir("kernels_c"): "kernels",
            target.dir: "target", target.common_dir: "common"}


def _relocate(flag: str, dirs: dict[Path, str]) -> str:
    """Replace an absolute path of odl's source trees inside a flag by the project-relative one."""
    for src, rel in dirs.items():  # most specific first (kernels/include before kernels)
        s = str(src)
        if s in flag:
            return flag.replace(s, rel)
    return flag


def make_flags(target: Target, precision: str, cores: int) -> dict[str, list[str]]:
    """Compile flags and both link-flag variants (zig / other drivers), project-relative, from odl/target/toolchain.py."""
    from odl.target.toolchain import compile_flags, link_flags
    dirs = _dirs(target)
    cflags = [_relocate(f, dirs) for f in compile_flags(target, precision, cores, [Path("src")])]
    extra = shlex.split(os.environ.get("ODL_LDFLAGS", ""))  # the user's environment, not the project's

    def lf(cc):
        flags = link_flags(target, cc)
        if extra and flags[-len(extra):] == extra:
            flags = flags[:-len(extra)]
        return [_relocate(f, dirs) for f in flags]
    return {"cflags": cflags, "scalar_cflags": list(target.scalar_cflags), "ldflags_zig": lf(["zig", "cc"]),
            "ldflags_other": lf(["clang"])}


def _sources(target: Target) -> list[tuple[Path, str]]:
    """(source file, project path) for every file the firmware needs."""
    kdir = resource_dir("kernels_c")
    files = [(p, f"kernels/{p.name}") for p in sorted(kdir.glob("*.c"))]
    files += [(p, f"kernels/include/{p.name}") for p in sorted((kdir / "include").glob("*.h"))]
    for p in list(target.sources) + sorted(target.dir.glob("*.h")) + [target.linker_script, target.dir / "target.json"]:
        files.append((p, f"target/{p.name}"))
    for p in sorted(target.common_dir.glob("*.[ch]")):
        files.append((p, f"common/{p.name}"))
    return files


def _layout(prog, precision: str, target: Target, model: str, cores: int, weights_bytes: int) -> dict:
    elem = precision_of(precision).c_elem
    bufs = []
    preload = {id(b) for b in prog.preload}
    for b in sorted((b for b in prog.buffers if b.offset >= 0), key=lambda b: (b.offset, b.name)):
        bufs.append({"name": b.name, "role": b.role, "dtype": elem if b.dtype == "odl" else _DTYPE[b.dtype],
                     "shape": list(b.shape) if b.shape else [b.nelem], "space": b.space, "offset": b.offset,
                     "bytes": b.nbytes(prog.elem_bytes), "preloaded": id(b) in preload,
                     "init": list(b.init) if b.init else None, "macro": b.macro})
    return {
        "odl_version": __version__, "model": model, "target": target.name, "precision": precision, "cores": cores,
        "arena_addr": target.arena_addr, "arena_bytes": prog.extent_bytes, "weights_bytes": weights_bytes,
        # frozen weights in the read-only level (--frozen): buffers with "space": "rom", at arena offsets
        # [rom_offset, rom_offset + rom_bytes), past the L2 working area of l2_bytes (the budget's); the static arena
        # (arena_bytes, what the device's HELLO says) spans both, and weights.bin reaches them
        "l2_bytes": prog.arena_bytes, "rom_offset": prog.rom_offset, "rom_bytes": prog.rom_bytes,
        # memory hierarchy: buffers with "space": "l1" are tiles at offsets from the L1 base, not in the arena
        **({"l1_addr": prog.memory.l1_addr, "l1_peak_bytes": prog.l1_peak_bytes} if prog.memory is not None else {}),
        "input": prog.input.name, "labels": prog.labels.name, "loss": prog.loss.name, "logits": prog.logits.name,
        "params": {k: v.name for k, v in prog.params.items()},
        "trainable": list(prog.trainable),
        "buffers": bufs,
    }


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates") / "project")),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise OdlError(f"output {out} exists and is not a directory")
        if any(out.iterdir()) and not force:
            raise OdlError(f"output directory {out} exists and is not empty (use --force to replace it)")


def write_project_dir(out: Path, fill) -> list[str]:
    """fill(tmp) writes a project into a temporary directory next to `out`, which is then renamed into place
    (replacing `out` if it exists: --force, or an empty directory): an error leaves nothing behind. Returns the
    files written, relative to `out`."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "x")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def compile_project(model_spec: str, out_dir: str | Path, target_name: str = "rv32-cluster",
                    precision: str = "fp32", cores: int = 8, input_shape: str | None = None, seed: int = 0,
                    cfg: TrainConfig | None = None, budget: int | str | None = None, force: bool = False,
                    log=print, memory: str = "hierarchy", embed=None, app=None) -> CompileResult:
    """embed: odl.embed.library.EmbedOptions of the embedded library (odl.h; default: this model, precision,
    cores, memory and training settings at the model's batch); app: odl.embed.project.AppOptions."""
    from odl.codegen.render import render
    from odl.pipeline import prepare, preload_blob

    out = Path(out_dir)
    check_out_dir(out, force)
    cfg = cfg or TrainConfig()
    cfg.seed = seed
    if cfg.store != "compute":
        raise OdlError(f"--store {cfg.store}: odl compile does not write FP8 storage's scale state yet (odl validate "
                       f"and odl profile run it)")
    target = load_target(target_name)
    if not 1 <= cores <= target.harts:
        raise OdlError(f"--cores {cores}: target {target.name} has {target.harts} harts")
    lib_precision = precision_of(precision).name     # odl.h's library: fp32, fp16 or mixed
    precision = precision_of(precision).device         # the single step below: mixed computes in FP16
    budget_bytes = target.memory_budget_bytes if budget is None else parse_bytes(budget)
    from odl.tile.memory import memory_for
    hier = memory_for(target, memory)

    from odl.common.progress import Phases
    phase = Phases("compile")
    phase("trace", model_spec)
    prep = prepare(model_spec, input_shape, seed, precision, 1, cfg.loss)
    phase("lower/plan", f"{precision}, {cores} cores")
    log(f"odl compile {prep.name}: {target.name}, {precision}, {cores} cores, "
        f"input {'x'.join(map(str, prep.x.shape))}")
    # the deployable step (observe=False); raises the planner's over-budget error (exit 2)
    if cfg.dma_controller:
        raise OdlError("--dma-controller: the generated project does not start a controller hart yet; validate, "
                       "profile and train take it")
    cfg, prog, mem = step(prep, precision, cfg, target, cores, hier, budget_bytes)
    log(mem.text())

    blob = preload_blob(prog, prep)
    flags = make_flags(target, precision, cores)
    flags["cflags"] = list(flags["cflags"]) + [f"-D{d}" for d in prog.build_defines]   # e.g. --accumulate fp16
    files = _sources(target)

    phase("write", f"project into {out}")

    def fill(tmp: Path) -> None:
        render(prog, prep.name, cores, tmp / "src")
        for src, rel in files:
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        (tmp / "weights.bin").write_bytes(blob)
        layout = _layout(prog, precision, target, prep.name, cores, len(blob))
        (tmp / "layout.json").write_text(json.dumps(layout, indent=1) + "\n")
        q = target.qemu
        c_srcs = [rel for _, rel in files if rel.endswith((".c", ".S"))] + ["src/model.c"]
        ctx = dict(version=__version__, model=prep.name, model_spec=model_spec, target=target, precision=precision,
                   cores=cores, input_shape="x".join(map(str, prep.x.shape)), seed=seed, cfg=cfg,
                   arena_bytes=prog.extent_bytes, arena_addr=f"{target.arena_addr:#x}", weights_bytes=len(blob),
                   budget_bytes=budget_bytes, mem_text=mem.text(), layout=layout,
                   cflags=" ".join(shlex.quote(f) for f in flags["cflags"]),
                   scalar_cflags=" ".join(shlex.quote(f) for f in flags["scalar_cflags"]),
                   ldflags_zig=" ".join(shlex.quote(f) for f in flags["ldflags_zig"]),
                   ldflags_other=" ".join(shlex.quote(f) for f in flags["ldflags_other"]),
                   sources=c_srcs, qemu=q,
                   qemu_extra=" ".join(shlex.quote(a) for a in q.extra) if q else "",
                   bits=precision_of(precision).bits)
        from odl.embed.project import project_ctx
        ctx.update(project_ctx(tmp, model_spec, target, c_srcs, embed, app, log, dict(
            batch=int(prep.x.shape[0]), precision=lib_precision, cores=cores, target=target_name, cfg=cfg,
            memory=memory, seed=seed, input_shape=input_shape, budget=budget_bytes)))
        env = _env()
        for name in ("Makefile", "README.md", "run-qemu.sh", "host.py"):
            (tmp / name).write_text(env.get_template(name + ".j2").render(**ctx))
        for sh in (tmp / "run-qemu.sh", tmp / "host.py"):
            sh.chmod(sh.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    listing = write_project_dir(out, fill)
    out = out.resolve()
    rom = (f"; frozen weights in the read-only level: {prog.rom_bytes} B at arena offset {prog.rom_offset} (in "
           f"weights.bin)" if prog.rom_bytes else "")
    log(f"wrote {out}: {len(listing)} files; weights.bin {len(blob)} B (preloaded at arena offset 0, "
        f"address {target.arena_addr:#x}); arena {prog.arena_bytes} B of {budget_bytes} B budget{rom}")
    log(f"build: make -C {out}    run: python3 {out}/host.py --qemu --steps 3")
    return CompileResult(out, mem, prog.arena_bytes, len(blob), listing)
