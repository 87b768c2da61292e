"""The int8 inference program: quantized tensors (codes as int8, torch's quint8 code - 128), the constants (weight
codes, int32 biases, FP32 multipliers) and the kernel calls of kernels_c/int8.c in order."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tensor:
    name: str
    shape: tuple              # without the batch dimension
    scale: float = 1.0        # FP32 value
    zp: int = 0               # the int8 zero point (torch's quint8 zero point - 128)
    dtype: str = "i8"         # i8 | f32
    alias: str | None = None  # a view of another tensor's bytes (flatten)
    offset: int = -1          # in the arena (plan.py)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * (4 if self.dtype == "f32" else 1)


@dataclass
class Call:
    kernel: str               # odl_i8_gemm, ...
    node: str                 # the graph node it computes (messages, comments)
    args: dict                # struct field -> int | float | Ref
    reads: list
    writes: str


@dataclass(frozen=True)
class Ref:
    kind: str                 # "t": a tensor in the arena, "c": a constant, "logits": odl_predict's argument
    name: str
    off: int = 0              # bytes past the tensor's start (a block of a conv's output rows)


@dataclass
class Int8Program:
    model: str
    tensors: dict = field(default_factory=dict)
    consts: dict = field(default_factory=dict)          # name -> np.ndarray (int8, int32, float32)
    calls: list = field(default_factory=list)
    input: str = ""                                     # the FP32 input tensor (normalised sample)
    output: str = ""                                    # the logits' codes
    normalize: dict | None = None
    notes: list = field(default_factory=list)           # what differs from the fake-quant model by design

    def tensor(self, name: str, shape, scale=1.0, zp=0, dtype="i8", alias=None) -> Tensor:
        t = Tensor(name, tuple(int(s) for s in shape), float(np.float32(scale)), int(zp), dtype, alias)
        self.tensors[name] = t
        return t

    def const(self, name: str, arr: np.ndarray) -> Ref:
        self.consts[name] = np.ascontiguousarray(arr)
        return Ref("c", name)

    def call(self, kernel: str, node: str, writes: str, reads: list, **args) -> None:
        self.calls.append(Call(kernel, node, args, list(reads), writes))

    def weight_bytes(self) -> int:
        return sum(a.nbytes for a in self.consts.values())

    def root(self, name: str) -> str:
        while self.tensors[name].alias:
            name = self.tensors[name].alias
        return name
