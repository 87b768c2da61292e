"""The timing model's QEMU plugin (qemu_plugins/timing.c, docs/performance.md): built once per source content with the
host C compiler, its arguments from the target's "timing" section and the firmware's symbols, a run of a -DODL_TIMED
firmware under it, and the race detector's verdict. Used by odl profile (the timed cycle model) and by validate and
train (--check-races)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from odl.common.errors import OdlError, ToolError
from odl.common.resources import resource_dir

PLUGIN_SOURCES = ("timing.c", "decode.c", "decode.h", "qemu_plugin_abi.h")


def host_cc() -> str:
    for cc in (os.environ.get("ODL_PLUGIN_CC"), "cc", "gcc", "clang-19", "clang"):
        if cc and shutil.which(cc):
            return cc
    raise ToolError("the timing model's QEMU plugin needs a host C compiler (cc, gcc or clang, or ODL_PLUGIN_CC): "
                    "none found. Install one (apt-get install gcc), set ODL_PLUGIN_CC, or use --cycle-model ipc1")


def plugin_path() -> Path:
    """The plugin's shared object, built once per source content into the cache (ODL_CACHE_DIR or ~/.cache/odl)."""
    src = resource_dir("qemu_plugins")
    h = hashlib.sha256()
    for name in PLUGIN_SOURCES:
        h.update(name.encode() + b"\0" + (src / name).read_bytes())
    cc = host_cc()
    h.update(cc.encode())
    d = Path(os.environ.get("ODL_CACHE_DIR") or Path.home() / ".cache" / "odl") / "plugins"
    so = d / f"odl_timing_{h.hexdigest()[:16]}.so"
    if so.is_file():
        return so
    d.mkdir(parents=True, exist_ok=True)
    tmp = so.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-I", str(src), str(src / "timing.c"),
           str(src / "decode.c"), "-o", str(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ToolError(f"building the timing plugin failed:\n{' '.join(cmd)}\n{r.stderr[-3000:]}")
    os.replace(tmp, so)
    return so


def parameters(target, overrides: dict | None = None) -> dict:
    """The timing parameters (name -> integer) from target.json "timing", with overrides (e.g. fpus=4)."""
    t = target.raw.get("timing")
    if not t:
        raise OdlError(f"target {target.name} has no \"timing\" section in target.json: use --cycle-model ipc1")
    out = {k: int(v["value"]) for k, v in t.items() if isinstance(v, dict)}
    from odl.tile.memory import rom_of
    rom = rom_of(target)      # the DMA's timing from the read-only level: one place, memory.rom
    if rom:
        out.update(rom_setup=rom["setup_cycles"], rom_bytes_per_cycle=rom["bytes_per_cycle"])
    for k, v in (overrides or {}).items():
        if k not in out and k not in ("races", "pcs"):
            raise OdlError(f"unknown timing parameter {k!r} (target {target.name} has: {', '.join(sorted(out))})")
        out[k] = int(v)
    if not 0 <= out.get("fpus", 0) <= target.harts:
        raise OdlError(f"--fpus {out['fpus']}: expected 0 (a private FPU per core) to {target.harts} shared FPUs")
    bad = [k for k, v in out.items() if v < 0]
    if bad:
        raise OdlError(f"timing parameters must be >= 0: {', '.join(f'{k}={out[k]}' for k in bad)}")
    return out


def plugin_args(target, elf: Path, cores: int, out: Path, params: dict, races: bool = False) -> list[str]:
    """QEMU's -plugin argument for the timing plugin on this firmware."""
    from odl.target.elf import symbols
    sym = symbols(elf)

    def addr(name):
        if name not in sym:
            raise OdlError(f"{elf.name}: no symbol {name!r}: the firmware was not built for the timing model")
        return sym[name][0]
    l1 = target.raw.get("memory", {}).get("l1")
    l1_lo = addr("__odl_l1_start")
    l1_hi = (int(l1["addr"], 0) + int(l1["bytes"])) if l1 else addr("__odl_l1_end")
    ctrl = "odl_dma_ctrl_hart" in sym           # a DMA controller hart beside the cores (ODL_DMA_CTRL)
    args = {"out": str(out), "port": hex(addr("odl_timing_port")),
            "sync": f"{addr('__odl_sync_start'):#x}:{addr('__odl_sync_end'):#x}",
            "l1": f"{l1_lo:#x}:{l1_hi:#x}", "harts": cores + ctrl, "ctrl": cores if ctrl else -1,
            "races": int(races)}
    if "odl_rom_start" in sym:                  # frozen weights in the read-only level (odl --frozen)
        args["rom"] = f"{addr('odl_rom_start'):#x}:{addr('odl_rom_end'):#x}"
    for name, key in (("bar_count", "barrier"), ("odl_dma_start", "dma_start"), ("odl_dma_wait", "dma_wait"),
                      ("odl_dma_engine_run", "dma_engine"), ("start_when_full", "dma_full")):
        if name in sym:
            args[key] = hex(sym[name][0])
    args.update({k: v for k, v in params.items()})
    return ["-plugin", ",".join([f"file={plugin_path()}"] + [f"{k}={v}" for k, v in args.items()])]


def run_timed(target, elf: Path, cores: int, workdir: Path, preload=(), steps: int = 2, params: dict | None = None,
              races: bool = False, timeout: float = 3600.0, link_steps=None) -> dict:
    """Run `steps` training steps of a -DODL_TIMED firmware under the plugin; returns its report (the last step)."""
    from odl.run.runners.qemu import QemuRunner
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "timing.json"
    out.unlink(missing_ok=True)
    params = parameters(target) if params is None else params
    extra = plugin_args(target, elf, cores, out, params, races)
    with QemuRunner(target, elf, cores, workdir / "run", preload=list(preload), timeout=timeout,
                    extra_args=extra) as r:
        res = (link_steps or (lambda link: link.step(steps)))(r.link)
        r.exit(0)
    if not out.is_file():
        raise ToolError(f"the timing plugin wrote no report ({out})")
    rep = json.loads(out.read_text())
    rep["loss"] = getattr(res, "loss", None)
    if rep.get("steps", 0) < 1:
        raise ToolError("the timing plugin saw no step marks: the firmware was not built with -DODL_TIMED")
    return rep


def run_app_timed(target, elf: Path, cores: int, workdir: Path, extra=(), timeout: float = 3600.0) -> dict:
    """A standalone firmware (its own main, no host link) built with -DODL_TIMED, run to its exit under the plugin:
    the report of the step it marks (e.g. one odl_predict: targets/common/*/apps/bench.c). extra: more QEMU
    arguments (a flash drive)."""
    from odl.run.runners.qemu import dma_controller
    q = target.qemu
    if q is None:
        raise OdlError(f"target {target.name} has no QEMU configuration: the timed model runs on QEMU")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "timing.json"
    out.unlink(missing_ok=True)
    cmd = [q.binary, "-machine", q.machine, "-cpu", q.cpu, "-smp", str(cores + dma_controller(elf)), *q.extra,
           "-kernel", str(elf),
           *extra, *plugin_args(target, elf, cores, out, parameters(target))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode or not out.is_file():
        raise ToolError(f"{elf.name} under the timing plugin: exit {r.returncode}, report "
                        f"{'written' if out.is_file() else 'missing'}\n{r.stdout[-1000:]}{r.stderr[-1000:]}")
    rep = json.loads(out.read_text())
    if rep.get("steps", 0) < 1:
        raise ToolError(f"{elf.name}: the timing plugin saw no step marks (not built with -DODL_TIMED?)")
    return rep


def check_races(workdir: Path, what: str) -> dict:
    """After a --check-races run: the race detector's findings (races.json in the runner's directory); raises
    OdlError naming the first ones when there is any."""
    f = Path(workdir) / "races.json"
    if not f.is_file():
        raise ToolError(f"--check-races: the timing plugin wrote no report ({f})")
    r = json.loads(f.read_text())["races"]
    if r["count"]:
        first = "; ".join(f"call {x['call']}: address {x['addr']:#x} {'written' if x['store'] else 'read'} by hart "
                          f"{x['harts'][1]} after hart {x['harts'][0]} wrote or read it (pc {x['pc']:#x})"
                          for x in r["first"][:5])
        raise OdlError(f"--check-races: {r['count']} data races between harts in {what}: {first}")
    return r
