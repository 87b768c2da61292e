"""Hardware target descriptions: targets/<name>/target.json."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from odl.common.errors import OdlError
from odl.common.resources import resource_dir


@dataclass(frozen=True)
class QemuConfig:
    binary: str
    machine: str
    cpu: str
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    dir: Path
    harts: int
    simd_lanes_fp16: int
    memory_budget_bytes: int
    ram_base: int
    arena_addr: int
    cflags: tuple[str, ...]
    sources: tuple[Path, ...]          # absolute paths of the target's own C/asm files
    linker_script: Path
    qemu: QemuConfig | None = None
    # appended for code that must not use vector registers at all (the generated model: clang would otherwise
    # copy its kernel-argument structs with 128-bit vector loads, which the 2-lane cost model does not have)
    scalar_cflags: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def common_dir(self) -> Path:
        """Target-independent firmware (protocol + main)."""
        return self.dir.parent / "common"

    @property
    def common_sources(self) -> tuple[Path, ...]:
        return tuple(sorted(self.common_dir.glob("*.c")))


def _int(v) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)


def list_targets() -> list[str]:
    root = resource_dir("targets")
    return sorted(p.parent.name for p in root.glob("*/target.json"))


def load_target(name: str) -> Target:
    root = resource_dir("targets")
    d = root / name
    f = d / "target.json"
    if not f.is_file():
        raise OdlError(f"unknown target {name!r} (available: {', '.join(list_targets()) or 'none'})")
    j = json.loads(f.read_text())
    q = j.get("qemu")
    return Target(
        name=j["name"],
        description=j.get("description", ""),
        dir=d,
        harts=int(j["harts"]),
        simd_lanes_fp16=int(j.get("simd_lanes_fp16", 1)),
        memory_budget_bytes=int(j["memory_budget_bytes"]),
        ram_base=_int(j["ram_base"]),
        arena_addr=_int(j["arena_addr"]),
        cflags=tuple(j.get("cflags", [])),
        scalar_cflags=tuple(j.get("scalar_cflags", [])),
        sources=tuple(d / s for s in j.get("sources", [])),
        linker_script=d / j["linker_script"],
        qemu=QemuConfig(q["binary"], q["machine"], q["cpu"], tuple(q.get("extra", []))) if q else None,
        raw=j,
    )
