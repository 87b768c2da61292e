"""Importing a user's Python file named on the command line (`path/to/file.py:Name` for models and data)."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from odl.common.errors import OdlError


def import_file(path: str, what: str):
    """The module of the file at `path` ("{what} file ..." in errors: missing, or failing to import), exit 2."""
    p = Path(path)
    if not p.is_file():
        raise OdlError(f"{what} file '{path}' does not exist")
    modname = f"odl_{what}_" + re.sub(r"\W", "_", p.stem)
    sp = importlib.util.spec_from_file_location(modname, p)
    mod = importlib.util.module_from_spec(sp)
    sys.modules[modname] = mod
    try:
        sp.loader.exec_module(mod)
    except Exception as e:  # the user's file itself is broken
        raise OdlError(f"{what} file '{path}' failed to import: {type(e).__name__}: {e}") from None
    return mod
