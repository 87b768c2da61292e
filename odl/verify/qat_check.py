"""`odl validate --qat int8`: the device's quantization decisions. At every activation point the host (1) checks the
device's fake quantization exactly: torch's own fake quantization of the device's input with the device's scale and
zero point must give the device's output and straight-through mask (bit for bit in FP32; the same value rounded to
FP16 in FP16), and (2) counts the codes that differ from the FP64 reference's: a value within rounding of a code
boundary may land on either side (as a ReLU decision may), which moves the value by a whole quantum and says
nothing about the arithmetic. The references then take the device's codes and masks (docs/quantization.md); the
flips are reported, and any mismatch of (1) fails the run."""
from __future__ import annotations

import numpy as np
import torch

from odl.lower.ops.fakequant import ACT, state_name


def _fq(x: np.ndarray, scale: float, zp: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's fake quantization (per tensor, quint8) and its mask, in the dtype of x."""
    y, m = torch.ops.aten.fake_quantize_per_tensor_affine_cachemask(torch.from_numpy(x), scale, zp, ACT["qmin"],
                                                                    ACT["qmax"])
    return y.numpy(), m.numpy()


def _codes(y: np.ndarray, scale: float, zp: float) -> np.ndarray:
    return np.rint(y.astype(np.float64) / scale) + zp


def _device_point(prep, prog, arena, node, precision, read_tensor):
    """(device input, output, mask, scale, zero point) of one fake-quant node, or None when its input or output
    did not survive the step in the arena (an in-place op wrote over it)."""
    byval = {v: b for b, v in prog.activations.values()}
    v = node.inputs[0]
    shape = node.shape
    yb = byval.get(node.name)
    if v == prog.graph.input:
        x = prep.batches[0][0].numpy().astype(np.float32)
    elif v in byval:
        x = read_tensor(arena, byval[v], shape, precision)
    else:
        return None
    mb = next((b for b in prog.buffers if b.name == node.name + "_mask" and b.persistent), None)
    if yb is None or mb is None:
        return None
    y = read_tensor(arena, yb, shape, precision)
    mask = np.frombuffer(arena, np.uint8, mb.nelem, mb.offset).astype(bool).reshape(shape)
    pt = node.attrs["point"]
    s = float(np.frombuffer(arena, np.float32, 1, prog.state[state_name(pt, "scale")].offset)[0])
    z = float(np.frombuffer(arena, np.float32, 1, prog.state[state_name(pt, "zero_point")].offset)[0])
    return x, y, mask, s, z


def qat_decisions(prep, prog, arena: bytes, ref, precision: str, read_tensor) -> tuple[dict, dict]:
    """(value -> (device codes, device mask) for the references to take, the report: points checked, codes,
    flipped by point, the largest code difference, exact-check mismatches by point, points not observable)."""
    align, flips, mism, unobs, ncodes, maxdiff = {}, {}, {}, [], 0, 0
    for node in prog.graph.nodes:
        if node.op != "fakequant":
            continue
        v, pt = node.inputs[0], node.attrs["point"]
        got = _device_point(prep, prog, arena, node, precision, read_tensor)
        if got is None:
            unobs.append(pt)
            continue
        x, y, mask, s, z = got
        yc, mc = _fq(x, s, int(z))
        if precision != "fp32":
            yc = yc.astype(np.float16).astype(np.float32)
        bad = int(((yc != y) | (mc != mask)).sum())
        if bad:
            mism[pt] = bad
        qd = _codes(y, s, z)
        sr = float(ref.buffers[state_name(pt, "scale")])
        zr = float(ref.buffers[state_name(pt, "zero_point")])
        yr, mr = _fq(ref.values[v].numpy(), sr, int(zr))
        qr = _codes(yr, sr, zr)
        diff = (qd != qr) | (mask != mr)
        ncodes += diff.size
        if int(diff.sum()):
            flips[pt] = int(diff.sum())
            maxdiff = max(maxdiff, int(np.abs(qd - qr).max()))
        align[v] = (qd.astype(np.float32), mask)
    rep = {"points": len(align), "codes": ncodes, "flipped": sum(flips.values()), "by_point": flips,
           "max_code_diff": maxdiff, "mismatches": mism, "unobservable": unobs}
    return (align if flips else {}), rep
