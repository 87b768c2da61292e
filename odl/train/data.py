"""Training data for `odl train`: where samples come from, how they are split, normalised and checked.

Sources (`--data`):
- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, pixel values 0..16; the data
  ships inside the scikit-learn wheel, nothing is downloaded), as N x 1 x 8 x 8 float images.
- `PATH.npz`: arrays `x` (N,C,H,W or N,F float) and `y` (N integer labels for xent, or float targets shaped like
  the model's output for mse), optionally `x_val` / `y_val`.
- `file.py:fn`: fn() returns a torch Dataset of (x, y) pairs, or a tuple (x, y) or (x, y, x_val, y_val) of tensors.
Without a given validation set, `--val-split F` holds out a seeded random fraction (default 0.2: digits gives
1,437 training and 360 validation samples).

Normalisation (what users expect of image data): per channel (dim 1 of N,C,H,W data; one scalar for N,F data)
x' = (x - mean) / std with mean and std of the *training split* (std 0 is taken as 1); the checkpoint records them
as `odl.normalize` so inference on the host applies the same. Targets of mse are used as given.
Shuffling: epoch e's order is numpy's permutation seeded by (seed, e), so a resumed run sees the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odl.common.errors import OdlError
from odl.common.userfile import import_file


@dataclass
class Dataset:
    name: str
    x: np.ndarray          # training inputs, float32, normalised
    y: np.ndarray          # int64 labels (xent) or float32 targets (mse)
    x_val: np.ndarray
    y_val: np.ndarray
    normalize: dict | None  # {'mean': [...], 'std': [...]} per channel (or one value), as applied

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.x.shape[1:])


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise OdlError("--data digits needs scikit-learn (pip install scikit-learn)") from None
    d = load_digits()
    return d.images.astype(np.float32)[:, None, :, :], d.target.astype(np.int64), None, None


def _load_npz(path: str):
    p = Path(path)
    if not p.is_file():
        raise OdlError(f"data file '{path}' does not exist")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:
        raise OdlError(f"data file '{path}' is not a readable .npz: {type(e).__name__}: {e}") from None
    for k in ("x", "y"):
        if k not in z.files:
            raise OdlError(f"data file '{path}' has no array '{k}' (it has: {', '.join(z.files) or 'none'})")
    if ("x_val" in z.files) != ("y_val" in z.files):
        raise OdlError(f"data file '{path}': x_val and y_val must be given together")
    val = (z["x_val"], z["y_val"]) if "x_val" in z.files else (None, None)
    return z["x"], z["y"], val[0], val[1]


def _load_fn(spec: str):
    path, name = spec.rsplit(":", 1)
    mod = import_file(path, "data")
    try:
        fn = getattr(mod, name)
        out = fn()
    except AttributeError:
        raise OdlError(f"data file '{path}' has no '{name}'") from None
    except Exception as e:
        raise OdlError(f"data function '{spec}' failed: {type(e).__name__}: {e}") from None

    def arr(t, what):
        a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        if a.dtype == object:
            raise OdlError(f"data function '{spec}': {what} is not a numeric array")
        return a
    if isinstance(out, (tuple, list)) and len(out) in (2, 4):
        arrs = [arr(t, w) for t, w in zip(out, ("x", "y", "x_val", "y_val"))]
        return (*arrs, None, None) if len(arrs) == 2 else tuple(arrs)
    if hasattr(out, "__getitem__") and hasattr(out, "__len__"):   # a torch Dataset of (x, y)
        xs, ys = [], []
        for i in range(len(out)):
            item = out[i]
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise OdlError(f"data function '{spec}': dataset item {i} is not an (x, y) pair")
            xs.append(arr(item[0], "x"))
            ys.append(arr(item[1], "y"))
        if not xs:
            raise OdlError(f"data function '{spec}' returned an empty dataset")
        return np.stack(xs), np.stack(ys), None, None
    raise OdlError(f"data function '{spec}' must return a torch Dataset or (x, y) tensors, "
                   f"not {type(out).__name__}")


def load(spec: str, loss: str, val_split: float = 0.2, seed: int = 0, normalize: bool = True) -> Dataset:
    """Load, split, check finiteness, normalise (normalize=False: the data is used as given, e.g. already
    normalised by `odl fleet` with the statistics of the whole training set; Dataset.normalize is then None)."""
    if spec == "digits":
        x, y, xv, yv = _load_digits()
    elif spec.endswith(".npz"):
        x, y, xv, yv = _load_npz(spec)
    elif ":" in spec:
        x, y, xv, yv = _load_fn(spec)
    else:
        raise OdlError(f"--data '{spec}': expected digits, PATH.npz or file.py:fn")
    name = spec

    def check(a, what):
        if not np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_:
            raise OdlError(f"data '{name}': array {what} has dtype {a.dtype}, not numbers")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise OdlError(f"data '{name}': array {what} has NaN/Inf (first at index {tuple(int(i) for i in bad)})")

    check(x, "x")
    check(y, "y")
    if x.ndim not in (2, 4):
        raise OdlError(f"data '{name}': x has shape {list(x.shape)}; expected N,C,H,W or N,F")
    if len(y) != len(x):
        raise OdlError(f"data '{name}': x has {len(x)} samples but y has {len(y)}")
    if xv is None:
        if not 0.0 < val_split < 1.0:
            raise OdlError(f"--val-split {val_split}: must be in (0, 1) when the data has no x_val/y_val")
        perm = np.random.default_rng(seed).permutation(len(x))
        nval = max(1, int(np.ceil(len(x) * val_split)))
        if nval >= len(x):
            raise OdlError(f"data '{name}': {len(x)} samples leave nothing to train on with --val-split {val_split}")
        vi, ti = np.sort(perm[:nval]), np.sort(perm[nval:])
        x, y, xv, yv = x[ti], y[ti], x[vi], y[vi]
    else:
        check(xv, "x_val")
        check(yv, "y_val")
        if xv.shape[1:] != x.shape[1:]:
            raise OdlError(f"data '{name}': x_val has shape {list(xv.shape)}, x has {list(x.shape)}")
        if len(yv) != len(xv):
            raise OdlError(f"data '{name}': x_val has {len(xv)} samples but y_val has {len(yv)}")
    x = x.astype(np.float32)
    xv = xv.astype(np.float32)
    if not normalize:
        return _finish(name, x, y, xv, yv, None, loss)
    axes = (0, 2, 3) if x.ndim == 4 else (0, 1)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    bshape = (1, -1, 1, 1) if x.ndim == 4 else (1, 1)
    m32, s32 = mean.astype(np.float32).reshape(bshape), std.astype(np.float32).reshape(bshape)
    x = (x - m32) / s32
    xv = (xv - m32) / s32
    norm = {"mean": [float(v) for v in np.atleast_1d(mean)], "std": [float(v) for v in np.atleast_1d(std)]}
    return _finish(name, x, y, xv, yv, norm, loss)


def _finish(name, x, y, xv, yv, norm, loss) -> Dataset:
    if loss == "xent":
        for a, what in ((y, "y"), (yv, "y_val")):
            if not (np.issubdtype(a.dtype, np.integer) or (np.issubdtype(a.dtype, np.floating)
                                                            and np.all(a == np.round(a)))):
                raise OdlError(f"data '{name}': {what} must hold integer class labels for --loss xent")
            if a.ndim != 1:
                raise OdlError(f"data '{name}': {what} has shape {list(a.shape)}; labels must be one per sample")
        y, yv = y.astype(np.int64), yv.astype(np.int64)
    else:
        y, yv = y.astype(np.float32), yv.astype(np.float32)
    return Dataset(name, np.ascontiguousarray(x), y, np.ascontiguousarray(xv), yv, norm)


def check_fits(ds: Dataset, in_shape: tuple, out_shape: tuple, loss: str) -> None:
    """Refuse data the model cannot take: sample shape, label range, target shape (exit 2, before the device)."""
    if ds.sample_shape != tuple(in_shape[1:]):
        raise OdlError(f"data '{ds.name}': samples are {list(ds.sample_shape)} but the model takes "
                       f"{list(in_shape[1:])} (its input is N x {' x '.join(map(str, in_shape[1:]))})")
    if loss == "xent":
        classes = int(out_shape[-1])
        for a, what in ((ds.y, "y"), (ds.y_val, "y_val")):
            bad = np.flatnonzero((a < 0) | (a >= classes))
            if bad.size:
                raise OdlError(f"data '{ds.name}': label {int(a[bad[0]])} in {what} (sample {int(bad[0])}) is out "
                               f"of range for the model's {classes} outputs")
    else:
        want = tuple(out_shape[1:])
        for a, what in ((ds.y, "y"), (ds.y_val, "y_val")):
            if tuple(a.shape[1:]) != want:
                raise OdlError(f"data '{ds.name}': {what} targets are {list(a.shape[1:])} per sample but the model "
                               f"outputs {list(want)}")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch `epoch` (0-based): a permutation seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)
