"""Number formats, in one place: what a precision name means on the device and on the host, and the byte size of
every buffer element type. Every stage asks this module instead of testing the precision string itself.

A precision is how the training step computes:
- `fp32`: every kernel in FP32 (1 lane per 32-bit word).
- `fp16`: every kernel in FP16, 2 lanes per 32-bit word (the target's packed-FP16 SIMD, `-DODL_FP16=1`).
- `mixed`: `odl train` only. The step computes in FP16 as `fp16` does, while the device keeps FP32 master weights
  (and optimizer state) that the update writes, and scales the loss dynamically (overflowing steps are skipped).

Storage formats (`--store fp8`, docs/formats.md): E4M3 and E5M2, the per-tensor delayed-scaling rule (fp8_scale) and
what storing a tensor in FP8 and reading it back gives (fp8_cast, the reference's cast; kernels_c/fp8.c is bitwise
the same).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from odl.common.errors import OdlError

ALIGN = 16   # bytes: every arena offset, L1 buffer and blob field is aligned to this (DMA bursts, SIMD loads)


def align(v: int, to: int = ALIGN) -> int:
    """`v` rounded up to a multiple of `to`."""
    return (v + to - 1) // to * to


@dataclass(frozen=True)
class Precision:
    name: str            # as on the command line
    device: str          # the precision the kernels compute in: "fp32" or "fp16"
    master_fp32: bool    # FP32 master weights updated from FP16 gradients, with loss scaling (mixed)

    @property
    def elem_bytes(self) -> int:
        """Bytes of one float of the step (buffers of dtype "odl")."""
        return 2 if self.device == "fp16" else 4

    @property
    def bits(self) -> int:
        return 8 * self.elem_bytes

    @property
    def lanes(self) -> int:
        """SIMD lanes per 32-bit word."""
        return 4 // self.elem_bytes

    @property
    def np_dtype(self) -> type:
        return np.float16 if self.device == "fp16" else np.float32

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float16 if self.device == "fp16" else torch.float32

    @property
    def c_defines(self) -> list[str]:
        """The C compiler flags that select this precision in kernels_c/ (odl_types.h)."""
        return ["-DODL_FP16=1"] if self.device == "fp16" else []

    @property
    def c_elem(self) -> str:
        """The element type's name in layout files ("f16" or "f32")."""
        return "f16" if self.device == "fp16" else "f32"


PRECISIONS = {p.name: p for p in (Precision("fp32", "fp32", False), Precision("fp16", "fp16", False),
                                  Precision("mixed", "fp16", True))}
STEP_PRECISIONS = ("fp32", "fp16")    # what one lowered step computes in (validate, compile, profile, tune)


def precision_of(name: "str | Precision", allowed=tuple(PRECISIONS)) -> Precision:
    """The Precision named `name`; an OdlError naming the choices otherwise."""
    if isinstance(name, Precision):
        name = name.name
    if name not in allowed:
        raise OdlError(f"precision must be one of {', '.join(allowed)}, not {name!r}")
    return PRECISIONS[name]


# Element types of buffers other than the step's floats, in bytes and as numpy dtypes ("odl" is the step's float:
# ask the Precision).
# "f8": an FP8 code (E4M3 or E5M2, see Fp8Format), stored and moved as a byte.
DTYPE_BYTES = {"f32": 4, "i32": 4, "u8": 1, "f8": 1}
DTYPE_NP = {"f32": np.float32, "i32": np.int32, "u8": np.uint8, "f8": np.uint8}


def dtype_bytes(dtype: str, precision: "str | Precision") -> int:
    """Bytes of one element of a buffer of `dtype` in a step of `precision`."""
    return precision_of(precision).elem_bytes if dtype == "odl" else DTYPE_BYTES[dtype]


def dtype_np(dtype: str, precision: "str | Precision") -> type:
    return precision_of(precision).np_dtype if dtype == "odl" else DTYPE_NP[dtype]


# ---- FP8 storage (--store fp8, docs/formats.md) --------------------------------------------------------------------
@dataclass(frozen=True)
class Fp8Format:
    """An 8-bit float format tensors are stored in (kernels_c/fp8.c, odl_fp8_pack / odl_fp8_unpack)."""
    name: str            # "e4m3" | "e5m2"
    code: int            # the kernels' fmt argument (ODL_FP8_E4M3 / ODL_FP8_E5M2 in odl_kernels.h)
    exp_bits: int
    mant_bits: int
    bias: int
    max: float           # the largest finite value: packing saturates to +-max

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float8_e4m3fn if self.name == "e4m3" else torch.float8_e5m2


E4M3 = Fp8Format("e4m3", 0, 4, 3, 7, 448.0)        # "fn": no infinity, NaN = S.1111.111 (activations)
E5M2 = Fp8Format("e5m2", 1, 5, 2, 15, 57344.0)     # IEEE-like: inf and NaNs (gradients)
FP8_FORMATS = {f.name: f for f in (E4M3, E5M2)}
FP8_HISTORY = 16              # amax history entries per scaled tensor (delayed scaling)
FP8_AMAX_SLOTS = 8            # amax slots per tensor, one per core (ODL_FP8_AMAX_SLOTS)
FP8_STATE_HEAD = 1 + FP8_AMAX_SLOTS   # a tensor's state: [scale, amax[slots], history[FP8_HISTORY]]
FP8_SCALE_EXP = 64            # scales are powers of two in [2^-64, 2^64]
STORES = ("compute", "fp8")   # --store: tensors kept for the backward in the compute precision, or in FP8


def fp8_scale(history, fmt: Fp8Format) -> float:
    """The scale of a tensor from its amax history (delayed scaling; odl_fp8_scale in kernels_c/fp8.c is the same
    rule): the smallest power of two s in [2^-64, 2^64] with max(history) <= fmt.max * s, the maximum taken over
    the finite entries; 1 when none is finite and positive. A power of two makes x / s and q * s exact."""
    m = max((abs(float(np.float32(h))) for h in history if np.isfinite(h)), default=0.0)
    if m == 0.0:
        return 1.0
    k = math.ceil(math.log2(m / fmt.max))          # a first guess, corrected exactly below
    while fmt.max * 2.0 ** k < m:
        k += 1
    while fmt.max * 2.0 ** (k - 1) >= m:
        k -= 1
    return 2.0 ** min(FP8_SCALE_EXP, max(-FP8_SCALE_EXP, k))


def fp8_pushed_history(row) -> np.ndarray:
    """The amax history of a state row [scale, amax slots, history] once a step's odl_fp8_scale has pushed the
    recorded amax (the largest slot, NaN above all) into it: the entries its scale comes from."""
    row = np.asarray(row, np.float32)
    slots = np.abs(row[1:FP8_STATE_HEAD])
    last = np.nan if np.isnan(slots).any() else slots.max()
    return np.concatenate([[last], row[FP8_STATE_HEAD:-1]]).astype(np.float32)


def fp8_cast(x: torch.Tensor, scale: float, fmt: Fp8Format) -> torch.Tensor:
    """What storing `x` in `fmt` with `scale` and reading it back gives, in x's dtype: the FP32 value x / scale
    clamped to +-max, cast with torch's float8 dtype (round to nearest even), times the scale, rounded once to x's
    dtype. The device's pack and unpack give bitwise the same (tests/kernels/test_kernels_native_fp8.py)."""
    q = (x.float() / scale).clamp(-fmt.max, fmt.max).to(fmt.torch_dtype)
    return (q.float() * scale).to(x.dtype)
