"""PyTorch checkpoint files, written so that a crash never leaves half a file, and read with errors that name the
file and the flag that gave it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from odl.common.errors import OdlError

CKPT_VERSION = 1     # the format of odl train's checkpoints (the "odl" entry)


def check_writable(path: str) -> None:
    p = Path(path).resolve()
    d = p.parent
    if not d.is_dir():
        raise OdlError(f"--checkpoint {path}: directory {d} does not exist")
    if p.is_dir():
        raise OdlError(f"--checkpoint {path} is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OdlError(f"--checkpoint {path}: cannot write in {d} ({e.strerror})") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise OdlError(f"--checkpoint {path}: file is not writable")


def save_atomic(obj: dict, path: str) -> None:
    """Write to a temporary file in the same directory, then rename it over the old one: a reader sees either
    the previous complete checkpoint or the new complete one."""
    p = Path(path).resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_checkpoint(path: str, what: str) -> dict:
    if not Path(path).is_file():
        raise OdlError(f"{what} {path}: no such file")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise OdlError(f"{what} {path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]})") from None
    return ck


def load_into(model: nn.Module, sd, path: str, model_name: str, what: str) -> None:
    if not isinstance(sd, dict):
        raise OdlError(f"{what} {path}: holds a {type(sd).__name__}, not a state_dict")
    try:
        model.load_state_dict(sd, strict=True)
    except Exception as e:
        msg = str(e).replace("\n", " ").replace("\t", "")
        raise OdlError(f"{what} {path} is not a checkpoint of model '{model_name}': {msg[:300]}") from None
