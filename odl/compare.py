"""Tensor comparison metrics and tolerances (DESIGN.md: what "correct" means)."""
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


def judge(items, precision: str) -> list[dict]:
    """Rows for (name, kind, device, reference, torch_fp16_or_None) items.

    Some tensors are mathematically ~0 (e.g. the bias gradient of a convolution followed by training-mode batch
    norm: the normalisation removes it). Their reference is rounding noise, so a relative error means nothing.
    A tensor whose reference RMS is below FLOOR x the median RMS of the tensors of its kind is measured against
    that floor instead (`floor`: true), and its cosine is not checked."""
    rms = {}
    for _, kind, _, ref, _ in items:
        r = np.asarray(ref, np.float64)
        rms.setdefault(kind, []).append(float(np.sqrt(np.mean(r * r))) if r.size else 0.0)
    typical = {k: float(np.median(v)) for k, v in rms.items()}
    rows = []
    tol = TOLERANCE[precision]
    for name, kind, dev, ref, r16 in items:
        r = np.asarray(ref, np.float64)
        m = metrics(dev, ref)
        floor_norm = FLOOR * typical[kind] * np.sqrt(max(r.size, 1))
        floor = bool(np.linalg.norm(r) < floor_norm)
        if floor:
            m["rel_l2"] = float(np.linalg.norm(np.asarray(dev, np.float64) - r) / floor_norm)
            ok = m["rel_l2"] <= tol["rel_l2"]
        else:
            ok = within(m, precision)
        row = {"name": name, "kind": kind, "shape": list(np.shape(ref)), **m, "tol": tol, "passed": bool(ok)}
        if floor:
            row["floor"] = True
        if r16 is not None:
            row["torch_fp16_rel_l2"] = (float(np.linalg.norm(np.asarray(r16, np.float64) - r) / floor_norm)
                                        if floor else metrics(r16, ref)["rel_l2"])
        rows.append(row)
    return rows
