"""The embedded library (odl.h) from a plain C app on QEMU, checked against PyTorch; the flash store's power-cut
campaign; the personalisation app with no host; `odl params` between the device's flash and checkpoints.

The app (tests/device/embed/api_app.c) knows only odl.h. Its batch comes from an LCG that _batch() repeats here; the
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

from helpers import MODELS, ROOT, needs_qemu, rel_l2
from odl.cli.main import main
from odl.embed import blob as blobmod
from odl.embed.library import EmbedOptions, build_library, state_dict_from_blob
from odl.ir.program import TrainConfig

MODEL = f"{MODELS / 'digits_cnn.py'}:TinyDigits"
BATCH, LR, MOMENTUM = 4, 0.01, 0.9
NORM = {"mean": [5.0], "std": [4.0]}
TOL = {"fp32": 1e-4, "fp16": 3e-2, "mixed": 3e-2}


def _init_ckpt(path: Path) -> None:
    from odl.frontend.trace import load_model
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


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """One compiled project per precision, shared by the tests of this module (the build is most of their time)."""
    cache = {}

    def get(precision):
        if precision not in cache:
            cache[precision] = _compile(tmp_path_factory.mktemp(f"embed-{precision}"), precision)
        return cache[precision]
    return get


def _library(tmp: Path, precision: str):
    return build_library(MODEL, EmbedOptions(batch=BATCH, precision=precision, cfg=TrainConfig(lr=LR, momentum=MOMENTUM),
                                             init=str(tmp / "init.pt")), log=lambda *a: None)


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", pytest.param("fp16", marks=pytest.mark.slow),
                                       pytest.param("mixed", marks=pytest.mark.slow)])
def test_api_app_matches_pytorch(tmp_path, projects, precision):
    proj = projects(precision)
    app = ROOT / "tests" / "device" / "embed" / "api_app.c"
    b = _make(proj, f"APP={app}")
    assert b.returncode == 0, b.stderr[-3000:]
    r = _make(proj, "run", f"APP={app}", f"FLASH={tmp_path / 'flash.img'}", timeout=300)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    assert "done fails 0" in out
    assert not [ln for ln in out.splitlines() if ln.startswith("check") and not ln.endswith("ok")]
    assert (tmp_path / "flash.img").stat().st_size == blobmod.FLASH_BYTES      # created erased by make run
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out.splitlines() if " " in ln}
    lib = _library(proj.parent, precision)
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
    assert int(after.group(5)) == 31 and lines["seq"] == "1"
    if precision == "mixed":     # dynamic loss scaling on the device: starts at 2^16, halves on every overflow
        assert float(after.group(4)) == 65536.0 / 2 ** int(after.group(3))


def _powercut(proj: Path, points: int) -> str:
    b = _make(proj, "powercut", f"POWERCUT_POINTS={points}", timeout=3600)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    return b.stdout


@needs_qemu
def test_powercut_short(projects):
    """A few cut points (after and torn, the slot header's last words included): every boot recovers old or new."""
    out = _powercut(projects("fp32"), 4)
    m = re.search(r"(\d+) cut points, (\d+) recovered \(old (\d+), new (\d+)\), (\d+) lost", out)
    assert m, out
    n, rec, old, new, lost = map(int, m.groups())
    assert n >= 10 and rec == n and lost == 0 and old > 0 and new > 0


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "mixed"])
def test_powercut_campaign(projects, precision):
    out = _powercut(projects(precision), 60)
    m = re.search(r"(\d+) cut points, (\d+) recovered \(old (\d+), new (\d+)\), (\d+) lost", out)
    assert m, out
    n, rec, old, new, lost = map(int, m.groups())
    assert n >= 50 and rec == n and lost == 0 and new > 0


def _pretrained(tmp: Path) -> tuple[Path, Path, dict]:
    """A TinyDigits pretrained on the host on digits (normalised as odl train does, the statistics recorded in the
    checkpoint), and shifted data for the device: the same digits as negatives (16 - x), which the pretrained model
    gets mostly wrong."""
    from odl.train import data as datamod
    from odl.frontend.trace import load_model
    ds = datamod.load("digits", "xent", 0.2, 0)
    torch.manual_seed(0)
    m = load_model(MODEL)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
    for _ in range(4):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            F.cross_entropy(m(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    ck = tmp / "pretrained.pt"
    torch.save({"model": m.state_dict(), "odl": {"normalize": ds.normalize}}, ck)
    raw = datamod.load("digits", "xent", 0.2, 0, normalize=False)
    npz = tmp / "shifted.npz"
    np.savez(npz, x=16.0 - raw.x[:320], y=raw.y[:320], x_val=16.0 - raw.x_val[:120], y_val=raw.y_val[:120])
    return ck, npz, ds.normalize


def _host_acc(model, npz: Path, norm: dict) -> float:
    z = np.load(npz)
    xv = ((z["x_val"].astype(np.float32) - np.float32(norm["mean"][0])) / np.float32(norm["std"][0]))
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(xv)).argmax(1).numpy()
    return float((pred == z["y_val"]).mean())


def _phases(out: str) -> dict:
    return {d["phase"]: d for d in (json.loads(ln) for ln in out.splitlines() if ln.startswith("{"))}


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", pytest.param("mixed", marks=pytest.mark.slow)])
def test_personalize_restore_and_host_accuracy(tmp_path, precision):
    ck, npz, norm = _pretrained(tmp_path)
    proj = tmp_path / "pers"
    assert main(["compile", MODEL, "--precision", precision, "--init", str(ck), "--app", "personalize", "--data",
                 str(npz), "--epochs", "3", "--batch", "16", "--lr", "0.05", "--momentum", "0.9", "-o",
                 str(proj)]) == 0
    b = _make(proj)
    assert b.returncode == 0, b.stderr[-3000:]
    img = tmp_path / "flash.img"
    first = _make(proj, "run", f"FLASH={img}", timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    ph = _phases(first.stdout)
    assert set(ph) == {"before", "after", "saved"}, first.stdout
    assert ph["after"]["val_acc"] >= ph["before"]["val_acc"] + 0.3, ph       # a wide margin, no host
    assert ph["saved"]["step"] == 3 * (320 // 16)
    second = _make(proj, "run", f"FLASH={img}", timeout=600)
    ph2 = _phases(second.stdout)
    assert set(ph2) == {"restored"}, second.stdout
    assert ph2["restored"]["val_acc"] == ph["after"]["val_acc"] and ph2["restored"]["step"] == ph["saved"]["step"]
    # the flash image read on the host: a checkpoint that loads strictly and gives the device's accuracy
    out = tmp_path / "device.pt"
    assert main(["params", str(img), "--model", MODEL, "--precision", precision, "--init", str(ck), "--batch", "16",
                 "--lr", "0.05", "--momentum", "0.9", "--checkpoint", str(out)]) == 0
    from odl.frontend.trace import load_model
    m = load_model(MODEL)
    saved = torch.load(out, weights_only=True)
    m.load_state_dict(saved["model"], strict=True)
    assert saved["step"] == ph["saved"]["step"] and saved["odl"]["normalize"] == norm
    host = _host_acc(m, npz, norm)
    n_val = 120
    assert abs(host - ph["after"]["val_acc"]) <= (0.5 if precision == "fp32" else 2.5) / n_val, (host, ph["after"])
    # and back: the checkpoint as a flash image the device restores (fresh optimizer state, its weights)
    img2 = tmp_path / "from_host.img"
    assert main(["params", str(out), "--model", MODEL, "--precision", precision, "--init", str(ck), "--batch", "16",
                 "--lr", "0.05", "--momentum", "0.9", "--flash", str(img2)]) == 0
    third = _make(proj, "run", f"FLASH={img2}", timeout=600)
    ph3 = _phases(third.stdout)
    assert set(ph3) == {"restored"} and ph3["restored"]["step"] == 0, third.stdout
    assert abs(ph3["restored"]["val_acc"] - ph["after"]["val_acc"]) <= (0.5 if precision == "fp32" else 2.5) / n_val


def test_params_refuses_other_models_and_damage(tmp_path, capsys):
    """odl params: a blob of another build, a damaged blob, a file that is neither: exit 2 naming the problem."""
    lib = _library_plain(tmp_path)
    from odl.embed.library import blob_from_state_dict
    blob = bytearray(blob_from_state_dict(lib, lib.model.state_dict()))
    good = tmp_path / "s.bin"
    good.write_bytes(bytes(blob))
    args = ["--model", MODEL, "--batch", str(BATCH), "--lr", str(LR), "--momentum", str(MOMENTUM)]
    assert main(["params", str(good), *args, "--checkpoint", str(tmp_path / "ok.pt")]) == 0
    assert main(["params", str(good), "--model", MODEL, "--batch", str(BATCH), "--checkpoint",
                 str(tmp_path / "x.pt")]) == 2       # no momentum: another optimizer state layout
    assert "model hash" in capsys.readouterr().err
    blob[100] ^= 1
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(blob))
    assert main(["params", str(bad), *args, "--checkpoint", str(tmp_path / "y.pt")]) == 2
    assert "CRC32" in capsys.readouterr().err
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 100)
    assert main(["params", str(junk), *args, "--checkpoint", str(tmp_path / "z.pt")]) == 2
    assert "neither" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists() and not (tmp_path / "z.pt").exists()


def _library_plain(tmp: Path):
    return build_library(MODEL, EmbedOptions(batch=BATCH, cfg=TrainConfig(lr=LR, momentum=MOMENTUM)),
                         log=lambda *a: None)


def test_compile_library_optional_and_bad_app_flags(tmp_path, capsys):
    """A model the library cannot serve (mse targets) still compiles, without odl.h and saying why; asking for the
    library with it, or for the app without its data, is exit 2 with nothing written."""
    out = tmp_path / "ae"
    assert main(["compile", "ad_autoencoder", "-o", str(out)]) == 0
    assert "odl.h: not generated" in capsys.readouterr().out
    assert (out / "src" / "model.c").exists() and not (out / "src" / "odl.h").exists()
    assert main(["compile", "ad_autoencoder", "--batch", "4", "-o", str(tmp_path / "ae2")]) == 2
    assert "--loss xent only" in capsys.readouterr().err
    assert main(["compile", MODEL, "--app", "personalize", "-o", str(tmp_path / "p")]) == 2
    assert "--data FILE.npz" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((20, 1, 7, 7), np.float32), y=np.zeros(20, np.int64),
             x_val=np.zeros((4, 1, 7, 7), np.float32), y_val=np.zeros(4, np.int64))
    assert main(["compile", MODEL, "--app", "personalize", "--data", str(bad), "-o", str(tmp_path / "q")]) == 2
    assert "[1, 7, 7]" in capsys.readouterr().err
    assert not any(p.name in ("ae2", "p", "q") for p in tmp_path.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_flash_image_newest_valid_slot():
    """The host reads a flash image as odl_store_load does: the valid slot with the highest sequence number, the other
    one when the newest is damaged, an error when neither holds a state of this model."""
    import struct
    import zlib
    a = blobmod.pack_blob(b"A" * 64, 0x1234, 1)
    b = blobmod.pack_blob(b"B" * 64, 0x1234, 2)
    img = bytearray(blobmod.flash_image(a, seq=1))
    sb = blobmod.slot_bytes(len(b))
    head = struct.pack("<7I", blobmod.SLOT_MAGIC, 2, len(b), struct.unpack_from("<I", b, 28)[0], 0x1234, 0, 0)
    img[sb:sb + 32] = head + struct.pack("<I", zlib.crc32(head))
    img[sb + 32:sb + 32 + len(b)] = b
    assert blobmod.newest_slot_blob(bytes(img), len(b), 0x1234, "img") == (2, b)
    img[sb + 32 + 40] ^= 1                                   # the newest blob damaged: the older slot
    assert blobmod.newest_slot_blob(bytes(img), len(b), 0x1234, "img") == (1, a)
    with pytest.raises(Exception, match="no valid saved state"):
        blobmod.newest_slot_blob(bytes(img), len(b), 0x9999, "img")
