"""The firmware build's object cache: a hit only while the source, flags and every header it was compiled from
are unchanged."""
from pathlib import Path

from odl.target import objcache


def _compile(tmp: Path, src: Path, hdr: Path):
    obj, dep = tmp / "x.o", tmp / "x.d"
    obj.write_bytes(b"OBJ" + src.read_bytes() + hdr.read_bytes())
    dep.write_text(f"{obj}: {src} \\\n  {hdr}\n")
    return obj, dep


def test_hit_then_miss_when_a_header_changes(tmp_path):
    root = tmp_path / "cache"
    src, hdr = tmp_path / "k.c", tmp_path / "k.h"
    src.write_text('#include "k.h"\n')
    hdr.write_text("#define N 1\n")
    k = objcache.key(("cc", "v1"), ["-O2"], src, [])
    assert objcache.lookup(root, k) is None
    obj, dep = _compile(tmp_path, src, hdr)
    objcache.store(root, k, obj, dep, src)
    hit = objcache.lookup(root, k)
    assert hit is not None and hit.read_bytes() == obj.read_bytes()
    hdr.write_text("#define N 2\n")                 # a header it was compiled from changed
    assert objcache.lookup(root, k) is None
    # other flags, another compiler or other source bytes are other keys
    assert len({k, objcache.key(("cc", "v1"), ["-O3"], src, []), objcache.key(("cc", "v2"), ["-O2"], src, [])}) == 3
    src.write_text('#include "k.h"\nint x;\n')
    assert objcache.key(("cc", "v1"), ["-O2"], src, []) != k


def test_a_header_appearing_in_the_builds_own_folder_changes_the_key(tmp_path):
    src = tmp_path / "k.c"
    src.write_text("int x;\n")
    gen = tmp_path / "gen"
    gen.mkdir()
    k0 = objcache.key(("cc",), [], src, [gen])
    (gen / "odl_model.h").write_text("")
    assert objcache.key(("cc",), [], src, [gen]) != k0


def test_off(monkeypatch):
    monkeypatch.setenv("ODL_OBJ_CACHE", "off")
    assert objcache.cache_dir() is None
    monkeypatch.setenv("ODL_OBJ_CACHE", "/x/y")
    assert objcache.cache_dir() == Path("/x/y")
