"""No emulator outlives odl. Emulators start in their own process group (a terminal's Ctrl-C reaches odl, which
then stops them in order) with the parent-death signal set (Linux: the kernel kills them even if odl itself is
SIGKILLed); SIGTERM/SIGHUP become KeyboardInterrupt so every `finally` and runner `__exit__` runs (temporary
directories removed, processes killed); an atexit hook kills whatever is still registered."""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys

_live: set = set()


def _pdeathsig() -> None:   # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def popen(cmd, **kw) -> subprocess.Popen:
    """subprocess.Popen for a child that must not outlive odl (an emulator)."""
    kw.setdefault("start_new_session", True)
    if sys.platform.startswith("linux"):
        kw.setdefault("preexec_fn", _pdeathsig)
    p = subprocess.Popen(cmd, **kw)
    _live.add(p)
    return p


def kill(p: subprocess.Popen | None, wait: float = 10.0) -> None:
    """Kill a child started by popen() and its process group; reap it."""
    if p is None:
        return
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            try:
                p.kill()
            except OSError:
                pass
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    _live.discard(p)


def forget(p: subprocess.Popen) -> None:
    if p is not None and p.poll() is not None:
        _live.discard(p)


@atexit.register
def _kill_all() -> None:
    for p in list(_live):
        kill(p, wait=2.0)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C (main thread only)."""
    for s in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(s, _raise_interrupt)
        except (ValueError, OSError):
            pass
