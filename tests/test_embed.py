"""The embedded library (odl.h) from a plain C app on QEMU, checked against PyTorch; the flash store's power-cut
campaign; the personalisation app with no host; `odl params` between the device's flash and checkpoints.

The app (tests/embed/api_app.c) knows only odl.h. Its batch comes from an LCG that _batch() repeats here; the
initial state comes from an --init checkpoint that records an input normalisation, so the device's normalisation
is checked too."""
import copy
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import MODELS, ROOT, needs_qemu, rel_l2
from odl.cli.main import main
from odl.embed import blob as blobmod
from odl.embed.library import EmbedOptions, build_library, state_dict_from_blob
from odl.ir.program import TrainConfig

MODEL = f"{MODELS / 'digits_cnn.py'}:TinyDigits"
BATCH, LR, MOMENTUM = 4, 0.01, 0.9
NORM = {"mean": [5.0], "std": [4.0]}
TOL = {"fp32": 1e-4, "fp16": 3e-2, "mixed": 3e-2}


def _init_ckpt(path: Path) -> None:
    from odl.frontend import load_model
    torch.manual_seed(3)
    m = load_model(MODEL)
    with torch.no_grad():     # running statistics away from 0/1, so that inference-mode BN is really exercised
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    torch.save({"model": m.state_dict(), "odl": {"normalize": NORM}}, path)


def _batch(classes: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The app's LCG: raw pixels 0..16, then labels."""
    s = 12345
    out = []
    for _ in range(BATCH * size + BATCH):
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        out.append(s >> 8)
    x = np.array([v % 17 for v in out[:BATCH * size]], np.float32).reshape(BATCH, 1, 8, 8)
    y = np.array([v % classes for v in out[BATCH * size:]], np.int64)
    return x, y


def _make(proj: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(proj), *args], capture_output=True, text=True, timeout=timeout)


def _compile(tmp: Path, precision: str, *extra) -> Path:
    ck = tmp / "init.pt"
    if not ck.exists():
        _init_ckpt(ck)
    proj = tmp / f"proj-{precision}"
    rc = main(["compile", MODEL, "--precision", precision, "--batch", str(BATCH), "--lr", str(LR), "--momentum",
               str(MOMENTUM), "--init", str(ck), "-o", str(proj), "--force", *extra])
    assert rc == 0
    return proj


def _library(tmp: Path, precision: str):
    return build_library(MODEL, EmbedOptions(batch=BATCH, precision=precision, cfg=TrainConfig(lr=LR, momentum=MOMENTUM),
                                             init=str(tmp / "init.pt")), log=lambda *a: None)


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", pytest.param("fp16", marks=pytest.mark.slow),
                                       pytest.param("mixed", marks=pytest.mark.slow)])
def test_api_app_matches_pytorch(tmp_path, precision):
    proj = _compile(tmp_path, precision)
    app = ROOT / "tests" / "embed" / "api_app.c"
    b = _make(proj, f"APP={app}")
    assert b.returncode == 0, b.stderr[-3000:]
    r = _make(proj, "run", f"APP={app}", f"FLASH={tmp_path / 'flash.img'}", timeout=300)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    assert "done fails 0" in out
    assert not [ln for ln in out.splitlines() if ln.startswith("check") and not ln.endswith("ok")]
    assert (tmp_path / "flash.img").stat().st_size == blobmod.FLASH_BYTES      # created erased by make run
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out.splitlines() if " " in ln}
    lib = _library(tmp_path, precision)
    assert int(lines["size"].split()[0]) == lib.blob_bytes
    blob0, blob1 = bytes.fromhex(lines["blob0"]), bytes.fromhex(lines["blob1"])

    model = copy.deepcopy(lib.model)
    x, y = _batch(lib.classes, 64)
    xn = (x - np.float32(5.0)) / np.float32(4.0)
    # predict: one raw sample, normalised on the device, batch norm on running statistics
    model.eval()
    with torch.no_grad():
        ref_logits = model(torch.from_numpy(xn[:1]))[0].numpy()
    dev_logits = np.array([float(v) for v in lines["logits"].split()])
    assert rel_l2(dev_logits, ref_logits) <= (1e-5 if precision == "fp32" else 3e-2)
    # blob0 is the --init state; blob1 the state after one step, against torch.optim.SGD on the same batch
    sd0, head0 = state_dict_from_blob(lib, blob0)
    assert head0["step"] == 0
    for k, v in lib.model.state_dict().items():
        if v.is_floating_point():
            assert rel_l2(sd0[k], v) <= (0 if precision == "fp32" else 1e-3), k
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss = F.cross_entropy(model(torch.from_numpy(xn)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    loss = float(loss.detach())
    dev_loss = float(lines["step1"].split()[1])
    assert abs(dev_loss - loss) <= TOL[precision] * abs(loss)
    sd1, head1 = state_dict_from_blob(lib, blob1)
    assert head1["step"] == 1
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert rel_l2(sd1[k], v.detach()) <= TOL[precision], k
    # the batch is learned: 30 more steps at twice the learning rate
    before = re.search(r"before acc ([\d.]+) loss ([\d.]+)", out)
    after = re.search(r"after acc ([\d.]+) loss ([\d.]+) skipped (\d+) scale ([\d.]+) steps (\d+)", out)
    assert float(after.group(1)) == 1.0 and float(after.group(2)) < 0.5 * float(before.group(2))
    assert int(after.group(5)) == 31
    if precision == "mixed":     # dynamic loss scaling on the device: starts at 2^16, halves on every overflow
        assert float(after.group(4)) == 65536.0 / 2 ** int(after.group(3))


def _powercut(proj: Path, points: int) -> str:
    b = _make(proj, "powercut", f"POWERCUT_POINTS={points}", timeout=3600)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    return b.stdout


@needs_qemu
def test_powercut_short(tmp_path):
    """A few cut points (after and torn, the slot header's last words included): every boot recovers old or new."""
    out = _powercut(_compile(tmp_path, "fp32"), 4)
    m = re.search(r"(\d+) cut points, (\d+) recovered \(old (\d+), new (\d+)\), (\d+) lost", out)
    assert m, out
    n, rec, old, new, lost = map(int, m.groups())
    assert n >= 10 and rec == n and lost == 0 and old > 0 and new > 0


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "mixed"])
def test_powercut_campaign(tmp_path, precision):
    out = _powercut(_compile(tmp_path, precision), 60)
    m = re.search(r"(\d+) cut points, (\d+) recovered \(old (\d+), new (\d+)\), (\d+) lost", out)
    assert m, out
    n, rec, old, new, lost = map(int, m.groups())
    assert n >= 50 and rec == n and lost == 0 and new > 0
