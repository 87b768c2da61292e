"""Number formats, in one place: what a precision name means on the device and on the host, and the byte size of
every buffer element type. Every stage asks this module instead of testing the precision string itself.

A precision is how the training step computes:
- `fp32`: every kernel in FP32 (1 lane per 32-bit word).
- `fp16`: every kernel in FP16, 2 lanes per 32-bit word (the target's packed-FP16 SIMD, `-DODL_FP16=1`).
- `mixed`: `odl train` only. The step computes in FP16 as `fp16` does, while the device keeps FP32 master weights
  (and optimizer state) that the update writes, and scales the loss dynamically (overflowing steps are skipped).
"""
from __future__ import annotations

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
DTYPE_BYTES = {"f32": 4, "i32": 4, "u8": 1}
DTYPE_NP = {"f32": np.float32, "i32": np.int32, "u8": np.uint8}


def dtype_bytes(dtype: str, precision: "str | Precision") -> int:
    """Bytes of one element of a buffer of `dtype` in a step of `precision`."""
    return precision_of(precision).elem_bytes if dtype == "odl" else DTYPE_BYTES[dtype]


def dtype_np(dtype: str, precision: "str | Precision") -> type:
    return precision_of(precision).np_dtype if dtype == "odl" else DTYPE_NP[dtype]
