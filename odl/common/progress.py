"""What a command is doing, as it happens, on stderr: phases (trace, lower/plan, build, run, compare) with the time
since the command started, and progress bars (tqdm) for the long loops of bench and tune. stdout keeps the results.
Shown when stderr is a terminal (as pip and tqdm do: logs and tests that read stderr keep their one-line errors);
ODL_PROGRESS=1 forces them on, ODL_PROGRESS=0 off."""
from __future__ import annotations

import os
import sys
import time


def quiet() -> bool:
    v = os.environ.get("ODL_PROGRESS", "")
    if v:
        return v == "0"
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):
        return True


class Phases:
    """phase = Phases("validate"); phase("build", "firmware for 8 cores") -> `odl validate [  1.2 s] build: ...`"""

    def __init__(self, command: str, stream=None):
        self.command = command
        self.stream = stream
        self.t0 = time.perf_counter()

    def __call__(self, name: str, detail: str = "") -> None:
        if quiet():
            return
        stream = self.stream or sys.stderr
        print(f"odl {self.command} [{time.perf_counter() - self.t0:6.1f} s] {name}" + (f": {detail}" if detail else ""),
              file=stream, flush=True)


def bar(iterable=None, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """A tqdm progress bar on stderr, only when stderr is a terminal (quiet() is false) and `enabled`; otherwise a
    stand-in with the same methods that draws nothing, so a redirected command writes no carriage-return frames
    into its log, only its plain lines."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or quiet() or not enabled:
        class _Null:
            def __init__(self, it): self.it = it
            def __iter__(self): return iter(self.it)
            def update(self, n=1): pass
            def set_postfix_str(self, s): pass
            def close(self): pass
            def __enter__(self): return self
            def __exit__(self, *a): pass
        return _Null(iterable if iterable is not None else range(total or 0))
    return tqdm(iterable, total=total, desc=f"odl {desc}", unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


def note(msg: str) -> None:
    """One line on stderr that does not break a progress bar drawn there."""
    try:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    except ImportError:
        print(msg, file=sys.stderr, flush=True)
