"""Cross toolchain driver: compile the firmware (target runtime + common firmware + kernels + generated
model) and link one ELF.

The compiler is `ODL_CC` (a command line, split with shlex, e.g. "clang-19" or "zig cc") when set, else
clang from the PyPI `ziglang` package (`python -m ziglang cc`), which links with its own lld."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from odl.common.errors import ToolError
from odl.common.resources import resource_dir
from odl.target import objcache
from odl.target.description import Target
from odl.common.precision import STEP_PRECISIONS, precision_of


class CompileError(ToolError):
    """The C compiler or linker rejected the firmware; the message carries the compiler's output."""

    def __init__(self, message: str, cmd: list[str] | None = None, output: str = ""):
        super().__init__(message)
        self.cmd = cmd
        self.output = output


def _probe(cmd: list[str]) -> tuple[bool, str]:
    try:
        p = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


@lru_cache(maxsize=None)
def _find_cc_cached(env_cc: str | None) -> tuple[str, ...]:
    if env_cc:
        cmd = shlex.split(env_cc)
        ok, out = _probe(cmd)
        if not ok:
            raise ToolError(f"ODL_CC={env_cc!r} does not run ({out.splitlines()[-1] if out else 'no output'})")
        return tuple(cmd)
    cmd = [sys.executable, "-m", "ziglang", "cc"]
    ok, out = _probe(cmd)
    if not ok:
        raise ToolError(
            "no C cross compiler: install the PyPI package `ziglang` (pip install ziglang) or set ODL_CC "
            f"to a clang >= 17 command line (probe of `{' '.join(cmd)}` said: {out.splitlines()[-1] if out else 'nothing'})"
        )
    return tuple(cmd)


def find_cc() -> list[str]:
    """The compiler driver command as a list (ODL_CC, split with shlex, else `python -m ziglang cc`)."""
    return list(_find_cc_cached(os.environ.get("ODL_CC") or None))


@lru_cache(maxsize=None)
def _cc_version(cc: tuple) -> str:
    """The compiler's --version text: part of every cached object's key."""
    return _probe(list(cc))[1]


def firmware_sources(target: Target, kernels: bool = True) -> list[Path]:
    """Target runtime + target-independent firmware + (optionally) every kernels_c/*.c."""
    srcs = list(target.sources) + list(target.common_sources)
    if kernels:
        try:
            srcs += sorted(resource_dir("kernels_c").glob("*.c"))
        except FileNotFoundError:
            pass
    return srcs


def compile_flags(target: Target, precision: str, cores: int, include_dirs: list[Path] = ()) -> list[str]:
    prec = precision_of(precision, STEP_PRECISIONS)
    if not 1 <= cores <= target.harts:
        raise ValueError(f"cores must be 1..{target.harts} on {target.name}, not {cores}")
    flags = list(target.cflags)
    flags += [f"-DODL_NUM_CORES={cores}"]
    flags += prec.c_defines
    incs = [resource_dir("kernels_c") / "include", target.dir, target.common_dir] + [Path(p) for p in include_dirs]
    flags += [f"-I{p}" for p in incs]
    return flags


def is_zig(cc: list[str]) -> bool:
    return any(Path(c).name in ("zig", "ziglang") or c == "ziglang" for c in cc)


def link_flags(target: Target, cc: list[str]) -> list[str]:
    """Link flags. With zig, -nostdlib is dropped at link time: for a freestanding target zig then links
    its compiler_rt (soft double, 64-bit division, ...; built once into zig's global cache, ~8 s) and no
    libc. Other drivers keep -nostdlib; give them a runtime library through ODL_LDFLAGS if needed
    (e.g. ODL_LDFLAGS="--rtlib=compiler-rt" or "-lgcc")."""
    flags = list(target.cflags)
    if is_zig(cc):
        flags = [f for f in flags if f != "-nostdlib"]
    flags += ["-T", str(target.linker_script), "-static", "-Wl,--gc-sections"]
    flags += shlex.split(os.environ.get("ODL_LDFLAGS", ""))
    return flags


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        out = (p.stdout + p.stderr).strip()
        raise CompileError(f"{what} failed:\n{out}\ncommand: {shlex.join(cmd)}", cmd, out)


def build_firmware(target: Target, precision: str, cores: int, sources: list[Path], include_dirs: list[Path],
                   out_dir: Path, *, kernels: bool = True, name: str = "firmware",
                   defines: list[str] = (), scalar_sources: list[Path] = ()) -> Path:
    """Compile and link the firmware ELF into out_dir; returns its path. Raises CompileError on failure.

    sources: the generated model (and any extra C files); compiled together with the target runtime,
    targets/common and, unless kernels=False, every kernels_c/*.c. defines: extra -D macros (e.g. ODL_PROFILE).
    scalar_sources: files built with the target's scalar_cflags (no vector instructions: the generated model)."""
    out_dir = Path(out_dir)
    obj_dir = out_dir / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    cc = find_cc()
    flags = compile_flags(target, precision, cores, include_dirs) + [f"-D{d}" for d in defines]
    all_srcs = firmware_sources(target, kernels) + [Path(s) for s in sources]
    scalar = {Path(s) for s in scalar_sources}   # e.g. the generated model: no vector instructions at all
    seen: dict[str, int] = {}
    jobs = []
    for s in all_srcs:
        stem = s.stem
        seen[stem] = seen.get(stem, 0) + 1
        obj = obj_dir / (f"{stem}.o" if seen[stem] == 1 else f"{stem}_{seen[stem]}.o")
        jobs.append((s, obj))

    cache = objcache.cache_dir()
    key_flags = compile_flags(target, precision, cores) + [f"-D{d}" for d in defines]   # without the build's own dirs

    def one(job):
        s, obj = job
        extra = list(target.scalar_cflags) if s in scalar else []
        k = objcache.key((*cc, _cc_version(tuple(cc))), key_flags + extra, s, include_dirs) if cache else None
        hit = objcache.lookup(cache, k) if cache else None
        if hit is not None:
            shutil.copyfile(hit, obj)
            return obj
        dep = obj.with_suffix(".d")
        _run(cc + flags + extra + ["-MD", "-MF", str(dep), "-c", str(s), "-o", str(obj)], f"compiling {s}")
        if cache:
            objcache.store(cache, k, obj, dep, s)
        return obj

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(2, min(len(jobs), (os.cpu_count() or 2) * 2))) as ex:
        objs = list(ex.map(one, jobs))
    elf = out_dir / f"{name}.elf"
    link = cc + link_flags(target, cc) + [str(o) for o in objs] + ["-o", str(elf)]
    _run(link, "linking")
    build_firmware.last_seconds = time.perf_counter() - t0
    return elf


build_firmware.last_seconds = 0.0
