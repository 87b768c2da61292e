"""The firmware's im2col gathers (targets/rv32-cluster/dma.c, odl_dma_im2col) against their host model (odl.ir.program.Gather,
whose transfers the DMA cost model times): dma.c built for the host (tests/kernels/native/dma_probe.c) issues exactly the
transfers Gather lists (same destinations, sources, row lengths, rows and strides), and carrying them out gives
numpy's im2col, for awkward geometries in every mode (per column row, element by element when strided, wide; with
and without the zero fill)."""
import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import im2col_ref
from odl.run import native
from odl.ir.program import Buffer, Gather
from odl.tile.memory import gather_wide
from odl.common.resources import resource_dir


GEOMS = [
    dict(c=3, h=7, w=5, kh=3, kw=3, sh=1, sw=1, pt=1, pl=1, ho=7, wo=5),      # same conv, odd sizes
    dict(c=5, h=6, w=6, kh=3, kw=3, sh=1, sw=1, pt=1, pl=1, ho=2, wo=6),      # the top chunk
    dict(c=4, h=6, w=6, kh=3, kw=3, sh=1, sw=1, pt=-2, pl=1, ho=2, wo=6),     # a middle chunk
    dict(c=2, h=6, w=7, kh=3, kw=3, sh=1, sw=1, pt=-3, pl=1, ho=3, wo=7),     # the bottom chunk
    dict(c=2, h=9, w=6, kh=3, kw=3, sh=2, sw=1, pt=1, pl=1, ho=5, wo=6),      # stride 2 along H only
    dict(c=2, h=4, w=4, kh=3, kw=2, sh=1, sw=1, pt=-2, pl=0, ho=3, wo=3),     # unpadded along W
    dict(c=1, h=3, w=3, kh=5, kw=5, sh=1, sw=1, pt=2, pl=2, ho=3, wo=3),      # kernel larger than the image
    dict(c=2, h=5, w=4, kh=3, kw=3, sh=1, sw=1, pt=3, pl=1, ho=2, wo=4),      # a chunk whose first taps are padding
    dict(c=3, h=9, w=7, kh=3, kw=3, sh=2, sw=2, pt=1, pl=1, ho=5, wo=4),      # stride 2, odd input
    dict(c=2, h=8, w=8, kh=1, kw=1, sh=2, sw=2, pt=0, pl=0, ho=4, wo=4),      # 1x1 stride-2 shortcut
    dict(c=3, h=5, w=6, kh=3, kw=4, sh=1, sw=1, pt=1, pl=2, ho=5, wo=6),      # even kernel, asymmetric padding
    dict(c=1, h=6, w=10, kh=4, kw=10, sh=2, sw=3, pt=-1, pl=4, ho=2, wo=3),   # wide kernel, stride 3 along W
]
ES = 2      # FP16 elements


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    here = Path(__file__).resolve().parent
    out = tmp_path_factory.mktemp("dma") / "libdma_probe.so"
    cmd = native._compiler() + ["-O1", "-fPIC", "-shared", f"-I{resource_dir('targets') / 'rv32-cluster'}",
                                f"-I{resource_dir('kernels_c') / 'include'}", str(here / "native" / "dma_probe.c"),
                                "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lib = ctypes.CDLL(str(out))
    lib.dma_probe_im2col.restype = ctypes.c_int
    return lib


GEOM_KEYS = ("c", "h", "w", "kh", "kw", "sh", "sw", "pt", "pl", "ho", "wo")


def _model(t: Gather) -> list[tuple]:
    """Gather's transfers as the firmware queues them: (dst, src or -1, row bytes, rows, dst stride, src stride)."""
    out = [(l1o * ES, l2o * ES, n * ES, r, l1s * ES, l2s * ES) for l2o, l1o, r, n, l2s, l1s in t.pieces()]
    out += [(o * ES, -1, n * ES, r, s * ES, 0) for o, r, n, s in t.edges() + (t.zeros() if t.zero else [])]
    return out


def _data(rng, g):
    """x (no zeros) and numpy's im2col of it, FP16."""
    x = (rng.standard_normal((g["c"], g["h"], g["w"])) + 10).astype(np.float16)
    ref = im2col_ref(x.astype(np.float32), g["kh"], g["kw"], g["sh"], g["sw"], g["pt"], g["pl"], g["ho"],
                      g["wo"]).astype(np.float16).reshape(-1)
    return x, ref


def _gather(probe, col, x, g, mode) -> list[tuple]:
    """Runs the firmware's odl_dma_im2col into col and returns its transfers, sorted."""
    rec = np.zeros(6 * 4096, np.int64)
    n = probe.dma_probe_im2col(col.ctypes.data_as(ctypes.c_void_p), x.ctypes.data_as(ctypes.c_void_p),
                               ctypes.c_uint32(ES), *[ctypes.c_int(g[k]) for k in GEOM_KEYS], ctypes.c_int(mode),
                               rec.ctypes.data_as(ctypes.POINTER(ctypes.c_long)), ctypes.c_int(4096))
    assert n > 0
    return sorted(tuple(int(v) for v in rec[6 * k:6 * k + 6]) for k in range(n))


@pytest.mark.parametrize("g", GEOMS)
def test_firmware_gather_matches_its_model(probe, g):
    x, ref = _data(np.random.default_rng(3), g)
    xb, cb = Buffer("x", x.size), Buffer("col", ref.size)
    modes = [(zero, wide) for zero in (1, 0) for wide in ((0, 1) if gather_wide(g, ES) else (0,))]
    assert len(modes) == 4 or not (g["sh"] == g["sw"] == 1 and g["wo"] == g["w"])
    for zero, wide in modes:
        t = Gather(xb, 0, 0, cb, 0, g, zero=bool(zero), wide=bool(wide))
        # without the zero fill the columns hold the padding already (a gather into the same layout before)
        col = np.full(ref.size, np.nan, np.float16) if zero else np.where(ref == 0, 0, np.nan).astype(np.float16)
        got = _gather(probe, col, x, g, zero | 2 * wide)
        assert got == sorted(_model(t)), f"zero={zero} wide={wide}: the firmware's transfers differ from Gather's"
        np.testing.assert_array_equal(col, ref, err_msg=f"zero={zero} wide={wide}")


@pytest.mark.parametrize("cores", [1, 3, 8])
def test_gather_then_padding_kernel_gives_im2col(probe, cores):
    """Rows wider than the DMA's zero row: the gather moves only the in-image elements (no zero fill) and the im2col
    kernel's pad_only pass writes the padding, per tap, over each core's channels; together they give im2col."""
    lib = native.load("fp16")
    rng = np.random.default_rng(cores)
    for g in GEOMS:
        x, ref = _data(rng, g)
        col = np.full(ref.size, np.nan, np.float16)
        _gather(probe, col, x, g, 0)
        assert np.isnan(col).any() == bool((ref == 0).any())
        lib.run("im2col", native.Im2colArgs(0, col.ctypes.data, *[g[k] for k in GEOM_KEYS], 1, 1, 1), cores)
        np.testing.assert_array_equal(col, ref, err_msg=f"{g}")
