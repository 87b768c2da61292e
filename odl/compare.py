"""Tensor comparison metrics and tolerances (DESIGN.md: what "correct" means)."""
from __future__ import annotations

import numpy as np

TOLERANCE = {
    "fp32": {"rel_l2": 1e-4, "cosine": None},
    "fp16": {"rel_l2": 3e-2, "cosine": 0.999},
}


def metrics(dev: np.ndarray, ref: np.ndarray) -> dict:
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
