"""Compiled objects kept between firmware builds, keyed by content, so that the kernels and the target runtime
(about twenty files, among them the large matmul.c) are compiled once per compiler, flags and source, not once
per build. Every test, validation and profile builds firmware; only its generated model differs.

An entry's key hashes the compiler's identity, the flags, the source file's path (relative to the checkout for
odl's own sources) and bytes, and the names of the
headers in the build's own include folders (a header appearing there could change what an #include finds). The
compiler's dependency list (-MD) is stored with each entry, every header with the hash of its bytes: an entry is
used only while all of them are unchanged. Entries are written whole and renamed into place, so builds running
side by side (a fleet, the test suite) never see half an object.

$ODL_OBJ_CACHE names the folder (default: $ODL_CACHE_DIR/obj, else ~/.cache/odl/obj); ODL_OBJ_CACHE=off turns
the cache off."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from odl.common.resources import resource_dir


def cache_dir() -> Path | None:
    d = os.environ.get("ODL_OBJ_CACHE")
    if d in ("off", "0"):
        return None
    if d:
        return Path(d)
    return Path(os.environ.get("ODL_CACHE_DIR") or Path.home() / ".cache" / "odl") / "obj"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _root() -> str:
    """The folder holding kernels_c/ and targets/ (a checkout, or odl/_data in a wheel): paths under it are kept
    relative, so another checkout of the same sources (a CI clone) finds the objects this one compiled."""
    return str(resource_dir("kernels_c").parent.resolve())


def _rel(path: str) -> str:
    root = _root()
    return "<root>" + path[len(root):] if path == root or path.startswith(root + os.sep) else path


def _abs(path: str) -> Path:
    return Path(_root() + path[len("<root>"):]) if path.startswith("<root>") else Path(path)


def key(compiler: tuple, flags: list[str], src: Path, own_include_dirs: list[Path]) -> str:
    h = hashlib.sha256()
    root = _root()
    flags = [f.replace(root, "<root>") for f in flags]
    h.update(repr((compiler, flags, _rel(str(Path(src).resolve())))).encode())
    h.update(Path(src).read_bytes())
    for d in own_include_dirs:
        h.update(repr(sorted(p.name for p in Path(d).glob("*.h"))).encode())
    return h.hexdigest()


def _entry(root: Path, k: str) -> Path:
    return root / k[:2] / k


def lookup(root: Path, k: str) -> Path | None:
    """The cached object for key k, if its recorded headers are all unchanged."""
    e = _entry(root, k)
    try:
        deps = json.loads((e / "deps.json").read_text())
        if all(_sha(_abs(p)) == sha for p, sha in deps):
            return e / "obj.o"
    except (OSError, ValueError):
        pass
    return None


def _deps(depfile: Path, src: Path) -> list[str]:
    """The files a make-style dependency list names, the source itself left out."""
    text = depfile.read_text().replace("\\\n", " ")
    files = text.split(":", 1)[1].split() if ":" in text else []
    return [f for f in files if Path(f).resolve() != Path(src).resolve()]


def store(root: Path, k: str, obj: Path, depfile: Path, src: Path) -> None:
    """Keep obj under key k with the hashes of the headers it was compiled from."""
    deps = [(_rel(str(Path(p).resolve())), _sha(Path(p))) for p in _deps(depfile, src)]
    e = _entry(root, k)
    tmp = e.parent / f".{k}.{uuid.uuid4().hex}"
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(obj, tmp / "obj.o")
    (tmp / "deps.json").write_text(json.dumps(deps))
    try:
        os.replace(tmp, e) if not e.exists() else shutil.rmtree(tmp, ignore_errors=True)
    except OSError:          # another build stored the same entry first
        shutil.rmtree(tmp, ignore_errors=True)
