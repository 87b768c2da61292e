"""Host build of the kernel library (kernels_c/) as a shared library per precision, with numpy wrappers.

    lib = native.load("fp16")          # or "fp32"
    c = lib.mm_nn(a, b, cores=8)       # numpy in, numpy out

The library is compiled from kernels_c/*.c plus kernels_c/host/team_host.c (a sequential simulation of the
core team: odl_parallel runs the task once per core id), so the per-core splits of the kernels are exercised
exactly as on the target. Compiler: $ODL_HOST_CC (split on spaces) or `python -m ziglang cc`, native target.
Builds are cached by a hash of sources, flags and compiler in $ODL_NATIVE_CACHE or <tmp>/odl-native-<uid>.
FP16 arrays cross the boundary as raw binary16 buffers (numpy float16 == _Float16).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from odl.common.resources import resource_dir
from odl.common.precision import FP8_AMAX_SLOTS, FP8_STATE_HEAD
from odl.ir.kernel_structs import ctypes_struct

KERNELS_DIR = resource_dir("kernels_c")
PRECISIONS = {"fp16": np.float16, "fp32": np.float32}
_FLAGS = ["-O2", "-fPIC", "-shared", "-ffp-contract=fast", "-fno-math-errno"]
_FP16_FLAGS = ["-DODL_FP16=1"]
# clang: round every FP16 operation to FP16 (as the target does) instead of keeping FP32 excess precision
_CLANG_FP16_FLAGS = ["-Xclang", "-ffloat16-excess-precision=none"]

_P, _I, _F, _U32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_uint32

# The kernels' argument structs as ctypes Structures, laid out from odl_kernels.h itself (odl.ir.kernel_structs).
MmArgs = ctypes_struct("odl_mm_args_t")
Im2colArgs = ctypes_struct("odl_im2col_args_t")
Col2imArgs = ctypes_struct("odl_col2im_args_t")
TransposeArgs = ctypes_struct("odl_transpose_args_t")
BiasAddArgs = ctypes_struct("odl_bias_add_args_t")
BiasGradArgs = ctypes_struct("odl_bias_grad_args_t")
ReluArgs = ctypes_struct("odl_relu_args_t")
ReluBwdArgs = ctypes_struct("odl_relu_bwd_args_t")
SoftmaxXentArgs = ctypes_struct("odl_softmax_xent_args_t")
SgdArgs = ctypes_struct("odl_sgd_args_t")
FillArgs = ctypes_struct("odl_fill_args_t")
BnFwdArgs = ctypes_struct("odl_bn_fwd_args_t")
BnBwdArgs = ctypes_struct("odl_bn_bwd_args_t")
AddArgs = ctypes_struct("odl_add_args_t")
CopyArgs = ctypes_struct("odl_copy_args_t")
MaxpoolFwdArgs = ctypes_struct("odl_maxpool_fwd_args_t")
MaxpoolBwdArgs = ctypes_struct("odl_maxpool_bwd_args_t")
AvgpoolFwdArgs = ctypes_struct("odl_avgpool_fwd_args_t")
AvgpoolBwdArgs = ctypes_struct("odl_avgpool_bwd_args_t")
DropoutFwdArgs = ctypes_struct("odl_dropout_fwd_args_t")
DropoutBwdArgs = ctypes_struct("odl_dropout_bwd_args_t")
MseArgs = ctypes_struct("odl_mse_args_t")
SgdMomentumArgs = ctypes_struct("odl_sgd_momentum_args_t")
AdamArgs = ctypes_struct("odl_adam_args_t")
DwconvFwdArgs = ctypes_struct("odl_dwconv_fwd_args_t")
DwconvWgradArgs = ctypes_struct("odl_dwconv_wgrad_args_t")
DwconvIgradArgs = ctypes_struct("odl_dwconv_igrad_args_t")
Fp8PackArgs = ctypes_struct("odl_fp8_pack_args_t")
Fp8UnpackArgs = ctypes_struct("odl_fp8_unpack_args_t")
Fp8ScaleArgs = ctypes_struct("odl_fp8_scale_args_t")


def _compiler() -> list[str]:
    cc = os.environ.get("ODL_HOST_CC")
    return shlex.split(cc) if cc else [sys.executable, "-m", "ziglang", "cc"]


def _sources() -> list[Path]:
    return sorted(KERNELS_DIR.glob("*.c")) + [KERNELS_DIR / "host" / "team_host.c"]


def _cache_dir() -> Path:
    d = os.environ.get("ODL_NATIVE_CACHE")
    if d:
        return Path(d)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"odl-native-{uid}"


def build(precision: str) -> Path:
    """Compile (or reuse from the cache) the host shared library for one precision; returns its path."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    cc = _compiler()
    flags = _FLAGS + [f"-I{KERNELS_DIR / 'include'}"]
    if precision == "fp16":
        is_clang = "ziglang" in cc or any("clang" in Path(c).name for c in cc)
        flags += _FP16_FLAGS + (_CLANG_FP16_FLAGS if is_clang else [])
    h = hashlib.sha256()
    h.update(repr((cc, flags)).encode())
    for src in _sources() + sorted((KERNELS_DIR / "include").glob("*.h")):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    out_dir = _cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"libodl_kernels_{precision}_{h.hexdigest()[:16]}.so"
    if out.exists():
        return out
    tmp = out.with_suffix(f".{os.getpid()}.tmp.so")
    cmd = cc + flags + [str(s) for s in _sources()] + ["-o", str(tmp)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"building the native kernel library failed:\n{shlex.join(cmd)}\n{res.stderr}")
    os.replace(tmp, out)
    return out


class Kernels:
    """ctypes view of one precision's kernel library with numpy-in / numpy-out helpers."""

    def __init__(self, precision: str):
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.path = build(precision)
        self.lib = ctypes.CDLL(str(self.path))
        self.lib.odl_host_set_cores.argtypes = [_I]
        self.lib.odl_parallel.argtypes = [_P, _P]
        self.lib.odl_dropout_hash.argtypes = [_U32, _U32]
        self.lib.odl_dropout_hash.restype = _U32
        for fn in ("odl_expf", "odl_logf", "odl_sqrtf"):
            getattr(self.lib, fn).argtypes = [_F]
            getattr(self.lib, fn).restype = _F

    # -- plumbing --
    def _arr(self, x, shape=None) -> np.ndarray:
        a = np.ascontiguousarray(np.asarray(x, dtype=self.dtype))
        if shape is not None:
            a = a.reshape(shape)
        return a

    @staticmethod
    def _ptr(a: np.ndarray) -> int:
        return a.ctypes.data

    def run(self, kernel: str, args: ctypes.Structure, cores: int = 1) -> None:
        """odl_parallel(odl_<kernel>, &args) on a team of `cores` simulated cores."""
        self.lib.odl_host_set_cores(int(cores))
        fn = ctypes.cast(getattr(self.lib, f"odl_{kernel}"), _P)
        self.lib.odl_parallel(fn, ctypes.cast(ctypes.byref(args), _P))

    def _out(self, out, shape, accumulate):
        if out is None:
            if accumulate:
                raise ValueError("accumulate=True needs an output array")
            return np.empty(shape, dtype=self.dtype)
        if out.dtype != self.dtype or not out.flags.c_contiguous or out.shape != tuple(shape):
            raise ValueError(f"out must be a C-contiguous {self.dtype.__name__} array of shape {tuple(shape)}")
        return out

    # -- matmul --
    def _mm(self, kind, a, b, out, accumulate, cores):
        a, b = self._arr(a), self._arr(b)
        if kind == "nn":
            (m, k), (k2, n) = a.shape, b.shape
        elif kind == "nt":
            (m, k), (n, k2) = a.shape, b.shape
        else:
            (k, m), (k2, n) = a.shape, b.shape
        if k != k2:
            raise ValueError(f"mm_{kind}: inner sizes differ ({a.shape} vs {b.shape})")
        c = self._out(out, (m, n), accumulate)
        self.run(f"mm_{kind}", MmArgs(self._ptr(a), self._ptr(b), self._ptr(c), m, n, k, int(accumulate)), cores)
        return c

    def mm_nn(self, a, b, out=None, accumulate=False, cores=1):
        """C[M,N] (+)= A[M,K] @ B[K,N]"""
        return self._mm("nn", a, b, out, accumulate, cores)

    def mm_nt(self, a, b, out=None, accumulate=False, cores=1):
        """C[M,N] (+)= A[M,K] @ B[N,K]^T"""
        return self._mm("nt", a, b, out, accumulate, cores)

    def mm_tn(self, a, b, out=None, accumulate=False, cores=1):
        """C[M,N] (+)= A[K,M]^T @ B[K,N]"""
        return self._mm("tn", a, b, out, accumulate, cores)

    # -- conv shape transforms --
    @staticmethod
    def conv_out_size(h, w, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0)):
        """(HO, WO) for padding (top, left, bottom, right)."""
        pt, pl, pb, pr = padding
        return (h + pt + pb - kh) // stride[0] + 1, (w + pl + pr - kw) // stride[1] + 1

    def im2col(self, x, kernel, stride=(1, 1), padding=(0, 0, 0, 0), cores=1):
        """x [C,H,W] -> col [C*KH*KW, HO*WO]; padding = (top, left, bottom, right) or (top, left)."""
        x = self._arr(x)
        c, h, w = x.shape
        kh, kw = kernel
        pad = tuple(padding) if len(padding) == 4 else (padding[0], padding[1], padding[0], padding[1])
        ho, wo = self.conv_out_size(h, w, kh, kw, stride, pad)
        col = np.empty((c * kh * kw, ho * wo), dtype=self.dtype)
        self.run("im2col", Im2colArgs(self._ptr(x), self._ptr(col), c, h, w, kh, kw, stride[0], stride[1],
                                      pad[0], pad[1], ho, wo), cores)
        return col

    def col2im(self, col, shape, kernel, stride=(1, 1), padding=(0, 0, 0, 0), out=None, accumulate=False,
               cores=1):
        """Adjoint of im2col: col [C*KH*KW, HO*WO] -> dx [C,H,W] (shape = (C,H,W))."""
        c, h, w = shape
        kh, kw = kernel
        pad = tuple(padding) if len(padding) == 4 else (padding[0], padding[1], padding[0], padding[1])
        ho, wo = self.conv_out_size(h, w, kh, kw, stride, pad)
        col = self._arr(col, (c * kh * kw, ho * wo))
        dx = self._out(out, (c, h, w), accumulate)
        self.run("col2im", Col2imArgs(self._ptr(col), self._ptr(dx), c, h, w, kh, kw, stride[0], stride[1],
                                      pad[0], pad[1], ho, wo, int(accumulate)), cores)
        return dx

    # -- elementwise --
    def transpose(self, x, cores=1):
        """x [R, C] -> x^T [C, R]"""
        x = self._arr(x)
        r, c = x.shape
        out = np.empty((c, r), dtype=self.dtype)
        self.run("transpose", TransposeArgs(self._ptr(x), self._ptr(out), r, c, 0, 0), cores)
        return out

    def mm_nn_ct(self, a, b, out=None, accumulate=False, cores=1):
        """C^T[N,M] (+)= (A[M,K] @ B[K,N])^T: mm_nn storing C transposed"""
        a, b = self._arr(a), self._arr(b)
        (m, k), (k2, n) = a.shape, b.shape
        if k != k2:
            raise ValueError(f"mm_nn_ct: inner sizes differ ({a.shape} vs {b.shape})")
        c = self._out(out, (n, m), accumulate)
        self.run("mm_nn", MmArgs(self._ptr(a), self._ptr(b), self._ptr(c), m, n, k, int(accumulate), 0, 0, 0, 1),
                 cores)
        return c

    def bias_add(self, y, bias, cores=1):
        """y [N,C,...] += bias[C], in place on a copy; returns it."""
        y = self._arr(y).copy()
        n, c = y.shape[0], y.shape[1]
        hw = int(np.prod(y.shape[2:], dtype=np.int64)) if y.ndim > 2 else 1
        bias = self._arr(bias, (c,))
        self.run("bias_add", BiasAddArgs(self._ptr(y), self._ptr(bias), n, c, hw), cores)
        return y

    def bias_grad(self, dy, out=None, accumulate=False, cores=1):
        """db[C] (+)= dy [N,C,...] summed over all axes but 1."""
        dy = self._arr(dy)
        n, c = dy.shape[0], dy.shape[1]
        hw = int(np.prod(dy.shape[2:], dtype=np.int64)) if dy.ndim > 2 else 1
        db = self._out(out, (c,), accumulate)
        self.run("bias_grad", BiasGradArgs(self._ptr(dy), self._ptr(db), n, c, hw, int(accumulate)), cores)
        return db

    def relu_fwd(self, x, cores=1):
        x = self._arr(x)
        y = np.empty_like(x)
        self.run("relu_fwd", ReluArgs(self._ptr(x), self._ptr(y), x.size), cores)
        return y

    def relu_bwd(self, y, dy, out=None, accumulate=False, cores=1):
        y, dy = self._arr(y), self._arr(dy)
        dx = self._out(out, y.shape, accumulate)
        self.run("relu_bwd", ReluBwdArgs(self._ptr(y), self._ptr(dy), self._ptr(dx), y.size, int(accumulate)),
                 cores)
        return dx

    def softmax_xent(self, logits, labels, cores=1):
        """Returns (loss: float, dlogits [N,C])."""
        z = self._arr(logits)
        n, c = z.shape
        lab = np.ascontiguousarray(np.asarray(labels, dtype=np.int32).reshape(n))
        dz = np.empty_like(z)
        loss = np.zeros(1, dtype=np.float32)
        self.run("softmax_xent", SoftmaxXentArgs(self._ptr(z), self._ptr(lab), self._ptr(dz), self._ptr(loss),
                                                 n, c), cores)
        return float(loss[0]), dz

    def sgd(self, w, g, lr, cores=1):
        """Returns w - lr * g (w is copied)."""
        w = self._arr(w).copy()
        g = self._arr(g, w.shape)
        self.run("sgd", SgdArgs(self._ptr(w), self._ptr(g), w.size, float(lr)), cores)
        return w

    def fill(self, shape, value, cores=1):
        x = np.full(shape, np.nan, dtype=self.dtype)
        self.run("fill", FillArgs(self._ptr(x), x.size, float(value)), cores)
        return x

    def expf(self, x: float) -> float:
        return self.lib.odl_expf(float(x))

    def logf(self, x: float) -> float:
        return self.lib.odl_logf(float(x))

    # -- ops for ResNet8 / DS-CNN --
    @staticmethod
    def _opt(a):
        """pointer of an optional array (None -> NULL)"""
        return None if a is None else a.ctypes.data

    def _f32(self, a, shape):
        return np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(shape)).copy()

    def bn_fwd(self, x, gamma=None, beta=None, running_mean=None, running_var=None, training=True, eps=1e-5,
               momentum=0.1, cores=1):
        """x [N,C,...]. Returns (y, mean, rstd, running_mean', running_var') (FP32 stats; running_* are updated
        copies, None when not given)."""
        x = self._arr(x)
        n, c = x.shape[0], x.shape[1]
        hw = int(np.prod(x.shape[2:], dtype=np.int64)) if x.ndim > 2 else 1
        g = None if gamma is None else self._arr(gamma, (c,))
        b = None if beta is None else self._arr(beta, (c,))
        rm = None if running_mean is None else self._f32(running_mean, (c,))
        rv = None if running_var is None else self._f32(running_var, (c,))
        y = np.empty_like(x)
        mean = np.zeros(c, np.float32)
        rstd = np.zeros(c, np.float32)
        self.run("bn_fwd", BnFwdArgs(self._ptr(x), self._ptr(y), self._opt(g), self._opt(b), self._ptr(mean),
                                     self._ptr(rstd), self._opt(rm), self._opt(rv), n, c, hw, float(eps),
                                     float(momentum), int(training)), cores)
        return y, mean, rstd, rm, rv

    def bn_bwd(self, x, dy, mean, rstd, gamma=None, training=True, want_dx=True, want_dgamma=True,
               want_dbeta=True, out=None, accumulate=False, cores=1):
        """Returns (dx, dgamma, dbeta) (None where not wanted)."""
        x, dy = self._arr(x), self._arr(dy)
        n, c = x.shape[0], x.shape[1]
        hw = int(np.prod(x.shape[2:], dtype=np.int64)) if x.ndim > 2 else 1
        g = None if gamma is None else self._arr(gamma, (c,))
        mean, rstd = self._f32(mean, (c,)), self._f32(rstd, (c,))
        dx = self._out(out, x.shape, accumulate) if want_dx else None
        dg = np.full(c, np.nan, self.dtype) if want_dgamma else None
        db = np.full(c, np.nan, self.dtype) if want_dbeta else None
        self.run("bn_bwd", BnBwdArgs(self._ptr(x), self._ptr(dy), self._opt(dx), self._opt(g), self._ptr(mean),
                                     self._ptr(rstd), self._opt(dg), self._opt(db), n, c, hw, int(training),
                                     int(accumulate)), cores)
        return dx, dg, db

    def relu6_fwd(self, x, cores=1):
        x = self._arr(x)
        y = np.empty_like(x)
        self.run("relu6_fwd", ReluArgs(self._ptr(x), self._ptr(y), x.size), cores)
        return y

    def relu6_bwd(self, y, dy, out=None, accumulate=False, cores=1):
        y, dy = self._arr(y), self._arr(dy)
        dx = self._out(out, y.shape, accumulate)
        self.run("relu6_bwd", ReluBwdArgs(self._ptr(y), self._ptr(dy), self._ptr(dx), y.size, int(accumulate)),
                 cores)
        return dx

    def add(self, a, b, cores=1):
        a = self._arr(a)
        b = self._arr(b, a.shape)
        y = np.empty_like(a)
        self.run("add", AddArgs(self._ptr(a), self._ptr(b), self._ptr(y), a.size), cores)
        return y

    def copy(self, src, out=None, accumulate=False, cores=1):
        src = self._arr(src)
        dst = self._out(out, src.shape, accumulate)
        self.run("copy", CopyArgs(self._ptr(src), self._ptr(dst), src.size, int(accumulate)), cores)
        return dst

    @staticmethod
    def _pool_geom(x, kernel, stride, padding):
        n, c, h, w = x.shape
        kh, kw = kernel
        sh, sw = stride
        pad = tuple(padding) if len(padding) == 4 else (padding[0], padding[1], padding[0], padding[1])
        ho, wo = Kernels.conv_out_size(h, w, kh, kw, stride, pad)
        return (n, c, h, w, kh, kw, sh, sw, pad[0], pad[1], ho, wo)

    def maxpool_fwd(self, x, kernel, stride, padding=(0, 0), cores=1):
        """x [N,C,H,W] -> (y [N,C,HO,WO], argmax int32 [N,C,HO,WO] as ih*W+iw)."""
        x = self._arr(x)
        geom = self._pool_geom(x, kernel, stride, padding)
        shape = geom[:2] + geom[-2:]
        y = np.empty(shape, self.dtype)
        am = np.empty(shape, np.int32)
        self.run("maxpool_fwd", MaxpoolFwdArgs(self._ptr(x), self._ptr(y), self._ptr(am), *geom), cores)
        return y, am

    def maxpool_bwd(self, dy, argmax, shape, out=None, accumulate=False, cores=1):
        """dx [shape = N,C,H,W] (+)= scatter of dy [N,C,HO,WO] to argmax."""
        dy = self._arr(dy)
        am = np.ascontiguousarray(np.asarray(argmax, dtype=np.int32).reshape(dy.shape))
        n, c, h, w = shape
        dx = self._out(out, tuple(shape), accumulate)
        self.run("maxpool_bwd", MaxpoolBwdArgs(self._ptr(dy), self._ptr(am), self._ptr(dx), n, c, h, w,
                                               dy.shape[2], dy.shape[3], int(accumulate)), cores)
        return dx

    def avgpool_fwd(self, x, kernel, stride, padding=(0, 0), count_include_pad=True, cores=1):
        x = self._arr(x)
        geom = self._pool_geom(x, kernel, stride, padding)
        y = np.empty(geom[:2] + geom[-2:], self.dtype)
        self.run("avgpool_fwd", AvgpoolFwdArgs(self._ptr(x), self._ptr(y), *geom, int(count_include_pad)), cores)
        return y

    def avgpool_bwd(self, dy, shape, kernel, stride, padding=(0, 0), count_include_pad=True, out=None,
                    accumulate=False, cores=1):
        geom = self._pool_geom(np.empty(shape, np.int8), kernel, stride, padding)
        dy = self._arr(dy, geom[:2] + geom[-2:])
        dx = self._out(out, tuple(shape), accumulate)
        self.run("avgpool_bwd", AvgpoolBwdArgs(self._ptr(dy), self._ptr(dx), *geom, int(count_include_pad),
                                               int(accumulate)), cores)
        return dx

    @staticmethod
    def dropout_threshold(p: float) -> int:
        return int(p * 4294967296.0) & 0xFFFFFFFF

    def dropout_fwd(self, x, p, seed, cores=1):
        """Returns (y, mask uint8)."""
        x = self._arr(x)
        y = np.empty_like(x)
        mask = np.empty(x.shape, np.uint8)
        self.run("dropout_fwd", DropoutFwdArgs(self._ptr(x), self._ptr(y), self._ptr(mask), x.size,
                                               int(seed) & 0xFFFFFFFF, self.dropout_threshold(p),
                                               1.0 / (1.0 - p)), cores)
        return y, mask

    def dropout_bwd(self, dy, mask, p, out=None, accumulate=False, cores=1):
        dy = self._arr(dy)
        mask = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8).reshape(dy.shape))
        dx = self._out(out, dy.shape, accumulate)
        self.run("dropout_bwd", DropoutBwdArgs(self._ptr(dy), self._ptr(mask), self._ptr(dx), dy.size,
                                               1.0 / (1.0 - p), int(accumulate)), cores)
        return dx

    def dropout_hash(self, seed: int, i: int) -> int:
        return int(self.lib.odl_dropout_hash(seed & 0xFFFFFFFF, i & 0xFFFFFFFF))

    def mse(self, pred, target, cores=1):
        """Returns (loss: float, dpred)."""
        a = self._arr(pred)
        b = self._arr(target, a.shape)
        d = np.empty_like(a)
        loss = np.zeros(1, np.float32)
        self.run("mse", MseArgs(self._ptr(a), self._ptr(b), self._ptr(d), self._ptr(loss), a.size), cores)
        return float(loss[0]), d

    def sgd_momentum(self, w, g, buf, lr, momentum=0.0, wd=0.0, first=False, cores=1, center=None, mu=0.0):
        """Returns (w', buf') (copies; buf may be None when momentum == 0). center: FedProx's FP32 centre."""
        w = self._arr(w).copy()
        g = self._arr(g, w.shape)
        buf = None if buf is None else self._f32(buf, w.shape)
        center = None if center is None else self._f32(center, w.shape)
        self.run("sgd_momentum", SgdMomentumArgs(self._ptr(w), self._ptr(g), self._opt(buf), w.size, float(lr),
                                                 float(momentum), float(wd), int(first), self._opt(center),
                                                 float(mu)), cores)
        return w, buf

    def adam(self, w, g, m, v, lr, b1, b2, eps, wd, step, cores=1):
        """One Adam step number `step` (1-based). Returns (w', m', v') (copies)."""
        w = self._arr(w).copy()
        g = self._arr(g, w.shape)
        m, v = self._f32(m, w.shape), self._f32(v, w.shape)
        self.run("adam", AdamArgs(self._ptr(w), self._ptr(g), self._ptr(m), self._ptr(v), w.size, float(lr),
                                  float(b1), float(b2), float(eps), float(wd), 1.0 - b1 ** step,
                                  1.0 - b2 ** step), cores)
        return w, m, v

    def sqrtf(self, x: float) -> float:
        return self.lib.odl_sqrtf(float(x))

    def _dw_geom(self, shape, kernel, stride, padding):
        c, h, w = shape
        kh, kw = kernel
        pad = tuple(padding) if len(padding) == 4 else (padding[0], padding[1], padding[0], padding[1])
        ho, wo = self.conv_out_size(h, w, kh, kw, stride, pad)
        return (c, h, w, kh, kw, stride[0], stride[1], pad[0], pad[1], ho, wo)

    def dwconv_fwd(self, x, w, stride=(1, 1), padding=(0, 0), cores=1, bias=None):
        """Depthwise conv, one sample: x [C,H,W], w [C,KH,KW] (or [C,1,KH,KW]) (+ bias [C]) -> y [C,HO,WO]."""
        x = self._arr(x)
        c = x.shape[0]
        w = self._arr(w)
        w = w.reshape(c, w.shape[-2], w.shape[-1])
        geom = self._dw_geom(x.shape, w.shape[1:], stride, padding)
        y = np.empty((c, geom[-2], geom[-1]), self.dtype)
        b = None if bias is None else self._arr(bias)
        self.run("dwconv_fwd", DwconvFwdArgs(self._ptr(x), self._ptr(w), self._ptr(y), *geom,
                                             None if b is None else self._ptr(b)), cores)
        return y

    def dwconv_wgrad(self, x, dy, kernel, stride=(1, 1), padding=(0, 0), out=None, accumulate=False, cores=1):
        """dw [C,KH,KW] (+)= weight gradient from x [C,H,W] and dy [C,HO,WO]."""
        x = self._arr(x)
        geom = self._dw_geom(x.shape, kernel, stride, padding)
        dy = self._arr(dy, (x.shape[0], geom[-2], geom[-1]))
        dw = self._out(out, (x.shape[0],) + tuple(kernel), accumulate)
        self.run("dwconv_wgrad", DwconvWgradArgs(self._ptr(x), self._ptr(dy), self._ptr(dw), *geom,
                                                 int(accumulate)), cores)
        return dw

    def dwconv_igrad(self, dy, w, shape, stride=(1, 1), padding=(0, 0), out=None, accumulate=False, cores=1):
        """dx [shape = C,H,W] (+)= input gradient from dy [C,HO,WO] and w [C,KH,KW]."""
        c = shape[0]
        w = self._arr(w)
        w = w.reshape(c, w.shape[-2], w.shape[-1])
        geom = self._dw_geom(shape, w.shape[1:], stride, padding)
        dy = self._arr(dy, (c, geom[-2], geom[-1]))
        dx = self._out(out, tuple(shape), accumulate)
        self.run("dwconv_igrad", DwconvIgradArgs(self._ptr(dy), self._ptr(w), self._ptr(dx), *geom,
                                                 int(accumulate)), cores)
        return dx

    # -- FP8 storage (fp8.c) --
    def fp8_pack(self, x, scale: float, fmt: int, amax=None, cores=1):
        """(uint8 codes of x / scale in format fmt (0 E4M3, 1 E5M2), the amax recorded: max(amax, |x|))."""
        x = self._arr(x)
        q = np.empty(x.shape, np.uint8)
        s = np.array([scale], np.float32)
        a = np.zeros(FP8_AMAX_SLOTS, np.float32)      # one slot per core
        a[0] = 0.0 if amax is None else amax
        self.run("fp8_pack", Fp8PackArgs(self._ptr(x), self._ptr(q), x.size, int(fmt), self._ptr(s), self._ptr(a)),
                 cores)
        return q, float(np.nan if np.isnan(a).any() else a.max())

    def fp8_unpack(self, q, scale: float, fmt: int, cores=1):
        q = np.ascontiguousarray(q, np.uint8)
        x = np.empty(q.shape, self.dtype)
        s = np.array([scale], np.float32)
        self.run("fp8_unpack", Fp8UnpackArgs(self._ptr(q), self._ptr(x), q.size, int(fmt), self._ptr(s)), cores)
        return x

    def fp8_scale(self, state, hist: int, fmt: int, cores=1):
        """odl_fp8_scale on a [count, FP8_STATE_HEAD + hist] float32 state array (updated in place)."""
        assert state.dtype == np.float32 and state.flags.c_contiguous and state.shape[1] == FP8_STATE_HEAD + hist
        self.run("fp8_scale", Fp8ScaleArgs(self._ptr(state), state.shape[0], hist, int(fmt)), cores)
        return state


_LOADED: dict[str, Kernels] = {}


def load(precision: str = "fp32") -> Kernels:
    """The kernel library for 'fp16' or 'fp32', built once per process (and cached on disk)."""
    if precision not in _LOADED:
        _LOADED[precision] = Kernels(precision)
    return _LOADED[precision]
