"""An Int8Program run on the host with the host build of kernels_c (odl.run.native): the same kernels and arguments
as the generated C, for tests and for looking at any tensor. `run` runs the whole program on one sample and returns
every tensor; `run_node` runs one graph node's calls on given input codes (a layer in isolation)."""
from __future__ import annotations

import numpy as np

from odl.deploy.int8.program import Int8Program, Ref


class _Arena:
    def __init__(self, P: Int8Program, arena_bytes: int):
        from odl.run import native
        self.P, self.lib = P, native.Kernels("fp32")
        self.mem = np.zeros(max(arena_bytes, 4), np.uint8)
        self.consts = {k: np.ascontiguousarray(v) for k, v in P.consts.items()}
        self.logits = np.zeros(int(np.prod(P.tensors[P.output].shape)), np.float32)

    def put(self, name: str, a: np.ndarray) -> None:
        t = self.P.tensors[name]
        raw = np.ascontiguousarray(a, np.float32 if t.dtype == "f32" else np.int8).ravel().view(np.uint8)
        self.mem[t.offset:t.offset + t.nbytes] = raw

    def get(self, name: str) -> np.ndarray:
        t = self.P.tensors[name]
        return self.mem[t.offset:t.offset + t.nbytes].view(np.int8).reshape(t.shape).copy()

    def ptr(self, v: Ref) -> int:
        if v.kind == "c":
            return self.consts[v.name].ctypes.data
        if v.kind == "logits":
            return self.logits.ctypes.data
        return self.mem.ctypes.data + self.P.tensors[v.name].offset + v.off

    def call(self, c, cores: int) -> None:
        from odl.ir.kernel_structs import ctypes_struct
        fields = {k: self.ptr(v) if isinstance(v, Ref) else v for k, v in c.args.items()}
        self.lib.run(c.kernel[len("odl_"):], ctypes_struct(c.kernel + "_args_t")(**fields), cores)


def run(P: Int8Program, x: np.ndarray, arena_bytes: int, cores: int = 8) -> dict[str, np.ndarray]:
    """One normalised sample x -> every tensor the program wrote, by name (int8 codes; 'logits': FP32)."""
    A = _Arena(P, arena_bytes)
    A.put(P.input, x)
    out = {}
    for c in P.calls:
        A.call(c, cores)
        if c.writes:
            out[c.writes] = A.get(c.writes)
    out["logits"] = A.logits.copy()
    return out


def run_node(P: Int8Program, node: str, inputs: dict[str, np.ndarray], arena_bytes: int,
             cores: int = 8) -> np.ndarray:
    """The codes a graph node's calls write, from the given codes of the tensors they read."""
    A = _Arena(P, arena_bytes)
    calls = [c for c in P.calls if c.node == node]
    for name, a in inputs.items():
        A.put(name, a)
    for c in calls:
        A.call(c, cores)
    return A.get(calls[-1].writes)
