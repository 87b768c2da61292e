"""An Int8Program run on the host with the host build of kernels_c (odl.run.native): the same kernels and arguments
as the generated C, for tests and for looking at any tensor (`run` returns them all)."""
from __future__ import annotations

import numpy as np

from odl.deploy.int8.program import Int8Program, Ref


def run(P: Int8Program, x: np.ndarray, arena_bytes: int, cores: int = 8) -> dict[str, np.ndarray]:
    """One normalised sample x -> every tensor the program wrote, by name (int8 codes; 'logits': FP32)."""
    from odl.ir.kernel_structs import ctypes_struct
    from odl.run import native
    lib = native.Kernels("fp32")
    arena = np.zeros(max(arena_bytes, 4), np.uint8)
    consts = {k: np.ascontiguousarray(v) for k, v in P.consts.items()}
    logits = np.zeros(int(np.prod(P.tensors[P.output].shape)), np.float32)
    inp = P.tensors[P.input]
    arena[inp.offset:inp.offset + inp.nbytes] = np.ascontiguousarray(x, np.float32).ravel().view(np.uint8)

    def ptr(v: Ref) -> int:
        if v.kind == "c":
            return consts[v.name].ctypes.data
        if v.kind == "logits":
            return logits.ctypes.data
        return arena.ctypes.data + P.tensors[v.name].offset

    out = {}
    for c in P.calls:
        fields = {k: ptr(v) if isinstance(v, Ref) else v for k, v in c.args.items()}
        lib.run(c.kernel[len("odl_"):], ctypes_struct(c.kernel + "_args_t")(**fields), cores)
        if c.writes:
            t = P.tensors[c.writes]
            out[t.name] = arena[t.offset:t.offset + t.nbytes].view(np.int8).reshape(t.shape).copy()
    out["logits"] = logits
    return out
