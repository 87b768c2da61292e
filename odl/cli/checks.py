"""Flags and paths checked before anything is traced, built or run: one line, exit 2 (OdlError), never a traceback
after a long device run. `preflight(args)` checks every flag a command has by its argparse name, so a command added
later (e.g. `odl train`) gets the checks by using the same names; the single checks are reusable on their own.
`decorate_help(subparsers)` gives every command's --help its defaults, exit codes and an example."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from odl.common.errors import OdlError

EXIT_CODES = ("exit codes: 0 passed (every compared value within tolerance), 1 some values out of tolerance, "
              "2 bad input (flag, path, model, unsupported op, memory budget; one line), 3 a tool or the device "
              "failed (compiler, emulator, serial link, device hang/trap), 130 interrupted")

EXAMPLES = {
    "validate": ["odl validate resnet8 --precision fp16 --cores 8",
                 "odl validate tests/models/spine_model.py:SpineNet --input-shape 2x3x7x8 --steps 3 --json r.json",
                 "odl validate resnet8 --port /dev/ttyUSB0 --baud 921600 --flash 'openocd -f board.cfg -c \"program {elf}\"'"],
    "compile": ["odl compile dscnn --precision fp16 -o dscnn_fp16 && make -C dscnn_fp16 && "
                "python3 dscnn_fp16/host.py --qemu --steps 3"],
    "profile": ["odl profile resnet8 --precision fp16 --json prof.json --png prof.png"],
    "tune": ["odl tune resnet8 --precision fp16"],
    "bench": ["odl bench --json bench.json --out bench.md"],
    "models": ["odl models"],
}


def _num(args, name):
    v = getattr(args, name, None)
    return v


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_finite(name: str, v: float) -> float:
    if v is None:
        return v
    if not math.isfinite(v):
        raise OdlError(f"{_flag(name)} {v}: must be a finite number")
    return v


def check_train_flags(args) -> None:
    """lr > 0, momentum in [0, 1), weight decay >= 0, betas in [0, 1), eps > 0; all finite (NaN/inf never reach
    the generated C, where they do not even compile)."""
    for name in ("lr", "momentum", "weight_decay", "beta1", "beta2", "eps", "adam_eps"):
        check_finite(name, _num(args, name))
    ls = _num(args, "loss_scale")   # odl train: 'dynamic' or a fixed scale
    if ls is not None and ls != "dynamic":
        try:
            v = float(ls)
        except (TypeError, ValueError):
            raise OdlError(f"--loss-scale {ls}: expected dynamic or a number") from None
        if not (math.isfinite(v) and v > 0):
            raise OdlError(f"--loss-scale {ls}: a fixed loss scale must be a finite number > 0")
    lr = _num(args, "lr")
    if lr is not None and not lr > 0:
        raise OdlError(f"--lr {lr}: the learning rate must be > 0")
    m = _num(args, "momentum")
    if m is not None and not 0 <= m < 1:
        raise OdlError(f"--momentum {m}: must be in [0, 1)")
    wd = _num(args, "weight_decay")
    if wd is not None and not wd >= 0:
        raise OdlError(f"--weight-decay {wd}: must be >= 0")
    betas = [("beta1", _num(args, "beta1")), ("beta2", _num(args, "beta2"))]
    b = getattr(args, "betas", None)
    if b is not None:
        try:
            vals = [float(x) for x in (b.split(",") if isinstance(b, str) else b)]
        except ValueError:
            raise OdlError(f"--betas {b}: expected two numbers B1,B2") from None
        if len(vals) != 2:
            raise OdlError(f"--betas {b}: expected two numbers B1,B2")
        betas += [("betas", v) for v in vals]
    for name, v in betas:
        if v is not None and not (math.isfinite(v) and 0 <= v < 1):
            raise OdlError(f"{_flag(name)} {v}: must be in [0, 1)")
    for name in ("eps", "adam_eps"):
        e = _num(args, name)
        if e is not None and not e > 0:
            raise OdlError(f"{_flag(name)} {e}: must be > 0")
    for name in ("steps", "epochs", "batch_size", "step_timeout", "baud"):
        v = _num(args, name)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise OdlError(f"{_flag(name)} {v}: must be > 0")


def check_writable_file(flag: str, path) -> None:
    """An output file can be created or replaced: its directory exists and is writable, and it is not a directory."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise OdlError(f"{flag} {path}: is a directory, expected a file name")
    if not parent.is_dir():
        raise OdlError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OdlError(f"{flag} {path}: not writable")


def check_writable_dir(flag: str, path) -> None:
    """A directory odl creates or fills: it is writable if it exists, else its parent exists and is writable."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise OdlError(f"{flag} {path}: exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OdlError(f"{flag} {path}: not writable")
        return
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OdlError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OdlError(f"{flag} {path}: cannot create it ({parent} is not writable)")


FILE_FLAGS = {"json": "--json", "png": "--png", "out": "--out", "csv": "--csv", "checkpoint": "--checkpoint",
              "save": "--save"}
DIR_FLAGS = {"output": "-o/--output", "keep": "--keep", "checkpoint_dir": "--checkpoint-dir", "out_dir": "--out"}


def check_output_paths(args) -> None:
    for name, flag in FILE_FLAGS.items():
        v = getattr(args, name, None)
        if isinstance(v, (str, os.PathLike)):
            check_writable_file(flag, v)
    for name, flag in DIR_FLAGS.items():
        v = getattr(args, name, None)
        if isinstance(v, (str, os.PathLike)):
            check_writable_dir(flag, v)


def check_port(args) -> None:
    """--port opens (pyserial) and closes, before anything is built. With --flash the port may appear only once the
    board is flashed, so it is opened right after flashing instead (by the runner)."""
    port = getattr(args, "port", None)
    if not port or getattr(args, "flash", None):
        return
    import serial
    try:
        s = serial.serial_for_url(port, baudrate=getattr(args, "baud", None) or 115200, timeout=0.1)
        s.close()
    except (serial.SerialException, OSError, ValueError) as e:
        raise OdlError(f"--port {port}: cannot open it: {e}") from None


def check_cores(args) -> None:
    cores = getattr(args, "cores", None)
    if cores is None:
        return
    from odl.target.description import load_target
    t = load_target(getattr(args, "target", None) or "rv32-cluster")
    if not 1 <= cores <= t.harts:
        raise OdlError(f"--cores {cores}: target {t.name} has {t.harts} harts; valid range 1..{t.harts}")


def preflight(args) -> None:
    """Every check above that applies to this command's flags."""
    check_train_flags(args)
    check_cores(args)
    check_output_paths(args)
    if getattr(args, "check_races", False) and hasattr(args, "emulator"):
        from odl.run.device import DeviceOptions
        DeviceOptions.from_args(args)          # --check-races with --port or renode: refused before anything else
    check_port(args)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults appended to each help line, unless the help already gives one or there is none (None, False)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "default" in h or action.default in (None, False) or action.default is argparse.SUPPRESS:
            return h
        return super()._get_help_string(action)


def decorate_help(subparsers) -> None:
    """Defaults, exit codes and an example in every command's --help (commands added later included)."""
    for name, p in subparsers.choices.items():
        p.formatter_class = _Formatter
        for a in p._actions:
            if a.help is None and a.dest not in ("help",):
                a.help = a.dest.replace("_", " ")
        ex = EXAMPLES.get(name)
        extra = ("examples:\n" + "\n".join(f"  {e}" for e in ex) + "\n\n" if ex else "") + EXIT_CODES
        p.epilog = (p.epilog + "\n\n" if p.epilog else "") + extra
