"""Tensor comparison metrics and tolerances (docs/validation.md: what "correct" means)."""
from __future__ import annotations

import numpy as np

TOLERANCE = {
    "fp32": {"rel_l2": 1e-4, "cosine": None},
    "fp16": {"rel_l2": 3e-2, "cosine": 0.999},
}


def metrics(dev: np.ndarray, ref: np.ndarray) -> dict:
    with np.errstate(all="ignore"):
        return _metrics(dev, ref)


def _metrics(dev: np.ndarray, ref: np.ndarray) -> dict:
    d = np.asarray(dev, dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    if d.shape != r.shape:
        raise ValueError(f"shape mismatch {d.shape} vs {r.shape}")
    diff = np.linalg.norm(d - r)
    rn, dn = np.linalg.norm(r), np.linalg.norm(d)
    rel = float(diff / rn) if rn > 0 else float(diff)
    cos = float(np.dot(d, r) / (dn * rn)) if dn > 0 and rn > 0 else (1.0 if dn == rn else 0.0)
    finite = bool(np.all(np.isfinite(d)))
    return {"rel_l2": rel if finite else float("inf"), "max_abs": float(np.max(np.abs(d - r))) if d.size else 0.0,
            "cosine": cos if finite else 0.0}


def within(m: dict, precision: str) -> bool:
    tol = TOLERANCE[precision]
    if not m["rel_l2"] <= tol["rel_l2"]:
        return False
    return tol["cosine"] is None or m["cosine"] >= tol["cosine"]


FLOOR = 0.1   # a reference below 10% of the typical norm of its kind is "at the noise floor"
TORCH_FACTOR = 2.0  # a tensor no further from FP64 than this many times PyTorch's own error at the precision passes


def passes(rel_l2: float, cosine: float | None, torch_rel_l2: float | None, precision: str) -> tuple[bool, str]:
    """The rule (docs/validation.md): within the fixed tolerance of the precision (FP32 rel-L2 1e-4; FP16 3e-2 and
    cosine 0.999; cosine None = not checked), or no further from the FP64 reference than TORCH_FACTOR x PyTorch's own
    error at the run's precision (ill-conditioned problems: batch-1 batch norm on tiny maps, Adam's first step on
    near-zero gradients). A non-finite PyTorch error never excuses anything. Returns (passed, rule that passed)."""
    tol = TOLERANCE[precision]
    if rel_l2 <= tol["rel_l2"] and (cosine is None or tol["cosine"] is None or cosine >= tol["cosine"]):
        return True, "tolerance"
    if torch_rel_l2 is not None and np.isfinite(torch_rel_l2) and rel_l2 <= TORCH_FACTOR * torch_rel_l2:
        return True, "torch"
    return False, "-"


def at_floor(items) -> set[tuple[str, str]]:
    """(name, kind) of the items whose reference is at the noise floor of their kind (see judge)."""
    typical = _typical_rms(items)
    out = set()
    for name, kind, _, ref, _ in items:
        r = np.asarray(ref, np.float64)
        if np.linalg.norm(r) < FLOOR * typical[kind] * np.sqrt(max(r.size, 1)):
            out.add((name, kind))
    return out


def _typical_rms(items) -> dict:
    rms = {}
    for _, kind, _, ref, _ in items:
        r = np.asarray(ref, np.float64)
        rms.setdefault(kind, []).append(float(np.sqrt(np.mean(r * r))) if r.size else 0.0)
    return {k: float(np.median(v)) for k, v in rms.items()}


def judge(items, precision: str) -> list[dict]:
    """Rows for (name, kind, device, fp64 reference, pytorch-at-precision or None) items.

    rel_l2 is the device's distance from the FP64 reference, torch_rel_l2 PyTorch's own at the run's precision;
    see passes() for the rule. Some tensors are mathematically ~0 (e.g. the bias gradient of a convolution
    followed by training-mode batch norm: the normalisation removes it). Their reference is rounding noise, so a
    relative error means nothing. A tensor whose reference RMS is below FLOOR x the median RMS of the tensors of
    its kind is measured against that floor instead (`floor`: true), and its cosine is not checked."""
    typical = _typical_rms(items)
    rows = []
    tol = TOLERANCE[precision]
    for name, kind, dev, ref, rt in items:
        r = np.asarray(ref, np.float64)
        m = metrics(dev, ref)
        floor_norm = FLOOR * typical[kind] * np.sqrt(max(r.size, 1))
        floor = bool(np.linalg.norm(r) < floor_norm)
        trel = None
        if rt is not None:
            with np.errstate(all="ignore"):
                tv = np.asarray(rt, np.float64)
                trel = (float(np.linalg.norm(tv - r) / floor_norm) if floor else metrics(rt, ref)["rel_l2"])
            if not np.isfinite(trel):
                trel = float("inf")
        if floor:
            m["rel_l2"] = float(np.linalg.norm(np.asarray(dev, np.float64) - r) / floor_norm)
        ok, rule = passes(m["rel_l2"], None if floor else m["cosine"], trel, precision)
        row = {"name": name, "kind": kind, "shape": list(np.shape(ref)), **m, "tol": tol, "passed": bool(ok),
               "rule": rule}
        if floor:
            row["floor"] = True
        if trel is not None:
            row["torch_rel_l2"] = trel
        rows.append(row)
    return rows
